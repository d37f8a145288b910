//! ZooKeeper footprint: the bytes walship keeps under `/walship/<cluster>`
//! (W's record, the snapshot's chunks, every WAL segment znode), read with
//! `Witness::inspect_all` (what `walship wal inspect` shows), sampled during
//! a long write run over a fixed key space. Snapshots (every
//! `--snapshot-every-entries` entries, default node setting) and the WAL
//! compaction behind them must keep it bounded.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::anyhow;
use anyhow::Result;
use serde::Serialize;

use super::load::closed_loop;
use super::load::key_index;
use super::load::value;
use walship::cli::ZkTarget;
use walship::client::NodeClient;
use walship_testkit::Cluster;

use super::target;

pub const CLIENTS: usize = 16;
pub const VALUE_BYTES: usize = 100;
pub const KEYSPACE: u64 = 10_000;

/// What ZooKeeper holds for the cluster, in bytes of znode data.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WBytes {
    pub total: u64,
    pub record: u64,
    pub snapshot: u64,
    pub wal: u64,
    pub wal_segments: usize,
    /// Segments wholly behind the snapshot, not yet deleted (included in `wal`).
    pub garbage_segments: usize,
    /// Snapshot dirs other than the current one (their chunks are not counted).
    pub unreferenced_snapshots: usize,
    pub snapshot_last_index: Option<u64>,
}

/// Reads W once, through a short-lived session of its own.
pub async fn w_bytes(zk: &str, cluster: &str) -> Result<WBytes> {
    let target = ZkTarget {
        security: Default::default(),
        zk: zk.to_string(),
        cluster: cluster.to_string(),
        secret_file: None,
    };
    let (_session, witness) = walship::cli::wal::connect(&target)
        .await
        .map_err(|s| anyhow!(s.message))?;
    let i = witness.inspect_all().await.map_err(|e| anyhow!("inspecting W: {e}"))?;
    let record = i
        .record
        .as_ref()
        .map(|r| serde_json::to_vec(r).map(|v| v.len() as u64).unwrap_or(0))
        .unwrap_or(0);
    let snapshot = i.snapshot.as_ref().map_or(0, |s| s.size_bytes);
    let wal: u64 = i.segments.iter().map(|s| s.bytes as u64).sum();
    Ok(WBytes {
        total: record + snapshot + wal,
        record,
        snapshot,
        wal,
        wal_segments: i.segments.len(),
        garbage_segments: i.segments.iter().filter(|s| s.garbage.is_some()).count(),
        unreferenced_snapshots: i.unreferenced_snapshots.len(),
        snapshot_last_index: i.snapshot.as_ref().and_then(|s| s.last_log_id.map(|l| l.index)),
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub keys: u64,
    pub w: WBytes,
    pub bytes_per_key: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Footprint {
    pub secs: u64,
    pub clients: usize,
    pub value_bytes: usize,
    pub keyspace: u64,
    pub writes: u64,
    pub samples: Vec<Sample>,
    pub max_bytes: u64,
    pub final_bytes_per_key: f64,
    /// Samples where the total went down: a snapshot replaced WAL segments.
    pub compactions_seen: usize,
    /// No growth trend: the last third's peak is within 1.5x the peak before it,
    /// and at least one compaction was seen.
    pub bounded: bool,
}

async fn keys(node: &NodeClient) -> u64 {
    node.status().await.success().and_then(|s| s.keys).unwrap_or(0)
}

pub async fn run(cluster: &mut Cluster, secs: u64) -> Result<Footprint> {
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let client = target::client(cluster.node(leader).listen());
    let status_client = client.clone();
    let values: Arc<Vec<Vec<u8>>> = Arc::new((0..CLIENTS).map(|c| value(VALUE_BYTES, c)).collect());
    let window = Duration::from_secs(secs);
    let load = tokio::spawn(closed_loop(CLIENTS, Duration::ZERO, window, move |c, seq| {
        let (t, v) = (client.clone(), Arc::clone(&values));
        async move {
            let k = format!("fp-{:06}", key_index(c, seq, CLIENTS, KEYSPACE));
            target::put(&t, &k, v[c].clone()).await
        }
    }));
    let every = Duration::from_secs_f64((secs as f64 / 30.0).clamp(0.5, 5.0));
    let t0 = Instant::now();
    let mut samples = Vec::new();
    loop {
        let w = w_bytes(cluster.zk_addr(), &cluster.name).await?;
        let k = keys(&status_client).await;
        let s = Sample {
            t_s: t0.elapsed().as_secs_f64(),
            keys: k,
            bytes_per_key: if k > 0 { w.total as f64 / k as f64 } else { 0.0 },
            w,
        };
        println!(
            "  t={:>5.1}s  {:>10} bytes in ZooKeeper (snapshot {:>9}, WAL {:>9} in {:>4} segments), {:>6} keys, {:>7.1} B/key",
            s.t_s, s.w.total, s.w.snapshot, s.w.wal, s.w.wal_segments, s.keys, s.bytes_per_key
        );
        samples.push(s);
        if t0.elapsed() >= window {
            break;
        }
        tokio::time::sleep(every.min(window.saturating_sub(t0.elapsed()))).await;
    }
    let outcome = load.await.map_err(|e| anyhow!("footprint load task: {e}"))?;
    if outcome.ops == 0 {
        return Err(anyhow!(
            "no write acknowledged in the footprint run: {}",
            outcome.first_error.unwrap_or_default()
        ));
    }
    let totals: Vec<u64> = samples.iter().map(|s| s.w.total).collect();
    let compactions_seen = totals.windows(2).filter(|w| w[1] < w[0]).count();
    let cut = (totals.len() * 2).div_ceil(3).max(1).min(totals.len());
    let early = totals[..cut].iter().copied().max().unwrap_or(0);
    let late = totals[cut..].iter().copied().max().unwrap_or(0);
    let last = samples.last().expect("one sample at least");
    Ok(Footprint {
        secs,
        clients: CLIENTS,
        value_bytes: VALUE_BYTES,
        keyspace: KEYSPACE,
        writes: outcome.ops,
        max_bytes: totals.iter().copied().max().unwrap_or(0),
        final_bytes_per_key: last.bytes_per_key,
        compactions_seen,
        bounded: compactions_seen > 0 && (late as f64) <= 1.5 * early as f64,
        samples,
    })
}
