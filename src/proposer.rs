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
/// How fast the group a batch waits for shrinks when fewer writes come,
/// per batch (`Grouping`). Measured at 16 clients: 0.9 let one straggler
/// split the group (11 writes per entry), 0.98 kept it (14.8).
const GROUP_DECAY: f64 = 0.98;
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
    /// The longest a batch waits for the rest of its group (`Grouping`);
    /// 0: never, each batch takes what has arrived.
    pub max_group_wait_us: u64,
}

/// Which writes a batch waits for before it is proposed.
///
/// A client that waits for its answer before sending again (most do) comes
/// back with the others of its batch. Taking only what has arrived when the
/// slot frees splits such clients into two groups that take turns: a write
/// waits two commit rounds, and each entry carries half the clients
/// (measured: 8.0 writes per entry at 16 clients, 31 at 64, 118 at 256). So
/// a batch waits for as many writes as the largest recent batch held, for
/// at most one recent commit round (and `max_group_wait_us`): a lone
/// client never waits (its group is itself), and a load that halves halves
/// the group within ~35 batches (a batch cut short by the wait lowers it
/// only slightly, so one straggler does not split the group again; one of
/// a quarter of the group or less halves it, so the end of a burst is
/// followed within a few batches). The
/// cost falls on clients that do not wait for answers: a batch may wait up
/// to a round for writes that do not come.
struct Grouping {
    /// Writes to wait for: the largest recent batch, decaying.
    group: f64,
    max_wait: Duration,
    /// Recent commit round, µs (an average kept by `commit_batch`).
    round_us: Arc<std::sync::atomic::AtomicU64>,
}

impl Grouping {
    fn new(max_wait_us: u64) -> Grouping {
        Grouping {
            group: 1.0,
            max_wait: Duration::from_micros(max_wait_us),
            round_us: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// How many writes the next batch waits for, and for how long at most.
    fn next(&self) -> (usize, Duration) {
        let round = Duration::from_micros(self.round_us.load(std::sync::atomic::Ordering::Relaxed));
        (self.group.round() as usize, std::cmp::min(self.max_wait, round))
    }

    /// A batch of `len` writes was proposed.
    fn formed(&mut self, len: usize) {
        // A quarter of the group or less did not come within a round: the
        // load fell (a burst ended), not a straggler; follow it at once
        // rather than over hundreds of waiting batches.
        let decay = if (len as f64) <= self.group / 4.0 {
            0.5
        } else {
            GROUP_DECAY
        };
        self.group = f64::max(len as f64, self.group * decay).max(1.0);
    }

    /// Folds one commit round into the average (1/8 weight).
    fn observe_round(round_us: &std::sync::atomic::AtomicU64, took: Duration) {
        let took_us = took.as_micros().min(u64::MAX as u128) as u64;
        let _ = round_us.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |old| Some(if old == 0 { took_us } else { old - old / 8 + took_us / 8 }),
        );
    }
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
    let mut grouping = Grouping::new(limits.max_group_wait_us);
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
        // Everything queued now joins; then, while the batch is short of
        // its group, what arrives before the deadline (`Grouping`).
        let (group, max_wait) = grouping.next();
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while bytes < max_batch_bytes && batch.len() < MAX_BATCH_OPS {
            let p = match rx.try_recv() {
                Ok(p) => p,
                Err(_) if batch.len() < group && !max_wait.is_zero() => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(p)) => p,
                        Ok(None) | Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            bytes += p.bytes;
            batch.push(p);
        }
        grouping.formed(batch.len());
        let Some(node) = node.upgrade() else { return };
        let round_us = Arc::clone(&grouping.round_us);
        tokio::spawn(async move {
            let _permit = permit;
            let started = tokio::time::Instant::now();
            commit_batch(&*node, limits, batch).await;
            Grouping::observe_round(&round_us, started.elapsed());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grouping(max_wait_us: u64, round_us: u64) -> Grouping {
        let g = Grouping::new(max_wait_us);
        g.round_us.store(round_us, std::sync::atomic::Ordering::Relaxed);
        g
    }

    #[test]
    fn a_lone_client_never_waits() {
        let mut g = grouping(2000, 600);
        for _ in 0..100 {
            let (group, _) = g.next();
            assert_eq!(group, 1, "a batch of the one write that came waits for nobody");
            g.formed(1);
        }
    }

    #[test]
    fn clients_taking_turns_become_one_group() {
        // Greedy batching left 16 clients as two groups of 1 and 15.
        let mut g = grouping(2000, 600);
        g.formed(1);
        g.formed(15);
        // The slot frees with the lone client's write pending: wait for 15.
        assert_eq!(g.next().0, 15);
        g.formed(16);
        assert_eq!(g.next().0, 16);
        // A batch cut short by the wait (a straggler) barely lowers the group.
        g.formed(12);
        assert_eq!(g.next().0, 16);
    }

    /// Batches of `len` until the group is at most `to`; panics after 1000.
    fn batches_until_group(g: &mut Grouping, len: usize, to: usize) -> usize {
        let mut batches = 0;
        while g.next().0 > to {
            g.formed(len);
            batches += 1;
            assert!(
                batches < 1000,
                "the group stays at {} after {batches} batches of {len}",
                g.next().0
            );
        }
        batches
    }

    #[test]
    fn a_shrinking_load_lowers_the_group() {
        let mut g = grouping(2000, 600);
        g.formed(64);
        let batches = batches_until_group(&mut g, 32, 32);
        assert!(batches < 50, "the group took {batches} batches of 32 to follow");
        assert!(batches >= 10, "one short batch must not drop the group: {batches}");
    }

    /// From a burst of 256 to one writer: halved while a quarter or less
    /// comes, then the slow decay (which keeps 2-4 clients, one of them a
    /// straggler, from settling into turns of one).
    #[test]
    fn a_burst_that_ends_stops_delaying_the_lone_writer_soon() {
        let mut g = grouping(2000, 600);
        g.formed(256);
        let mut waited = batches_until_group(&mut g, 1, 4);
        assert!(waited <= 8, "{waited} batches to get from 256 to 4");
        waited += batches_until_group(&mut g, 1, 1);
        assert!(waited <= 80, "{waited} batches to get from 256 to 1");
        let mut two = grouping(2000, 600);
        two.formed(2);
        two.formed(1);
        assert_eq!(two.next().0, 2, "two clients, one late: still a group of two");
    }

    #[test]
    fn the_wait_is_bounded_by_a_round_and_the_setting() {
        assert_eq!(grouping(2000, 600).next().1, Duration::from_micros(600));
        assert_eq!(grouping(2000, 9000).next().1, Duration::from_micros(2000));
        assert_eq!(grouping(0, 600).next().1, Duration::ZERO, "0 turns the wait off");
        assert_eq!(
            grouping(2000, 0).next().1,
            Duration::ZERO,
            "no round measured yet: nothing to bound the wait by"
        );
    }

    #[test]
    fn the_round_is_a_running_average() {
        let round_us = std::sync::atomic::AtomicU64::new(0);
        Grouping::observe_round(&round_us, Duration::from_micros(800));
        assert_eq!(round_us.load(std::sync::atomic::Ordering::Relaxed), 800);
        for _ in 0..100 {
            Grouping::observe_round(&round_us, Duration::from_micros(400));
        }
        let now = round_us.load(std::sync::atomic::Ordering::Relaxed);
        assert!((400..=410).contains(&now), "{now}");
    }
}
