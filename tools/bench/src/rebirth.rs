//! Rebirth: the cluster holds N keys; both nodes stop; one comes back with
//! an empty data dir and is the only live node, so everything it serves it
//! rebuilt from ZooKeeper (W's snapshot and WAL). Timed from its process
//! start to its first answered linearizable read (of the last key loaded,
//! with the right value). Keys accumulate across the steps (10k, 100k, 1M).

use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use futures::StreamExt;
use serde::Serialize;

use walship_testkit::Cluster;

use super::footprint::w_bytes;
use super::footprint::WBytes;
use super::target;

/// Value size of the loaded keys.
pub const VALUE_BYTES: usize = 100;
const LOADERS: usize = 64;
const READ_DEADLINE: Duration = Duration::from_secs(300);
/// Target: 2 s plus the state at 100 MB/s.
pub const TARGET_BASE_MS: f64 = 2000.0;
pub const TARGET_BYTES_PER_SEC: f64 = 100e6;

#[derive(Clone, Debug, Serialize)]
pub struct Rebirth {
    pub keys: u64,
    /// What ZooKeeper holds for the cluster, which the reborn node reads.
    pub w: WBytes,
    /// Sum of key and value lengths of the loaded keys.
    pub kv_bytes: u64,
    /// Loading rate while filling (64 concurrent writers), for reference.
    pub load_writes_per_sec: f64,
    pub ms: f64,
    pub target_ms: f64,
    pub met: bool,
}

fn key(i: u64) -> String {
    format!("r{i:09}")
}

fn val(i: u64) -> Vec<u8> {
    let mut v = format!("{i:09}").into_bytes();
    v.resize(VALUE_BYTES, b'v');
    v
}

/// Writes keys `from..to` through the leader.
async fn load(cluster: &mut Cluster, from: u64, to: u64) -> Result<f64> {
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let client = target::client(cluster.node(leader).listen());
    let t0 = Instant::now();
    let mut results = futures::stream::iter(from..to)
        .map(|i| {
            let t = client.clone();
            async move {
                // A transient 503/504 (e.g. a snapshot being shipped) is retried: the write is idempotent.
                let mut last = String::new();
                for _ in 0..20 {
                    match target::put(&t, &key(i), val(i)).await {
                        Ok(()) => return Ok(()),
                        Err(e) => last = e,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(last)
            }
        })
        .buffer_unordered(LOADERS);
    let mut done = 0u64;
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            bail!("loading keys: {e}");
        }
        done += 1;
        if done.is_multiple_of(200_000) {
            println!("    loaded {} of {to} keys", from + done);
        }
    }
    Ok((to - from) as f64 / t0.elapsed().as_secs_f64())
}

pub async fn run(cluster: &mut Cluster, steps: &[u64], mut on_step: impl FnMut(&Rebirth)) -> Result<()> {
    let mut loaded = 0u64;
    for &n in steps {
        println!("  loading {} keys of {VALUE_BYTES} B", n - loaded);
        let rate = load(cluster, loaded, n).await?;
        loaded = n;
        cluster.wait_caught_up(Duration::from_secs(120)).await?;
        let w = w_bytes(cluster.zk_addr(), &cluster.name).await?;
        for id in [1, 2] {
            cluster.node_mut(id).stop().await?;
        }
        cluster.node_mut(1).wipe_data_dir()?;
        let reader = target::client(cluster.node(1).listen()).with_timeout(Duration::from_secs(2));
        let (probe_key, want) = (key(n - 1), val(n - 1));
        let t0 = Instant::now();
        cluster.node_mut(1).start()?;
        let mut last = String::new();
        let ms = loop {
            if t0.elapsed() > READ_DEADLINE {
                bail!(
                    "reborn node 1 served no linearizable read of {probe_key} within {READ_DEADLINE:?} (last: {last}); see {}",
                    cluster.node(1).log_path().display()
                );
            }
            if let Some(status) = cluster.node_mut(1).exited() {
                bail!(
                    "reborn node 1 exited ({status}); see {}",
                    cluster.node(1).log_path().display()
                );
            }
            match target::get(&reader, &probe_key).await {
                Ok(Some(v)) if v == want => break t0.elapsed().as_secs_f64() * 1000.0,
                Ok(Some(_)) => bail!("reborn node 1 answered {probe_key} with a wrong value"),
                Ok(None) => last = "404".into(),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let kv_bytes = n * (key(0).len() + VALUE_BYTES) as u64;
        let target_ms = TARGET_BASE_MS + w.total as f64 / TARGET_BYTES_PER_SEC * 1000.0;
        let r = Rebirth {
            keys: n,
            kv_bytes,
            load_writes_per_sec: rate,
            ms,
            target_ms,
            met: ms <= target_ms,
            w,
        };
        println!(
            "  rebirth with {n} keys: {ms:.0} ms ({} bytes in ZooKeeper; target {target_ms:.0} ms: {})",
            r.w.total,
            if r.met { "met" } else { "missed" }
        );
        on_step(&r);
        cluster.node_mut(2).start()?;
        cluster
            .wait_caught_up(Duration::from_secs(120))
            .await
            .context("node 2 rejoining after the rebirth")?;
    }
    Ok(())
}
