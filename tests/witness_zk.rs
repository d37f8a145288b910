//! W's rules carried out against a real ZooKeeper: votes, appends,
//! conflicts, heartbeats, big batches, snapshots and corruption, reused log
//! ids, refused and orphaned snapshot uploads, through the same `Witness`
//! the nodes use (two instances = two nodes' sessions).

mod common;

use anyhow::Result;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::VoteRequest;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use walship::types::genesis_entry;
use walship::types::Entry;
use walship::types::LogId;
use walship::types::Request;
use walship::types::TypeConfig;
use walship::types::Vote;
use walship::witness::SnapshotUpload;
use walship::witness::Witness;
use walship::witness::WitnessError;
use walship_zk::ZkSession;

fn lid(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn entry(term: u64, node: u64, index: u64, value_bytes: usize) -> Entry {
    Entry {
        log_id: lid(term, node, index),
        payload: EntryPayload::Normal(walship::types::Batch::one(Request::Set {
            key: format!("k{index}"),
            value: vec![b'v'; value_bytes],
        })),
    }
}

fn append(
    vote: Vote,
    prev: Option<LogId>,
    entries: Vec<Entry>,
    commit: Option<LogId>,
) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote,
        prev_log_id: prev,
        entries,
        leader_commit: commit,
    }
}

async fn witness(zk: &common::ZkServer, cluster: &str) -> Result<Witness> {
    let session = ZkSession::connect(&zk.addr(), 4000, 2000, 10_000, |_| None).await?;
    Ok(Witness::new(session, cluster).counting_log_id_conflicts(CONFLICTS.clone()))
}

struct Fixture {
    zk: common::ZkServer,
    _dir: common::TestDir,
    cluster: String,
}

async fn fixture(name: &str) -> Result<Fixture> {
    let dir = common::TestDir::new(name)?;
    let zk = common::ZkServer::start(&dir.path().join("zk")).await?;
    Ok(Fixture {
        zk,
        _dir: dir,
        cluster: format!("{name}-{}", std::process::id()),
    })
}

/// Two nodes racing to create the cluster agree on one genesis.
#[tokio::test]
async fn genesis_race_agrees() -> Result<()> {
    let f = fixture("w-genesis").await?;
    let (a, b) = (witness(&f.zk, &f.cluster).await?, witness(&f.zk, &f.cluster).await?);
    let (ra, rb) = tokio::join!(a.bootstrap(), b.bootstrap());
    let (ra, rb) = (ra?, rb?);
    assert_eq!(ra.cluster_id, rb.cluster_id);
    assert_eq!(ra.last_log_id, Some(LogId::default()));
    let log = a.read_log(0).await?;
    assert_eq!(
        log.entries,
        vec![genesis_entry()],
        "W's log starts with the genesis membership"
    );
    Ok(())
}

/// Vote: granted to an up-to-date candidate, refused to a lower vote or a
/// shorter log; a stale leader's append is told W's higher vote.
#[tokio::test]
async fn votes_and_fencing() -> Result<()> {
    let f = fixture("w-vote").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    let n2 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());

    let r = n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?;
    assert!(r.vote_granted);
    let v1 = Vote::new_committed(1, 1);
    let ok = n1
        .append_entries(append(v1, g, vec![entry(1, 1, 1, 10), entry(1, 1, 2, 10)], g))
        .await?;
    assert_eq!(ok, AppendEntriesResponse::Success);

    // Node 2 with a shorter log cannot win W, even in a higher term.
    let r = n2.vote(VoteRequest::new(Vote::new(2, 2), g)).await?;
    assert!(!r.vote_granted, "W granted a vote to a candidate missing entries");
    assert_eq!(r.last_log_id, Some(lid(1, 1, 2)));
    // With the log, it wins; node 1 is then fenced.
    let r = n2.vote(VoteRequest::new(Vote::new(2, 2), Some(lid(1, 1, 2)))).await?;
    assert!(r.vote_granted);
    let stale = n1
        .append_entries(append(v1, Some(lid(1, 1, 2)), vec![entry(1, 1, 3, 10)], None))
        .await?;
    assert_eq!(stale, AppendEntriesResponse::HigherVote(Vote::new(2, 2)));
    // A stale heartbeat is refused too, so the old leader cannot confirm a read.
    let hb = n1.append_entries(append(v1, Some(lid(1, 1, 2)), vec![], None)).await?;
    assert!(matches!(hb, AppendEntriesResponse::HigherVote(_)));
    let log = n2.read_log(0).await?;
    assert_eq!(
        log.record.last_log_id,
        Some(lid(1, 1, 2)),
        "the fenced append must leave no trace"
    );
    Ok(())
}

/// AppendEntries: Conflict when prev is missing; a new leader truncates the
/// old leader's uncommitted suffix and its entries replace it.
#[tokio::test]
async fn conflict_and_truncation() -> Result<()> {
    let f = fixture("w-conflict").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    let n2 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    let v1 = Vote::new_committed(1, 1);
    let es: Vec<Entry> = (1..=5).map(|i| entry(1, 1, i, 10)).collect();
    assert_eq!(
        n1.append_entries(append(v1, g, es[..3].to_vec(), None)).await?,
        AppendEntriesResponse::Success
    );
    assert_eq!(
        n1.append_entries(append(v1, Some(lid(1, 1, 3)), es[3..].to_vec(), None))
            .await?,
        AppendEntriesResponse::Success
    );

    let v2 = Vote::new_committed(2, 2);
    // prev beyond W's log, or with another term: Conflict.
    assert_eq!(
        n2.append_entries(append(v2, Some(lid(2, 2, 9)), vec![], None)).await?,
        AppendEntriesResponse::Conflict
    );
    assert_eq!(
        n2.append_entries(append(v2, Some(lid(2, 2, 4)), vec![], None)).await?,
        AppendEntriesResponse::Conflict
    );
    // Entries 3.. conflict from index 4: 4 and 5 go, 4' 5' 6' come.
    let new: Vec<Entry> = vec![
        entry(1, 1, 3, 10),
        entry(2, 2, 4, 10),
        entry(2, 2, 5, 10),
        entry(2, 2, 6, 10),
    ];
    assert_eq!(
        n2.append_entries(append(v2, Some(lid(1, 1, 2)), new, Some(lid(1, 1, 3))))
            .await?,
        AppendEntriesResponse::Success
    );
    let log = n1.read_log(1).await?;
    let ids: Vec<LogId> = log.entries.iter().map(|e| e.log_id).collect();
    assert_eq!(
        ids,
        vec![
            lid(1, 1, 1),
            lid(1, 1, 2),
            lid(1, 1, 3),
            lid(2, 2, 4),
            lid(2, 2, 5),
            lid(2, 2, 6)
        ]
    );
    assert_eq!(log.record.committed, Some(lid(1, 1, 3)));
    Ok(())
}

/// A batch bigger than one ZooKeeper request is split into several multis
/// and reads back whole.
#[tokio::test]
async fn big_batch_is_split_under_jute_maxbuffer() -> Result<()> {
    let f = fixture("w-big").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    assert!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    let es: Vec<Entry> = (1..=8).map(|i| entry(1, 1, i, 400 * 1024)).collect();
    let r = n1
        .append_entries(append(Vote::new_committed(1, 1), g, es.clone(), None))
        .await?;
    assert_eq!(r, AppendEntriesResponse::Success);
    let log = n1.read_log(1).await?;
    assert_eq!(log.entries, es);
    let (_, segments) = n1.inspect().await?;
    assert!(
        segments.len() >= 5,
        "3.2 MB must span several segments, got {}",
        segments.len()
    );
    assert!(segments.iter().all(|s| s.bytes < 1024 * 1024 && s.error.is_none()));
    Ok(())
}

/// A snapshot in W replaces the WAL it covers; a reader from before it
/// gets the snapshot plus the WAL after it.
#[tokio::test]
async fn snapshot_compacts_the_wal() -> Result<()> {
    let f = fixture("w-snap").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    let v1 = Vote::new_committed(1, 1);
    assert!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    let mut prev = g;
    for i in 1..=10 {
        n1.append_entries(append(v1, prev, vec![entry(1, 1, i, 10)], prev))
            .await?;
        prev = Some(lid(1, 1, i));
    }
    let meta = walship::types::SnapshotMeta {
        last_log_id: Some(lid(1, 1, 6)),
        last_membership: Default::default(),
        snapshot_id: "s-6".into(),
    };
    let data = vec![7u8; 2 * 1024 * 1024 + 17];
    n1.install_snapshot(v1, meta.clone(), data.clone()).await?;
    let (record, segments) = n1.inspect().await?;
    assert_eq!(
        record.snapshot.as_ref().map(|s| s.meta.last_log_id),
        Some(Some(lid(1, 1, 6)))
    );
    assert!(
        segments.iter().all(|s| s.last_index.unwrap_or(0) > 6),
        "segments behind the snapshot remain: {segments:?}"
    );
    let log = n1.read_log(0).await?;
    let sref = log.snapshot.expect("a reader from index 0 needs the snapshot");
    let mut d = Vec::new();
    n1.read_snapshot_to(&sref, &mut d).await?;
    assert_eq!((sref.meta.snapshot_id, d), (meta.snapshot_id, data));
    assert_eq!(
        log.entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        vec![7, 8, 9, 10]
    );
    Ok(())
}

/// S9 at the witness level: one flipped byte in a WAL znode is reported
/// with its path and nothing from it is returned.
#[tokio::test]
async fn corrupt_segment_is_reported_never_applied() -> Result<()> {
    let f = fixture("w-corrupt").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    assert!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    n1.append_entries(append(Vote::new_committed(1, 1), g, vec![entry(1, 1, 1, 100)], None))
        .await?;
    let path = n1.paths().segment(1);
    let raw = zookeeper_client::Client::connect(&f.zk.addr()).await?;
    let (mut bytes, _) = raw.get_data(&path).await?;
    let at = bytes.len() - 5;
    bytes[at] ^= 0x40;
    raw.set_data(&path, &bytes, None).await?;

    let fresh = witness(&f.zk, &f.cluster).await?;
    match fresh.read_log(0).await {
        Err(WitnessError::Corrupt { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(reason.contains("crc32"), "{reason}");
        }
        other => panic!("corruption not detected: {:?}", other.map(|l| l.entries.len())),
    }
    let (_, segments) = fresh.inspect().await?;
    let bad: Vec<_> = segments
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(bad, vec![path]);
    Ok(())
}

/// A heartbeat is a checked multi that changes nothing in W.
#[tokio::test]
async fn heartbeat_is_a_check_only_multi() -> Result<()> {
    let f = fixture("w-hb").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    let v = Vote::new_committed(1, 1);
    assert!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    n1.append_entries(append(v, g, vec![entry(1, 1, 1, 1)], g)).await?;
    n1.append_entries(append(v, Some(lid(1, 1, 1)), vec![], g)).await?;
    let raw = zookeeper_client::Client::connect(&f.zk.addr()).await?;
    let witness_path = n1.paths().witness();
    let (_, before) = raw.get_data(&witness_path).await?;
    for _ in 0..5 {
        assert_eq!(
            n1.append_entries(append(v, Some(lid(1, 1, 1)), vec![], g)).await?,
            AppendEntriesResponse::Success
        );
    }
    let (_, after) = raw.get_data(&witness_path).await?;
    assert_eq!(before.version, after.version, "heartbeats must not rewrite W's record");
    Ok(())
}

fn put(term: u64, node: u64, index: u64, value: &str) -> Entry {
    Entry {
        log_id: lid(term, node, index),
        payload: EntryPayload::Normal(walship::types::Batch::one(Request::Set {
            key: "x".into(),
            value: value.as_bytes().to_vec(),
        })),
    }
}

/// Every witness of these tests counts the log id reuses it refuses here
/// (a node hands in its own metric; see `Witness::counting_log_id_conflicts`).
static CONFLICTS: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| prometheus::IntCounter::new("conflicts", "refused reuses").expect("metric"));

fn conflicts() -> u64 {
    CONFLICTS.get()
}

/// A log id names one entry forever (issue 9, the reproduction's last
/// step at W): a leader that sends another entry under a log id W holds is
/// refused with an error (not Conflict), through a warm view and a cold
/// one (whose segments are loaded for the check), and W keeps its entry.
#[tokio::test]
async fn w_refuses_a_reused_log_id_and_keeps_its_entry() -> Result<()> {
    let f = fixture("w-reuse").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    assert!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    let v1 = Vote::new_committed(1, 1);
    let old: Vec<Entry> = vec![put(1, 1, 1, "a"), put(1, 1, 2, "b"), put(1, 1, 3, "OLD")];
    assert_eq!(
        n1.append_entries(append(v1, g, old.clone(), None)).await?,
        AppendEntriesResponse::Success
    );
    let before = conflicts();

    // The same leader, reborn without its log, leads term 1 again.
    let reborn = vec![put(1, 1, 3, "NEW"), put(1, 1, 4, "next")];
    for (who, w) in [("warm view", &n1), ("cold view", &witness(&f.zk, &f.cluster).await?)] {
        match w
            .append_entries(append(v1, Some(lid(1, 1, 2)), reborn.clone(), None))
            .await
        {
            Err(WitnessError::LogIdReused {
                log_id,
                witness_digest,
                request_digest,
            }) => {
                assert_eq!(log_id, lid(1, 1, 3), "{who}");
                assert_eq!(witness_digest, walship::witness::record::entry_digest(&old[2]));
                assert_eq!(request_digest, walship::witness::record::entry_digest(&reborn[0]));
            }
            other => panic!("{who}: a reused log id was not refused: {other:?}"),
        }
    }
    // Every overlapping entry is compared, not only the ones log matching
    // would look at: a reuse in the middle of a long resend is found.
    let mut resend = old.clone();
    resend[1] = put(1, 1, 2, "B?");
    let r = n1.append_entries(append(v1, g, resend, None)).await;
    assert!(
        matches!(r, Err(WitnessError::LogIdReused { log_id, .. }) if log_id == lid(1, 1, 2)),
        "{r:?}"
    );
    assert!(conflicts() >= before + 3, "each refusal is counted");

    let log = n1.read_log(1).await?;
    assert_eq!(log.entries, old, "W keeps its entries");
    assert_eq!(log.record.last_log_id, Some(lid(1, 1, 3)));
    // The same bytes again are a plain retransmit.
    assert_eq!(
        n1.append_entries(append(v1, Some(lid(1, 1, 2)), vec![old[2].clone()], None))
            .await?,
        AppendEntriesResponse::Success
    );
    Ok(())
}

/// A Conflict answer is not decided on a cached view: it confirms W's
/// record version first. A leader W deposed while its cached view did not
/// show it, asking with a prev W lacks, is told W's higher vote.
#[tokio::test]
async fn conflict_is_confirmed_through_zookeeper() -> Result<()> {
    let f = fixture("w-conflict-check").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    let n2 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    assert!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    let v1 = Vote::new_committed(1, 1);
    n1.append_entries(append(v1, g, vec![entry(1, 1, 1, 10)], None)).await?;
    // On n1's warm view this is a Conflict (W has no index 9) under W's
    // vote v1.
    assert_eq!(
        n1.append_entries(append(v1, Some(lid(1, 1, 9)), vec![], None)).await?,
        AppendEntriesResponse::Conflict
    );
    // Node 2 is elected through its own session; n1's view does not know.
    assert!(
        n2.vote(VoteRequest::new(Vote::new(2, 2), Some(lid(1, 1, 1))))
            .await?
            .vote_granted
    );
    assert_eq!(
        n1.append_entries(append(v1, Some(lid(1, 1, 9)), vec![], None)).await?,
        AppendEntriesResponse::HigherVote(Vote::new(2, 2)),
        "a Conflict from the cached view would have confirmed a deposed leader"
    );
    Ok(())
}

/// A snapshot upload W refuses (it holds a higher vote) is reported as
/// refused, and nothing is uploaded.
#[tokio::test]
async fn refused_snapshot_upload_is_reported_and_uploads_nothing() -> Result<()> {
    let f = fixture("w-snap-refused").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    let n2 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    let v1 = Vote::new_committed(1, 1);
    assert!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    n1.append_entries(append(v1, g, vec![entry(1, 1, 1, 10), entry(1, 1, 2, 10)], g))
        .await?;
    assert!(
        n2.vote(VoteRequest::new(Vote::new(2, 2), Some(lid(1, 1, 2))))
            .await?
            .vote_granted
    );
    let meta = walship::types::SnapshotMeta {
        last_log_id: Some(lid(1, 1, 2)),
        last_membership: Default::default(),
        snapshot_id: "refused-2".into(),
    };
    let r = n1.install_snapshot(v1, meta, vec![1u8; 2 * 1024 * 1024]).await?;
    assert_eq!(r, SnapshotUpload::Refused(Vote::new(2, 2)));
    let raw = zookeeper_client::Client::connect(&f.zk.addr()).await?;
    assert_eq!(
        raw.list_children(&n1.paths().snapshots_dir()).await?,
        Vec::<String>::new(),
        "a refused upload leaves nothing in ZooKeeper"
    );
    let (record, _) = n1.inspect().await?;
    assert_eq!(record.snapshot, None);
    Ok(())
}

/// Snapshot chunks that no record names are collected: an upload that did
/// not end in W's record (refused at its final multi) removes its own, and
/// a successful install sweeps any left over (say, by a process killed
/// mid-upload).
#[tokio::test]
async fn orphan_snapshot_chunks_are_removed() -> Result<()> {
    let f = fixture("w-snap-orphans").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    let n2 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    assert!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    let v1 = Vote::new_committed(1, 1);
    let mut prev = g;
    for i in 1..=6 {
        n1.append_entries(append(v1, prev, vec![entry(1, 1, i, 10)], prev))
            .await?;
        prev = Some(lid(1, 1, i));
    }
    // Left behind by an uploader that died between its chunks and its
    // final multi.
    let raw = zookeeper_client::Client::connect(&f.zk.addr()).await?;
    let opts = zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    let dead = n1.paths().snapshot_dir("dead-upload");
    raw.create(&dead, &[], &opts).await?;
    for c in 0..3 {
        raw.create(&n1.paths().chunk("dead-upload", c), &[9u8; 100], &opts)
            .await?;
    }

    let snap = |id: &str, last: u64| walship::types::SnapshotMeta {
        last_log_id: Some(lid(1, 1, last)),
        last_membership: Default::default(),
        snapshot_id: id.into(),
    };
    // Node 1's upload is refused at its final multi: node 2 wins term 2
    // while node 1's chunks are on their way. The refused upload removes
    // its own chunks at once.
    let big = vec![5u8; 16 * 1024 * 1024];
    let v2 = Vote::new(2, 2);
    let first_chunk = n1.paths().chunk("from-1", 0);
    let elect_2 = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while raw.check_stat(&first_chunk).await?.is_none() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "node 1's upload never started");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let r = n2.vote(VoteRequest::new(v2, Some(lid(1, 1, 6)))).await?;
        anyhow::ensure!(r.vote_granted, "node 2 not elected");
        Ok(())
    };
    let (r1, elected) = tokio::join!(n1.install_snapshot(v1, snap("from-1", 5), big), elect_2);
    elected?;
    assert_eq!(r1?, SnapshotUpload::Refused(v2));
    let children = raw.list_children(&n1.paths().snapshots_dir()).await?;
    assert_eq!(
        children,
        vec!["dead-upload".to_string()],
        "the refused upload removed its chunks"
    );

    // Node 2's install succeeds and sweeps what no record names.
    let data = vec![6u8; 2 * 1024 * 1024 + 3];
    assert_eq!(
        n2.install_snapshot(v2, snap("from-2", 6), data.clone()).await?,
        SnapshotUpload::Stored
    );
    let children = raw.list_children(&n1.paths().snapshots_dir()).await?;
    assert_eq!(
        children,
        vec!["from-2".to_string()],
        "only the snapshot W names remains"
    );
    let i = n2.inspect_all().await?;
    assert_eq!(i.problem_count(), 0, "{:?}", i.gaps);
    assert!(i.unreferenced_snapshots.is_empty());
    let log = n1.read_log(0).await?;
    assert_eq!(
        log.snapshot.map(|s| (s.meta.snapshot_id, s.size_bytes)),
        Some(("from-2".into(), data.len() as u64))
    );
    Ok(())
}

/// The cost of comparing every overlapping entry (the log id reuse check):
/// a new leader's first append re-sends entries W already holds. Prints
/// the time of such an append against a cold view (W's segments read for
/// it) and a warm one, next to the time the digests alone take.
#[tokio::test]
async fn resend_of_many_entries_w_holds_is_checked_and_timed() -> Result<()> {
    const N: u64 = 5000;
    const VALUE_BYTES: usize = 1024;
    let f = fixture("w-resend-cost").await?;
    let n1 = witness(&f.zk, &f.cluster).await?;
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    assert!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    let v1 = Vote::new_committed(1, 1);
    let all: Vec<Entry> = (1..=N).map(|i| entry(1, 1, i, VALUE_BYTES)).collect();
    let mut prev = g;
    for batch in all.chunks(500) {
        let r = n1.append_entries(append(v1, prev, batch.to_vec(), None)).await?;
        assert_eq!(r, AppendEntriesResponse::Success);
        prev = batch.last().map(|e| e.log_id);
    }
    let digests = std::time::Instant::now();
    let sum: u64 = all
        .iter()
        .map(|e| u64::from(walship::witness::record::entry_digest(e)))
        .sum();
    let digests = digests.elapsed();
    assert!(sum > 0);

    let cold = witness(&f.zk, &f.cluster).await?;
    let raw = zookeeper_client::Client::connect(&f.zk.addr()).await?;
    let (_, before) = raw.get_data(&n1.paths().witness()).await?;
    let t = std::time::Instant::now();
    let r = cold.append_entries(append(v1, g, all.clone(), None)).await?;
    let cold_time = t.elapsed();
    assert_eq!(r, AppendEntriesResponse::Success);
    let t = std::time::Instant::now();
    let r = cold.append_entries(append(v1, g, all.clone(), None)).await?;
    let warm_time = t.elapsed();
    assert_eq!(r, AppendEntriesResponse::Success);
    let (_, after) = raw.get_data(&n1.paths().witness()).await?;
    assert_eq!(before.version, after.version, "a resend changes nothing in W");
    let segments = n1.inspect().await?.1.len();
    eprintln!(
        "resend of {N} entries of {VALUE_BYTES} B that W holds ({segments} segments): cold view {cold_time:?}, warm view {warm_time:?}; the {N} digests alone {digests:?}"
    );
    Ok(())
}
