//! Throughput and latency points: for each value size and concurrency,
//! walship writes and linearizable reads, then the same writes (and reads)
//! against ZooKeeper directly and against etcd, back to back, so every
//! system sees the same machine load as nearly as possible.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::body::Bytes;
use hyper::Method;
use hyper::StatusCode;
use serde::Serialize;

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
}

impl Point {
    fn new(system: System, op: Op, value_bytes: usize, clients: usize, o: Outcome, cpu: CpuUse) -> Point {
        Point {
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
}

fn show(p: &Point) -> String {
    format!(
        "{:<9} {:<5} {:>5} B {:>3} clients: {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms{}",
        p.system.name(),
        match p.op {
            Op::Write => "write",
            Op::Read => "read",
        },
        p.value_bytes,
        p.clients,
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
    let mut push = |p: Point| {
        println!("  {}", show(&p));
        on_point(&p);
    };
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
            let mark = cpu::mark(&procs);
            let o = closed_loop(n, s.warmup, s.window, move |c, seq| {
                let (t, b) = (Arc::clone(&t), Arc::clone(&b));
                async move {
                    let path = format!("/v1/kv/b{size}-{:07}", key_index(c, seq, n, ks));
                    expect(
                        t.send(c, Method::PUT, &path, b[c].clone()).await,
                        &path,
                        &[StatusCode::OK],
                    )
                }
            })
            .await;
            push(Point::new(System::Walship, Op::Write, size, n, o, mark.since()));

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
                let o = closed_loop(n, s.warmup, s.window, move |c, seq| {
                    let (z, v) = (zc.clone(), Arc::clone(&v));
                    async move { z.set(key_index(c, seq, n, ks), &v[c]).await }
                })
                .await;
                push(Point::new(System::ZkDirect, Op::Write, size, n, o, mark.since()));
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
