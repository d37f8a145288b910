//! Scenarios S1–S6 of witness-protocol.md, with real `walship node` processes
//! and a real ZooKeeper. Each asserts that every acknowledged write is
//! readable afterwards with its last acknowledged value.

mod common;

use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use common::cluster::ClusterContext;
use common::Cluster;
use common::Deadline;
use common::NodeClient;
use common::Reply;
use common::Writer;
use common::WriterLog;
use common::WriterOptions;

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(15);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Acks to wait for at each step: enough to span several ZooKeeper batches.
const STEP_ACKS: u64 = 30;

fn writer(targets: Vec<NodeClient>, prefix: &str) -> Writer {
    let mut opts = WriterOptions::new(prefix);
    // Overwrite a small key space too, so "last acknowledged value" is tested.
    opts.key_space = Some(200);
    Writer::start(targets, opts)
}

/// Every acked write, read linearizably through each serving node, then from
/// each node's own state machine once it has applied everything.
async fn verify_everywhere(c: &mut Cluster, log: &WriterLog, ids: &[u64]) -> Result<()> {
    // Settled first: reads during a change of leader are refused (503), as they should be.
    c.wait_for_leader(FAILOVER_TIMEOUT).await?;
    for &id in ids {
        log.verify(&c.client(id))
            .await
            .with_context(|| format!("linearizable reads through node {id}"))?;
    }
    let leader = c.wait_for_leader(FAILOVER_TIMEOUT).await?;
    c.wait_caught_up_with(leader, CATCH_UP_TIMEOUT).await?;
    for &id in ids {
        log.verify_stale(&c.client(id))
            .await
            .with_context(|| format!("local state of node {id}"))?;
    }
    Ok(())
}

/// S1: the follower is killed and restarted with its disk; writes through the
/// leader are acknowledged the whole time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_follower_kill9_and_restart() -> Result<()> {
    let mut c = Cluster::start("s1").await?;
    let leader = c.wait_for_leader(FAILOVER_TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let w = writer(vec![c.client(leader)], "s1");
    w.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;

    c.node_mut(follower).kill9().await?;
    w.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT)
        .await
        .context("writes stopped while the follower was dead")
        .in_cluster(&c)?;
    c.node_mut(follower).start()?;
    c.node_mut(follower).wait_live(CATCH_UP_TIMEOUT).await?;
    w.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;
    let log = w.stop().await?;

    assert_eq!(
        log.rejected(),
        0,
        "no write to the leader may be refused while only the follower died"
    );
    assert_eq!(
        c.wait_for_leader(FAILOVER_TIMEOUT).await?,
        leader,
        "the leader must not change when the follower dies"
    );
    verify_everywhere(&mut c, &log, &[1, 2]).await.in_cluster(&c)
}

/// S2: the leader is killed; the survivor adopts W's log, leads and
/// acknowledges; the old leader comes back as a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_leader_kill9_failover_and_rejoin() -> Result<()> {
    let mut c = Cluster::start("s2").await?;
    let old = c.wait_for_leader(FAILOVER_TIMEOUT).await?;
    let survivor = Cluster::other(old);
    let w = writer(vec![c.client(survivor)], "s2");
    w.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;

    c.node_mut(old).kill9().await?;
    let new = c.wait_for_new_leader(old, FAILOVER_TIMEOUT).await.in_cluster(&c)?;
    assert_eq!(new, survivor);
    w.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT)
        .await
        .context("the survivor did not acknowledge writes")
        .in_cluster(&c)?;

    c.node_mut(old).start()?;
    c.node_mut(old).wait_live(CATCH_UP_TIMEOUT).await?;
    w.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;
    let log = w.stop().await?;

    let deadline = Deadline::after(CATCH_UP_TIMEOUT, format!("node {old} to follow node {survivor}"));
    loop {
        let s = c.client(old).status().await;
        let last = format!("{s}");
        if let Reply::Success { value, .. } = s {
            if value.role == "follower" && value.leader == Some(survivor) {
                break;
            }
        }
        deadline.tick(&last).await?;
    }
    verify_everywhere(&mut c, &log, &[1, 2]).await.in_cluster(&c)
}

/// S3: the leader is frozen past the election timeout, the other node takes
/// over, then the old leader resumes. Anything it acknowledges must be real;
/// the two nodes must not diverge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_leader_sigstop_then_sigcont() -> Result<()> {
    let mut c = Cluster::start("s3").await?;
    let old = c.wait_for_leader(FAILOVER_TIMEOUT).await?;
    let other = Cluster::other(old);
    // One writer through each node: requests to the frozen one hang and time
    // out (unknown outcome); after SIGCONT it must not acknowledge stale writes.
    let w_other = writer(vec![c.client(other)], "s3-other");
    let mut opts = WriterOptions::new("s3-old");
    opts.key_space = Some(50);
    opts.request_timeout = Duration::from_secs(3);
    let w_old = Writer::start(vec![c.client(old)], opts);
    w_other.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;
    w_old.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;

    c.node_mut(old).sigstop()?;
    let new = c.wait_for_new_leader(old, FAILOVER_TIMEOUT).await.in_cluster(&c)?;
    assert_eq!(new, other);
    w_other.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;
    c.node_mut(old).sigcont()?;

    // Straight after resuming, a write sent to the old leader is either
    // refused, unknown, or truly committed (then it shows up below).
    let direct = c.client(old).put("s3-direct", "after-sigcont").await;
    w_other.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;
    w_old
        .wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT)
        .await
        .context("the resumed node never served writes again")
        .in_cluster(&c)?;
    let log_other = w_other.stop().await?;
    let log_old = w_old.stop().await?;

    assert_eq!(
        c.wait_for_leader(FAILOVER_TIMEOUT).await?,
        other,
        "the resumed node must not lead again on its own"
    );
    if direct.is_success() {
        let got = c.client(other).get("s3-direct").await.into_result()?;
        assert_eq!(
            got.as_deref(),
            Some("after-sigcont"),
            "the resumed old leader acknowledged a write the new leader does not have"
        );
    }
    for log in [&log_other, &log_old] {
        verify_everywhere(&mut c, log, &[1, 2]).await.in_cluster(&c)?;
        assert_same_state(&mut c, log).await?;
    }
    Ok(())
}

/// S4: a node reborn with an empty disk while the other lives catches up;
/// then the other dies, and the reborn node must hold everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_empty_disk_rebirth_beside_live_node() -> Result<()> {
    let mut c = Cluster::start_with("s4", &["--snapshot-every-entries", "50"]).await?;
    let leader = c.wait_for_leader(FAILOVER_TIMEOUT).await?;
    let reborn = Cluster::other(leader);
    let w = writer(vec![c.client(leader)], "s4");
    w.wait_for_more_acks(STEP_ACKS * 3, CATCH_UP_TIMEOUT).await?;

    c.node_mut(reborn).kill9().await?;
    c.node_mut(reborn).wipe_data_dir()?;
    c.node_mut(reborn).start()?;
    c.node_mut(reborn).wait_live(CATCH_UP_TIMEOUT).await?;
    w.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;
    let log = w.stop().await?;
    verify_everywhere(&mut c, &log, &[1, 2]).await.in_cluster(&c)?;

    // The reborn node alone (with W) must now serve every acknowledged write.
    c.node_mut(leader).kill9().await?;
    assert_eq!(
        c.wait_for_new_leader(leader, FAILOVER_TIMEOUT).await.in_cluster(&c)?,
        reborn
    );
    log.verify(&c.client(reborn))
        .await
        .context("the reborn node lost writes")
        .in_cluster(&c)
}

/// S5: both nodes die; one is reborn alone with an empty disk and rebuilds
/// itself from ZooKeeper only (snapshot and WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_both_die_one_reborn_empty_alone() -> Result<()> {
    // Small snapshots, so W holds a snapshot plus the WAL after it.
    let mut c = Cluster::start_with("s5", &["--snapshot-every-entries", "40"]).await?;
    let w = writer(c.clients(), "s5");
    w.wait_for_more_acks(STEP_ACKS * 4, CATCH_UP_TIMEOUT).await?;
    c.node_mut(1).kill9().await?;
    c.node_mut(2).kill9().await?;
    let log = w.stop().await?;

    c.node_mut(2).wipe_data_dir()?;
    c.node_mut(2).start()?;
    c.node_mut(2).wait_live(CATCH_UP_TIMEOUT).await?;
    assert_eq!(c.wait_for_leader(FAILOVER_TIMEOUT).await.in_cluster(&c)?, 2);
    let log_text = std::fs::read_to_string(c.node(2).log_path())?;
    assert!(
        log_text.contains("adopting W's snapshot"),
        "node 2 should have rebuilt from W's snapshot; see {}",
        c.node(2).log_path().display()
    );
    log.verify(&c.client(2))
        .await
        .context("node 2 rebuilt from ZooKeeper lost writes")
        .in_cluster(&c)?;

    // And it keeps working: a new write is acknowledged and readable.
    let idx = c.client(2).put("s5-after", "yes").await.into_result()?;
    assert!(idx > 0);
    assert_eq!(c.client(2).get("s5-after").await.into_result()?.as_deref(), Some("yes"));
    Ok(())
}

/// S6: both nodes die mid-write; both are reborn with their disks; one
/// leads, nothing acknowledged is lost, and they agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_both_die_both_reborn_with_disks() -> Result<()> {
    let mut c = Cluster::start("s6").await?;
    let w = writer(c.clients(), "s6");
    w.wait_for_more_acks(STEP_ACKS * 3, CATCH_UP_TIMEOUT).await?;
    c.node_mut(1).kill9().await?;
    c.node_mut(2).kill9().await?;
    let log = w.stop().await?;

    c.node_mut(1).start()?;
    c.node_mut(2).start()?;
    c.node_mut(1).wait_live(CATCH_UP_TIMEOUT).await?;
    c.node_mut(2).wait_live(CATCH_UP_TIMEOUT).await?;
    c.wait_for_leader(FAILOVER_TIMEOUT).await.in_cluster(&c)?;
    verify_everywhere(&mut c, &log, &[1, 2]).await.in_cluster(&c)?;
    assert_same_state(&mut c, &log).await
}

/// No divergence: after catching up, both state machines hold the same
/// value for every key the writer touched.
async fn assert_same_state(c: &mut Cluster, log: &WriterLog) -> Result<()> {
    let leader = c.wait_for_leader(FAILOVER_TIMEOUT).await?;
    c.wait_caught_up_with(leader, CATCH_UP_TIMEOUT).await?;
    for key in log.expected().keys() {
        let a = c.client(1).get_stale(key).await.into_result()?;
        let b = c.client(2).get_stale(key).await.into_result()?;
        assert_eq!(a, b, "nodes diverge on {key}");
    }
    Ok(())
}
