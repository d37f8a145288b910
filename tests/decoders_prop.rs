//! Property tests of every decoder of bytes walship reads back (issue 5, "bad
//! input on every endpoint"): W's znodes (record, WAL segment, snapshot
//! chunk), the snapshot data blob, `node.meta`, history files, and the
//! storage files under a data dir (log segments, `raft/state`,
//! `snapshot/current.snap`) through the public `LogStore` / `StateMachine`
//! API.
//!
//! Properties: arbitrary bytes give an error, never a panic or a hang (each
//! decode runs on its own thread under a deadline); valid encodings round
//! trip; every single-bit flip and every truncation of a CRC'd encoding is an
//! error naming the znode or file, never a different value. The one allowed
//! exception is the documented torn-tail repair of the last log segment,
//! which must keep a prefix of the written entries.
//!
//! Case counts are small (the whole file runs in seconds in a debug build);
//! `PROPTEST_CASES` raises them for a longer run.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::storage::RaftStateMachine;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use openraft::RaftSnapshotBuilder;
use proptest::prelude::*;
use proptest::test_runner::Config;
use walship::history::History;
use walship::history::OpKind;
use walship::history::OpRecord;
use walship::history::Outcome;
use walship::storage::decode_snapshot_data;
use walship::storage::read_meta;
use walship::storage::write_meta;
use walship::storage::LogStore;
use walship::storage::NodeMeta;
use walship::storage::SmContent;
use walship::storage::StateMachine;
use walship::storage::StoreError;
use walship::types::Batch;
use walship::types::Entry;
use walship::types::LogId;
use walship::types::Membership;
use walship::types::Request;
use walship::types::SnapshotMeta;
use walship::types::StoredMembership;
use walship::types::Vote;
use walship::witness::record::decode_chunk;
use walship::witness::record::decode_record;
use walship::witness::record::decode_segment;
use walship::witness::record::encode_chunk;
use walship::witness::record::encode_record;
use walship::witness::record::encode_segment;
use walship::witness::record::SnapshotRef;
use walship::witness::record::WitnessRecord;
use walship::witness::WitnessError;

/// No decode of a few KiB may take anywhere near this long.
const DECODE_DEADLINE: Duration = Duration::from_secs(10);

/// Runs `f` on its own thread and fails the test if it panics or does not
/// return within `DECODE_DEADLINE` (a hang).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(DECODE_DEADLINE) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} hung: no result within {DECODE_DEADLINE:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

fn cases(n: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
        // A failure prints its minimal input; no regression files.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---- generators ----------------------------------------------------------

fn lid(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn arb_log_id() -> impl Strategy<Value = LogId> {
    (0..1_000u64, 0..4u64, 0..1_000_000u64).prop_map(|(t, n, i)| lid(t, n, i))
}

fn arb_vote() -> impl Strategy<Value = Vote> {
    (0..1_000u64, 0..4u64, any::<bool>()).prop_map(
        |(t, n, c)| {
            if c {
                Vote::new_committed(t, n)
            } else {
                Vote::new(t, n)
            }
        },
    )
}

fn arb_membership() -> impl Strategy<Value = Membership> {
    prop::collection::vec(prop::collection::btree_set(1..6u64, 1..4), 1..3)
        .prop_map(|configs| Membership::new(configs, BTreeSet::<u64>::new()))
}

fn arb_stored_membership() -> impl Strategy<Value = StoredMembership> {
    (proptest::option::of(arb_log_id()), arb_membership()).prop_map(|(l, m)| StoredMembership::new(l, m))
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn arb_request() -> impl Strategy<Value = Request> {
    let key = "\\PC{0,12}";
    prop_oneof![
        (key, arb_bytes(24)).prop_map(|(key, value)| Request::Set { key, value }),
        key.prop_map(|key| Request::Delete { key }),
        (
            key,
            proptest::option::of(arb_bytes(8)),
            proptest::option::of(arb_bytes(8))
        )
            .prop_map(|(key, expect, value)| Request::Cas { key, expect, value }),
    ]
}

fn arb_payload() -> impl Strategy<Value = EntryPayload<walship::types::TypeConfig>> {
    prop_oneof![
        Just(EntryPayload::Blank),
        prop::collection::vec(arb_request(), 0..4).prop_map(|ops| EntryPayload::Normal(Batch { ops })),
        arb_membership().prop_map(EntryPayload::Membership),
    ]
}

/// `count` consecutive entries from `first`, terms never decreasing.
fn arb_entries(first: u64, count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec((0..2u64, arb_payload()), count).prop_map(move |items| {
        let mut term = 1;
        items
            .into_iter()
            .enumerate()
            .map(|(i, (bump, payload))| {
                term += bump;
                Entry {
                    log_id: lid(term, 1, first + i as u64),
                    payload,
                }
            })
            .collect()
    })
}

fn arb_snapshot_meta() -> impl Strategy<Value = SnapshotMeta> {
    (
        proptest::option::of(arb_log_id()),
        arb_stored_membership(),
        "[a-z0-9-]{0,20}",
    )
        .prop_map(|(last_log_id, last_membership, snapshot_id)| SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        })
}

fn arb_witness_record() -> impl Strategy<Value = WitnessRecord> {
    let snapshot = (arb_snapshot_meta(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
        |(meta, chunk_count, size_bytes, crc32)| SnapshotRef {
            meta,
            chunk_count,
            size_bytes,
            crc32,
        },
    );
    (
        "[a-f0-9]{0,32}",
        arb_vote(),
        proptest::option::of(arb_log_id()),
        proptest::option::of(arb_log_id()),
        proptest::option::of(snapshot),
    )
        .prop_map(|(cluster_id, vote, last_log_id, committed, snapshot)| WitnessRecord {
            cluster_id,
            vote,
            last_log_id,
            committed,
            snapshot,
        })
}

fn arb_sm_content() -> impl Strategy<Value = SmContent> {
    (
        prop::collection::btree_map("\\PC{0,10}", arb_bytes(16), 0..8),
        proptest::option::of(arb_log_id()),
        arb_stored_membership(),
    )
        .prop_map(|(kv, applied, membership)| SmContent {
            kv: kv.into_iter().map(|(k, v)| (k, axum::body::Bytes::from(v))).collect(),
            applied,
            membership,
            sessions: Default::default(),
        })
}

/// The snapshot data blob as documented in crates/storage/src/snapshot.rs:
/// `[magic "WSHIPSD2"][body_len u64 LE][crc32 u32 LE][body = bincode SmContent]`.
fn encode_snapshot_data(content: &SmContent) -> Vec<u8> {
    let body = bincode::serialize(content).expect("serialize");
    let mut data = b"WSHIPSD2".to_vec();
    data.extend_from_slice(&(body.len() as u64).to_le_bytes());
    data.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    data.extend_from_slice(&body);
    data
}

fn meta_of(content: &SmContent) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: content.applied,
        last_membership: content.membership.clone(),
        snapshot_id: "s".into(),
    }
}

/// `magic` + crc32(payload) + payload: random payloads that pass the CRC, so
/// the bincode decoding behind it sees garbage.
fn crc_framed(magic: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Every single-bit flip of `bytes`.
fn bit_flips(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..bytes.len() * 8).map(move |bit| {
        let mut b = bytes.to_vec();
        b[bit / 8] ^= 1 << (bit % 8);
        b
    })
}

fn is_corrupt_znode(e: &WitnessError, znode: &str) -> bool {
    matches!(e, WitnessError::Corrupt { path, .. } if path == znode) && e.to_string().contains(znode)
}

const ZNODE: &str = "/walship/prop/witness";
const SEGMENT_ZNODE: &str = "/walship/prop/wal/00000000000000000007";

// ---- W's znodes ------------------------------------------------------------

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn witness_record_round_trips_and_every_flip_or_cut_is_an_error(r in arb_witness_record()) {
        let bytes = encode_record(&r);
        prop_assert_eq!(decode_record(&bytes, ZNODE).expect("valid record"), r);
        within("decode_record of flipped/truncated records", move || {
            for (bit, flipped) in bit_flips(&bytes).enumerate() {
                let e = decode_record(&flipped, ZNODE).expect_err(&format!("bit {bit} flipped must be an error"));
                assert!(is_corrupt_znode(&e, ZNODE), "bit {bit}: {e}");
            }
            for len in 0..bytes.len() {
                let e = decode_record(&bytes[..len], ZNODE).expect_err(&format!("cut at {len} must be an error"));
                assert!(is_corrupt_znode(&e, ZNODE), "cut at {len}: {e}");
            }
        });
    }

    #[test]
    fn witness_record_garbage_is_an_error(garbage in arb_bytes(512), framed in any::<bool>()) {
        // Framed garbage passes magic and CRC: bincode sees random bytes.
        let bytes = if framed { crc_framed(b"WSW1", &garbage) } else { garbage };
        let res = within("decode_record of garbage", move || decode_record(&bytes, ZNODE).map(|_| ()));
        if let Err(e) = res {
            prop_assert!(is_corrupt_znode(&e, ZNODE), "{}", e);
        }
    }

    #[test]
    fn chunk_round_trips_and_every_flip_or_cut_is_an_error(data in arb_bytes(256)) {
        let bytes = encode_chunk(&data);
        prop_assert_eq!(decode_chunk(&bytes, ZNODE).expect("valid chunk"), &data[..]);
        within("decode_chunk of flipped/truncated chunks", move || {
            for (bit, flipped) in bit_flips(&bytes).enumerate() {
                let e = decode_chunk(&flipped, ZNODE).expect_err(&format!("bit {bit} flipped must be an error"));
                assert!(is_corrupt_znode(&e, ZNODE), "bit {bit}: {e}");
            }
            for len in 0..bytes.len() {
                let e = decode_chunk(&bytes[..len], ZNODE).expect_err(&format!("cut at {len} must be an error"));
                assert!(is_corrupt_znode(&e, ZNODE), "cut at {len}: {e}");
            }
        });
    }

    #[test]
    fn chunk_garbage_is_an_error_or_its_payload(garbage in arb_bytes(512)) {
        let g = garbage.clone();
        let res = within("decode_chunk of garbage", move || decode_chunk(&g, ZNODE).map(<[u8]>::to_vec));
        match res {
            // Only a well-formed frame decodes, to exactly its payload.
            Ok(payload) => prop_assert_eq!(crc_framed(b"WSC1", &payload), garbage),
            Err(e) => prop_assert!(is_corrupt_znode(&e, ZNODE), "{}", e),
        }
    }

    #[test]
    fn segment_round_trips_and_every_flip_is_an_error(entries in arb_entries(7, 1..6)) {
        let bytes = encode_segment(&entries);
        prop_assert_eq!(decode_segment(&bytes, SEGMENT_ZNODE, 7).expect("valid segment"), entries.clone());
        within("decode_segment of flipped segments", move || {
            for (bit, flipped) in bit_flips(&bytes).enumerate() {
                let e = decode_segment(&flipped, SEGMENT_ZNODE, 7)
                    .expect_err(&format!("bit {bit} flipped must be an error"));
                assert!(is_corrupt_znode(&e, SEGMENT_ZNODE), "bit {bit}: {e}");
            }
        });
    }

    /// A segment has no trailer, so a cut exactly at a record boundary reads
    /// as a shorter segment (ZooKeeper writes a znode whole, so a torn znode
    /// cannot happen); any other cut is an error. Never a different entry.
    #[test]
    fn segment_cut_is_an_error_or_a_prefix_at_a_record_boundary(entries in arb_entries(7, 1..6)) {
        let bytes = encode_segment(&entries);
        let mut boundaries = BTreeMap::new();
        let mut at = 4;
        for (k, e) in entries.iter().enumerate() {
            at += walship::witness::record::entry_bytes(e).len();
            boundaries.insert(at, k + 1);
        }
        within("decode_segment of truncated segments", move || {
            for len in 0..bytes.len() {
                match decode_segment(&bytes[..len], SEGMENT_ZNODE, 7) {
                    Ok(got) => {
                        let n = boundaries.get(&len).copied();
                        assert_eq!(Some(got.len()), n, "cut at {len} decoded, but not at a record boundary");
                        assert_eq!(got[..], entries[..got.len()], "cut at {len}");
                    }
                    Err(e) => assert!(is_corrupt_znode(&e, SEGMENT_ZNODE), "cut at {len}: {e}"),
                }
            }
        });
    }

    #[test]
    fn segment_garbage_is_an_error(
        garbage in prop::collection::vec(arb_bytes(200), 0..4),
        raw in arb_bytes(512),
        framed in any::<bool>(),
        first in prop_oneof![Just(0u64), Just(7), Just(u64::MAX - 1), any::<u64>()],
    ) {
        // Framed: magic, then records with correct lengths and CRCs around
        // random payloads, so bincode's Entry decoding sees the garbage.
        let bytes = if framed {
            let mut b = b"WSG1".to_vec();
            for p in &garbage {
                b.extend_from_slice(&(p.len() as u32).to_le_bytes());
                b.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
                b.extend_from_slice(p);
            }
            b
        } else {
            raw
        };
        let res = within("decode_segment of garbage", move || decode_segment(&bytes, SEGMENT_ZNODE, first));
        match res {
            Ok(got) => {
                for (k, e) in got.iter().enumerate() {
                    prop_assert_eq!(e.log_id.index, first + k as u64);
                }
            }
            Err(e) => prop_assert!(is_corrupt_znode(&e, SEGMENT_ZNODE), "{}", e),
        }
    }
}

// ---- the snapshot data blob --------------------------------------------------

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn snapshot_data_round_trips_and_every_flip_or_cut_is_an_error(content in arb_sm_content()) {
        let data = encode_snapshot_data(&content);
        let meta = meta_of(&content);
        prop_assert_eq!(decode_snapshot_data(&data, &meta, "snap-origin").expect("valid blob"), content);
        within("decode_snapshot_data of flipped/truncated blobs", move || {
            let is_named = |e: &StoreError| matches!(e, StoreError::BadSnapshot { origin, .. } if origin == "snap-origin");
            for (bit, flipped) in bit_flips(&data).enumerate() {
                let e = decode_snapshot_data(&flipped, &meta, "snap-origin")
                    .expect_err(&format!("bit {bit} flipped must be an error"));
                assert!(is_named(&e), "bit {bit}: {e}");
            }
            for len in 0..data.len() {
                let e = decode_snapshot_data(&data[..len], &meta, "snap-origin")
                    .expect_err(&format!("cut at {len} must be an error"));
                assert!(is_named(&e), "cut at {len}: {e}");
            }
        });
    }

    #[test]
    fn snapshot_data_garbage_is_an_error(garbage in arb_bytes(512), framed in any::<bool>(), meta in arb_snapshot_meta()) {
        let bytes = if framed {
            let mut d = b"WSHIPSD1".to_vec();
            d.extend_from_slice(&(garbage.len() as u64).to_le_bytes());
            d.extend_from_slice(&crc32fast::hash(&garbage).to_le_bytes());
            d.extend_from_slice(&garbage);
            d
        } else {
            garbage
        };
        let m = meta.clone();
        let res = within("decode_snapshot_data of garbage", move || decode_snapshot_data(&bytes, &m, "o"));
        match res {
            // Whatever decodes must at least agree with its meta.
            Ok(c) => {
                prop_assert_eq!(c.applied, meta.last_log_id);
                prop_assert_eq!(c.membership, meta.last_membership);
            }
            Err(e) => prop_assert!(matches!(e, StoreError::BadSnapshot { .. }), "{}", e),
        }
    }
}

// ---- node.meta -----------------------------------------------------------------

fn corrupt_names(e: &StoreError, path: &Path) -> bool {
    matches!(e, StoreError::Corrupt { path: p, .. } if p == path) && e.to_string().contains(&path.display().to_string())
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn node_meta_round_trips_and_every_flip_or_cut_is_an_error(
        cluster in "[a-z0-9-]{1,20}",
        cluster_id in "[a-f0-9]{0,32}",
        node_id in 1..3u64,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = NodeMeta { cluster, cluster_id, node_id };
        write_meta(dir.path(), &meta).expect("write node.meta");
        prop_assert_eq!(read_meta(dir.path()).expect("read").expect("present"), meta);
        let path = walship::storage::meta_path(dir.path());
        let bytes = std::fs::read(&path).expect("read node.meta");
        let data_dir = dir.path().to_path_buf();
        within("read_meta of flipped/truncated files", move || {
            for (bit, flipped) in bit_flips(&bytes).enumerate() {
                std::fs::write(&path, &flipped).expect("write");
                let e = read_meta(&data_dir).expect_err(&format!("bit {bit} flipped must be an error"));
                assert!(corrupt_names(&e, &path), "bit {bit}: {e}");
            }
            for len in 0..bytes.len() {
                std::fs::write(&path, &bytes[..len]).expect("write");
                let e = read_meta(&data_dir).expect_err(&format!("cut at {len} must be an error"));
                assert!(corrupt_names(&e, &path), "cut at {len}: {e}");
            }
        });
    }

    #[test]
    fn node_meta_garbage_is_an_error(garbage in arb_bytes(256), framed in any::<bool>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = walship::storage::meta_path(dir.path());
        // Framed: the checked-file header is right, the payload is garbage.
        let bytes = if framed {
            let mut b = b"WSHIPNM1".to_vec();
            b.extend_from_slice(&(garbage.len() as u32).to_le_bytes());
            b.extend_from_slice(&crc32fast::hash(&garbage).to_le_bytes());
            b.extend_from_slice(&garbage);
            b
        } else {
            garbage
        };
        std::fs::write(&path, &bytes).expect("write");
        let data_dir = dir.path().to_path_buf();
        if let Err(e) = within("read_meta of garbage", move || read_meta(&data_dir)) {
            prop_assert!(corrupt_names(&e, &path), "{}", e);
        }
    }
}

// ---- history files ---------------------------------------------------------------

fn arb_op_record() -> impl Strategy<Value = OpRecord> {
    (
        prop_oneof![
            Just(OpKind::Put),
            Just(OpKind::Delete),
            Just(OpKind::Cas),
            Just(OpKind::Get)
        ],
        "\\PC{0,8}",
        prop_oneof![Just(Outcome::Ok), Just(Outcome::Fail), Just(Outcome::Unknown)],
        proptest::option::of("\\PC{0,6}"),
        proptest::option::of("\\PC{0,6}"),
        any::<bool>(),
        0..8u32,
        0..1_000_000u64,
        0..1_000u64,
    )
        .prop_map(|(op, key, result, value, read, cas_ok, client, invoke_ns, took)| {
            // Only what `History::load` accepts: put has a value, get/delete
            // none, an answered cas says whether it swapped.
            let value = match op {
                OpKind::Put => Some(value.unwrap_or_default()),
                OpKind::Get | OpKind::Delete => None,
                OpKind::Cas => value,
            };
            let cas_ok = (op == OpKind::Cas && result == Outcome::Ok).then_some(cas_ok);
            OpRecord {
                op,
                key,
                expect: None,
                value,
                result,
                cas_ok,
                read,
                client,
                invoke_ns,
                complete_ns: invoke_ns + took,
            }
        })
}

fn load_bytes(dir: &Path, bytes: &[u8]) -> (PathBuf, Result<History, walship::history::HistoryError>) {
    let path = dir.join("history.jsonl");
    std::fs::write(&path, bytes).expect("write");
    let res = within("History::load", {
        let path = path.clone();
        move || History::load(&path)
    });
    (path, res)
}

fn history_error_names(e: &walship::history::HistoryError, path: &Path) -> bool {
    e.to_string().contains(&path.display().to_string())
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn history_round_trips_and_a_cut_is_an_error_or_a_prefix(
        ops in prop::collection::vec(arb_op_record(), 0..6),
        cut_points in prop::collection::vec(any::<prop::sample::Index>(), 32),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let text: String = ops.iter().map(|o| o.to_json_line() + "\n").collect();
        let (_, loaded) = load_bytes(dir.path(), text.as_bytes());
        prop_assert_eq!(loaded.expect("valid history").ops, ops.clone());
        // No CRC: a cut line is an error naming the file and line, a cut at a
        // line end is the history up to there. Never a changed operation.
        // Cuts at and around every line end, and at random points.
        let mut cuts: BTreeSet<usize> = cut_points.iter().map(|i| i.index(text.len() + 1)).collect();
        for (i, _) in text.match_indices('\n') {
            cuts.extend([i, i + 1, i + 2]);
        }
        for len in cuts.into_iter().filter(|l| *l <= text.len()) {
            if !text.is_char_boundary(len) {
                continue;
            }
            let (path, res) = load_bytes(dir.path(), &text.as_bytes()[..len]);
            match res {
                Ok(h) => prop_assert_eq!(&h.ops[..], &ops[..h.ops.len()], "cut at {}", len),
                Err(e) => prop_assert!(history_error_names(&e, &path), "{}", e),
            }
        }
    }

    #[test]
    fn history_garbage_is_an_error(
        garbage in arb_bytes(512),
        lines in prop::collection::vec("[{}\\[\\]\":,a-z0-9 \\\\-]{0,60}", 0..6),
        as_lines in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = if as_lines { lines.join("\n").into_bytes() } else { garbage };
        let (path, res) = load_bytes(dir.path(), &bytes);
        if let Err(e) = res {
            prop_assert!(history_error_names(&e, &path), "{}", e);
        }
    }
}

// ---- storage files under a data dir ---------------------------------------------

/// Every append starts a new segment, so the log spans several files.
const SEGMENT_BYTES: u64 = 1;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// What a data dir holds after `write_data_dir`.
struct Written {
    entries: Vec<Entry>,
    vote: Vote,
    kv: BTreeMap<String, Vec<u8>>,
}

/// A log (several segments), a vote, a snapshot of the applied entries and
/// `node.meta`, all written through the public API.
async fn write_data_dir(dir: &Path, entries: &[Entry], batch: usize, vote: Vote) -> Written {
    let mut log = LogStore::open_with_segment_max_bytes(dir, SEGMENT_BYTES)
        .await
        .expect("open log");
    for chunk in entries.chunks(batch.max(1)) {
        log.blocking_append(chunk.to_vec()).await.expect("append");
    }
    log.save_vote(&vote).await.expect("save vote");
    drop(log);
    let mut sm = StateMachine::open(dir).await.expect("open sm");
    sm.apply(entries.to_vec()).await.expect("apply");
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    // The blob is the documented format (the one encode_snapshot_data writes).
    let current = sm.current_snapshot().await.expect("read").expect("a snapshot");
    assert_eq!(current.meta, snap.meta);
    let file = std::fs::read(&current.file.path).expect("read the snapshot file");
    let data = file[current.data_offset_bytes as usize..].to_vec();
    let content = decode_snapshot_data(&data, &snap.meta, "built").expect("own snapshot decodes");
    assert_eq!(encode_snapshot_data(&content), data, "documented blob format");
    write_meta(
        dir,
        &NodeMeta {
            cluster: "prop".into(),
            cluster_id: "abc".into(),
            node_id: 1,
        },
    )
    .expect("write node.meta");
    Written {
        entries: entries.to_vec(),
        vote,
        kv: content.kv.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect(),
    }
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("raft/log"))
        .expect("list log dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    files.push(dir.join("raft/state"));
    files.push(dir.join("snapshot/current.snap"));
    files.push(walship::storage::meta_path(dir));
    files
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    data_files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect()
}

/// Reopens everything in `dir`; checks each store either fails naming a file
/// it reads or returns exactly what was written (the log: a prefix, which
/// only a torn tail of the last segment may cut). Returns how many log
/// entries came back, or None if the log did not open.
async fn reopen_and_check(dir: &Path, w: &Written, damaged: &Path) -> Option<usize> {
    let log_files: Vec<PathBuf> = data_files(dir)
        .into_iter()
        .filter(|p| p.starts_with(dir.join("raft")))
        .collect();
    let log_len = match LogStore::open_with_segment_max_bytes(dir, SEGMENT_BYTES).await {
        Ok(log) => {
            let got = log.entries(..).expect("read the log");
            assert!(got.len() <= w.entries.len(), "more entries than written");
            assert_eq!(got[..], w.entries[..got.len()], "the log came back different");
            assert_eq!(log.vote(), Some(w.vote), "the vote came back different");
            if got.len() < w.entries.len() {
                let last = segment_files(dir).pop();
                assert!(
                    damaged == last.as_deref().unwrap_or(Path::new("")) || !damaged.exists(),
                    "entries lost ({} of {}) though the damage was in {}, not the last segment",
                    got.len(),
                    w.entries.len(),
                    damaged.display()
                );
            }
            Some(got.len())
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                log_files.iter().any(|f| msg.contains(&f.display().to_string())),
                "log open error names none of its files: {msg}"
            );
            assert!(
                damaged.starts_with(dir.join("raft")),
                "log failed though {} was damaged: {msg}",
                damaged.display()
            );
            None
        }
    };
    let snap = dir.join("snapshot/current.snap");
    match StateMachine::open(dir).await {
        Ok(sm) => {
            assert_ne!(damaged, snap, "a damaged snapshot file opened");
            for (k, v) in &w.kv {
                assert_eq!(sm.get(k).as_ref(), Some(v), "key {k:?} came back different");
            }
            assert_eq!(sm.len(), w.kv.len());
        }
        Err(e) => {
            assert_eq!(
                damaged,
                snap,
                "state machine failed though {} was damaged: {e}",
                damaged.display()
            );
            assert!(corrupt_names(&e, &snap), "{e}");
        }
    }
    let meta = walship::storage::meta_path(dir);
    match read_meta(dir) {
        Ok(m) => {
            assert_ne!(damaged, meta, "a damaged node.meta read");
            assert_eq!(m.expect("node.meta").node_id, 1);
        }
        Err(e) => {
            assert_eq!(
                damaged,
                meta,
                "node.meta failed though {} was damaged: {e}",
                damaged.display()
            );
            assert!(corrupt_names(&e, &meta), "{e}");
        }
    }
    log_len
}

proptest! {
    #![proptest_config(cases(24))]

    /// Random byte damage to any file of a data dir.
    #[test]
    fn damaged_data_dir_fails_naming_the_file_or_keeps_a_prefix(
        entries in arb_entries(0, 4..14),
        batch in 1..4usize,
        vote in arb_vote(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
        which in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let w = rt.block_on(write_data_dir(dir.path(), &entries, batch, vote));
        prop_assert!(segment_files(dir.path()).len() >= 2, "test wants several segments");
        let files = data_files(dir.path());
        let last_before = segment_files(dir.path()).pop();
        let target = which.get(&files).clone();
        let original = std::fs::read(&target).expect("read");
        let mut bytes = original.clone();
        for (at, mask) in &damage {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        // Two flips of one byte may cancel out.
        prop_assume!(bytes != original);
        std::fs::write(&target, &bytes).expect("write");
        let path = dir.path().to_path_buf();
        let first = within("reopen after damage", {
            let target = target.clone();
            move || rt.block_on(async {
                let first = reopen_and_check(&path, &w, &target).await;
                // A repaired torn tail stays repaired: the same prefix again.
                let second = reopen_and_check(&path, &w, &target).await;
                assert_eq!(first, second, "second open differs from the first");
                first
            })
        });
        if target.extension().is_some_and(|e| e == "log") {
            // Damage inside a non-last segment can never pass as a torn tail.
            if first.is_some() {
                prop_assert_eq!(Some(&target), last_before.as_ref(), "damage to a non-last segment went unnoticed");
            }
        } else {
            prop_assert!(first.is_some() || target.ends_with("raft/state"));
        }
    }

    /// Every truncation of every file of a data dir.
    #[test]
    fn truncated_data_dir_fails_naming_the_file_or_keeps_a_prefix(
        entries in arb_entries(0, 4..10),
        batch in 1..4usize,
        vote in arb_vote(),
        which in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let w = rt.block_on(write_data_dir(dir.path(), &entries, batch, vote));
        let files = data_files(dir.path());
        let target = which.get(&files).clone();
        let original = std::fs::read(&target).expect("read");
        let is_last_segment = segment_files(dir.path()).last() == Some(&target);
        let path = dir.path().to_path_buf();
        within("reopen after truncation", move || rt.block_on(async {
            for len in 0..original.len() {
                std::fs::write(&target, &original[..len]).expect("cut");
                let got = reopen_and_check(&path, &w, &target).await;
                if target.extension().is_some_and(|e| e == "log") && !is_last_segment {
                    assert_eq!(got, None, "{} cut to {len} bytes went unnoticed", target.display());
                }
                // Put the whole file back (a torn-tail repair cut it further).
                std::fs::write(&target, &original).expect("restore");
            }
        }));
    }
}
