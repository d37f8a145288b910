//! Snapshot formats. The data blob (what openraft ships to peers and the node
//! ships to ZooKeeper) checks itself: `[magic 8][body_len u64][crc32 u32][body]`,
//! the body being bincode `SmContent` under magic `WSHIPSD2` (the key-value
//! map and the session table), or bincode `(SmContent, app bytes)` under
//! `WSHIPSA2` when the node
//! runs an embedder's application (`crate::Application`); the CRC covers the whole
//! body either way. `WSHIPSD1`/`WSHIPSA1` are the same without the session
//! table (snapshots written before it), read with an empty one. The file `snapshot/current.snap` is `[magic 8]
//! [record: bincode SnapshotMeta][data blob]`, replaced atomically.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde::Serialize;
use walship_types::LogId;
use walship_types::SnapshotMeta;
use walship_types::StoredMembership;

use super::error::Result;
use super::error::StoreError;
use super::frame;
use crate::sessions::Sessions;

const DATA_MAGIC: &[u8; 8] = b"WSHIPSD2";
/// A data blob that also carries an application's snapshot.
const APP_DATA_MAGIC: &[u8; 8] = b"WSHIPSA2";
/// The same before the session table: decoded with an empty table.
const DATA_MAGIC_V1: &[u8; 8] = b"WSHIPSD1";
const APP_DATA_MAGIC_V1: &[u8; 8] = b"WSHIPSA1";
const DATA_HEADER_BYTES: usize = 8 + 8 + 4;
const FILE_MAGIC: &[u8; 8] = b"WSHIPSF1";

/// Everything the state machine holds; a snapshot is this, encoded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SmContent {
    #[serde(with = "walship_types::bytes_map")]
    pub kv: BTreeMap<String, Vec<u8>>,
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Client sessions, for exactly-once requests (`crate::sessions`).
    pub sessions: Sessions,
}

/// `SmContent` as snapshots before the session table held it.
#[derive(Deserialize)]
struct SmContentV1 {
    #[serde(with = "walship_types::bytes_map")]
    kv: BTreeMap<String, Vec<u8>>,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl From<SmContentV1> for SmContent {
    fn from(v1: SmContentV1) -> SmContent {
        SmContent {
            kv: v1.kv,
            applied: v1.applied,
            membership: v1.membership,
            sessions: Sessions::default(),
        }
    }
}

/// `app`: the application's snapshot, if the node runs one.
pub fn encode_data(content: &SmContent, app: Option<&[u8]>) -> Result<Vec<u8>> {
    let encoded = match app {
        None => bincode::serialize(content),
        Some(app) => bincode::serialize(&(content, serde_bytes::Bytes::new(app))),
    };
    let body = encoded.map_err(|source| StoreError::Encode {
        what: "snapshot",
        source,
    })?;
    let mut data = Vec::with_capacity(DATA_HEADER_BYTES + body.len());
    data.extend_from_slice(if app.is_some() { APP_DATA_MAGIC } else { DATA_MAGIC });
    data.extend_from_slice(&(body.len() as u64).to_le_bytes());
    data.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    data.extend_from_slice(&body);
    Ok(data)
}

/// Checks a data blob's framing and CRC; on failure, the byte offset and why.
fn verify_data(data: &[u8]) -> Result<&[u8], (u64, String)> {
    let known = [DATA_MAGIC, APP_DATA_MAGIC, DATA_MAGIC_V1, APP_DATA_MAGIC_V1];
    if data.len() < DATA_HEADER_BYTES || !known.iter().any(|m| &data[..8] == *m) {
        return Err((0, "not a walship snapshot (bad magic or too short)".into()));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&data[8..16]);
    let body_len = u64::from_le_bytes(len);
    let crc = u32::from_le_bytes([data[16], data[17], data[18], data[19]]);
    let body = &data[DATA_HEADER_BYTES..];
    if body.len() as u64 != body_len {
        return Err((
            8,
            format!("snapshot body should be {body_len} bytes, is {}", body.len()),
        ));
    }
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err((
            16,
            format!("snapshot crc32 mismatch: stored {crc:08x}, computed {actual:08x}"),
        ));
    }
    Ok(body)
}

/// Verifies and decodes a data blob, and checks it matches `meta`.
/// `origin` names where the blob came from, for the error. An
/// application's part, if any, is left out (see `decode_data_with_app`).
pub fn decode_data(data: &[u8], meta: &SnapshotMeta, origin: &str) -> Result<SmContent> {
    decode_data_with_app(data, meta, origin).map(|(content, _)| content)
}

/// As `decode_data`, plus the application's snapshot if the blob has one.
pub fn decode_data_with_app(data: &[u8], meta: &SnapshotMeta, origin: &str) -> Result<(SmContent, Option<Vec<u8>>)> {
    let bad = |reason: String| StoreError::BadSnapshot {
        origin: origin.to_string(),
        reason,
    };
    let body = verify_data(data).map_err(|(off, why)| bad(format!("at byte {off}: {why}")))?;
    let undecodable = |e: bincode::Error| bad(format!("undecodable: {e}"));
    let magic = &data[..8];
    let (content, app) = if magic == APP_DATA_MAGIC {
        let (content, app): (SmContent, serde_bytes::ByteBuf) = bincode::deserialize(body).map_err(undecodable)?;
        (content, Some(app.into_vec()))
    } else if magic == APP_DATA_MAGIC_V1 {
        let (content, app): (SmContentV1, serde_bytes::ByteBuf) = bincode::deserialize(body).map_err(undecodable)?;
        (content.into(), Some(app.into_vec()))
    } else if magic == DATA_MAGIC_V1 {
        (
            bincode::deserialize::<SmContentV1>(body).map_err(undecodable)?.into(),
            None,
        )
    } else {
        (bincode::deserialize::<SmContent>(body).map_err(undecodable)?, None)
    };
    if content.applied != meta.last_log_id || content.membership != meta.last_membership {
        return Err(bad(format!(
            "data holds applied {:?} / membership {:?}, but its meta says {:?} / {:?}",
            content.applied, content.membership, meta.last_log_id, meta.last_membership
        )));
    }
    Ok((content, app))
}

pub fn write_file(path: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
    let meta_bytes = bincode::serialize(meta).map_err(|source| StoreError::Encode {
        what: "snapshot meta",
        source,
    })?;
    let mut bytes = Vec::with_capacity(8 + frame::RECORD_HEADER_BYTES + meta_bytes.len() + data.len());
    bytes.extend_from_slice(FILE_MAGIC);
    frame::encode_record(&mut bytes, &meta_bytes, path)?;
    bytes.extend_from_slice(data);
    frame::write_atomic(path, &bytes)
}

/// Reads and fully verifies the snapshot file; `None` if there is none.
pub fn read_file(path: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read", path, e)),
    };
    if bytes.len() < 8 + frame::RECORD_HEADER_BYTES || &bytes[..8] != FILE_MAGIC {
        return Err(StoreError::corrupt(
            path,
            0,
            "bad magic (not a walship snapshot file, or damaged)",
        ));
    }
    let meta_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let data_start = 8 + frame::RECORD_HEADER_BYTES + meta_len;
    if bytes.len() < data_start {
        return Err(StoreError::corrupt(
            path,
            8,
            format!("meta record of {meta_len} bytes runs past the end"),
        ));
    }
    let mut meta_payload = None;
    frame::scan_records(path, &bytes[8..data_start], 8, false, |_, p| {
        meta_payload = Some(p.to_vec());
        Ok(())
    })?;
    let meta_payload = meta_payload.ok_or_else(|| StoreError::corrupt(path, 8, "missing meta record"))?;
    let meta: SnapshotMeta = bincode::deserialize(&meta_payload)
        .map_err(|e| StoreError::corrupt(path, 8, format!("undecodable snapshot meta: {e}")))?;
    let data = bytes.split_off(data_start);
    verify_data(&data).map_err(|(off, why)| StoreError::corrupt(path, data_start as u64 + off, why))?;
    Ok(Some((meta, data)))
}
