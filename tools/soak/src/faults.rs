//! The fault kinds, their seeded schedule, what one cycle reports, and the
//! prober that measures failover. The cycles themselves (inject, wait for
//! service, repair, wait until both nodes caught up) are in `nemesis`.
//!
//! Failover time is from the fault to the completion of the first write
//! invoked after it and acknowledged. The workload's clients cannot measure
//! that (right after a freeze they all sit in requests to the frozen node
//! until their timeouts), so a prober does: from the fault on it starts a
//! fresh write every 100 ms to a node the fault left serving, each its own
//! request with its own timeout, all recorded in the history (key
//! `soak-probe`) and checked like any other operation.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use super::recorder::Clock;
use super::recorder::OpKind;
use super::recorder::OpRecord;
use super::recorder::Outcome;
use super::recorder::Recorder;
use super::rng::Rng;
use walship::client::NodeClient;

const PROBE_TIMEOUT: Duration = Duration::from_secs(8);
/// The key probe writes go to.
pub const PROBE_KEY: &str = "soak-probe";
/// Probe writes are history clients `PROBE_CLIENT_BASE + n`, one per write.
pub const PROBE_CLIENT_BASE: u32 = 1_000_000;

/// Writes of the soak's own (probes, and the writes some faults make on
/// keys of their own), each recorded in the history like the workload's.
pub struct Prober {
    clients: Vec<NodeClient>,
    recorder: Recorder,
    pub clock: Clock,
    next: Arc<AtomicU32>,
    /// Keys written besides the workload's, for the final checks.
    keys: Mutex<BTreeSet<String>>,
}

impl Prober {
    pub fn new(clients: &[NodeClient], recorder: Recorder, clock: Clock) -> Prober {
        Prober {
            clients: clients.iter().map(|c| c.with_timeout(PROBE_TIMEOUT)).collect(),
            recorder,
            clock,
            next: Arc::new(AtomicU32::new(0)),
            keys: Mutex::new(BTreeSet::from([PROBE_KEY.to_string()])),
        }
    }

    /// A fresh number for a value (and a history client of its own).
    pub fn next_number(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Keys the final checks must read besides the workload's.
    pub fn extra_keys(&self) -> Vec<String> {
        self.keys.lock().expect("keys lock").iter().cloned().collect()
    }

    pub fn register_key(&self, key: &str) {
        self.keys.lock().expect("keys lock").insert(key.to_string());
    }

    /// One probe write to node `id` in the background; an acknowledged one
    /// lowers `first_ack` to its completion time.
    pub fn spawn(&self, id: u64, first_ack: &Arc<AtomicU64>) {
        let value = format!("p{}", self.next_number());
        let first_ack = Arc::clone(first_ack);
        let w = self.writer(id);
        tokio::spawn(async move {
            let (result, complete_ns) = w.put(PROBE_KEY, &value).await;
            if result == Outcome::Ok {
                first_ack.fetch_min(complete_ns, Ordering::SeqCst);
            }
        });
    }

    /// A recorded write to node `id` (a history client of its own).
    pub fn writer(&self, id: u64) -> ProbeWriter {
        ProbeWriter {
            client: self.clients[(id - 1) as usize].clone(),
            recorder: self.recorder.clone(),
            clock: self.clock,
            next: Arc::clone(&self.next),
        }
    }
}

/// One node's recorded writes; cheap to clone into a task.
#[derive(Clone)]
pub struct ProbeWriter {
    client: NodeClient,
    recorder: Recorder,
    clock: Clock,
    next: Arc<AtomicU32>,
}

impl ProbeWriter {
    /// `PUT key=p<n>` with a fresh number `n`, recorded.
    pub async fn put_fresh(&self, key: &str) -> (Outcome, u64) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.put(key, &format!("p{n}")).await
    }

    /// `PUT key=value`, recorded; its outcome and completion time.
    pub async fn put(&self, key: &str, value: &str) -> (Outcome, u64) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let invoke_ns = self.clock.now_ns();
        let a = self.client.put(key, value).await;
        let complete_ns = self.clock.now_ns();
        let result = a.outcome();
        self.recorder.record(OpRecord {
            op: OpKind::Put,
            key: key.into(),
            value: Some(value.into()),
            expect: None,
            result,
            cas_ok: None,
            read: None,
            client: PROBE_CLIENT_BASE + n,
            invoke_ns,
            complete_ns,
        });
        (result, complete_ns)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 the leader, restart it with its disk.
    KillLeader,
    /// kill -9 the leader, restart it with an empty disk.
    KillLeaderWipe,
    KillFollower,
    KillFollowerWipe,
    /// SIGSTOP the leader past the election timeout, then SIGCONT.
    FreezeLeader,
    /// SIGTERM ZooKeeper, start it again on the same data dir.
    ZkRestart,
    /// Cut the link between the nodes (both still reach ZooKeeper), heal.
    Cut,
    /// Cut the leader's link to ZooKeeper (the follower keeps its own).
    ZkCutLeader,
    /// Cut the follower's link to ZooKeeper (the leader keeps its own).
    ZkCutFollower,
    /// fdatasync off for a window, kill -9, drop what was not synced.
    PowerLossLeader,
    PowerLossFollower,
    /// The leader's disk blocks every write and sync for a few seconds.
    StallLeader,
    // Two faults at once.
    /// The leader cut from ZooKeeper and from the other node.
    ZkCutLeaderCut,
    /// The leader cut from ZooKeeper, writes to it (the follower may append
    /// them; nothing may be acknowledged), both killed, one wiped, both
    /// restarted: the reborn-leader case.
    ZkCutLeaderKillBothWipe,
    /// The leader cut from ZooKeeper and the follower killed (restarted
    /// with its disk while the leader is still cut).
    ZkCutLeaderKillFollower,
    /// Power loss of both nodes at once.
    PowerLossBoth,
    /// The leader's disk stalled and the follower killed.
    StallLeaderKillFollower,
    /// The leader frozen and a node's link to ZooKeeper cut.
    FreezeLeaderZkCut,
    // ZooKeeper faults: need the soak's own ensemble (--ensemble).
    /// kill -9 the ZooKeeper leader (`srvr`: "Mode: leader"); restarted
    /// once walship serves again.
    ZkKillLeader,
    /// kill -9 a ZooKeeper follower; restarted once walship serves again.
    ZkKillFollower,
    /// Two of the three servers killed for a few seconds (no quorum), then
    /// started again.
    ZkQuorumLoss,
    /// SIGSTOP the ZooKeeper leader until the others elect a new one and
    /// walship serves again, then SIGCONT.
    ZkFreezeLeader,
    /// The ZooKeeper leader and the walship leader killed at once.
    ZkKillLeaderKillLeader,
    /// A ZooKeeper follower and the walship leader killed at once.
    ZkKillFollowerKillLeader,
    /// Quorum loss, and the walship leader killed while it lasts.
    ZkQuorumLossKillLeader,
    /// The ZooKeeper leader and the walship leader frozen at once.
    ZkFreezeLeaderFreezeLeader,
}

impl FaultKind {
    pub const ALL: [FaultKind; 26] = [
        FaultKind::KillLeader,
        FaultKind::KillLeaderWipe,
        FaultKind::KillFollower,
        FaultKind::KillFollowerWipe,
        FaultKind::FreezeLeader,
        FaultKind::ZkRestart,
        FaultKind::Cut,
        FaultKind::ZkCutLeader,
        FaultKind::ZkCutFollower,
        FaultKind::PowerLossLeader,
        FaultKind::PowerLossFollower,
        FaultKind::StallLeader,
        FaultKind::ZkCutLeaderCut,
        FaultKind::ZkCutLeaderKillBothWipe,
        FaultKind::ZkCutLeaderKillFollower,
        FaultKind::PowerLossBoth,
        FaultKind::StallLeaderKillFollower,
        FaultKind::FreezeLeaderZkCut,
        FaultKind::ZkKillLeader,
        FaultKind::ZkKillFollower,
        FaultKind::ZkQuorumLoss,
        FaultKind::ZkFreezeLeader,
        FaultKind::ZkKillLeaderKillLeader,
        FaultKind::ZkKillFollowerKillLeader,
        FaultKind::ZkQuorumLossKillLeader,
        FaultKind::ZkFreezeLeaderFreezeLeader,
    ];

    /// The seven kinds the soak had before it learnt ZooKeeper-link cuts,
    /// power loss, disk stalls and combinations (`--kinds classic`).
    pub const CLASSIC: [FaultKind; 7] = [
        FaultKind::KillLeader,
        FaultKind::KillLeaderWipe,
        FaultKind::KillFollower,
        FaultKind::KillFollowerWipe,
        FaultKind::FreezeLeader,
        FaultKind::ZkRestart,
        FaultKind::Cut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillLeaderWipe => "kill-leader-wipe",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillFollowerWipe => "kill-follower-wipe",
            FaultKind::FreezeLeader => "freeze-leader",
            FaultKind::ZkRestart => "zk-restart",
            FaultKind::Cut => "cut",
            FaultKind::ZkCutLeader => "zk-cut-leader",
            FaultKind::ZkCutFollower => "zk-cut-follower",
            FaultKind::PowerLossLeader => "power-loss-leader",
            FaultKind::PowerLossFollower => "power-loss-follower",
            FaultKind::StallLeader => "stall-leader",
            FaultKind::ZkCutLeaderCut => "zk-cut-leader+cut",
            FaultKind::ZkCutLeaderKillBothWipe => "zk-cut-leader+kill-both+wipe",
            FaultKind::ZkCutLeaderKillFollower => "zk-cut-leader+kill-follower",
            FaultKind::PowerLossBoth => "power-loss-both",
            FaultKind::StallLeaderKillFollower => "stall-leader+kill-follower",
            FaultKind::FreezeLeaderZkCut => "freeze-leader+zk-cut",
            FaultKind::ZkKillLeader => "zk-kill-leader",
            FaultKind::ZkKillFollower => "zk-kill-follower",
            FaultKind::ZkQuorumLoss => "zk-quorum-loss",
            FaultKind::ZkFreezeLeader => "zk-freeze-leader",
            FaultKind::ZkKillLeaderKillLeader => "zk-kill-leader+kill-leader",
            FaultKind::ZkKillFollowerKillLeader => "zk-kill-follower+kill-leader",
            FaultKind::ZkQuorumLossKillLeader => "zk-quorum-loss+kill-leader",
            FaultKind::ZkFreezeLeaderFreezeLeader => "zk-freeze-leader+freeze-leader",
        }
    }

    /// Two faults at once.
    pub fn combined(self) -> bool {
        matches!(
            self,
            FaultKind::ZkCutLeaderCut
                | FaultKind::ZkCutLeaderKillBothWipe
                | FaultKind::ZkCutLeaderKillFollower
                | FaultKind::PowerLossBoth
                | FaultKind::StallLeaderKillFollower
                | FaultKind::FreezeLeaderZkCut
                | FaultKind::ZkKillLeaderKillLeader
                | FaultKind::ZkKillFollowerKillLeader
                | FaultKind::ZkQuorumLossKillLeader
                | FaultKind::ZkFreezeLeaderFreezeLeader
        )
    }

    /// Hurts one or more servers of a ZooKeeper ensemble: needs the soak's
    /// own (`--ensemble`).
    pub fn needs_ensemble(self) -> bool {
        matches!(
            self,
            FaultKind::ZkKillLeader
                | FaultKind::ZkKillFollower
                | FaultKind::ZkQuorumLoss
                | FaultKind::ZkFreezeLeader
                | FaultKind::ZkKillLeaderKillLeader
                | FaultKind::ZkKillFollowerKillLeader
                | FaultKind::ZkQuorumLossKillLeader
                | FaultKind::ZkFreezeLeaderFreezeLeader
        )
    }

    /// Restarts ZooKeeper: needs the soak's own.
    pub fn needs_own_zk(self) -> bool {
        self == FaultKind::ZkRestart
    }

    /// Cuts one node's link to ZooKeeper: needs a proxy per node, so one
    /// ZooKeeper address (not an ensemble given with --zk).
    pub fn cuts_zk_link(self) -> bool {
        matches!(
            self,
            FaultKind::ZkCutLeader
                | FaultKind::ZkCutFollower
                | FaultKind::ZkCutLeaderCut
                | FaultKind::ZkCutLeaderKillBothWipe
                | FaultKind::ZkCutLeaderKillFollower
                | FaultKind::FreezeLeaderZkCut
        )
    }

    pub fn parse(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            format!(
                "unknown fault kind '{s}' (kinds: {}; groups: all, single, combined, classic, zk)",
                FaultKind::ALL.map(|k| k.name()).join(", ")
            )
        })
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One item of `--kinds`: a kind, or a group (`all`, `single`, `combined`,
/// `classic`, `zk`: the ZooKeeper-ensemble kinds). A group holds what the
/// run can do (the ensemble kinds only with `--ensemble`, zk-restart only
/// without); a kind named alone that the run cannot do is an error.
#[derive(Clone, Debug)]
pub struct KindSet {
    pub kinds: Vec<FaultKind>,
    /// A group, not one kind by name.
    pub group: bool,
}

impl KindSet {
    pub fn parse(s: &str) -> Result<KindSet, String> {
        let all = FaultKind::ALL.into_iter();
        let kinds: Vec<FaultKind> = match s.trim() {
            "all" => all.collect(),
            "single" => all.filter(|k| !k.combined()).collect(),
            "combined" => all.filter(|k| k.combined()).collect(),
            "classic" => FaultKind::CLASSIC.to_vec(),
            "zk" => all.filter(|k| k.needs_ensemble()).collect(),
            other => {
                return Ok(KindSet {
                    kinds: vec![FaultKind::parse(other)?],
                    group: false,
                })
            }
        };
        Ok(KindSet { kinds, group: true })
    }
}

/// The seeded order of faults: each round is a shuffle of every enabled kind,
/// so any `--cycles` at least the number of kinds exercises each one. Each
/// cycle's own choices (cut mode, torn or not, which node is wiped, how
/// long) come from `params(n)`, a stream of its own per cycle number, so a
/// seed names the same faults with the same parameters whatever the timing.
pub struct Schedule {
    seed: u64,
    rng: Rng,
    kinds: Vec<FaultKind>,
    bag: Vec<FaultKind>,
}

impl Schedule {
    pub fn new(seed: u64, kinds: Vec<FaultKind>) -> Schedule {
        assert!(!kinds.is_empty(), "at least one fault kind");
        Schedule {
            seed,
            rng: Rng::fork(seed, 0),
            kinds,
            bag: Vec::new(),
        }
    }

    pub fn next_kind(&mut self) -> FaultKind {
        if self.bag.is_empty() {
            self.bag = self.kinds.clone();
            self.rng.shuffle(&mut self.bag);
            self.bag.reverse();
        }
        self.bag.pop().expect("refilled")
    }

    /// The random choices of cycle `n`.
    pub fn params(&self, n: u64) -> Rng {
        Rng::fork(self.seed ^ 0x0FA1_75EE_D0F0_A175, n)
    }
}

/// What one cycle did.
#[derive(Clone, Debug)]
pub struct CycleReport {
    pub kind: FaultKind,
    /// The fault's categorical choices ("refuse", "torn", "wipe node 1
    /// (leader)"), counted per kind in the summary.
    pub variant: Vec<String>,
    /// Its lengths ("stall 3400 ms"), shown on the cycle's line only.
    pub params: Vec<String>,
    /// The node the fault hit (`None` for ZooKeeper or both nodes).
    pub target: Option<u64>,
    pub failover_ms: u64,
    /// The leader once the cluster was whole again.
    pub leader_after: u64,
    /// The whole cycle, repair included.
    pub took: Duration,
    /// What the cycle observed, in words (what a power loss dropped, how
    /// many entries the follower appended), shown on the cycle's lines.
    pub notes: Vec<String>,
    /// What the cycle observed, as categories counted per kind in the
    /// summary ("writes moved off the stalled leader").
    pub outcomes: Vec<String>,
    /// A service promise broken without losing data (writes did not move
    /// off a stalled leader): reported, not a safety verdict.
    pub liveness: Vec<String>,
    /// A safety promise broken during the cycle (a leader cut from ZooKeeper
    /// acknowledged a write): fails the soak.
    pub violations: Vec<String>,
    /// ZooKeeper faults: from the fault to the instant the ensemble was
    /// seen with a leader and a quorum again (0 if it never lost them).
    pub zk_outage_ms: Option<u64>,
    /// ZooKeeper faults: from that instant (or the fault's end) to the
    /// first write acknowledged at or after it.
    pub zk_recovery_ms: Option<u64>,
    /// On the history clock: a window in which ZooKeeper had no quorum
    /// (from the second server's kill to the restart of the first); no
    /// write invoked and completed inside it may be acknowledged.
    pub quorum_down_ns: Option<(u64, u64)>,
    /// ERROR lines the nodes logged during the cycle.
    pub error_lines: u64,
}

impl CycleReport {
    /// Choices and lengths, for the cycle's line.
    pub fn variant_text(&self) -> String {
        self.variant
            .iter()
            .chain(&self.params)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_groups() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse(k.name()), Ok(k));
        }
        assert_eq!(KindSet::parse("all").unwrap().kinds.len(), FaultKind::ALL.len());
        let combined = KindSet::parse("combined").unwrap().kinds;
        let single = KindSet::parse("single").unwrap().kinds;
        assert_eq!(combined.len() + single.len(), FaultKind::ALL.len());
        assert!(combined.iter().all(|k| k.combined()));
        assert!(combined.len() >= 5);
        assert_eq!(KindSet::parse("classic").unwrap().kinds, FaultKind::CLASSIC.to_vec());
        assert_eq!(KindSet::parse("zk").unwrap().kinds.len(), 8);
        assert!(!KindSet::parse("zk-kill-leader").unwrap().group);
        assert!(KindSet::parse("meteor").is_err());
    }

    #[test]
    fn schedule_is_a_function_of_the_seed() {
        let kinds = FaultKind::ALL.to_vec();
        let mut a = Schedule::new(5, kinds.clone());
        let mut b = Schedule::new(5, kinds.clone());
        let xs: Vec<_> = (0..40).map(|_| a.next_kind()).collect();
        let ys: Vec<_> = (0..40).map(|_| b.next_kind()).collect();
        assert_eq!(xs, ys);
        // Every round of ALL.len() cycles holds every kind once.
        let first: BTreeSet<_> = xs[..kinds.len()].iter().collect();
        assert_eq!(first.len(), kinds.len());
        assert_eq!(a.params(7).next_u64(), b.params(7).next_u64());
        assert_ne!(a.params(7).next_u64(), a.params(8).next_u64());
    }
}
