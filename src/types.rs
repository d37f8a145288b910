//! The types every module shares: openraft's type configuration, the client
//! commands that go through the log, and the witness's fixed node id.

use std::io::Cursor;

use serde::Deserialize;
use serde::Serialize;

/// Node ids of the two real nodes are 1 and 2; ZooKeeper, the passive third
/// voter, is node 3 (see witness-protocol.md, "W").
pub type NodeId = u64;
pub const WITNESS_ID: NodeId = 3;
pub const NODE_IDS: [NodeId; 2] = [1, 2];

openraft::declare_raft_types!(
    /// walship's openraft type configuration.
    pub TypeConfig:
        D = Batch,
        R = Vec<Response>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;

/// A command in the replicated log. Keys and values are bytes on the wire of
/// the HTTP API; keys are UTF-8 (they come from a URL path).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Set {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// `expect == None`: the key must be absent. `value == None`: delete it.
    Cas {
        key: String,
        expect: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    },
    /// An embedder's command for its `crate::app::Application` (the
    /// key-value map ignores it). Last, so the variants before keep their
    /// encoding in existing logs.
    App(Vec<u8>),
}

/// One Raft entry's payload: the client requests group-committed together
/// (one fsync, one ZooKeeper multi for many writes), applied in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Batch {
    pub ops: Vec<Request>,
}

impl Batch {
    pub fn one(req: Request) -> Batch {
        Batch { ops: vec![req] }
    }
}

/// What applying a [`Request`] produced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Response {
    /// For `Cas`: whether the swap happened. Always true for `Set`/`Delete`.
    pub ok: bool,
    /// For `Cas`: the value after the operation (the current one if it failed).
    /// For `App`: what the application returned (`ok` is false, and this
    /// `None`, if the node runs no application).
    pub current: Option<Vec<u8>>,
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
