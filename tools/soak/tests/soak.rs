//! The die-and-reborn soak (S10) in the test suite: a short `walship soak`
//! against its own private ZooKeeper must pass with each of a dozen fault
//! kinds exercised (among them a cut between one node and ZooKeeper, power
//! loss, a disk stall, and faults combined two at once) and no violation;
//! a short one against a 3-server ensemble (`--ensemble`) must pass with
//! the ZooKeeper leader killed and frozen and the quorum lost; one with
//! values big enough that W's appends are evicted from ZooKeeper's history
//! must pass under kills, a wipe and power loss;
//! bad flags and an unreachable ZooKeeper are rejected with one line and
//! exit 2; an interrupted soak stops everything it started and prints what
//! it has.

use std::process::Command;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

/// The tool under test; it starts nodes from the `walship` binary cargo
/// built beside it (the workspace test command builds both).
const WALSHIP: &str = env!("CARGO_BIN_EXE_walship-soak");

/// One cycle of each (the schedule shuffles every enabled kind per round):
/// the classic kinds but two, one node's ZooKeeper link cut (leader's,
/// follower's), power loss, a disk stall, and three combinations.
const KINDS: [&str; 12] = [
    "kill-leader-wipe",
    "kill-follower",
    "freeze-leader",
    "zk-restart",
    "cut",
    "zk-cut-leader",
    "zk-cut-follower",
    "power-loss-leader",
    "stall-leader",
    "zk-cut-leader+kill-both+wipe",
    "power-loss-both",
    "freeze-leader+zk-cut",
];

fn run_dir(name: &str) -> tempfile::TempDir {
    let base = std::env::var_os("WALSHIP_TEST_DIR").map(std::path::PathBuf::from);
    let prefix = format!("walship-{name}-");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    match base {
        Some(dir) => {
            std::fs::create_dir_all(&dir).expect("WALSHIP_TEST_DIR");
            b.tempdir_in(dir)
        }
        None => b.tempdir(),
    }
    .expect("temp dir")
}

fn soak(args: &[&str]) -> Output {
    soak_env(args, &[])
}

/// `envs` reach the nodes too (they inherit the soak's environment).
fn soak_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(WALSHIP)
        .args(args)
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied())
        .output()
        .expect("run walship soak")
}

/// Runs `walship soak <args> --run-dir <dir>` and returns its stdout (and
/// the dir, kept alive); if it fails, panics with both outputs and keeps
/// the run dir.
fn soak_passing(what: &str, dir: tempfile::TempDir, args: &[&str]) -> (tempfile::TempDir, String) {
    soak_passing_env(what, dir, args, &[])
}

fn soak_passing_env(
    what: &str,
    dir: tempfile::TempDir,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (tempfile::TempDir, String) {
    let started = Instant::now();
    let run_dir = dir.path().to_str().expect("utf-8 path").to_string();
    let out = soak_env(&[args, &["--run-dir", &run_dir]].concat(), envs);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let kept = dir.keep();
        panic!(
            "{what} exited {:?} after {:.0?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\nrun dir kept: {}",
            out.status.code(),
            started.elapsed(),
            kept.display()
        );
    }
    (dir, stdout)
}

/// The kv soak's verdict: PASS, no violation and nothing undecided in the
/// linearizability check, and ZooKeeper alone holds every acknowledged write.
fn assert_clean_pass(stdout: &str) {
    assert!(stdout.contains("verdict       PASS"), "{stdout}");
    assert!(stdout.contains("; 0 violations, 0 undecided)"), "{stdout}");
    assert!(!stdout.contains("VIOLATION"), "{stdout}");
    assert!(stdout.contains("ZooKeeper alone (wal verify): ok"), "{stdout}");
}

/// The count after `<kind> ` on the summary's "cycles" line.
fn cycles_of(summary: &str, kind: &str) -> Option<u64> {
    let line = summary.lines().find(|l| l.trim_start().starts_with("cycles "))?;
    line.split(',')
        .map(|part| part.trim().trim_start_matches("cycles").trim())
        .find_map(|part| part.strip_prefix(&format!("{kind} "))?.trim().parse().ok())
}

/// The runs of `kind` in the summary's fault table (rows "    <kind>[ *]  <runs> ...").
fn table_runs(summary: &str, kind: &str) -> Option<(u64, bool)> {
    summary.lines().find_map(|l| {
        let rest = l.strip_prefix("    ")?.strip_prefix(kind)?;
        let (combined, rest) = match rest.strip_prefix(" *") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if !rest.starts_with(' ') {
            return None; // a longer kind name with this one as its prefix
        }
        Some((rest.split_whitespace().next()?.parse().ok()?, combined))
    })
}

#[test]
fn twelve_cycles_with_zk_link_cuts_power_loss_stall_and_combined_faults_no_violation() {
    let dir = run_dir("soak");
    let path = dir.path().to_path_buf();
    let started = Instant::now();
    let kinds = KINDS.join(",");
    let (_dir, stdout) = soak_passing(
        "walship soak",
        dir,
        &["--cycles", "12", "--seed", "20", "--kinds", &kinds],
    );
    println!("{stdout}");
    for kind in KINDS {
        let n = cycles_of(&stdout, kind);
        assert!(
            n.is_some_and(|n| n >= 1),
            "fault kind {kind} not exercised ({n:?}):\n{stdout}"
        );
        // The report's fault table has a row for it, combinations marked.
        let combined = kind.contains('+') || kind == "power-loss-both";
        let row = table_runs(&stdout, kind);
        assert_eq!(row, Some((1, combined)), "table row for {kind}:\n{stdout}");
    }
    assert_eq!(table_runs(&stdout, "zk-cut-leader"), Some((1, false)), "{stdout}");
    assert_eq!(
        table_runs(&stdout, "zk-cut-leader+kill-both+wipe"),
        Some((1, true)),
        "{stdout}"
    );
    assert!(
        stdout.contains("12 cycles: 9 single faults, 3 combined (two faults at once)"),
        "{stdout}"
    );
    // The power losses lost log records (what was written in the unsynced
    // window), so they tested something.
    assert!(stdout.contains("log records lost"), "{stdout}");
    assert_clean_pass(&stdout);
    assert!(stdout.contains("linearizable  "), "{stdout}");
    let history = std::fs::read_to_string(path.join("history.jsonl")).expect("history file");
    let lines = history.lines().count();
    assert!(lines > 500, "only {lines} operations in the history");
    let parsed = walship::history::History::load(&path.join("history.jsonl")).expect("history parses");
    assert_eq!(parsed.ops.len(), lines);
    assert!(
        started.elapsed() < Duration::from_secs(150),
        "the soak took {:.0?}",
        started.elapsed()
    );
}

/// Values of 8 KiB from 16 clients: W's appends are multis of 64 KiB and
/// more, so the nodes send evictions from ZooKeeper's history
/// (`witness::evict`) and snapshots span several chunks, while leaders are
/// killed, wiped and lose power: nothing lost, every key linearizable, and
/// the evictions happened.
#[test]
fn big_values_soak_evicts_from_zookeepers_history_and_loses_nothing() {
    let dir = run_dir("soak-big");
    let (_dir, stdout) = soak_passing(
        "walship soak --value-bytes 8192",
        dir,
        &[
            "--cycles",
            "4",
            "--seed",
            "41",
            "--clients",
            "16",
            "--value-bytes",
            "8192",
            "--kinds",
            "kill-leader,kill-leader-wipe,power-loss-leader,zk-cut-leader+kill-both+wipe",
        ],
    );
    println!("{stdout}");
    assert!(
        stdout.contains("16 clients over 32 keys, values of 8192 bytes"),
        "{stdout}"
    );
    assert_clean_pass(&stdout);
    let evictions: i64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("zk history"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no zk history line:\n{stdout}"));
    assert!(evictions > 0, "no evictions with 8 KiB values:\n{stdout}");
}

/// Nodes that keep no log entry in memory but the last
/// (`WALSHIP_LOG_CACHE_MAX_BYTES=0`): every entry replication, apply or
/// adoption asks for comes back from the log files, while followers fall
/// behind behind cut links and stalled disks, lose power and are killed
/// with their leader's link to ZooKeeper cut. Nothing lost, every key
/// linearizable.
#[test]
fn soak_with_no_log_cache_reads_entries_back_under_faults_and_loses_nothing() {
    let dir = run_dir("soak-nocache");
    let (_dir, stdout) = soak_passing_env(
        "walship soak with no log cache",
        dir,
        &[
            "--cycles",
            "5",
            "--seed",
            "43",
            "--kinds",
            "cut,power-loss-follower,stall-leader+kill-follower,zk-cut-leader+kill-follower,kill-leader",
        ],
        &[("WALSHIP_LOG_CACHE_MAX_BYTES", "0")],
    );
    println!("{stdout}");
    assert_clean_pass(&stdout);
}

/// The production shape: ZooKeeper as a 3-server ensemble (`--ensemble`),
/// with its leader killed, its quorum lost for a few seconds (two servers
/// down), its leader frozen, and a ZooKeeper-leader kill combined with a
/// walship-leader kill: nothing lost, every key linearizable, no write
/// acknowledged while the quorum was gone.
#[test]
fn ensemble_soak_zk_leader_kill_and_quorum_loss_lose_nothing() {
    const ZK_KINDS: [&str; 5] = [
        "zk-kill-leader",
        "zk-quorum-loss",
        "zk-freeze-leader",
        "zk-kill-leader+kill-leader",
        "zk-cut-leader",
    ];
    let dir = run_dir("soak-ensemble");
    let path = dir.path().to_path_buf();
    let started = Instant::now();
    let kinds = ZK_KINDS.join(",");
    let (_dir, stdout) = soak_passing(
        "walship soak --ensemble",
        dir,
        &["--ensemble", "--cycles", "5", "--seed", "11", "--kinds", &kinds],
    );
    println!("{stdout}");
    assert!(
        stdout.contains("zookeeper     the soak's own 3-server ensemble"),
        "{stdout}"
    );
    for kind in ZK_KINDS {
        assert_eq!(cycles_of(&stdout, kind), Some(1), "fault kind {kind}:\n{stdout}");
        assert_eq!(
            table_runs(&stdout, kind),
            Some((1, kind.contains('+'))),
            "table row for {kind}:\n{stdout}"
        );
    }
    // The recovery table has the ZooKeeper kinds; the quorum loss was a
    // real one, and nothing was acknowledged while it lasted.
    assert!(stdout.contains("zk recovery   quorum back"), "{stdout}");
    assert!(
        stdout.contains("quorum loss   1 windows") && stdout.contains(": 0 acknowledged (must be 0)"),
        "{stdout}"
    );
    assert_clean_pass(&stdout);
    for id in 1..=3 {
        assert!(path.join(format!("zk{id}/data/myid")).is_file(), "zk{id} has no myid");
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the ensemble soak took {:.0?}",
        started.elapsed()
    );
}

fn assert_one_line_exit_2(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit {:?}, stderr {stderr:?}",
        out.status.code()
    );
    assert_eq!(stderr.lines().count(), 1, "{what}: not one line: {stderr:?}");
    assert!(stderr.starts_with("walship soak: "), "{what}: {stderr:?}");
    assert!(
        out.stdout.is_empty(),
        "{what}: printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let dir = run_dir("soak-flags");
    let d = dir.path().to_str().expect("utf-8 path");
    let e = assert_one_line_exit_2(&soak(&["--cycels", "3", "--run-dir", d]), "misspelt flag");
    assert!(e.contains("--cycels"), "{e}");
    let e = assert_one_line_exit_2(&soak(&["--cycles", "0", "--run-dir", d]), "zero cycles");
    assert!(e.contains("--cycles"), "{e}");
    let e = assert_one_line_exit_2(&soak(&["--duration", "2 weeks", "--run-dir", d]), "bad duration");
    assert!(e.contains("--duration"), "{e}");
    let e = assert_one_line_exit_2(&soak(&["--kinds", "kill-leader,meteor", "--run-dir", d]), "bad kind");
    assert!(e.contains("meteor"), "{e}");
    let e = assert_one_line_exit_2(&soak(&["--zk", "localhost", "--run-dir", d]), "zk without port");
    assert!(e.contains("host:port"), "{e}");
    let e = assert_one_line_exit_2(
        &soak(&["--kinds", "zk-kill-leader", "--run-dir", d]),
        "ensemble kind without --ensemble",
    );
    assert!(e.contains("--ensemble"), "{e}");
    let e = assert_one_line_exit_2(
        &soak(&[
            "--workload",
            "ledger",
            "--ledger-bin",
            "/no/such/ledger",
            "--run-dir",
            d,
        ]),
        "missing ledger binary",
    );
    assert!(e.contains("--ledger-bin /no/such/ledger"), "{e}");
    let e = assert_one_line_exit_2(
        &soak(&["--workload", "ledger", "--ledger-retries", "sometimes", "--run-dir", d]),
        "bad retry mode",
    );
    assert!(e.contains("sometimes"), "{e}");
}

/// The ledger workload (`--workload ledger`): the nodes run the ledger
/// example, clients send deposits, withdrawals and transfers in sessions
/// while the leader is killed (once with its disk wiped) and frozen; every
/// acknowledged transaction applied exactly once, rejections changed
/// nothing, money conserved, both nodes the same. Needs the example built
/// beside the soak (`cargo test --workspace --all-targets` does it).
#[test]
fn ledger_soak_with_sessions_applies_each_transaction_once() {
    let dir = run_dir("soak-ledger");
    let started = Instant::now();
    let (_dir, stdout) = soak_passing(
        "walship soak --workload ledger",
        dir,
        &[
            "--workload",
            "ledger",
            "--cycles",
            "3",
            "--seed",
            "15",
            "--clients",
            "4",
            "--kinds",
            "kill-leader-wipe,freeze-leader,kill-follower",
        ],
    );
    println!("{stdout}");
    for kind in ["kill-leader-wipe", "freeze-leader", "kill-follower"] {
        assert_eq!(cycles_of(&stdout, kind), Some(1), "{kind} not run once:\n{stdout}");
    }
    assert!(stdout.contains("(session retries) over 32 accounts"), "{stdout}");
    assert!(stdout.contains("duplicates    0 (must be 0)"), "{stdout}");
    let figure = |label: &str| -> u64 {
        let at = stdout
            .find(label)
            .unwrap_or_else(|| panic!("no '{label}' in:\n{stdout}"))
            + label.len();
        let digits: String = stdout[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no number after '{label}' in:\n{stdout}"))
    };
    // Enough load to mean something, and the withdraws no balance covers
    // (one in 16 commands) came back rejected.
    assert!(figure("accounts: acknowledged ") >= 300, "{stdout}");
    assert!(figure(", rejected ") >= 10, "{stdout}");
    for same in [
        "node 1 local = node 2 local: same",
        "node 1 linearizable = node 1 local: same",
        "node 2 linearizable = node 1 local: same",
    ] {
        assert!(stdout.contains(same), "{same}:\n{stdout}");
    }
    assert!(!stdout.contains("VIOLATION"), "{stdout}");
    assert!(stdout.contains("verdict       PASS"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the ledger soak took {:.0?}",
        started.elapsed()
    );
}

#[test]
fn unreachable_zookeeper_exits_2_with_one_line() {
    let dir = run_dir("soak-zk");
    // A port nobody listens on: bind one, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let zk = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let out = soak(&["--zk", &zk, "--run-dir", dir.path().to_str().expect("utf-8 path")]);
    let e = assert_one_line_exit_2(&out, "unreachable --zk");
    assert!(e.contains("cannot reach ZooKeeper") && e.contains(&zk), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:.0?}",
        started.elapsed()
    );
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn interrupted_soak_stops_everything_and_prints_the_summary() {
    let dir = run_dir("soak-int");
    let d = dir.path().to_str().expect("utf-8 path").to_string();
    let log = dir.path().join("soak.out");
    let child = Command::new(WALSHIP)
        .args(["--cycles", "50", "--seed", "3", "--run-dir", &d])
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn walship soak");
    let pid = child.id();
    // Wait (polling, with a deadline) for the first completed cycle.
    let end = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("cycle   1/50")
    {
        assert!(
            Instant::now() < end,
            "no cycle within 120 s:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = processes_mentioning(&d);
    assert!(
        started.len() >= 3,
        "expected ZooKeeper and two nodes under {d}: {started:?}"
    );
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait");
    let stdout = std::fs::read_to_string(&log).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("walship soak: INTERRUPTED"), "{stdout}");
    assert!(stdout.contains("writes        attempted"), "{stdout}");
    let left = processes_mentioning(&d);
    assert!(left.is_empty(), "processes left running after the interrupt: {left:?}");
    // Everything the history holds so far parses.
    walship::history::History::load(&dir.path().join("history.jsonl")).expect("history parses");
}
