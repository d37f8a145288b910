//! `walship wal verify`: rebuilds the key-value map from ZooKeeper alone (W's
//! snapshot, decoded by the storage module, plus W's WAL entries applied with
//! the state machine's own `apply_request`) and checks every key a history
//! wrote against the values the history allows
//! ([`History::allowed_finals`]).

use std::collections::BTreeMap;

use openraft::EntryPayload;

use super::Stop;
use super::EXIT_PROBLEM;
use crate::cli::WalVerifyArgs;
use crate::history::AllowedFinal;
use crate::history::History;
use crate::storage;
use crate::types::LogId;
use crate::witness::Witness;
use crate::witness::WitnessError;

/// Violations listed by name; the count covers the rest.
const VIOLATIONS_SHOWN: usize = 20;

/// The map W's snapshot and WAL add up to.
#[derive(Clone, Debug, Default)]
pub struct WitnessState {
    /// The key-value map.
    pub kv: storage::KvMap,
    /// The last entry W's snapshot covers, if it has one.
    pub snapshot_last: Option<LogId>,
    /// The last entry applied (the snapshot's, if the WAL adds none).
    pub applied: Option<LogId>,
    /// WAL entries applied over the snapshot.
    pub wal_entries: usize,
    /// W's last log id per its record; above `applied` only when W kept
    /// changing and just its committed prefix could be read.
    pub witness_last: Option<LogId>,
}

/// Reads W's snapshot and WAL, checking every CRC, and applies them as a
/// node would. Corruption is an error naming the znode.
pub async fn rebuild(witness: &Witness) -> Result<WitnessState, WitnessError> {
    // W's snapshot is streamed to a scratch file, chunk by chunk, and
    // decoded from there: memory does not grow with the snapshot.
    let scratch = std::env::temp_dir().join(format!(
        "walship-verify-{}-{}.blob",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let wlog = witness.read_log_to(0, &scratch).await;
    let mut state = WitnessState::default();
    // The map with the session table: a retried request is applied once.
    let mut content = storage::SmContent::default();
    let decoded = wlog.and_then(|wlog| {
        if let Some(sref) = &wlog.snapshot {
            let dir = witness.paths().snapshot_dir(&sref.meta.snapshot_id);
            content = storage::decode_snapshot_data_file(&scratch, &sref.meta, &dir)
                .map_err(|e| WitnessError::corrupt(&dir, format!("snapshot data: {e}")))?;
            state.snapshot_last = sref.meta.last_log_id;
            state.applied = sref.meta.last_log_id;
        }
        Ok(wlog)
    });
    let _ = std::fs::remove_file(&scratch);
    let wlog = decoded?;
    state.witness_last = wlog.record.last_log_id;
    for entry in wlog.entries {
        if let EntryPayload::Normal(batch) = entry.payload {
            for (position, req) in batch.ops.into_iter().enumerate() {
                // Without an application nothing fails to apply.
                let _ = content.apply(req, entry.log_id, position, None);
            }
        }
        state.applied = Some(entry.log_id);
        state.wal_entries += 1;
    }
    state.kv = content.kv;
    Ok(state)
}

/// A key whose value in ZooKeeper the history does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// What ZooKeeper holds (`None`: absent), lossily decoded for display.
    pub found: Option<String>,
    /// The values the history allows (`None`: absent).
    pub allowed: Vec<Option<String>>,
}

impl Violation {
    /// Absent although the history needs a value.
    pub fn is_missing(&self) -> bool {
        self.found.is_none()
    }
}

/// What [`check`] found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Keys the history wrote, each checked.
    pub keys_checked: usize,
    /// The keys that do not hold an allowed value.
    pub violations: Vec<Violation>,
}

/// Checks each key the history wrote against what `kv` holds.
pub fn check(kv: &storage::KvMap, allowed: &BTreeMap<String, AllowedFinal>) -> VerifyReport {
    let mut report = VerifyReport::default();
    for (key, allow) in allowed {
        report.keys_checked += 1;
        let found = kv.get(key);
        // A value that is not UTF-8 cannot equal any history value.
        let as_text = found.map(|v| std::str::from_utf8(v).ok());
        let ok = match as_text {
            None => allow.allows(None),
            Some(Some(text)) => allow.allows(Some(text)),
            Some(None) => false,
        };
        if !ok {
            report.violations.push(Violation {
                key: key.clone(),
                found: found.map(|v| String::from_utf8_lossy(v).into_owned()),
                allowed: allow.values.iter().cloned().collect(),
            });
        }
    }
    report
}

fn show(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "absent".to_string(),
    }
}

fn log_id_text(l: Option<LogId>) -> String {
    l.map(|l| format!("index {} (term {})", l.index, l.leader_id.term))
        .unwrap_or_else(|| "none".into())
}

/// `walship wal verify`: prints the verdict; exit 0 when every acknowledged write holds.
pub async fn run(args: &WalVerifyArgs) -> Result<u8, Stop> {
    let history = History::load(&args.history).map_err(|e| Stop::cannot_look(e.to_string()))?;
    let (session, witness) = super::connect(&args.target).await?;
    let state = rebuild(&witness).await;
    session.close().await;
    let state = state.map_err(|e| match e {
        e @ (WitnessError::Corrupt { .. } | WitnessError::Identity(_)) => Stop {
            code: EXIT_PROBLEM,
            message: format!("cannot rebuild the map from ZooKeeper: {e}"),
        },
        e => super::read_failure(&args.target, &witness, e),
    })?;

    let allowed = history.allowed_finals();
    let report = check(&state.kv, &allowed);
    let acked: usize = allowed.values().map(|a| a.acked_writes).sum();
    let unknown: usize = allowed.values().map(|a| a.unknown_writes).sum();
    println!("ZooKeeper {}, cluster {:?}", args.target.zk, args.target.cluster);
    println!(
        "W holds: snapshot up to {} + {} WAL entries = {} keys, up to {}",
        log_id_text(state.snapshot_last),
        state.wal_entries,
        state.kv.len(),
        log_id_text(state.applied)
    );
    if state.applied < state.witness_last {
        println!(
            "  (W kept changing; read its committed prefix, W's last log id is {})",
            log_id_text(state.witness_last)
        );
    }
    println!(
        "history {}: {} operations, {acked} acknowledged writes, {unknown} of unknown outcome, on {} keys",
        args.history.display(),
        history.ops.len(),
        allowed.len()
    );
    let missing = report.violations.iter().filter(|v| v.is_missing()).count();
    let wrong = report.violations.len() - missing;
    println!(
        "keys checked: {}  ok: {}  missing: {missing}  wrong: {wrong}",
        report.keys_checked,
        report.keys_checked - report.violations.len()
    );
    if !report.violations.is_empty() {
        println!(
            "violations (first {} of {}):",
            report.violations.len().min(VIOLATIONS_SHOWN),
            report.violations.len()
        );
        for v in report.violations.iter().take(VIOLATIONS_SHOWN) {
            let allowed: Vec<String> = v.allowed.iter().map(show).collect();
            println!(
                "  {:<7} {:?}: ZooKeeper holds {}, allowed: {}",
                if v.is_missing() { "missing" } else { "wrong" },
                v.key,
                v.found.as_ref().map_or("nothing".to_string(), |f| format!("{f:?}")),
                allowed.join(" or ")
            );
        }
        println!("verdict: FAILED");
        return Ok(EXIT_PROBLEM);
    }
    println!("verdict: OK");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpKind;
    use crate::history::OpRecord;
    use crate::history::Outcome;

    fn put(key: &str, value: &str, result: Outcome, t: u64) -> OpRecord {
        OpRecord {
            op: OpKind::Put,
            key: key.into(),
            value: Some(value.into()),
            expect: None,
            result,
            cas_ok: None,
            read: None,
            client: 1,
            invoke_ns: t,
            complete_ns: t + 1,
        }
    }

    #[test]
    fn missing_wrong_and_allowed_values_are_told_apart() {
        let h = History {
            ops: vec![
                put("a", "1", Outcome::Ok, 0),
                put("b", "1", Outcome::Ok, 0),
                put("c", "1", Outcome::Ok, 0),
                put("c", "2", Outcome::Unknown, 10),
                put("d", "1", Outcome::Ok, 0),
            ],
        };
        let kv: storage::KvMap = [("a", "1"), ("c", "2"), ("d", "9")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), axum::body::Bytes::copy_from_slice(v.as_bytes())))
            .collect();
        let report = check(&kv, &h.allowed_finals());
        assert_eq!(report.keys_checked, 4);
        let bad: Vec<(&str, bool)> = report
            .violations
            .iter()
            .map(|v| (v.key.as_str(), v.is_missing()))
            .collect();
        assert_eq!(bad, vec![("b", true), ("d", false)]);
    }
}
