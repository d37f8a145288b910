//! Throughput and latency points: for each value size and concurrency,
//! walship writes and linearizable reads, then the same writes (and reads)
//! against ZooKeeper directly and against etcd, back to back, so every
//! system sees the same machine load as nearly as possible.
//!
//! Each write point of walship and zk-direct also records how the work
//! grew (`Growth`): ZooKeeper's requests per second (`mntr`'s
//! `zk_packets_received`, summed over the servers), and for walship the
//! witness's appends from the leader's `/metrics`, both read at the edges
//! of the measured window.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Result;
use axum::body::Bytes;
use hyper::Method;
use hyper::StatusCode;
use serde::Serialize;

use super::args::ZkShape;
use super::cpu;
use super::cpu::CpuUse;
use super::etcd::Etcd;
use super::http1::Http1;
use super::load::closed_loop;
use super::load::key_index;
use super::load::value;
use super::load::Latency;
use super::load::Outcome;
use super::zkdirect::ZkDirect;
use walship::client::NodeClient;
use walship::client::Reply;
use walship_testkit::Cluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Walship,
    ZkDirect,
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Walship => "walship",
            System::ZkDirect => "zk-direct",
            System::Etcd => "etcd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Write,
    Read,
}

/// One measured point.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub system: System,
    pub op: Op,
    pub value_bytes: usize,
    pub clients: usize,
    pub ops: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub window_s: f64,
    pub ops_per_sec: f64,
    pub latency: Latency,
    /// CPU used by each process during the point (warm-up included).
    pub cpu: CpuUse,
    /// The ZooKeeper it ran against (etcd: always `single`, its own).
    pub zk: ZkShape,
    /// Writes of walship and zk-direct only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<Growth>,
}

impl Point {
    fn new(system: System, op: Op, value_bytes: usize, clients: usize, o: Outcome, cpu: CpuUse) -> Point {
        Point {
            zk: ZkShape::Single,
            growth: None,
            system,
            op,
            value_bytes,
            clients,
            ops: o.ops,
            errors: o.errors,
            first_error: o.first_error.clone(),
            window_s: o.window.as_secs_f64(),
            ops_per_sec: o.ops_per_sec(),
            latency: Latency::of(&o.hist),
            cpu,
        }
    }
}

pub struct Setup<'a> {
    pub cluster: &'a mut Cluster,
    pub etcd: Option<String>,
    pub etcd_pid: Option<u32>,
    pub zk_direct: bool,
    pub warmup: Duration,
    pub window: Duration,
    pub keyspace: u64,
    pub zk_shape: ZkShape,
}

/// How the work behind a write point grew, over the measured window
/// (`None`: not measured, or the metric does not exist in this build).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Growth {
    /// Between the two readings.
    pub window_s: f64,
    /// `zk_packets_received` per second, summed over ZooKeeper's servers.
    pub zk_requests_per_sec: Option<f64>,
    /// walship: `walship_witness_appends_total` per second (multis that
    /// appended entries to ZooKeeper).
    pub w_appends_per_sec: Option<f64>,
    /// walship: acknowledged writes per second over W appends per second.
    pub writes_per_w_append: Option<f64>,
    /// walship: `walship_witness_entries_total` per W append.
    pub entries_per_w_append: Option<f64>,
    /// walship: mean of `walship_witness_inflight_multis` (multis in flight
    /// at each send, that one included) over the window.
    pub multis_in_flight_mean: Option<f64>,
}

/// One reading at an edge of the measured window.
struct Reading {
    at: Instant,
    zk_packets: Option<f64>,
    appends: Option<f64>,
    entries: Option<f64>,
    inflight_sum: Option<f64>,
    inflight_count: Option<f64>,
}

const READING_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads `mntr` of every ZooKeeper server and, with `node`, the node's `/metrics`.
async fn reading(zk_servers: &[String], node: Option<&NodeClient>) -> Reading {
    let mntr = futures::future::join_all(
        zk_servers
            .iter()
            .map(|a| walship_testkit::zk::four_letter_within(a, "mntr", READING_TIMEOUT)),
    );
    let metrics = async {
        let node = node?;
        match node
            .with_timeout(READING_TIMEOUT)
            .raw(walship::client::Method::GET, "/metrics", None)
            .await
        {
            Reply::Success { value: (200, body), .. } => Some(String::from_utf8_lossy(&body).into_owned()),
            _ => None,
        }
    };
    let (mntr, metrics) = tokio::join!(mntr, metrics);
    let at = Instant::now();
    // A server that did not answer makes the sum meaningless.
    let zk_packets = mntr
        .iter()
        .map(|r| r.as_ref().ok().and_then(|t| mntr_value(t, "zk_packets_received")))
        .sum::<Option<f64>>();
    let m = metrics.as_deref();
    Reading {
        at,
        zk_packets,
        appends: m.and_then(|t| prom_value(t, "walship_witness_appends_total")),
        entries: m.and_then(|t| prom_value(t, "walship_witness_entries_total")),
        inflight_sum: m.and_then(|t| prom_value(t, "walship_witness_inflight_multis_sum")),
        inflight_count: m.and_then(|t| prom_value(t, "walship_witness_inflight_multis_count")),
    }
}

impl Growth {
    fn between(a: &Reading, b: &Reading, writes_per_sec: f64) -> Growth {
        let secs = (b.at - a.at).as_secs_f64().max(1e-9);
        let delta = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
        let appends = delta(a.appends, b.appends);
        let per_append = |n: Option<f64>| match (n, appends) {
            (Some(n), Some(ap)) if ap > 0.0 => Some(n / ap),
            _ => None,
        };
        let inflight = match (
            delta(a.inflight_sum, b.inflight_sum),
            delta(a.inflight_count, b.inflight_count),
        ) {
            (Some(sum), Some(count)) if count > 0.0 => Some(sum / count),
            _ => None,
        };
        Growth {
            window_s: secs,
            zk_requests_per_sec: delta(a.zk_packets, b.zk_packets).map(|d| d / secs),
            w_appends_per_sec: appends.map(|d| d / secs),
            writes_per_w_append: per_append(Some(writes_per_sec * secs)),
            entries_per_w_append: per_append(delta(a.entries, b.entries)),
            multis_in_flight_mean: inflight,
        }
    }
}

/// The value of `key` in `mntr`'s "key<TAB>value" lines.
fn mntr_value(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The sum of every sample of the Prometheus metric `name` (any labels);
/// `None` if there is none.
fn prom_value(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// Runs `load` (a closed loop started now with `warmup` then `window`)
/// while reading at the window's two edges; returns the load's result and
/// the two readings.
async fn with_readings<T>(
    warmup: Duration,
    window: Duration,
    zk_servers: &[String],
    node: Option<&NodeClient>,
    load: impl std::future::Future<Output = T>,
) -> (T, Reading, Reading) {
    let start = tokio::time::Instant::now();
    let edges = async {
        // Timing the measurement, not waiting for a state: the loop
        // measures exactly this span.
        tokio::time::sleep_until(start + warmup).await;
        let a = reading(zk_servers, node).await;
        tokio::time::sleep_until(start + warmup + window).await;
        let b = reading(zk_servers, node).await;
        (a, b)
    };
    let (out, (a, b)) = tokio::join!(load, edges);
    (out, a, b)
}

fn show(p: &Point) -> String {
    format!(
        "{:<9} {:<5} {:>5} B {:>3} clients, zk {:<8}: {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms{}",
        p.system.name(),
        match p.op {
            Op::Write => "write",
            Op::Read => "read",
        },
        p.value_bytes,
        p.clients,
        p.zk.name(),
        p.ops_per_sec,
        p.latency.p50_ms,
        p.latency.p99_ms,
        p.latency.max_ms,
        if p.errors > 0 {
            format!("  ({} errors: {})", p.errors, p.first_error.as_deref().unwrap_or(""))
        } else {
            String::new()
        }
    ) + &format!("\n{:>20}cpu % of a core: {}", "", cpu_line(&p.cpu))
        + &p.growth
            .as_ref()
            .map_or(String::new(), |g| format!("\n{:>20}growth: {}", "", growth_line(g)))
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.decimals$}"))
}

/// "ZK 12345 req/s, W 800 appends/s, 15.2 writes/append, 1.9 multis in flight".
fn growth_line(g: &Growth) -> String {
    format!(
        "ZK {} req/s, W {} appends/s, {} writes/append, {} multis in flight",
        opt(g.zk_requests_per_sec, 0),
        opt(g.w_appends_per_sec, 0),
        opt(g.writes_per_w_append, 1),
        opt(g.multis_in_flight_mean, 2)
    )
}

/// "bench 80 node1 60 ... others 20 (machine 195 of 200)".
pub fn cpu_line(c: &CpuUse) -> String {
    let mut parts: Vec<String> = c.percent_of_core.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
    parts.push(format!("others {:.0}", c.others_percent_of_core));
    format!(
        "{} (machine busy {:.0} of {})",
        parts.join(", "),
        c.machine_busy_percent_of_core,
        c.cores * 100
    )
}

/// A walship answer with one of the `ok` statuses is a success.
fn expect(r: Result<(StatusCode, Bytes), String>, path: &str, ok: &[StatusCode]) -> Result<(), String> {
    match r {
        Ok((status, _)) if ok.contains(&status) => Ok(()),
        Ok((status, body)) => Err(format!(
            "{path}: HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body)
        )),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// etcd's gateway answers some errors with 200 and an "error" field.
fn etcd_answer(r: Result<(StatusCode, Bytes), String>, what: &str) -> Result<(), String> {
    match r {
        Ok((status, body)) if status.is_success() && !body.starts_with(b"{\"error\"") => Ok(()),
        Ok((status, body)) => Err(format!(
            "etcd {what}: HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body)
        )),
        Err(e) => Err(format!("etcd {what}: {e}")),
    }
}

/// Before the first point: writes through walship and straight to
/// ZooKeeper, unmeasured, for a few warm-up periods. A fresh ZooKeeper JVM
/// spends its first seconds compiling (its C2 thread took about a fifth of
/// the machine during the first point), which would tax whichever system
/// the first point measures.
async fn warm_up(s: &mut Setup<'_>) -> Result<()> {
    const CLIENTS: usize = 16;
    let span = s.warmup * 3;
    if span.is_zero() {
        return Ok(());
    }
    println!(
        "  warming up ZooKeeper and the nodes ({:.0} s, not measured)",
        2.0 * span.as_secs_f64()
    );
    let leader = s.cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let target = Arc::new(Http1::new(s.cluster.node(leader).listen(), CLIENTS));
    let body = Bytes::from(value(100, 0));
    closed_loop(CLIENTS, Duration::ZERO, span, move |c, seq| {
        let (t, body) = (Arc::clone(&target), body.clone());
        async move {
            let path = format!("/v1/kv/warmup-{:04}", key_index(c, seq, CLIENTS, 1000));
            expect(t.send(c, Method::PUT, &path, body).await, &path, &[StatusCode::OK])
        }
    })
    .await;
    let z = ZkDirect::prepare(s.cluster.zk_addr(), "warmup", 1000, &value(100, 0)).await?;
    let (zc, v) = (z.clone(), value(100, 0));
    closed_loop(CLIENTS, Duration::ZERO, span, move |c, seq| {
        let (z, v) = (zc.clone(), v.clone());
        async move { z.set(key_index(c, seq, CLIENTS, 1000), &v).await }
    })
    .await;
    z.cleanup("warmup").await
}

/// Runs every point; `on_point` sees each as it completes.
pub async fn run(mut s: Setup<'_>, sizes: &[usize], clients: &[usize], mut on_point: impl FnMut(&Point)) -> Result<()> {
    let shape = s.zk_shape;
    let mut push = |mut p: Point| {
        p.zk = shape;
        println!("  {}", show(&p));
        on_point(&p);
    };
    let zk_servers: Vec<String> = s.cluster.zk_servers().iter().map(|z| z.addr()).collect();
    warm_up(&mut s).await?;
    for &size in sizes {
        for &n in clients {
            let leader = s.cluster.wait_for_leader(Duration::from_secs(30)).await?;
            let mut procs = s.cluster.pids();
            procs.extend(s.etcd_pid.map(|p| ("etcd".to_string(), p)));
            let target = Arc::new(Http1::new(s.cluster.node(leader).listen(), n));
            let ks = s.keyspace;
            // Each client's value, shared by the three systems.
            let values: Arc<Vec<Bytes>> = Arc::new((0..n).map(|c| Bytes::from(value(size, c))).collect());

            let (t, b) = (Arc::clone(&target), Arc::clone(&values));
            let leader_client = s.cluster.client(leader);
            let mark = cpu::mark(&procs);
            let load = closed_loop(n, s.warmup, s.window, move |c, seq| {
                let (t, b) = (Arc::clone(&t), Arc::clone(&b));
                async move {
                    let path = format!("/v1/kv/b{size}-{:07}", key_index(c, seq, n, ks));
                    expect(
                        t.send(c, Method::PUT, &path, b[c].clone()).await,
                        &path,
                        &[StatusCode::OK],
                    )
                }
            });
            let (o, r0, r1) = with_readings(s.warmup, s.window, &zk_servers, Some(&leader_client), load).await;
            let mut p = Point::new(System::Walship, Op::Write, size, n, o, mark.since());
            p.growth = Some(Growth::between(&r0, &r1, p.ops_per_sec));
            push(p);

            let t = Arc::clone(&target);
            let mark = cpu::mark(&procs);
            let o = closed_loop(n, s.warmup, s.window, move |c, seq| {
                let t = Arc::clone(&t);
                async move {
                    let path = format!("/v1/kv/b{size}-{:07}", key_index(c, seq, n, ks));
                    let ok = [StatusCode::OK, StatusCode::NOT_FOUND];
                    expect(t.send(c, Method::GET, &path, Bytes::new()).await, &path, &ok)
                }
            })
            .await;
            push(Point::new(System::Walship, Op::Read, size, n, o, mark.since()));

            if s.zk_direct {
                let point = format!("v{size}-c{n}");
                let z = ZkDirect::prepare(s.cluster.zk_addr(), &point, ks, &values[0]).await?;
                let (zc, v) = (z.clone(), Arc::clone(&values));
                let mark = cpu::mark(&procs);
                let load = closed_loop(n, s.warmup, s.window, move |c, seq| {
                    let (z, v) = (zc.clone(), Arc::clone(&v));
                    async move { z.set(key_index(c, seq, n, ks), &v[c]).await }
                });
                let (o, r0, r1) = with_readings(s.warmup, s.window, &zk_servers, None, load).await;
                let mut p = Point::new(System::ZkDirect, Op::Write, size, n, o, mark.since());
                p.growth = Some(Growth::between(&r0, &r1, p.ops_per_sec));
                push(p);
                let zc = z.clone();
                let mark = cpu::mark(&procs);
                let o = closed_loop(n, s.warmup, s.window, move |c, seq| {
                    let z = zc.clone();
                    async move { z.read(key_index(c, seq, n, ks)).await }
                })
                .await;
                push(Point::new(System::ZkDirect, Op::Read, size, n, o, mark.since()));
                z.cleanup(&point).await?;
            }

            if let Some(url) = &s.etcd {
                let addr: std::net::SocketAddr = url
                    .trim_start_matches("http://")
                    .parse()
                    .map_err(|e| anyhow::anyhow!("etcd client url {url}: {e}"))?;
                let e = Arc::new(Http1::new(addr, n));
                let encoded: Arc<Vec<String>> = Arc::new(values.iter().map(|v| Etcd::encode(v)).collect());
                let ec = Arc::clone(&e);
                let mark = cpu::mark(&procs);
                let o = closed_loop(n, s.warmup, s.window, move |c, seq| {
                    let (e, enc) = (Arc::clone(&ec), Arc::clone(&encoded));
                    async move {
                        let k = format!("b{size}-{:07}", key_index(c, seq, n, ks));
                        let body = Bytes::from(Etcd::put_body(&k, &enc[c]));
                        etcd_answer(e.send(c, Method::POST, "/v3/kv/put", body).await, "put")
                    }
                })
                .await;
                push(Point::new(System::Etcd, Op::Write, size, n, o, mark.since()));
                let mark = cpu::mark(&procs);
                let o = closed_loop(n, s.warmup, s.window, move |c, seq| {
                    let e = Arc::clone(&e);
                    async move {
                        let k = format!("b{size}-{:07}", key_index(c, seq, n, ks));
                        let body = Bytes::from(Etcd::range_body(&k));
                        etcd_answer(e.send(c, Method::POST, "/v3/kv/range", body).await, "range")
                    }
                })
                .await;
                push(Point::new(System::Etcd, Op::Read, size, n, o, mark.since()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_samples_sum_over_labels() {
        let text = "# HELP walship_witness_appends_total x\n\
                    # TYPE walship_witness_appends_total counter\n\
                    walship_witness_appends_total 12\n\
                    walship_witness_appends_total_other 99\n\
                    walship_witness_inflight_multis_sum{node=\"1\"} 7.5\n\
                    walship_witness_inflight_multis_sum{node=\"2\"} 2.5\n";
        assert_eq!(prom_value(text, "walship_witness_appends_total"), Some(12.0));
        assert_eq!(prom_value(text, "walship_witness_inflight_multis_sum"), Some(10.0));
        assert_eq!(prom_value(text, "walship_witness_entries_total"), None);
    }

    #[test]
    fn mntr_lines() {
        let text = "zk_version\t3.8.4\nzk_packets_received\t1234\nzk_packets_sent\t1200\n";
        assert_eq!(mntr_value(text, "zk_packets_received"), Some(1234.0));
        assert_eq!(mntr_value(text, "zk_missing"), None);
    }

    #[test]
    fn growth_from_witness_metrics() {
        let t = Instant::now();
        let r = |at: Instant, appends: f64, entries: f64, sum: f64, count: f64| Reading {
            at,
            zk_packets: Some(appends),
            appends: Some(appends),
            entries: Some(entries),
            inflight_sum: Some(sum),
            inflight_count: Some(count),
        };
        let a = r(t, 100.0, 1000.0, 10.0, 100.0);
        let b = r(t + Duration::from_secs(2), 300.0, 3000.0, 410.0, 300.0);
        let g = Growth::between(&a, &b, 1000.0);
        assert_eq!(g.w_appends_per_sec, Some(100.0));
        assert_eq!(g.writes_per_w_append, Some(10.0));
        assert_eq!(g.entries_per_w_append, Some(10.0));
        assert_eq!(g.multis_in_flight_mean, Some(2.0));
        assert_eq!(
            growth_line(&g),
            "ZK 100 req/s, W 100 appends/s, 10.0 writes/append, 2.00 multis in flight"
        );
    }

    #[test]
    fn growth_without_witness_metrics_is_dashes() {
        let t = Instant::now();
        let r = |at: Instant, packets: f64| Reading {
            at,
            zk_packets: Some(packets),
            appends: None,
            entries: None,
            inflight_sum: None,
            inflight_count: None,
        };
        let g = Growth::between(&r(t, 100.0), &r(t + Duration::from_secs(2), 300.0), 50.0);
        assert_eq!(g.zk_requests_per_sec, Some(100.0));
        assert_eq!(g.w_appends_per_sec, None);
        assert_eq!(
            growth_line(&g),
            "ZK 100 req/s, W - appends/s, - writes/append, - multis in flight"
        );
    }
}
