//! Snapshots that stream: built into their file, checked and decoded from
//! it, installed from a leader's file or W's blob, several chunks large
//! (W's chunks are under 1 MiB, the leader's pieces 4 MiB), with a damaged
//! byte anywhere an error naming the file.

use std::collections::BTreeMap;
use std::io::Read;
use std::io::Write;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::RaftSnapshotBuilder;
use serde::Serialize;
use walship_types::Entry;
use walship_types::Request;
use walship_types::SnapshotFile;

use super::super::snapshot;
use super::super::snapshot::SmContent;
use super::super::StateMachine;
use super::super::StoreError;
use super::lid;
use super::open_sm;
use super::witness_blob;
use crate::Application;
use crate::SnapshotWriter;

const VALUE_BYTES: usize = 512 * 1024;

fn flip_byte(path: &std::path::Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read");
    f.write_all_at(&[b[0] ^ 0x40], offset).expect("write");
}
/// 20 MiB of values: over 20 of W's chunks, 5 of the leader's pieces.
const VALUES: u64 = 40;

fn big_value(index: u64) -> Vec<u8> {
    (0..VALUE_BYTES).map(|i| (i as u64 * 31 + index) as u8).collect()
}

fn big_entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes
        .map(|i| Entry {
            log_id: lid(term, i),
            payload: EntryPayload::Normal(walship_types::Batch::one(Request::Set {
                key: format!("big{i}"),
                value: big_value(i),
            })),
        })
        .collect()
}

/// A state machine holding `VALUES` big values, with its snapshot built.
async fn big_snapshot(dir: &std::path::Path) -> (StateMachine, walship_types::SnapshotMeta, std::path::PathBuf) {
    let mut sm = open_sm(dir).await;
    sm.apply(big_entries(1, 0..=VALUES - 1)).await.expect("apply");
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let path = dir.join("snapshot/current.snap");
    let file_bytes = std::fs::metadata(&path).expect("stat").len();
    assert!(
        file_bytes > VALUES * VALUE_BYTES as u64,
        "the snapshot file holds every value: {file_bytes} bytes"
    );
    (sm, snap.meta, path)
}

fn assert_holds_every_value(sm: &StateMachine) {
    assert_eq!(sm.len(), VALUES as usize);
    for i in 0..VALUES {
        assert!(sm.get(&format!("big{i}")) == Some(big_value(i)), "big{i} differs");
    }
    assert_eq!(sm.applied(), Some(lid(1, VALUES - 1)));
}

async fn open_file(path: &std::path::Path) -> SnapshotFile {
    SnapshotFile {
        file: tokio::fs::File::open(path).await.expect("open"),
        path: path.to_path_buf(),
    }
}

#[tokio::test]
async fn a_snapshot_of_many_chunks_is_installed_from_a_file_and_from_a_blob() {
    let leader = tempfile::tempdir().expect("tempdir");
    let (sm, meta, path) = big_snapshot(leader.path()).await;

    // As openraft hands it over (a file elsewhere: copied in).
    let follower = tempfile::tempdir().expect("tempdir");
    let mut f = open_sm(follower.path()).await;
    f.install_snapshot(&meta, Box::new(open_file(&path).await))
        .await
        .expect("install");
    assert_holds_every_value(&f);
    drop(f);
    assert_holds_every_value(&open_sm(follower.path()).await);

    // As the leader's pieces arrive: staged here, renamed into place.
    let staged_dir = tempfile::tempdir().expect("tempdir");
    let g = open_sm(staged_dir.path()).await;
    let staged = g.staging_path("leader");
    std::fs::copy(&path, &staged).expect("stage");
    assert!(g
        .install_snapshot_file(&meta, open_file(&staged).await, false)
        .await
        .expect("install"));
    assert!(!staged.exists(), "the staged file was renamed into place");
    assert_holds_every_value(&g);

    // As W's snapshot arrives in a wiped node (adoption).
    let (w_meta, blob) = witness_blob(&sm, leader.path()).await;
    let wiped = tempfile::tempdir().expect("tempdir");
    let h = open_sm(wiped.path()).await;
    assert!(h.install_snapshot_blob(&w_meta, &blob, true).await.expect("install"));
    assert_holds_every_value(&h);
    let current = h.current_snapshot().await.expect("read").expect("a snapshot");
    assert_eq!(current.meta, meta);
}

#[tokio::test]
async fn a_damaged_byte_deep_in_a_big_snapshot_is_an_error_naming_the_file() {
    let leader = tempfile::tempdir().expect("tempdir");
    let (_sm, meta, path) = big_snapshot(leader.path()).await;
    let len = std::fs::metadata(&path).expect("stat").len();

    let target_dir = tempfile::tempdir().expect("tempdir");
    let target = open_sm(target_dir.path()).await;
    let staged = target.staging_path("leader");
    std::fs::copy(&path, &staged).expect("stage");
    flip_byte(&staged, len / 2);
    let err = target
        .check_snapshot_file(&staged, &meta)
        .await
        .expect_err("a flipped byte must be found");
    let named = |e: &StoreError| matches!(e, StoreError::BadSnapshot { origin, reason } if origin == &staged.display().to_string() && reason.contains("crc32 mismatch"));
    assert!(named(&err), "{err}");
    let err = target
        .install_snapshot_file(&meta, open_file(&staged).await, false)
        .await
        .expect_err("a flipped byte must be refused");
    assert!(named(&err), "{err}");
    assert_eq!(target.applied(), None, "nothing installed");
    assert!(target.current_snapshot().await.expect("read").is_none());
    assert!(!staged.exists(), "a refused staged file is removed");

    // The node's own snapshot damaged: opening names it.
    flip_byte(&path, len / 2);
    let err = StateMachine::open(leader.path()).await.expect_err("must fail");
    assert!(
        matches!(&err, StoreError::Corrupt { path: p, reason, .. } if *p == path && reason.contains("crc32 mismatch")),
        "{err}"
    );
}

/// The map's encoding, and the framing, are the ones snapshots always had:
/// `walship_types::bytes_map` over a `BTreeMap<String, Vec<u8>>`, then the
/// session table; an application's part as bincode's byte string.
#[test]
fn the_streamed_blob_is_the_format_snapshots_always_had() {
    #[derive(Serialize)]
    struct Before {
        #[serde(with = "walship_types::bytes_map")]
        kv: BTreeMap<String, Vec<u8>>,
        applied: Option<walship_types::LogId>,
        membership: walship_types::StoredMembership,
        sessions: crate::Sessions,
    }
    fn framed(magic: &[u8; 8], body: Vec<u8>) -> Vec<u8> {
        let mut out = magic.to_vec();
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
    let mut content = SmContent {
        applied: Some(lid(3, 9)),
        ..SmContent::default()
    };
    content.kv.insert("a".into(), vec![1, 2, 3].into());
    content.kv.insert("b".into(), Vec::new().into());
    content.sessions.open(7);
    let before = Before {
        kv: content.kv.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect(),
        applied: content.applied,
        membership: content.membership.clone(),
        sessions: content.sessions.clone(),
    };
    assert_eq!(
        snapshot::encode_data(&content, None).expect("encode"),
        framed(b"WSHIPSD2", bincode::serialize(&before).expect("encode"))
    );
    let app = b"the application's state".to_vec();
    let with_app = bincode::serialize(&(&before, serde_bytes::Bytes::new(&app))).expect("encode");
    let blob = snapshot::encode_data(&content, Some(&app)).expect("encode");
    assert_eq!(blob, framed(b"WSHIPSA2", with_app));
    let meta = walship_types::SnapshotMeta {
        last_log_id: content.applied,
        last_membership: content.membership.clone(),
        snapshot_id: "s".into(),
    };
    let (decoded, decoded_app) = snapshot::decode_data_with_app(&blob, &meta, "o").expect("decode");
    assert_eq!((decoded, decoded_app), (content, Some(app)));
}

/// A snapshot written before the session table (WSHIPSD1) still opens.
#[tokio::test]
async fn a_version_1_snapshot_file_opens_with_an_empty_session_table() {
    #[derive(Serialize)]
    struct V1 {
        #[serde(with = "walship_types::bytes_map")]
        kv: BTreeMap<String, Vec<u8>>,
        applied: Option<walship_types::LogId>,
        membership: walship_types::StoredMembership,
    }
    let v1 = V1 {
        kv: [("k".to_string(), b"v".to_vec())].into(),
        applied: Some(lid(1, 4)),
        membership: Default::default(),
    };
    let body = bincode::serialize(&v1).expect("encode");
    let meta = walship_types::SnapshotMeta {
        last_log_id: v1.applied,
        last_membership: v1.membership.clone(),
        snapshot_id: "old".into(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot/current.snap");
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let mut file = snapshot::file_head(&path, &meta).expect("head");
    file.extend_from_slice(b"WSHIPSD1");
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    file.extend_from_slice(&body);
    std::fs::write(&path, file).expect("write");
    let sm = open_sm(dir.path()).await;
    assert_eq!(sm.get("k"), Some(b"v".to_vec()));
    assert_eq!(sm.applied(), Some(lid(1, 4)));
    assert_eq!(sm.sessions(), 0);
}

/// An application whose state is a list of blocks, written and read back
/// block by block.
#[derive(Default)]
struct Blocks(Arc<Vec<Vec<u8>>>);

impl Application for Blocks {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, String> {
        Arc::make_mut(&mut self.0).push(command.to_vec());
        Ok(Vec::new())
    }
    fn snapshot(&self) -> SnapshotWriter {
        let frozen = Arc::clone(&self.0);
        Box::new(move |w: &mut dyn Write| {
            for block in frozen.iter() {
                w.write_all(&(block.len() as u64).to_le_bytes())?;
                w.write_all(block)?;
            }
            Ok(())
        })
    }
    fn restore(&mut self, r: &mut dyn Read) -> Result<(), String> {
        let mut blocks = Vec::new();
        let mut len = [0u8; 8];
        loop {
            match r.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.to_string()),
            }
            let mut block = vec![0u8; u64::from_le_bytes(len) as usize];
            r.read_exact(&mut block).map_err(|e| e.to_string())?;
            blocks.push(block);
        }
        self.0 = Arc::new(blocks);
        Ok(())
    }
}

#[tokio::test]
async fn an_application_snapshot_streams_through_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachine::open_with_app(dir.path(), Some(Box::new(Blocks::default())))
        .await
        .expect("open");
    let entries: Vec<Entry> = (0..12)
        .map(|i| Entry {
            log_id: lid(1, i),
            payload: EntryPayload::Normal(walship_types::Batch::one(Request::App(big_value(i)))),
        })
        .collect();
    sm.apply(entries).await.expect("apply");
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let blocks = |sm: &StateMachine| {
        sm.with_app(|a| {
            let any: &dyn std::any::Any = a;
            any.downcast_ref::<Blocks>().expect("Blocks").0.clone()
        })
        .expect("an app")
    };
    let other = tempfile::tempdir().expect("tempdir");
    let mut target = StateMachine::open_with_app(other.path(), Some(Box::new(Blocks::default())))
        .await
        .expect("open");
    target
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("install");
    assert_eq!(blocks(&target), blocks(&sm));
    assert_eq!(blocks(&target).len(), 12);
    drop(target);
    let reopened = StateMachine::open_with_app(other.path(), Some(Box::new(Blocks::default())))
        .await
        .expect("reopen");
    assert_eq!(blocks(&reopened), blocks(&sm));
}
