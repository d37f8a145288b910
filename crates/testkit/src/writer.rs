//! A background writer that records the outcome of every write, so a test can
//! check at the end that no acknowledged write was lost.
//!
//! One task, one request at a time, round-robin over the given nodes. Each write
//! puts a unique value; keys are unique too unless `key_space` makes the writer
//! overwrite. Outcomes, by the API's contract (`walship::client::Reply`):
//! acknowledged (200), rejected (503, 4xx, or never sent: nothing was
//! written), unknown (504, other 5xx, sent without a response).
//!
//! What must hold at the end, per key, with the writes to it in order (they are
//! sequential, so this is the linearizable order): the value read is the value of
//! the last acknowledged write, or of an unknown-outcome write after it; with no
//! acknowledged write, absent or the value of an unknown-outcome write. A
//! rejected write's value must never be seen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::task::JoinHandle;

use walship::client::NodeClient;
use walship::client::Reply;

use crate::wait::Deadline;

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Key prefix; make it unique per writer.
    pub prefix: String,
    /// `None`: every write goes to a new key. `Some(n)`: keys `<prefix>-0..n`,
    /// overwritten in turn.
    pub key_space: Option<u64>,
    /// Per-request limit.
    pub request_timeout: Duration,
    /// Pause after a write that was not acknowledged (avoids a hot loop while
    /// there is no leader).
    pub backoff: Duration,
    /// Stop by itself after this many attempts (`None`: until `stop`).
    pub max_writes: Option<u64>,
    /// `Some(d)`: start a write at most every `d` (a light, steady load);
    /// `None`: as fast as the cluster answers.
    pub interval: Option<Duration>,
}

impl WriterOptions {
    pub fn new(prefix: &str) -> WriterOptions {
        WriterOptions {
            prefix: prefix.to_string(),
            key_space: None,
            request_timeout: Duration::from_secs(10),
            backoff: Duration::from_millis(20),
            max_writes: None,
            interval: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Acked { index: u64 },
    Rejected { status: u16 },
    Unknown,
}

/// One write attempt.
#[derive(Debug, Clone)]
pub struct Op {
    pub seq: u64,
    pub key: String,
    pub value: String,
    /// Index into the writer's node list.
    pub target: usize,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
    /// The reply, for messages.
    pub detail: String,
}

/// Live counters, readable while the writer runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    pub unknown: AtomicU64,
}

/// Everything a writer did, in order.
#[derive(Debug, Clone, Default)]
pub struct WriterLog {
    pub ops: Vec<Op>,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    handle: JoinHandle<WriterLog>,
}

impl Writer {
    /// Start writing through `targets` (round-robin) until `stop`.
    pub fn start(targets: Vec<NodeClient>, options: WriterOptions) -> Writer {
        assert!(!targets.is_empty(), "a writer needs at least one node");
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let handle = tokio::spawn(run(targets, options, stop.clone(), progress.clone()));
        Writer { stop, progress, handle }
    }

    pub fn acked(&self) -> u64 {
        self.progress.acked.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.progress.rejected.load(Ordering::Relaxed)
    }

    pub fn unknown(&self) -> u64 {
        self.progress.unknown.load(Ordering::Relaxed)
    }

    /// Wait until `more` writes beyond the current count have been acknowledged.
    pub async fn wait_for_more_acks(&self, more: u64, timeout: Duration) -> Result<()> {
        let target = self.acked() + more;
        let deadline = Deadline::after(timeout, format!("{more} more acknowledged writes"));
        loop {
            if self.acked() >= target {
                return Ok(());
            }
            if self.handle.is_finished() {
                bail!("the writer stopped before {target} acknowledged writes");
            }
            let last = format!(
                "acked {}, rejected {}, unknown {}",
                self.acked(),
                self.rejected(),
                self.unknown()
            );
            deadline.tick(&last).await?;
        }
    }

    /// Stop after the write in flight and return the log.
    pub async fn stop(self) -> Result<WriterLog> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.handle.await?)
    }
}

async fn run(
    targets: Vec<NodeClient>,
    options: WriterOptions,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> WriterLog {
    let targets: Vec<NodeClient> = targets
        .iter()
        .map(|a| a.with_timeout(options.request_timeout))
        .collect();
    let mut log = WriterLog::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) && options.max_writes.is_none_or(|max| seq < max) {
        let key = match options.key_space {
            None => format!("{}-{seq}", options.prefix),
            Some(n) => format!("{}-{}", options.prefix, seq % n.max(1)),
        };
        let value = format!("{}={seq}", key);
        let target = (seq % targets.len() as u64) as usize;
        let start = Instant::now();
        let reply = targets[target].put(&key, value.clone()).await;
        let end = Instant::now();
        let outcome = match &reply {
            Reply::Success { value: index, .. } => Outcome::Acked { index: *index },
            r if r.outcome_unknown() => Outcome::Unknown,
            r => Outcome::Rejected {
                status: r.status().unwrap_or(0),
            },
        };
        match outcome {
            Outcome::Acked { .. } => progress.acked.fetch_add(1, Ordering::Relaxed),
            Outcome::Rejected { .. } => progress.rejected.fetch_add(1, Ordering::Relaxed),
            Outcome::Unknown => progress.unknown.fetch_add(1, Ordering::Relaxed),
        };
        log.ops.push(Op {
            seq,
            key,
            value,
            target,
            start,
            end,
            outcome,
            detail: reply.to_string(),
        });
        seq += 1;
        if !matches!(outcome, Outcome::Acked { .. }) {
            tokio::time::sleep(options.backoff).await;
        }
        if let Some(interval) = options.interval {
            tokio::time::sleep(interval.saturating_sub(start.elapsed())).await;
        }
    }
    log
}

/// What may be read for one key at the end.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The last acknowledged value, if any.
    pub acked: Option<String>,
    /// Values of unknown-outcome writes after the last acknowledged one.
    pub maybe: Vec<String>,
    /// Values that must never be seen (rejected writes).
    pub never: Vec<String>,
}

impl Expected {
    pub fn allows(&self, read: Option<&str>) -> bool {
        match read {
            None => self.acked.is_none(),
            Some(v) => self.acked.as_deref() == Some(v) || self.maybe.iter().any(|m| m == v),
        }
    }
}

impl WriterLog {
    pub fn acked(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Acked { .. }))
            .count()
    }

    pub fn unknown(&self) -> usize {
        self.ops.iter().filter(|o| o.outcome == Outcome::Unknown).count()
    }

    pub fn rejected(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Rejected { .. }))
            .count()
    }

    /// Per key, what a final read may return.
    pub fn expected(&self) -> BTreeMap<String, Expected> {
        let mut out: BTreeMap<String, Expected> = BTreeMap::new();
        for op in &self.ops {
            let e = out.entry(op.key.clone()).or_default();
            match op.outcome {
                Outcome::Acked { .. } => {
                    e.acked = Some(op.value.clone());
                    e.maybe.clear();
                }
                Outcome::Unknown => e.maybe.push(op.value.clone()),
                Outcome::Rejected { .. } => e.never.push(op.value.clone()),
            }
        }
        out
    }

    /// Read every key written with `read` and check it against `expected()`;
    /// one error listing every violation (the first 20 in full).
    pub async fn verify_with<F, Fut>(&self, mut read: F) -> Result<()>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Reply<Option<String>>>,
    {
        let mut violations = Vec::new();
        let expected = self.expected();
        for (key, exp) in &expected {
            match read(key.clone()).await {
                Reply::Success { value, .. } if exp.allows(value.as_deref()) => {}
                Reply::Success { value, .. } => {
                    let why = if value.as_ref().is_some_and(|v| exp.never.contains(v)) {
                        "a rejected (503/4xx) write is visible"
                    } else if exp.acked.is_some() {
                        "acknowledged write lost or overwritten"
                    } else {
                        "value from nowhere"
                    };
                    violations.push(format!("{key}: read {value:?}, {why}; expected {exp:?}"));
                }
                other => violations.push(format!("{key}: read failed: {other}")),
            }
        }
        if violations.is_empty() {
            return Ok(());
        }
        let n = violations.len();
        violations.truncate(20);
        bail!(
            "{n} of {} keys violate the writer's log (acked {}, unknown {}, rejected {}):\n{}",
            expected.len(),
            self.acked(),
            self.unknown(),
            self.rejected(),
            violations.join("\n")
        )
    }

    /// Linearizable reads through `api`.
    pub async fn verify(&self, api: &NodeClient) -> Result<()> {
        self.verify_with(|key| {
            let api = api.clone();
            async move { api.get(&key).await }
        })
        .await
    }

    /// Local (`?stale=true`) reads on `api`'s node; call after it caught up.
    pub async fn verify_stale(&self, api: &NodeClient) -> Result<()> {
        self.verify_with(|key| {
            let api = api.clone();
            async move { api.get_stale(&key).await }
        })
        .await
    }
}
