//! The report: what was measured (JSON, `--out`), the machine, versions and
//! settings it was measured with, walship/baseline ratios, and the targets
//! of issue 4 with a verdict each; rendered as a table on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::args::Plan;
use super::args::ZkShape;
use super::failover::Failover;
use super::failover::Kill;
use super::footprint::Footprint;
use super::rebirth::Rebirth;
use super::snapshot::SnapshotPoint;
use super::stages::StagesPoint;
use super::throughput::Op;
use super::throughput::Point;
use super::throughput::System;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub ram_bytes: u64,
    pub disk: String,
    pub kernel: String,
    /// /proc/loadavg at start and at the end: other work on the box shows here.
    pub loadavg_start: String,
    pub loadavg_end: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Versions {
    pub walship_commit: String,
    pub openraft: String,
    pub zookeeper: String,
    pub etcd: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Settings {
    /// The nodes' effective configuration (`walship node --print-config`).
    pub node: BTreeMap<String, String>,
    pub zoo_cfg: BTreeMap<String, String>,
    pub etcd_flags: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// The ZooKeeper walship (and zk-direct) ran against.
    pub zk: ZkShape,
    pub op: Op,
    pub value_bytes: usize,
    pub clients: usize,
    pub baseline: System,
    /// walship ops/s divided by the baseline's.
    pub throughput: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub started_at_unix: u64,
    pub elapsed_s: f64,
    pub plan: Option<Plan>,
    pub machine: Machine,
    pub versions: Versions,
    pub settings: Settings,
    pub throughput: Vec<Point>,
    pub ratios: Vec<Ratio>,
    pub failover: Vec<Failover>,
    pub rebirth: Vec<Rebirth>,
    pub snapshot: Vec<SnapshotPoint>,
    /// `--only stages`: where a write's time goes.
    pub stages: Vec<StagesPoint>,
    /// `--only zk-floor`: ZooKeeper alone, one write at a time.
    pub zk_floor: Vec<super::zkfloor::FloorPoint>,
    pub footprint: Option<Footprint>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    /// Set when the run stopped early (an error or a signal).
    pub incomplete: Option<String>,
}

impl Report {
    /// A point of the first ZooKeeper shape measured (single, unless only
    /// the ensemble ran): the one the targets and plots show. etcd's
    /// points count as single-shape.
    pub fn point(&self, system: System, op: Op, size: usize, clients: usize) -> Option<&Point> {
        let shape = self.throughput.first().map_or(ZkShape::Single, |p| p.zk);
        self.point_in(shape, system, op, size, clients)
            .or_else(|| self.point_in(ZkShape::Single, system, op, size, clients))
    }

    pub fn point_in(&self, zk: ZkShape, system: System, op: Op, size: usize, clients: usize) -> Option<&Point> {
        self.throughput
            .iter()
            .find(|p| p.zk == zk && p.system == system && p.op == op && p.value_bytes == size && p.clients == clients)
    }

    /// walship / baseline ops/s for every point both measured, per
    /// ZooKeeper shape (etcd, with its own store, is compared with walship
    /// on the single server only).
    pub fn compute_ratios(&mut self) {
        let mut out = Vec::new();
        for p in self.throughput.iter().filter(|p| p.system == System::Walship) {
            for b in [System::ZkDirect, System::Etcd] {
                if let Some(q) = self.point_in(p.zk, b, p.op, p.value_bytes, p.clients) {
                    if q.ops_per_sec > 0.0 {
                        out.push(Ratio {
                            zk: p.zk,
                            op: p.op,
                            value_bytes: p.value_bytes,
                            clients: p.clients,
                            baseline: b,
                            throughput: p.ops_per_sec / q.ops_per_sec,
                        });
                    }
                }
            }
        }
        self.ratios = out;
    }

    /// The targets of issue 4 that this run measured.
    pub fn compute_targets(&mut self) {
        let mut t = Vec::new();
        if let Some(w) = self.point(System::Walship, Op::Write, 100, 64) {
            t.push(Target {
                name: "100 B writes, 64 clients: throughput".into(),
                target: ">= 20000 writes/s".into(),
                measured: format!("{:.0} writes/s", w.ops_per_sec),
                met: w.ops_per_sec >= 20_000.0,
            });
            t.push(Target {
                name: "100 B writes, 64 clients: p99 latency".into(),
                target: "< 20 ms".into(),
                measured: format!("{:.2} ms", w.latency.p99_ms),
                met: w.latency.p99_ms < 20.0,
            });
            for (b, need) in [(System::ZkDirect, 3.0), (System::Etcd, 1.5)] {
                if let Some(q) = self.point(b, Op::Write, 100, 64) {
                    let r = w.ops_per_sec / q.ops_per_sec.max(f64::MIN_POSITIVE);
                    t.push(Target {
                        name: format!("100 B writes, 64 clients: vs {}", b.name()),
                        target: format!(">= {need}x"),
                        measured: format!("{r:.2}x ({:.0} vs {:.0} writes/s)", w.ops_per_sec, q.ops_per_sec),
                        met: r >= need,
                    });
                }
            }
        }
        for f in &self.failover {
            let s = &f.spread;
            match f.kill {
                Kill::Sigkill => {
                    t.push(Target {
                        name: "failover after kill -9: p50".into(),
                        target: "< 400 ms".into(),
                        measured: format!("{:.0} ms over {} kills", s.p50_ms, s.count),
                        met: s.count > 0 && s.p50_ms < 400.0,
                    });
                    t.push(Target {
                        name: "failover after kill -9: p99".into(),
                        target: "< 1000 ms".into(),
                        measured: format!("{:.0} ms over {} kills", s.p99_ms, s.count),
                        met: s.count > 0 && s.p99_ms < 1000.0,
                    });
                }
                Kill::Sigterm => t.push(Target {
                    name: "SIGTERM hand-over: p99".into(),
                    target: "< 200 ms".into(),
                    measured: format!("{:.0} ms over {} SIGTERMs", s.p99_ms, s.count),
                    met: s.count > 0 && s.p99_ms < 200.0,
                }),
                // Issue 4 set no target for a vanished machine.
                Kill::Blackhole => {}
            }
        }
        for r in &self.rebirth {
            t.push(Target {
                name: format!("rebirth, {} keys", r.keys),
                target: format!("< 2 s + {} B at 100 MB/s = {:.0} ms", r.w.total, r.target_ms),
                measured: format!("{:.0} ms", r.ms),
                met: r.met,
            });
        }
        if let Some(f) = &self.footprint {
            t.push(Target {
                name: "ZooKeeper footprint bounded".into(),
                target: "bounded by snapshots + WAL compaction".into(),
                measured: format!(
                    "max {} B, {} compactions seen, {:.1} B/key at the end",
                    f.max_bytes, f.compactions_seen, f.final_bytes_per_key
                ),
                met: f.bounded,
            });
        }
        self.targets = t;
    }

    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self).expect("report serializes");
        std::fs::write(path, text + "\n")
    }

    /// How the work grew with clients, per ZooKeeper shape and value size:
    /// walship's writes against ZooKeeper's requests and W's appends, and
    /// zk-direct's writes against ZooKeeper's requests ("-": not measured,
    /// or the metric is not in this build).
    fn render_growth(&self, o: &mut String) {
        let writes: Vec<&Point> = self
            .throughput
            .iter()
            .filter(|p| p.op == Op::Write && p.growth.is_some())
            .collect();
        if writes.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "\ngrowth with clients (writes; ZK req/s = mntr zk_packets_received per second, all servers; W from the leader's /metrics)"
        );
        let _ = writeln!(
            o,
            "{:<8} {:>6} {:>7} {:>11} {:>12} {:>10} {:>10} {:>11} {:>12}",
            "ZK", "VALUE", "CLIENTS", "WALSHIP W/S", "ZK REQ/S", "WRITES/APP", "MULTIS IN", "ZKDIRECT/S", "ZK REQ/S"
        );
        let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
        let mut keys: Vec<(ZkShape, usize, usize)> = writes.iter().map(|p| (p.zk, p.value_bytes, p.clients)).collect();
        keys.dedup();
        for (zk, size, clients) in keys {
            let w = self.point_in(zk, System::Walship, Op::Write, size, clients);
            let z = self.point_in(zk, System::ZkDirect, Op::Write, size, clients);
            let wg = w.and_then(|p| p.growth.as_ref());
            let zg = z.and_then(|p| p.growth.as_ref());
            let _ = writeln!(
                o,
                "{:<8} {:>6} {:>7} {:>11} {:>12} {:>10} {:>10} {:>11} {:>12}",
                zk.name(),
                size,
                clients,
                f(w.map(|p| p.ops_per_sec), 0),
                f(wg.and_then(|g| g.zk_requests_per_sec), 0),
                f(wg.and_then(|g| g.writes_per_w_append), 1),
                f(wg.and_then(|g| g.multis_in_flight_mean), 2),
                f(z.map(|p| p.ops_per_sec), 0),
                f(zg.and_then(|g| g.zk_requests_per_sec), 0),
            );
        }
    }

    /// The whole report as text tables.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(o, "\nwalship bench: results");
        let _ = writeln!(
            o,
            "machine   {} cores ({}), {:.1} GiB RAM, disk {}; load average {} -> {}",
            m.cores,
            m.cpu,
            m.ram_bytes as f64 / (1u64 << 30) as f64,
            m.disk,
            m.loadavg_start,
            m.loadavg_end
        );
        let v = &self.versions;
        let _ = writeln!(
            o,
            "versions  walship {}, openraft {}, ZooKeeper {}, etcd {}",
            v.walship_commit,
            v.openraft,
            v.zookeeper,
            v.etcd.as_deref().unwrap_or("(not run)")
        );
        let st = &self.settings;
        let _ = writeln!(
            o,
            "settings  node: {}; zoo.cfg: {}",
            st.node
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            st.zoo_cfg
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        if !self.throughput.is_empty() {
            let _ = writeln!(
                o,
                "\n{:<10} {:<8} {:<5} {:>6} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7}",
                "SYSTEM", "ZK", "OP", "VALUE", "CLIENTS", "OPS/S", "P50 MS", "P99 MS", "MAX MS", "ERRORS"
            );
            for p in &self.throughput {
                let _ = writeln!(
                    o,
                    "{:<10} {:<8} {:<5} {:>6} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                    p.system.name(),
                    p.zk.name(),
                    if p.op == Op::Write { "write" } else { "read" },
                    p.value_bytes,
                    p.clients,
                    p.ops_per_sec,
                    p.latency.p50_ms,
                    p.latency.p99_ms,
                    p.latency.max_ms,
                    p.errors
                );
            }
        }
        if !self.throughput.is_empty() {
            let _ = writeln!(
                o,
                "\nCPU during each point (% of one core; {} cores)",
                self.machine.cores
            );
            for p in &self.throughput {
                let _ = writeln!(
                    o,
                    "{:<10} {:<8} {:<5} {:>6} {:>4}c  {}",
                    p.system.name(),
                    p.zk.name(),
                    if p.op == Op::Write { "write" } else { "read" },
                    p.value_bytes,
                    p.clients,
                    super::throughput::cpu_line(&p.cpu)
                );
            }
        }
        for p in &self.stages {
            o.push_str(&super::stages::table(p));
        }
        o.push_str(&super::zkfloor::table(&self.zk_floor));
        if !self.ratios.is_empty() {
            let _ = writeln!(o, "\nwalship / baseline (ops/s ratio)");
            let _ = writeln!(
                o,
                "{:<8} {:<5} {:>6} {:>7} {:>10} {:>10}",
                "ZK", "OP", "VALUE", "CLIENTS", "BASELINE", "RATIO"
            );
            for r in &self.ratios {
                let _ = writeln!(
                    o,
                    "{:<8} {:<5} {:>6} {:>7} {:>10} {:>9.2}x",
                    r.zk.name(),
                    if r.op == Op::Write { "write" } else { "read" },
                    r.value_bytes,
                    r.clients,
                    r.baseline.name(),
                    r.throughput
                );
            }
        }
        self.render_growth(&mut o);
        if !self.failover.is_empty() {
            let _ = writeln!(
                o,
                "\nfailover (signal, or blackhole cut, to the next acknowledged write through the survivor)"
            );
            let _ = writeln!(
                o,
                "{:<10} {:>6} {:>8} {:>8} {:>8} {:>8}",
                "SIGNAL", "COUNT", "MIN MS", "P50 MS", "P99 MS", "MAX MS"
            );
            for f in &self.failover {
                let s = &f.spread;
                let _ = writeln!(
                    o,
                    "{:<10} {:>6} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
                    f.kill.name(),
                    s.count,
                    s.min_ms,
                    s.p50_ms,
                    s.p99_ms,
                    s.max_ms
                );
            }
        }
        if !self.rebirth.is_empty() {
            let _ = writeln!(
                o,
                "\nrebirth (empty disk, only live node: process start to a linearizable read)"
            );
            let _ = writeln!(
                o,
                "{:>9} {:>12} {:>12} {:>12} {:>9} {:>10}",
                "KEYS", "W BYTES", "SNAPSHOT", "WAL", "MS", "TARGET MS"
            );
            for r in &self.rebirth {
                let _ = writeln!(
                    o,
                    "{:>9} {:>12} {:>12} {:>12} {:>9.0} {:>10.0}",
                    r.keys, r.w.total, r.w.snapshot, r.w.wal, r.ms, r.target_ms
                );
            }
        }
        if !self.snapshot.is_empty() {
            let mb = |b: u64| b as f64 / (1 << 20) as f64;
            let _ = writeln!(
                o,
                "\nsnapshots (POST /admin/snapshot: build + store in ZooKeeper; rebirth: wiped follower from ZooKeeper; RSS in MB)"
            );
            let _ = writeln!(
                o,
                "{:>8} {:>10} {:>11} {:>10} {:>11} {:>11} {:>11} {:>11} {:>9}",
                "STATE MB",
                "FILE MB",
                "SNAPSHOT MS",
                "REBIRTH MS",
                "L RSS PRE",
                "L PEAK SNAP",
                "L PEAK REB",
                "F PEAK REB",
                "ZK PEAK"
            );
            for p in &self.snapshot {
                let _ = writeln!(
                    o,
                    "{:>8} {:>10.1} {:>11.0} {:>10.0} {:>11.0} {:>11.0} {:>11.0} {:>11.0} {:>9.0}",
                    p.state_mb,
                    mb(p.snapshot_file_bytes),
                    p.snapshot_ms,
                    p.rebirth_ms,
                    mb(p.leader_rss_before_bytes),
                    mb(p.leader_peak_rss_snapshot_bytes),
                    mb(p.leader_peak_rss_rebirth_bytes),
                    mb(p.follower_peak_rss_rebirth_bytes),
                    mb(p.zookeeper_peak_rss_bytes)
                );
            }
        }
        if let Some(f) = &self.footprint {
            let _ = writeln!(
                o,
                "\nZooKeeper footprint: {} s of {} B writes by {} clients over {} keys ({} writes): max {} B, {} compactions, {:.1} B/key at the end, bounded: {}",
                f.secs,
                f.value_bytes,
                f.clients,
                f.keyspace,
                f.writes,
                f.max_bytes,
                f.compactions_seen,
                f.final_bytes_per_key,
                if f.bounded { "yes" } else { "NO" }
            );
        }
        if !self.targets.is_empty() {
            let _ = writeln!(o, "\ntargets (issue 4)");
            for t in &self.targets {
                let _ = writeln!(
                    o,
                    "  {:<6} {:<42} target {:<36} measured {}",
                    if t.met { "MET" } else { "MISSED" },
                    t.name,
                    t.target,
                    t.measured
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        if let Some(why) = &self.incomplete {
            let _ = writeln!(o, "INCOMPLETE: {why}");
        }
        o
    }
}
