//! Tests of the storage module: openraft's conformance suite, restarts,
//! corruption, adoption and the state machine's semantics.

mod adopt;
mod apply;
mod corruption;
mod fault;
mod meta;
mod rebuild;
mod restart;
mod stream;
mod suite;

use std::path::Path;
use std::path::PathBuf;

use openraft::storage::RaftLogStorageExt;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use walship_types::Entry;
use walship_types::LogId;
use walship_types::Request;

use super::LogStore;
use super::StateMachine;

/// Segments this small rotate every few entries, so tests cross files.
const SMALL_SEGMENT_BYTES: u64 = 256;

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn set(term: u64, index: u64, key: &str, value: &str) -> Entry {
    let req = Request::Set {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
    };
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(walship_types::Batch::one(req)),
    }
}

/// Entries `indexes` of `term`, each setting `k<index>` to `v<index>`.
fn sets(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes
        .map(|i| set(term, i, &format!("k{i}"), &format!("v{i}")))
        .collect()
}

/// A log whose reads of anything but its last entry go to its files (no
/// cache), so these tests cover the read-back path; the conformance suite
/// runs both ways.
async fn open_log(dir: &Path) -> LogStore {
    let log = LogStore::open_with_segment_max_bytes(dir, SMALL_SEGMENT_BYTES)
        .await
        .expect("open log");
    log.set_cache_max_bytes(0);
    log
}

async fn open_sm(dir: &Path) -> StateMachine {
    StateMachine::open(dir).await.expect("open state machine")
}

async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    log.blocking_append(entries).await.expect("append");
}

fn log_ids(log: &LogStore) -> Vec<LogId> {
    log.entries(..)
        .expect("read the log")
        .iter()
        .map(|e| e.log_id)
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("raft/log"))
        .expect("list log dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    files
}

/// `sm`'s current snapshot's data blob, in a file under `dir`, as W's
/// snapshot arrives from ZooKeeper (`Witness::read_snapshot_to`).
async fn witness_blob(sm: &StateMachine, dir: &Path) -> (walship_types::SnapshotMeta, PathBuf) {
    let current = sm.current_snapshot().await.expect("read").expect("a snapshot");
    let bytes = std::fs::read(&current.file.path).expect("read the snapshot file");
    let blob = dir.join("witness.blob");
    std::fs::write(&blob, &bytes[current.data_offset_bytes as usize..]).expect("write the blob");
    (current.meta, blob)
}
