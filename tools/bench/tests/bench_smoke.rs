//! `walship bench --smoke` (one throughput point of ~2 s against walship and
//! ZooKeeper-direct, a short footprint run, 2 kill -9 and 2 SIGTERM
//! failovers and one blackhole failover, a 1000-key rebirth; etcd left out)
//! must complete and write the JSON report with every expected field, and
//! the SVG plots; so must its throughput point against a 3-server ZooKeeper
//! ensemble (a test of its own, so that cargo runs the two side by side:
//! 28 s in debug, against 45 s as one run). Bad flags are
//! one line on stderr and exit 2. Needs Java and ZooKeeper, like the other
//! integration tests (`zk/zk.sh install`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The tool under test; it starts nodes from the `walship` binary cargo
/// built beside it (the workspace test command builds both).
const WALSHIP: &str = env!("CARGO_BIN_EXE_walship-bench");

fn run_dir() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("walship-bench-");
    match std::env::var_os("WALSHIP_TEST_DIR").map(std::path::PathBuf::from) {
        Some(dir) => {
            std::fs::create_dir_all(&dir).expect("WALSHIP_TEST_DIR");
            b.tempdir_in(dir)
        }
        None => b.tempdir(),
    }
    .expect("temp dir")
}

/// Runs `walship-bench --smoke --skip-etcd` with `args`, its report, plots
/// and run dir in `dir`; on failure keeps `dir` and panics with the output.
/// Returns `dir`, the JSON report and stdout.
fn run_smoke(dir: tempfile::TempDir, args: &[&str]) -> (tempfile::TempDir, Value, String) {
    let d = dir.path();
    let out = d.join("bench.json");
    let o = Command::new(WALSHIP)
        .args(["--smoke", "--skip-etcd"])
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--plots-dir")
        .arg(d.join("plots"))
        .arg("--run-dir")
        .arg(d.join("run"))
        .output()
        .expect("run walship bench");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() {
        let stderr = String::from_utf8_lossy(&o.stderr);
        let kept = dir.keep();
        panic!(
            "walship bench --smoke {args:?} failed ({}); run dir kept at {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            o.status,
            kept.display()
        );
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&out).expect("bench.json written")).expect("JSON");
    (dir, report, stdout)
}

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for part in path.split('.') {
        cur = match part.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[part],
        };
    }
    cur.as_f64().unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

#[test]
fn smoke_run_writes_the_report() {
    let (dir, report, stdout) = run_smoke(run_dir(), &[]);
    let d = dir.path();
    let plots = d.join("plots");
    assert!(report["incomplete"].is_null(), "{}", report["incomplete"]);
    assert!(num(&report, "machine.cores") >= 1.0);
    assert!(report["versions"]["walship_commit"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(report["versions"]["openraft"], "0.9.25");
    assert!(report["versions"]["zookeeper"]
        .as_str()
        .is_some_and(|s| s.starts_with('3')));
    assert!(report["settings"]["node"]["heartbeat_interval_ms"].is_string());
    assert_eq!(report["settings"]["zoo_cfg"]["forceSync"], "yes");

    let points = report["throughput"].as_array().expect("throughput");
    for (system, op) in [("walship", "write"), ("walship", "read"), ("zk-direct", "write")] {
        let p = points
            .iter()
            .find(|p| p["system"] == system && p["op"] == op)
            .unwrap_or_else(|| panic!("no {system} {op} point in {points:?}"));
        assert_eq!(p["value_bytes"], 100);
        assert!(num(p, "ops") > 0.0 && num(p, "ops_per_sec") > 0.0, "{p}");
        let (p50, p99, max) = (
            num(p, "latency.p50_ms"),
            num(p, "latency.p99_ms"),
            num(p, "latency.max_ms"),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{p}");
        assert_eq!(p["zk"], "single");
    }
    // Writes record how ZooKeeper's load grew with them (the witness's own
    // metrics may not exist in this build: null then).
    for system in ["walship", "zk-direct"] {
        let p = points
            .iter()
            .find(|p| p["system"] == system && p["op"] == "write")
            .expect("write point");
        assert!(num(p, "growth.zk_requests_per_sec") > 0.0, "{p}");
        assert!(num(p, "growth.window_s") > 0.0, "{p}");
    }
    assert!(points.iter().all(|p| p["system"] != "etcd"));
    assert!(report["ratios"].as_array().is_some_and(|r| !r.is_empty()));
    let failover = report["failover"].as_array().expect("failover");
    assert_eq!(failover.len(), 3);
    for (f, (kill, count)) in failover.iter().zip([("sigkill", 2), ("sigterm", 2), ("blackhole", 1)]) {
        assert_eq!(f["kill"], kill);
        assert_eq!(num(f, "count"), f64::from(count));
        assert_eq!(f["samples_ms"].as_array().map(Vec::len), Some(count as usize));
        assert_eq!(f["at_unix_ms"].as_array().map(Vec::len), Some(count as usize));
        assert!(num(f, "min_ms") > 0.0 && num(f, "min_ms") <= num(f, "max_ms"));
    }

    let rebirth = report["rebirth"].as_array().expect("rebirth");
    assert_eq!(rebirth.len(), 1);
    assert_eq!(num(&rebirth[0], "keys"), 1000.0);
    assert!(num(&rebirth[0], "ms") > 0.0);
    assert!(
        num(&rebirth[0], "w.total") > 100_000.0,
        "1000 keys of 100 B are in ZooKeeper"
    );
    assert!(num(&rebirth[0], "target_ms") >= 2000.0);

    let fp = &report["footprint"];
    let samples = fp["samples"].as_array().expect("footprint samples");
    assert!(samples.len() >= 2, "{fp}");
    assert!(samples.iter().all(|s| s["w"]["total"].as_u64().is_some_and(|b| b > 0)));
    assert!(num(fp, "writes") > 0.0);
    assert!(fp["bounded"].is_boolean());

    let targets = report["targets"].as_array().expect("targets");
    assert!(targets.iter().any(|t| t["name"] == "SIGTERM hand-over: p99"));
    for name in [
        "write-throughput",
        "read-throughput",
        "failover",
        "rebirth",
        "footprint",
    ] {
        let p = plots.join(format!("{name}.svg"));
        let svg = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(svg.starts_with("<svg"), "{}", p.display());
    }
    assert!(stdout.contains("targets (issue 4)"), "{stdout}");
    assert!(stdout.contains("growth with clients"), "{stdout}");
    // Everything it started is gone: no node or ZooKeeper of this run left.
    assert_no_process_mentions(&d.join("run"));
}

#[test]
fn smoke_run_against_an_ensemble() {
    let (dir, report, _) = run_smoke(run_dir(), &["--only", "throughput", "--zk-shapes", "ensemble"]);
    let d = dir.path();
    assert!(report["incomplete"].is_null(), "{}", report["incomplete"]);
    let points = report["throughput"].as_array().expect("throughput");
    assert!(points.iter().all(|p| p["zk"] == "ensemble"), "{points:?}");
    for system in ["walship", "zk-direct"] {
        let p = points
            .iter()
            .find(|p| p["system"] == system && p["op"] == "write")
            .unwrap_or_else(|| panic!("no {system} write against the ensemble in {points:?}"));
        assert!(
            num(p, "ops_per_sec") > 0.0 && num(p, "growth.zk_requests_per_sec") > 0.0,
            "{p}"
        );
    }
    let ratios = report["ratios"].as_array().expect("ratios");
    assert!(
        ratios
            .iter()
            .any(|r| r["zk"] == "ensemble" && r["baseline"] == "zk-direct"),
        "no ensemble ratio in {ratios:?}"
    );

    assert_no_process_mentions(&d.join("run"));
}

/// No live process has the run dir on its command line.
fn assert_no_process_mentions(run: &Path) {
    let needle = run.display().to_string();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        assert!(!cmd.contains(&needle), "still running: {cmd}");
    }
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    for args in [
        &["--kills", "0"][..],
        &["--bogus"],
        &["--only", "everything"],
        &["--value-sizes", "10M"],
        &["--duration", "3x"],
        &["--failover-kinds", "sigkill,unplug"],
        &["--zk-shapes", "triple"],
    ] {
        let o = Command::new(WALSHIP).args(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("walship bench: "), "{stderr}");
    }
}

/// `--only stages` in smoke mode: one client writes for ~2 s and the table
/// accounts for the write: every stage timed every write, and the stages on
/// the path add up to the handler's time, most of what the client waited.
#[test]
fn stages_table_accounts_for_the_write() {
    let (dir, report, stdout) = run_smoke(run_dir(), &["--only", "stages"]);
    let d = dir.path();
    let points = report["stages"].as_array().expect("stages");
    assert_eq!(points.len(), 1, "{points:?}");
    let p = &points[0];
    assert_eq!(num(p, "clients"), 1.0);
    let ops = num(p, "ops");
    assert!(ops > 0.0 && num(p, "errors") == 0.0, "{p}");
    let rows = p["stages"].as_array().expect("stage rows");
    for name in [
        "http_to_proposer",
        "batch_wait",
        "propose_to_append",
        "local_append",
        "append_to_w_send",
        "w_multi",
        "w_done_to_apply",
        "apply",
        "apply_to_reply",
        "reply_to_http",
        "local_flush",
        "peer_append",
        "w_pipelined",
    ] {
        let r = rows
            .iter()
            .find(|r| r["stage"] == name)
            .unwrap_or_else(|| panic!("no stage {name}: {p}"));
        assert!(num(r, "count") > 0.0, "{name} timed nothing: {p}");
        if r["serial"] == true {
            // Every write answered in the window, warm-up excluded; the
            // scrapes also see the writes that straddle the window's ends.
            assert!(num(r, "count") >= ops, "{name}: {} of {ops} writes", num(r, "count"));
        }
    }
    assert_eq!(num(p, "incomplete"), 0.0, "writes without stages: {p}");
    // The path's stages add up to most of the client's wait; the rest is
    // the client, the loopback and hyper, outside the handler.
    let (sum, e2e) = (num(p, "serial_sum_mean_us"), num(p, "latency.mean_ms") * 1000.0);
    assert!(
        sum <= e2e && sum >= 0.6 * e2e,
        "stages add up to {sum:.0} µs of a {e2e:.0} µs write\n{stdout}"
    );
    assert!(stdout.contains("= handler total"), "{stdout}");
    assert_no_process_mentions(&d.join("run"));
}

/// `--only zk-floor` in smoke mode: every shape was measured one operation
/// at a time, without errors, with ordered quantiles and ZooKeeper's CPU.
#[test]
fn zk_floor_measures_every_shape() {
    let (dir, report, stdout) = run_smoke(run_dir(), &["--only", "zk-floor"]);
    let points = report["zk_floor"].as_array().expect("zk_floor");
    let shapes: Vec<(String, f64)> = points
        .iter()
        .map(|p| (p["shape"].as_str().unwrap_or("?").to_string(), num(p, "bytes")))
        .collect();
    let expected: Vec<(String, f64)> = [
        ("set_data", 100.0),
        ("multi", 200.0),
        ("multi", 16384.0),
        ("multi", 65536.0),
        ("multi", 245760.0),
    ]
    .iter()
    .map(|(s, b)| (s.to_string(), *b))
    .collect();
    assert_eq!(shapes, expected);
    for p in points {
        assert!(num(p, "ops") > 0.0 && num(p, "errors") == 0.0, "{p}");
        let q: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"]
            .iter()
            .map(|k| num(p, k))
            .collect();
        assert!(q[0] > 0.0 && q.windows(2).all(|w| w[0] <= w[1]), "{p}");
        assert!(num(p, "zookeeper_cpu_us_per_op") > 0.0, "{p}");
    }
    assert!(stdout.contains("ZooKeeper alone, one operation at a time"), "{stdout}");
    assert_no_process_mentions(&dir.path().join("run"));
}
