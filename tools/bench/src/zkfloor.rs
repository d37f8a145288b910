//! ZooKeeper's own latency for one write at a time (`--only zk-floor`): the
//! floor under a walship write, measured on the bench's ZooKeeper with the
//! nodes idle. One client of its own sends, one after another, what W's
//! pipeline sends per batch (a multi: `check` the record's version, `create`
//! a record znode of N bytes, `set` the record; the record created `RETAIN`
//! multis earlier is deleted in the same multi, so ZooKeeper holds a bounded
//! window as W does between snapshots), for N = the batch sizes walship
//! produces at 1 client and up to 64 clients of 4 KiB values; and, beside
//! them, one `setData` of 100 B, which is what zk-direct sends per write.
//!
//! A walship write waits for at least one of these multis, so their tail
//! is the tail no batching or pipelining on the client side can remove.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Mutex;
use walship_testkit::Cluster;
use zookeeper_client as zk;

use super::cpu;
use super::cpu::CpuUse;
use super::load::closed_loop;

/// The record payloads: a 1-client batch of one 100 B write, and batches
/// of 16, 64 and 240 KiB (64 clients of 4 KiB fill a 256 KiB batch).
pub const MULTI_BYTES: [usize; 4] = [200, 16 * 1024, 64 * 1024, 240 * 1024];
const SET_BYTES: usize = 100;
/// Records kept before the oldest is deleted (240 KiB x 64 = 15 MiB held).
const RETAIN: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// check + create(N bytes) + set (+ delete of an old record).
    Multi,
    /// setData of N bytes on one znode.
    SetData,
}

/// One row: `ops` operations of `bytes`, one at a time.
#[derive(Clone, Debug, Serialize)]
pub struct FloorPoint {
    pub shape: Shape,
    pub bytes: usize,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// ZooKeeper's CPU per operation, µs.
    pub zookeeper_cpu_us_per_op: f64,
    pub cpu: CpuUse,
}

/// Runs every row against `cluster`'s ZooKeeper.
pub async fn run(
    cluster: &Cluster,
    warmup: Duration,
    window: Duration,
    mut each: impl FnMut(&FloorPoint),
) -> Result<()> {
    let addr = cluster.zk_addr().to_string();
    let client = super::zkdirect::connect(&addr).await?;
    let root = format!("/bench-zk-floor-{}", std::process::id());
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client
        .create(&root, &[], &opts)
        .await
        .with_context(|| format!("create {root}"))?;
    let mut shapes: Vec<(Shape, usize)> = vec![(Shape::SetData, SET_BYTES)];
    shapes.extend(MULTI_BYTES.iter().map(|&b| (Shape::Multi, b)));
    let pids = cluster.pids();
    for (shape, bytes) in shapes {
        let dir = format!("{root}/{bytes}-{}", if shape == Shape::Multi { "multi" } else { "set" });
        client
            .create(&dir, &[], &opts)
            .await
            .with_context(|| format!("create {dir}"))?;
        // The one client's state: the record's version and the next record.
        let state = Arc::new(Mutex::new((0i32, 0u64)));
        let (c, d) = (client.clone(), Arc::new(dir.clone()));
        let data = Arc::new(vec![b'w'; bytes]);
        let mark = cpu::mark(&pids);
        let out = closed_loop(1, warmup, window, move |_, _| {
            let (c, d, data, state) = (c.clone(), Arc::clone(&d), Arc::clone(&data), Arc::clone(&state));
            async move {
                let mut s = state.lock().await;
                let (version, next) = *s;
                match shape {
                    Shape::SetData => c.set_data(&d, &data, None).await.map(|_| ()),
                    Shape::Multi => {
                        let mut m = c.new_multi_writer();
                        m.add_check_version(&d, version).map_err(|e| e.to_string())?;
                        let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                        m.add_create(&format!("{d}/r{next:010}"), &data, &opts)
                            .map_err(|e| e.to_string())?;
                        if next >= RETAIN {
                            m.add_delete(&format!("{d}/r{:010}", next - RETAIN), None)
                                .map_err(|e| e.to_string())?;
                        }
                        m.add_set_data(&d, &[], Some(version)).map_err(|e| e.to_string())?;
                        m.commit().await.map(|_| ()).map_err(zk::Error::from)
                    }
                }
                .map_err(|e| format!("{shape:?} of {} B on {d}: {e}", data.len()))?;
                if shape == Shape::Multi {
                    *s = (version + 1, next + 1);
                }
                Ok(())
            }
        })
        .await;
        let cpu = mark.since();
        if let Some(e) = &out.first_error {
            anyhow::bail!("ZooKeeper floor, {bytes} B: {} errors, first: {e}", out.errors);
        }
        let zk_pct = cpu.percent_of_core.get("zookeeper").copied().unwrap_or(0.0);
        let ops_per_sec = out.ops_per_sec();
        let point = FloorPoint {
            shape,
            bytes,
            ops: out.ops,
            errors: out.errors,
            ops_per_sec,
            p50_ms: quantile_ms(&out.hist, 0.50),
            p90_ms: quantile_ms(&out.hist, 0.90),
            p99_ms: quantile_ms(&out.hist, 0.99),
            p999_ms: quantile_ms(&out.hist, 0.999),
            max_ms: out.hist.max() as f64 / 1000.0,
            zookeeper_cpu_us_per_op: if ops_per_sec > 0.0 {
                zk_pct * 1e4 / ops_per_sec
            } else {
                0.0
            },
            cpu,
        };
        println!("{}", row(&point));
        each(&point);
        // Leave ZooKeeper as the other parts found it.
        if let Err(e) = delete_tree(&client, &dir).await {
            eprintln!("walship bench: cleaning up {dir}: {e}");
        }
    }
    let _ = client.delete(&root, None).await;
    Ok(())
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn delete_tree(client: &zk::Client, dir: &str) -> Result<(), zk::Error> {
    for child in client.list_children(dir).await? {
        client.delete(&format!("{dir}/{child}"), None).await?;
    }
    client.delete(dir, None).await
}

fn header() -> String {
    format!(
        "{:<8} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "SHAPE", "BYTES", "OPS/S", "P50 MS", "P90 MS", "P99 MS", "P99.9", "MAX MS", "ZK µS/OP"
    )
}

fn row(p: &FloorPoint) -> String {
    format!(
        "{:<8} {:>7} {:>7.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>10.0}",
        match p.shape {
            Shape::Multi => "multi",
            Shape::SetData => "setData",
        },
        p.bytes,
        p.ops_per_sec,
        p.p50_ms,
        p.p90_ms,
        p.p99_ms,
        p.p999_ms,
        p.max_ms,
        p.zookeeper_cpu_us_per_op
    )
}

/// The report's table.
pub fn table(points: &[FloorPoint]) -> String {
    let mut o = String::new();
    if points.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "\nZooKeeper alone, one operation at a time (the floor under a walship write; nodes idle)"
    );
    let _ = writeln!(o, "{}", header());
    for p in points {
        let _ = writeln!(o, "{}", row(p));
    }
    o
}

/// Printed before the rows as they are measured.
pub fn print_header() {
    println!("{}", header());
}
