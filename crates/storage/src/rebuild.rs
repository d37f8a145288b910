//! Opening a node's local state at start-up, and `--rebuild-from-witness`:
//! a node whose log, state file or snapshot cannot be read moves them aside
//! and starts empty, then adopts W's log like any reborn node
//! (witness-protocol.md, "A reborn node"; brainstorm.md, "Local state is a
//! cache of W").

use std::fs;
use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use super::error::Result;
use super::error::StoreError;
use super::fault::Faults;
use super::frame;
use super::LogStore;
use super::LogSync;
use super::StateMachine;
use super::StorageMetrics;
use super::SEGMENT_MAX_BYTES_DEFAULT;
use crate::Application;

/// Opens the log store and the state machine under `data_dir` (whose
/// `node.meta` the caller has checked). If either is corrupt
/// (`StoreError::Corrupt`: a bad record outside the last segment's tail, an
/// undecodable state file or snapshot), the error names the file and says
/// how to rebuild; with `rebuild`, `raft/` and `snapshot/` (all but
/// `node.meta` and the lock) are moved into `<data_dir>/discarded-<unix_ms>/`
/// instead, logged at WARN, and both are opened empty: the caller's
/// adoption then rebuilds the node from W. Nothing is deleted, and nothing
/// is skipped silently. Any other error (I/O, a store in use, an
/// application that refuses its snapshot) is returned as is. Torn tails cut
/// and rebuilds are counted in `metrics`.
pub async fn open_local(
    data_dir: &Path,
    sync: LogSync,
    app: Option<Box<dyn Application>>,
    rebuild: bool,
    metrics: &StorageMetrics,
) -> Result<(LogStore, StateMachine)> {
    open_local_with(data_dir, SEGMENT_MAX_BYTES_DEFAULT, sync, app, rebuild, metrics).await
}

pub(crate) async fn open_local_with(
    data_dir: &Path,
    segment_max_bytes: u64,
    sync: LogSync,
    app: Option<Box<dyn Application>>,
    rebuild: bool,
    metrics: &StorageMetrics,
) -> Result<(LogStore, StateMachine)> {
    let open_log = || LogStore::open_with_faults(data_dir, segment_max_bytes, sync, Faults::from_env(), metrics);
    let corrupt = match open_log().await {
        Ok(log) => match StateMachine::open_keeping_app(data_dir, app).await {
            Ok(sm) => return Ok((log, sm)),
            Err((e @ StoreError::Corrupt { .. }, app)) if rebuild => {
                // The log's lock must be free before its files move.
                drop(log);
                (e, app)
            }
            Err((e, _)) => return Err(e),
        },
        Err(e @ StoreError::Corrupt { .. }) if rebuild => (e, app),
        Err(e) => return Err(e),
    };
    let (why, app) = corrupt;
    let dir = data_dir.to_path_buf();
    let why_text = match &why {
        StoreError::Corrupt {
            path,
            offset_bytes,
            reason,
        } => format!(
            "corrupt data in {} at byte offset {offset_bytes}: {reason}",
            path.display()
        ),
        other => other.to_string(),
    };
    tokio::task::spawn_blocking(move || discard_local_state(&dir, &why_text)).await??;
    metrics.local_rebuilds.inc();
    let log = open_log().await?;
    let sm = StateMachine::open_with_app(data_dir, app).await?;
    Ok((log, sm))
}

/// Moves everything under `raft/` but the lock, and `snapshot/`, into a new
/// `<data_dir>/discarded-<unix_ms>/` (holding the lock meanwhile, so no
/// other process opens the log half moved). Returns that directory.
fn discard_local_state(data_dir: &Path, why: &str) -> Result<PathBuf> {
    let raft_dir = data_dir.join("raft");
    frame::create_dir_durable(&raft_dir)?;
    let lock_path = raft_dir.join("LOCK");
    let lock = File::create(&lock_path).map_err(|e| StoreError::io("create", &lock_path, e))?;
    lock.try_lock().map_err(|_| StoreError::InUse {
        path: raft_dir.to_path_buf(),
    })?;

    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut target = data_dir.join(format!("discarded-{millis}"));
    let mut n = 1;
    loop {
        match fs::create_dir(&target) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                target = data_dir.join(format!("discarded-{millis}-{n}"));
                n += 1;
            }
            Err(e) => return Err(StoreError::io("create directory", &target, e)),
        }
    }

    let mut moved = Vec::new();
    let mut raft_entries = Vec::new();
    for entry in fs::read_dir(&raft_dir).map_err(|e| StoreError::io("list", &raft_dir, e))? {
        let path = entry.map_err(|e| StoreError::io("list", &raft_dir, e))?.path();
        if path.file_name().is_some_and(|n| n != "LOCK") {
            raft_entries.push(path);
        }
    }
    if !raft_entries.is_empty() {
        let to_dir = target.join("raft");
        fs::create_dir(&to_dir).map_err(|e| StoreError::io("create directory", &to_dir, e))?;
        for from in raft_entries {
            let to = to_dir.join(from.file_name().unwrap_or_default());
            fs::rename(&from, &to).map_err(|e| StoreError::io("move aside", &from, e))?;
            moved.push(from);
        }
        frame::sync_dir(&to_dir)?;
    }
    let snapshot_dir = data_dir.join("snapshot");
    if snapshot_dir.exists() {
        let to = target.join("snapshot");
        fs::rename(&snapshot_dir, &to).map_err(|e| StoreError::io("move aside", &snapshot_dir, e))?;
        moved.push(snapshot_dir);
    }
    frame::sync_dir(&target)?;
    frame::sync_dir(&raft_dir)?;
    frame::sync_dir(data_dir)?;
    let moved: Vec<String> = moved.iter().map(|p| p.display().to_string()).collect();
    tracing::warn!(
        moved = ?moved,
        to = %target.display(),
        reason = why,
        "--rebuild-from-witness: this node's local state is unreadable ({why}); moved {} into {} and starting with an empty log, to be rebuilt from ZooKeeper",
        moved.join(", "),
        target.display()
    );
    drop(lock);
    Ok(target)
}
