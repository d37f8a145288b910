//! Group commit: many concurrent client requests become one Raft entry.
//!
//! openraft appends (and so fsyncs) each `client_write` on its own, and its
//! replication to W costs one ZooKeeper multi per round trip. Putting every
//! request that arrives while earlier batches are in flight into the next
//! entry makes one fsync and one multi carry many writes. Up to
//! `--max-inflight-batches` entries are proposed concurrently (pipelining).
//!
//! Linearizable reads are batched the same way: one `ensure_linearizable`
//! round (a quorum heartbeat, ZooKeeper included) answers every read that
//! arrived before the round started.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::CheckIsLeaderError;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::Semaphore;

use crate::types::Batch;
use crate::types::NodeId;
use crate::types::Raft;
use crate::types::Request;
use crate::types::Response;

const MAX_BATCH_OPS: usize = 4096;
/// Pause between leadership rounds that missed a quorum.
const CONFIRM_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Why a proposal did not produce a result here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead; the leader if known.
    #[error("this node is not the leader (the leader: {0:?}); nothing was written")]
    NotLeader(Option<NodeId>),
    /// Nothing was written.
    #[error("unavailable, nothing was written: {0}")]
    Unavailable(String),
    /// Proposed, not confirmed: it may or may not be applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The command can never be written as it is (over the size limit; no
    /// application on this node): nothing was written, and a retry cannot
    /// succeed, unlike `NotLeader` and `Unavailable`.
    #[error("refused, nothing was written: {0}")]
    Refused(String),
    /// The application refused the command, in `validate` (nothing was
    /// written) or in `apply` (the entry is committed and changed nothing).
    /// Sending it again gets the same answer unless the state changes.
    #[error("the application rejected the command: {0}")]
    Rejected(String),
    /// The request's client session is not in the table (evicted, or never
    /// opened): it was not applied now. Open a new session; if an earlier
    /// attempt of this request had an unknown outcome, it still has.
    #[error("client session {0} is unknown (expired or never opened); this attempt was not applied")]
    SessionUnknown(u64),
}

impl ProposeError {
    /// Whether the same request may succeed if sent again as it is (here
    /// later, or to the leader): not for `Refused`, `Rejected` or
    /// `SessionUnknown`. After `Unknown` a retry may apply the command
    /// twice unless it is sent in a client session.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ProposeError::Refused(_) | ProposeError::Rejected(_) | ProposeError::SessionUnknown(_)
        )
    }
}

/// What the proposer needs of the node it proposes through.
pub trait Consensus: Send + Sync + 'static {
    /// The Raft handle now; `None` while it is being rebuilt (adoption).
    fn raft(&self) -> Option<Raft>;
    /// Whether this node's ZooKeeper session is connected now: a leader
    /// without it cannot commit, so a write is refused before it is proposed.
    fn zk_connected(&self) -> bool;
}

/// The proposer's limits (from `NodeConfig`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entries proposed concurrently (`--max-inflight-batches`).
    pub max_inflight_batches: usize,
    /// Payload per entry (`--max-batch-bytes`).
    pub max_batch_bytes: usize,
    /// How long a write or a leadership round may take before its outcome
    /// is reported unknown (writes) or unavailable (reads).
    pub write_timeout_ms: u64,
}

type Reply = oneshot::Sender<Result<(u64, Response), ProposeError>>;

struct Pending {
    req: Request,
    bytes: usize,
    reply: Reply,
}

/// Group commit: gathers concurrent writes into batches (Raft entries, at
/// most `max_inflight_batches` in flight, `max_batch_bytes` each) and
/// confirms linearizable reads by a leadership round. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    writes: mpsc::UnboundedSender<Pending>,
    reads: mpsc::UnboundedSender<oneshot::Sender<Result<(), ProposeError>>>,
    /// One permit per batch in flight.
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    /// Set by `drain`: new writes are refused (503), nothing new is proposed.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Proposer {
    /// Starts the batching tasks. They hold only a weak reference to the
    /// node, so they end when the node is dropped.
    pub fn start<C: Consensus>(node: std::sync::Weak<C>, limits: Limits) -> Proposer {
        let (writes, rx) = mpsc::unbounded_channel();
        let inflight = Arc::new(Semaphore::new(limits.max_inflight_batches));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(write_loop(
            node.clone(),
            rx,
            Arc::clone(&inflight),
            Arc::clone(&closed),
            limits,
        ));
        let (reads, rx) = mpsc::unbounded_channel();
        tokio::spawn(read_loop(node, rx, limits));
        Proposer {
            writes,
            reads,
            inflight,
            max_inflight: limits.max_inflight_batches,
            closed,
        }
    }

    /// Stops taking writes and waits (up to `timeout`) for the batches in
    /// flight to resolve. Returns whether they all did.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        let all = self.inflight.acquire_many(self.max_inflight as u32);
        matches!(tokio::time::timeout(timeout, all).await, Ok(Ok(_)))
    }

    /// Commits `req` (in some batch) and returns its log index and result.
    pub async fn write(&self, req: Request) -> Result<(u64, Response), ProposeError> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ProposeError::Unavailable(
                "this node is leaving; nothing was written".into(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        let bytes = request_bytes(&req);
        self.writes
            .send(Pending { req, bytes, reply: tx })
            .map_err(|_| ProposeError::Unavailable("node is shutting down".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(ProposeError::Unknown("the batch was dropped".into())))
    }

    /// Returns once this node may serve a linearizable read: a quorum
    /// confirmed its leadership after this call began, and it has applied
    /// everything committed before that.
    pub async fn linearize(&self) -> Result<(), ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.reads
            .send(tx)
            .map_err(|_| ProposeError::Unavailable("node is shutting down".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(ProposeError::Unavailable("the read round was dropped".into())))
    }
}

fn request_bytes(req: &Request) -> usize {
    match req {
        Request::Set { key, value } => key.len() + value.len() + 16,
        Request::Delete { key } => key.len() + 8,
        Request::App(command) => command.len() + 8,
        Request::Cas { key, expect, value } => {
            key.len() + expect.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len) + 24
        }
        Request::OpenSession => 8,
        Request::Session { op, .. } => request_bytes(op) + 32,
    }
}

/// `inflight`: one permit per entry in flight (more requests wait and join
/// a bigger batch). `max_batch_bytes`: payload per entry, well under
/// ZooKeeper's 1 MiB request limit (a single larger request goes alone).
async fn write_loop<C: Consensus>(
    node: std::sync::Weak<C>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    inflight: Arc<Semaphore>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    limits: Limits,
) {
    let max_batch_bytes = limits.max_batch_bytes;
    while let Some(first) = rx.recv().await {
        if closed.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = first.reply.send(Err(ProposeError::Unavailable(
                "this node is leaving; nothing was written".into(),
            )));
            continue;
        }
        // Wait for a slot first: requests keep queueing meanwhile and all
        // join this batch.
        let Ok(permit) = Arc::clone(&inflight).acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while bytes < max_batch_bytes && batch.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Some(node) = node.upgrade() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            commit_batch(&*node, limits, batch).await;
        });
    }
}

async fn commit_batch(node: &impl Consensus, limits: Limits, batch: Vec<Pending>) {
    let (ops, replies): (Vec<Request>, Vec<Reply>) = batch.into_iter().map(|p| (p.req, p.reply)).unzip();
    let outcome = propose(node, limits, Batch { ops }).await;
    match outcome {
        Ok((index, responses)) => {
            for (reply, resp) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok((index, resp)));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

async fn propose(node: &impl Consensus, limits: Limits, batch: Batch) -> Result<(u64, Vec<Response>), ProposeError> {
    let raft = node
        .raft()
        .ok_or_else(|| ProposeError::Unavailable("node is restarting its raft (adopting from ZooKeeper)".into()))?;
    if raft.metrics().borrow().state == openraft::ServerState::Leader && !node.zk_connected() {
        return Err(ProposeError::Unavailable(
            "ZooKeeper is unreachable; nothing was written".into(),
        ));
    }
    let n = batch.ops.len();
    let timeout = Duration::from_millis(limits.write_timeout_ms);
    match tokio::time::timeout(timeout, crate::types::stages::timed_write(raft.client_write(batch))).await {
        Err(_) => Err(ProposeError::Unknown(format!(
            "not confirmed within {} ms; the write may or may not be applied",
            timeout.as_millis()
        ))),
        Ok(Ok(resp)) if resp.data.len() == n => Ok((resp.log_id.index, resp.data)),
        Ok(Ok(resp)) => Err(ProposeError::Unknown(format!(
            "applied batch returned {} results for {n} requests",
            resp.data.len()
        ))),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(ProposeError::NotLeader(f.leader_id)),
        Ok(Err(e)) => Err(ProposeError::Unknown(format!(
            "write failed after it may have been proposed: {e}"
        ))),
    }
}

async fn read_loop<C: Consensus>(
    node: std::sync::Weak<C>,
    mut rx: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), ProposeError>>>,
    limits: Limits,
) {
    while let Some(first) = rx.recv().await {
        // Everyone queued now arrived before this round starts.
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let Some(node) = node.upgrade() else { return };
        let outcome = confirm(&*node, limits).await;
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
    }
}

/// One leadership confirmation. A round that misses ZooKeeper (a slow
/// multi under load) is retried until the deadline rather than failing the
/// reads at once: nothing is written, so retrying is always safe.
async fn confirm(node: &impl Consensus, limits: Limits) -> Result<(), ProposeError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(limits.write_timeout_ms);
    loop {
        let raft = node
            .raft()
            .ok_or_else(|| ProposeError::Unavailable("node is restarting its raft".into()))?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let err = match tokio::time::timeout(left, raft.ensure_linearizable()).await {
            Err(_) => return Err(ProposeError::Unavailable("could not confirm leadership in time".into())),
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                return Err(ProposeError::NotLeader(f.leader_id))
            }
            Ok(Err(e)) => e,
        };
        if tokio::time::Instant::now() + CONFIRM_RETRY_PAUSE >= deadline {
            return Err(ProposeError::Unavailable(format!("cannot confirm leadership: {err}")));
        }
        tokio::time::sleep(CONFIRM_RETRY_PAUSE).await;
    }
}
