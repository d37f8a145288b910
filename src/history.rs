//! The history of a workload: one JSON object per line (JSON Lines), one line
//! per completed operation, written by the soak's workload and read by the
//! checkers (`walship wal verify`, the linearizability check).
//!
//! ```text
//! {"op":"put","key":"k1","value":"v7","expect":null,"result":"ok","cas_ok":null,"read":null,
//!  "client":3,"invoke_ns":1200,"complete_ns":5400}
//! ```
//!
//! | field         | meaning |
//! |---------------|---------|
//! | `op`          | `"put"`, `"delete"`, `"cas"` or `"get"` |
//! | `key`         | the key |
//! | `value`       | put: the value written; cas: the new value (`null` = delete the key); else `null` |
//! | `expect`      | cas: the value expected (`null` = the key must be absent); else `null` |
//! | `result`      | `"ok"` answered; `"fail"` definitely not done (503, 4xx, refused before sending); `"unknown"` may or may not have happened (504, timeout, connection cut after sending) |
//! | `cas_ok`      | cas with result ok: whether it swapped; else `null` |
//! | `read`        | get with result ok: the value read (`null` = absent); cas with result ok: the value the node reported after it (its `current`; optional); else `null` |
//! | `client`      | the workload client (one operation at a time per client) |
//! | `invoke_ns`   | when the request was sent, ns on one monotonic clock shared by all clients |
//! | `complete_ns` | when the answer (or the give-up) came, same clock |
//!
//! Fields that are `null` may be left out. The history starts from an empty
//! store: a key no operation wrote is absent.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;
use serde::Serialize;

/// An operation's kind (`op`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Writes `value` to `key`.
    Put,
    /// Deletes `key`.
    Delete,
    /// Compare-and-set: `expect` to `value`.
    Cas,
    /// A linearizable read of `key`.
    Get,
}

/// What became of an operation (`result`), as the client saw it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered: the operation took effect (for a cas, see `cas_ok`).
    Ok,
    /// Definitely did not take effect.
    Fail,
    /// May or may not have taken effect, at any time after its invocation.
    Unknown,
}

/// One line of a history file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// The operation.
    pub op: OpKind,
    /// The key it is on.
    pub key: String,
    /// Put: the value written; cas: the new value (`None`: delete).
    #[serde(default)]
    pub value: Option<String>,
    /// Cas: the value expected (`None`: absent).
    #[serde(default)]
    pub expect: Option<String>,
    /// Done, not done, or unknown.
    pub result: Outcome,
    /// Cas answered: whether it swapped.
    #[serde(default)]
    pub cas_ok: Option<bool>,
    /// Get answered: the value read; cas answered: the value after it.
    #[serde(default)]
    pub read: Option<String>,
    /// The workload client that ran it.
    pub client: u32,
    /// When the request was sent, ns on the workload's monotonic clock.
    pub invoke_ns: u64,
    /// When its answer (or the give-up) came, ns on the same clock.
    pub complete_ns: u64,
}

impl OpRecord {
    /// The line for a history file (without the newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an OpRecord always serializes")
    }

    /// What this operation leaves the key holding if it took effect: `None`
    /// if it changes nothing (a get, a failed operation, a cas answered "not
    /// swapped"), `Some(None)` if it deletes the key, `Some(Some(v))` if it
    /// sets it to `v`.
    pub fn write_effect(&self) -> Option<Option<&str>> {
        if self.result == Outcome::Fail {
            return None;
        }
        match self.op {
            OpKind::Get => None,
            OpKind::Put => Some(self.value.as_deref()),
            OpKind::Delete => Some(None),
            OpKind::Cas if self.result == Outcome::Ok && self.cas_ok != Some(true) => None,
            OpKind::Cas => Some(self.value.as_deref()),
        }
    }

    /// Checks what one line must hold to mean something.
    fn validate(&self) -> Result<(), String> {
        if self.complete_ns < self.invoke_ns {
            return Err(format!(
                "complete_ns {} is before invoke_ns {}",
                self.complete_ns, self.invoke_ns
            ));
        }
        match self.op {
            OpKind::Put if self.value.is_none() => Err("a put needs a \"value\"".into()),
            OpKind::Cas if self.result == Outcome::Ok && self.cas_ok.is_none() => {
                Err("an answered cas needs \"cas_ok\": true or false".into())
            }
            OpKind::Get | OpKind::Delete if self.value.is_some() => {
                Err(format!("a {:?} carries no \"value\"", self.op).to_lowercase())
            }
            _ => Ok(()),
        }
    }
}

/// Why a history file could not be loaded.
#[derive(thiserror::Error, Debug)]
pub enum HistoryError {
    /// The file could not be read.
    #[error("cannot read history {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a valid record.
    #[error("history {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// A whole history, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The records, one per completed operation.
    pub ops: Vec<OpRecord>,
}

/// The values a key may hold at the end of a history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedFinal {
    /// `None` stands for "absent".
    pub values: BTreeSet<Option<String>>,
    /// Acknowledged writes of the key (a cas counts only if it swapped).
    pub acked_writes: usize,
    /// Writes of unknown outcome.
    pub unknown_writes: usize,
}

impl AllowedFinal {
    /// Whether `value` (`None`: absent) is one of them.
    pub fn allows(&self, value: Option<&str>) -> bool {
        self.values.contains(&value.map(str::to_string))
    }
}

impl History {
    /// Reads a history file; an error names the line (1-based) and why.
    /// Blank lines are skipped.
    pub fn load(path: &Path) -> Result<History, HistoryError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| HistoryError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut ops = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| HistoryError::Io {
                path: shown.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| HistoryError::Line {
                path: shown.clone(),
                line: i + 1,
                reason,
            };
            let op: OpRecord = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            op.validate().map_err(bad)?;
            ops.push(op);
        }
        Ok(History { ops })
    }

    /// For every key some operation wrote (or tried to), the values it may
    /// hold once the history is over:
    ///
    /// - the value of every acknowledged write that no other acknowledged
    ///   write of the key follows in real time (invoked after it completed):
    ///   one value with one writer per key, several when the last writes
    ///   overlapped and either may have been linearized last. An acknowledged
    ///   delete, or a cas to `null`, stands for "absent";
    /// - "absent" if no write of the key was acknowledged (the store starts empty);
    /// - the value of every write of unknown outcome: it has no completion, so
    ///   it may have taken effect at any time after its invocation, after the
    ///   last acknowledged write too. (An unknown cas is allowed whether or
    ///   not its expectation could have held; the linearizability check is
    ///   the strict one.)
    ///
    /// Failed operations, gets and cas answered "not swapped" write nothing.
    pub fn allowed_finals(&self) -> BTreeMap<String, AllowedFinal> {
        let mut acked: BTreeMap<&str, Vec<&OpRecord>> = BTreeMap::new();
        let mut out: BTreeMap<String, AllowedFinal> = BTreeMap::new();
        for op in &self.ops {
            let Some(effect) = op.write_effect() else {
                if op.op != OpKind::Get {
                    // Tried and failed: the key is still checked (it must
                    // hold what the other writes allow, or be absent).
                    out.entry(op.key.clone()).or_default();
                }
                continue;
            };
            let allowed = out.entry(op.key.clone()).or_default();
            match op.result {
                Outcome::Ok => {
                    allowed.acked_writes += 1;
                    acked.entry(op.key.as_str()).or_default().push(op);
                }
                Outcome::Unknown => {
                    allowed.unknown_writes += 1;
                    allowed.values.insert(effect.map(str::to_string));
                }
                Outcome::Fail => {}
            }
        }
        for (key, allowed) in out.iter_mut() {
            let Some(writes) = acked.get(key.as_str()) else {
                allowed.values.insert(None);
                continue;
            };
            // Latest invocation among acknowledged writes: a write that
            // completed before it is followed in real time, so not last.
            let last_invoke_ns = writes.iter().map(|w| w.invoke_ns).max().unwrap_or(0);
            for w in writes {
                if w.complete_ns >= last_invoke_ns {
                    if let Some(effect) = w.write_effect() {
                        allowed.values.insert(effect.map(str::to_string));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, key: &str, value: Option<&str>, result: Outcome, t: (u64, u64)) -> OpRecord {
        OpRecord {
            op: kind,
            key: key.into(),
            value: value.map(str::to_string),
            expect: None,
            result,
            cas_ok: (kind == OpKind::Cas && result == Outcome::Ok).then_some(true),
            read: None,
            client: 1,
            invoke_ns: t.0,
            complete_ns: t.1,
        }
    }

    fn allowed(h: &History, key: &str) -> Vec<Option<String>> {
        h.allowed_finals()[key].values.iter().cloned().collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn last_acknowledged_write_wins() {
        let h = History {
            ops: vec![
                op(OpKind::Put, "a", Some("1"), Outcome::Ok, (0, 10)),
                op(OpKind::Put, "a", Some("2"), Outcome::Ok, (20, 30)),
                op(OpKind::Put, "a", Some("3"), Outcome::Fail, (40, 50)),
                op(OpKind::Get, "b", None, Outcome::Ok, (40, 50)),
            ],
        };
        assert_eq!(allowed(&h, "a"), vec![s("2")]);
        assert!(!h.allowed_finals().contains_key("b"), "a key only read is not checked");
    }

    #[test]
    fn overlapping_last_writes_allow_either() {
        let h = History {
            ops: vec![
                op(OpKind::Put, "a", Some("1"), Outcome::Ok, (0, 30)),
                op(OpKind::Put, "a", Some("2"), Outcome::Ok, (10, 20)),
            ],
        };
        assert_eq!(allowed(&h, "a"), vec![s("1"), s("2")]);
    }

    #[test]
    fn acknowledged_delete_means_absent_and_unknown_writes_are_allowed() {
        let h = History {
            ops: vec![
                op(OpKind::Put, "a", Some("1"), Outcome::Unknown, (0, 5)),
                op(OpKind::Put, "a", Some("2"), Outcome::Ok, (10, 20)),
                op(OpKind::Delete, "a", None, Outcome::Ok, (30, 40)),
                op(OpKind::Put, "a", Some("3"), Outcome::Unknown, (50, 60)),
            ],
        };
        assert_eq!(allowed(&h, "a"), vec![None, s("1"), s("3")]);
    }

    #[test]
    fn cas_counts_only_when_it_swapped() {
        let mut lost = op(OpKind::Cas, "a", Some("x"), Outcome::Ok, (30, 40));
        lost.cas_ok = Some(false);
        let h = History {
            ops: vec![
                op(OpKind::Cas, "a", Some("1"), Outcome::Ok, (0, 10)),
                lost,
                op(OpKind::Cas, "b", None, Outcome::Ok, (0, 10)),
            ],
        };
        assert_eq!(allowed(&h, "a"), vec![s("1")]);
        assert_eq!(allowed(&h, "b"), vec![None], "a cas to null deletes");
    }

    #[test]
    fn a_key_with_only_failed_writes_must_be_absent() {
        let h = History {
            ops: vec![op(OpKind::Put, "a", Some("1"), Outcome::Fail, (0, 10))],
        };
        assert_eq!(allowed(&h, "a"), vec![None]);
    }

    #[test]
    fn load_round_trips_and_names_the_bad_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("h.jsonl");
        let ops = [
            op(OpKind::Put, "a", Some("1"), Outcome::Ok, (0, 10)),
            op(OpKind::Cas, "a", Some("2"), Outcome::Unknown, (11, 12)),
        ];
        let text: Vec<String> = ops.iter().map(|o| o.to_json_line()).collect();
        std::fs::write(&path, format!("{}\n\n{}\n", text[0], text[1])).expect("write");
        assert_eq!(History::load(&path).expect("loads").ops, ops.to_vec());

        let minimal = r#"{"op":"get","key":"a","result":"ok","read":"1","client":2,"invoke_ns":1,"complete_ns":2}"#;
        std::fs::write(&path, format!("{minimal}\n{{\"op\":\"put\",\"key\":\"a\"}}\n")).expect("write");
        let err = History::load(&path).expect_err("line 2 is incomplete").to_string();
        assert!(err.contains("line 2") && err.contains("missing field"), "{err}");

        let backwards = r#"{"op":"delete","key":"a","result":"ok","client":2,"invoke_ns":5,"complete_ns":2}"#;
        std::fs::write(&path, format!("{backwards}\n")).expect("write");
        let err = History::load(&path).expect_err("time runs backwards").to_string();
        assert!(err.contains("line 1") && err.contains("before invoke_ns"), "{err}");
    }
}
