//! The restart rule (issue 9): a node that restarts never acts as leader in a
//! term it held before, so it can never give a new entry the log id of an
//! entry it forgot but its peer still holds.
//!
//! Each test builds the two-fault shape that broke the promise on 342ed45:
//! the leader is cut from ZooKeeper (its own link only, through a fault proxy)
//! and a write reaches the follower's log but never W, so it is never
//! acknowledged; then the leader comes back having forgotten that entry (an
//! empty disk, or its unsynced tail lost to a power cut) and leads again. A
//! write it acknowledges then must win everywhere: on both nodes' state
//! machines, and through a linearizable read once the reborn leader is gone.

mod common;

use std::time::Duration;

use anyhow::ensure;
use anyhow::Context;
use anyhow::Result;
use common::cluster::ClusterContext;
use common::Cluster;
use common::Deadline;
use common::NodeClient;
use common::Reply;
use common::Setup;
use walship_testkit::faultproxy::CutMode;

const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// A write sent to a leader cut from ZooKeeper: it cannot commit, and the
/// test must not wait out the election timeout (the follower would take over
/// and commit the stray entry itself, which is allowed, not the bug).
const DOOMED_WRITE_TIMEOUT: Duration = Duration::from_millis(300);

/// How the cut-off leader comes back.
#[derive(Clone, Copy, Debug)]
enum Reborn {
    /// Both nodes die; the leader is reborn with an empty disk, alone; the
    /// follower comes back later with its disk.
    EmptyDiskAlone,
    /// Only the leader dies and is reborn at once with an empty disk, while
    /// the follower lives (cut from ZooKeeper meanwhile, so it cannot win an
    /// election first and the reborn node must lead).
    EmptyDiskPeerAlive,
    /// Both nodes die; the leader's machine lost power: its disk keeps only
    /// what was fdatasync'd (the stray entry was not: the storage fault
    /// hook `nosync` holds its syncs back), and it comes back alone.
    PowerLossAlone,
}

async fn wait_appended(api: &NodeClient, index: u64) -> Result<()> {
    let deadline = Deadline::after(Duration::from_secs(5), format!("{api:?} to append index {index}"));
    loop {
        let last = match api.status().await {
            Reply::Success { value, .. } if value.last_log_index.is_some_and(|l| l >= index) => return Ok(()),
            other => other.to_string(),
        };
        deadline.tick(&last).await?;
    }
}

/// Writes until one is acknowledged; returns its index.
async fn put_acked(api: &NodeClient, key: &str, value: &str) -> Result<u64> {
    let deadline = Deadline::after(CATCH_UP_TIMEOUT, format!("PUT {key}={value} acknowledged by {api:?}"));
    loop {
        let last = match api.put(key, value).await {
            Reply::Success { value, .. } => return Ok(value),
            other => other.to_string(),
        };
        deadline.tick(&last).await?;
    }
}

/// Polls node-local reads of `key` on every api until they all say `want`.
async fn wait_all_read(apis: &[NodeClient], key: &str, want: &str) -> Result<()> {
    let deadline = Deadline::after(CATCH_UP_TIMEOUT, format!("every node to hold {key}={want}"));
    loop {
        let mut seen = Vec::new();
        for api in apis {
            seen.push(match api.get_stale(key).await {
                Reply::Success { value, .. } => format!("{value:?}"),
                other => other.to_string(),
            });
        }
        if seen.iter().all(|s| *s == format!("{:?}", Some(want))) {
            return Ok(());
        }
        deadline.tick(&format!("{seen:?}")).await?;
    }
}

async fn run(name: &str, reborn: Reborn) -> Result<()> {
    let mut cluster = Setup::test(name)
        .partitionable()
        .zk_cuttable()
        .fault_dirs()
        .start()
        .await?;
    let r = scenario(&mut cluster, reborn).await;
    r.in_cluster(&cluster)
}

async fn scenario(cluster: &mut Cluster, reborn: Reborn) -> Result<()> {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let (lapi, fapi) = (cluster.client(leader), cluster.client(follower));
    let mut acked = Vec::new();
    for i in 0..5 {
        let (k, v) = (format!("before-{i}"), format!("v{i}"));
        put_acked(&lapi, &k, &v).await?;
        acked.push((k, v));
    }
    put_acked(&lapi, "x", "FIRST").await?;
    let last = lapi
        .status()
        .await
        .into_result()?
        .last_log_index
        .context("leader's last index")?;

    // Fault 1: the leader loses ZooKeeper (its sockets stay open, nothing
    // moves). A write reaches its log and the follower's, never W's.
    let nosync = cluster
        .fault_dir(leader)
        .path()
        .join(walship::storage::fault::NOSYNC_FILE);
    if matches!(reborn, Reborn::PowerLossAlone) {
        std::fs::write(&nosync, b"")?;
    }
    cluster.cut_zk(leader, CutMode::Blackhole)?;
    let doomed = lapi.with_timeout(DOOMED_WRITE_TIMEOUT).put("x", "OLD").await;
    ensure!(
        !doomed.is_success(),
        "a write was acknowledged without ZooKeeper: {doomed}"
    );
    wait_appended(&fapi, last + 1).await?;

    // Fault 2: the leader dies and comes back without that entry.
    match reborn {
        Reborn::EmptyDiskAlone => {
            cluster.node_mut(leader).kill9().await?;
            cluster.node_mut(follower).kill9().await?;
            cluster.node_mut(leader).wipe_data_dir()?;
        }
        Reborn::EmptyDiskPeerAlive => {
            cluster.cut_zk(follower, CutMode::Blackhole)?;
            cluster.node_mut(leader).kill9().await?;
            cluster.node_mut(leader).wipe_data_dir()?;
        }
        Reborn::PowerLossAlone => {
            cluster.node_mut(leader).kill9().await?;
            cluster.node_mut(follower).kill9().await?;
            let data_dir = cluster.node(leader).data_dir().to_path_buf();
            let lost = walship::storage::fault::power_loss(&data_dir, cluster.fault_dir(leader).path(), false)?;
            ensure!(lost.records_dropped >= 1, "the power loss dropped nothing: {lost:?}");
            std::fs::remove_file(&nosync)?;
        }
    }
    cluster.heal_zk(leader)?;
    cluster.node_mut(leader).start()?;
    cluster.node_mut(leader).wait_live(LEADER_TIMEOUT).await?;
    let deadline = Deadline::after(LEADER_TIMEOUT, format!("reborn node {leader} to lead"));
    loop {
        let last = match lapi.status().await {
            Reply::Success { value, .. } if value.is_leader() => break,
            other => other.to_string(),
        };
        deadline.tick(&last).await?;
    }
    let new_index = put_acked(&lapi, "x", "NEW").await?;
    ensure!(
        new_index > last,
        "NEW acknowledged at index {new_index}, not after {last}"
    );

    match reborn {
        Reborn::EmptyDiskAlone | Reborn::PowerLossAlone => {
            cluster.node_mut(follower).start()?;
            cluster.node_mut(follower).wait_live(LEADER_TIMEOUT).await?;
        }
        Reborn::EmptyDiskPeerAlive => cluster.heal_zk(follower)?,
    }
    cluster.wait_applied(new_index, CATCH_UP_TIMEOUT).await?;
    // Both state machines hold the acknowledged write, not the stray one
    // that shared its log id on 342ed45.
    wait_all_read(&[lapi.clone(), fapi.clone()], "x", "NEW").await?;

    // The reborn leader goes; the follower leads and must still serve NEW
    // through a linearizable read, with everything acknowledged before.
    cluster.node_mut(leader).kill9().await?;
    cluster.wait_for_new_leader(leader, LEADER_TIMEOUT).await?;
    let x = fapi.get("x").await.into_result()?;
    ensure!(
        x.as_deref() == Some("NEW"),
        "linearizable read of x through node {follower}: {x:?}"
    );
    for (k, v) in &acked {
        let got = fapi.get(k).await.into_result()?;
        ensure!(got.as_deref() == Some(v.as_str()), "{k}: {got:?}, acknowledged {v}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reborn_empty_leader_alone_never_reuses_a_log_id() -> Result<()> {
    run("reborn-empty-alone", Reborn::EmptyDiskAlone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reborn_empty_leader_beside_a_live_peer_never_reuses_a_log_id() -> Result<()> {
    run("reborn-empty-peer-alive", Reborn::EmptyDiskPeerAlive).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_after_power_loss_of_its_unsynced_tail_never_reuses_a_log_id() -> Result<()> {
    run("power-loss-alone", Reborn::PowerLossAlone).await
}
