//! `--rebuild-from-witness` (`rebuild.rs`): an unreadable log, state file or
//! snapshot is refused naming the file and the flag; with the flag it is
//! moved aside, never deleted, and the node opens empty.

use std::path::Path;
use std::path::PathBuf;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use walship_types::Vote;

use super::super::rebuild::open_local_with;
use super::super::LogSync;
use super::super::StorageMetrics;
use super::super::StoreError;
use super::append;
use super::open_log;
use super::open_sm;
use super::segment_files;
use super::sets;
use super::SMALL_SEGMENT_BYTES;

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

fn discarded(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("discarded-"))
        })
        .collect();
    found.sort();
    found
}

async fn open(
    dir: &Path,
    rebuild: bool,
    metrics: &StorageMetrics,
) -> Result<(super::super::LogStore, super::super::StateMachine), StoreError> {
    open_local_with(dir, SMALL_SEGMENT_BYTES, LogSync::Background, None, rebuild, metrics).await
}

/// A log of two segments (0..=11), a vote and a snapshot at 5.
async fn node_state(dir: &Path) {
    let mut log = open_log(dir).await;
    for first in (0..12).step_by(3) {
        append(&mut log, sets(1, first..=first + 2)).await;
    }
    log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    let mut sm = open_sm(dir).await;
    sm.apply(log.entries(..=5).expect("read the log")).await.expect("apply");
    sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
}

#[tokio::test]
async fn corrupt_earlier_segment_refused_then_moved_aside_with_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = StorageMetrics::new();
    node_state(dir.path()).await;
    let first = segment_files(dir.path()).remove(0);
    flip_byte(&first, 20);

    let err = match open(dir.path(), false, &metrics).await {
        Ok(_) => panic!("refused without the flag"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains(&first.display().to_string()), "{msg}");
    assert!(msg.contains("--rebuild-from-witness"), "{msg}");
    assert!(discarded(dir.path()).is_empty(), "nothing moved without the flag");
    assert_eq!(metrics.local_rebuilds.get(), 0);

    let (log, sm) = open(dir.path(), true, &metrics).await.expect("rebuilt");
    assert_eq!(metrics.local_rebuilds.get(), 1, "counted");
    assert!(log.is_empty() && log.vote().is_none(), "{log:?}");
    assert_eq!(sm.applied(), None);
    let moved = discarded(dir.path());
    assert_eq!(moved.len(), 1);
    let aside = &moved[0];
    assert!(aside.join("raft/log").join(first.file_name().expect("name")).exists());
    assert!(aside.join("raft/state").exists());
    assert!(aside.join("snapshot/current.snap").exists());
    assert!(!aside.join("raft/LOCK").exists(), "the lock stays in place");
    assert!(dir.path().join("raft/LOCK").exists());
    // The bad file was moved as it was, not repaired.
    assert_ne!(
        std::fs::read(aside.join("raft/log").join(first.file_name().expect("name"))).expect("read")[20],
        0
    );
    drop((log, sm));
    let (log, _) = open(dir.path(), false, &metrics).await.expect("opens clean afterwards");
    assert!(log.is_empty());
    assert_eq!(discarded(dir.path()).len(), 1);
    assert_eq!(metrics.local_rebuilds.get(), 1, "a clean open rebuilds nothing");
}

#[tokio::test]
async fn corrupt_snapshot_or_state_file_is_moved_aside_with_the_flag() {
    for file in ["snapshot/current.snap", "raft/state"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = StorageMetrics::new();
        node_state(dir.path()).await;
        let path = dir.path().join(file);
        let len = std::fs::metadata(&path).expect("stat").len() as usize;
        flip_byte(&path, len - 2);
        let err = match open(dir.path(), false, &metrics).await {
            Ok(_) => panic!("refused"),
            Err(e) => e,
        };
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        let (log, sm) = open(dir.path(), true, &metrics).await.expect("rebuilt");
        assert!(log.is_empty());
        assert_eq!(sm.applied(), None);
        let moved = discarded(dir.path());
        assert_eq!(moved.len(), 1, "{file}");
        assert!(moved[0].join(file).exists(), "{file}");
    }
}

/// Only corruption is rebuilt: a store in use is refused even with the flag.
#[tokio::test]
async fn a_store_in_use_is_not_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = StorageMetrics::new();
    node_state(dir.path()).await;
    let running = open_log(dir.path()).await;
    let err = match open(dir.path(), true, &metrics).await {
        Ok(_) => panic!("in use"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(discarded(dir.path()).is_empty());
    assert_eq!(metrics.local_rebuilds.get(), 0);
    drop(running);
}
