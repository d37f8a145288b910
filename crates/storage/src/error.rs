//! The storage error type: every failure names the file involved, and is
//! turned into openraft's `StorageError` only at the trait boundary.

use std::io;
use std::path::Path;
use std::path::PathBuf;

use openraft::AnyError;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::StorageIOError;
use walship_types::NodeId;
use walship_types::StorageError;

/// What an operator can do about corrupt or foreign data: W holds every
/// committed entry (witness-protocol.md, "A reborn node").
pub const WIPE_HINT: &str = "if ZooKeeper and the other node are healthy, stop this node, \
     wipe its data dir and restart it: it rebuilds itself from ZooKeeper";

/// What an operator can do about an unreadable log, state file or snapshot
/// ([`crate::open_local`]).
pub const REBUILD_HINT: &str = "start this node once with --rebuild-from-witness \
     (or WALSHIP_REBUILD_FROM_WITNESS=1) to rebuild it from ZooKeeper: its local state is \
     moved aside into <data dir>/discarded-<time>/, not deleted";

/// The hint for corruption in `path`. A corrupt `node.meta` gets the wipe
/// hint, not the flag: the flag rebuilds *this* node's cached state and
/// trusts `node.meta` to say the data dir is this node's. With it
/// unreadable nobody can tell whose data dir it is (node 1's, node 2's,
/// another cluster's), so the node refuses as for a foreign data dir, and
/// it takes an operator who knows to clear the dir (which the flag would
/// otherwise do on a guess, e.g. for a node started with the wrong --id
/// whose real data dir this is).
fn corrupt_hint(path: &Path) -> &'static str {
    if path.file_name().is_some_and(|n| n == super::meta::META_FILE) {
        WIPE_HINT
    } else {
        REBUILD_HINT
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("corrupt data in {path} at byte offset {offset_bytes}: {reason}; {hint}", hint = corrupt_hint(path))]
    Corrupt {
        path: PathBuf,
        offset_bytes: u64,
        reason: String,
    },

    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: bincode::Error,
    },

    #[error("data dir {path} belongs to {found}, but this node is {expected}; point the node at its own data dir, or {hint}", hint = WIPE_HINT)]
    ForeignDataDir {
        path: PathBuf,
        found: String,
        expected: String,
    },

    /// A snapshot blob (received from a peer or ZooKeeper, or read from
    /// disk) failed its checks; it was not installed.
    #[error("invalid snapshot from {origin}: {reason}; it was not installed")]
    BadSnapshot { origin: String, reason: String },

    #[error("{path} is in use by another walship process (or another store in this one)")]
    InUse { path: PathBuf },

    /// A caller asked for something that would break the log's invariants
    /// (a hole, a rewrite of a committed entry). Nothing was written.
    #[error("refused: {0}")]
    Invariant(String),

    /// An earlier write or fsync failed, so what is on disk is unknown
    /// (a failed fsync may drop dirty pages): no more writes until restart.
    #[error("storage is read-only after an earlier write failure: {0}")]
    Poisoned(String),

    #[error("storage task failed: {0}")]
    Task(String),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, offset_bytes: u64, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            offset_bytes,
            reason: reason.into(),
        }
    }

    /// Converts at the openraft trait boundary, keeping the message (with its path).
    pub fn into_raft(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> StorageError {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        e.into_raft(ErrorSubject::Store, ErrorVerb::Write)
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::Task(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
