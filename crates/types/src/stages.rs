//! The write path's stage clock: where the time of one client write goes.
//!
//! Each layer marks the moments it touches an entry, by log index
//! ([`mark`], [`Span::marking`]); a batch of client writes is one entry, so one
//! set of marks serves every request in it. The HTTP handler keeps its own
//! per-request moments ([`RequestClock`]) and, once it has the entry's index,
//! joins them with the entry's marks and reports the intervals between
//! consecutive moments (the serial [`Stage`]s) to the sink the node installed
//! ([`set_sink`]: a Prometheus histogram). The serial stages telescope: they
//! add up to the handler's time for the request. Work beside the path (the
//! background fdatasync, the append to the peer, the pipelined multi to W)
//! is reported as it completes.
//!
//! Cost: one clock read and one uncontended slot lock per mark, about ten
//! marks per entry and one slot read per request. Memory is bounded: a ring
//! of the last [`RING_SLOTS`] indexes; a request whose entry has left the
//! ring is counted in [`incomplete`] and reported nowhere.
//!
//! The clock is per process (nodes sharing a process, as in some tests,
//! share it; each mark keeps the first time it was set, which is the
//! leader's for most marks). `WALSHIP_STAGE_CLOCK=off` (or `0`) in the
//! environment turns every call into one atomic load.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::Duration;
use std::time::Instant;

use crate::TypeConfig;

/// A moment in an entry's life, marked by the layer it happens in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The proposer called `Raft::client_write` for the batch.
    Proposed,
    /// openraft called the leader's `LogStore::append` with the entry.
    Appended,
    /// The append was written and reported done to openraft (with a
    /// background fdatasync, before it is on disk).
    Written,
    /// openraft handed the entry to W's client (an AppendEntries to ZooKeeper).
    WSent,
    /// ZooKeeper accepted it.
    WDone,
    /// The state machine started applying it.
    ApplyStart,
    /// The state machine finished applying it.
    ApplyEnd,
    /// `client_write` returned to the proposer.
    Returned,
    /// A background fdatasync that covers it completed (beside the path).
    Flushed,
    /// The append to the peer node was sent (beside the path).
    PeerSent,
    /// The peer answered it.
    PeerDone,
    /// Handed to W's pipeline as the leader appended it (beside the path:
    /// openraft's own append to W then waits for that multi, `WSent` to `WDone`).
    WFed,
    /// ZooKeeper answered the pipelined multi carrying it.
    WLanded,
}

const MARKS: usize = 13;

/// An interval of a write, between two consecutive moments. The serial
/// stages, in order, add up to the HTTP handler's time for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Handler entered (request parsed by hyper, routed) to the request
    /// handed to the proposer: key and value checks, building the command.
    HttpToProposer,
    /// Waiting for a batch slot and for the batch to be proposed.
    BatchWait,
    /// `client_write` to `LogStore::append`: openraft's API channel and core loop.
    ProposeToAppend,
    /// The local append, until reported done to openraft.
    LocalAppend,
    /// Local append done to the AppendEntries to W: openraft's core loop and
    /// replication scheduling.
    AppendToWSend,
    /// openraft's append to W until W holds the entries: the ZooKeeper
    /// multi's round trip, or with pipelining what is left of the pipelined
    /// multi's (`WPipelined`) when openraft asks.
    WMulti,
    /// W accepted to apply started: commit bookkeeping, apply scheduling.
    WDoneToApply,
    /// Applying the entry to the state machine.
    Apply,
    /// Applied to `client_write` returning: openraft's reply to the proposer.
    ApplyToReply,
    /// `client_write` returned to the handler's response: the proposer's
    /// hand-back to each request's task, and building the response.
    ReplyToHttp,
    /// Beside the path: local append done to the background fdatasync that
    /// covers it completed (paced, so up to the sync interval longer).
    LocalFlush,
    /// Beside the path: the peer node's append, sent to answered.
    PeerAppend,
    /// Beside the path: the pipelined multi to W, handed to the pipeline
    /// (as the leader appends locally) to ZooKeeper's answer.
    WPipelined,
}

impl Stage {
    /// Every stage, the serial ones first in path order.
    pub const ALL: [Stage; 13] = [
        Stage::HttpToProposer,
        Stage::BatchWait,
        Stage::ProposeToAppend,
        Stage::LocalAppend,
        Stage::AppendToWSend,
        Stage::WMulti,
        Stage::WDoneToApply,
        Stage::Apply,
        Stage::ApplyToReply,
        Stage::ReplyToHttp,
        Stage::LocalFlush,
        Stage::PeerAppend,
        Stage::WPipelined,
    ];
    /// How many of [`Stage::ALL`] (the first ones) are on the path.
    pub const SERIAL: usize = 10;

    /// The stage's label (`walship_write_stage_seconds{stage="..."}`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::HttpToProposer => "http_to_proposer",
            Stage::BatchWait => "batch_wait",
            Stage::ProposeToAppend => "propose_to_append",
            Stage::LocalAppend => "local_append",
            Stage::AppendToWSend => "append_to_w_send",
            Stage::WMulti => "w_multi",
            Stage::WDoneToApply => "w_done_to_apply",
            Stage::Apply => "apply",
            Stage::ApplyToReply => "apply_to_reply",
            Stage::ReplyToHttp => "reply_to_http",
            Stage::LocalFlush => "local_flush",
            Stage::PeerAppend => "peer_append",
            Stage::WPipelined => "w_pipelined",
        }
    }

    /// Whether the stage is on the write's path (it adds to the latency).
    pub fn is_serial(self) -> bool {
        !matches!(self, Stage::LocalFlush | Stage::PeerAppend | Stage::WPipelined)
    }
}

/// Where finished stages go: installed once per process by the node.
pub type Sink = fn(Stage, Duration);

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs the sink every stage is reported to; later calls are ignored
/// (one per process: the first node's metrics module installs it).
pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

fn report(stage: Stage, d: Duration) {
    if let Some(sink) = SINK.get() {
        sink(stage, d);
    }
}

fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        !matches!(
            std::env::var("WALSHIP_STAGE_CLOCK").as_deref(),
            Ok("off") | Ok("0") | Ok("false")
        )
    })
}

/// Nanoseconds since the clock's start, plus one: 0 means "not marked".
fn ns(at: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(|| Instant::now() - Duration::from_secs(1));
    at.saturating_duration_since(base).as_nanos() as u64 + 1
}

fn now_ns() -> u64 {
    ns(Instant::now())
}

/// Indexes kept; enough for seconds of writes at tens of thousands of
/// entries a second, so a request's entry is still here when it is answered.
pub const RING_SLOTS: usize = 4096;

#[derive(Clone, Copy)]
struct Slot {
    index: u64,
    at_ns: [u64; MARKS],
}

static RING: [Mutex<Slot>; RING_SLOTS] = [const {
    Mutex::new(Slot {
        index: 0,
        at_ns: [0; MARKS],
    })
}; RING_SLOTS];

static INCOMPLETE: AtomicU64 = AtomicU64::new(0);
/// The highest index marked `Written`: what a background sync starting now covers.
static WRITTEN_THROUGH: AtomicU64 = AtomicU64::new(0);
static FLUSHED_THROUGH: AtomicU64 = AtomicU64::new(0);

fn slot(index: u64) -> std::sync::MutexGuard<'static, Slot> {
    RING[(index % RING_SLOTS as u64) as usize]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Requests answered whose entry's marks were missing (left the ring, or
/// the entry was not marked on its way): reported in no stage.
pub fn incomplete() -> u64 {
    INCOMPLETE.load(Ordering::Relaxed)
}

/// Marks `index` as having reached `m` now.
pub fn mark(index: u64, m: Mark) {
    if enabled() {
        mark_at(index, m, now_ns());
    }
}

/// The first mark of a kind wins: a resent append keeps its first send, and
/// in a shared process the leader (which acts first) keeps its times.
fn mark_at(index: u64, m: Mark, at_ns: u64) {
    let mut s = slot(index);
    if s.index != index {
        if s.index > index {
            return; // Older than the ring: nobody will read it.
        }
        *s = Slot {
            index,
            at_ns: [0; MARKS],
        };
    }
    if s.at_ns[m as usize] != 0 {
        return;
    }
    s.at_ns[m as usize] = at_ns;
    let beside = match m {
        Mark::Flushed => Some((Mark::Written, Stage::LocalFlush)),
        Mark::PeerDone => Some((Mark::PeerSent, Stage::PeerAppend)),
        Mark::WLanded => Some((Mark::WFed, Stage::WPipelined)),
        _ => None,
    };
    if let Some((from, stage)) = beside {
        let from_ns = s.at_ns[from as usize];
        drop(s);
        if from_ns != 0 {
            report(stage, Duration::from_nanos(at_ns.saturating_sub(from_ns)));
        }
    }
}

/// The indexes of a run of consecutive entries (an append's), to mark
/// together now and again later.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    first: u64,
    last: u64,
}

impl Span {
    /// Marks every entry of `entries` as having reached `m`, and returns
    /// their span to mark later moments with.
    pub fn marking(entries: &[openraft::Entry<TypeConfig>], m: Mark) -> Span {
        let span = match (entries.first(), entries.last()) {
            (Some(f), Some(l)) => Span {
                first: f.log_id.index,
                last: l.log_id.index,
            },
            _ => Span { first: 1, last: 0 },
        };
        span.mark(m);
        span
    }

    /// The `count` entries ending at `last` (none if `last` is `None`).
    pub fn ending_at(last: Option<u64>, count: u64) -> Span {
        match last {
            Some(last) if count > 0 => Span {
                first: (last + 1).saturating_sub(count),
                last,
            },
            _ => Span { first: 1, last: 0 },
        }
    }

    /// Marks the span's entries as having reached `m`, if `reached`.
    pub fn mark_if(&self, reached: bool, m: Mark) {
        if reached {
            self.mark(m);
        }
    }

    /// Marks the span's entries as having reached `m` now.
    pub fn mark(&self, m: Mark) {
        if !enabled() || self.first > self.last {
            return;
        }
        let at = now_ns();
        // Only the last RING_SLOTS can still be read.
        let first = self.first.max(self.last.saturating_sub(RING_SLOTS as u64 - 1));
        for index in first..=self.last {
            mark_at(index, m, at);
        }
        if m == Mark::Written {
            WRITTEN_THROUGH.fetch_max(self.last, Ordering::Relaxed);
        }
    }
}

/// Call before a background fdatasync starts: the index it will cover
/// (every append already reported written).
pub fn written_through() -> u64 {
    WRITTEN_THROUGH.load(Ordering::Relaxed)
}

/// Call once that fdatasync completed, with `written_through`'s answer from
/// before it: marks the entries it made durable `Flushed`.
pub fn flushed_through(index: u64) {
    if !enabled() {
        return;
    }
    let before = FLUSHED_THROUGH.fetch_max(index, Ordering::Relaxed);
    if index <= before {
        return;
    }
    let at = now_ns();
    let first = (before + 1).max(index.saturating_sub(RING_SLOTS as u64 - 1));
    for i in first..=index {
        mark_at(i, Mark::Flushed, at);
    }
}

/// Runs a `client_write` and marks its entry `Proposed` (when it was
/// called) and `Returned` (now). The index is only known on return.
pub async fn timed_write<E>(
    write: impl Future<Output = Result<openraft::raft::ClientWriteResponse<TypeConfig>, E>>,
) -> Result<openraft::raft::ClientWriteResponse<TypeConfig>, E> {
    let proposed_ns = now_ns();
    let res = write.await;
    if let (Ok(r), true) = (&res, enabled()) {
        mark_at(r.log_id.index, Mark::Proposed, proposed_ns);
        mark(r.log_id.index, Mark::Returned);
    }
    res
}

/// One request's own moments, kept by its HTTP handler: entered (now),
/// handed to the proposer ([`RequestClock::handed`]) and answered
/// ([`RequestClock::replied`], which reports the serial stages).
#[derive(Debug)]
pub struct RequestClock {
    entered_ns: u64,
    handed_ns: AtomicU64,
}

impl Default for RequestClock {
    fn default() -> Self {
        RequestClock::start()
    }
}

impl RequestClock {
    /// The handler was entered now.
    pub fn start() -> RequestClock {
        RequestClock {
            entered_ns: if enabled() { now_ns() } else { 0 },
            handed_ns: AtomicU64::new(0),
        }
    }

    /// The request is being handed to the proposer now.
    pub fn handed(&self) {
        if enabled() {
            self.handed_ns.store(now_ns(), Ordering::Relaxed);
        }
    }

    /// The request's response is being produced now; it was committed and
    /// applied in the entry at `index`. Reports its serial stages.
    pub fn replied(&self, index: u64) {
        if !enabled() || self.entered_ns == 0 {
            return;
        }
        let now = now_ns();
        let marks = {
            let s = slot(index);
            (s.index == index).then_some(s.at_ns)
        };
        let Some(at) = marks else {
            INCOMPLETE.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let points = [
            self.entered_ns,
            self.handed_ns.load(Ordering::Relaxed),
            at[Mark::Proposed as usize],
            at[Mark::Appended as usize],
            at[Mark::Written as usize],
            at[Mark::WSent as usize],
            at[Mark::WDone as usize],
            at[Mark::ApplyStart as usize],
            at[Mark::ApplyEnd as usize],
            at[Mark::Returned as usize],
            now,
        ];
        if points.contains(&0) {
            INCOMPLETE.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for (stage, d) in serial_stages(&points) {
            report(stage, d);
        }
    }
}

/// The serial stages between consecutive `points`. A moment marked before
/// the one preceding it on the path counts as at that one (the stage is 0),
/// so the stages still add up to last minus first.
fn serial_stages(points: &[u64; Stage::SERIAL + 1]) -> impl Iterator<Item = (Stage, Duration)> + '_ {
    let mut reached = points[0];
    Stage::ALL[..Stage::SERIAL]
        .iter()
        .zip(&points[1..])
        .map(move |(&stage, &at)| {
            let at = at.max(reached);
            let d = Duration::from_nanos(at - reached);
            reached = at;
            (stage, d)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_stages_add_up_to_the_whole_even_out_of_order() {
        let points = [10, 20, 25, 40, 35, 50, 70, 71, 80, 90, 100];
        let stages: Vec<(Stage, Duration)> = serial_stages(&points).collect();
        assert_eq!(stages.len(), Stage::SERIAL);
        assert_eq!(stages[0], (Stage::HttpToProposer, Duration::from_nanos(10)));
        // Written (35) before Appended (40): local_append is 0, the next one from 40.
        assert_eq!(stages[3], (Stage::LocalAppend, Duration::ZERO));
        assert_eq!(stages[4], (Stage::AppendToWSend, Duration::from_nanos(10)));
        let total: Duration = stages.iter().map(|(_, d)| *d).sum();
        assert_eq!(total, Duration::from_nanos(90));
    }

    #[test]
    fn the_first_mark_wins_and_an_old_index_does_not_evict_a_new_one() {
        let index = 7 * RING_SLOTS as u64 + 5;
        mark_at(index, Mark::WSent, 100);
        mark_at(index, Mark::WSent, 200);
        mark_at(index - RING_SLOTS as u64, Mark::WSent, 300);
        let s = *slot(index);
        assert_eq!((s.index, s.at_ns[Mark::WSent as usize]), (index, 100));
        // A newer index takes the slot over, with nothing marked.
        mark_at(index + RING_SLOTS as u64, Mark::Appended, 400);
        let s = *slot(index);
        assert_eq!(s.index, index + RING_SLOTS as u64);
        assert_eq!(s.at_ns[Mark::WSent as usize], 0);
    }

    /// What the clock costs a write: every mark one single-request entry
    /// gets, on one thread (no contention). Run with
    /// `cargo test --release -p walship-types -- --ignored --nocapture cost`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_per_write() {
        const WRITES: u64 = 200_000;
        let start = Instant::now();
        for i in 0..WRITES {
            let index = 1_000_000 + i;
            let clock = RequestClock::start();
            clock.handed();
            mark_at(index, Mark::Proposed, now_ns());
            for m in [
                Mark::Appended,
                Mark::Written,
                Mark::WSent,
                Mark::PeerSent,
                Mark::WDone,
                Mark::PeerDone,
                Mark::ApplyStart,
                Mark::ApplyEnd,
                Mark::Returned,
            ] {
                mark(index, m);
            }
            flushed_through(index);
            clock.replied(index);
        }
        let per_write = start.elapsed() / WRITES as u32;
        // The part each further request of a batched entry adds.
        let start = Instant::now();
        for i in 0..WRITES {
            let clock = RequestClock::start();
            clock.handed();
            clock.replied(1_000_000 + WRITES - 1 - i % 1000);
        }
        let per_request = start.elapsed() / WRITES as u32;
        println!("stage clock, sink not installed: {per_write:?} per single-write entry, {per_request:?} per request");
    }

    #[test]
    fn a_request_whose_entry_is_not_in_the_ring_is_incomplete() {
        let before = incomplete();
        let clock = RequestClock::start();
        clock.handed();
        clock.replied(3 * RING_SLOTS as u64 + 11);
        assert_eq!(incomplete(), before + 1);
    }
}
