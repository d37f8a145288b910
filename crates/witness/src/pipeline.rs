//! Pipelined appends: several checked multis in flight to W on one
//! ZooKeeper session (witness-protocol.md, "AppendEntries"; the argument is
//! in brainstorm.md, "Appends to W are pipelined").
//!
//! openraft 0.9 keeps one AppendEntries in flight per target, so W took one
//! multi per ZooKeeper round trip and a write arriving mid-round waited for
//! the next. Here the leader's entries reach W before openraft asks: the
//! node feeds each local append to [`Witness::feed`], which sends it at once
//! as one more multi behind those in flight; openraft's own append then only
//! waits for the multi that carries its last entry.
//!
//! Multi j of a pipeline started from W's record at version V and W's epoch
//! at E (the WAL directory's data version) is
//! `check(witness, V + j), check(epoch, E), create segments, set(witness)`.
//! Why it lands only where it belongs:
//! - every write to the record that is not a pipelined append bumps the
//!   epoch in the same multi (`Witness::epoch_bump`), so while the epoch is
//!   E every change to the record was a pipelined append;
//! - a pipelined append keeps the record's vote, and this node pipelines
//!   only under its own committed leader vote, as the record holds it: so
//!   while the epoch is E, the only writer of the record is this leader's
//!   pipeline;
//! - ZooKeeper runs a session's requests in order, and each multi moves the
//!   version by one: multi j finds V + j only if multis 0..j all landed.
//!   A failed check fails everything behind it, as a log must.
//! - A pipeline starts only from an epoch this node's own checked write
//!   produced, never from a read: after a failure (or an outcome unknown, a
//!   timeout, a replaced session), W is re-read and the next change is a
//!   normal checked write, which bumps the epoch; a straggler of the old
//!   pipeline still in some connection's queue then fails its epoch check.
//!   Binaries older than the epoch cannot write W at all (the record's
//!   magic, `record.rs`), so they cannot change it behind the epoch.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use openraft::raft::AppendEntriesRequest;
use tokio::sync::mpsc;
use tokio::sync::watch;
use walship_types::stages::Mark;
use walship_types::stages::Span;
use walship_types::Entry;
use walship_types::TypeConfig;
use walship_zk::ZkSession;
use zookeeper_client as zk;

use super::evict;
use super::record;
use super::record::Paths;
use super::record::WitnessRecord;
use super::rules;
use super::rules::AppendDecision;
use super::rules::Slot;
use super::Op;
use super::View;
use super::Witness;
use super::WitnessError;
use super::WitnessMetrics;

/// The appends one view has sent ahead, and the task that sends them.
pub(crate) struct Pipe {
    epoch: i32,
    next_seq: u64,
    /// Multis sent and not known to have landed: (seq, the last index W
    /// holds once it lands; `None` for a check alone).
    sent: VecDeque<(u64, Option<u64>)>,
    to_driver: mpsc::UnboundedSender<Outgoing>,
    progress: watch::Receiver<Progress>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// Every multi with a lower seq landed.
    landed_below: u64,
    /// The first multi that failed (or whose outcome is unknown) and why:
    /// nothing from it on is known to have landed.
    failed: Option<(u64, String)>,
}

struct Outgoing {
    seq: u64,
    /// `check(witness, version)`.
    version: i32,
    /// `check(epoch, epoch)`.
    epoch: i32,
    /// Segment creates and the record's set (none for a check alone).
    ops: Vec<Op>,
    /// The record version the multi leaves (`None` when it writes nothing).
    leaves: Option<i32>,
    entries: u64,
    holds_through: Option<u64>,
    /// The data its ops write (W's WAL bytes; `evict` on landing).
    data_bytes: u64,
}

/// Where a pipelined request stands: wait on it for W's answer.
pub(crate) enum Landing {
    /// Everything it asked for had already landed.
    Landed,
    Pending {
        seq: u64,
        progress: watch::Receiver<Progress>,
    },
}

impl Landing {
    pub(crate) async fn wait(self) -> Result<(), WitnessError> {
        let Landing::Pending { seq, mut progress } = self else {
            return Ok(());
        };
        loop {
            {
                let p = progress.borrow_and_update();
                if let Some((at, why)) = &p.failed {
                    if *at <= seq {
                        return Err(WitnessError::Pipeline(why.clone()));
                    }
                }
                if p.landed_below > seq {
                    return Ok(());
                }
            }
            // `changed` reports a value not yet seen before it reports the
            // driver gone, so the checks above saw its last word.
            if progress.changed().await.is_err() {
                return Err(WitnessError::Pipeline(
                    "the pipeline stopped before this append landed".into(),
                ));
            }
        }
    }
}

impl Pipe {
    fn start(zk: Arc<ZkSession>, paths: &Paths, metrics: WitnessMetrics, epoch: i32) -> Pipe {
        let (to_driver, from_pipe) = mpsc::unbounded_channel();
        let (report, progress) = watch::channel(Progress::default());
        tokio::spawn(drive(zk, paths.clone(), metrics, from_pipe, report));
        Pipe {
            epoch,
            next_seq: 0,
            sent: VecDeque::new(),
            to_driver,
            progress,
        }
    }

    fn failed(&self) -> bool {
        self.progress.borrow().failed.is_some()
    }

    /// Waits until everything sent has landed; an error if anything failed.
    pub(crate) async fn drain(self) -> Result<(), WitnessError> {
        match self.next_seq.checked_sub(1) {
            Some(seq) => {
                Landing::Pending {
                    seq,
                    progress: self.progress.clone(),
                }
                .wait()
                .await
            }
            None => Ok(()),
        }
    }

    /// The landing of the first multi in flight that holds `index`.
    fn landing_of(&mut self, index: u64) -> Landing {
        let landed_below = self.progress.borrow().landed_below;
        self.sent.retain(|(seq, _)| *seq >= landed_below);
        match self.sent.iter().find(|(_, last)| last.is_some_and(|l| l >= index)) {
            Some((seq, _)) => Landing::Pending {
                seq: *seq,
                progress: self.progress.clone(),
            },
            None => Landing::Landed,
        }
    }
}

/// What a pipelined request came from.
pub(crate) enum Source<'a> {
    /// openraft's AppendEntries to W: answered when W holds all it carries,
    /// and an entry-less one (a heartbeat, a leadership check) only after a
    /// round trip through ZooKeeper's consensus.
    Rpc(&'a AppendEntriesRequest<TypeConfig>),
    /// Entries the leader just appended to its own log, sent ahead of
    /// openraft's request for them.
    Feed(Vec<Entry>),
}

impl Witness {
    /// Feeds entries this node appended to its log: if this node is the
    /// leader W follows and its pipeline is open, they go to ZooKeeper now.
    /// Otherwise nothing happens; openraft's append sends them later.
    pub async fn feed(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        Span::marking(&entries, Mark::WFed);
        // Nobody waits on a feed: openraft's append for the same entries
        // waits on the same multis and sees any failure.
        let _ = self.pipelined(Source::Feed(entries)).await;
    }

    /// Sends `source` on the pipeline if it can go there: the view is this
    /// leader's own, armed by its own checked write, nothing in the
    /// pipeline failed, and W's rule accepts the request as an append past
    /// W's last entry (or one W already holds). `None`: take the normal path.
    pub(crate) async fn pipelined(&self, source: Source<'_>) -> Option<Landing> {
        if !self.pipelining {
            return None;
        }
        let mut guard = self.view.lock().await;
        let view = guard.as_mut()?;
        let epoch = view.epoch?;
        if view.pipe.as_ref().is_some_and(Pipe::failed) {
            return None;
        }
        let fed;
        let req = match source {
            Source::Rpc(req) => {
                view.leader_commit = view.leader_commit.max(req.leader_commit);
                req
            }
            Source::Feed(entries) => {
                let vote = view.record.vote;
                let first = entries.first().expect("feed is not empty").log_id;
                // Only the entries this leader made in its own term.
                if !vote.is_committed()
                    || first.leader_id.term != vote.leader_id().term
                    || first.leader_id.node_id != vote.leader_id().node_id
                {
                    return None;
                }
                let Slot::Present(prev, _) = view.slot(first.index.checked_sub(1)?) else {
                    return None;
                };
                fed = AppendEntriesRequest {
                    vote,
                    prev_log_id: Some(prev),
                    entries,
                    leader_commit: view.leader_commit,
                };
                &fed
            }
        };
        if req.vote != view.record.vote || !req.vote.is_committed() {
            return None;
        }
        let AppendDecision::Accept {
            record,
            truncate_from: None,
            append,
        } = rules::decide_append(&view.record, req, |i| view.slot(i))
        else {
            return None;
        };
        if append.is_empty() {
            return match req.entries.last() {
                Some(last) => Some(match view.pipe.as_mut() {
                    Some(pipe) => pipe.landing_of(last.log_id.index),
                    None => Landing::Landed,
                }),
                // A heartbeat: a check behind everything in flight.
                None => Some(self.send(view, epoch, Vec::new(), None, 0, None)),
            };
        }
        let mut landing = None;
        for (ops, new_segs, rec) in self.pack_segments(&append, Vec::new(), 0, &record) {
            let entries = new_segs.iter().map(|(_, ids)| ids.len() as u64).sum();
            let holds_through = rec.last_log_id.map(|l| l.index);
            landing = Some(self.send(view, epoch, ops, Some(rec), entries, holds_through));
            for (first, ids) in new_segs {
                view.segments.insert(first, Some(ids));
            }
        }
        *self.last_seen.lock().expect("last_seen lock") = view.record.last_log_id;
        landing
    }

    /// Sends one multi behind those in flight and moves the view to W as it
    /// will be once it lands.
    fn send(
        &self,
        view: &mut View,
        epoch: i32,
        mut ops: Vec<Op>,
        record: Option<WitnessRecord>,
        entries: u64,
        holds_through: Option<u64>,
    ) -> Landing {
        let pipe = view
            .pipe
            .get_or_insert_with(|| Pipe::start(Arc::clone(&self.zk), &self.paths, self.metrics.clone(), epoch));
        debug_assert_eq!(pipe.epoch, epoch, "a pipe lives within one epoch");
        let version = view.version;
        let leaves = record.map(|r| {
            ops.push(Op::Set(self.paths.witness(), record::encode_record(&r)));
            view.record = r;
            view.version += 1;
            view.version
        });
        let bytes: u64 = ops.iter().map(|op| op.payload_len() as u64).sum();
        self.wal_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        let seq = pipe.next_seq;
        pipe.next_seq += 1;
        let landed_below = pipe.progress.borrow().landed_below;
        pipe.sent.retain(|(s, _)| *s >= landed_below);
        pipe.sent.push_back((seq, holds_through));
        self.metrics.inflight_multis.observe(pipe.sent.len() as f64);
        // A closed channel (the driver stopped) shows as a failed landing.
        let _ = pipe.to_driver.send(Outgoing {
            seq,
            version,
            epoch,
            ops,
            leaves,
            entries,
            holds_through,
            data_bytes: bytes,
        });
        Landing::Pending {
            seq,
            progress: pipe.progress.clone(),
        }
    }
}

/// Sends the pipe's multis in order on one ZooKeeper client and reports
/// their outcomes in order. After a failure nothing more is sent: it could
/// not land anyway, and W is about to be re-read.
async fn drive(
    zk: Arc<ZkSession>,
    paths: Paths,
    metrics: WitnessMetrics,
    mut from_pipe: mpsc::UnboundedReceiver<Outgoing>,
    report: watch::Sender<Progress>,
) {
    let fail = |seq: u64, why: String| {
        report.send_modify(|p| {
            if p.failed.is_none() {
                p.failed = Some((seq, why));
            }
        })
    };
    // A new session means the old one's requests have an unknown outcome.
    let mut generation = zk.generation();
    generation.borrow_and_update();
    let timeout = zk.op_timeout();
    let witness = paths.witness();
    let epoch_path = paths.epoch();
    let opts = zk::CreateMode::Persistent.with_acls(zk.acls());
    type Outcome = (
        Result<Result<Result<Vec<zk::MultiWriteResult>, zk::MultiWriteError>, tokio::time::error::Elapsed>, zk::Error>,
        Outgoing,
    );
    type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;
    let mut inflight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut open = true;
    let mut watching = true;
    loop {
        if !open && inflight.is_empty() {
            break;
        }
        tokio::select! {
            msg = from_pipe.recv(), if open => {
                let Some(out) = msg else {
                    open = false;
                    continue;
                };
                if report.borrow().failed.is_some() {
                    continue;
                }
                // The client is taken per multi and lives only in its
                // future: a clone kept here would keep the session open
                // after `ZkSession::close` (it closes when the last goes).
                let client = match zk.client() {
                    Ok(c) => c,
                    Err(e) => {
                        fail(out.seq, format!("pipelined append: {e}"));
                        continue;
                    }
                };
                let (witness, epoch_path, opts) = (witness.clone(), epoch_path.clone(), opts.clone());
                let mut call = Box::pin(async move {
                    let mut w = client.new_multi_writer();
                    let built: Result<(), zk::Error> = (|| {
                        w.add_check_version(&witness, out.version)?;
                        w.add_check_version(&epoch_path, out.epoch)?;
                        for op in &out.ops {
                            match op {
                                Op::Create(p, d) => w.add_create(p, d, &opts)?,
                                Op::Set(p, d) => w.add_set_data(p, d, None)?,
                                Op::Delete(p) => w.add_delete(p, None)?,
                                Op::Check(p, v) => w.add_check_version(p, *v)?,
                            }
                        }
                        Ok(())
                    })();
                    let r = match built {
                        Ok(()) => Ok(tokio::time::timeout(timeout, w.commit()).await),
                        Err(e) => Err(e),
                    };
                    (r, out)
                });
                // Polled once here: `commit` queues the request on its first
                // poll, so the order of these polls is the order ZooKeeper
                // runs the multis in.
                match futures::poll!(call.as_mut()) {
                    std::task::Poll::Ready(done) => inflight.push_back(Box::pin(async move { done }) as Pending),
                    std::task::Poll::Pending => inflight.push_back(call as Pending),
                }
            }
            Some((r, out)) = inflight.next(), if !inflight.is_empty() => {
                let failed_before = report.borrow().failed.as_ref().is_some_and(|(at, _)| *at <= out.seq);
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        fail(out.seq, format!("pipelined append: building the multi: {e}"));
                        continue;
                    }
                };
                match r {
                    _ if failed_before => {}
                    Ok(Ok(results)) => {
                        let left = match results.last() {
                            Some(zk::MultiWriteResult::SetData { stat }) => Some(stat.version),
                            _ => None,
                        };
                        if out.leaves.is_some() && left != out.leaves {
                            fail(out.seq, format!("pipelined append left the record at version {left:?}, not {:?}", out.leaves));
                        } else {
                            evict::after_multi(&zk, &paths.root, out.data_bytes, &metrics.evictions);
                            if out.entries > 0 {
                                metrics.appended(out.entries);
                                Span::ending_at(out.holds_through, out.entries).mark(Mark::WLanded);
                            }
                            report.send_modify(|p| p.landed_below = out.seq + 1);
                        }
                    }
                    Ok(Err(zk::MultiWriteError::OperationFailed { index: 0 | 1, source: e @ (zk::Error::BadVersion | zk::Error::NoNode) })) => {
                        fail(out.seq, format!("pipelined append: W changed underneath ({e})"));
                    }
                    Ok(Err(e)) => fail(out.seq, format!("pipelined append: {e}")),
                    Err(_) => fail(out.seq, format!("pipelined append: no answer within {} ms (outcome unknown)", timeout.as_millis())),
                }
            }
            r = generation.changed(), if watching => {
                watching = false;
                if r.is_ok() {
                    let at = report.borrow().landed_below;
                    fail(at, "pipelined append: the ZooKeeper session was replaced (outcome unknown)".into());
                }
            }
        }
    }
}
