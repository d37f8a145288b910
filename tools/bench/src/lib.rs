//! `walship bench`: measures walship against ZooKeeper-direct and etcd in
//! one run on one machine. It starts its own ZooKeeper (free port, own data
//! dir, zk/zk.sh's java command and zoo.cfg) and a two-node cluster of this
//! very binary with default node settings, and etcd (Debian's etcd-server)
//! for the baseline. Then: write and linearizable-read throughput and
//! latency at each value size and concurrency for every system; ZooKeeper's
//! footprint over a long write run; failover after kill -9 and after
//! SIGTERM of the leader, and after its machine vanishes (`blackhole`, in a
//! cluster of its own whose links run through fault proxies); rebirth of an
//! empty-disk node alone; and, only with `--only snapshot`, snapshot and
//! rebirth times and each process's peak RSS against the state's size
//! (`--state-mb`); only with `--only stages`, where a single write's time
//! goes, stage by stage. With `--zk-shapes single,ensemble` the throughput
//! part runs walship and zk-direct again against a cluster of its own with a
//! 3-server ZooKeeper ensemble. It prints a table, writes the JSON report
//! (`--out`) and SVG plots (`--plots-dir`).
//!
//! This file is the orchestration; each role has its own file: `args`
//! (flags and plan), `env` (machine, versions, settings), `start_cluster`
//! below (the processes under test: `walship_testkit::Cluster`), `cpu` (who used the CPU during a point), `load` (the closed-loop load generator and
//! percentiles), `walship`, `zkdirect`, `etcd` (the three targets),
//! `throughput`, `footprint`, `failover`, `rebirth`, `stages` (the measurements),
//! `report` (JSON, targets, table), `plot` (SVGs).
//!
//! Exit status: 0 the run completed (targets missed are reported, not
//! failed); 1 it stopped on an error (the partial report is still written);
//! 2 bad flags (one line on stderr); 130/143 interrupted by SIGINT/SIGTERM,
//! after stopping everything it started, by pid.

mod args;
mod cpu;
mod env;
mod etcd;
mod failover;
mod footprint;
mod http1;
mod load;
mod plot;
mod rebirth;
mod report;
mod snapshot;
mod stages;
mod target;
mod throughput;
mod zkdirect;
mod zkfloor;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

use anyhow::Result;

pub use self::args::BenchArgs;
use self::args::Part;
use self::args::Plan;
use self::args::ZkShape;
use self::etcd::EtcdServer;
use self::failover::Kill;
use self::report::Report;
use walship_testkit::Cluster;
use walship_testkit::Polling;

/// What `run` has started, so an interrupt can stop it.
#[derive(Default)]
struct State {
    cluster: Option<Cluster>,
    /// A cluster of one part only (the ensemble shape, blackhole failover).
    side: Option<Cluster>,
    etcd: Option<EtcdServer>,
    report: Report,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    let plan = match args::plan(args).and_then(|p| {
        walship_testkit::prepare_run_dir(&p.run_dir, &["zk", "node1", "node2", "etcd", "ensemble", "blackhole"])
            .map(|d| Plan { run_dir: d, ..p })
    }) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("walship bench: {msg}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut state = State::default();
    state.report.tool = "walship bench";
    state.report.started_at_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    state.report.machine = env::machine(&plan.run_dir);
    state.report.versions.walship_commit = env::walship_commit();
    state.report.versions.openraft = env::OPENRAFT_VERSION.into();
    state.report.plan = Some(plan.clone());
    println!(
        "walship bench ({} mode): {} s per point after {} s warm-up; run dir {}",
        plan.mode,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.run_dir.display()
    );
    let outcome = tokio::select! {
        r = drive(&plan, &mut state) => Ok(r),
        sig = walship_testkit::process::wait_for_signal() => Err(sig),
    };
    for mut c in [state.side.take(), state.cluster.take()].into_iter().flatten() {
        c.stop_all().await;
    }
    if let Some(mut e) = state.etcd.take() {
        e.stop().await;
    }
    let code = match &outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            state.report.incomplete = Some(format!("{e:#}"));
            ExitCode::FAILURE
        }
        Err(sig) => {
            eprintln!("walship bench: {sig}: stopped ZooKeeper, etcd and both nodes");
            state.report.incomplete = Some(format!("interrupted by {sig}"));
            ExitCode::from(if *sig == "SIGTERM" { 143 } else { 130 })
        }
    };
    state.report.machine.loadavg_end = env::loadavg();
    state.report.elapsed_s = started.elapsed().as_secs_f64();
    state.report.compute_ratios();
    state.report.compute_targets();
    print!("{}", state.report.render());
    if let Err(e) = state.report.write_json(&plan.out) {
        eprintln!("walship bench: cannot write {}: {e}", plan.out.display());
        return ExitCode::FAILURE;
    }
    println!("\nJSON: {}", plan.out.display());
    match plot::draw_all(&state.report, &plan.plots_dir) {
        Ok(files) if !files.is_empty() => println!(
            "plots: {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Ok(_) => {}
        Err(e) => eprintln!("walship bench: {e:#}"),
    }
    println!(
        "logs: {}/node1.log, node2.log, zk/zk.log, etcd/etcd.log (ensemble/ and blackhole/: their clusters' own)",
        plan.run_dir.display()
    );
    code
}

/// The measurements, in order; everything started goes into `state`.
async fn drive(plan: &Plan, state: &mut State) -> Result<()> {
    let mut failures = Vec::new();
    let etcd_url = if plan.etcd && plan.has(Part::Throughput) {
        match etcd::ensure_installed() {
            Ok(bin) => {
                state.report.versions.etcd = Some(etcd::version(&bin));
                let server = EtcdServer::start(&bin, &plan.run_dir.join("etcd")).await?;
                let url = server.client_url.clone();
                state.etcd = Some(server);
                Some(url)
            }
            Err(why) => {
                let note = format!("etcd baseline skipped: {why}");
                eprintln!("walship bench: {note}");
                state.report.notes.push(note);
                None
            }
        }
    } else {
        if plan.has(Part::Throughput) {
            state.report.notes.push("etcd baseline skipped (--skip-etcd)".into());
        }
        None
    };
    state.report.settings = env::settings(
        &plan.bin,
        if etcd_url.is_some() {
            "one member, defaults (fsync per commit), --quota-backend-bytes 8 GiB"
        } else {
            ""
        },
    );

    println!("starting ZooKeeper and walship nodes 1 and 2");
    let name = format!("bench-{}", std::process::id());
    let cluster = state
        .cluster
        .insert(start_cluster(&plan.run_dir, &plan.bin, &name, |s| s).await?);
    if let Ok(srvr) = walship_testkit::zk::four_letter(cluster.zk_addr(), "srvr").await {
        state.report.versions.zookeeper = env::zk_version(&srvr);
    }
    println!(
        "ZooKeeper {} ({}); a leader is ready",
        cluster.zk_addr(),
        state.report.versions.zookeeper
    );

    if plan.has(Part::Throughput) && plan.zk_shapes.contains(&ZkShape::Single) {
        println!("\n== throughput and latency");
        let report = &mut state.report;
        let setup = throughput::Setup {
            cluster,
            etcd: etcd_url,
            etcd_pid: state.etcd.as_ref().and_then(|e| e.pid()),
            zk_direct: plan.zk_direct,
            warmup: plan.warmup,
            window: plan.duration,
            keyspace: plan.keyspace,
            zk_shape: ZkShape::Single,
        };
        let r = throughput::run(setup, &plan.value_sizes, &plan.clients, |p| {
            report.throughput.push(p.clone())
        })
        .await;
        part_done(cluster, &mut state.report, &mut failures, "throughput", r).await?;
    }
    // etcd is only needed for the throughput points.
    if let Some(mut e) = state.etcd.take() {
        e.stop().await;
    }
    if plan.has(Part::Throughput) && plan.zk_shapes.contains(&ZkShape::Ensemble) {
        println!(
            "\n== throughput and latency against a {}-server ZooKeeper ensemble (walship and zk-direct; the first cluster idles)",
            ZkShape::Ensemble.servers()
        );
        let dir = plan.run_dir.join("ensemble");
        std::fs::create_dir_all(&dir)?;
        let side = state.side.insert(
            start_cluster(&dir, &plan.bin, &format!("{name}-ensemble"), |s| {
                s.zk_ensemble(ZkShape::Ensemble.servers())
            })
            .await?,
        );
        println!("ZooKeeper ensemble {}; a leader is ready", side.zk_addr());
        let report = &mut state.report;
        let setup = throughput::Setup {
            cluster: side,
            etcd: None,
            etcd_pid: None,
            zk_direct: plan.zk_direct,
            warmup: plan.warmup,
            window: plan.duration,
            keyspace: plan.keyspace,
            zk_shape: ZkShape::Ensemble,
        };
        let r = throughput::run(setup, &plan.value_sizes, &plan.clients, |p| {
            report.throughput.push(p.clone())
        })
        .await;
        if let Err(e) = r {
            let msg = format!("throughput (ensemble) stopped: {e:#}");
            eprintln!("walship bench: {msg}");
            state.report.notes.push(msg.clone());
            failures.push(msg);
        }
        if let Some(mut c) = state.side.take() {
            c.stop_all().await;
        }
    }
    let cluster = state.cluster.as_mut().expect("started above");
    if plan.has(Part::Footprint) {
        println!("\n== ZooKeeper footprint over {} s of writes", plan.footprint_secs);
        let r = footprint::run(cluster, plan.footprint_secs).await;
        if let Some(f) = part_done(cluster, &mut state.report, &mut failures, "footprint", r).await? {
            state.report.footprint = Some(f);
        }
    }
    if plan.has(Part::Failover) {
        for &kill in &plan.failover_kinds {
            // A cluster of its own: its proxies run in this process, and
            // in the main cluster they would carry (and tax) the Raft and
            // ZooKeeper traffic of every other measurement.
            let f = if kill == Kill::Blackhole {
                println!(
                    "\n== failover: the leader's machine vanishes (peer and ZooKeeper links blackholed), {} times, in a cluster with proxied links (the first cluster idles)",
                    plan.blackhole_kills
                );
                let dir = plan.run_dir.join("blackhole");
                std::fs::create_dir_all(&dir)?;
                let side = state.side.insert(
                    start_cluster(&dir, &plan.bin, &format!("{name}-blackhole"), |s| {
                        s.partitionable().zk_cuttable()
                    })
                    .await?,
                );
                let r = failover::run(side, kill, plan.blackhole_kills).await;
                let f = part_done(side, &mut state.report, &mut failures, kill.name(), r).await;
                if let Some(mut c) = state.side.take() {
                    c.stop_all().await;
                }
                f?
            } else {
                println!("\n== failover: {} of the leader, {} times", kill.name(), plan.kills);
                let r = failover::run(cluster, kill, plan.kills).await;
                part_done(cluster, &mut state.report, &mut failures, kill.name(), r).await?
            };
            let Some(f) = f else {
                continue;
            };
            println!(
                "  {}: min {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                kill.name(),
                f.spread.min_ms,
                f.spread.p50_ms,
                f.spread.p99_ms,
                f.spread.max_ms
            );
            state.report.failover.push(f);
        }
    }
    if plan.has(Part::Rebirth) {
        println!("\n== rebirth of an empty-disk node, alone");
        let report = &mut state.report;
        let r = rebirth::run(cluster, &plan.rebirth_keys, |r| report.rebirth.push(r.clone())).await;
        part_done(cluster, &mut state.report, &mut failures, "rebirth", r).await?;
    }
    if plan.has(Part::Stages) {
        println!("\n== stages of a write (the leader's stage clock)");
        let report = &mut state.report;
        let r = stages::run(cluster, &plan.stage_clients, plan.warmup, plan.duration, |p| {
            report.stages.push(p.clone())
        })
        .await;
        part_done(cluster, &mut state.report, &mut failures, "stages", r).await?;
    }
    if plan.has(Part::ZkFloor) {
        println!("\n== ZooKeeper alone, one write at a time (the floor under a walship write; the nodes idle)");
        zkfloor::print_header();
        let report = &mut state.report;
        let r = zkfloor::run(cluster, plan.warmup, plan.duration, |p| report.zk_floor.push(p.clone())).await;
        part_done(cluster, &mut state.report, &mut failures, "zk-floor", r).await?;
    }
    if plan.has(Part::Snapshot) {
        println!(
            "\n== snapshots of big states ({} MB), each in a cluster of its own",
            plan.state_mb
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let report = &mut state.report;
        let r = snapshot::run(&plan.run_dir, &plan.bin, &plan.state_mb, |p| {
            report.snapshot.push(p.clone())
        })
        .await;
        part_done(cluster, &mut state.report, &mut failures, "snapshot", r).await?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{}", failures.join("; ")))
    }
}

/// A part that failed is noted and the run goes on with the next part, if
/// the cluster still has a ready leader within `RECOVER`; else the run stops.
async fn part_done<T>(
    cluster: &mut Cluster,
    report: &mut Report,
    failures: &mut Vec<String>,
    part: &str,
    r: Result<T>,
) -> Result<Option<T>> {
    const RECOVER: Duration = Duration::from_secs(60);
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let msg = format!("{part} stopped: {e:#}");
            eprintln!("walship bench: {msg}");
            report.notes.push(msg.clone());
            failures.push(msg);
            for id in [1, 2] {
                if !cluster.node_mut(id).is_running() {
                    let _ = cluster.node_mut(id).start();
                }
            }
            cluster
                .wait_for_leader(RECOVER)
                .await
                .map_err(|e2| anyhow::anyhow!("{}; then no ready leader: {e2:#}", failures.join("; ")))?;
            Ok(None)
        }
    }
}

/// The system under test: a private ZooKeeper (`walship_testkit::ZkServer`:
/// the java command, classpath and zoo.cfg of zk/zk.sh, on a free loopback
/// port with its own data dir) and nodes 1 and 2 started from `bin` with
/// default node settings (no flags besides identity and addresses); returns
/// once a leader is ready.
/// `shape` adds to the setup (an ensemble, proxied links).
async fn start_cluster(
    run_dir: &Path,
    bin: &Path,
    name: &str,
    shape: impl FnOnce(walship_testkit::Setup) -> walship_testkit::Setup,
) -> Result<Cluster> {
    let polling = Polling {
        every: Duration::from_millis(20),
        request_timeout: Duration::from_millis(500),
    };
    shape(walship_testkit::Setup::run_dir(run_dir, name))
        .bin(bin)
        .polling(polling)
        .start()
        .await
}
