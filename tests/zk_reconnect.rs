//! The ZooKeeper session after a loss of quorum in a 3-server ensemble: the
//! node's session keeper must come back on its own (resuming the session, or
//! opening a new one on a server that serves again) with its ephemeral znodes
//! re-created under whichever session it ends up with, exactly once.
//! And a ZooKeeper outage alone must not cost the cluster its leader: once
//! ZooKeeper is back, the leader it had keeps leading, in the same term.
//! Timing (how soon after the quorum is back) is measured by the soak
//! (`scripts/soak.sh --ensemble --kinds zk`), not asserted here.

mod common;

use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use common::node::Node;
use common::wait::Deadline;
use common::Status;
use walship_testkit::ZkMode;
use walship_testkit::ZkServer;
use walship_zk::Claim;
use walship_zk::ZkSession;

const SERVE_TIMEOUT: Duration = Duration::from_secs(60);
/// The nodes' default `election_timeout_ms`.
const ELECTION_TIMEOUT_MS: u64 = 1000;

/// `contact_ms=N` of a "leader lost" log line.
fn contact_ms(line: &str) -> Option<u64> {
    let rest = &line[line.find("contact_ms=")? + "contact_ms=".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Polls `check` (on the harness's poll interval) until it holds or
/// `limit` passes; how long it took.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Deadline::after(limit, what);
    while !check().await {
        deadline.tick(&"not yet").await?;
    }
    Ok(deadline.elapsed())
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
    let lost = until(Duration::from_secs(10), "the session notices", || async {
        !session.is_connected()
    })
    .await;
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
    println!(
        "ZooKeeper calls succeed again {} ms after the quorum served",
        back.as_millis()
    );

    // The ephemeral is there, once, owned by the session the node now has.
    let p = path.clone();
    until(
        Duration::from_secs(10),
        "the ephemeral is re-created under the current session",
        || {
            let s = &session;
            let p = p.clone();
            async move {
                let Some(sid) = s.session_id() else { return false };
                match s.run("stat probe", |c| async move { c.check_stat(&p).await }).await {
                    Ok(Some(stat)) => stat.ephemeral_owner == sid,
                    _ => false,
                }
            }
        },
    )
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

/// Both nodes' status, if both answer.
async fn statuses(nodes: &[Node]) -> Option<Vec<Status>> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.client().status().await.success()?);
    }
    Some(out)
}

/// The (leader id, term) both nodes agree on, once one leads.
async fn agreed_leader(nodes: &[Node], timeout: Duration) -> Result<(u64, u64)> {
    let deadline = Deadline::after(timeout, "both nodes to agree on a leader");
    loop {
        let s = statuses(nodes).await;
        if let Some(s) = &s {
            if let Some(l) = s.iter().find(|s| s.is_leader()) {
                if s.iter().all(|x| x.leader == Some(l.id) && x.term == l.term) {
                    return Ok((l.id, l.term.unwrap_or(0)));
                }
            }
        }
        deadline.tick(&format!("{s:?}")).await?;
    }
}

#[tokio::test]
async fn a_zookeeper_outage_does_not_depose_a_healthy_leader() -> Result<()> {
    let dir = common::TestDir::new("zk_reconnect_keeps_leader")?;
    let mut servers = ZkServer::start_ensemble(dir.path(), 3).await?;
    let hosts = servers.iter().map(ZkServer::addr).collect::<Vec<_>>().join(",");
    let cluster = format!("keepleader{}", std::process::id());
    let mut nodes = Vec::new();
    for id in 1..=2 {
        let mut n = Node::spawn(
            id,
            &cluster,
            &hosts,
            &dir.path().join(format!("node{id}")),
            common::ports::free_addr()?,
        )?;
        n.wait_live(Duration::from_secs(30)).await?;
        nodes.push(n);
    }
    let (leader, term) = agreed_leader(&nodes, Duration::from_secs(30)).await?;
    let api = nodes[(leader - 1) as usize].client().clone();
    // Writes before, during and after the outage, as a client would.
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut acked = 0u64;
            for i in 0.. {
                if api.put(&format!("k{}", i % 16), format!("v{i}")).await.is_success() {
                    acked += 1;
                }
                if i > 0 && i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
                if acked > 1_000_000 {
                    break;
                }
            }
        })
    };

    // The ZooKeeper leader frozen (SIGSTOP) until the other two have elected
    // a new one, then thawed. Its followers serve reads of the old `leader`
    // znode meanwhile, which nobody can renew: the trap for the follower.
    let mut zl = None;
    for (i, s) in servers.iter_mut().enumerate() {
        if s.mode().await == Some(ZkMode::Leader) {
            zl = Some(i);
        }
    }
    let zl = zl.context("the ensemble has no leader")?;
    servers[zl].sigstop()?;
    let elected = Deadline::after(SERVE_TIMEOUT, "a new ZooKeeper leader");
    loop {
        let mut modes = Vec::new();
        for (i, s) in servers.iter_mut().enumerate() {
            if i != zl {
                modes.push(s.mode().await);
            }
        }
        if modes.contains(&Some(ZkMode::Leader)) {
            break;
        }
        elected.tick(&format!("{modes:?}")).await?;
    }
    servers[zl].sigcont()?;
    for s in servers.iter_mut() {
        s.wait_serving(SERVE_TIMEOUT).await?;
    }
    // Writes are acknowledged again; then two more seconds of them, time in
    // which a follower that wrongly judged the leader would depose it.
    let back = Deadline::after(Duration::from_secs(20), "a write acknowledged after the outage");
    loop {
        let r = api.put("after", "outage").await;
        if r.is_success() {
            break;
        }
        back.tick(&r).await?;
    }
    let settle = Deadline::after(Duration::from_secs(2), "writes after the outage");
    while !settle.expired() {
        api.put("settle", "x").await;
    }
    writer.abort();
    let after = agreed_leader(&nodes, Duration::from_secs(10)).await?;
    // The follower may only have moved against a leader it could not reach
    // for an election timeout (the contact rule: on this 2-core box a thawing
    // JVM can starve the nodes that long), never against one that reached it
    // while ZooKeeper could not take the lease's renewal.
    let follower = &nodes[(2 - leader) as usize];
    let log = std::fs::read_to_string(follower.log_path())?;
    let judged_by_lease: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("leader lost; adopting") && l.contains("leader=Some("))
        .filter(|l| contact_ms(l).is_some_and(|ms| ms < ELECTION_TIMEOUT_MS))
        .collect();
    if !judged_by_lease.is_empty() {
        dir.keep_on_drop();
        anyhow::bail!(
            "the follower deposed a leader it was in contact with, over a frozen ZooKeeper leader (leader and term {:?} -> {after:?}): {judged_by_lease:#?}; logs in {}",
            (leader, term),
            dir.path().display()
        );
    }
    if after != (leader, term) {
        println!(
            "the leader changed ({:?} -> {after:?}) by the contact rule",
            (leader, term)
        );
    }
    for n in nodes.iter_mut() {
        n.sigterm().await?;
    }
    for s in servers.iter_mut() {
        s.stop().await?;
    }
    Ok(())
}
