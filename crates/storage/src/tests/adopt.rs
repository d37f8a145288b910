//! Adoption (witness-protocol.md, "Adoption" and "A reborn node"): replaying
//! W's entries and W's snapshot into a stopped node's storage.

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use walship_types::genesis_entry;

use super::super::install_snapshot_offline;
use super::super::StoreError;
use super::append;
use super::lid;
use super::log_ids;
use super::open_log;
use super::open_sm;
use super::sets;

#[tokio::test]
async fn adopt_truncates_a_conflicting_suffix_and_appends_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open_log(dir.path()).await;
        append(&mut log, vec![genesis_entry()]).await;
        append(&mut log, sets(1, 1..=8)).await;
        log.save_committed(Some(lid(1, 3))).await.expect("committed");
        // W: the same 0..=3, then term 2 from index 4 on.
        let mut w = vec![genesis_entry()];
        w.extend(sets(1, 1..=3));
        w.extend(sets(2, 4..=10));
        log.adopt_entries(w).await.expect("adopt");
    }
    let log = open_log(dir.path()).await;
    let mut want = vec![genesis_entry().log_id];
    want.extend((1..=3).map(|i| lid(1, i)));
    want.extend((4..=10).map(|i| lid(2, i)));
    assert_eq!(log_ids(&log), want);
    assert_eq!(log.log_id_at(4), Some(lid(2, 4)));
}

#[tokio::test]
async fn adopt_into_an_empty_log_and_skip_what_is_present_or_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path()).await;
    assert!(log.is_empty());
    log.adopt_entries(sets(1, 0..=4)).await.expect("adopt into empty");
    log.purge(lid(1, 2)).await.expect("purge");
    // Overlaps purged and present entries: only 5..=6 are new.
    log.adopt_entries(sets(1, 1..=6)).await.expect("adopt again");
    assert_eq!(log_ids(&log), (3..=6).map(|i| lid(1, i)).collect::<Vec<_>>());
    assert_eq!(log.purged(), Some(lid(1, 2)));
}

#[tokio::test]
async fn adopt_refuses_holes_and_rewriting_committed_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path()).await;
    let hole = log
        .adopt_entries(sets(1, 3..=4))
        .await
        .expect_err("hole into an empty log");
    assert!(matches!(hole, StoreError::Invariant(_)), "{hole}");

    append(&mut log, sets(1, 0..=5)).await;
    log.save_committed(Some(lid(1, 4))).await.expect("committed");
    let err = log
        .adopt_entries(sets(2, 3..=6))
        .await
        .expect_err("conflict below committed");
    assert!(matches!(err, StoreError::Invariant(_)), "{err}");
    assert_eq!(log.last_log_id(), Some(lid(1, 5)), "nothing changed");
}

#[tokio::test]
async fn install_snapshot_offline_drops_a_diverged_log() {
    // W's snapshot, built from entries 0..=6 of term 2.
    let w_dir = tempfile::tempdir().expect("tempdir");
    let mut w_sm = open_sm(w_dir.path()).await;
    let mut w_entries = vec![genesis_entry()];
    w_entries.extend(sets(2, 1..=6));
    w_sm.apply(w_entries).await.expect("apply");
    w_sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let (meta, data) = super::witness_blob(&w_sm, w_dir.path()).await;
    assert_eq!(meta.last_log_id, Some(lid(2, 6)));

    // The node's own log diverged at index 6 (term 1) and committed up to 5.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open_log(dir.path()).await;
        let sm = open_sm(dir.path()).await;
        append(&mut log, sets(1, 0..=8)).await;
        log.save_committed(Some(lid(1, 5))).await.expect("committed");
        install_snapshot_offline(&sm, &log, meta.clone(), &data)
            .await
            .expect("install");
        assert_eq!(log_ids(&log), vec![]);
    }
    let mut log = open_log(dir.path()).await;
    let mut sm = open_sm(dir.path()).await;
    assert_eq!(log.purged(), Some(lid(2, 6)));
    assert_eq!(log.last_log_id(), Some(lid(2, 6)));
    assert_eq!(log.read_committed().await.expect("committed"), Some(lid(2, 6)));
    assert_eq!(sm.applied(), Some(lid(2, 6)));
    assert_eq!(sm.get("k6"), Some(b"v6".to_vec()));
    assert_eq!(
        sm.get_current_snapshot().await.expect("read").expect("snapshot").meta,
        meta
    );
}

#[tokio::test]
async fn install_snapshot_offline_keeps_a_matching_suffix() {
    let w_dir = tempfile::tempdir().expect("tempdir");
    let mut w_sm = open_sm(w_dir.path()).await;
    w_sm.apply(sets(1, 0..=4)).await.expect("apply");
    w_sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let (meta, data) = super::witness_blob(&w_sm, w_dir.path()).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path()).await;
    let sm = open_sm(dir.path()).await;
    append(&mut log, sets(1, 0..=7)).await;
    install_snapshot_offline(&sm, &log, meta, &data).await.expect("install");
    assert_eq!(log_ids(&log), (5..=7).map(|i| lid(1, i)).collect::<Vec<_>>());
    assert_eq!(log.purged(), Some(lid(1, 4)));
    assert_eq!(sm.len(), 5);
}

/// W's version of entry `index` of term 1: the same log id as `sets(1, ..)`
/// gives it, other bytes (a reused log id).
fn other(index: u64) -> walship_types::Entry {
    super::set(1, index, &format!("k{index}"), "OTHER")
}

/// witness-protocol.md, "A log id names one entry forever": where the local
/// entry and W's share a log id but not their bytes, W's wins and the local
/// suffix from there is replaced; it is reported so the node can say so.
#[tokio::test]
async fn adopt_replaces_an_entry_that_has_w_s_log_id_but_not_its_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open_log(dir.path()).await;
        append(&mut log, sets(1, 0..=6)).await;
        log.save_committed(Some(lid(1, 2))).await.expect("committed");
        // W: 0..=3 as here, then its own (1,4), and (1,5) as here.
        let mut w = sets(1, 0..=3);
        w.push(other(4));
        w.extend(sets(1, 5..=5));
        assert_eq!(
            log.first_reused(&w).expect("read the log").map(|r| r.log_id),
            Some(lid(1, 4))
        );
        let adopted = log.adopt_entries(w.clone()).await.expect("adopt");
        assert_eq!(adopted.replaced_from, Some(4));
        assert_eq!(adopted.appended, 2);
        let r = adopted.reused.expect("the reuse is reported");
        assert_eq!(r.log_id, lid(1, 4));
        assert_eq!(r.local_digest, walship_types::entry_digest(&sets(1, 4..=4)[0]));
        assert_eq!(r.other_digest, walship_types::entry_digest(&other(4)));
        assert_eq!(log.first_reused(&w).expect("read the log"), None);
    }
    // Durable: the local suffix past W's (1,6) is gone, W's (1,4) is there.
    let log = open_log(dir.path()).await;
    assert_eq!(log.last_log_id(), Some(lid(1, 5)));
    assert_eq!(log.entries(4..=4).expect("read the log"), vec![other(4)]);
}

/// The local committed hint names log ids, not bytes: a reused id below it
/// is still replaced by W's (W holds the entry committed under that id), as
/// long as W's entries keep the hint true of the new log.
#[tokio::test]
async fn adopt_replaces_a_reused_id_below_the_committed_hint_only_if_w_reaches_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path()).await;
    append(&mut log, sets(1, 0..=6)).await;
    log.save_committed(Some(lid(1, 5))).await.expect("committed");

    // W's entries stop before the hint (a busy W read up to its committed
    // prefix): refused, nothing changes.
    let mut short = sets(1, 0..=2);
    short.push(other(3));
    let err = log.adopt_entries(short).await.expect_err("hint not reached");
    assert!(matches!(err, StoreError::Invariant(_)), "{err}");
    assert_eq!(
        log.entries(3..=3).expect("read the log"),
        sets(1, 3..=3),
        "nothing changed"
    );

    let mut w = sets(1, 0..=2);
    w.push(other(3));
    w.extend(sets(1, 4..=5));
    let adopted = log.adopt_entries(w).await.expect("adopt");
    assert_eq!(adopted.reused.map(|r| r.log_id), Some(lid(1, 3)));
    assert_eq!(adopted.replaced_from, Some(3));
    assert_eq!(log.entries(3..=3).expect("read the log"), vec![other(3)]);
    assert_eq!(log.last_log_id(), Some(lid(1, 5)));
    assert_eq!(log.committed(), Some(lid(1, 5)));

    // A real Raft conflict (another log id) below the hint is still refused.
    let err = log
        .adopt_entries(sets(2, 4..=6))
        .await
        .expect_err("other id below committed");
    assert!(matches!(err, StoreError::Invariant(_)), "{err}");
}

#[tokio::test]
async fn first_reused_compares_only_what_the_local_log_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path()).await;
    append(&mut log, sets(1, 0..=4)).await;
    assert_eq!(
        log.first_reused(&sets(1, 5..=9)).expect("read the log"),
        None,
        "past the end"
    );
    assert_eq!(
        log.first_reused(&sets(1, 2..=6)).expect("read the log"),
        None,
        "same bytes"
    );
    assert_eq!(
        log.first_reused(&sets(2, 3..=6)).expect("read the log"),
        None,
        "other ids are Raft's business"
    );
    let mut req = sets(1, 3..=3);
    req.push(other(4));
    req.extend(sets(1, 5..=6));
    assert_eq!(
        log.first_reused(&req).expect("read the log").map(|r| r.log_id),
        Some(lid(1, 4))
    );
    log.purge(lid(1, 4)).await.expect("purge");
    assert_eq!(
        log.first_reused(&req).expect("read the log"),
        None,
        "purged entries are not compared"
    );
}

#[tokio::test]
async fn truncate_offline_cuts_only_above_the_committed_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path()).await;
    append(&mut log, sets(1, 0..=6)).await;
    log.save_committed(Some(lid(1, 3))).await.expect("committed");
    let err = log.truncate_offline(3).await.expect_err("committed");
    assert!(matches!(err, StoreError::Invariant(_)), "{err}");
    assert!(log.truncate_offline(5).await.expect("cut"));
    assert_eq!(log.last_log_id(), Some(lid(1, 4)));
    assert!(!log.truncate_offline(5).await.expect("nothing left to cut"));
}
