//! openraft's view of W: a network client whose RPCs are ZooKeeper
//! transactions, carried out by [`crate::witness::Witness`].

use std::sync::Arc;

use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::StreamingError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;

use super::RpcError;
use crate::types::NodeId;
use crate::types::TypeConfig;
use crate::types::Vote;
use crate::witness::Witness;
use crate::witness::WitnessError;

pub struct WitnessClient {
    pub witness: Arc<Witness>,
}

/// ZooKeeper down means back off (Unreachable); anything else is retried
/// at once (Network). A corrupt znode is logged loudly: it needs an operator.
fn rpc_error(e: WitnessError) -> RpcError {
    match e {
        WitnessError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        WitnessError::Corrupt { .. } | WitnessError::Identity(_) => {
            tracing::error!(error = %e, "witness refused: ZooKeeper holds bad data");
            RPCError::Network(NetworkError::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

// The error type is openraft's (its trait returns it); boxing is not ours to choose.
#[allow(clippy::result_large_err)]
fn joined<T>(r: Result<Result<T, WitnessError>, tokio::task::JoinError>) -> Result<T, RpcError> {
    match r {
        Ok(r) => r.map_err(rpc_error),
        Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
    }
}

impl WitnessClient {
    pub async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        // Spawned, so openraft's RPC timeout abandons the wait, not the change.
        let w = Arc::clone(&self.witness);
        let started = std::time::Instant::now();
        let entries = rpc.entries.len();
        let res = joined(tokio::spawn(async move { w.append_entries(rpc).await }).await);
        tracing::debug!(
            entries,
            elapsed_us = started.elapsed().as_micros() as u64,
            ok = res.is_ok(),
            "append to W"
        );
        res
    }

    pub async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let w = Arc::clone(&self.witness);
        joined(tokio::spawn(async move { w.vote(rpc).await }).await)
    }

    pub async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::Snapshot<TypeConfig>,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, openraft::error::Fatal<NodeId>>> {
        let data = snapshot.snapshot.into_inner();
        match self.witness.install_snapshot(vote, snapshot.meta, data).await {
            Ok(vote) => Ok(SnapshotResponse::new(vote)),
            Err(e @ WitnessError::Unreachable(_)) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
        }
    }
}
