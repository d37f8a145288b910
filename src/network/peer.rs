//! Outbound Raft RPC to the other node: HTTP POST with bincode bodies.
//! Transport errors map to openraft's kinds here and only here: no address or
//! connection refused is `Unreachable` (back off), anything else `Network`.

use openraft::error::NetworkError;
use openraft::error::PayloadTooLarge;
use openraft::error::RPCError;
use openraft::error::RemoteError;
use openraft::error::StreamingError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RpcError;
use super::SnapshotChunk;
use super::SNAPSHOT_CHUNK_BYTES;
use crate::types::stages::Mark;
use crate::types::stages::Span;
use crate::types::NodeId;
use crate::types::TypeConfig;
use crate::types::Vote;
use crate::witness::rules;
use crate::witness::rules::Accepted;

/// The largest AppendEntries body sent to the peer; more entries are split
/// over several RPCs. It must arrive, be decoded and written within one
/// heartbeat interval (openraft's per-RPC timeout, 200 ms by default): 4 MiB
/// did not in a debug build on a busy 2-core box. One entry (a batch, at
/// most `max_batch_bytes`, 768 KiB) always fits; the peer accepts up to
/// twice this.
pub const MAX_APPEND_BODY_BYTES: usize = 1 << 20;

/// One openraft client of the other node: one per replication stream (it
/// lives for the leader's term), a fresh one per leadership check and vote.
///
/// Commit piggybacking, as for W (`witness::rules::piggybacks`, the
/// argument in brainstorm.md): an entry-less append right after one the
/// peer accepted on this stream only carries the new commit index, and is
/// answered Success here. Under load every other round trip to the peer
/// was one of those, each costing both nodes an HTTP request on the two
/// cores the W round trip needs.
pub struct PeerClient {
    pub peers: super::Peers,
    pub target: NodeId,
    /// How long after an accepted append a commit carrier is answered here.
    pub piggyback: std::time::Duration,
    /// The last append the peer accepted through this client.
    pub accepted: Option<Accepted>,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Network(String),
}

impl PeerClient {
    /// POSTs `body` to the peer's `route`; the reply is the bincode of the
    /// peer Raft's `Result<Resp, E>`.
    async fn call<Req: Serialize, Resp: DeserializeOwned, E: DeserializeOwned>(
        &self,
        route: &str,
        body: &Req,
        option: &RPCOption,
    ) -> Result<Result<Resp, E>, SendError> {
        let bytes = bincode::serialize(body).map_err(|e| SendError::Network(e.to_string()))?;
        self.call_bytes(route, bytes, option.hard_ttl()).await
    }

    async fn call_bytes<Resp: DeserializeOwned, E: DeserializeOwned>(
        &self,
        route: &str,
        bytes: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<Result<Resp, E>, SendError> {
        let addr = match self.peers.addr(self.target).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Err(SendError::Unreachable(format!(
                    "node {} has no members znode (down)",
                    self.target
                )))
            }
            Err(e) => {
                return Err(SendError::Unreachable(format!(
                    "cannot look node {} up: {e}",
                    self.target
                )))
            }
        };
        let mut req = self.peers.http().post(self.peers.url(&addr, &format!("/raft/{route}")));
        if let Some(t) = self.peers.token() {
            req = req.header(crate::auth::PEER_TOKEN_HEADER, t);
        }
        let res = req.timeout(timeout).body(bytes).send().await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                self.peers.forget(self.target);
                return Err(if e.is_connect() {
                    SendError::Unreachable(e.to_string())
                } else {
                    SendError::Network(e.to_string())
                });
            }
        };
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            return Err(SendError::Network(format!(
                "node {} answered {status}: {text}",
                self.target
            )));
        }
        let bytes = res.bytes().await.map_err(|e| SendError::Network(e.to_string()))?;
        self.peers.note_heard();
        bincode::deserialize(&bytes)
            .map_err(|e| SendError::Network(format!("undecodable reply from node {}: {e}", self.target)))
    }

    fn rpc_error<E: std::error::Error>(&self, e: SendError) -> RPCError<NodeId, openraft::BasicNode, E> {
        match e {
            SendError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m))),
            SendError::Network(m) => RPCError::Network(NetworkError::new(&std::io::Error::other(m))),
        }
    }

    pub async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let started = std::time::Instant::now();
        if rules::piggybacks(&rpc, self.accepted.as_ref(), started, self.piggyback) {
            self.peers.count_append(true);
            return Ok(AppendEntriesResponse::Success);
        }
        // A follower far behind gets up to max_payload_entries at once, and
        // an entry is a whole batch of writes: ask openraft for fewer
        // entries rather than send a body the peer refuses (or that cannot
        // arrive within the RPC timeout). Sized before encoding: cheap, as
        // values are byte strings.
        let size = bincode::serialized_size(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if size > MAX_APPEND_BODY_BYTES as u64 && rpc.entries.len() > 1 {
            let n = rpc.entries.len() as u64;
            let hint = (n * MAX_APPEND_BODY_BYTES as u64 / size).clamp(1, n - 1);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        let (vote, ends_at) = (rpc.vote, rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id));
        let bytes = bincode::serialize(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let span = Span::marking(&rpc.entries, Mark::PeerSent);
        self.peers.count_append(false);
        let res = self.call_bytes("append", bytes, option.hard_ttl()).await;
        span.mark_if(matches!(res, Ok(Ok(_))), Mark::PeerDone);
        self.accepted = match &res {
            Ok(Ok(AppendEntriesResponse::Success)) => Some(Accepted {
                sent_at: started,
                vote,
                ends_at,
            }),
            _ => None,
        };
        match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    pub async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        match self.call("vote", &rpc, &option).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    /// Sends the snapshot file in pieces of [`SNAPSHOT_CHUNK_BYTES`], read
    /// one at a time (memory: one piece), each within openraft's snapshot
    /// timeout; the last one's answer comes after the follower checked and
    /// installed the whole, so it gets more time, in proportion to the size.
    pub async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::Snapshot<TypeConfig>,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, openraft::error::Fatal<NodeId>>> {
        use tokio::io::AsyncReadExt;
        use tokio::io::AsyncSeekExt;
        let local = |e: std::io::Error| StreamingError::Network(NetworkError::new(&e));
        let meta = snapshot.meta;
        let mut file = snapshot.snapshot;
        let total_bytes = file.file.metadata().await.map_err(local)?.len();
        file.rewind().await.map_err(local)?;
        let mut offset_bytes = 0u64;
        loop {
            let want = (total_bytes - offset_bytes).min(SNAPSHOT_CHUNK_BYTES as u64);
            let mut data = Vec::with_capacity(want as usize);
            (&mut file).take(want).read_to_end(&mut data).await.map_err(local)?;
            if data.len() as u64 != want {
                return Err(local(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} ended at byte {}",
                        file.path.display(),
                        offset_bytes + data.len() as u64
                    ),
                )));
            }
            let last = offset_bytes + want == total_bytes;
            let chunk = SnapshotChunk {
                vote,
                meta: meta.clone(),
                offset_bytes,
                total_bytes,
                data,
            };
            let bytes = bincode::serialize(&chunk).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
            let timeout = if last {
                // Checking and decoding run at well over 20 MiB/s.
                option.hard_ttl() + std::time::Duration::from_secs(total_bytes / (20 << 20))
            } else {
                option.hard_ttl()
            };
            let reply = self
                .call_bytes::<Option<SnapshotResponse<NodeId>>, openraft::error::Fatal<NodeId>>(
                    "snapshot", bytes, timeout,
                )
                .await;
            match reply {
                Ok(Ok(Some(r))) => return Ok(r),
                Ok(Ok(None)) if !last => offset_bytes += want,
                Ok(Ok(None)) => {
                    return Err(StreamingError::Network(NetworkError::new(&std::io::Error::other(
                        format!(
                            "node {} took the last piece of snapshot {} without installing it",
                            self.target, meta.snapshot_id
                        ),
                    ))))
                }
                Ok(Err(fatal)) => return Err(StreamingError::Network(NetworkError::new(&fatal))),
                Err(SendError::Unreachable(m)) => {
                    return Err(StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(m))))
                }
                Err(SendError::Network(m)) => {
                    return Err(StreamingError::Network(NetworkError::new(&std::io::Error::other(m))))
                }
            }
        }
    }
}
