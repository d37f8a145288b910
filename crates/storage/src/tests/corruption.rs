//! Damaged files: a flipped byte anywhere is a start-up error naming the
//! file (and how to rebuild from W); only the last log segment's tail, from
//! its first bad record on, is cut as torn (a crash or power loss leaves
//! it; the node re-adopts it from W). See brainstorm.md, "Local state is a
//! cache of W".

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use walship_types::Vote;

use super::super::meta::meta_path;
use super::super::meta::write_meta;
use super::super::LogStore;
use super::super::LogSync;
use super::super::NodeMeta;
use super::super::StateMachine;
use super::super::StorageMetrics;
use super::super::StoreError;
use super::append;
use super::lid;
use super::log_ids;
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

/// The error must name the file and tell the operator how to rebuild the
/// node from W: the flag, or for an unreadable identity (node.meta) a wipe.
fn assert_names(err: StoreError, path: &Path) {
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "{msg} should name {}",
        path.display()
    );
    if path.ends_with("node.meta") {
        assert!(msg.contains("wipe its data dir"), "{msg}");
        assert!(!msg.contains("--rebuild-from-witness"), "{msg}");
    } else {
        assert!(
            msg.contains("start this node once with --rebuild-from-witness"),
            "{msg}"
        );
    }
}

/// Entries 0..=11 in batches of 3, so there are two segments of six records.
async fn log_with_entries(dir: &Path) {
    let mut log = open_log(dir).await;
    for first in (0..12).step_by(3) {
        append(&mut log, sets(1, first..=first + 2)).await;
    }
    assert_eq!(segment_files(dir).len(), 2);
}

/// Byte offset of the `k`-th record in a segment.
fn record_offset(path: &Path, k: usize) -> usize {
    let bytes = std::fs::read(path).expect("read");
    let mut offset = 0;
    for _ in 0..k {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        offset += 8 + len as usize;
    }
    offset
}

/// The last segment's tail is cut from its first bad record on, whatever
/// is wrong with it: the records before it stay, the file is cut there.
async fn assert_tail_cut_at(dir: &Path, last: &Path, k: usize) {
    let offset = record_offset(last, k) as u64;
    let metrics = StorageMetrics::new();
    let log = LogStore::open_with_faults(dir, SMALL_SEGMENT_BYTES, LogSync::default(), None, &metrics)
        .await
        .expect("open log");
    // Entries 0..=5 in the first segment, 6.. in the last.
    assert_eq!(log_ids(&log), (0..6 + k as u64).map(|i| lid(1, i)).collect::<Vec<_>>());
    assert_eq!(
        std::fs::metadata(last).expect("stat").len(),
        offset,
        "cut at the bad record"
    );
    assert_eq!(metrics.local_log_tail_repairs.get(), 1, "counted");
}

#[tokio::test]
async fn flipped_byte_in_a_middle_record_of_the_last_segment_cuts_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with_entries(dir.path()).await;
    let last = segment_files(dir.path()).pop().expect("a segment");
    // Inside the payload of record 2 of 6.
    flip_byte(&last, record_offset(&last, 2) + 8 + 5);
    assert_tail_cut_at(dir.path(), &last, 2).await;
}

/// A torn page after a power loss: the last record keeps its full length,
/// its payload is garbage (bad crc32).
#[tokio::test]
async fn bad_crc_full_length_last_record_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with_entries(dir.path()).await;
    let last = segment_files(dir.path()).pop().expect("a segment");
    let at = record_offset(&last, 5);
    let mut bytes = std::fs::read(&last).expect("read");
    for b in &mut bytes[at + 8..] {
        *b = 0x5A;
    }
    std::fs::write(&last, bytes).expect("write");
    assert_tail_cut_at(dir.path(), &last, 5).await;
}

/// A record with a good crc32 whose payload does not decode, or holds the
/// wrong index, is as bad as a torn one in the last segment.
#[tokio::test]
async fn undecodable_or_misplaced_last_record_is_cut() {
    for (k, payload) in [
        (4usize, vec![0xFFu8; 3]),
        (3, {
            let e = &sets(1, 40..=40)[0];
            bincode::serialize(e).expect("encode")
        }),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        log_with_entries(dir.path()).await;
        let last = segment_files(dir.path()).pop().expect("a segment");
        let at = record_offset(&last, k);
        let mut bytes = std::fs::read(&last).expect("read");
        bytes.truncate(at);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        std::fs::write(&last, bytes).expect("write");
        assert_tail_cut_at(dir.path(), &last, k).await;
    }
}

/// The same torn record in a segment that is not the last one is an error
/// naming that file: the entries after it are in later segments, so it
/// cannot be a tail.
#[tokio::test]
async fn bad_crc_full_length_record_in_an_earlier_segment_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with_entries(dir.path()).await;
    let first = segment_files(dir.path()).remove(0);
    let at = record_offset(&first, 5);
    let mut bytes = std::fs::read(&first).expect("read");
    for b in &mut bytes[at + 8..] {
        *b = 0x5A;
    }
    std::fs::write(&first, bytes).expect("write");
    let err = LogStore::open_with_segment_max_bytes(dir.path(), SMALL_SEGMENT_BYTES)
        .await
        .expect_err("must fail");
    assert!(
        err.to_string().contains(&format!("byte offset {at}: crc32 mismatch")),
        "{err}"
    );
    assert_names(err, &first);
}

/// A committed id saved before a power loss can point past the log left
/// after the tail is cut: the store clamps it to its last entry, so
/// openraft never re-applies entries it does not have.
#[tokio::test]
async fn committed_past_a_cut_tail_is_clamped() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open_log(dir.path()).await;
        for first in (0..12).step_by(3) {
            append(&mut log, sets(1, first..=first + 2)).await;
        }
        log.save_committed(Some(lid(1, 11))).await.expect("committed");
        log.flush_committed().await.expect("flush");
    }
    let last = segment_files(dir.path()).pop().expect("a segment");
    flip_byte(&last, record_offset(&last, 2) + 8 + 5);
    let mut log = open_log(dir.path()).await;
    assert_eq!(log.last_log_id(), Some(lid(1, 7)));
    assert_eq!(log.read_committed().await.expect("committed"), Some(lid(1, 7)));
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(lid(1, 7)));
    // W's copies of 8..=11 are adopted over the cut; nothing conflicts.
    log.adopt_entries(sets(1, 8..=11)).await.expect("adopt");
    assert_eq!(log.read_committed().await.expect("committed"), Some(lid(1, 11)));
}

#[tokio::test]
async fn flipped_byte_in_an_earlier_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with_entries(dir.path()).await;
    let first = segment_files(dir.path()).remove(0);
    flip_byte(&first, 20);
    let err = LogStore::open_with_segment_max_bytes(dir.path(), SMALL_SEGMENT_BYTES)
        .await
        .expect_err("must fail");
    assert!(err.to_string().contains("byte offset 0: crc32 mismatch"), "{err}");
    assert_names(err, &first);
}

#[tokio::test]
async fn short_record_in_an_earlier_segment_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with_entries(dir.path()).await;
    let first = segment_files(dir.path()).remove(0);
    let len = std::fs::metadata(&first).expect("stat").len();
    OpenOptions::new()
        .write(true)
        .open(&first)
        .expect("open")
        .set_len(len - 3)
        .expect("cut");
    let err = LogStore::open_with_segment_max_bytes(dir.path(), SMALL_SEGMENT_BYTES)
        .await
        .expect_err("must fail");
    assert_names(err, &first);
}

/// Found by tests/decoders_prop.rs: an emptied first segment used to be
/// dropped as a crash leftover, and the log opened starting at index 6.
#[tokio::test]
async fn emptied_earlier_segment_is_an_error_not_a_shorter_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with_entries(dir.path()).await;
    let first = segment_files(dir.path()).remove(0);
    OpenOptions::new()
        .write(true)
        .open(&first)
        .expect("open")
        .set_len(0)
        .expect("cut");
    let err = LogStore::open_with_segment_max_bytes(dir.path(), SMALL_SEGMENT_BYTES)
        .await
        .expect_err("must fail");
    assert_names(err, &first);
}

#[tokio::test]
async fn torn_tail_of_the_last_segment_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with_entries(dir.path()).await;
    let last = segment_files(dir.path()).pop().expect("a segment");
    let len = std::fs::metadata(&last).expect("stat").len();
    let before = log_ids(&open_log(dir.path()).await);

    // A final record shorter than its length: the entry is lost, the rest kept.
    OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open")
        .set_len(len - 3)
        .expect("cut");
    let mut log = open_log(dir.path()).await;
    assert_eq!(log_ids(&log), before[..before.len() - 1].to_vec());
    let cut_len = std::fs::metadata(&last).expect("stat").len();
    assert!(cut_len < len - 3, "the partial record is removed from the file");

    // The log goes on from there, and the file reads back clean.
    append(&mut log, sets(2, 11..=11)).await;
    drop(log);
    assert_eq!(open_log(dir.path()).await.last_log_id(), Some(lid(2, 11)));
}

#[tokio::test]
async fn trailing_zero_bytes_are_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    log_with_entries(dir.path()).await;
    let last = segment_files(dir.path()).pop().expect("a segment");
    let len = std::fs::metadata(&last).expect("stat").len();
    OpenOptions::new()
        .append(true)
        .open(&last)
        .expect("open")
        .write_all(&[0u8; 100])
        .expect("write");
    let log = open_log(dir.path()).await;
    assert_eq!(log.last_log_id(), Some(lid(1, 11)));
    assert_eq!(std::fs::metadata(&last).expect("stat").len(), len);
}

#[tokio::test]
async fn flipped_byte_in_the_state_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open_log(dir.path()).await;
        log.save_vote(&Vote::new(3, 1)).await.expect("vote");
    }
    let state = dir.path().join("raft/state");
    let len = std::fs::metadata(&state).expect("stat").len() as usize;
    flip_byte(&state, len - 1);
    let err = LogStore::open(dir.path()).await.expect_err("must fail");
    assert_names(err, &state);
}

#[tokio::test]
async fn flipped_byte_in_the_snapshot_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut sm = open_sm(dir.path()).await;
        sm.apply(sets(1, 0..=5)).await.expect("apply");
        sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    }
    let snap = dir.path().join("snapshot/current.snap");
    let len = std::fs::metadata(&snap).expect("stat").len() as usize;
    flip_byte(&snap, len - 2);
    let err = StateMachine::open(dir.path()).await.expect_err("must fail");
    assert_names(err, &snap);
}

#[tokio::test]
async fn flipped_byte_in_node_meta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = NodeMeta {
        cluster: "c".into(),
        cluster_id: "id-1".into(),
        node_id: 1,
    };
    write_meta(dir.path(), &meta).expect("write meta");
    let path = meta_path(dir.path());
    flip_byte(&path, 20);
    let err = super::super::read_meta(dir.path()).expect_err("must fail");
    assert_names(err, &path);
}

#[tokio::test]
async fn bad_snapshot_data_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_sm(dir.path()).await;
    sm.apply(sets(1, 0..=3)).await.expect("apply");
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let mut data = std::fs::read(&snap.snapshot.path).expect("read the built file");
    let n = data.len();
    data[n - 1] ^= 1;
    let damaged = dir.path().join("damaged.snap");
    std::fs::write(&damaged, &data).expect("write");

    let other = tempfile::tempdir().expect("tempdir");
    let mut target = open_sm(other.path()).await;
    let file = walship_types::SnapshotFile {
        file: tokio::fs::File::open(&damaged).await.expect("open"),
        path: damaged.clone(),
    };
    let err = target
        .install_snapshot(&snap.meta, Box::new(file))
        .await
        .expect_err("must fail");
    assert!(err.to_string().contains("crc32 mismatch"), "{err}");
    assert_eq!(target.applied(), None);
    assert!(target.get_current_snapshot().await.expect("read").is_none());
}

/// Entries older than the in-memory cache are read back from the files: a
/// byte flipped there after the open is an error naming the segment when
/// they are asked for, never a silent skip or a shorter answer; the cache
/// keeps to its budget and still answers the newest entries.
#[tokio::test]
async fn a_flipped_byte_in_an_entry_read_back_from_the_files_is_an_error_naming_the_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path()).await;
    let one = bincode::serialized_size(&sets(1, 0..=0)[0]).expect("size");
    log.set_cache_max_bytes(3 * one);
    for first in (0..12).step_by(3) {
        append(&mut log, sets(1, first..=first + 2)).await;
    }
    assert!(
        log.cached_bytes() <= 3 * one + 8,
        "cache over its budget: {}",
        log.cached_bytes()
    );
    assert_eq!(log_ids(&log), (0..12).map(|i| lid(1, i)).collect::<Vec<_>>());
    assert_eq!(log.entries(2..=3).expect("read back"), sets(1, 2..=3));
    assert_eq!(
        log.log_id_at(1),
        Some(lid(1, 1)),
        "the ids of uncached entries stay known"
    );

    let first = &segment_files(dir.path())[0];
    flip_byte(first, record_offset(first, 1) + 9);
    let err = log.entries(0..=4).expect_err("entry 1 is damaged");
    assert_names(err, first);
    // Through openraft's reader too, as a storage error that names it.
    let mut reader = log.get_log_reader().await;
    let err = openraft::RaftLogReader::try_get_log_entries(&mut reader, 0..5)
        .await
        .expect_err("entry 1 is damaged");
    assert!(err.to_string().contains(&first.display().to_string()), "{err}");
    // The newest entries come from memory, untouched by the damage.
    assert_eq!(log.entries(10..).expect("cached"), sets(1, 10..=11));
}
