//! The bytes W keeps in ZooKeeper: its state record, WAL segments and
//! snapshot chunks. Every one carries a crc32 that is checked on read; a
//! mismatch is an error naming the znode, never a silent skip.
//!
//! Formats (little endian):
//! - record:   "WSW2" crc32(payload) payload=bincode(WitnessRecord); "WSW1"
//!   (the same payload) is still read. The magic says which writers may
//!   touch W: a "WSW2" writer bumps W's epoch on every write it does not
//!   pipeline (`crate::pipeline`), and a writer that does not know the epoch
//!   must not write W at all, so binaries older than the pipeline, which
//!   only know "WSW1", refuse such a record instead of breaking the
//!   pipeline's chain of checks.
//! - segment:  "WSG1" then per entry: len:u32 crc32(payload):u32 payload=bincode(Entry)
//! - chunk:    "WSC1" crc32(payload) payload=raw snapshot bytes

use serde::Deserialize;
use serde::Serialize;

use super::WitnessError;
/// The digest of one entry (crc32 of its bincode bytes), the number a
/// segment record stores beside it; it lives in `walship-types`, as the
/// local log's adoption compares digests too.
pub use walship_types::entry_digest;
use walship_types::Entry;
use walship_types::LogId;
use walship_types::SnapshotMeta;
use walship_types::Vote;

const RECORD_MAGIC: &[u8; 4] = b"WSW2";
/// The record before W's epoch existed: read, never written.
const RECORD_MAGIC_V1: &[u8; 4] = b"WSW1";
const SEGMENT_MAGIC: &[u8; 4] = b"WSG1";
const CHUNK_MAGIC: &[u8; 4] = b"WSC1";

/// W's whole state as a voter (witness-protocol.md, "W's state in ZooKeeper").
/// Its znode version is the compare-and-set token of every W decision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WitnessRecord {
    /// Random id chosen at genesis; a node's data dir remembers it, so a node
    /// never joins a cluster path that was wiped and re-created.
    pub cluster_id: String,
    pub vote: Vote,
    pub last_log_id: Option<LogId>,
    /// The highest committed log id a leader has told W (informational).
    pub committed: Option<LogId>,
    /// W's snapshot; every entry up to `snapshot.meta.last_log_id` is in it
    /// and WAL segments wholly behind it are garbage.
    pub snapshot: Option<SnapshotRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRef {
    pub meta: SnapshotMeta,
    pub chunk_count: u32,
    pub size_bytes: u64,
    /// crc32 of the whole snapshot, on top of each chunk's own.
    pub crc32: u32,
}

impl WitnessRecord {
    pub fn purged(&self) -> Option<LogId> {
        self.snapshot.as_ref().and_then(|s| s.meta.last_log_id)
    }
}

fn crc_frame(magic: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn crc_unframe<'a>(magic: &[u8; 4], bytes: &'a [u8], path: &str) -> Result<&'a [u8], WitnessError> {
    if bytes.len() < 8 || &bytes[..4] != magic {
        return Err(WitnessError::corrupt(
            path,
            "bad magic: not a walship znode of this kind",
        ));
    }
    let want = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let payload = &bytes[8..];
    let got = crc32fast::hash(payload);
    if got != want {
        return Err(WitnessError::corrupt(
            path,
            format!("crc32 mismatch: stored {want:08x}, computed {got:08x}"),
        ));
    }
    Ok(payload)
}

pub fn encode_record(r: &WitnessRecord) -> Vec<u8> {
    crc_frame(RECORD_MAGIC, &bincode::serialize(r).expect("record serializes"))
}

pub fn decode_record(bytes: &[u8], path: &str) -> Result<WitnessRecord, WitnessError> {
    let magic = if bytes.starts_with(RECORD_MAGIC_V1) {
        RECORD_MAGIC_V1
    } else {
        RECORD_MAGIC
    };
    let payload = crc_unframe(magic, bytes, path)?;
    bincode::deserialize(payload).map_err(|e| WitnessError::corrupt(path, format!("undecodable record: {e}")))
}

pub fn encode_chunk(data: &[u8]) -> Vec<u8> {
    crc_frame(CHUNK_MAGIC, data)
}

pub fn decode_chunk<'a>(bytes: &'a [u8], path: &str) -> Result<&'a [u8], WitnessError> {
    crc_unframe(CHUNK_MAGIC, bytes, path)
}

/// Bytes one entry takes in a segment (framing included).
pub fn entry_bytes(e: &Entry) -> Vec<u8> {
    let payload = bincode::serialize(e).expect("entry serializes");
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The digest stored in bytes made by [`entry_bytes`].
pub fn framed_digest(framed: &[u8]) -> u32 {
    u32::from_le_bytes(framed[4..8].try_into().expect("a framed entry has a header"))
}

pub fn encode_segment<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<u8> {
    let mut out = SEGMENT_MAGIC.to_vec();
    for e in entries {
        out.extend_from_slice(&entry_bytes(e));
    }
    out
}

/// Decodes a segment and checks that its entries are consecutive from
/// `first_index` (the index in the znode's name).
pub fn decode_segment(bytes: &[u8], path: &str, first_index: u64) -> Result<Vec<Entry>, WitnessError> {
    Ok(decode_segment_digests(bytes, path, first_index)?
        .into_iter()
        .map(|(e, _)| e)
        .collect())
}

/// As [`decode_segment`], with each entry's digest ([`entry_digest`]): the
/// record's verified crc32, so it costs nothing extra.
pub fn decode_segment_digests(bytes: &[u8], path: &str, first_index: u64) -> Result<Vec<(Entry, u32)>, WitnessError> {
    if bytes.len() < 4 || &bytes[..4] != SEGMENT_MAGIC {
        return Err(WitnessError::corrupt(path, "bad magic: not a walship WAL segment"));
    }
    let mut rest = &bytes[4..];
    let mut entries: Vec<(Entry, u32)> = Vec::new();
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        if rest.len() < 8 {
            return Err(WitnessError::corrupt(
                path,
                format!("truncated record header at byte {at}"),
            ));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let want = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if rest.len() < 8 + len {
            return Err(WitnessError::corrupt(path, format!("truncated record at byte {at}")));
        }
        let payload = &rest[8..8 + len];
        let got = crc32fast::hash(payload);
        if got != want {
            return Err(WitnessError::corrupt(
                path,
                format!("crc32 mismatch in record at byte {at}: stored {want:08x}, computed {got:08x}"),
            ));
        }
        let e: Entry = bincode::deserialize(payload)
            .map_err(|err| WitnessError::corrupt(path, format!("undecodable record at byte {at}: {err}")))?;
        let expected = first_index + entries.len() as u64;
        if e.log_id.index != expected {
            return Err(WitnessError::corrupt(
                path,
                format!("record at byte {at} has index {}, expected {expected}", e.log_id.index),
            ));
        }
        entries.push((e, got));
        rest = &rest[8 + len..];
    }
    if entries.is_empty() {
        return Err(WitnessError::corrupt(path, "empty segment"));
    }
    Ok(entries)
}

/// ZooKeeper paths of one cluster.
#[derive(Clone, Debug)]
pub struct Paths {
    pub root: String,
}

impl Paths {
    pub fn new(cluster: &str) -> Paths {
        Paths {
            root: format!("/walship/{cluster}"),
        }
    }
    pub fn witness(&self) -> String {
        format!("{}/witness", self.root)
    }
    pub fn wal_dir(&self) -> String {
        format!("{}/wal", self.root)
    }
    /// W's epoch is the data version of the WAL directory: every write to
    /// W's record that is not a pipelined append bumps it in the same multi,
    /// and every pipelined append checks it (`crate::pipeline`).
    pub fn epoch(&self) -> String {
        self.wal_dir()
    }
    /// Zero-padded so ZooKeeper's lexical child order is index order.
    pub fn segment(&self, first_index: u64) -> String {
        format!("{}/wal/{first_index:020}", self.root)
    }
    pub fn snapshots_dir(&self) -> String {
        format!("{}/snapshots", self.root)
    }
    pub fn snapshot_dir(&self, snapshot_id: &str) -> String {
        format!("{}/snapshots/{snapshot_id}", self.root)
    }
    pub fn chunk(&self, snapshot_id: &str, chunk: u32) -> String {
        format!("{}/snapshots/{snapshot_id}/{chunk:06}", self.root)
    }
    pub fn members_dir(&self) -> String {
        format!("{}/members", self.root)
    }
    pub fn member(&self, id: u64) -> String {
        format!("{}/members/{id}", self.root)
    }
    pub fn leader(&self) -> String {
        format!("{}/leader", self.root)
    }
}

/// Parses a WAL child name back into its first index.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    if name.len() == 20 {
        name.parse().ok()
    } else {
        None
    }
}
