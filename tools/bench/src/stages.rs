//! Where a write's time goes (`--only stages`): closed-loop clients write
//! 100 B values to the leader for the window while the leader's stage
//! clock (`walship::types::stages`, exported as
//! `walship_write_stage_seconds{stage}`) times every write; the leader's
//! `/metrics` is scraped before and after, and the difference gives each
//! stage's count, mean and p50 (interpolated in its buckets) and its share
//! of the client-side mean. The serial stages add up to the handler's time;
//! what the client sees beyond that ("outside the handler") is the client,
//! the kernel's loopback and hyper.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use anyhow::Result;
use axum::body::Bytes;
use hyper::Method;
use hyper::StatusCode;
use serde::Serialize;
use walship::types::stages::Stage;
use walship_testkit::Cluster;

use super::cpu;
use super::cpu::CpuUse;
use super::http1::Http1;
use super::load::closed_loop;
use super::load::key_index;
use super::load::value;
use super::load::Latency;

const VALUE_BYTES: usize = 100;
const METRIC: &str = "walship_write_stage_seconds";
/// The stage histogram's first bucket bound (src/metrics.rs).
const FIRST_BUCKET_US: f64 = 10.0;

/// One stage's row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct StageRow {
    pub stage: String,
    /// On the write's path (adds to its latency); otherwise beside it.
    pub serial: bool,
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    /// mean_us over the client-side mean latency.
    pub share_of_end_to_end: f64,
}

/// One measured run.
#[derive(Clone, Debug, Serialize)]
pub struct StagesPoint {
    pub clients: usize,
    pub value_bytes: usize,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    /// Client-side latency of the writes in the window.
    pub latency: Latency,
    pub stages: Vec<StageRow>,
    /// The serial stages' means added up: the handler's mean time.
    pub serial_sum_mean_us: f64,
    /// Client-side mean minus the serial sum: client, loopback, hyper.
    pub outside_handler_mean_us: f64,
    /// Writes the leader answered without reporting their stages.
    pub incomplete: u64,
    /// The leader's ZooKeeper calls in the window (`zookeeper_op_seconds`,
    /// timed inside walship-zk): W's unpipelined multis, leadership checks,
    /// lease renewals; the pipelined multis are not among them (`w_pipelined`).
    pub zookeeper_ops: u64,
    pub zookeeper_op_mean_us: f64,
    /// CPU used by each process during the window.
    pub cpu: CpuUse,
}

/// A histogram's counters as scraped: cumulative counts by upper bound
/// (seconds, +Inf last), sum (seconds) and count.
#[derive(Clone, Debug, Default, PartialEq)]
struct Scraped {
    buckets: Vec<(f64, u64)>,
    sum_seconds: f64,
    count: u64,
}

/// What the bench reads of the leader's `/metrics`.
#[derive(Clone, Debug, Default)]
struct Page {
    stages: BTreeMap<String, Scraped>,
    incomplete: u64,
    /// `walship_zookeeper_op_seconds`: the ZooKeeper calls made through
    /// walship-zk (not the pipelined multis).
    zk_sum_seconds: f64,
    zk_count: u64,
}

/// The stage histograms, the incomplete counter and the ZooKeeper calls'
/// totals of a Prometheus text page.
fn parse(text: &str) -> Page {
    let mut out: BTreeMap<String, Scraped> = BTreeMap::new();
    let mut page = Page::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            "walship_write_stage_incomplete_total" => page.incomplete = value.parse::<f64>().unwrap_or(0.0) as u64,
            "walship_zookeeper_op_seconds_sum" => page.zk_sum_seconds = value.parse().unwrap_or(0.0),
            "walship_zookeeper_op_seconds_count" => page.zk_count = value.parse::<f64>().unwrap_or(0.0) as u64,
            _ => {}
        }
        let Some(kind) = name.strip_prefix(METRIC) else {
            continue;
        };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_string())
            })
        };
        let Some(stage) = label("stage") else { continue };
        let s = out.entry(stage).or_default();
        match kind {
            "_bucket" => {
                let le = match label("le").as_deref() {
                    Some("+Inf") => f64::INFINITY,
                    Some(x) => x.parse().unwrap_or(f64::NAN),
                    None => continue,
                };
                s.buckets.push((le, value.parse::<f64>().unwrap_or(0.0) as u64));
            }
            "_sum" => s.sum_seconds = value.parse().unwrap_or(0.0),
            "_count" => s.count = value.parse::<f64>().unwrap_or(0.0) as u64,
            _ => {}
        }
    }
    for s in out.values_mut() {
        s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    page.stages = out;
    page
}

impl Scraped {
    /// What was added between `before` and `self`.
    fn since(&self, before: Option<&Scraped>) -> Scraped {
        let Some(b) = before else { return self.clone() };
        Scraped {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| {
                    let was = b.buckets.iter().find(|(l, _)| *l == le).map_or(0, |x| x.1);
                    (le, n.saturating_sub(was))
                })
                .collect(),
            sum_seconds: self.sum_seconds - b.sum_seconds,
            count: self.count.saturating_sub(b.count),
        }
    }

    /// The p50 in µs, linearly interpolated inside the bucket holding it
    /// (the last finite bound if it is in +Inf).
    fn p50_us(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let target = self.count as f64 / 2.0;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(le, cum) in &self.buckets {
            if cum as f64 >= target {
                if le.is_infinite() {
                    return lower * 1e6;
                }
                let inside = (cum - below) as f64;
                let frac = if inside > 0.0 {
                    (target - below as f64) / inside
                } else {
                    1.0
                };
                return (lower + (le - lower) * frac) * 1e6;
            }
            (lower, below) = (le, cum);
        }
        lower * 1e6
    }
}

async fn scrape(metrics: &Http1) -> Result<Page> {
    let (status, body) = metrics
        .send(0, Method::GET, "/metrics", Bytes::new())
        .await
        .map_err(|e| anyhow::anyhow!("GET /metrics: {e}"))?;
    anyhow::ensure!(status == StatusCode::OK, "GET /metrics: HTTP {status}");
    Ok(parse(std::str::from_utf8(&body).context("/metrics is not UTF-8")?))
}

/// Runs one point per client count; `on_point` sees each as it completes.
pub async fn run(
    cluster: &mut Cluster,
    clients: &[usize],
    warmup: Duration,
    window: Duration,
    mut on_point: impl FnMut(&StagesPoint),
) -> Result<()> {
    for &n in clients {
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let addr = cluster.node(leader).listen();
        let target = Arc::new(Http1::new(addr, n));
        let metrics = Http1::new(addr, 1);
        let values: Arc<Vec<Bytes>> = Arc::new((0..n).map(|c| Bytes::from(value(VALUE_BYTES, c))).collect());
        let write = move |t: Arc<Http1>, b: Arc<Vec<Bytes>>| {
            move |c: usize, seq: u64| {
                let (t, b) = (Arc::clone(&t), Arc::clone(&b));
                async move {
                    let path = format!("/v1/kv/stages-{:05}", key_index(c, seq, n, 1000));
                    match t.send(c, Method::PUT, &path, b[c].clone()).await {
                        Ok((StatusCode::OK, _)) => Ok(()),
                        Ok((status, body)) => Err(format!(
                            "{path}: HTTP {}: {}",
                            status.as_u16(),
                            String::from_utf8_lossy(&body)
                        )),
                        Err(e) => Err(format!("{path}: {e}")),
                    }
                }
            }
        };
        // Warm-up apart, so the scrapes bracket only the measured window.
        closed_loop(
            n,
            Duration::ZERO,
            warmup,
            write(Arc::clone(&target), Arc::clone(&values)),
        )
        .await;
        let before = scrape(&metrics).await?;
        let mark = cpu::mark(&cluster.pids());
        let o = closed_loop(n, Duration::ZERO, window, write(Arc::clone(&target), values)).await;
        let cpu = mark.since();
        let after = scrape(&metrics).await?;
        let latency = Latency::of(&o.hist);
        let e2e_mean_us = latency.mean_ms * 1000.0;
        let mut rows = Vec::new();
        for stage in Stage::ALL {
            let Some(now) = after.stages.get(stage.name()) else {
                anyhow::bail!("the leader's /metrics has no {METRIC}{{stage=\"{}\"}}", stage.name());
            };
            let d = now.since(before.stages.get(stage.name()));
            let mean_us = if d.count > 0 {
                d.sum_seconds / d.count as f64 * 1e6
            } else {
                0.0
            };
            rows.push(StageRow {
                stage: stage.name().to_string(),
                serial: stage.is_serial(),
                count: d.count,
                mean_us,
                p50_us: d.p50_us(),
                share_of_end_to_end: if e2e_mean_us > 0.0 { mean_us / e2e_mean_us } else { 0.0 },
            });
        }
        let serial_sum_mean_us: f64 = rows.iter().filter(|r| r.serial).map(|r| r.mean_us).sum();
        let p = StagesPoint {
            clients: n,
            value_bytes: VALUE_BYTES,
            ops: o.ops,
            errors: o.errors,
            ops_per_sec: o.ops_per_sec(),
            latency,
            stages: rows,
            serial_sum_mean_us,
            outside_handler_mean_us: e2e_mean_us - serial_sum_mean_us,
            incomplete: after.incomplete.saturating_sub(before.incomplete),
            zookeeper_ops: after.zk_count.saturating_sub(before.zk_count),
            zookeeper_op_mean_us: (after.zk_sum_seconds - before.zk_sum_seconds)
                / (after.zk_count.saturating_sub(before.zk_count)).max(1) as f64
                * 1e6,
            cpu,
        };
        print!("{}", table(&p));
        on_point(&p);
    }
    Ok(())
}

/// The point as a text table.
pub fn table(p: &StagesPoint) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nstages of a {} B write, {} client{}: {:.0} writes/s, client-side p50 {:.0} µs, mean {:.0} µs{}",
        p.value_bytes,
        p.clients,
        if p.clients == 1 { "" } else { "s" },
        p.ops_per_sec,
        p.latency.p50_ms * 1000.0,
        p.latency.mean_ms * 1000.0,
        if p.errors > 0 {
            format!(" ({} errors)", p.errors)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "{:<20} {:>9} {:>9} {:>9} {:>7}",
        "STAGE", "COUNT", "MEAN µS", "P50 µS", "SHARE"
    );
    let row = |o: &mut String, name: &str, count: String, mean: f64, p50: String, share: f64| {
        let _ = writeln!(
            o,
            "{:<20} {:>9} {:>9.1} {:>9} {:>6.1}%",
            name,
            count,
            mean,
            p50,
            share * 100.0
        );
    };
    let share = |us: f64| {
        let e2e = p.latency.mean_ms * 1000.0;
        if e2e > 0.0 {
            us / e2e
        } else {
            0.0
        }
    };
    // Under the first bucket's bound the interpolation says nothing.
    let p50 = |us: f64| {
        if us < FIRST_BUCKET_US {
            format!("<{FIRST_BUCKET_US:.0}")
        } else {
            format!("{us:.1}")
        }
    };
    let stage_rows = |o: &mut String, serial: bool| {
        for r in p.stages.iter().filter(|r| r.serial == serial) {
            row(
                o,
                &r.stage,
                r.count.to_string(),
                r.mean_us,
                p50(r.p50_us),
                r.share_of_end_to_end,
            );
        }
    };
    stage_rows(&mut o, true);
    row(
        &mut o,
        "= handler total",
        String::new(),
        p.serial_sum_mean_us,
        String::new(),
        share(p.serial_sum_mean_us),
    );
    row(
        &mut o,
        "+ outside handler",
        String::new(),
        p.outside_handler_mean_us,
        String::new(),
        share(p.outside_handler_mean_us),
    );
    let _ = writeln!(o, "beside the path:");
    stage_rows(&mut o, false);
    let _ = writeln!(
        o,
        "other ZooKeeper calls (walship-zk's, not the pipelined multis): {}, mean {:.1} µs; writes without stages: {}",
        p.zookeeper_ops, p.zookeeper_op_mean_us, p.incomplete
    );
    let _ = writeln!(o, "cpu % of a core: {}", super::throughput::cpu_line(&p.cpu));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP walship_write_stage_seconds time
# TYPE walship_write_stage_seconds histogram
walship_write_stage_seconds_bucket{stage="apply",le="0.00001"} 2
walship_write_stage_seconds_bucket{stage="apply",le="0.00002"} 6
walship_write_stage_seconds_bucket{stage="apply",le="+Inf"} 10
walship_write_stage_seconds_sum{stage="apply"} 0.001
walship_write_stage_seconds_count{stage="apply"} 10
walship_write_stage_incomplete_total 3
walship_write_seconds_count 99
walship_zookeeper_op_seconds_sum 0.002
walship_zookeeper_op_seconds_count 4
"#;

    #[test]
    fn parses_and_interpolates_the_p50() {
        let page = parse(PAGE);
        assert_eq!(page.incomplete, 3);
        assert_eq!((page.zk_count, page.zk_sum_seconds), (4, 0.002));
        let a = &page.stages["apply"];
        assert_eq!(a.count, 10);
        assert_eq!(a.buckets.len(), 3);
        // 5 of 10: 3 of the 4 between 10 and 20 µs.
        assert!((a.p50_us() - 17.5).abs() < 1e-6, "{}", a.p50_us());
        let before = Scraped {
            buckets: vec![(0.00001, 2), (0.00002, 2), (f64::INFINITY, 2)],
            sum_seconds: 0.0001,
            count: 2,
        };
        let d = a.since(Some(&before));
        assert_eq!(d.count, 8);
        assert_eq!(d.buckets[0].1, 0);
        // 4 of 8: all within the 10-20 µs bucket's 4.
        assert!((d.p50_us() - 20.0).abs() < 1e-6, "{}", d.p50_us());
    }
}
