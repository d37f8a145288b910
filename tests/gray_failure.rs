//! Gray failure (issue 9): a leader that keeps its ZooKeeper session but
//! cannot commit must stop renewing its lease, so the other node takes over;
//! when the stall ends it rejoins as a follower and nothing acknowledged is
//! lost. On 342ed45 the lease was renewed on its own timer whatever Raft was
//! doing, and the follower never deposes a leader whose lease is live.
//!
//! The stall is the storage fault hook `stall` (walship::storage::fault): every
//! local log write and sync of the leader blocks, as on a frozen disk
//! (`fsfreeze`), and openraft's core waits on its log append.

mod common;

use std::time::Duration;

use anyhow::ensure;
use anyhow::Result;
use common::cluster::ClusterContext;
use common::Cluster;
use common::Deadline;
use common::Reply;
use common::Setup;
use common::Writer;
use common::WriterOptions;

const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The "within a few seconds": the lease lapses an election timeout
/// (1 s) after the last proof, which is at most half an election timeout old.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(8);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

async fn disk_stall(cluster: &mut Cluster) -> Result<()> {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let mut options = WriterOptions::new("stall");
    options.request_timeout = Duration::from_secs(2);
    let writer = Writer::start(cluster.clients(), options);
    writer.wait_for_more_acks(50, LEADER_TIMEOUT).await?;

    let stall = cluster
        .fault_dir(leader)
        .path()
        .join(walship::storage::fault::STALL_FILE);
    std::fs::write(&stall, b"")?;
    let stalled_at = std::time::Instant::now();
    // The follower takes over: it leads, and writes are acknowledged again.
    let deadline = Deadline::after(
        TAKEOVER_TIMEOUT,
        format!("node {follower} to lead while node {leader}'s disk is stalled"),
    );
    let fapi = cluster.client(follower);
    loop {
        let last = match fapi.status().await {
            Reply::Success { value, .. } if value.is_leader() => break,
            other => other.to_string(),
        };
        deadline.tick(&last).await?;
    }
    eprintln!(
        "node {follower} leads {:?} after node {leader}'s disk stalled",
        stalled_at.elapsed()
    );
    // Writes sent to it are acknowledged (the round-robin writer above
    // spends its time waiting on the stalled node, as its clients would).
    let to_follower = Writer::start(vec![fapi.clone()], WriterOptions::new("stall-follower"));
    to_follower.wait_for_more_acks(20, TAKEOVER_TIMEOUT).await?;

    // The stall ends: the old leader steps down and catches up.
    std::fs::remove_file(&stall)?;
    writer.wait_for_more_acks(20, LEADER_TIMEOUT).await?;
    let logs = [writer.stop().await?, to_follower.stop().await?];
    let new_leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    cluster.wait_caught_up_with(new_leader, CATCH_UP_TIMEOUT).await?;
    for log in &logs {
        ensure!(log.acked() > 0, "nothing acknowledged");
        log.verify(&cluster.client(new_leader)).await?;
        for id in [1, 2] {
            log.verify_stale(&cluster.client(id)).await?;
        }
    }
    Ok(())
}

/// The leader's disk fails (the fault hook `fail`: every write EIO, as on a
/// dying disk or with no descriptors left). Its Raft core stops for good; on
/// 342ed45 the node then sat in role `shutdown` answering 504 to every write
/// with `/health/live` 200. Now it exits non-zero with the reason, the other
/// node takes over, and a restart (the disk healed) rejoins with nothing lost.
async fn disk_failure(cluster: &mut Cluster) -> Result<()> {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let writer = Writer::start(vec![cluster.client(follower)], WriterOptions::new("fail"));
    writer.wait_for_more_acks(30, LEADER_TIMEOUT).await?;

    let fail = cluster
        .fault_dir(leader)
        .path()
        .join(walship::storage::fault::FAIL_FILE);
    std::fs::write(&fail, b"")?;
    let deadline = Deadline::after(TAKEOVER_TIMEOUT, format!("node {leader} to exit after its disk failed"));
    let status = loop {
        if let Some(status) = cluster.node_mut(leader).exited() {
            break status;
        }
        deadline.tick(&"still running").await?;
    };
    ensure!(
        !status.success(),
        "node {leader} exited with {status} after a disk failure"
    );
    let log = std::fs::read_to_string(cluster.node(leader).log_path())?;
    ensure!(
        log.contains("the Raft core stopped"),
        "node {leader}'s log does not say why it exited"
    );
    writer.wait_for_more_acks(20, TAKEOVER_TIMEOUT).await?;

    std::fs::remove_file(&fail)?;
    cluster.node_mut(leader).start()?;
    cluster.node_mut(leader).wait_live(LEADER_TIMEOUT).await?;
    let log = writer.stop().await?;
    let new_leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    cluster.wait_caught_up_with(new_leader, CATCH_UP_TIMEOUT).await?;
    log.verify(&cluster.client(new_leader)).await?;
    for id in [1, 2] {
        log.verify_stale(&cluster.client(id)).await?;
    }
    Ok(())
}

/// The follower's disk stalls (the same hook, on the follower) for three
/// election timeouts. The leader still commits with W, and still reaches
/// the follower: its appends arrive, they only wait on the follower's disk.
/// That is contact, so the follower must not depose the leader, during the
/// stall or after it. On the code before this test the follower counted
/// contact only once openraft had flushed the append: a stalled (or, at a
/// cold start on a loaded machine, merely slow) disk made a healthy leader
/// look silent, and the follower stood for election as soon as it could.
async fn follower_disk_stall(cluster: &mut Cluster) -> Result<()> {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let term_of = |reply: Reply<walship::client::Status>| match reply {
        Reply::Success { value, .. } => value.term,
        _ => None,
    };
    let term = term_of(cluster.client(leader).status().await);
    ensure!(term.is_some(), "no term from leader {leader}");
    let writer = Writer::start(vec![cluster.client(leader)], WriterOptions::new("follower-stall"));
    writer.wait_for_more_acks(20, LEADER_TIMEOUT).await?;

    let stall = cluster
        .fault_dir(follower)
        .path()
        .join(walship::storage::fault::STALL_FILE);
    std::fs::write(&stall, b"")?;
    // Three election timeouts (1 s each) of writes with the follower's disk
    // stalled: the leader keeps committing with W alone.
    let stalled = std::time::Instant::now();
    while stalled.elapsed() < Duration::from_secs(3) {
        writer.wait_for_more_acks(10, TAKEOVER_TIMEOUT).await?;
    }
    std::fs::remove_file(&stall)?;
    cluster.wait_caught_up_with(leader, CATCH_UP_TIMEOUT).await?;
    // Another two election timeouts of writes after the stall: time enough
    // for a follower that judged the leader lost to stand and win.
    let resumed = std::time::Instant::now();
    while resumed.elapsed() < Duration::from_secs(2) {
        writer.wait_for_more_acks(10, TAKEOVER_TIMEOUT).await?;
    }
    let log = writer.stop().await?;
    for id in [leader, follower] {
        let now = term_of(cluster.client(id).status().await);
        ensure!(
            now == term,
            "node {id} is at term {now:?}, the leader was elected at {term:?}: the follower's stalled disk cost an election"
        );
    }
    ensure!(cluster.leader().await? == leader, "node {leader} no longer leads");
    log.verify(&cluster.client(leader)).await?;
    for id in [1, 2] {
        log.verify_stale(&cluster.client(id)).await?;
    }
    Ok(())
}

/// Both nodes with the storage fault hooks, and their links cuttable.
async fn faulty(name: &str) -> Result<Cluster> {
    Setup::test(name)
        .partitionable()
        .zk_cuttable()
        .fault_dirs()
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_leader_disk_exits_and_the_other_node_takes_over() -> Result<()> {
    let mut cluster = faulty("disk-fail").await?;
    let r = disk_failure(&mut cluster).await;
    r.in_cluster(&cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_leader_disk_moves_writes_to_the_other_node() -> Result<()> {
    let mut cluster = faulty("disk-stall").await?;
    let r = disk_stall(&mut cluster).await;
    r.in_cluster(&cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_follower_disk_does_not_depose_the_leader() -> Result<()> {
    let mut cluster = faulty("follower-stall").await?;
    let r = follower_disk_stall(&mut cluster).await;
    r.in_cluster(&cluster)
}
