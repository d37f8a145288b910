//! Sessions against a real ZooKeeper (walship-testkit's private server):
//! what a session reports to its metrics, how ephemerals are claimed, and
//! that closing a session drops them at once.
//!
//! Reconnection after a quorum loss is tested with nodes around it, in the
//! root package's tests/zk_reconnect.rs.

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use walship_testkit::ZkServer;
use walship_zk::Claim;
use walship_zk::SessionMetrics;
use walship_zk::ZkError;
use walship_zk::ZkSecurity;
use walship_zk::ZkSession;
use zookeeper_client as zk;

#[derive(Default)]
struct Recorder {
    ended: AtomicUsize,
    failed: Mutex<Vec<&'static str>>,
    replaced: AtomicUsize,
}

impl SessionMetrics for Recorder {
    fn call_ended(&self, _elapsed: Duration) {
        self.ended.fetch_add(1, Ordering::SeqCst);
    }
    fn call_failed(&self, kind: &'static str) {
        self.failed.lock().unwrap().push(kind);
    }
    fn session_replaced(&self) {
        self.replaced.fetch_add(1, Ordering::SeqCst);
    }
}

impl Recorder {
    fn seen(&self) -> (usize, Vec<&'static str>) {
        (self.ended.load(Ordering::SeqCst), self.failed.lock().unwrap().clone())
    }
}

/// A `leader`-like payload: the term as text.
fn term_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload).ok()?.parse().ok()
}

/// Runs `test` against a private ZooKeeper; its directory (zoo.cfg, zk.log)
/// is kept, and named, when the test ends in an error.
async fn with_zookeeper<F, Fut>(test: F) -> Result<()>
where
    F: FnOnce(ZkServer) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let dir = tempfile::tempdir()?;
    let outcome = async { test(ZkServer::start(dir.path()).await?).await }.await;
    if outcome.is_err() {
        eprintln!("ZooKeeper's directory kept: {}", dir.keep().display());
    }
    outcome
}

async fn connect(zk: &ZkServer, metrics: Arc<dyn SessionMetrics>) -> Result<Arc<ZkSession>> {
    Ok(ZkSession::connect_secured(&zk.addr(), 4000, 2000, 10_000, term_of, ZkSecurity::default(), metrics).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_report_their_latency_and_failures_to_the_metrics() -> Result<()> {
    with_zookeeper(calls_report_their_latency_and_failures).await
}

async fn calls_report_their_latency_and_failures(zk: ZkServer) -> Result<()> {
    let metrics = Arc::new(Recorder::default());
    let session = connect(&zk, metrics.clone()).await?;

    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    session
        .run(
            "create /a",
            |c| async move { c.create("/a", b"x", &opts).await.map(|_| ()) },
        )
        .await?;
    assert_eq!(
        metrics.seen(),
        (1, vec![]),
        "an answered call is timed, not counted as failed"
    );

    let e = session
        .run("get /missing", |c| async move { c.get_data("/missing").await })
        .await
        .unwrap_err();
    assert!(e.is_zk(zk::Error::NoNode), "{e:?}");
    assert!(!e.outcome_unknown());
    assert_eq!(e.to_string(), "ZooKeeper get /missing: node not exists");
    assert_eq!(metrics.seen(), (2, vec!["zookeeper"]));

    let e = session
        .run_within("a call that never ends", Duration::from_millis(50), |_| {
            std::future::pending::<Result<(), zk::Error>>()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ZkError::Timeout { timeout_ms: 50, .. }), "{e:?}");
    assert!(e.outcome_unknown());
    assert_eq!(metrics.seen(), (3, vec!["zookeeper", "timeout"]));

    session.close().await;
    let e = session
        .run("get /a", |c| async move { c.get_data("/a").await })
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "ZooKeeper unreachable: no ZooKeeper session (reconnecting)"
    );
    assert_eq!(
        metrics.seen(),
        (3, vec!["zookeeper", "timeout", "no_session"]),
        "a call without a client is counted, not timed"
    );
    assert_eq!(metrics.replaced.load(Ordering::SeqCst), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_respect_the_term_and_a_closed_session_drops_its_ephemerals() -> Result<()> {
    with_zookeeper(claims_and_close).await
}

async fn claims_and_close(zk: ZkServer) -> Result<()> {
    let a = connect(&zk, Arc::new(())).await?;
    let b = connect(&zk, Arc::new(())).await?;
    let owner = |s: &Arc<ZkSession>, path: &'static str| {
        let s = Arc::clone(s);
        async move {
            s.run(&format!("stat {path}"), |c| async move { c.check_stat(path).await })
                .await
                .map(|stat| stat.map(|st| st.ephemeral_owner))
        }
    };

    a.register_ephemeral("/member", b"a".to_vec(), Claim::Replace).await?;
    a.register_ephemeral("/leader", b"5".to_vec(), Claim::ReplaceLowerTerm(5))
        .await?;
    assert_eq!(owner(&b, "/leader").await?, a.session_id());

    // A lower or equal term does not take the leader znode over.
    let e = b
        .register_ephemeral("/leader", b"3".to_vec(), Claim::ReplaceLowerTerm(3))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "/leader is held at term >= 3 by another session");
    assert_eq!(owner(&b, "/leader").await?, a.session_id());
    b.unregister_ephemeral("/leader").await?;
    assert_eq!(owner(&b, "/leader").await?, a.session_id(), "not b's to delete");

    // A higher term does.
    b.register_ephemeral("/leader", b"7".to_vec(), Claim::ReplaceLowerTerm(7))
        .await?;
    assert_eq!(owner(&a, "/leader").await?, b.session_id());

    // Closing a's session drops its member znode at once, not after the
    // session timeout; b's leader znode stays.
    a.close().await;
    assert_eq!(owner(&b, "/member").await?, None);
    assert_eq!(owner(&b, "/leader").await?, b.session_id());
    Ok(())
}
