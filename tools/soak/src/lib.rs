//! `walship soak`: the die-and-reborn soak (scenario S10 of
//! witness-protocol.md). It starts ZooKeeper and both nodes, drives a
//! concurrent workload over a small key space, and cycles seeded faults
//! (kill -9 of the leader or the follower with the disk kept or wiped,
//! SIGSTOP of the leader, a ZooKeeper restart, a cut between the nodes, a
//! cut between one node and ZooKeeper, power loss, a stalled disk, and
//! two of these at once), waiting after each for the cluster to serve
//! again. At the end it checks that every acknowledged write survived
//! (through each node, on each node's own state, and from ZooKeeper alone)
//! and that each key's history is linearizable, prints a summary with the
//! faults exercised, and exits 0 only if both hold. With `--workload
//! ledger` the nodes run the ledger example and the clients send it
//! transactions, checked for exactly-once application (see `ledger`).
//!
//! This file is the orchestration; each other role has its own file:
//! `args` (flags), `cluster` (the cluster: `walship_testkit::Cluster` with
//! its fault proxies and fault dirs; its clients are
//! `walship::client::NodeClient`s, whose replies say the outcome), `workload`, `ledger` (the ledger workload and its checks), `faults` (kinds, schedule, prober), `nemesis` (one fault
//! cycle), `disk` (the storage layer's fault hooks), `history` (the JSON
//! Lines history), `check` (the checks), `lincheck` (the linearizability
//! checker), `summary`, `rng`.
//!
//! Exit status: 0 pass; 1 a violation, a stall or a crash; 2 bad flags or
//! an unreachable `--zk` (one line on stderr); 130/143 interrupted by
//! SIGINT/SIGTERM, after stopping everything it started and printing the
//! summary so far.

mod args;
pub mod check;
pub mod cluster;
pub mod disk;
pub mod faults;
pub mod ledger;
pub mod lincheck;
pub mod nemesis;
pub mod recorder;
pub mod rng;
pub mod summary;
pub mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use walship_testkit::process::file_len;
use walship_testkit::Cluster;

pub use self::args::parse_duration;
pub use self::args::SoakArgs;
use self::cluster::ClusterConfig;
use self::faults::FaultKind;
use self::faults::Schedule;
use self::recorder::Clock;
use self::recorder::HistoryWriter;
use self::recorder::Recorder;
use self::summary::Linearizability;
use self::summary::Summary;
use self::workload::Workload;
use self::workload::WorkloadConfig;

/// Acknowledged writes to wait for between cycles (so faults hit a cluster
/// under load), with their deadline.
const WRITES_BETWEEN_CYCLES: u64 = 100;
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Servers of the ZooKeeper ensemble `--ensemble` starts.
const ENSEMBLE_SERVERS: u32 = 3;

/// What `run` has started, so an interrupt can stop it.
#[derive(Default)]
struct State {
    cluster: Option<Cluster>,
    workload: Option<Workload>,
    /// `--workload ledger`: the clients' records.
    ledger_log: Option<ledger::LedgerLog>,
    writer: Option<HistoryWriter>,
    recorder: Option<Recorder>,
    summary: Summary,
}

/// Everything decided from the flags before anything starts.
struct Plan {
    cycles: Option<u64>,
    duration: Option<Duration>,
    clients: u32,
    keys: u32,
    value_bytes: u32,
    seed: u64,
    run_dir: PathBuf,
    history: PathBuf,
    zk: Option<String>,
    ensemble: bool,
    tls: bool,
    kinds: Vec<FaultKind>,
    /// Kinds left out, and why.
    skipped: Vec<(FaultKind, String)>,
    bin: PathBuf,
    /// `--workload ledger`: the ledger example the nodes run, and how.
    ledger: Option<LedgerPlan>,
}

struct LedgerPlan {
    bin: PathBuf,
    retries: ledger::Retries,
    accounts: u64,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("walship soak: {msg}");
    ExitCode::from(2)
}

pub async fn run(args: SoakArgs) -> ExitCode {
    let plan = match plan(args) {
        Ok(p) => p,
        Err(msg) => return usage(msg),
    };
    if let Some(zk) = &plan.zk {
        if let Err(e) = zk_reachable(zk).await {
            return usage(format!("cannot reach ZooKeeper at {zk}: {e}"));
        }
    }
    let mut state = State::default();
    state.summary.seed = plan.seed;
    state.summary.kinds = plan.kinds.clone();
    state.summary.history_path = plan.history.clone();
    // The ledger's clients are not in the key-value history (only the
    // prober's and the faults' writes are), so none count as its workload.
    state.summary.workload_clients = if plan.ledger.is_some() { 0 } else { plan.clients };
    state.summary.ledger_workload = plan.ledger.is_some();
    state.summary.skipped = plan.skipped.clone();
    state.summary.zookeeper = match (&plan.zk, plan.ensemble) {
        (Some(zk), _) => format!("given: {zk}"),
        (None, true) => format!("the soak's own {ENSEMBLE_SERVERS}-server ensemble on loopback"),
        (None, false) => "the soak's own single server on loopback".into(),
    };
    let load = match &plan.ledger {
        Some(l) => format!(
            "{} ledger clients over {} accounts ({} retries; nodes: {})",
            plan.clients,
            l.accounts,
            l.retries.name(),
            l.bin.display()
        ),
        None if plan.value_bytes > 0 => format!(
            "{} clients over {} keys, values of {} bytes",
            plan.clients, plan.keys, plan.value_bytes
        ),
        None => format!("{} clients over {} keys", plan.clients, plan.keys),
    };
    println!(
        "walship soak: seed {}, {}, {load}, faults: {}",
        plan.seed,
        match (plan.cycles, plan.duration) {
            (Some(c), Some(d)) => format!("{c} cycles or {}", summary::show_duration(d)),
            (Some(c), None) => format!("{c} cycles"),
            (None, Some(d)) => format!("for {}", summary::show_duration(d)),
            (None, None) => unreachable!("plan sets one"),
        },
        plan.kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    );
    println!(
        "walship soak: run dir {}, history {}",
        plan.run_dir.display(),
        plan.history.display()
    );

    let started = Instant::now();
    let signal = walship_testkit::process::wait_for_signal();
    let outcome = tokio::select! {
        r = drive(&plan, &mut state, started) => Ok(r),
        sig = signal => Err(sig),
    };
    state.summary.elapsed = started.elapsed();
    match outcome {
        Ok(r) => {
            if let Err(e) = r {
                state.summary.problems.push(format!("{e:#}"));
            }
            // Stopped early (a stall or a crash): stop the clients first.
            if let Some(w) = state.workload.take() {
                w.abort();
            }
            if let Some(mut c) = state.cluster.take() {
                c.stop_all().await;
            }
            drop(state.recorder.take());
            if let Some(w) = state.writer.take() {
                state.summary.records = w.snapshot();
                if let Ok(Ok(records)) = tokio::time::timeout(Duration::from_secs(5), w.finish()).await {
                    state.summary.records = records;
                }
            }
            // Stopped early: the history so far is still worth checking.
            if state.summary.linearizability.is_none() && !state.summary.records.is_empty() {
                if let Ok(lin) = judge(state.summary.records.clone()).await {
                    state.summary.linearizability = Some(lin);
                }
            }
            print!("{}", state.summary.render());
            println!(
                "logs: {}/node1.log, node2.log{}",
                plan.run_dir.display(),
                match (&plan.zk, plan.ensemble) {
                    (Some(_), _) => "",
                    (None, true) => ", zk1/zk.log, zk2/zk.log, zk3/zk.log",
                    (None, false) => ", zk/zk.log",
                }
            );
            if state.summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(sig) => {
            eprintln!("walship soak: {sig}: stopping ZooKeeper and both nodes");
            if let Some(w) = state.workload.take() {
                w.abort();
            }
            if let Some(mut c) = state.cluster.take() {
                c.stop_all().await;
            }
            drop(state.recorder.take());
            if let Some(w) = state.writer.take() {
                state.summary.records = w.snapshot();
                // The aborted clients drop their recorders as they unwind.
                if let Ok(Ok(records)) = tokio::time::timeout(Duration::from_secs(5), w.finish()).await {
                    state.summary.records = records;
                }
            }
            state.summary.interrupted = Some(sig);
            print!("{}", state.summary.render());
            ExitCode::from(if sig == "SIGTERM" { 143 } else { 130 })
        }
    }
}

fn plan(args: SoakArgs) -> Result<Plan, String> {
    if let Some(zk) = &args.zk {
        args::check_zk_addr(zk)?;
    }
    let bin = match args.bin {
        Some(b) if b.is_file() => b,
        Some(b) => return Err(format!("--bin {}: no such file", b.display())),
        None => walship_testkit::process::walship_binary_beside_this_one()?,
    };
    let ledger = match args.workload {
        args::Workload::Kv => None,
        args::Workload::Ledger => Some(LedgerPlan {
            bin: match args.ledger_bin {
                Some(b) if b.is_file() => b,
                Some(b) => return Err(format!("--ledger-bin {}: no such file", b.display())),
                None => walship_testkit::process::example_binary_beside_this_one("ledger")
                    .map_err(|e| format!("{e}; or pass --ledger-bin"))?,
            },
            retries: args.ledger_retries,
            accounts: args.accounts,
        }),
    };
    let sets = args
        .kinds
        .unwrap_or_else(|| vec![faults::KindSet::parse("all").expect("a group")]);
    let mut kinds: Vec<FaultKind> = Vec::new();
    for set in sets {
        for k in set.kinds {
            let why = if k.needs_ensemble() && !args.ensemble {
                Some("needs --ensemble (the soak's own ZooKeeper ensemble)")
            } else if k.needs_own_zk() && args.ensemble {
                Some("is for a single ZooKeeper; with --ensemble the zk-* kinds restart servers")
            } else {
                None
            };
            match why {
                None => kinds.push(k),
                // A group holds what this run can do.
                Some(_) if set.group => {}
                Some(why) => return Err(format!("--kinds {k} {why}")),
            }
        }
    }
    if kinds.is_empty() {
        return Err("--kinds leaves no fault kind this run can do (the zk group needs --ensemble)".into());
    }
    kinds.sort();
    kinds.dedup();
    let mut skipped = Vec::new();
    if let Some(zk) = &args.zk {
        let ensemble = zk.contains(',');
        for k in &kinds {
            if k.needs_own_zk() {
                skipped.push((*k, "ZooKeeper given with --zk is not the soak's to restart".to_string()));
            } else if ensemble && k.cuts_zk_link() {
                skipped.push((
                    *k,
                    "--zk names an ensemble: no one address to put a node's ZooKeeper proxy in front of".to_string(),
                ));
            }
        }
        kinds.retain(|k| !skipped.iter().any(|(s, _)| s == k));
        if kinds.is_empty() {
            return Err(format!(
                "--kinds {} needs the soak's own ZooKeeper (drop --zk)",
                skipped.iter().map(|(k, _)| k.name()).collect::<Vec<_>>().join(",")
            ));
        }
    }
    let cycles = args.cycles.or(match args.duration {
        None => Some(args::DEFAULT_CYCLES),
        Some(_) => None,
    });
    let seed = args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        (t ^ (std::process::id() as u64) << 32) % 1_000_000_000
    });
    let run_dir = walship_testkit::prepare_run_dir(
        &args.run_dir,
        &["zk", "zk1", "zk2", "zk3", "node1", "node2", "fault1", "fault2"],
    )?;
    let history = args.history.unwrap_or_else(|| run_dir.join("history.jsonl"));
    Ok(Plan {
        cycles,
        duration: args.duration,
        clients: args.clients,
        keys: args.keys,
        value_bytes: args.value_bytes,
        seed,
        run_dir,
        history,
        zk: args.zk,
        ensemble: args.ensemble,
        tls: args.tls,
        kinds,
        skipped,
        bin,
        ledger,
    })
}

/// A TCP connection and a ZooKeeper session, within 5 s.
async fn zk_reachable(zk: &str) -> Result<(), String> {
    let first = zk.split(',').next().unwrap_or(zk);
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(first)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("TCP connect timed out".into()),
    }
    match tokio::time::timeout(Duration::from_secs(5), zk_session(zk)).await {
        Ok(Ok(client)) => {
            drop(client);
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no ZooKeeper session within 5 s".into()),
    }
}

/// A ZooKeeper session of the soak's own (not bounded: callers time it).
async fn zk_session(zk: &str) -> Result<zookeeper_client::Client, zookeeper_client::Error> {
    zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(4))
        .connect(zk)
        .await
}

/// The data version of the cluster's root znode: the count of the nodes'
/// evictions from ZooKeeper's history (`witness::evict`); `None` if it
/// cannot be read.
async fn root_version(zk: &str, cluster: &str) -> Option<i32> {
    let root = walship::witness::record::Paths::new(cluster).root;
    let read = async {
        let c = zk_session(zk).await.ok()?;
        c.check_stat(&root).await.ok().flatten().map(|s| s.version)
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.ok().flatten()
}

/// The soak proper; everything it starts goes into `state`.
async fn drive(plan: &Plan, state: &mut State, started: Instant) -> Result<()> {
    let cluster_name = format!("soak-{}-{}", plan.seed, std::process::id());
    state.summary.cluster = cluster_name.clone();
    let cfg = ClusterConfig {
        run_dir: plan.run_dir.clone(),
        bin: plan.bin.clone(),
        zk: plan.zk.clone(),
        ensemble: plan.ensemble.then_some(ENSEMBLE_SERVERS),
        cluster: cluster_name,
        tls: plan.tls,
        node_program: plan.ledger.as_ref().map(|l| l.bin.clone()),
    };
    println!("[{:>6}] starting ZooKeeper and nodes 1 and 2", elapsed(started));
    // Filled in as soon as it exists, so an interrupt stops what started.
    let cluster = cluster::start(&cfg).await?;
    let cluster = state.cluster.insert(cluster);
    let leader = cluster.wait_for_leader(Duration::from_secs(90)).await?;
    println!(
        "[{:>6}] ZooKeeper {}, node {leader} leads; starting {} clients",
        elapsed(started),
        cluster.zk_addr(),
        plan.clients
    );

    let clock = Clock::start();
    let (writer, recorder) = HistoryWriter::create(&plan.history)?;
    state.writer = Some(writer);
    let wcfg = WorkloadConfig {
        clients: plan.clients,
        keys: plan.keys,
        value_bytes: plan.value_bytes as usize,
        seed: plan.seed,
    };
    let wl = match &plan.ledger {
        None => Workload::start(&wcfg, cluster.clients(), recorder.clone(), clock),
        Some(l) => {
            ledger::open_accounts(&cluster.clients(), l.accounts).await?;
            let (wl, log) =
                Workload::start_ledger(&wcfg, l.accounts, l.retries, cluster.clients(), recorder.clone(), clock);
            state.ledger_log = Some(log);
            wl
        }
    };
    let prober = faults::Prober::new(&cluster.clients(), recorder.clone(), clock);
    state.recorder = Some(recorder);
    let wl = state.workload.insert(wl);
    wait_progress(cluster, wl, WRITES_BETWEEN_CYCLES).await?;

    let mut schedule = Schedule::new(plan.seed, plan.kinds.clone());
    let deadline = plan.duration.map(|d| started + d);
    let mut n = 0u64;
    // The ledger's duplicated transactions after the last cycle.
    let mut ledger_dups = 0usize;
    loop {
        if plan.cycles.is_some_and(|c| n >= c) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        n += 1;
        let kind = schedule.next_kind();
        let log_marks = [1u64, 2].map(|id| file_len(cluster.node(id).log_path()));
        let ctx = nemesis::CycleCtx {
            cluster: &mut *cluster,
            probe: &prober,
            workload: wl,
            number: n,
            rng: schedule.params(n),
        };
        let mut report = nemesis::run_cycle(kind, ctx)
            .await
            .with_context(|| format!("cycle {n} ({kind}) did not recover"))?;
        report.error_lines = [1u64, 2]
            .iter()
            .map(|id| error_lines_since(cluster.node(*id).log_path(), log_marks[(*id - 1) as usize]))
            .sum();
        if let Some(l) = &plan.ledger {
            ledger_after_cycle(cluster, n, l.retries, &mut ledger_dups, &mut report).await;
        }
        let c = &wl.counters;
        println!(
            "[{:>6}] cycle {n:>3}{} {:<28} {:<8} failover {:>5} ms, node {} leads; {} ops, {} writes acked  ({:.1} s){}",
            elapsed(started),
            plan.cycles.map(|c| format!("/{c}")).unwrap_or_default(),
            kind.name(),
            report.target.map(|t| format!("node {t}")).unwrap_or_else(|| "-".into()),
            report.failover_ms,
            report.leader_after,
            c.ops(),
            c.acked(),
            report.took.as_secs_f64(),
            if report.variant.is_empty() && report.params.is_empty() {
                String::new()
            } else {
                format!("  [{}]", report.variant_text())
            }
        );
        if let (Some(out), Some(rec)) = (report.zk_outage_ms, report.zk_recovery_ms) {
            println!(
                "           ZooKeeper quorum back {out} ms after the fault, first write acknowledged {rec} ms after that; {} ERROR lines",
                report.error_lines
            );
        }
        for note in &report.notes {
            println!("           {note}");
        }
        for l in &report.liveness {
            println!("           LIVENESS: {l}");
        }
        for v in &report.violations {
            println!("           VIOLATION: {v}");
        }
        state.summary.cycles.push(report);
        wait_progress(cluster, wl, WRITES_BETWEEN_CYCLES).await?;
    }

    println!("[{:>6}] stopping the workload; final reads", elapsed(started));
    // The ledger workload writes no keys: only the prober's and the faults'.
    let mut keys: Vec<String> = match plan.ledger {
        None => (0..plan.keys as u64).map(workload::key_name).collect(),
        Some(_) => Vec::new(),
    };
    keys.extend(prober.extra_keys());
    drop(prober);
    state.workload.take().expect("started above").stop().await;
    let recorder = state.recorder.take().expect("started above");
    let (lin_reads, problems) = check::final_reads(cluster, &keys, plan.clients, &recorder, clock).await?;
    drop(recorder);
    state.summary.problems.extend(problems);
    let records = state.writer.take().expect("started above").finish().await?;
    let allowed = check::allowed_finals(&records);

    // (1) durability: linearizable reads through each node, local reads on
    // each node once caught up, and ZooKeeper alone.
    let mut violations = Vec::new();
    for (i, values) in lin_reads.iter().enumerate() {
        let v = check::against_allowed(&format!("node {} (linearizable)", i + 1), &keys, values, &allowed);
        state.summary.durable.push(format!(
            "node {} linearizable reads: {}",
            i + 1,
            verdict_word(v.len(), values.len())
        ));
        violations.extend(v);
    }
    cluster.wait_caught_up(Duration::from_secs(60)).await?;
    for i in 0..2usize {
        let (values, problems) = check::stale_reads(cluster, i, &keys).await;
        state.summary.problems.extend(problems);
        let mut v = check::against_allowed(&format!("node {} (local)", i + 1), &keys, &values, &allowed);
        for (key, value) in &values {
            if lin_reads[0].get(key).is_some_and(|l| l != value) {
                v.push(format!(
                    "node {} (local): {key} holds {value:?}, the final linearizable read returned {:?}",
                    i + 1,
                    lin_reads[0][key]
                ));
            }
        }
        state.summary.durable.push(format!(
            "node {} local reads:        {}",
            i + 1,
            verdict_word(v.len(), values.len())
        ));
        violations.extend(v);
    }
    match check::same_state(cluster).await {
        (None, None) => state
            .summary
            .durable
            .push("nodes' whole state:         same key count at the same applied index".to_string()),
        (Some(v), _) => {
            state
                .summary
                .durable
                .push("nodes' whole state:         DIFFERENT".to_string());
            violations.push(format!("nodes' whole state: {v}"));
        }
        (None, Some(p)) => state.summary.problems.push(p),
    }
    // Violations a cycle saw as it happened (a leader cut from ZooKeeper
    // acknowledging a write).
    for c in &state.summary.cycles {
        violations.extend(c.violations.iter().cloned());
    }
    // No write acknowledged while ZooKeeper had no quorum.
    let windows: Vec<(u64, u64)> = state.summary.cycles.iter().filter_map(|c| c.quorum_down_ns).collect();
    let (tally, v) = check::writes_while_down(&records, &windows);
    violations.extend(v);
    state.summary.quorum_loss = tally;
    let (zk_ok, zk_text) = check::zookeeper_alone(&plan.bin, cluster.zk_addr(), &cluster.name, &plan.history).await;
    let zk_line = zk_text.lines().last().unwrap_or("").to_string();
    match zk_ok {
        Some(true) => state
            .summary
            .durable
            .push(format!("ZooKeeper alone (wal verify): ok - {zk_line}")),
        Some(false) => {
            state
                .summary
                .durable
                .push("ZooKeeper alone (wal verify): FAILED".to_string());
            violations.extend(zk_text.lines().map(|l| format!("wal verify: {l}")));
        }
        None => state
            .summary
            .problems
            .push(format!("walship wal verify could not check ZooKeeper: {zk_text}")),
    }
    state.summary.durability_violations = violations;
    state.summary.zk_evictions = root_version(cluster.zk_addr(), &cluster.name).await;
    if let (Some(l), Some(log)) = (&plan.ledger, state.ledger_log.take()) {
        let records = std::mem::take(&mut *log.lock().expect("ledger log lock"));
        state.summary.ledger = Some(check_ledger(cluster, &records, l).await?);
    }

    // (2) linearizability, key by key.
    let lin = judge(records.clone()).await?;
    state.summary.linearizability = Some(lin);
    state.summary.records = records;
    Ok(())
}

/// After a cycle, the ledger as its leader sees it: transactions applied
/// twice so far (a duplicate never goes away, so this holds under load).
/// The cycle's line gets how many this cycle added; with sessions each is
/// a violation naming the transaction.
async fn ledger_after_cycle(
    cluster: &Cluster,
    cycle: u64,
    retries: ledger::Retries,
    so_far: &mut usize,
    report: &mut faults::CycleReport,
) {
    let view = match ledger::view(&cluster.client(report.leader_after), false).await {
        Ok(v) => v,
        Err(e) => {
            report.notes.push(format!("ledger: not read after the cycle: {e:#}"));
            return;
        }
    };
    let dups = ledger::duplicated(&view);
    let extra: usize = dups.iter().map(|(_, n)| n - 1).sum();
    let added = extra.saturating_sub(*so_far);
    *so_far = extra;
    if added == 0 {
        return;
    }
    report.notes.push(format!(
        "ledger: {added} duplicate applications this cycle ({extra} so far)"
    ));
    // One outcome per duplicate: the fault table counts them per kind.
    report
        .outcomes
        .extend(std::iter::repeat_n("ledger duplicates".to_string(), added));
    if retries == ledger::Retries::Session {
        for (tx, n) in dups {
            report
                .violations
                .push(format!("cycle {cycle}: ledger tx {tx} applied {n} times in a session"));
        }
    }
}

/// The ledger's end state, read four ways (each node's own applied state
/// once both caught up, and a linearizable read through each node), which
/// must be the same, checked against what the clients were told.
async fn check_ledger(
    cluster: &mut Cluster,
    records: &[ledger::LedgerRecord],
    plan: &LedgerPlan,
) -> Result<ledger::LedgerVerdict> {
    cluster.wait_caught_up(Duration::from_secs(60)).await?;
    let local = [
        ledger::view(&cluster.client(1), true).await?,
        ledger::view(&cluster.client(2), true).await?,
    ];
    let linearizable = [
        ledger::view(&cluster.client(1), false).await?,
        ledger::view(&cluster.client(2), false).await?,
    ];
    let mut verdict = ledger::check(records, &local[0], plan.accounts, plan.retries);
    let mut same = |what: &str, a: &ledger::LedgerView, b: &ledger::LedgerView| {
        if a == b {
            verdict.lines.push(format!("{what}: same"));
            return;
        }
        verdict.lines.push(format!("{what}: DIFFERENT"));
        for (account, balance) in &a.balances {
            if b.balances.get(account) != Some(balance) || b.histories.get(account) != a.histories.get(account) {
                verdict.violations.push(format!(
                    "{what}: {account} holds {balance} ({} ids) against {:?} ({:?} ids)",
                    a.histories.get(account).map_or(0, |h| h.len()),
                    b.balances.get(account),
                    b.histories.get(account).map(|h| h.len())
                ));
            }
        }
        if a.balances.len() != b.balances.len() {
            verdict.violations.push(format!(
                "{what}: {} accounts against {}",
                a.balances.len(),
                b.balances.len()
            ));
        }
    };
    same("node 1 local = node 2 local", &local[0], &local[1]);
    same("node 1 linearizable = node 1 local", &linearizable[0], &local[0]);
    same("node 2 linearizable = node 1 local", &linearizable[1], &local[0]);
    Ok(verdict)
}

/// Runs the linearizability checker over every key (off the async threads).
async fn judge(records: Vec<recorder::OpRecord>) -> Result<Linearizability> {
    let check_started = Instant::now();
    let checked = tokio::task::spawn_blocking(move || check::linearizability(&records)).await?;
    let mut lin = Linearizability {
        keys: checked.len(),
        took: check_started.elapsed(),
        ..Default::default()
    };
    for (key, verdict, ops) in checked {
        lin.ops += ops;
        match verdict {
            lincheck::Verdict::Linearizable => lin.ok += 1,
            v @ lincheck::Verdict::Undecided { .. } => lin.undecided.push(format!("{key}: {v}")),
            v => lin.violations.push(format!("{key}: {v}")),
        }
    }
    Ok(lin)
}

fn verdict_word(bad: usize, read: usize) -> String {
    if bad == 0 {
        format!("ok ({read} keys)")
    } else {
        format!("{bad} VIOLATIONS ({read} keys)")
    }
}

/// Waits until the workload acknowledged `more` writes (the cluster serves).
async fn wait_progress(cluster: &mut Cluster, wl: &Workload, more: u64) -> Result<()> {
    let target = wl.counters.acked() + more;
    let end = Instant::now() + PROGRESS_TIMEOUT;
    while wl.counters.acked() < target {
        cluster.check_crashes()?;
        if Instant::now() >= end {
            anyhow::bail!(
                "the workload got no {more} writes acknowledged within {PROGRESS_TIMEOUT:?} (acked {})",
                wl.counters.acked()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// ERROR lines a node's log gained since `from` (its length then).
fn error_lines_since(path: &std::path::Path, from: u64) -> u64 {
    use std::io::Read;
    use std::io::Seek;
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut text = Vec::new();
    if f.seek(std::io::SeekFrom::Start(from)).is_err() || f.read_to_end(&mut text).is_err() {
        return 0;
    }
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.split_whitespace().take(3).any(|w| w.contains("ERROR")))
        .count() as u64
}

fn elapsed(started: Instant) -> String {
    format!("{:.1}s", started.elapsed().as_secs_f64())
}
