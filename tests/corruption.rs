//! S9 (witness-protocol.md): a WAL znode corrupted by hand is detected by its
//! CRC, reported with its path, and never applied by a node. Also the
//! `walship wal inspect` / `verify` contract: a healthy cluster's report
//! matches the leader, and an unreachable ZooKeeper is one line and exit 2.

mod common;

use std::process::Output;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use common::cluster::ClusterContext;
use common::Cluster;
use common::Deadline;
use walship::history::OpKind;
use walship::history::OpRecord;
use walship::history::Outcome;

const TIMEOUT: Duration = Duration::from_secs(30);
/// What the corrupted entry writes; no node may ever serve it (or a
/// variant with the flipped byte).
const MARKED_KEY: &str = "s9-marked";
const MARKED_VALUE: &str = "written-then-corrupted";

async fn walship(args: &[&str]) -> Result<Output> {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(args)
        .env_remove("WALSHIP_ZK")
        .env_remove("WALSHIP_CLUSTER")
        .output()
        .await
        .context("run walship")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `put` records of acknowledged writes, one client, times from `base`.
fn acked_put(key: &str, value: &str, base: Instant, invoked: Instant) -> OpRecord {
    OpRecord {
        op: OpKind::Put,
        key: key.into(),
        value: Some(value.into()),
        expect: None,
        result: Outcome::Ok,
        cas_ok: None,
        read: None,
        client: 1,
        invoke_ns: invoked.duration_since(base).as_nanos() as u64,
        complete_ns: base.elapsed().as_nanos() as u64,
    }
}

/// Flips one byte of the marked value inside W's last WAL segment (with a
/// plain ZooKeeper client, as one would with zkCli), so that record's crc32
/// no longer matches. Returns the segment's path.
async fn corrupt_last_segment(c: &Cluster) -> Result<String> {
    let zk = zookeeper_client::Client::connect(&c.zk.addr()).await?;
    let wal = format!("/walship/{}/wal", c.name);
    let mut segments = zk.list_children(&wal).await?;
    segments.sort();
    let path = format!("{wal}/{}", segments.last().context("W has no WAL segment")?);
    let (mut bytes, _) = zk.get_data(&path).await?;
    let at = bytes
        .windows(MARKED_VALUE.len())
        .position(|w| w == MARKED_VALUE.as_bytes())
        .with_context(|| format!("the last segment {path} does not hold the last write"))?;
    bytes[at] ^= 0x01;
    zk.set_data(&path, &bytes, None).await?;
    Ok(path)
}

/// Polls node `id` for `period`: it must never lead or serve the marked key,
/// and with `never_ready` never answer ready. Fails at once if it does;
/// returns its exit status if it exits.
async fn never_applies_marked(
    c: &mut Cluster,
    id: u64,
    period: Duration,
    never_ready: bool,
) -> Result<Option<std::process::ExitStatus>> {
    let until = Instant::now() + period;
    while Instant::now() < until {
        if let Some(status) = c.node_mut(id).exited() {
            return Ok(Some(status));
        }
        let api = c.api(id).with_timeout(Duration::from_secs(1));
        if let Some(Some(v)) = api.get_stale(MARKED_KEY).await.success() {
            bail!("node {id} served {MARKED_KEY}={v:?} from the corrupt entry");
        }
        if never_ready && api.ready().await.is_success() {
            bail!("node {id} became ready over a corrupt W");
        }
        if let Some(s) = api.status().await.success() {
            if s.role == "leader" {
                bail!("node {id} leads over a corrupt W: {s:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(None)
}

/// S9: both nodes die, the last WAL segment gets one byte flipped, and node 2
/// comes back with an empty disk, alone. It must not apply the corrupt
/// entry: it exits (or stays unready) with an error naming the znode. The
/// inspector reports that znode with a bad CRC and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9_corrupt_wal_segment_is_reported_and_never_applied() -> Result<()> {
    let mut c = Cluster::start("s9").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let api = c.api(leader);
    for i in 0..10 {
        api.put(&format!("k{i}"), format!("v{i}")).await.into_result()?;
    }
    api.put(MARKED_KEY, MARKED_VALUE).await.into_result()?;
    c.node_mut(1).kill9().await?;
    c.node_mut(2).kill9().await?;

    let path = corrupt_last_segment(&c).await?;
    c.node_mut(2).wipe_data_dir()?;
    c.node_mut(2).restart()?;
    let refused = async {
        // It exits with the error, or keeps running unready and keeps
        // logging it. Either way its log names the znode.
        if let Some(status) = never_applies_marked(&mut c, 2, Duration::from_secs(20), true).await? {
            assert!(
                !status.success(),
                "node 2 exited successfully over a corrupt W: {status}"
            );
        }
        let log = c.node(2).log_tail(300);
        assert!(
            log.contains(&path) && log.contains("crc32") && log.contains("ERROR"),
            "node 2's log must name the corrupt znode {path} at ERROR:\n{log}"
        );
        Ok(())
    };
    refused.await.in_cluster(&c)?;

    let out = walship(&["wal", "inspect", "--zk", &c.zk.addr(), "--cluster", &c.name]).await?;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "inspect must exit 1:\n{stdout}{}",
        text(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.contains(&path))
        .with_context(|| format!("inspect does not list {path}:\n{stdout}"))?;
    assert!(row.contains("BAD") && row.contains("crc32"), "{row}");

    let out = walship(&["wal", "inspect", "--zk", &c.zk.addr(), "--cluster", &c.name, "--json"]).await?;
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bad: Vec<&str> = doc["segments"]
        .as_array()
        .context("segments")?
        .iter()
        .filter(|s| s["crc_ok"] == false)
        .filter_map(|s| s["path"].as_str())
        .collect();
    assert_eq!(bad, vec![path.as_str()]);
    assert_eq!(doc["ok"], false);

    // verify reads W the way a node does, so it stops at the same znode.
    let history = c.dir().join("history.jsonl");
    let now = Instant::now();
    std::fs::write(&history, acked_put("k0", "v0", now, now).to_json_line() + "\n")?;
    let history = history.display().to_string();
    let args = [
        "wal",
        "verify",
        "--zk",
        &c.zk.addr(),
        "--cluster",
        &c.name,
        "--history",
        &history,
    ];
    let out = walship(&args).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&path), "{}", text(&out.stderr));
    Ok(())
}

/// A healthy cluster (with a snapshot in W): exit 0, the JSON shows every
/// segment with a good CRC and W's last log id equal to the leader's; verify
/// passes a true history and catches a write that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_verify_a_healthy_cluster() -> Result<()> {
    let mut c = Cluster::start_with("inspect-ok", &["--snapshot-every-entries", "20"]).await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let api = c.api(leader);
    let base = Instant::now();
    let mut history = Vec::new();
    for i in 0..45 {
        let (key, value) = (format!("k{}", i % 12), format!("v{i}"));
        let invoked = Instant::now();
        api.put(&key, value.as_str()).await.into_result()?;
        history.push(acked_put(&key, &value, base, invoked));
    }
    let zk = c.zk.addr();
    let inspect = [
        "wal",
        "inspect",
        "--zk",
        zk.as_str(),
        "--cluster",
        c.name.as_str(),
        "--json",
    ];

    // The leader ships its snapshot to W in the background: wait for it.
    let deadline = Deadline::after(TIMEOUT, "W to hold a snapshot and the leader's last log id");
    let doc = loop {
        let status = api.status().await.into_result()?;
        let out = walship(&inspect).await?;
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("--json output does not parse: {}", text(&out.stdout)))?;
        assert_eq!(out.status.code(), Some(0), "{doc:#}");
        let w_last = doc["record"]["last_log_id"]["index"].as_u64();
        if w_last.is_some() && w_last == status.last_log_index && !doc["snapshot"].is_null() {
            break doc;
        }
        deadline.tick(&format!("leader {status:?}; W last {w_last:?}")).await?;
    };
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["snapshot"]["crc_ok"], true);
    let segments = doc["segments"].as_array().context("segments")?;
    assert!(!segments.is_empty());
    assert!(segments.iter().all(|s| s["crc_ok"] == true), "{doc:#}");
    let live_last = segments
        .iter()
        .filter(|s| s["garbage"].is_null())
        .filter_map(|s| s["last_index"].as_u64())
        .max();
    assert_eq!(live_last, doc["record"]["last_log_id"]["index"].as_u64(), "{doc:#}");

    let out = walship(&inspect[..inspect.len() - 1]).await?;
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(table.contains("verdict: OK") && table.contains("/wal/0000"), "{table}");

    let path = c.dir().join("history.jsonl");
    let lines: Vec<String> = history.iter().map(OpRecord::to_json_line).collect();
    std::fs::write(&path, lines.join("\n") + "\n")?;
    let path_arg = path.display().to_string();
    let verify = [
        "wal",
        "verify",
        "--zk",
        zk.as_str(),
        "--cluster",
        c.name.as_str(),
        "--history",
        &path_arg,
    ];
    let out = walship(&verify).await?;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    assert!(report.contains("keys checked: 12  ok: 12"), "{report}");

    let now = Instant::now();
    history.push(acked_put("k3", "never-written", base, now));
    let lines: Vec<String> = history.iter().map(OpRecord::to_json_line).collect();
    std::fs::write(&path, lines.join("\n") + "\n")?;
    let out = walship(&verify).await?;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("wrong: 1") && report.contains("\"k3\""), "{report}");

    let out = walship(&["wal", "inspect", "--zk", zk.as_str(), "--cluster", "no-such-cluster"]).await?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no cluster \"no-such-cluster\""), "{stderr}");
    Ok(())
}

/// Nothing listens on the port: one clear line on stderr, exit 2, quickly.
#[tokio::test]
async fn inspect_unreachable_zookeeper_is_one_line_and_exit_2() -> Result<()> {
    let addr = format!("127.0.0.1:{}", common::free_port()?);
    let started = Instant::now();
    let out = walship(&["wal", "inspect", "--zk", &addr, "--cluster", "x"]).await?;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("walship wal inspect: cannot reach ZooKeeper at {addr}: ")),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    let out = walship(&["wal", "inspect", "--zk", &addr]).await?;
    assert_eq!(out.status.code(), Some(2), "a missing --cluster is bad usage");
    Ok(())
}

/// S9 on the failover path: the follower, frozen while the leader wrote the
/// marked entry to W alone, finds that entry corrupt when the leader dies.
/// It must keep refusing to adopt (never lead, never serve it), logging the
/// path at ERROR, but not on every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9_follower_never_adopts_a_corrupt_segment() -> Result<()> {
    let mut c = Cluster::start("s9-failover").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let api = c.api(leader);
    let mut last = 0;
    for i in 0..5 {
        last = api.put(&format!("k{i}"), format!("v{i}")).await.into_result()?;
    }
    c.wait_applied(last, TIMEOUT).await.in_cluster(&c)?;
    c.node_mut(follower).sigstop()?;
    // W and the leader are a quorum: acknowledged without the follower.
    api.put(MARKED_KEY, MARKED_VALUE).await.into_result()?;
    c.node_mut(leader).kill9().await?;
    let path = corrupt_last_segment(&c).await?;
    c.node_mut(follower).sigcont()?;

    // Right after SIGCONT it still names the dead leader and answers ready
    // until it notices; what matters is that it never leads nor serves the entry.
    let watched = Duration::from_secs(12);
    let exited = never_applies_marked(&mut c, follower, watched, false)
        .await
        .in_cluster(&c)?;
    assert!(exited.is_none(), "the follower exited: {exited:?}");
    let log = c.node(follower).log_tail(2000);
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(&path) && l.contains("crc32"))
        .collect();
    assert!(!errors.is_empty(), "no ERROR naming {path}:\n{log}");
    // One per 5 s at most (plus the first), though it retries every election timeout.
    assert!(
        errors.len() <= 4,
        "{} ERROR lines in {watched:?}:\n{}",
        errors.len(),
        errors.join("\n")
    );
    Ok(())
}
