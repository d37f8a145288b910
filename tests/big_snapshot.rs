//! Snapshots of many chunks through ZooKeeper: a wiped node is reborn from
//! W's snapshot (streamed chunk by chunk into a file, each chunk
//! CRC-checked) and ends with the leader's state; a damaged chunk znode is
//! an error naming it, and nothing of it is applied. The leader's install
//! on a follower in several pieces is in `load_faults.rs`
//! (`follower_behind_the_purged_log_installs_a_snapshot_of_several_pieces`).

mod common;

use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use common::cluster::ClusterContext;
use common::Cluster;
use common::Deadline;
use common::NodeClient;
use walship::client::Method;

const TIMEOUT: Duration = Duration::from_secs(60);
/// The largest value a client may write.
const VALUE_BYTES: usize = 512 * 1024;

fn value(i: usize) -> Vec<u8> {
    (0..VALUE_BYTES)
        .map(|b| b"0123456789abcdef"[(b * 7 + i) % 16])
        .collect()
}

/// Writes `n` values of 512 KiB through `api`; returns their keys.
async fn write_big(api: &NodeClient, prefix: &str, n: usize) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        api.put(&key, value(i))
            .await
            .into_result()
            .with_context(|| format!("put {key}"))?;
        keys.push(key);
    }
    Ok(keys)
}

/// `POST /admin/snapshot` on the leader: built and stored in ZooKeeper.
async fn snapshot_to_zookeeper(api: &NodeClient) -> Result<()> {
    match api.raw(Method::POST, "/admin/snapshot", None).await.into_result() {
        Ok((200, body)) => {
            let text = String::from_utf8_lossy(&body);
            if !text.contains("true") {
                bail!("the snapshot did not go to ZooKeeper: {text}");
            }
            Ok(())
        }
        Ok((status, body)) => bail!("POST /admin/snapshot: {status} {}", String::from_utf8_lossy(&body)),
        Err(e) => bail!("POST /admin/snapshot: {e}"),
    }
}

/// The chunk znodes of the snapshot W's record names, in order.
async fn snapshot_chunks(c: &Cluster) -> Result<Vec<String>> {
    let zk = zookeeper_client::Client::connect(&c.zk().addr()).await?;
    let dir = format!("/walship/{}/snapshots", c.name);
    let ids = zk.list_children(&dir).await?;
    let [id] = ids.as_slice() else {
        bail!("W holds snapshots {ids:?}, expected one");
    };
    let mut chunks = zk.list_children(&format!("{dir}/{id}")).await?;
    chunks.sort();
    Ok(chunks.into_iter().map(|n| format!("{dir}/{id}/{n}")).collect())
}

/// A wiped node adopts a snapshot of many chunks from ZooKeeper, streamed
/// into a file, and ends with exactly the leader's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_reborn_from_a_snapshot_of_many_chunks() -> Result<()> {
    let mut c = Cluster::start("bigsnap-adopt").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let api = c.client(leader);
    // 12 MiB: over a dozen of W's chunks (under 1 MiB each).
    let keys = write_big(&api, "big", 24).await.in_cluster(&c)?;
    snapshot_to_zookeeper(&api).await.in_cluster(&c)?;
    let chunks = snapshot_chunks(&c).await?;
    assert!(chunks.len() > 12, "W holds {} chunks", chunks.len());
    // The WAL after the snapshot, too.
    api.put("after", "the snapshot").await.into_result()?;

    c.node_mut(follower).kill9().await?;
    c.node_mut(follower).wipe_data_dir()?;
    c.node_mut(follower).start()?;
    c.node_mut(follower).wait_live(TIMEOUT).await.in_cluster(&c)?;
    c.wait_caught_up_with(leader, TIMEOUT).await.in_cluster(&c)?;
    let log_text = std::fs::read_to_string(c.node(follower).log_path())?;
    assert!(
        log_text.contains("adopting W's snapshot"),
        "node {follower} should have been reborn from W's snapshot; see {}",
        c.node(follower).log_path().display()
    );
    for (i, key) in keys.iter().enumerate() {
        for id in [leader, follower] {
            let got = c.client(id).get_bytes(key, true).await.into_result()?;
            assert!(got == Some(value(i)), "node {id} holds another {key}");
        }
    }
    assert_eq!(
        c.client(follower).get_stale("after").await.into_result()?.as_deref(),
        Some("the snapshot")
    );

    // The reborn node alone (with W) serves it all.
    c.node_mut(leader).kill9().await?;
    assert_eq!(c.wait_for_new_leader(leader, TIMEOUT).await.in_cluster(&c)?, follower);
    let got = c.client(follower).get_bytes(&keys[7], false).await.into_result()?;
    assert!(got == Some(value(7)), "the reborn leader lost {}", keys[7]);
    Ok(())
}

/// One byte flipped in one chunk znode of W's snapshot: a wiped node never
/// takes it (its log names the znode and its CRC), and `walship wal
/// inspect` reports that znode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_chunk_in_zookeeper_is_an_error_naming_it() -> Result<()> {
    let mut c = Cluster::start("bigsnap-damaged").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let api = c.client(leader);
    write_big(&api, "big", 6).await.in_cluster(&c)?;
    snapshot_to_zookeeper(&api).await.in_cluster(&c)?;
    c.kill_both().await?;

    let chunks = snapshot_chunks(&c).await?;
    assert!(chunks.len() >= 3, "W holds {} chunks", chunks.len());
    let damaged = chunks[chunks.len() / 2].clone();
    let zk = zookeeper_client::Client::connect(&c.zk().addr()).await?;
    let (mut bytes, _) = zk.get_data(&damaged).await?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    zk.set_data(&damaged, &bytes, None).await?;

    c.node_mut(2).wipe_data_dir()?;
    c.node_mut(2).start()?;
    let deadline = Deadline::after(Duration::from_secs(30), format!("node 2 naming {damaged}"));
    loop {
        let log = c.node(2).log_tail(300);
        if log.contains(&damaged) && log.contains("crc32") {
            break;
        }
        if let Some(status) = c.node_mut(2).exited() {
            let log = c.node(2).log_tail(300);
            assert!(!status.success(), "node 2 exited successfully over a damaged W");
            assert!(
                log.contains(&damaged) && log.contains("crc32"),
                "node 2's log must name {damaged}:\n{log}"
            );
            break;
        }
        assert!(
            c.client(2).ready().await.into_result().is_err(),
            "node 2 got ready over a damaged snapshot"
        );
        deadline.tick(&"no mention yet").await.in_cluster(&c)?;
    }

    let out = tokio::process::Command::new(common::WALSHIP_BIN)
        .args(["wal", "inspect", "--zk", &c.zk().addr(), "--cluster", &c.name])
        .env_remove("WALSHIP_ZK")
        .env_remove("WALSHIP_CLUSTER")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "inspect must exit 1:\n{stdout}");
    assert!(stdout.contains(&damaged), "inspect must name {damaged}:\n{stdout}");
    Ok(())
}

/// The bytes of W's WAL now: the segment znodes' data, summed.
async fn wal_bytes(zk: &zookeeper_client::Client, wal_dir: &str) -> Result<u64> {
    let mut total = 0u64;
    for name in zk.list_children(wal_dir).await? {
        // A segment compacted away between the listing and its stat.
        if let Some(stat) = zk.check_stat(&format!("{wal_dir}/{name}")).await? {
            total += stat.data_length as u64;
        }
    }
    Ok(total)
}

/// `snapshot_every_wal_bytes` bounds W's WAL (ZooKeeper's memory) under a
/// steady writer: the next snapshot is asked for as soon as the previous
/// one is in W, not at a fixed pace. With a 5 s pace W's WAL grew to 238
/// MB against a 64 MiB bound at 50 MB/s (BENCHMARKS.md); here, at ~4 MiB/s
/// against a 1 MiB bound, it reached 20 MB (1.6 MB now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_in_zookeeper_stays_near_its_bound_under_a_steady_writer() -> Result<()> {
    const BOUND_BYTES: u64 = 1 << 20;
    const VALUE_BYTES: usize = 64 * 1024;
    let bound = BOUND_BYTES.to_string();
    let mut c = Cluster::start_with(
        "bigsnap-walbound",
        &[
            "--snapshot-every-wal-bytes",
            &bound,
            "--snapshot-every-entries",
            "1000000",
        ],
    )
    .await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let api = c.client(leader);
    let zk = zookeeper_client::Client::connect(&c.zk().addr()).await?;
    let wal_dir = format!("/walship/{}/wal", c.name);

    // Two writers, each a 64 KiB value every 32 ms (~4 MiB/s together), over
    // 16 keys, so the state (and each snapshot) stays 1 MiB; 8 s of it.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(Duration::from_millis(32));
                for i in 0..250usize {
                    pace.tick().await;
                    let key = format!("k{}", (i * 2 + w) % 16);
                    api.put(&key, vec![b'a' + (i % 26) as u8; VALUE_BYTES])
                        .await
                        .into_result()
                        .with_context(|| format!("put {key}"))?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let mut most = 0u64;
    while !writers.iter().all(|w| w.is_finished()) {
        most = most.max(wal_bytes(&zk, &wal_dir).await?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in writers {
        w.await?.in_cluster(&c)?;
    }
    println!("W's WAL peaked at {most} bytes (bound {BOUND_BYTES})");
    assert!(
        most < 10 * BOUND_BYTES,
        "W's WAL reached {most} bytes against a bound of {BOUND_BYTES}"
    );
    Ok(())
}
