//! What survives a restart (drop the stores, reopen the same data dir).

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use walship_types::genesis_entry;
use walship_types::Vote;

use super::append;
use super::lid;
use super::log_ids;
use super::open_log;
use super::open_sm;
use super::segment_files;
use super::sets;

#[tokio::test]
async fn log_vote_committed_purged_and_snapshot_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot_meta = {
        let mut log = open_log(dir.path()).await;
        let mut sm = open_sm(dir.path()).await;
        assert!(log.is_empty());
        append(&mut log, vec![genesis_entry()]).await;
        for e in sets(1, 1..=10).into_iter().chain(sets(2, 11..=20)) {
            append(&mut log, vec![e]).await;
        }
        assert!(segment_files(dir.path()).len() > 3, "small segments rotate");
        log.save_vote(&Vote::new(2, 1)).await.expect("vote");
        log.save_committed(Some(lid(2, 15))).await.expect("committed");
        // save_committed writes at most once a second; a clean stop flushes.
        log.flush_committed().await.expect("flush committed");

        sm.apply(log.entries(..=12).expect("read the log"))
            .await
            .expect("apply");
        let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
        sm.apply(log.entries(13..=15).expect("read the log"))
            .await
            .expect("apply");
        let files_before = segment_files(dir.path()).len();
        log.purge(lid(2, 12)).await.expect("purge");
        assert!(
            segment_files(dir.path()).len() < files_before,
            "whole segments below the purge are deleted"
        );
        snap.meta
    };

    let mut log = open_log(dir.path()).await;
    let mut sm = open_sm(dir.path()).await;
    assert!(!log.is_empty());
    assert_eq!(log_ids(&log), (13..=20).map(|i| lid(2, i)).collect::<Vec<_>>());
    assert_eq!(log.purged(), Some(lid(2, 12)));
    assert_eq!(log.last_log_id(), Some(lid(2, 20)));
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(2, 1)));
    assert_eq!(log.read_committed().await.expect("committed"), Some(lid(2, 15)));

    // The map comes back from the snapshot; openraft re-applies 13..=15.
    assert_eq!(sm.applied(), Some(lid(2, 12)));
    assert_eq!(sm.get("k12"), Some(b"v12".to_vec()));
    assert_eq!(sm.get("k13"), None);
    assert_eq!(sm.len(), 12);
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read snapshot")
        .expect("a snapshot");
    assert_eq!(current.meta, snapshot_meta);

    // Appending continues after the reopened tail.
    append(&mut log, sets(3, 21..=21)).await;
    drop(log);
    assert_eq!(open_log(dir.path()).await.last_log_id(), Some(lid(3, 21)));
}

#[tokio::test]
async fn truncate_is_durable_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open_log(dir.path()).await;
        append(&mut log, vec![genesis_entry()]).await;
        for e in sets(1, 1..=20) {
            append(&mut log, vec![e]).await;
        }
        let files = segment_files(dir.path()).len();
        log.truncate(lid(1, 7)).await.expect("truncate");
        assert!(segment_files(dir.path()).len() < files, "later segments are deleted");
        append(&mut log, sets(2, 7..=8)).await;
    }
    let log = open_log(dir.path()).await;
    let mut want: Vec<_> = std::iter::once(genesis_entry().log_id)
        .chain((1..=6).map(|i| lid(1, i)))
        .collect();
    want.extend([lid(2, 7), lid(2, 8)]);
    assert_eq!(log_ids(&log), want);
}

#[tokio::test]
async fn purge_past_the_end_then_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open_log(dir.path()).await;
        append(&mut log, sets(1, 0..=5)).await;
        log.purge(lid(1, 9)).await.expect("purge");
        assert!(segment_files(dir.path()).is_empty());
        append(&mut log, sets(1, 10..=11)).await;
    }
    let log = open_log(dir.path()).await;
    assert_eq!(log.purged(), Some(lid(1, 9)));
    assert_eq!(log_ids(&log), vec![lid(1, 10), lid(1, 11)]);
}

/// The start-up state witness-protocol.md expects from a store seeded with
/// W's genesis entry before `Raft::new`.
#[tokio::test]
async fn genesis_seeded_store_matches_the_witness_design() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open_log(dir.path()).await;
        log.adopt_entries(vec![genesis_entry()]).await.expect("seed");
    }
    let mut log = open_log(dir.path()).await;
    let mut sm = open_sm(dir.path()).await;
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(walship_types::LogId::default()));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(log.read_vote().await.expect("vote"), None);
    assert_eq!(log.read_committed().await.expect("committed"), None);
    let (applied, membership) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, None);
    assert_eq!(membership, walship_types::StoredMembership::default());
}

#[tokio::test]
async fn a_log_is_opened_only_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _log = open_log(dir.path()).await;
    let err = super::super::LogStore::open(dir.path()).await.expect_err("second open");
    assert!(matches!(err, super::super::StoreError::InUse { .. }), "{err}");
}

/// A start streams the log's entries from its files into the cache, which
/// keeps only the newest `LOG_CACHE_MAX_BYTES_DEFAULT`: a log of ~24 MiB is
/// not held whole in memory after the open, and every entry stays readable.
#[tokio::test]
async fn a_reopened_log_keeps_only_its_newest_entries_in_memory() {
    use super::super::log_store::LOG_CACHE_MAX_BYTES_DEFAULT;
    let dir = tempfile::tempdir().expect("tempdir");
    let big = |i: u64| super::set(1, i, &format!("k{i}"), &"x".repeat(1 << 20));
    {
        let mut log = super::super::LogStore::open(dir.path()).await.expect("open");
        for i in 0..24 {
            append(&mut log, vec![big(i)]).await;
        }
    }
    let log = super::super::LogStore::open(dir.path()).await.expect("reopen");
    assert!(
        log.cached_bytes() <= LOG_CACHE_MAX_BYTES_DEFAULT,
        "{} bytes cached after the open",
        log.cached_bytes()
    );
    assert!(log.cached_bytes() >= 8 << 20, "the newest entries are cached");
    assert_eq!(log_ids(&log), (0..24).map(|i| lid(1, i)).collect::<Vec<_>>());
    assert_eq!(log.entries(0..=1).expect("read back"), vec![big(0), big(1)]);
    assert_eq!(log.entries(23..).expect("cached"), vec![big(23)]);
}
