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
    let zk = zookeeper_client::Client::connect(&c.zk().addr()).await?;
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
        let api = c.client(id).with_timeout(Duration::from_secs(1));
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
    let api = c.client(leader);
    for i in 0..10 {
        api.put(&format!("k{i}"), format!("v{i}")).await.into_result()?;
    }
    api.put(MARKED_KEY, MARKED_VALUE).await.into_result()?;
    c.node_mut(1).kill9().await?;
    c.node_mut(2).kill9().await?;

    let path = corrupt_last_segment(&c).await?;
    c.node_mut(2).wipe_data_dir()?;
    c.node_mut(2).start()?;
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

    let out = walship(&["wal", "inspect", "--zk", &c.zk().addr(), "--cluster", &c.name]).await?;
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

    let out = walship(&["wal", "inspect", "--zk", &c.zk().addr(), "--cluster", &c.name, "--json"]).await?;
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
        &c.zk().addr(),
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
    let api = c.client(leader);
    let base = Instant::now();
    let mut history = Vec::new();
    for i in 0..45 {
        let (key, value) = (format!("k{}", i % 12), format!("v{i}"));
        let invoked = Instant::now();
        api.put(&key, value.as_str()).await.into_result()?;
        history.push(acked_put(&key, &value, base, invoked));
    }
    let zk = c.zk().addr();
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
    let api = c.client(leader);
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

/// Local state is a cache of W (brainstorm.md, "Local state is a cache of W:
/// torn tails and rebuilds"): a power loss that tears the unsynced tail of
/// a node's log does not stop it from starting, and loses nothing
/// acknowledged.
mod local_state {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::path::PathBuf;

    use anyhow::bail;
    use anyhow::Context;
    use anyhow::Result;

    use super::common::cluster::ClusterContext;
    use super::common::cluster::LIVE_TIMEOUT;
    use super::common::Cluster;
    use super::common::Deadline;
    use super::common::NodeClient;
    use super::TIMEOUT;

    /// Puts `prefix<i>` = `v<i>` for `range` through whichever node leads,
    /// retrying a refused write (no leader for a moment); records each
    /// acknowledged one. Returns the last index.
    async fn put_all(
        c: &mut Cluster,
        prefix: &str,
        range: std::ops::Range<u32>,
        acked: &mut BTreeMap<String, String>,
    ) -> Result<u64> {
        let mut last = 0;
        for i in range {
            let (key, value) = (format!("{prefix}{i}"), format!("v{i}"));
            let deadline = Deadline::after(TIMEOUT, format!("an acknowledged write of {key}"));
            loop {
                let leader = c.wait_for_leader(TIMEOUT).await?;
                let reply = c.client(leader).put(&key, value.as_str()).await;
                match reply {
                    super::common::Reply::Success { value: index, .. } => {
                        last = index;
                        break;
                    }
                    other if other.outcome_unknown() => bail!("write of {key} has an unknown outcome: {other}"),
                    other => deadline.tick(&other).await?,
                }
            }
            acked.insert(key, value);
        }
        Ok(last)
    }

    /// Every acknowledged write reads back from `api`: first its local
    /// state (`?stale=true`, polled until it has caught up), then
    /// linearizably.
    async fn reads_back(api: &NodeClient, acked: &BTreeMap<String, String>) -> Result<()> {
        let deadline = Deadline::after(TIMEOUT, "the node's local state to hold every acknowledged write");
        loop {
            let mut wrong = None;
            for (k, v) in acked {
                let got = api.get_stale(k).await;
                if got.clone().success() != Some(Some(v.clone())) {
                    wrong = Some(format!("{k}: {got}, want {v:?}"));
                    break;
                }
            }
            match wrong {
                None => break,
                Some(w) => deadline.tick(&w).await?,
            }
        }
        for (k, v) in acked {
            let got = api
                .get(k)
                .await
                .into_result()
                .with_context(|| format!("linearizable read of {k}"))?;
            assert_eq!(got.as_deref(), Some(v.as_str()), "linearizable read of {k}");
        }
        Ok(())
    }

    /// Restarts node 1 with `WALSHIP_FAULT_DIR=<dir>/faults1` (so its store
    /// traces what it synced) and waits until a leader serves again.
    async fn with_fault_hooks(c: &mut Cluster) -> Result<PathBuf> {
        let faults = c.dir().join("faults1");
        std::fs::create_dir_all(&faults)?;
        c.node_mut(1).sigterm().await?;
        let dir = faults.to_string_lossy().into_owned();
        c.node_mut(1).set_env(&[("WALSHIP_FAULT_DIR", dir.as_str())]);
        c.node_mut(1).start()?;
        c.node_mut(1).wait_live(LIVE_TIMEOUT).await?;
        c.wait_for_leader(TIMEOUT).await?;
        Ok(faults)
    }

    async fn wait_for_file(path: &Path) -> Result<()> {
        let deadline = Deadline::after(TIMEOUT, format!("{} to exist", path.display()));
        while !path.exists() {
            deadline.tick(&"absent").await?;
        }
        Ok(())
    }

    /// Power loss with `log_sync = background`: node 1's disk cache stops
    /// flushing (`nosync`), more writes are acknowledged, node 1 is killed
    /// and its unsynced tail torn (`power_loss(.., torn = true)`). It must
    /// start (cutting the torn record, with a WARN naming the file, and
    /// counting it), serve, and read back every acknowledged write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn torn_record_in_the_unsynced_tail_after_a_power_loss() -> Result<()> {
        let mut c = Cluster::start("torn-tail").await?;
        let test = async {
            let faults = with_fault_hooks(&mut c).await?;
            let mut acked = BTreeMap::new();
            put_all(&mut c, "synced", 0..20, &mut acked).await?;
            wait_for_file(&faults.join("synced")).await?;

            std::fs::write(faults.join("nosync"), b"")?;
            let last = put_all(&mut c, "unsynced", 0..40, &mut acked).await?;
            // Node 1's log holds every entry (written, not synced).
            c.wait_applied(last, TIMEOUT).await?;
            c.node_mut(1).kill9().await?;
            std::fs::remove_file(faults.join("nosync"))?;

            let data_dir = c.node(1).data_dir().to_path_buf();
            let report = walship::storage::fault::power_loss(&data_dir, &faults, true)?;
            eprintln!("power loss on node 1: {report:?}");
            let (torn_file, torn_at) = report.torn.clone().context("a torn record was left")?;
            assert!(report.records_dropped >= 40, "the unsynced writes are gone: {report:?}");

            // Writes go on while node 1 is down.
            put_all(&mut c, "while-down", 0..10, &mut acked).await?;

            c.node_mut(1).start()?;
            c.node_mut(1).wait_live(LIVE_TIMEOUT).await?;
            let log = c.node(1).log_tail(2000);
            let warned = log.lines().any(|l| {
                l.contains("WARN")
                    && l.contains("cutting the torn tail")
                    && l.contains(&torn_file.display().to_string())
                    && l.contains(&format!("byte offset {torn_at}"))
            });
            assert!(warned, "no WARN naming {} at {torn_at}:\n{log}", torn_file.display());

            // It serves: a write through it, then every acknowledged write.
            put_all(&mut c, "after", 0..5, &mut acked).await?;
            let api = c.client(1);
            let deadline = Deadline::after(TIMEOUT, "a write through node 1");
            loop {
                match api.put("through-node-1", "yes").await {
                    super::common::Reply::Success { .. } => break,
                    other if other.outcome_unknown() => bail!("write through node 1: {other}"),
                    other => deadline.tick(&other).await?,
                }
            }
            acked.insert("through-node-1".into(), "yes".into());
            reads_back(&api, &acked).await?;

            let metrics = api
                .raw(walship::client::Method::GET, "/metrics", None)
                .await
                .into_result()?
                .1;
            let metrics = String::from_utf8_lossy(&metrics).into_owned();
            assert!(
                metrics.lines().any(|l| l == "walship_local_log_tail_repairs_total 1"),
                "the repair is counted:\n{metrics}"
            );
            Ok(())
        };
        test.await.in_cluster(&c)
    }

    /// Splits node 1's log segment at record `k` into two files, as if the
    /// log had rolled there, and flips a byte in the payload of a record of
    /// the first one. Returns the damaged (now not last) segment.
    fn damage_a_segment_that_is_not_the_last(data_dir: &Path) -> Result<PathBuf> {
        let log_dir = data_dir.join("raft/log");
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&log_dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        segments.sort();
        let last = segments.pop().context("node 1 has no log segment")?;
        let first_index: u64 = last
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{} is not <index>.log", last.display()))?;
        let bytes = std::fs::read(&last)?;
        let mut offsets = Vec::new();
        let mut pos = 0;
        while pos + 8 <= bytes.len() {
            offsets.push(pos);
            pos += 8 + u32::from_le_bytes(bytes[pos..pos + 4].try_into()?) as usize;
        }
        assert!(offsets.len() >= 10, "only {} records", offsets.len());
        let k = offsets.len() / 2;
        let (head, tail) = bytes.split_at(offsets[k]);
        let mut head = head.to_vec();
        head[offsets[k / 2] + 8 + 3] ^= 0x40;
        std::fs::write(log_dir.join(format!("{:020}.log", first_index + k as u64)), tail)?;
        std::fs::write(&last, head)?;
        Ok(last)
    }

    /// A damaged segment that is not the last one is no torn tail: the node
    /// refuses to start, naming the file and the flag. Started once with
    /// --rebuild-from-witness it moves its local state aside, rebuilds from
    /// ZooKeeper, and serves every acknowledged write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_earlier_segment_is_refused_then_rebuilt_with_the_flag() -> Result<()> {
        let mut c = Cluster::start("rebuild").await?;
        let test = async {
            let mut acked = BTreeMap::new();
            let last = put_all(&mut c, "k", 0..30, &mut acked).await?;
            c.wait_applied(last, TIMEOUT).await?;
            c.node_mut(1).kill9().await?;
            let data_dir = c.node(1).data_dir().to_path_buf();
            let damaged = damage_a_segment_that_is_not_the_last(&data_dir)?;
            put_all(&mut c, "while-down", 0..10, &mut acked).await?;

            c.node_mut(1).start()?;
            let deadline = Deadline::after(TIMEOUT, "node 1 to refuse to start");
            let status = loop {
                if let Some(s) = c.node_mut(1).exited() {
                    break s;
                }
                deadline.tick(&"still running").await?;
            };
            assert!(!status.success(), "{status}");
            let log = c.node(1).log_tail(50);
            let line = log
                .lines()
                .find(|l| l.starts_with("walship node: "))
                .with_context(|| format!("no one-line error:\n{log}"))?;
            assert!(
                line.contains(&damaged.display().to_string())
                    && line.contains("crc32 mismatch")
                    && line.contains("start this node once with --rebuild-from-witness"),
                "{line}"
            );

            c.node_mut(1).set_extra_args(&["--rebuild-from-witness"]);
            c.node_mut(1).start()?;
            c.node_mut(1).wait_live(LIVE_TIMEOUT).await?;
            let discarded: Vec<PathBuf> = std::fs::read_dir(&data_dir)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("discarded-"))
                })
                .collect();
            assert_eq!(discarded.len(), 1, "{discarded:?}");
            let kept = discarded[0].join("raft/log").join(damaged.file_name().context("name")?);
            assert!(kept.exists(), "{} moved aside, not deleted", kept.display());
            let log = c.node(1).log_tail(2000);
            assert!(
                log.lines()
                    .any(|l| l.contains("WARN") && l.contains("--rebuild-from-witness") && l.contains("moved")),
                "no WARN about the rebuild:\n{log}"
            );

            put_all(&mut c, "after", 0..5, &mut acked).await?;
            reads_back(&c.client(1), &acked).await?;
            Ok(())
        };
        test.await.in_cluster(&c)
    }
}
