//! The storage fault hooks (`fault.rs`): the `synced` trace, `nosync`,
//! `stall`, and `power_loss` applying the trace to a stopped store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::super::fault::power_loss;
use super::super::fault::Faults;
use super::super::LogStore;
use super::super::LogSync;
use super::super::StorageMetrics;
use super::append;
use super::lid;
use super::log_ids;
use super::open_log;
use super::segment_files;
use super::sets;
use super::SMALL_SEGMENT_BYTES;

async fn open_faulty(dir: &Path, faults: &Path, sync: LogSync) -> LogStore {
    let faults = Some(Arc::new(Faults::new(faults)));
    let log = LogStore::open_with_faults(dir, SMALL_SEGMENT_BYTES, sync, faults, &StorageMetrics::new())
        .await
        .expect("open log");
    // Reads of all but the last entry go to the files (see `open_log`).
    log.set_cache_max_bytes(0);
    log
}

fn trace(faults: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(faults.join("synced")).ok()?;
    let (name, len) = text.trim().split_once(' ').expect("<name> <len>");
    Some((name.to_string(), len.parse().expect("a length")))
}

fn name(path: &Path) -> String {
    path.file_name().expect("a name").to_string_lossy().into_owned()
}

/// Entries 0..=11 synced (two segments of six), then 12..=17 written under
/// `nosync`: the trace stops at the last synced byte.
async fn synced_then_unsynced(dir: &Path, faults: &Path, sync: LogSync) -> (String, u64) {
    let mut log = open_faulty(dir, faults, sync).await;
    for first in (0..12).step_by(3) {
        append(&mut log, sets(1, first..=first + 2)).await;
    }
    log.sync_barrier().await.expect("barrier");
    let segments = segment_files(dir);
    assert_eq!(segments.len(), 2);
    let last = segments[1].clone();
    let synced = (name(&last), std::fs::metadata(&last).expect("stat").len());
    assert_eq!(trace(faults), Some(synced.clone()), "every synced byte traced");

    std::fs::write(faults.join("nosync"), b"").expect("nosync");
    for first in (12..18).step_by(3) {
        append(&mut log, sets(1, first..=first + 2)).await;
    }
    log.sync_barrier().await.expect("barrier");
    assert_eq!(log.last_log_id(), Some(lid(1, 17)));
    assert_eq!(trace(faults), Some(synced.clone()), "nosync: nothing more durable");
    synced
}

#[tokio::test]
async fn power_loss_drops_what_was_not_synced() {
    for sync in [LogSync::Background, LogSync::PerAppend] {
        let (dir, faults) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let synced = synced_then_unsynced(dir.path(), faults.path(), sync).await;
        let report = power_loss(dir.path(), faults.path(), false).expect("power loss");
        assert_eq!(report.trace, Some(synced.clone()));
        assert_eq!(report.records_dropped, 6, "{report:?}");
        assert!(report.torn.is_none());
        // 12..=17 went into a third segment, deleted; the second is as synced.
        assert_eq!(report.segments_removed.len(), 1, "{report:?}");
        let last = dir.path().join("raft/log").join(&synced.0);
        assert_eq!(std::fs::metadata(&last).expect("stat").len(), synced.1);
        let log = open_log(dir.path()).await;
        assert_eq!(log_ids(&log), (0..=11).map(|i| lid(1, i)).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn power_loss_can_leave_a_torn_record_which_the_next_open_cuts() {
    let (dir, faults) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let synced = synced_then_unsynced(dir.path(), faults.path(), LogSync::Background).await;
    let report = power_loss(dir.path(), faults.path(), true).expect("power loss");
    assert_eq!(report.records_dropped, 6, "{report:?}");
    // The traced segment is durable whole: the first record not durable is
    // the first of the next segment, the one 12..=17 went to.
    let (torn_path, torn_at) = report.torn.clone().expect("a torn record");
    assert_eq!(name(&torn_path), format!("{:020}.log", 12));
    assert_eq!(torn_at, 0);
    assert_eq!(
        synced.1,
        std::fs::metadata(dir.path().join("raft/log").join(&synced.0))
            .expect("stat")
            .len()
    );
    // The torn record keeps its full length: the file ends right after it.
    let bytes = std::fs::read(&torn_path).expect("read");
    let at = torn_at as usize;
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    assert_eq!(bytes.len(), at + 8 + len, "{report:?}");
    let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
    assert_ne!(
        crc32fast::hash(&bytes[at + 8..]),
        crc,
        "the torn record fails its crc32"
    );
    assert_eq!(segment_files(dir.path()).last(), Some(&torn_path), "nothing after it");

    let log = open_faulty(dir.path(), faults.path(), LogSync::Background).await;
    assert_eq!(log_ids(&log), (0..=11).map(|i| lid(1, i)).collect::<Vec<_>>());
    assert!(!torn_path.exists(), "the segment left empty by the cut is removed");
    assert_eq!(trace(faults.path()), Some(synced));
}

/// No trace: nothing was ever synced, so nothing counts as durable.
#[tokio::test]
async fn power_loss_without_a_trace_drops_every_segment() {
    let (dir, faults) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    {
        let mut log = open_log(dir.path()).await;
        for first in (0..12).step_by(3) {
            append(&mut log, sets(1, first..=first + 2)).await;
        }
    }
    let report = power_loss(dir.path(), faults.path(), false).expect("power loss");
    assert_eq!(report.trace, None);
    assert_eq!(report.records_dropped, 12);
    assert_eq!(report.segments_removed.len(), 2);
    assert!(open_log(dir.path()).await.is_empty());

    // With `torn`, the first record of the first segment is left torn.
    {
        let mut log = open_log(dir.path()).await;
        append(&mut log, sets(1, 0..=2)).await;
    }
    let report = power_loss(dir.path(), faults.path(), true).expect("power loss");
    assert_eq!(report.records_dropped, 3);
    assert_eq!(report.torn.as_ref().map(|t| t.1), Some(0));
    assert!(open_log(dir.path()).await.is_empty());
}

#[tokio::test]
async fn power_loss_refuses_a_running_store() {
    let (dir, faults) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut log = open_log(dir.path()).await;
    append(&mut log, sets(1, 0..=2)).await;
    let err = power_loss(dir.path(), faults.path(), false).expect_err("locked");
    assert!(err.to_string().contains("stop the node first"), "{err}");
}

/// A truncation cuts what the trace calls durable too.
#[tokio::test]
async fn truncation_moves_the_trace_back() {
    let (dir, faults) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut log = open_faulty(dir.path(), faults.path(), LogSync::PerAppend).await;
    for first in (0..12).step_by(3) {
        append(&mut log, sets(1, first..=first + 2)).await;
    }
    openraft::storage::RaftLogStorage::truncate(&mut log, lid(1, 4))
        .await
        .expect("truncate");
    let first = segment_files(dir.path()).remove(0);
    assert_eq!(segment_files(dir.path()).len(), 1);
    let len = std::fs::metadata(&first).expect("stat").len();
    assert_eq!(trace(faults.path()), Some((name(&first), len)));
    // Rewritten under nosync: the new entries are not durable.
    std::fs::write(faults.path().join("nosync"), b"").expect("nosync");
    append(&mut log, sets(2, 4..=6)).await;
    drop(log);
    power_loss(dir.path(), faults.path(), false).expect("power loss");
    let log = open_log(dir.path()).await;
    assert_eq!(log.last_log_id(), Some(lid(1, 3)));
}

/// While `stall` exists an append blocks before it touches the disk, and
/// so does the background sync and a state write; removing it lets them go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_blocks_appends_until_it_is_removed() {
    let (dir, faults) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut log = open_faulty(dir.path(), faults.path(), LogSync::Background).await;
    append(&mut log, sets(1, 0..=2)).await;
    log.sync_barrier().await.expect("barrier");
    let before = segment_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum::<u64>();
    let stall = faults.path().join("stall");
    std::fs::write(&stall, b"").expect("stall");

    let mut writer = log.clone();
    let appended = tokio::spawn(async move { append(&mut writer, sets(1, 3..=5)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!appended.is_finished(), "the append must wait for the disk");
    let now = segment_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum::<u64>();
    assert_eq!(now, before, "nothing written while stalled");
    assert_eq!(log.last_log_id(), Some(lid(1, 2)));

    std::fs::remove_file(&stall).expect("unstall");
    tokio::time::timeout(Duration::from_secs(10), appended)
        .await
        .expect("the append finishes once the stall ends")
        .expect("join");
    assert_eq!(log.last_log_id(), Some(lid(1, 5)));
}

/// The durable length falls inside a segment: the torn record is the first
/// one after it, in that segment, and the next open cuts it there.
#[tokio::test]
async fn torn_record_inside_the_traced_segment() {
    let (dir, faults) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut log = open_faulty(dir.path(), faults.path(), LogSync::PerAppend).await;
    append(&mut log, sets(1, 0..=2)).await;
    let (seg, durable) = trace(faults.path()).expect("traced");
    std::fs::write(faults.path().join("nosync"), b"").expect("nosync");
    append(&mut log, sets(1, 3..=4)).await;
    assert_eq!(segment_files(dir.path()).len(), 1, "one segment");
    drop(log);
    let report = power_loss(dir.path(), faults.path(), true).expect("power loss");
    assert_eq!(report.records_dropped, 2, "{report:?}");
    assert_eq!(
        report.torn.as_ref().map(|(p, at)| (name(p), *at)),
        Some((seg.clone(), durable))
    );
    let log = open_log(dir.path()).await;
    assert_eq!(log.last_log_id(), Some(lid(1, 2)));
    let path = dir.path().join("raft/log").join(&seg);
    assert_eq!(std::fs::metadata(path).expect("stat").len(), durable);
}
