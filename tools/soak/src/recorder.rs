//! Writing the soak's history: every operation's invocation and completion,
//! with its result, one JSON line each in the format of [`walship::history`]
//! (the same file `walship wal verify --history` reads). Lines are written
//! as operations complete, by one task, so the file is complete up to the
//! last finished operation even if the soak is interrupted; the records are
//! also kept in memory for the checks at the end.
//!
//! One addition to that format: a cas answered by the node records, in
//! `read`, the value the node reported after it (`current`). Readers that
//! only look at `read` for gets are unaffected; the linearizability check
//! uses it.

use std::io::BufWriter;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use tokio::sync::mpsc;

pub use walship::history::OpKind;
pub use walship::history::OpRecord;
pub use walship::history::Outcome;

/// The monotonic clock every record's `invoke_ns` / `complete_ns` is on.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }

    pub fn at_ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.0).as_nanos() as u64
    }
}

/// Where clients send their records.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<OpRecord>,
}

impl Recorder {
    pub fn record(&self, op: OpRecord) {
        // The writer only goes away after every recorder; ignore a late send.
        let _ = self.tx.send(op);
    }
}

/// The writer task's handle.
pub struct HistoryWriter {
    pub path: PathBuf,
    records: Arc<Mutex<Vec<OpRecord>>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl HistoryWriter {
    /// Creates (truncates) `path` and starts the writer task.
    pub fn create(path: &Path) -> Result<(HistoryWriter, Recorder)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let file = std::fs::File::create(path).with_context(|| format!("create history file {}", path.display()))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<OpRecord>();
        let records = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&records);
        let shown = path.display().to_string();
        let task = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut out = BufWriter::new(file);
            while let Some(op) = rx.blocking_recv() {
                writeln!(out, "{}", op.to_json_line()).with_context(|| format!("write {shown}"))?;
                kept.lock().expect("history lock").push(op);
                if rx.is_empty() {
                    out.flush().with_context(|| format!("write {shown}"))?;
                }
            }
            out.flush().with_context(|| format!("write {shown}"))?;
            Ok(())
        });
        Ok((
            HistoryWriter {
                path: path.to_path_buf(),
                records,
                task,
            },
            Recorder { tx },
        ))
    }

    /// Number of records written so far.
    pub fn len(&self) -> usize {
        self.records.lock().expect("history lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Vec<OpRecord> {
        self.records.lock().expect("history lock").clone()
    }

    /// Waits for every recorder to be dropped, flushes, returns all records.
    pub async fn finish(self) -> Result<Vec<OpRecord>> {
        self.task.await.context("history writer task")??;
        let records = std::mem::take(&mut *self.records.lock().expect("history lock"));
        Ok(records)
    }
}
