//! Raft RPC between the voters. Node-to-node traffic is HTTP with bincode
//! bodies ([`peer`] sends, `api::peer` receives); traffic to W, the witness,
//! is ZooKeeper transactions ([`witness`]). The factory picks by target id.
//! Peer addresses come from ZooKeeper (`members/<id>`), so a node reborn at
//! another address is still reached.

pub mod directory;
pub mod peer;
pub mod witness;

use std::sync::Arc;

use openraft::RaftNetworkFactory;

use self::directory::Directory;
use crate::types::NodeId;
use crate::types::SnapshotMeta;
use crate::types::TypeConfig;
use crate::types::Vote;
use crate::types::WITNESS_ID;
use crate::witness::Witness;

/// A whole snapshot in one request (walship snapshots are in memory anyway).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotBody {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// One network client for each target, by kind.
pub enum Client {
    Peer(peer::PeerClient),
    Witness(witness::WitnessClient),
}

#[derive(Clone)]
pub struct NetworkFactory {
    /// "https" in TLS mode (the client then checks the peer's certificate).
    pub scheme: &'static str,
    /// Sent with every peer RPC when access control is on.
    pub peer_token: Option<String>,
    pub directory: Arc<Directory>,
    pub witness: Arc<Witness>,
    pub http: reqwest::Client,
    /// See [`witness::WitnessClient`]: how long after an append W accepted
    /// an entry-less append on the same stream is answered without ZooKeeper.
    pub witness_piggyback: std::time::Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, _node: &openraft::BasicNode) -> Client {
        if target == WITNESS_ID {
            Client::Witness(witness::WitnessClient::new(
                Arc::clone(&self.witness),
                self.witness_piggyback,
            ))
        } else {
            Client::Peer(peer::PeerClient {
                scheme: self.scheme,
                token: self.peer_token.clone(),
                target,
                directory: Arc::clone(&self.directory),
                http: self.http.clone(),
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
        // Snapshots travel whole through `full_snapshot` below.
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

pub type RpcError = openraft::error::RPCError<NodeId, openraft::BasicNode, openraft::error::RaftError<NodeId>>;
