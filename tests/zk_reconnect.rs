//! The ZooKeeper session after a loss of quorum in a 3-server ensemble: the
//! node's session keeper must come back on its own (resuming the session, or
//! opening a new one on a server that serves again) with its ephemeral znodes
//! re-created under whichever session it ends up with, exactly once.
//! Timing (how soon after the quorum is back) is measured by the soak
//! (`scripts/soak.sh --ensemble --kinds zk`), not asserted here.

mod common;

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use walship::soak::procs::ZkServer;
use walship::witness::session::Claim;
use walship::witness::session::ZkSession;

const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `check` every 20 ms until it holds or `limit` passes.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        anyhow::ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

#[tokio::test]
async fn session_and_ephemerals_come_back_after_a_quorum_loss() -> Result<()> {
    let dir = common::TestDir::new("zk_reconnect_quorum_loss")?;
    let mut servers = ZkServer::start_ensemble(dir.path(), 3).await?;
    let hosts: Vec<String> = servers.iter().map(ZkServer::addr).collect();
    let hosts = hosts.join(",");
    let session = ZkSession::connect(&hosts, 4000, 2000, 10_000, |_| None).await?;
    let path = format!("/zk-reconnect-{}", std::process::id());
    session
        .register_ephemeral(&path, b"mine".to_vec(), Claim::Replace)
        .await?;

    // Quorum lost for 3 s: long enough for the client library's own
    // reconnect rounds to be in their back-off.
    servers[0].kill9().await?;
    servers[1].kill9().await?;
    let lost = until(Duration::from_secs(10), "the session notices", || async { !session.is_connected() }).await;
    lost.context("the session stayed connected to a lone server")?;
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself, not a wait for a condition
    servers[0].start_again().await?;
    servers[1].start_again().await?;
    for s in servers.iter_mut() {
        s.wait_serving(SERVE_TIMEOUT).await?;
    }

    let p = path.clone();
    let back = until(Duration::from_secs(20), "a ZooKeeper call succeeds again", || {
        let s = &session;
        let p = p.clone();
        async move {
            s.run("stat probe", |c| async move { c.check_stat(&p).await })
                .await
                .is_ok()
        }
    })
    .await?;
    println!("ZooKeeper calls succeed again {} ms after the quorum served", back.as_millis());

    // The ephemeral is there, once, owned by the session the node now has.
    let p = path.clone();
    until(Duration::from_secs(10), "the ephemeral is re-created under the current session", || {
        let s = &session;
        let p = p.clone();
        async move {
            let Some(sid) = s.session_id() else { return false };
            match s.run("stat probe", |c| async move { c.check_stat(&p).await }).await {
                Ok(Some(stat)) => stat.ephemeral_owner == sid,
                _ => false,
            }
        }
    })
    .await?;
    let observer = ZkSession::connect(&hosts, 4000, 2000, 10_000, |_| None).await?;
    let (data, _) = observer
        .run("get probe", |c| {
            let p = path.clone();
            async move { c.get_data(&p).await }
        })
        .await?;
    assert_eq!(data, b"mine");

    drop(session);
    for s in servers.iter_mut() {
        s.stop().await?;
    }
    Ok(())
}
