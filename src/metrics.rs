//! Prometheus metrics (`GET /metrics`). Counters and histograms are updated
//! where things happen; Raft's own state (role, term, indexes, lag) is read
//! from openraft's metrics at scrape time, so it can never be stale.
//! Each node has its own registry (several nodes may share a process).

use std::time::Duration;

use openraft::ServerState;
use prometheus::Encoder;
use prometheus::Histogram;
use prometheus::HistogramOpts;
use prometheus::HistogramVec;
use prometheus::IntCounter;
use prometheus::IntCounterVec;
use prometheus::IntGauge;
use prometheus::IntGaugeVec;
use prometheus::Opts;
use prometheus::Registry;

use crate::storage::StorageMetrics;
use crate::types::stages;
use crate::types::stages::Stage;
use crate::types::NodeId;
use crate::types::WITNESS_ID;

/// The node's state the gauges show, read when `/metrics` is scraped.
pub struct AtScrape {
    /// openraft's metrics; `None` while Raft is restarting (the Raft gauges
    /// then keep their last values).
    pub raft: Option<openraft::RaftMetrics<NodeId, openraft::BasicNode>>,
    /// The local log's committed index.
    pub committed_index: Option<u64>,
    /// W's last log index as last seen.
    pub witness_last_index: Option<u64>,
    /// Client sessions in the state machine's table.
    pub client_sessions: usize,
    /// Bytes of the local log's newest entries held in memory.
    pub log_cache_bytes: u64,
}

/// Latency buckets from 0.25 ms to ~4 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_25, 2.0, 15).expect("valid buckets")
}

/// Stage buckets from 10 µs to 100 ms, four per octave-ish (10, 12.5, 15,
/// 20, 25, 30, 40, 50, 60, 80 per decade): fine enough to read a p50 of a
/// sub-millisecond stage from them.
fn stage_buckets_seconds() -> Vec<f64> {
    const STEPS: [f64; 10] = [1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0];
    let mut out: Vec<f64> = (0..4)
        .flat_map(|decade| STEPS.iter().map(move |s| s * 1e-5 * 10f64.powi(decade)))
        .collect();
    out.push(0.1);
    out
}

/// `write_stage_seconds{stage}`: the write path's stages
/// (`walship::types::stages`). One per process, as the stage clock is, and
/// registered in every node's registry.
fn write_stage_seconds() -> &'static (HistogramVec, Vec<Histogram>) {
    static STAGES: std::sync::OnceLock<(HistogramVec, Vec<Histogram>)> = std::sync::OnceLock::new();
    STAGES.get_or_init(|| {
        let vec = HistogramVec::new(
            HistogramOpts::new(
                "write_stage_seconds",
                "time a client write spends in each stage of its path (the serial stages add up to the handler's time; local_flush, peer_append and w_pipelined run beside it); per process",
            )
            .buckets(stage_buckets_seconds()),
            &["stage"],
        )
        .expect("metric");
        // One child per stage, looked up once: the sink is on the write path.
        let children = Stage::ALL.iter().map(|s| vec.with_label_values(&[s.name()])).collect();
        (vec, children)
    })
}

fn observe_stage(stage: Stage, d: Duration) {
    if let Some(h) = write_stage_seconds().1.get(stage as usize) {
        h.observe(d.as_secs_f64());
    }
}

/// A node's Prometheus metrics (served at `/metrics`, names prefixed
/// `walship_`); each field is one metric, updated by the node as it runs.
/// An embedder reads them through `Node::metrics` or scrapes `/metrics`.
pub struct Metrics {
    registry: Registry,
    /// `role{role}`: 1 for the role this node has now.
    pub role: IntGaugeVec,
    /// `term`: the current Raft term.
    pub term: IntGauge,
    /// `leader`: the id of the leader this node knows, 0 if none.
    pub leader: IntGauge,
    /// `leader_changes_total`: times the known leader changed.
    pub leader_changes: IntCounter,
    /// `log_index{kind}`: last (local log), committed, applied, witness (W's last).
    pub log_index: IntGaugeVec,
    /// `replication_lag_entries{target}`: leader only, entries a target (peer or zookeeper) lacks.
    pub replication_lag: IntGaugeVec,
    /// `write_seconds`: client write latency, acknowledged or not.
    pub write_seconds: Histogram,
    /// `read_seconds`: client read latency.
    pub read_seconds: Histogram,
    /// `zookeeper_op_seconds`: the latency of each ZooKeeper call.
    pub zk_op_seconds: Histogram,
    /// `zookeeper_errors_total{kind}`: failed ZooKeeper calls.
    pub zk_errors: IntCounterVec,
    /// New ZooKeeper sessions opened because a server served again before
    /// the disconnected client resumed its own (walship-zk's session keeper).
    pub zk_sessions_replaced: IntCounter,
    /// `adoptions_total`: adoptions of W's log that changed the local log.
    pub adoptions: IntCounter,
    /// `entries_adopted_total`: entries replayed from ZooKeeper into the local log.
    pub entries_adopted: IntCounter,
    /// `snapshots_total{event}`: snapshots built, uploaded and installed.
    pub snapshots: IntCounterVec,
    /// `snapshot_bytes_total{event}`: snapshot bytes uploaded and installed.
    pub snapshot_bytes: IntCounterVec,
    /// Entries found sharing a log id with another entry, by where: the
    /// witness refused them, adoption replaced them, catch-up refused them.
    pub log_id_conflicts: IntCounterVec,
    /// `peer_appends_total{outcome}`: Raft appends to the other node, sent
    /// or (`piggybacked`) a commit carrier answered without a round trip.
    pub peer_appends: IntCounterVec,
    /// Restarts over a committed vote of this node's own (the restart rule).
    pub leadership_forgotten: IntCounter,
    /// Lease renewals a leader skipped because it could not prove it commits.
    pub lease_withheld: IntCounter,
    /// Client sessions in the replicated session table.
    pub client_sessions: IntGauge,
    /// `log_cache_bytes`: the local log's entries held in memory.
    pub log_cache_bytes: IntGauge,
    /// `witness_appends_total`, `witness_entries_total` and
    /// `witness_inflight_multis`: checked multis that appended entries to
    /// ZooKeeper, the entries, and the multis in flight at each send.
    pub witness: walship_witness::WitnessMetrics,
    /// `write_stage_incomplete_total`: writes answered whose stages were
    /// not reported (their entry's marks missing); per process.
    pub write_stage_incomplete: IntCounter,
    /// The local storage's counters (torn log tails cut, rebuilds), handed
    /// to the store when the node opens it.
    pub storage: StorageMetrics,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// What a node's ZooKeeper session reports: `zookeeper_op_seconds`,
/// `zookeeper_errors_total{kind}`, `zookeeper_sessions_replaced_total`.
impl walship_zk::SessionMetrics for Metrics {
    fn call_ended(&self, elapsed: Duration) {
        self.zk_op_seconds.observe(elapsed.as_secs_f64());
    }
    fn call_failed(&self, kind: &'static str) {
        self.zk_errors.with_label_values(&[kind]).inc();
    }
    fn session_replaced(&self) {
        self.zk_sessions_replaced.inc();
    }
}

impl Metrics {
    /// A node's metrics, in a registry of their own (one per node, so
    /// several nodes in one process keep their counts apart).
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("walship".into()), None).expect("registry");
        let role = IntGaugeVec::new(Opts::new("role", "1 for the role this node has now"), &["role"]).expect("metric");
        let term = IntGauge::new("term", "current Raft term").expect("metric");
        let leader = IntGauge::new("leader", "id of the leader this node knows, 0 if none").expect("metric");
        let leader_changes = IntCounter::new("leader_changes_total", "times the known leader changed").expect("metric");
        let log_index = IntGaugeVec::new(
            Opts::new(
                "log_index",
                "log indexes: last (local log), committed, applied, witness (W's last)",
            ),
            &["kind"],
        )
        .expect("metric");
        let replication_lag = IntGaugeVec::new(
            Opts::new(
                "replication_lag_entries",
                "leader only: entries a target lacks (peer or zookeeper)",
            ),
            &["target"],
        )
        .expect("metric");
        let write_seconds = Histogram::with_opts(
            HistogramOpts::new("write_seconds", "client write latency, acknowledged or not").buckets(latency_buckets()),
        )
        .expect("metric");
        let read_seconds =
            Histogram::with_opts(HistogramOpts::new("read_seconds", "client read latency").buckets(latency_buckets()))
                .expect("metric");
        let zk_op_seconds = Histogram::with_opts(
            HistogramOpts::new("zookeeper_op_seconds", "latency of each ZooKeeper call").buckets(latency_buckets()),
        )
        .expect("metric");
        let zk_errors = IntCounterVec::new(Opts::new("zookeeper_errors_total", "failed ZooKeeper calls"), &["kind"])
            .expect("metric");
        let zk_sessions_replaced = IntCounter::new(
            "zookeeper_sessions_replaced_total",
            "new ZooKeeper sessions opened on a serving server while the old one was still reconnecting",
        )
        .expect("metric");
        let adoptions =
            IntCounter::new("adoptions_total", "adoptions of W's log that changed the local log").expect("metric");
        let entries_adopted = IntCounter::new(
            "entries_adopted_total",
            "entries replayed from ZooKeeper into the local log",
        )
        .expect("metric");
        let snapshots = IntCounterVec::new(
            Opts::new("snapshots_total", "snapshots by event: built, uploaded, installed"),
            &["event"],
        )
        .expect("metric");
        let snapshot_bytes = IntCounterVec::new(
            Opts::new("snapshot_bytes_total", "snapshot bytes by event: uploaded, installed"),
            &["event"],
        )
        .expect("metric");
        let log_id_conflicts = IntCounterVec::new(
            Opts::new(
                "log_id_conflicts_total",
                "an entry met another entry under the same log id (a reused log id): witness = ZooKeeper refused a leader's append, adoption = a local entry replaced by W's, catch_up = a leader's append refused and this node's log repaired",
            ),
            &["where"],
        )
        .expect("metric");
        for w in ["witness", "adoption", "catch_up"] {
            log_id_conflicts.with_label_values(&[w]);
        }
        let peer_appends = IntCounterVec::new(
            Opts::new(
                "peer_appends_total",
                "Raft appends to the other node: sent, or piggybacked (an entry-less append that only carried the commit index, answered without a round trip)",
            ),
            &["outcome"],
        )
        .expect("metric");
        for o in ["sent", "piggybacked"] {
            peer_appends.with_label_values(&[o]);
        }
        let leadership_forgotten = IntCounter::new(
            "leadership_forgotten_total",
            "starts of Raft over this node's own committed vote, un-committed so it leads again only after a new election",
        )
        .expect("metric");
        let lease_withheld = IntCounter::new(
            "lease_renewals_withheld_total",
            "leader lease renewals skipped: no commit, apply or leadership check succeeded recently (stalled disk, wedged core)",
        )
        .expect("metric");
        let client_sessions = IntGauge::new(
            "client_sessions",
            "client sessions in the replicated table of exactly-once requests (at most 4096)",
        )
        .expect("metric");
        let log_cache_bytes = IntGauge::new(
            "log_cache_bytes",
            "bytes of the local log's newest entries held in memory (at most log_cache_max_bytes, and the last entry); older ones are read back from the log files",
        )
        .expect("metric");
        let witness = walship_witness::WitnessMetrics {
            appends: IntCounter::new(
                "witness_appends_total",
                "checked multis that appended entries to W's WAL in ZooKeeper",
            )
            .expect("metric"),
            entries: IntCounter::new("witness_entries_total", "Raft entries appended to W's WAL in ZooKeeper")
                .expect("metric"),
            inflight_multis: Histogram::with_opts(
                HistogramOpts::new(
                    "witness_inflight_multis",
                    "pipelined multis to W in flight when one is sent, itself included",
                )
                .buckets(vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0]),
            )
            .expect("metric"),
            evictions: IntCounter::new(
                "witness_zk_evictions_total",
                "empty writes to the cluster's root znode that push W's big multis out of ZooKeeper's in-memory history of its last 500 transactions",
            )
            .expect("metric"),
        };
        let write_stage_incomplete = IntCounter::new(
            "write_stage_incomplete_total",
            "writes answered whose stages went unreported in write_stage_seconds (their entry's marks were missing); per process",
        )
        .expect("metric");
        stages::set_sink(observe_stage);
        let storage = StorageMetrics::new();
        for c in storage.collectors().into_iter().chain([
            Box::new(witness.appends.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(witness.entries.clone()),
            Box::new(witness.inflight_multis.clone()),
            Box::new(witness.evictions.clone()),
            Box::new(client_sessions.clone()),
            Box::new(log_cache_bytes.clone()),
            Box::new(leadership_forgotten.clone()),
            Box::new(lease_withheld.clone()),
            Box::new(role.clone()),
            Box::new(term.clone()),
            Box::new(leader.clone()),
            Box::new(leader_changes.clone()),
            Box::new(log_index.clone()),
            Box::new(replication_lag.clone()),
            Box::new(write_seconds.clone()),
            Box::new(read_seconds.clone()),
            Box::new(zk_op_seconds.clone()),
            Box::new(zk_errors.clone()),
            Box::new(zk_sessions_replaced.clone()),
            Box::new(adoptions.clone()),
            Box::new(entries_adopted.clone()),
            Box::new(snapshots.clone()),
            Box::new(snapshot_bytes.clone()),
            Box::new(log_id_conflicts.clone()),
            Box::new(peer_appends.clone()),
            Box::new(write_stage_seconds().0.clone()),
            Box::new(write_stage_incomplete.clone()),
        ]) {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            role,
            term,
            leader,
            leader_changes,
            log_index,
            replication_lag,
            write_seconds,
            read_seconds,
            zk_op_seconds,
            zk_errors,
            zk_sessions_replaced,
            adoptions,
            entries_adopted,
            snapshots,
            snapshot_bytes,
            log_id_conflicts,
            peer_appends,
            leadership_forgotten,
            lease_withheld,
            client_sessions,
            log_cache_bytes,
            witness,
            write_stage_incomplete,
            storage,
        }
    }

    /// Counts a snapshot of `bytes` that moved: `how` is "installed" (from
    /// the leader or W) or "uploaded" (to W).
    pub fn snapshot_moved(&self, how: &str, bytes: u64) {
        self.snapshots.with_label_values(&[how]).inc();
        self.snapshot_bytes.with_label_values(&[how]).inc_by(bytes);
    }

    /// Sets the gauges from the node's state read at scrape time, then
    /// renders everything.
    pub fn render(&self, now: &AtScrape) -> String {
        self.client_sessions.set(now.client_sessions as i64);
        self.log_cache_bytes
            .set(i64::try_from(now.log_cache_bytes).unwrap_or(i64::MAX));
        let incomplete = stages::incomplete();
        self.write_stage_incomplete
            .inc_by(incomplete.saturating_sub(self.write_stage_incomplete.get()));
        if let Some(m) = &now.raft {
            for (state, name) in [
                (ServerState::Leader, "leader"),
                (ServerState::Follower, "follower"),
                (ServerState::Candidate, "candidate"),
                (ServerState::Learner, "learner"),
            ] {
                self.role.with_label_values(&[name]).set(i64::from(m.state == state));
            }
            self.term.set(m.current_term as i64);
            self.leader.set(m.current_leader.unwrap_or(0) as i64);
            let last = m.last_log_index.unwrap_or(0);
            self.log_index.with_label_values(&["last"]).set(last as i64);
            self.log_index
                .with_label_values(&["committed"])
                .set(now.committed_index.unwrap_or(0) as i64);
            self.log_index
                .with_label_values(&["applied"])
                .set(m.last_applied.map_or(0, |l| l.index) as i64);
            if let Some(w) = now.witness_last_index {
                self.log_index.with_label_values(&["witness"]).set(w as i64);
            }
            if let Some(repl) = &m.replication {
                for (target, matched) in repl.iter() {
                    let name = if *target == WITNESS_ID { "zookeeper" } else { "peer" };
                    let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                    self.replication_lag.with_label_values(&[name]).set(lag as i64);
                }
            }
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session's reports land in the metrics /metrics has always shown
    /// for them, in this node's registry and no other.
    #[test]
    fn zk_session_reports_land_in_the_zookeeper_metrics() {
        use walship_zk::SessionMetrics;
        let (m, other) = (Metrics::new(), Metrics::new());
        m.call_ended(Duration::from_millis(250));
        m.call_failed("session_replaced");
        m.session_replaced();
        assert_eq!(m.zk_op_seconds.get_sample_count(), 1);
        assert!((m.zk_op_seconds.get_sample_sum() - 0.25).abs() < 1e-9);
        assert_eq!(m.zk_errors.with_label_values(&["session_replaced"]).get(), 1);
        assert_eq!(m.zk_sessions_replaced.get(), 1);
        assert_eq!(other.zk_op_seconds.get_sample_count(), 0, "another node's registry");
        assert_eq!(other.zk_sessions_replaced.get(), 0);
        let names: Vec<String> = m.registry.gather().iter().map(|f| f.get_name().to_string()).collect();
        for name in [
            "walship_zookeeper_op_seconds",
            "walship_zookeeper_errors_total",
            "walship_zookeeper_sessions_replaced_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
    }
}
