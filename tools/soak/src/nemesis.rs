//! One fault cycle: inject a fault (or two at once), wait (polling, with
//! deadlines) until the cluster serves again and measure the failover time,
//! then repair (restart the dead node, thaw the frozen one, heal the cut,
//! lift the disk fault) and wait until both nodes caught up, so every cycle
//! starts from a whole cluster.
//!
//! Every fixed duration here is a fault's own length (how long a link stays
//! cut, a disk stalled, fdatasync off), drawn from the cycle's seeded
//! parameters; whether the cluster recovered is always polled for.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use tokio::task::JoinHandle;

use super::disk;
use super::faults::CycleReport;
use super::faults::FaultKind;
use super::faults::Prober;
use super::faults::PROBE_KEY;
use super::recorder::Outcome;
use super::rng::Rng;
use super::workload::Workload;
use walship_testkit::Cluster;
use walship_testkit::CutMode;

/// Deadline of every wait in a cycle.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a frozen leader stays frozen at least, and a cut lasts at least:
/// well past the nodes' election timeout (1 s by default).
const HOLD: Duration = Duration::from_millis(2000);
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Writes sent to a leader just cut from ZooKeeper (the reborn-leader case).
const CUT_LEADER_WRITES: usize = 4;
/// At most this many writes of our own to cover what the kept node may hold
/// beyond the reborn one's log.
const MAX_COVER_WRITES: u64 = 64;
/// How long to wait for the follower to append what the cut leader sent.
const APPEND_WAIT: Duration = Duration::from_secs(3);
const STATUS_POLL: Duration = Duration::from_millis(20);

/// What a cycle needs.
pub struct CycleCtx<'a> {
    pub cluster: &'a mut Cluster,
    pub probe: &'a Prober,
    pub workload: &'a Workload,
    /// The cycle's number (1-based), for its own keys.
    pub number: u64,
    /// The cycle's seeded choices.
    pub rng: Rng,
}

/// Runs one cycle of `kind`.
pub async fn run_cycle(kind: FaultKind, ctx: CycleCtx<'_>) -> Result<CycleReport> {
    let started = Instant::now();
    let leader = ctx
        .cluster
        .wait_for_leader(RECOVERY_TIMEOUT)
        .await
        .context("before the fault")?;
    let c = Cycle {
        kind,
        cluster: ctx.cluster,
        probe: ctx.probe,
        workload: ctx.workload,
        n: ctx.number,
        rng: ctx.rng,
        started,
        fault_ns: ctx.probe.clock.now_ns(),
        leader,
        follower: 3 - leader,
        target: None,
        variant: Vec::new(),
        params: Vec::new(),
        notes: Vec::new(),
        outcomes: Vec::new(),
        liveness: Vec::new(),
        violations: Vec::new(),
        zk_outage_ms: None,
        zk_recovery_ms: None,
        quorum_down_ns: None,
    };
    c.run().await
}

/// When service came back after a fault.
#[derive(Clone, Copy, Debug)]
struct Failover {
    /// Fault to the first acknowledged write invoked after it.
    ms: u64,
    /// That write's completion, on the history clock.
    ack_ns: u64,
    /// The ready leader right after.
    leader: u64,
}

struct Cycle<'a> {
    kind: FaultKind,
    cluster: &'a mut Cluster,
    probe: &'a Prober,
    workload: &'a Workload,
    n: u64,
    rng: Rng,
    started: Instant,
    fault_ns: u64,
    leader: u64,
    follower: u64,
    target: Option<u64>,
    variant: Vec<String>,
    params: Vec<String>,
    notes: Vec<String>,
    outcomes: Vec<String>,
    liveness: Vec<String>,
    violations: Vec<String>,
    zk_outage_ms: Option<u64>,
    zk_recovery_ms: Option<u64>,
    quorum_down_ns: Option<(u64, u64)>,
}

/// Probe writes every `PROBE_EVERY` in the background, to either node but
/// `avoid`, each its own request; every acknowledged one's completion time
/// is kept. For the ZooKeeper faults, which measure both the failover and
/// the time from the quorum's return to the first write acknowledged.
struct ProbeLoop {
    acks: Arc<Mutex<Vec<u64>>>,
    avoid: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl ProbeLoop {
    fn start(probe: &Prober, avoid: Option<u64>) -> ProbeLoop {
        let writers = [probe.writer(1), probe.writer(2)];
        let acks = Arc::new(Mutex::new(Vec::new()));
        let avoid = Arc::new(AtomicU64::new(avoid.unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, v, st) = (Arc::clone(&acks), Arc::clone(&avoid), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !st.load(Ordering::SeqCst) {
                let mut id = 1 + n % 2;
                if id == v.load(Ordering::SeqCst) {
                    id = 3 - id;
                }
                n += 1;
                let (w, a) = (writers[(id - 1) as usize].clone(), Arc::clone(&a));
                tokio::spawn(async move {
                    let (outcome, complete_ns) = w.put_fresh(PROBE_KEY).await;
                    if outcome == Outcome::Ok {
                        a.lock().expect("acks lock").push(complete_ns);
                    }
                });
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
        ProbeLoop {
            acks,
            avoid,
            stop,
            task,
        }
    }

    fn avoid(&self, id: Option<u64>) {
        self.avoid.store(id.unwrap_or(0), Ordering::SeqCst);
    }

    /// The first acknowledgment completed at or after `t_ns`.
    fn first_ack_from(&self, t_ns: u64) -> Option<u64> {
        self.acks
            .lock()
            .expect("acks lock")
            .iter()
            .copied()
            .filter(|a| *a >= t_ns)
            .min()
    }

    /// Polls (with a deadline) for an acknowledgment at or after `t_ns`.
    async fn wait_ack_from(&self, t_ns: u64, cluster: &mut Cluster) -> Result<u64> {
        let end = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            if let Some(a) = self.first_ack_from(t_ns) {
                return Ok(a);
            }
            cluster.check_crashes()?;
            if Instant::now() >= end {
                bail!("no probe write acknowledged within {RECOVERY_TIMEOUT:?} of ZooKeeper's quorum returning");
            }
            tokio::time::sleep(STATUS_POLL).await;
        }
    }
}

impl Drop for ProbeLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

impl Cycle<'_> {
    async fn run(mut self) -> Result<CycleReport> {
        let (l, f) = (self.leader, self.follower);
        match self.kind {
            FaultKind::KillLeader | FaultKind::KillLeaderWipe => {
                self.target = Some(l);
                self.mark_fault();
                self.cluster.node_mut(l).kill9().await?;
                let fo = self.failover(Some(l), |id| id == f).await?;
                self.restart(l, self.kind == FaultKind::KillLeaderWipe).await?;
                self.finish(fo).await
            }
            FaultKind::KillFollower | FaultKind::KillFollowerWipe => {
                self.target = Some(f);
                self.mark_fault();
                self.cluster.node_mut(f).kill9().await?;
                let fo = self.failover(Some(f), |_| true).await?;
                self.restart(f, self.kind == FaultKind::KillFollowerWipe).await?;
                self.finish(fo).await
            }
            FaultKind::FreezeLeader => {
                self.target = Some(l);
                self.mark_fault();
                self.cluster.node_mut(l).sigstop()?;
                // Frozen at least HOLD and until the other node leads and acks.
                let fo = self.failover(Some(l), |id| id == f).await;
                hold_until(self.started + HOLD).await;
                self.cluster.node_mut(l).sigcont()?;
                self.finish(fo?).await
            }
            FaultKind::ZkRestart => {
                self.mark_fault();
                let Some(zk) = self.cluster.zk_servers_mut().first_mut() else {
                    bail!("zk-restart needs the soak's own ZooKeeper (not --zk)");
                };
                zk.stop().await.context("stop ZooKeeper")?;
                zk.start_again().await.context("start ZooKeeper again")?;
                let fo = self.failover(None, |_| true).await?;
                self.finish(fo).await
            }
            FaultKind::Cut => {
                let mode = self.cut_mode();
                self.mark_fault();
                self.cluster.cut_nodes(mode);
                // Cut at least HOLD, and until a write is acknowledged during
                // it (by the old leader with W, or by the other after it took
                // over).
                let fo = self.failover(None, |_| true).await;
                hold_until(self.started + HOLD).await;
                self.cluster.heal_nodes();
                self.finish(fo?).await
            }
            FaultKind::ZkCutLeader | FaultKind::ZkCutFollower => {
                let id = if self.kind == FaultKind::ZkCutLeader { l } else { f };
                self.target = Some(id);
                let mode = self.cut_mode();
                let hold = self.hold_end(2000, 6000);
                self.mark_fault();
                self.cluster.cut_zk(id, mode)?;
                // A leader cut from ZooKeeper cannot commit: the follower must
                // take over while the cut lasts. A follower's cut must not stop
                // the leader.
                let fo = if id == l {
                    self.failover(None, |x| x == f).await
                } else {
                    self.failover(None, |_| true).await
                };
                hold_until(hold).await;
                self.cluster.heal_zk(id)?;
                self.finish(fo?).await
            }
            FaultKind::PowerLossLeader | FaultKind::PowerLossFollower => {
                let id = if self.kind == FaultKind::PowerLossLeader { l } else { f };
                self.target = Some(id);
                let torn = self.rng.percent(40);
                let window = self.ms(300, 1500);
                self.variant.push(if torn { "torn" } else { "clean" }.into());
                self.nosync_window(&[id], window).await?;
                self.mark_fault();
                self.cluster.node_mut(id).kill9().await?;
                self.power_loss(id, torn).await?;
                let fo = if id == l {
                    self.failover(Some(l), |x| x == f).await?
                } else {
                    self.failover(Some(f), |_| true).await?
                };
                self.restart(id, false).await?;
                self.finish(fo).await
            }
            FaultKind::StallLeader => {
                self.target = Some(l);
                let stall = self.ms(3000, 5000);
                self.mark_fault();
                let lifted = self.stall(l, stall)?;
                let fo = self.failover(None, |_| true).await;
                self.unstall(l, lifted).await?;
                let fo = fo?;
                self.judge_stall(l, stall, fo);
                self.finish(fo).await
            }
            FaultKind::ZkCutLeaderCut => {
                self.target = Some(l);
                let mode = self.cut_mode();
                let hold = self.hold_end(2000, 4000);
                self.mark_fault();
                self.cluster.cut_zk(l, mode)?;
                self.cluster.cut_nodes(mode);
                let fo = self.failover(Some(l), |x| x == f).await;
                hold_until(hold).await;
                self.cluster.heal_nodes();
                self.cluster.heal_zk(l)?;
                self.finish(fo?).await
            }
            FaultKind::ZkCutLeaderKillBothWipe => self.zk_cut_kill_both_wipe().await,
            FaultKind::ZkKillLeader
            | FaultKind::ZkKillFollower
            | FaultKind::ZkKillLeaderKillLeader
            | FaultKind::ZkKillFollowerKillLeader => self.zk_kill().await,
            FaultKind::ZkQuorumLoss | FaultKind::ZkQuorumLossKillLeader => self.zk_quorum_loss().await,
            FaultKind::ZkFreezeLeader | FaultKind::ZkFreezeLeaderFreezeLeader => self.zk_freeze().await,
            FaultKind::ZkCutLeaderKillFollower => {
                self.target = Some(l);
                let mode = self.cut_mode();
                let down_for = self.ms(500, 2000);
                let hold = self.hold_end(3000, 5000);
                self.mark_fault();
                self.cluster.cut_zk(l, mode)?;
                self.cluster.node_mut(f).kill9().await?;
                // The follower is down this long (the fault's length), then
                // comes back with its disk while the leader is still cut.
                hold_until(Instant::now() + down_for).await;
                self.restart(f, false).await?;
                let fo = self.failover(None, |x| x == f).await;
                hold_until(hold).await;
                self.cluster.heal_zk(l)?;
                self.finish(fo?).await
            }
            FaultKind::PowerLossBoth => {
                let torn = [self.rng.percent(40), self.rng.percent(40)];
                let window = self.ms(300, 1500);
                let first = 1 + self.rng.below(2);
                let n_torn = torn.iter().filter(|t| **t).count();
                self.variant.push(format!("{n_torn} of 2 torn"));
                self.nosync_window(&[1, 2], window).await?;
                self.mark_fault();
                self.cluster.kill_both().await?;
                for id in [1u64, 2] {
                    self.power_loss(id, torn[(id - 1) as usize]).await?;
                }
                for id in [first, 3 - first] {
                    self.cluster.node_mut(id).start()?;
                }
                for id in [1, 2] {
                    self.cluster.node_mut(id).wait_live(RECOVERY_TIMEOUT).await?;
                }
                let fo = self.failover(None, |_| true).await?;
                self.finish(fo).await
            }
            FaultKind::StallLeaderKillFollower => {
                self.target = Some(l);
                let stall = self.ms(3000, 5000);
                let down_for = self.ms(500, 2000);
                self.mark_fault();
                let lifted = self.stall(l, stall)?;
                self.cluster.node_mut(f).kill9().await?;
                hold_until(Instant::now() + down_for).await;
                self.restart(f, false).await?;
                let fo = self.failover(None, |_| true).await;
                self.unstall(l, lifted).await?;
                let fo = fo?;
                self.judge_stall(l, stall, fo);
                self.finish(fo).await
            }
            FaultKind::FreezeLeaderZkCut => {
                self.target = Some(l);
                let mode = self.cut_mode();
                let cut_leader = self.rng.percent(50);
                let cut_for = self.ms(1500, 3000);
                let stale_for = self.ms(1000, 2500);
                let link = if cut_leader { l } else { f };
                self.variant.push(format!(
                    "{}'s link",
                    if cut_leader { "frozen leader" } else { "follower" }
                ));
                self.mark_fault();
                self.cluster.node_mut(l).sigstop()?;
                self.cluster.cut_zk(link, mode)?;
                if cut_leader {
                    // The follower takes over; the old leader wakes still cut
                    // from ZooKeeper, reaching only the new leader.
                    let fo = self.failover(Some(l), |x| x == f).await;
                    hold_until(self.started + HOLD).await;
                    self.cluster.node_mut(l).sigcont()?;
                    hold_until(Instant::now() + stale_for).await;
                    self.cluster.heal_zk(l)?;
                    self.finish(fo?).await
                } else {
                    // Nobody can commit until the follower's link heals.
                    let proxy = self.cluster.zk_link(f)?;
                    let healed = tokio::spawn(async move {
                        tokio::time::sleep(cut_for).await;
                        proxy.heal();
                    });
                    let fo = self.failover(Some(l), |x| x == f).await;
                    let _ = healed.await;
                    self.cluster.heal_zk(f)?;
                    hold_until(self.started + HOLD).await;
                    self.cluster.node_mut(l).sigcont()?;
                    self.finish(fo?).await
                }
            }
        }
    }

    /// The reborn-leader case (issue 9): the leader's link to ZooKeeper cut,
    /// writes sent to it (the follower may append them; none may be
    /// acknowledged), both nodes killed as soon as the follower appended,
    /// one wiped (seeded), and the nodes restarted one at a time. The node
    /// started first must lead alone with W; with the workload held, writes
    /// of our own on this cycle's keys fill the log indices the other node
    /// may still hold from before, so a reused log id would leave the two
    /// nodes with different values there, which the final checks (local
    /// reads on each node, key counts) and later failovers see.
    async fn zk_cut_kill_both_wipe(mut self) -> Result<CycleReport> {
        let (l, f) = (self.leader, self.follower);
        let mode = self.cut_mode();
        let wiped = if self.rng.percent(50) { l } else { f };
        let wiped_first = self.rng.percent(75);
        let kept = 3 - wiped;
        let first = if wiped_first { wiped } else { kept };
        self.variant
            .push(format!("wipe {}", if wiped == l { "leader" } else { "follower" }));
        self.params.push(format!("node {wiped} wiped"));
        self.variant
            .push(format!("{} node first", if wiped_first { "wiped" } else { "kept" }));

        let before = self.cluster.status_of(f).await.success();
        let f_index0 = before.as_ref().and_then(|s| s.last_log_index).unwrap_or(0);
        let term0 = before.as_ref().and_then(|s| s.term);
        let keys: Vec<String> = (0..CUT_LEADER_WRITES as u64 * 16)
            .map(|i| format!("soak-c{}-{i:02}", self.n))
            .collect();
        self.mark_fault();
        self.cluster.cut_zk(l, mode)?;
        let writer = self.probe.writer(l);
        let mut old: Vec<JoinHandle<(Outcome, u64)>> = Vec::new();
        for (i, key) in keys.iter().take(CUT_LEADER_WRITES).enumerate() {
            self.probe.register_key(key);
            let (w, key, value) = (writer.clone(), key.clone(), format!("old{}-{i}", self.n));
            old.push(tokio::spawn(async move { w.put(&key, &value).await }));
        }

        // Kill both as soon as the follower holds entries W lacks (beyond
        // what the cut leader last knew W to hold), or it took over, or the
        // deadline passed.
        let clock = self.probe.clock;
        let end = Instant::now() + APPEND_WAIT;
        let mut f_old_term_until = self.fault_ns;
        let mut last_index = [0u64; 2];
        let mut w_index = None;
        let mut beyond_w = None;
        let mut took_over = false;
        loop {
            if let Some(s) = self.cluster.status_of(l).await.success() {
                last_index[(l - 1) as usize] = s.last_log_index.unwrap_or(0);
                w_index = s.witness_log_index.or(w_index);
            }
            let asked_f = clock.now_ns();
            if let Some(s) = self.cluster.status_of(f).await.success() {
                let idx = s.last_log_index.unwrap_or(0);
                last_index[(f - 1) as usize] = idx;
                if s.term == term0 && !s.is_leader() {
                    f_old_term_until = asked_f;
                } else {
                    took_over = true;
                }
                let w = w_index.unwrap_or(0).max(f_index0);
                if idx > w {
                    beyond_w = Some(idx - w);
                }
            }
            if beyond_w.is_some() || took_over || Instant::now() >= end {
                break;
            }
            tokio::time::sleep(STATUS_POLL).await;
        }
        self.workload.pause(true);
        let result = self.kill_both_and_rebirth(l, wiped, first, &keys, last_index).await;
        self.workload.pause(false);
        let fo = result?;

        // What the cut leader did with the writes sent to it.
        let mut acked = 0;
        for (i, h) in old.into_iter().enumerate() {
            let Ok(Ok((outcome, complete_ns))) = tokio::time::timeout(RECOVERY_TIMEOUT, h).await else {
                continue;
            };
            if outcome == Outcome::Ok {
                acked += 1;
                if complete_ns < f_old_term_until {
                    self.violations.push(format!(
                        "cycle {}: node {l}, cut from ZooKeeper, acknowledged PUT {}=old{}-{i} while node {f} was \
                         still its follower in term {term0:?} (W was in no quorum)",
                        self.n, keys[i], self.n
                    ));
                }
            }
        }
        match beyond_w {
            Some(n) => {
                self.notes.push(format!(
                    "follower held {n} entries beyond W's last index {w_index:?} as the cut leader knew it"
                ));
                self.outcomes.push("follower held entries W lacked".into());
            }
            None => self.outcomes.push("follower held nothing beyond W".into()),
        }
        if took_over {
            self.outcomes.push("follower took over before the kill".into());
        }
        if acked > 0 {
            self.notes.push(format!(
                "{acked} of {CUT_LEADER_WRITES} writes to the cut leader acknowledged"
            ));
            self.outcomes.push("a write to the cut leader acknowledged".into());
        }
        self.finish(fo).await
    }

    /// The ZooKeeper leader before the fault (index into the cluster's
    /// servers), polled for: a cycle starts from a whole ensemble.
    async fn zk_leader(&mut self) -> Result<usize> {
        if self.cluster.zk_servers().len() < 3 {
            bail!("{} needs the soak's own ZooKeeper ensemble (--ensemble)", self.kind);
        }
        self.cluster
            .wait_zk_whole(RECOVERY_TIMEOUT)
            .await
            .context("before the fault")?;
        let v = self.cluster.zk_view().await;
        v.leader.context("the ZooKeeper ensemble has no leader")
    }

    /// A ZooKeeper follower (seeded), not `leader`.
    fn zk_follower(&mut self, leader: usize) -> usize {
        let others: Vec<usize> = (0..self.cluster.zk_servers().len()).filter(|i| *i != leader).collect();
        others[self.rng.below(others.len() as u64) as usize]
    }

    fn zk_name(&self, i: usize) -> String {
        format!("zk{}", self.cluster.zk_servers()[i].myid())
    }

    /// Records the ZooKeeper figures: outage (fault to quorum back) and
    /// recovery (quorum back to the first write acknowledged from then on).
    fn zk_figures(&mut self, back_ns: u64, ack_ns: u64) {
        self.zk_outage_ms = Some(back_ns.saturating_sub(self.fault_ns) / 1_000_000);
        let rec = ack_ns.saturating_sub(back_ns) / 1_000_000;
        self.zk_recovery_ms = Some(rec);
        self.outcomes.push(
            if rec <= 1000 {
                "writes back within 1 s"
            } else {
                "writes back after more than 1 s"
            }
            .into(),
        );
    }

    /// kill -9 of the ZooKeeper leader or of a follower, with or without the
    /// walship leader; the dead ones restarted once walship serves again.
    async fn zk_kill(mut self) -> Result<CycleReport> {
        let (l, f) = (self.leader, self.follower);
        let zl = self.zk_leader().await?;
        let kills_zk_leader = matches!(self.kind, FaultKind::ZkKillLeader | FaultKind::ZkKillLeaderKillLeader);
        let kills_walship = matches!(
            self.kind,
            FaultKind::ZkKillLeaderKillLeader | FaultKind::ZkKillFollowerKillLeader
        );
        let victim = if kills_zk_leader { zl } else { self.zk_follower(zl) };
        self.params.push(format!("{} killed", self.zk_name(victim)));
        if kills_walship {
            self.target = Some(l);
        }
        self.mark_fault();
        let probes = ProbeLoop::start(self.probe, kills_walship.then_some(l));
        self.cluster.zk_servers_mut()[victim]
            .kill9()
            .await
            .context("kill a ZooKeeper server")?;
        if kills_walship {
            self.cluster.node_mut(l).kill9().await?;
        }
        // The quorum's return: the two others elect a leader (a follower's
        // death loses nothing: its end is the fault itself).
        let back_ns = if kills_zk_leader {
            let (t, _) = self.cluster.wait_zk_quorum(RECOVERY_TIMEOUT).await?;
            self.probe.clock.at_ns(t)
        } else {
            self.fault_ns
        };
        let ack = probes.wait_ack_from(back_ns, self.cluster).await?;
        let first = probes.first_ack_from(self.fault_ns).unwrap_or(ack);
        drop(probes);
        self.zk_figures(back_ns, ack);
        let accept = move |id: u64| !kills_walship || id == f;
        let leader = self
            .cluster
            .wait_for_leader_where(RECOVERY_TIMEOUT, "a ready leader it accepts", accept)
            .await?;
        let fo = Failover {
            ms: first.saturating_sub(self.fault_ns) / 1_000_000,
            ack_ns: first,
            leader,
        };
        self.cluster.zk_servers_mut()[victim]
            .start_again()
            .await
            .context("start the killed ZooKeeper server again")?;
        self.cluster.wait_zk_whole(RECOVERY_TIMEOUT).await?;
        if kills_walship {
            self.restart(l, false).await?;
        }
        self.finish(fo).await
    }

    /// Two of the three servers killed (the leader and a follower, or both
    /// followers: seeded) for 2-5 s, then started again. No write invoked
    /// while the quorum is gone may be acknowledged (checked at the end
    /// against the history, `quorum_down_ns`). With the walship leader
    /// killed too, it is restarted while the quorum is still gone.
    async fn zk_quorum_loss(mut self) -> Result<CycleReport> {
        let l = self.leader;
        let zl = self.zk_leader().await?;
        let kills_walship = self.kind == FaultKind::ZkQuorumLossKillLeader;
        let with_leader = self.rng.percent(50);
        let victims: Vec<usize> = if with_leader {
            vec![zl, self.zk_follower(zl)]
        } else {
            (0..self.cluster.zk_servers().len()).filter(|i| *i != zl).collect()
        };
        self.variant.push(
            if with_leader {
                "leader and a follower"
            } else {
                "both followers"
            }
            .into(),
        );
        let down_for = self.ms(2000, 5000);
        self.params.push(format!(
            "{} down {} ms",
            victims.iter().map(|v| self.zk_name(*v)).collect::<Vec<_>>().join("+"),
            down_for.as_millis()
        ));
        if kills_walship {
            self.target = Some(l);
        }
        self.mark_fault();
        let probes = ProbeLoop::start(self.probe, kills_walship.then_some(l));
        for v in &victims {
            self.cluster.zk_servers_mut()[*v]
                .kill9()
                .await
                .context("kill a ZooKeeper server")?;
        }
        let down_from = self.probe.clock.now_ns();
        if kills_walship {
            self.cluster.node_mut(l).kill9().await?;
        }
        let restart_at = Instant::now() + down_for;
        if kills_walship {
            // Back while ZooKeeper has no quorum: it must wait for it.
            hold_until(Instant::now() + down_for / 2).await;
            self.cluster.node_mut(l).start()?;
            probes.avoid(None);
        }
        hold_until(restart_at).await;
        let down_until = self.probe.clock.now_ns();
        self.quorum_down_ns = Some((down_from, down_until));
        for v in &victims {
            self.cluster.zk_servers_mut()[*v]
                .spawn()
                .context("start a ZooKeeper server again")?;
        }
        let (t, _) = self.cluster.wait_zk_quorum(RECOVERY_TIMEOUT).await?;
        let back_ns = self.probe.clock.at_ns(t);
        let ack = probes.wait_ack_from(back_ns, self.cluster).await?;
        // Writes acknowledged before the second server died do not count:
        // the failover is from the loss of the quorum.
        let first = probes.first_ack_from(down_from).unwrap_or(ack);
        drop(probes);
        self.zk_figures(back_ns, ack);
        let leader = self.cluster.wait_for_leader(RECOVERY_TIMEOUT).await?;
        let fo = Failover {
            ms: first.saturating_sub(down_from) / 1_000_000,
            ack_ns: first,
            leader,
        };
        for v in &victims {
            self.cluster.zk_servers_mut()[*v].wait_serving(RECOVERY_TIMEOUT).await?;
        }
        self.cluster.wait_zk_whole(RECOVERY_TIMEOUT).await?;
        if kills_walship {
            self.cluster.node_mut(l).wait_live(RECOVERY_TIMEOUT).await?;
        }
        self.finish(fo).await
    }

    /// SIGSTOP of the ZooKeeper leader (and, combined, of the walship
    /// leader) until the other two servers elect a leader and a write is
    /// acknowledged after that, at least `HOLD`; then SIGCONT.
    async fn zk_freeze(mut self) -> Result<CycleReport> {
        let (l, f) = (self.leader, self.follower);
        let zl = self.zk_leader().await?;
        let freezes_walship = self.kind == FaultKind::ZkFreezeLeaderFreezeLeader;
        self.params.push(format!("{} frozen", self.zk_name(zl)));
        if freezes_walship {
            self.target = Some(l);
        }
        self.mark_fault();
        let probes = ProbeLoop::start(self.probe, freezes_walship.then_some(l));
        self.cluster.zk_servers_mut()[zl].sigstop()?;
        if freezes_walship {
            self.cluster.node_mut(l).sigstop()?;
        }
        let clock = self.probe.clock;
        let cluster = &mut *self.cluster;
        let result: Result<(u64, u64)> = async {
            let (t, _) = cluster.wait_zk_quorum(RECOVERY_TIMEOUT).await?;
            let back_ns = clock.at_ns(t);
            let ack = probes.wait_ack_from(back_ns, cluster).await?;
            Ok((back_ns, ack))
        }
        .await;
        let first = probes.first_ack_from(self.fault_ns);
        drop(probes);
        hold_until(self.started + HOLD).await;
        self.cluster.zk_servers_mut()[zl].sigcont()?;
        if freezes_walship {
            self.cluster.node_mut(l).sigcont()?;
        }
        let (back_ns, ack) = result?;
        self.zk_figures(back_ns, ack);
        let first = first.unwrap_or(ack);
        let accept = move |id: u64| !freezes_walship || id == f;
        let leader = self
            .cluster
            .wait_for_leader_where(RECOVERY_TIMEOUT, "a ready leader it accepts", accept)
            .await?;
        let fo = Failover {
            ms: first.saturating_sub(self.fault_ns) / 1_000_000,
            ack_ns: first,
            leader,
        };
        self.cluster.wait_zk_whole(RECOVERY_TIMEOUT).await?;
        self.finish(fo).await
    }

    async fn kill_both_and_rebirth(
        &mut self,
        l: u64,
        wiped: u64,
        first: u64,
        keys: &[String],
        last_index: [u64; 2],
    ) -> Result<Failover> {
        self.cluster.kill_both().await?;
        self.cluster.heal_zk(l)?;
        self.cluster.wipe(wiped)?;
        self.cluster.node_mut(first).start()?;
        self.cluster.node_mut(first).wait_live(RECOVERY_TIMEOUT).await?;
        // Fill the indices the other node may hold with acknowledged writes
        // of our own, one at a time, through the node started first (alone,
        // it must lead with W); its first acknowledgment is the failover.
        let base = self
            .cluster
            .status_of(first)
            .await
            .success()
            .and_then(|s| s.last_log_index)
            .unwrap_or(0);
        let beyond = last_index.iter().max().copied().unwrap_or(0).saturating_sub(base);
        let count = (beyond + 2).clamp(CUT_LEADER_WRITES as u64, MAX_COVER_WRITES.min(keys.len() as u64));
        let writer = self.probe.writer(first);
        let mut first_ack = None;
        for (i, key) in keys.iter().take(count as usize).enumerate() {
            self.probe.register_key(key);
            let end = Instant::now() + RECOVERY_TIMEOUT;
            let mut attempt = 0;
            loop {
                self.cluster.check_crashes()?;
                let (outcome, complete_ns) = writer.put(key, &format!("new{}-{i}-{attempt}", self.n)).await;
                if outcome == Outcome::Ok {
                    first_ack.get_or_insert(complete_ns);
                    break;
                }
                if Instant::now() >= end {
                    bail!(
                        "node {first}, restarted alone, acknowledged no write to {key} within {RECOVERY_TIMEOUT:?}; see {}",
                        self.cluster.node(first).log_path().display()
                    );
                }
                attempt += 1;
                tokio::time::sleep(PROBE_EVERY).await;
            }
        }
        self.notes.push(format!(
            "{count} writes through node {first} alone (its log ended at {base}, the nodes' at {:?} before the kill)",
            last_index
        ));
        let second = 3 - first;
        if first == wiped {
            self.outcomes.push(
                if last_index[(second - 1) as usize] > base {
                    "kept node held entries the reborn one lacked"
                } else {
                    "kept node held nothing beyond the reborn one"
                }
                .into(),
            );
        }
        self.cluster.node_mut(second).start()?;
        self.cluster.node_mut(second).wait_live(RECOVERY_TIMEOUT).await?;
        let leader = self.cluster.wait_for_leader(RECOVERY_TIMEOUT).await?;
        let ack_ns = first_ack.expect("at least one write");
        Ok(Failover {
            ms: ack_ns.saturating_sub(self.fault_ns) / 1_000_000,
            ack_ns,
            leader,
        })
    }

    fn mark_fault(&mut self) {
        self.fault_ns = self.probe.clock.now_ns();
    }

    /// `lo..hi` ms, seeded.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.rng.below(hi - lo + 1))
    }

    /// The end of a hold of `lo..hi` ms from the cycle's start.
    fn hold_end(&mut self, lo: u64, hi: u64) -> Instant {
        self.started + self.ms(lo, hi)
    }

    /// Blackhole (sockets stay open, nothing is forwarded) or refuse (open
    /// connections closed, new ones reset), half and half.
    fn cut_mode(&mut self) -> CutMode {
        let mode = if self.rng.percent(50) {
            CutMode::Blackhole
        } else {
            CutMode::Refuse
        };
        self.variant.push(
            match mode {
                CutMode::Blackhole => "blackhole",
                CutMode::Refuse => "refuse",
            }
            .into(),
        );
        mode
    }

    /// fdatasync off on `ids` for `window` under load (the node is killed at
    /// the end of it, before it is turned back on).
    async fn nosync_window(&mut self, ids: &[u64], window: Duration) -> Result<()> {
        for id in ids {
            self.cluster.fault_dir(*id).set_nosync(true)?;
        }
        self.params.push(format!("unsynced {} ms", window.as_millis()));
        hold_until(Instant::now() + window).await;
        Ok(())
    }

    /// Node `id` is stopped: cut its disk back to what was synced, then let
    /// fdatasync work again for its next life.
    async fn power_loss(&mut self, id: u64, torn: bool) -> Result<()> {
        let data_dir = self.cluster.node(id).data_dir().to_path_buf();
        let fd = self.cluster.fault_dir(id);
        let lost = disk::power_loss(&data_dir, &fd, torn).await?;
        fd.set_nosync(false)?;
        self.notes.push(format!("node {id}: {}", lost.text));
        self.outcomes.push(
            if lost.records_dropped > 0 {
                "log records lost"
            } else {
                "nothing lost"
            }
            .into(),
        );
        Ok(())
    }

    /// Stalls node `id`'s disk now, and lifts the stall after `d` from a task
    /// of its own (so the stall ends on time whatever the waits do).
    fn stall(&mut self, id: u64, d: Duration) -> Result<JoinHandle<()>> {
        let fd = self.cluster.fault_dir(id);
        fd.set_stall(true)?;
        self.params.push(format!("stall {} ms", d.as_millis()));
        Ok(tokio::spawn(async move {
            tokio::time::sleep(d).await;
            if let Err(e) = fd.set_stall(false) {
                eprintln!("walship soak: lifting the disk stall: {e:#}");
            }
        }))
    }

    async fn unstall(&mut self, id: u64, lifted: JoinHandle<()>) -> Result<()> {
        let _ = lifted.await;
        self.cluster.fault_dir(id).set_stall(false)
    }

    /// A stalled leader must hand over (or keep committing): a write
    /// acknowledged only after the stall ended is a liveness miss.
    fn judge_stall(&mut self, l: u64, stall: Duration, fo: Failover) {
        let stall_end_ns = self.fault_ns + stall.as_nanos() as u64;
        if fo.ack_ns < stall_end_ns {
            self.outcomes.push(if fo.leader != l {
                "writes moved off the stalled leader".into()
            } else {
                "writes continued on the stalled leader".into()
            });
        } else {
            self.outcomes.push("no write acknowledged during the stall".into());
            self.liveness.push(format!(
                "no write acknowledged during the {} ms disk stall of leader node {l}",
                stall.as_millis()
            ));
        }
    }

    /// Probes from the fault on (never node `down`, which the fault stopped)
    /// until a probe write is acknowledged, then waits for a ready leader
    /// that `accept` takes.
    async fn failover(&mut self, down: Option<u64>, accept: impl Fn(u64) -> bool) -> Result<Failover> {
        let first_ack = Arc::new(AtomicU64::new(u64::MAX));
        let end = Instant::now() + RECOVERY_TIMEOUT;
        let mut n = 0u64;
        loop {
            let ack = first_ack.load(Ordering::SeqCst);
            if ack != u64::MAX {
                let leader = self
                    .cluster
                    .wait_for_leader_where(RECOVERY_TIMEOUT, "a ready leader it accepts", accept)
                    .await
                    .context("after the fault")?;
                return Ok(Failover {
                    ms: ack.saturating_sub(self.fault_ns) / 1_000_000,
                    ack_ns: ack,
                    leader,
                });
            }
            self.cluster.check_crashes()?;
            if Instant::now() >= end {
                bail!(
                    "no write invoked after the fault was acknowledged within {RECOVERY_TIMEOUT:?} ({:.1} s after the fault)",
                    (self.probe.clock.now_ns() - self.fault_ns) as f64 / 1e9
                );
            }
            let id = match down {
                Some(d) => 3 - d,
                None => 1 + n % 2,
            };
            n += 1;
            self.probe.spawn(id, &first_ack);
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    async fn restart(&mut self, id: u64, wipe: bool) -> Result<()> {
        if wipe {
            self.cluster.wipe(id)?;
        }
        self.cluster.node_mut(id).start()?;
        self.cluster.node_mut(id).wait_live(RECOVERY_TIMEOUT).await
    }

    /// Waits until the cluster is whole again (both nodes caught up).
    async fn finish(self, fo: Failover) -> Result<CycleReport> {
        self.cluster
            .wait_caught_up(RECOVERY_TIMEOUT)
            .await
            .context("repairing after the fault")?;
        let leader_after = self.cluster.wait_for_leader(RECOVERY_TIMEOUT).await?;
        Ok(CycleReport {
            kind: self.kind,
            variant: self.variant,
            params: self.params,
            target: self.target,
            failover_ms: fo.ms,
            leader_after,
            took: self.started.elapsed(),
            notes: self.notes,
            outcomes: self.outcomes,
            liveness: self.liveness,
            violations: self.violations,
            zk_outage_ms: self.zk_outage_ms,
            zk_recovery_ms: self.zk_recovery_ms,
            quorum_down_ns: self.quorum_down_ns,
            error_lines: 0,
        })
    }
}

/// The fault's own length (not a synchronisation: the waits above poll for
/// what must have happened).
async fn hold_until(t: Instant) {
    tokio::time::sleep_until(t.into()).await;
}
