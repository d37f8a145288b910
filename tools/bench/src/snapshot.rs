//! Snapshots of a big state: a fresh two-node cluster per size is filled
//! with N MB of 512 KiB values (no snapshot meanwhile), then `POST
//! /admin/snapshot` on the leader builds the snapshot and stores it in
//! ZooKeeper (timed), then the follower is killed, wiped and restarted, so
//! it is reborn from W's snapshot (timed from its start to having applied
//! what the leader has). Each node process's peak RSS (VmHWM from
//! `/proc/<pid>/status`, reset through `/proc/<pid>/clear_refs` before each
//! step) is taken after each step, to show what memory a snapshot costs
//! beyond the state itself.

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use futures::StreamExt;
use serde::Serialize;

use walship_testkit::Cluster;
use walship_testkit::Polling;

use super::target;

/// The largest value a client may write.
pub const VALUE_BYTES: usize = 512 * 1024;
const WRITERS: usize = 4;
const STEP_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotPoint {
    pub state_mb: u64,
    pub values: u64,
    /// The leader's snapshot file.
    pub snapshot_file_bytes: u64,
    pub fill_mb_per_sec: f64,
    /// `POST /admin/snapshot`: built, written, and stored in ZooKeeper.
    pub snapshot_ms: f64,
    /// The wiped follower's start to its having applied the leader's last entry.
    pub rebirth_ms: f64,
    /// Peak RSS over the snapshot step (build and upload).
    pub leader_peak_rss_snapshot_bytes: u64,
    pub follower_peak_rss_snapshot_bytes: u64,
    /// Resident before the snapshot (the state itself, mostly).
    pub leader_rss_before_bytes: u64,
    /// Peak RSS over the rebirth step: the leader's, and the reborn follower's
    /// whole life (adoption from ZooKeeper included).
    pub leader_peak_rss_rebirth_bytes: u64,
    pub follower_peak_rss_rebirth_bytes: u64,
    pub zookeeper_peak_rss_bytes: u64,
}

/// ZooKeeper's heap for a state of `max_mb`: W's WAL and its snapshot of
/// the state live in ZooKeeper's memory together until the snapshot
/// compacts the WAL.
pub fn zk_heap(max_mb: u64) -> String {
    format!("{}m", (3 * max_mb + 768).max(1024))
}

fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read /proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{line:?}"))
}

/// Peak resident set (VmHWM) of `pid`, in bytes.
fn peak_rss_bytes(pid: u32) -> Result<u64> {
    Ok(proc_status_kb(pid, "VmHWM:")? * 1024)
}

fn rss_bytes(pid: u32) -> Result<u64> {
    Ok(proc_status_kb(pid, "VmRSS:")? * 1024)
}

/// Resets `pid`'s VmHWM to its current RSS (`clear_refs` 5).
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").with_context(|| format!("reset the peak RSS of {pid}"))
}

fn node_pid(c: &Cluster, id: u64) -> Result<u32> {
    c.node(id).pid().with_context(|| format!("node {id} is not running"))
}

fn value(i: u64) -> Vec<u8> {
    let mut v = format!("{i:09}:").into_bytes();
    v.resize(VALUE_BYTES, b"abcdefgh"[(i % 8) as usize]);
    v
}

fn key(i: u64) -> String {
    format!("s{i:07}")
}

pub async fn run(run_dir: &Path, bin: &Path, sizes_mb: &[u64], mut on_point: impl FnMut(&SnapshotPoint)) -> Result<()> {
    let heap = zk_heap(sizes_mb.iter().copied().max().unwrap_or(0));
    for &mb in sizes_mb {
        let dir = run_dir.join(format!("snapshot-{mb}mb"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        println!(
            "  {mb} MB: starting ZooKeeper (heap {heap}) and two nodes in {}",
            dir.display()
        );
        let polling = Polling {
            every: Duration::from_millis(20),
            request_timeout: Duration::from_millis(500),
        };
        // No snapshot during the fill: the one measured is the only one.
        let flags = [
            "--snapshot-every-entries",
            "1000000000",
            "--snapshot-every-wal-bytes",
            "1099511627776",
        ];
        let mut c = walship_testkit::Setup::run_dir(&dir, &format!("snap{mb}-{}", std::process::id()))
            .bin(bin)
            .polling(polling)
            .zk_max_heap(&heap)
            .node_args(&flags)
            .start()
            .await?;
        let r = point(&mut c, mb).await;
        c.stop_all().await;
        let p = r?;
        on_point(&p);
        // Several GB per point: give the disk back before the next.
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

async fn point(c: &mut Cluster, mb: u64) -> Result<SnapshotPoint> {
    let leader = c.wait_for_leader(Duration::from_secs(60)).await?;
    let follower = Cluster::other(leader);
    let api = target::client(c.node(leader).listen()).with_timeout(STEP_TIMEOUT);
    let values = (mb << 20).div_ceil(VALUE_BYTES as u64);
    let t0 = Instant::now();
    let mut puts = futures::stream::iter(0..values)
        .map(|i| {
            let api = api.clone();
            async move { target::put(&api, &key(i), value(i)).await }
        })
        .buffer_unordered(WRITERS);
    let mut done = 0u64;
    while let Some(r) = puts.next().await {
        if let Err(e) = r {
            bail!("filling: {e}");
        }
        done += 1;
        if done.is_multiple_of(256) {
            println!("    {} of {mb} MB written", (done * VALUE_BYTES as u64) >> 20);
        }
    }
    let fill_mb_per_sec = mb as f64 / t0.elapsed().as_secs_f64();
    c.wait_caught_up(STEP_TIMEOUT).await?;

    let (lpid, fpid) = (node_pid(c, leader)?, node_pid(c, follower)?);
    let zk_pid = c
        .pids()
        .into_iter()
        .find(|(n, _)| n.contains("zk") || n.contains("zoo"))
        .map(|(_, p)| p);
    let leader_rss_before_bytes = rss_bytes(lpid)?;
    reset_peak(lpid)?;
    reset_peak(fpid)?;
    let t1 = Instant::now();
    match api
        .raw(walship::client::Method::POST, "/admin/snapshot", None)
        .await
        .into_result()
    {
        Ok((200, body)) if String::from_utf8_lossy(&body).contains("true") => {}
        Ok((status, body)) => bail!("POST /admin/snapshot: {status} {}", String::from_utf8_lossy(&body)),
        Err(e) => bail!("POST /admin/snapshot: {e}"),
    }
    let snapshot_ms = t1.elapsed().as_secs_f64() * 1000.0;
    let leader_peak_rss_snapshot_bytes = peak_rss_bytes(lpid)?;
    let follower_peak_rss_snapshot_bytes = peak_rss_bytes(fpid)?;
    let snapshot_file_bytes = std::fs::metadata(c.node(leader).data_dir().join("snapshot/current.snap"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "    snapshot of {mb} MB ({snapshot_file_bytes} bytes) built and stored in ZooKeeper in {snapshot_ms:.0} ms"
    );

    c.node_mut(follower).kill9().await?;
    c.node_mut(follower).wipe_data_dir()?;
    reset_peak(lpid)?;
    let t2 = Instant::now();
    c.node_mut(follower).start()?;
    let fpid = node_pid(c, follower)?;
    c.wait_caught_up_with(leader, STEP_TIMEOUT).await?;
    let rebirth_ms = t2.elapsed().as_secs_f64() * 1000.0;
    let follower_peak_rss_rebirth_bytes = peak_rss_bytes(fpid)?;
    let leader_peak_rss_rebirth_bytes = peak_rss_bytes(lpid)?;
    let probe = values - 1;
    let reader = target::client(c.node(follower).listen());
    match reader.get_bytes(&key(probe), true).await.into_result() {
        Ok(Some(v)) if v == value(probe) => {}
        other => bail!(
            "the reborn follower answered {} with {:?}",
            key(probe),
            other.map(|v| v.map(|v| v.len()))
        ),
    }
    println!("    follower reborn from ZooKeeper in {rebirth_ms:.0} ms");
    let zookeeper_peak_rss_bytes = zk_pid.map(peak_rss_bytes).transpose()?.unwrap_or(0);
    Ok(SnapshotPoint {
        state_mb: mb,
        values,
        snapshot_file_bytes,
        fill_mb_per_sec,
        snapshot_ms,
        rebirth_ms,
        leader_peak_rss_snapshot_bytes,
        follower_peak_rss_snapshot_bytes,
        leader_rss_before_bytes,
        leader_peak_rss_rebirth_bytes,
        follower_peak_rss_rebirth_bytes,
        zookeeper_peak_rss_bytes,
    })
}
