//! Raft RPC between the voters. Node-to-node traffic is HTTP with bincode
//! bodies ([`peer`] sends, `api::peer` receives); traffic to W, the witness,
//! is ZooKeeper transactions (`crate::witness::voter`). The factory picks by target id.
//! Peer addresses come from ZooKeeper (`members/<id>`), so a node reborn at
//! another address is still reached.

pub mod directory;
pub mod peer;

use std::sync::Arc;

use openraft::RaftNetworkFactory;

use self::directory::Directory;
use crate::types::NodeId;
use crate::types::SnapshotMeta;
use crate::types::TypeConfig;
use crate::types::Vote;
use crate::types::WITNESS_ID;
use crate::witness::Witness;

/// The largest piece of a snapshot file one `/raft/snapshot` request
/// carries: a snapshot travels as a sequence of these, so neither end holds
/// more than one piece in memory, and each request fits the listener's
/// body limits and timeouts whatever the snapshot's size.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;

/// One piece of a snapshot file on its way to the follower: the bytes at
/// `offset_bytes` of a file of `total_bytes` (walship-storage's snapshot
/// file: head with the meta, then the data blob, CRC-checked by the
/// follower once all of it arrived). Pieces go in order; the last one makes
/// the follower install it. The reply is the bincode of
/// `Result<Option<SnapshotResponse>, Fatal>`: `None` until the last piece.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub offset_bytes: u64,
    pub total_bytes: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// One network client for each target, by kind.
pub enum Client {
    Peer(peer::PeerClient),
    Witness(crate::witness::voter::WitnessClient),
}

/// How this node reaches the other one over HTTP: its address from
/// ZooKeeper (`members/<id>`, cached), the scheme, the client (which in TLS
/// mode checks the other end holds the other node's certificate) and the
/// peer token. Shared by Raft RPC, hand-overs and the API's forwarding.
#[derive(Clone)]
pub struct Peers {
    /// "https" in TLS mode, else "http".
    scheme: &'static str,
    /// Sent with every peer RPC when access control is on.
    token: Option<String>,
    directory: Arc<Directory>,
    http: reqwest::Client,
    /// When a Raft message last went between the nodes (either way): the
    /// peer's last sign of life, which dates `Event::PeerUp`'s `away_ms`.
    heard: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// `peer_appends_total{outcome}`: appends sent, and commit carriers
    /// answered without a round trip ([`peer::PeerClient`]).
    appends_sent: prometheus::IntCounter,
    appends_piggybacked: prometheus::IntCounter,
}

impl Peers {
    /// `appends`: `peer_appends_total{outcome}`, where each append to the
    /// peer is counted.
    pub fn new(
        scheme: &'static str,
        token: Option<String>,
        directory: Arc<Directory>,
        http: reqwest::Client,
        appends: &prometheus::IntCounterVec,
    ) -> Peers {
        Peers {
            scheme,
            token,
            directory,
            http,
            heard: Arc::new(std::sync::Mutex::new(None)),
            appends_sent: appends.with_label_values(&["sent"]),
            appends_piggybacked: appends.with_label_values(&["piggybacked"]),
        }
    }

    fn count_append(&self, piggybacked: bool) {
        if piggybacked {
            self.appends_piggybacked.inc()
        } else {
            self.appends_sent.inc()
        }
    }

    /// Notes a Raft message from the peer, or its answer to ours, now.
    pub fn note_heard(&self) {
        *self.heard.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
    }

    /// When a Raft message last went between the nodes (see `note_heard`).
    pub fn last_heard(&self) -> Option<std::time::Instant> {
        *self.heard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Node `id`'s address (cached; read from ZooKeeper when not).
    pub async fn addr(&self, id: NodeId) -> Result<Option<String>, crate::witness::WitnessError> {
        self.directory.addr(id).await
    }

    /// Node `id`'s address if cached, without asking ZooKeeper.
    pub fn cached_addr(&self, id: NodeId) -> Option<String> {
        self.directory.cached_addr(id)
    }

    /// Forgets node `id`'s cached address (a refused connection: it may
    /// have been reborn elsewhere).
    pub fn forget(&self, id: NodeId) {
        self.directory.invalidate(id)
    }

    /// The URL of `path` at `addr`.
    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme)
    }

    /// The HTTP client for requests to the other node.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The peer token to send, when access control is on.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

#[derive(Clone)]
pub struct NetworkFactory {
    pub peers: Peers,
    pub witness: Arc<Witness>,
    /// How long after an append W or the peer accepted an entry-less append
    /// on the same stream is answered without a round trip
    /// (`witness::rules::piggybacks`; [`peer::PeerClient`], [`crate::witness::voter::WitnessClient`]).
    pub piggyback: std::time::Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, _node: &openraft::BasicNode) -> Client {
        if target == WITNESS_ID {
            Client::Witness(crate::witness::voter::WitnessClient::new(
                Arc::clone(&self.witness),
                self.piggyback,
            ))
        } else {
            Client::Peer(peer::PeerClient {
                peers: self.peers.clone(),
                target,
                piggyback: self.piggyback,
                accepted: None,
            })
        }
    }
}

/// Dispatch by kind; the two clients differ only in where the RPC goes.
macro_rules! dispatch {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Client::Peer($c) => $e,
            Client::Witness($c) => $e,
        }
    };
}

impl openraft::RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        rpc: openraft::raft::AppendEntriesRequest<TypeConfig>,
        option: openraft::network::RPCOption,
    ) -> Result<openraft::raft::AppendEntriesResponse<NodeId>, RpcError> {
        dispatch!(self, c => c.append_entries(rpc, option).await)
    }

    async fn install_snapshot(
        &mut self,
        _rpc: openraft::raft::InstallSnapshotRequest<TypeConfig>,
        _option: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::InstallSnapshotResponse<NodeId>,
        openraft::error::RPCError<
            NodeId,
            openraft::BasicNode,
            openraft::error::RaftError<NodeId, openraft::error::InstallSnapshotError>,
        >,
    > {
        // Snapshots travel in walship's own pieces through `full_snapshot` below.
        Err(openraft::error::RPCError::Network(openraft::error::NetworkError::new(
            &std::io::Error::other("chunked snapshot transfer is not used by walship"),
        )))
    }

    async fn vote(
        &mut self,
        rpc: openraft::raft::VoteRequest<NodeId>,
        option: openraft::network::RPCOption,
    ) -> Result<openraft::raft::VoteResponse<NodeId>, RpcError> {
        dispatch!(self, c => c.vote(rpc, option).await)
    }

    async fn full_snapshot(
        &mut self,
        vote: crate::types::Vote,
        snapshot: openraft::Snapshot<TypeConfig>,
        _cancel: impl std::future::Future<Output = openraft::error::ReplicationClosed> + Send + 'static,
        option: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::SnapshotResponse<NodeId>,
        openraft::error::StreamingError<TypeConfig, openraft::error::Fatal<NodeId>>,
    > {
        dispatch!(self, c => c.full_snapshot(vote, snapshot, option).await)
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // openraft's default waits 500 ms after an Unreachable; a node that
        // was just restarted should be retried sooner than that.
        openraft::network::Backoff::new(std::iter::repeat(std::time::Duration::from_millis(100)))
    }
}

pub use crate::types::RpcError;
