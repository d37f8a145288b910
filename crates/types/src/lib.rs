#![deny(missing_docs)]
//! The types every layer of walship shares: openraft's type configuration,
//! the node ids (the witness's fixed one too), the client commands that go
//! through the log and what applying them returns, the cluster's genesis
//! entry, the size limits of keys and values, an entry's digest, and the
//! handle a snapshot travels in ([`SnapshotFile`]). No I/O of its own, and
//! no dependency on any other walship crate. The `walship`
//! library re-exports this crate as `walship::types`.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;

use serde::Deserialize;
use serde::Serialize;

pub mod stages;

/// Node ids of the two real nodes are 1 and 2; ZooKeeper, the passive third
/// voter, is node 3 (see witness-protocol.md, "W").
pub type NodeId = u64;
/// ZooKeeper's node id as a Raft voter (W, the witness).
pub const WITNESS_ID: NodeId = 3;
/// The ids the two real nodes may have.
pub const NODE_IDS: [NodeId; 2] = [1, 2];

openraft::declare_raft_types!(
    /// walship's openraft type configuration.
    pub TypeConfig:
        D = Batch,
        R = Vec<Response>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A snapshot as openraft hands it around: an open snapshot file
/// (walship-storage's `current.snap` format: magic, meta record, data blob)
/// and the path it was opened at. A file, not bytes in memory, so a snapshot
/// of any size costs a file descriptor; the path lets the state machine
/// rename a received file into place instead of copying it. Reads, writes
/// and seeks go to the file.
#[derive(Debug)]
pub struct SnapshotFile {
    /// The open snapshot file.
    pub file: tokio::fs::File,
    /// Where it was opened (it may have been renamed or replaced since).
    pub path: PathBuf,
}

impl SnapshotFile {
    /// Positions the file at its data blob (past the head: an 8-byte magic
    /// and the meta record `[len u32][crc32 u32][meta]`, the layout
    /// walship-storage's `snapshot.rs` defines and checks) and returns the
    /// blob's size in bytes: what W stores of a snapshot.
    pub async fn seek_to_data(&mut self) -> std::io::Result<u64> {
        use tokio::io::AsyncReadExt;
        use tokio::io::AsyncSeekExt;
        let len = self.file.metadata().await?.len();
        self.file.seek(std::io::SeekFrom::Start(8)).await?;
        let meta_len = u64::from(self.file.read_u32_le().await?);
        let data_offset = 8 + 8 + meta_len;
        if data_offset > len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: meta record runs past the end", self.path.display()),
            ));
        }
        self.file.seek(std::io::SeekFrom::Start(data_offset)).await?;
        Ok(len - data_offset)
    }
}

impl tokio::io::AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SnapshotFile {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl tokio::io::AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }
    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

/// A Raft log entry of walship's log.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log entry's id: its term (with the leader that wrote it) and index.
pub type LogId = openraft::LogId<NodeId>;
/// A Raft vote: term, candidate, and whether it was committed (granted by a quorum).
pub type Vote = openraft::Vote<NodeId>;
/// What a snapshot covers: its last log id and membership, and its id.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// A membership as stored in the log, with the log id that set it.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// The cluster's voters (nodes 1 and 2, and W, the witness).
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
/// A storage error as openraft reports it.
pub type StorageError = openraft::StorageError<NodeId>;
/// The error of a Raft RPC, as openraft's network traits return it.
pub type RpcError = openraft::error::RPCError<NodeId, openraft::BasicNode, openraft::error::RaftError<NodeId>>;
/// The Raft handle of a node.
pub type Raft = openraft::Raft<TypeConfig>;

/// The largest key a client may write (bytes of UTF-8).
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value a client may write, and the largest application
/// command: well under ZooKeeper's 1 MiB request limit, which every entry
/// must fit.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// A command in the replicated log. Keys and values are bytes on the wire of
/// the HTTP API; keys are UTF-8 (they come from a URL path).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Sets `key` to `value`.
    Set {
        /// The key (UTF-8, at most [`MAX_KEY_BYTES`]).
        key: String,
        /// The value (at most [`MAX_VALUE_BYTES`]).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Deletes `key` (a no-op when absent).
    Delete {
        /// The key.
        key: String,
    },
    /// `expect == None`: the key must be absent. `value == None`: delete it.
    Cas {
        /// The key.
        key: String,
        /// The value the key must have now (`None`: absent).
        #[serde(with = "serde_bytes")]
        expect: Option<Vec<u8>>,
        /// The value to set if it does (`None`: delete the key).
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
    },
    /// An embedder's command for its application (the `Application` trait
    /// of `walship-storage`, re-exported as `walship::app::Application`;
    /// the key-value map ignores it). Last, so the variants before keep their
    /// encoding in existing logs.
    App(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Opens a client session for exactly-once requests; its client id is
    /// this entry's log index (unique, and the same on every node). The
    /// response's `current` is the id, 8 bytes little-endian.
    OpenSession,
    /// `op` as request `seq` of session `client`: applied at most once. A
    /// retry of a (client, seq) already applied gets the first answer again.
    /// `acked_below`: the client has every answer below this seq, so they
    /// are dropped from the table (Raft thesis §6.3).
    Session {
        /// The session's id (the log index of its `OpenSession`).
        client: u64,
        /// This request's number in the session, from 1.
        seq: u64,
        /// The client has the answer to every request below this seq.
        acked_below: u64,
        /// The request carried out at most once.
        op: Box<Request>,
    },
}

/// One Raft entry's payload: the client requests group-committed together
/// (one fsync, one ZooKeeper multi for many writes), applied in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Batch {
    /// The requests, applied in this order.
    pub ops: Vec<Request>,
}

impl Batch {
    /// A batch of one request.
    pub fn one(req: Request) -> Batch {
        Batch { ops: vec![req] }
    }
}

/// What applying a [`Request`] produced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Response {
    /// For `Cas`: whether the swap happened. Always true for `Set`/`Delete`.
    /// For `App`: whether the application carried the command out.
    pub ok: bool,
    /// For `Cas`: the value after the operation (the current one if it failed).
    /// For `App`: what the application returned.
    #[serde(with = "serde_bytes")]
    pub current: Option<Vec<u8>>,
    /// Why the request was not carried out, other than a CAS mismatch
    /// (`ok` is then false). Every refusal here is decided by applying the
    /// committed entry, so it is the same on every node and for a retry.
    pub refusal: Option<Refusal>,
}

impl Response {
    /// A request not carried out, for `why`.
    pub fn refused(why: Refusal) -> Response {
        Response {
            ok: false,
            current: None,
            refusal: Some(why),
        }
    }
}

/// Why applying a committed request did not carry it out (nothing changed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The application's `apply` rejected the command, for this reason.
    #[error("the application rejected the command: {0}")]
    Rejected(String),
    /// An `App` command reached a node that runs no application.
    #[error("this node runs the key-value map, not an application")]
    NoApplication,
    /// The session is not in the table: never opened, or evicted as the
    /// least recently used when the table was full. The client opens a new
    /// one; whether this request was applied before is unknown.
    #[error("client session {0} is unknown (expired or never opened): open a new session")]
    UnknownSession(u64),
    /// The seq is below what the client said it had acknowledged, or too
    /// far ahead of it (more than `MAX_SESSION_INFLIGHT` unacknowledged).
    #[error(
        "request {seq} of session {client} is outside its window [{acked_below}, {acked_below} + MAX_SESSION_INFLIGHT)"
    )]
    OutsideWindow {
        /// The session's id.
        client: u64,
        /// The request's number in it.
        seq: u64,
        /// What the request said the client had acknowledged.
        acked_below: u64,
    },
    /// A request no client of walship sends (a session inside a session).
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Where a request sits in its client session (see [`Request::Session`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTag {
    /// The session's id: the log index of its `OpenSession`.
    pub client: u64,
    /// This request's number in the session, from 1.
    pub seq: u64,
    /// The client has the answer to every request below this seq.
    pub acked_below: u64,
}

impl SessionTag {
    /// `op`, to be applied at most once as this request of the session.
    pub fn wrap(self, op: Request) -> Request {
        Request::Session {
            client: self.client,
            seq: self.seq,
            acked_below: self.acked_below,
            op: Box::new(op),
        }
    }
}

/// Client sessions the dedup table holds; opening one more evicts the one
/// used least recently (by log index, so every node evicts the same one).
pub const MAX_SESSIONS: usize = 4096;
/// Unacknowledged requests one session may have in the table.
pub const MAX_SESSION_INFLIGHT: u64 = 1024;

/// `#[serde(with)]` for a key-value map: each value as one byte string (as
/// `serde_bytes` does for a single field); bincode writes the same bytes as
/// for a sequence of u8, without a call per byte.
pub mod bytes_map {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::MapAccess;
    use serde::de::Visitor;
    use serde::Deserializer;
    use serde::Serializer;

    /// Writes `map` with each value as one byte string.
    pub fn serialize<S: Serializer>(map: &BTreeMap<String, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, serde_bytes::Bytes::new(v))))
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        struct MapOfBytes;
        impl<'de> Visitor<'de> for MapOfBytes {
            type Value = BTreeMap<String, Vec<u8>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings to byte strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((k, v)) = access.next_entry::<String, serde_bytes::ByteBuf>()? {
                    map.insert(k, v.into_vec());
                }
                Ok(map)
            }
        }
        d.deserialize_map(MapOfBytes)
    }
}

/// The cluster's first log entry, W's genesis (witness-protocol.md): log id
/// (term 0, node 0, index 0) carrying the joint config `[{1,2,W},{W}]`. It must
/// be byte-identical on every node, so it is built only here.
pub fn genesis_entry() -> Entry {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;
    let all: BTreeSet<NodeId> = [1, 2, WITNESS_ID].into_iter().collect();
    let witness_only: BTreeSet<NodeId> = [WITNESS_ID].into_iter().collect();
    // Addresses live in ZooKeeper (members/<id>), not in the membership, so a
    // node reborn at another address needs no membership change.
    let nodes: BTreeMap<NodeId, openraft::BasicNode> = [1, 2, WITNESS_ID]
        .into_iter()
        .map(|id| (id, openraft::BasicNode::default()))
        .collect();
    Entry {
        log_id: LogId::default(),
        payload: openraft::EntryPayload::Membership(Membership::new(vec![all, witness_only], nodes)),
    }
}

/// The digest of one entry: crc32 of its bincode bytes, the same number a
/// segment record (in W's WAL and in a node's local log) stores beside it.
/// Two entries with one log id and different digests are two entries: the
/// log id was reused (witness-protocol.md, "A log id names one entry
/// forever").
pub fn entry_digest(e: &Entry) -> u32 {
    crc32fast::hash(&bincode::serialize(e).expect("entry serializes"))
}

#[cfg(test)]
mod encoding_tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;

    // The shapes before byte fields were marked serde_bytes: logs, W's WAL
    // and snapshots written then must decode the same now.
    #[derive(Serialize)]
    enum LegacyRequest {
        Set {
            key: String,
            value: Vec<u8>,
        },
        Delete {
            key: String,
        },
        Cas {
            key: String,
            expect: Option<Vec<u8>>,
            value: Option<Vec<u8>>,
        },
        App(Vec<u8>),
    }

    #[test]
    fn byte_fields_keep_their_bincode_encoding() {
        let v = vec![0u8, 1, 2, 250, 255];
        let pairs = [
            (
                Request::Set {
                    key: "k".into(),
                    value: v.clone(),
                },
                LegacyRequest::Set {
                    key: "k".into(),
                    value: v.clone(),
                },
            ),
            (
                Request::Delete { key: "d".into() },
                LegacyRequest::Delete { key: "d".into() },
            ),
            (
                Request::Cas {
                    key: "c".into(),
                    expect: Some(v.clone()),
                    value: None,
                },
                LegacyRequest::Cas {
                    key: "c".into(),
                    expect: Some(v.clone()),
                    value: None,
                },
            ),
            (Request::App(v.clone()), LegacyRequest::App(v.clone())),
        ];
        for (now, before) in pairs {
            let bytes = bincode::serialize(&now).expect("encode");
            assert_eq!(bytes, bincode::serialize(&before).expect("encode legacy"), "{now:?}");
            assert_eq!(bincode::deserialize::<Request>(&bytes).expect("decode"), now);
        }
    }

    #[test]
    fn byte_maps_keep_their_bincode_encoding() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Now(#[serde(with = "bytes_map")] BTreeMap<String, Vec<u8>>);
        let map: BTreeMap<String, Vec<u8>> = [("a".to_string(), vec![1, 2]), ("b".to_string(), vec![])].into();
        let bytes = bincode::serialize(&Now(map.clone())).expect("encode");
        assert_eq!(bytes, bincode::serialize(&map).expect("encode legacy"));
        assert_eq!(bincode::deserialize::<Now>(&bytes).expect("decode"), Now(map));
    }
}
