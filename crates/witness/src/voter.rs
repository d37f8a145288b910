//! W as openraft sees it: a voter reached through a network client whose
//! RPCs are ZooKeeper transactions, carried out by [`crate::Witness`].

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

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
use walship_zk::ZkError;

use super::rules;
use super::rules::Accepted;
use super::SnapshotUpload;
use super::Witness;
use super::WitnessError;
use walship_types::stages::Mark;
use walship_types::stages::Span;
use walship_types::NodeId;
use walship_types::RpcError;
use walship_types::TypeConfig;
use walship_types::Vote;

/// One openraft client of W. openraft makes one per replication stream (it
/// lives for the leader's term) and a fresh one for every leadership check
/// (`ensure_linearizable`) and vote.
///
/// Commit piggybacking is W's rule `rules::piggybacks`: an entry-less
/// append right after one W accepted on this stream is answered at once.
pub struct WitnessClient {
    pub witness: Arc<Witness>,
    piggyback: Duration,
    /// The last append W accepted through this client.
    accepted: Option<Accepted>,
}

/// ZooKeeper down means back off (Unreachable); anything else is retried
/// at once (Network). A corrupt znode is logged loudly: it needs an operator.
/// A refused log id reuse is an error, never `Conflict` (openraft would
/// back off to an earlier index and send the same entry again forever);
/// `Witness::append_entries` has logged and counted it.
fn rpc_error(e: WitnessError) -> RpcError {
    match e {
        WitnessError::Zk(ZkError::Unreachable(_)) => RPCError::Unreachable(Unreachable::new(&e)),
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
    pub fn new(witness: Arc<Witness>, piggyback: Duration) -> WitnessClient {
        WitnessClient {
            witness,
            piggyback,
            accepted: None,
        }
    }

    pub async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let started = Instant::now();
        if rules::piggybacks(&rpc, self.accepted.as_ref(), started, self.piggyback) {
            return Ok(AppendEntriesResponse::Success);
        }
        let (vote, ends_at) = (rpc.vote, rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id));
        // Spawned, so openraft's RPC timeout abandons the wait, not the change.
        let w = Arc::clone(&self.witness);
        let entries = rpc.entries.len();
        let span = Span::marking(&rpc.entries, Mark::WSent);
        let res = joined(tokio::spawn(async move { w.append_entries(rpc).await }).await);
        span.mark_if(matches!(res, Ok(AppendEntriesResponse::Success)), Mark::WDone);
        self.accepted = match &res {
            Ok(AppendEntriesResponse::Success) => Some(Accepted {
                sent_at: started,
                vote,
                ends_at,
            }),
            _ => None,
        };
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
        let mut file = snapshot.snapshot;
        let size_bytes = match file.seek_to_data().await {
            Ok(n) => n,
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        };
        match self
            .witness
            .install_snapshot_from(vote, snapshot.meta, file, size_bytes)
            .await
        {
            Ok(SnapshotUpload::Stored | SnapshotUpload::AlreadyCovered) => Ok(SnapshotResponse::new(vote)),
            // W's higher vote makes openraft step this leader down.
            Ok(SnapshotUpload::Refused(higher)) => Ok(SnapshotResponse::new(higher)),
            Err(e @ WitnessError::Zk(ZkError::Unreachable(_))) => {
                Err(StreamingError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
        }
    }
}
