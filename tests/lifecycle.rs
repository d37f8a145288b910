//! The HTTP contract's error answers and a node's life cycle: SIGTERM,
//! a data dir of another cluster, a node reborn at another address, and
//! ZooKeeper restarted under a running cluster (S8).

mod common;

use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use common::cluster::ClusterContext;
use common::metric;
use common::Cluster;
use common::Deadline;
use common::Reply;
use common::Setup;
use walship::client::Method;

const TIMEOUT: Duration = Duration::from_secs(20);

fn error_of(reply: &Reply<(u16, Vec<u8>)>) -> (u16, String) {
    match reply {
        Reply::Success {
            value: (status, body), ..
        } => {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            (
                *status,
                v.get("error").and_then(|e| e.as_str()).unwrap_or("").to_string(),
            )
        }
        other => panic!("no response: {other}"),
    }
}

/// Bad input gets a clear error, changes nothing, through leader and follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() -> Result<()> {
    let mut c = Cluster::start("api-errors").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    for id in [leader, Cluster::other(leader)] {
        let api = c.client(id);
        let cases: Vec<(Method, String, Option<Vec<u8>>, u16)> = vec![
            (
                Method::PUT,
                format!("/v1/kv/{}", "k".repeat(1025)),
                Some(b"v".to_vec()),
                413,
            ),
            (Method::PUT, "/v1/kv/big".into(), Some(vec![b'x'; 512 * 1024 + 1]), 413),
            (Method::POST, "/v1/cas/c".into(), Some(b"not json".to_vec()), 400),
            (
                Method::POST,
                "/v1/cas/c".into(),
                Some(br#"{"expect": null}"#.to_vec()),
                400,
            ),
            (
                Method::POST,
                "/v1/cas/c".into(),
                Some(br#"{"expect": 1, "value": "x"}"#.to_vec()),
                400,
            ),
            (Method::GET, "/v1/kv/absent".into(), None, 404),
        ];
        for (method, path, body, want) in cases {
            let r = api.raw(method.clone(), &path, body).await;
            let (status, error) = error_of(&r);
            assert_eq!(status, want, "{method} {} via node {id}", &path[..path.len().min(40)]);
            assert!(!error.is_empty(), "{method} {path:.40}: the error must say why");
        }
        // A value of exactly the limit is fine.
        api.put(&format!("max-{id}"), vec![b'm'; 512 * 1024])
            .await
            .into_result()?;
    }
    for key in ["big", "c"] {
        assert_eq!(
            c.client(leader).get(key).await.into_result()?,
            None,
            "a refused write left {key} behind"
        );
    }
    // CAS semantics: absent -> create, wrong expectation -> no change, delete.
    let api = c.client(Cluster::other(leader));
    assert!(api.cas("c", None, Some("one")).await.into_result()?.ok);
    let r = api.cas("c", Some("two"), Some("three")).await.into_result()?;
    assert!(!r.ok);
    assert_eq!(r.current.as_deref(), Some("one"));
    assert!(api.cas("c", Some("one"), None).await.into_result()?.ok);
    assert_eq!(api.get("c").await.into_result()?, None);
    Ok(())
}

/// SIGTERM on the leader: a clean exit that closes its ZooKeeper session,
/// so the other node takes over well before a session timeout (4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_hands_over() -> Result<()> {
    let mut c = Cluster::start("sigterm").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    c.client(leader).put("before", "1").await.into_result()?;
    let started = Instant::now();
    let status = c.node_mut(leader).sigterm().await?;
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    let new = c.wait_for_new_leader(leader, TIMEOUT).await.in_cluster(&c)?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "hand-over took {took:?}: the leader znode did not vanish with the session"
    );
    assert_eq!(c.client(new).get("before").await.into_result()?.as_deref(), Some("1"));
    Ok(())
}

/// A data dir that belongs to another cluster is refused with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_dir_is_refused() -> Result<()> {
    let mut a = Cluster::start("foreign-a").await?;
    a.wait_for_leader(TIMEOUT).await?;
    a.client(1).put("mine", "a").await.into_result()?;
    a.node_mut(1).sigterm().await?;
    let data_dir = a.node(1).data_dir().to_path_buf();

    let b = Setup::test("foreign-b").start_zk().await?;
    let listen = common::ports::free_addr()?;
    let mut intruder = common::Node::spawn(1, &b.name, &b.zk().addr(), &data_dir, listen)?;
    let deadline = Deadline::after(TIMEOUT, "the foreign node to exit");
    let status = loop {
        if let Some(s) = intruder.exited() {
            break s;
        }
        deadline.tick(&"still running").await?;
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(intruder.log_path())?;
    assert!(
        log.contains("another cluster") || log.contains("belongs to"),
        "unclear refusal:\n{log}"
    );
    Ok(())
}

/// A node reborn at another address is found through its members znode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reborn_at_another_address_is_reached() -> Result<()> {
    let mut c = Cluster::start("readdress").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let follower = Cluster::other(leader);
    c.node_mut(follower).kill9().await?;
    c.client(leader).put("while-away", "x").await.into_result()?;
    let node = c.node_mut(follower);
    node.set_listen(common::ports::free_addr()?);
    node.start()?;
    node.wait_live(TIMEOUT).await?;
    c.wait_caught_up_with(leader, TIMEOUT).await.in_cluster(&c)?;
    assert_eq!(
        c.client(follower)
            .get_stale("while-away")
            .await
            .into_result()?
            .as_deref(),
        Some("x")
    );
    // And it can lead from its new address.
    c.node_mut(leader).kill9().await?;
    assert_eq!(c.wait_for_new_leader(leader, TIMEOUT).await.in_cluster(&c)?, follower);
    assert_eq!(
        c.client(follower).get("while-away").await.into_result()?.as_deref(),
        Some("x")
    );
    Ok(())
}

/// S8: ZooKeeper stopped, then started. Writes fail with a clear 503 or an
/// honest 504 meanwhile; nothing acknowledged is lost; service resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_zookeeper_restart() -> Result<()> {
    let mut c = Cluster::start("s8").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let mut acked = Vec::new();
    for i in 0..20 {
        c.client(leader)
            .put(&format!("s8-{i}"), format!("v{i}"))
            .await
            .into_result()?;
        acked.push(i);
    }
    c.zk_mut().stop().await?;
    // The ZooKeeper session notices the loss within its ping interval.
    let deadline = Deadline::after(TIMEOUT, "a 503 while ZooKeeper is down");
    loop {
        let r = c
            .client(leader)
            .with_timeout(Duration::from_secs(8))
            .put("s8-during", "x")
            .await;
        if r.status() == Some(503) {
            let e = format!("{r}");
            assert!(e.contains("ZooKeeper"), "the 503 must name ZooKeeper: {e}");
            break;
        }
        assert!(
            !r.is_success(),
            "a write was acknowledged while ZooKeeper was down: {r}"
        );
        deadline.tick(&r).await?;
    }
    c.zk_mut().start_again().await?;
    let new = c.wait_for_leader(Duration::from_secs(40)).await.in_cluster(&c)?;
    let deadline = Deadline::after(Duration::from_secs(40), "writes to resume");
    loop {
        let r = c.client(new).put("s8-after", "y").await;
        if r.is_success() {
            break;
        }
        deadline.tick(&r).await?;
    }
    for i in acked {
        let got = c
            .client(new)
            .get(&format!("s8-{i}"))
            .await
            .into_result()
            .context("read after ZooKeeper restart")?;
        assert_eq!(got, Some(format!("v{i}")));
    }
    Ok(())
}

/// ZooKeeper's memory is bounded by bytes, not only entries: with the entry
/// policy out of reach, writing a few MiB to the WAL makes the leader
/// snapshot and compact W's WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_bytes_trigger_a_snapshot_in_zookeeper() -> Result<()> {
    let mut c = Cluster::start_with(
        "wal-bytes",
        &[
            "--snapshot-every-entries",
            "1000000",
            "--snapshot-every-wal-bytes",
            "1048576",
        ],
    )
    .await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    for i in 0..40 {
        c.client(leader)
            .put(&format!("big-{i}"), vec![b'b'; 100 * 1024])
            .await
            .into_result()?;
    }
    let deadline = Deadline::after(TIMEOUT, "a snapshot forced by WAL bytes");
    loop {
        let raw = c.client(leader).raw(Method::GET, "/metrics", None).await;
        let text = match &raw {
            Reply::Success { value: (_, body), .. } => String::from_utf8_lossy(body).into_owned(),
            _ => String::new(),
        };
        if text
            .lines()
            .any(|l| l.starts_with("walship_snapshots_total{event=\"uploaded\"}") && !l.ends_with(" 0"))
        {
            break;
        }
        deadline.tick(&"no uploaded snapshot yet").await?;
    }
    for i in [0, 39] {
        let v = c.client(leader).get(&format!("big-{i}")).await.into_result()?;
        assert_eq!(v.map(|v| v.len()), Some(100 * 1024));
    }
    Ok(())
}

/// After each append the follower accepts, openraft sends it an entry-less
/// append only to carry the new commit index; the leader answers those
/// itself (`network::peer::PeerClient`, the argument in brainstorm.md), so
/// a lone client's write costs the two nodes one HTTP round trip, not two.
/// The follower still learns every commit, from the next append or, once
/// the writes stop, a heartbeat: its own copy ends up with the last write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_carriers_to_the_follower_are_piggybacked_and_it_still_applies() -> Result<()> {
    let mut c = Cluster::start("peer-piggyback").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let follower = if leader == 1 { 2 } else { 1 };
    const SENT: &str = "walship_peer_appends_total{outcome=\"sent\"}";
    const PIGGYBACKED: &str = "walship_peer_appends_total{outcome=\"piggybacked\"}";
    let api = c.client(leader);
    let (sent0, piggybacked0) = (metric(&api, SENT).await?, metric(&api, PIGGYBACKED).await?);
    const WRITES: u64 = 40;
    let mut last = 0;
    for i in 0..WRITES {
        last = api.put("carried", format!("v{i}")).await.into_result()?;
    }
    let sent = metric(&api, SENT).await? - sent0;
    let piggybacked = metric(&api, PIGGYBACKED).await? - piggybacked0;
    // One commit carrier follows each write's append within milliseconds;
    // half of them is a floor a slow debug build on a busy box still makes.
    assert!(
        piggybacked >= (WRITES / 2) as f64,
        "{piggybacked} of {WRITES} commit carriers piggybacked ({sent} appends sent)"
    );
    assert!(
        sent >= WRITES as f64,
        "every write's entries went to the follower: {sent} sent"
    );
    c.wait_applied(last, TIMEOUT).await?;
    let v = c.client(follower).get_stale("carried").await.into_result()?;
    assert_eq!(v.as_deref(), Some(format!("v{}", WRITES - 1).as_str()));
    Ok(())
}

/// The leader keeps only its newest entries in memory
/// (`--log-cache-max-bytes`; here nothing but the last one): a follower that
/// fell behind is sent the older ones read back from the leader's log files
/// (CRC-checked), and ends up with every write. The follower is frozen for
/// less than its election timeout and ZooKeeper session, so it catches up
/// from the leader rather than by a failover's adoption from W.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_cache_gets_entries_read_back_from_the_leaders_files() -> Result<()> {
    let mut c = Cluster::start_with(
        "log-read-back",
        &[
            "--log-cache-max-bytes",
            "0",
            "--election-timeout-ms",
            "20000",
            "--zk-session-timeout-ms",
            "6000",
        ],
    )
    .await?;
    let leader = c.wait_caught_up(TIMEOUT).await?;
    let follower = Cluster::other(leader);
    const READ_BACK: &str = "walship_log_entries_read_back_total";
    let api = c.client(leader);
    let read_back0 = metric(&api, READ_BACK).await?;
    c.node_mut(follower).sigstop()?;
    const WRITES: usize = 30;
    for i in 0..WRITES {
        api.put(&format!("behind-{i}"), format!("v{i}")).await.into_result()?;
    }
    c.node_mut(follower).sigcont()?;
    let deadline = Deadline::after(TIMEOUT, "the follower to catch up");
    let stale = c.client(follower);
    loop {
        let last = stale.get_stale(&format!("behind-{}", WRITES - 1)).await;
        if matches!(&last, Reply::Success { value: Some(v), .. } if *v == format!("v{}", WRITES - 1)) {
            break;
        }
        deadline.tick(&format!("{last}")).await?;
    }
    for i in 0..WRITES {
        let v = stale.get_stale(&format!("behind-{i}")).await.into_result()?;
        assert_eq!(v, Some(format!("v{i}")), "behind-{i} on the follower");
    }
    let read_back = metric(&api, READ_BACK).await? - read_back0;
    assert!(read_back >= 1.0, "the leader read no entry back from its files");
    // Nothing but the last entry (one write, well under 4 KiB) in memory.
    let cached = metric(&api, "walship_log_cache_bytes").await?;
    assert!(cached < 4096.0, "{cached} bytes of log in the leader's memory");
    let status = c.status_of(leader).await.into_result()?;
    assert_eq!(status.leader, Some(leader), "no failover happened meanwhile");
    Ok(())
}

/// The operator's endpoints: /metrics reports Raft's state, POST
/// /admin/snapshot builds a snapshot and stores it in ZooKeeper, and POST
/// /admin/leave on the leader hands over and stops the process cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_admin_snapshot_and_leave() -> Result<()> {
    let mut c = Cluster::start("admin").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    for i in 0..10 {
        c.client(leader).put(&format!("a{i}"), "v").await.into_result()?;
    }
    let body = |r: &Reply<(u16, Vec<u8>)>| match r {
        Reply::Success { value: (status, b), .. } => (*status, String::from_utf8_lossy(b).into_owned()),
        other => panic!("no response: {other}"),
    };
    let (status, text) = body(&c.client(leader).raw(Method::GET, "/metrics", None).await);
    assert_eq!(status, 200);
    for want in [
        "walship_role{role=\"leader\"} 1",
        "walship_term ",
        "walship_log_index{kind=\"applied\"}",
        "walship_write_seconds_count",
    ] {
        assert!(text.contains(want), "/metrics lacks {want}:\n{text}");
    }

    let (status, text) = body(&c.client(leader).raw(Method::POST, "/admin/snapshot", None).await);
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(v["uploaded_to_zookeeper"], serde_json::json!(true), "{text}");
    assert!(v["snapshot_index"].as_u64().is_some_and(|i| i >= 10), "{text}");

    let (status, _) = body(&c.client(leader).raw(Method::POST, "/admin/leave", None).await);
    assert_eq!(status, 200);
    let deadline = Deadline::after(TIMEOUT, "the leaving node to exit");
    let exit = loop {
        if let Some(s) = c.node_mut(leader).exited() {
            break s;
        }
        deadline.tick(&"still running").await?;
    };
    assert!(exit.success(), "/admin/leave must exit cleanly, got {exit}");
    let new = c.wait_for_new_leader(leader, TIMEOUT).await.in_cluster(&c)?;
    assert_eq!(c.client(new).get("a9").await.into_result()?.as_deref(), Some("v"));
    Ok(())
}
