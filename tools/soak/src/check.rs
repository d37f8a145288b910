//! The verdict's two checks.
//!
//! 1. Durability: every acknowledged write is present with its last
//!    acknowledged value (or that of a later write of unknown outcome), as
//!    [`History::allowed_finals`] defines it, read three ways: a
//!    linearizable GET through each node, a local (`?stale=true`) GET on each
//!    node once both have caught up, and ZooKeeper alone (`walship wal verify
//!    --history`, which rebuilds the map from W's snapshot and WAL). The keys
//!    read are the workload's and those the soak wrote itself (probes, the
//!    keys of the faults that write their own). Once both nodes applied the
//!    same index, they must also hold the same number of keys (their whole
//!    state, not only the keys the soak knows of).
//! 2. Linearizability: each key's history of puts, deletes, CAS and
//!    linearizable reads (the final reads included) is checked by
//!    [`super::lincheck`].
//!
//! And, with a ZooKeeper ensemble: no write invoked and completed while
//! ZooKeeper had no quorum was acknowledged (`writes_while_down`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use anyhow::Result;

use super::lincheck;
use super::recorder::Clock;
use super::recorder::OpKind;
use super::recorder::OpRecord;
use super::recorder::Outcome;
use super::recorder::Recorder;
use walship::client::Reply;
use walship::history::AllowedFinal;
use walship::history::History;
use walship_testkit::Cluster;

const READ_DEADLINE: Duration = Duration::from_secs(60);

/// The key the final barrier write goes to (recorded like any write).
pub const BARRIER_KEY: &str = "soak-barrier";

/// After the workload stopped: one acknowledged write through the leader,
/// so every entry proposed before it is decided, then a linearizable read
/// of every key through each node, all recorded in the history as client
/// `final_client` (node 1) and `final_client + 1` (node 2). Returns the
/// value node `n` read for each key, and problems (reads that never
/// succeeded).
pub async fn final_reads(
    cluster: &mut Cluster,
    keys: &[String],
    final_client: u32,
    recorder: &Recorder,
    clock: Clock,
) -> Result<(Vec<BTreeMap<String, Option<String>>>, Vec<String>)> {
    let leader = cluster.wait_for_leader(READ_DEADLINE).await?;
    let end = Instant::now() + READ_DEADLINE;
    let mut problems = Vec::new();
    loop {
        let client = cluster.client(leader);
        let invoke_ns = clock.now_ns();
        let a = client.put(BARRIER_KEY, "barrier").await;
        let result = a.outcome();
        recorder.record(OpRecord {
            op: OpKind::Put,
            key: BARRIER_KEY.into(),
            value: Some("barrier".into()),
            expect: None,
            result,
            cas_ok: None,
            read: None,
            client: final_client,
            invoke_ns,
            complete_ns: clock.now_ns(),
        });
        if a.is_success() {
            break;
        }
        if Instant::now() >= end {
            problems.push(format!("the barrier write was never acknowledged: {a:?}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    for n in 0..2u32 {
        let client = cluster.client(n as u64 + 1);
        let mut read = BTreeMap::new();
        for key in keys {
            let key = key.clone();
            let end = Instant::now() + READ_DEADLINE;
            loop {
                let invoke_ns = clock.now_ns();
                let a = client.get(&key).await;
                let mut op = OpRecord {
                    op: OpKind::Get,
                    key: key.clone(),
                    value: None,
                    expect: None,
                    result: a.outcome(),
                    cas_ok: None,
                    read: None,
                    client: final_client + n,
                    invoke_ns,
                    complete_ns: clock.now_ns(),
                };
                if let Reply::Success { value: v, .. } = &a {
                    op.read = v.clone();
                    read.insert(key.clone(), v.clone());
                }
                recorder.record(op);
                if a.is_success() {
                    break;
                }
                if Instant::now() >= end {
                    problems.push(format!(
                        "node {}: linearizable read of {key} never succeeded: {a:?}",
                        n + 1
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        out.push(read);
    }
    Ok((out, problems))
}

/// Durability of one node's view: every key read against what the history
/// allows (a key never written must be absent).
pub fn against_allowed(
    what: &str,
    keys: &[String],
    values: &BTreeMap<String, Option<String>>,
    allowed: &BTreeMap<String, AllowedFinal>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for key in keys {
        let Some(v) = values.get(key) else { continue };
        let ok = match allowed.get(key) {
            Some(a) => a.allows(v.as_deref()),
            None => v.is_none(),
        };
        if !ok {
            let expected: Vec<String> = allowed
                .get(key)
                .map(|a| a.values.iter().map(|v| format!("{v:?}")).collect())
                .unwrap_or_else(|| vec!["None".into()]);
            bad.push(format!(
                "{what}: {key} holds {v:?}; the history allows only {}",
                expected.join(" or ")
            ));
        }
    }
    bad
}

/// After both nodes caught up: a local read of every key on node `n` must
/// equal what the linearizable reads returned.
pub async fn stale_reads(
    cluster: &Cluster,
    n: usize,
    keys: &[String],
) -> (BTreeMap<String, Option<String>>, Vec<String>) {
    let client = cluster.client(n as u64 + 1);
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    for key in keys {
        let key = key.clone();
        match client.get_stale(&key).await {
            Reply::Success { value: v, .. } => {
                values.insert(key, v);
            }
            other => problems.push(format!("node {}: local read of {key} failed: {other:?}", n + 1)),
        }
    }
    (values, problems)
}

/// Once nothing writes any more: polls until both nodes report the same
/// applied index, then compares how many keys each holds. Returns a
/// violation if they differ (one node lost or kept entries the other did
/// not: a diverged log), a problem if they never reached the same index.
pub async fn same_state(cluster: &Cluster) -> (Option<String>, Option<String>) {
    let end = Instant::now() + READ_DEADLINE;
    loop {
        let a = cluster.status_of(1).await.success();
        let b = cluster.status_of(2).await.success();
        if let (Some(a), Some(b)) = (&a, &b) {
            if a.applied_index.is_some() && a.applied_index == b.applied_index {
                let verdict = (a.keys != b.keys).then(|| {
                    format!(
                        "at applied index {}: node 1 holds {:?} keys, node 2 holds {:?}",
                        a.applied_index.unwrap_or(0),
                        a.keys,
                        b.keys
                    )
                });
                return (verdict, None);
            }
        }
        if Instant::now() >= end {
            return (
                None,
                Some(format!(
                    "the nodes never applied the same index within {READ_DEADLINE:?}: node 1 {:?}, node 2 {:?}",
                    a.and_then(|s| s.applied_index),
                    b.and_then(|s| s.applied_index)
                )),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `walship wal verify --history` against ZooKeeper alone: (passed, its output).
pub async fn zookeeper_alone(bin: &Path, zk: &str, cluster: &str, history: &Path) -> (Option<bool>, String) {
    let out = tokio::process::Command::new(bin)
        .args(["wal", "verify", "--zk", zk, "--cluster", cluster, "--history"])
        .arg(history)
        .env("RUST_LOG", "warn")
        .output()
        .await;
    match out {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let verdict = match o.status.code() {
                Some(0) => Some(true),
                Some(1) => Some(false),
                _ => None, // could not look
            };
            (verdict, text.trim_end().to_string())
        }
        Err(e) => (None, format!("cannot run {} wal verify: {e}", bin.display())),
    }
}

/// Linearizability, key by key: (key, verdict, operations checked).
pub fn linearizability(records: &[OpRecord]) -> Vec<(String, lincheck::Verdict, usize)> {
    let mut by_key: BTreeMap<&str, Vec<lincheck::Operation>> = BTreeMap::new();
    for r in records {
        if let Some(op) = to_operation(r) {
            by_key.entry(&r.key).or_default().push(op);
        }
    }
    by_key
        .into_iter()
        .map(|(key, ops)| {
            let v = lincheck::check(&ops, lincheck::DEFAULT_BUDGET);
            (key.to_string(), v, ops.len())
        })
        .collect()
}

/// A history record as the checker sees it; `None` for what says nothing
/// (failed operations, unanswered reads).
pub fn to_operation(r: &OpRecord) -> Option<lincheck::Operation> {
    use lincheck::Input;
    use lincheck::Output;
    let input = match r.op {
        OpKind::Put => Input::Put(r.value.clone()?),
        OpKind::Delete => Input::Delete,
        OpKind::Cas => Input::Cas {
            expect: r.expect.clone(),
            value: r.value.clone(),
        },
        OpKind::Get => Input::Get,
    };
    let (output, complete) = match (r.result, r.op) {
        (Outcome::Fail, _) | (Outcome::Unknown, OpKind::Get) => return None,
        (Outcome::Unknown, _) => (Output::Unknown, None),
        (Outcome::Ok, OpKind::Get) => (Output::Read(r.read.clone()), Some(r.complete_ns)),
        (Outcome::Ok, OpKind::Cas) => (
            Output::Cas {
                ok: r.cas_ok.unwrap_or(false),
                // The soak records the node's "current" in `read`.
                current: Some(r.read.clone()),
            },
            Some(r.complete_ns),
        ),
        (Outcome::Ok, _) => (Output::Written, Some(r.complete_ns)),
    };
    Some(lincheck::Operation {
        client: r.client,
        input,
        output,
        invoke: r.invoke_ns,
        complete,
    })
}

/// `History::allowed_finals` over records in memory.
pub fn allowed_finals(records: &[OpRecord]) -> BTreeMap<String, AllowedFinal> {
    History { ops: records.to_vec() }.allowed_finals()
}

/// What writes saw while ZooKeeper had no quorum.
#[derive(Clone, Debug, Default)]
pub struct QuorumLossTally {
    /// Windows without quorum, and their total length.
    pub windows: usize,
    pub down_ms: u64,
    /// Writes invoked and completed inside a window, by outcome.
    pub acked: u64,
    /// CAS answered "refused" (nothing written; a read in effect).
    pub cas_refused: u64,
    pub failed: u64,
    pub unknown: u64,
}

/// Writes invoked and completed inside one of `windows` (history-clock
/// nanoseconds; ZooKeeper had no quorum, so W could take no entry): one
/// acknowledged (a put, a delete, a CAS that swapped) is a violation.
pub fn writes_while_down(records: &[OpRecord], windows: &[(u64, u64)]) -> (QuorumLossTally, Vec<String>) {
    let mut t = QuorumLossTally {
        windows: windows.len(),
        down_ms: windows.iter().map(|(a, b)| b.saturating_sub(*a) / 1_000_000).sum(),
        ..Default::default()
    };
    let mut violations = Vec::new();
    for r in records.iter().filter(|r| r.op != OpKind::Get) {
        let Some((from, until)) = windows
            .iter()
            .find(|(from, until)| r.invoke_ns >= *from && r.complete_ns <= *until)
        else {
            continue;
        };
        match (r.result, r.cas_ok) {
            (Outcome::Ok, Some(false)) => t.cas_refused += 1,
            (Outcome::Ok, _) => {
                t.acked += 1;
                violations.push(format!(
                    "{:?} {}={:?} by client {} acknowledged while ZooKeeper had no quorum (invoked {:.3} s, \
                     completed {:.3} s; quorum gone {:.3}..{:.3} s)",
                    r.op,
                    r.key,
                    r.value,
                    r.client,
                    r.invoke_ns as f64 / 1e9,
                    r.complete_ns as f64 / 1e9,
                    *from as f64 / 1e9,
                    *until as f64 / 1e9
                ));
            }
            (Outcome::Fail, _) => t.failed += 1,
            (Outcome::Unknown, _) => t.unknown += 1,
        }
    }
    (t, violations)
}
