//! The faults, their seeded schedule, and one cycle: inject a fault, wait
//! (polling, with deadlines) until the cluster serves again, measure the
//! failover time, then repair (restart the dead node, thaw the frozen one,
//! heal the cut) and wait until both nodes are caught up, so every cycle
//! starts from a whole cluster.
//!
//! Failover time is from the fault to the completion of the first write
//! invoked after it and acknowledged. The workload's clients cannot measure
//! that (right after a freeze they all sit in requests to the frozen node
//! until their timeouts), so a prober does: from the fault on it starts a
//! fresh write every 100 ms to a node the fault left serving, each its own
//! request with its own timeout, all recorded in the history (key
//! `soak-probe`) and checked like any other operation.

use std::fmt;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

use super::client::Answer;
use super::client::NodeClient;
use super::cluster::SoakCluster;
use super::history::Clock;
use super::history::OpKind;
use super::history::OpRecord;
use super::history::Outcome;
use super::history::Recorder;
use super::rng::Rng;

/// Deadline of every wait in a cycle.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a frozen leader stays frozen at least, and a cut lasts at least:
/// well past the nodes' election timeout (1 s by default).
const HOLD: Duration = Duration::from_millis(2000);
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);
/// The key probe writes go to.
pub const PROBE_KEY: &str = "soak-probe";
/// Probe writes are history clients `PROBE_CLIENT_BASE + n`, one per write.
pub const PROBE_CLIENT_BASE: u32 = 1_000_000;

/// Starts probe writes and notes the first acknowledged one.
pub struct Prober {
    clients: Vec<NodeClient>,
    recorder: Recorder,
    clock: Clock,
    next: Arc<AtomicU32>,
}

impl Prober {
    pub fn new(clients: &[NodeClient], recorder: Recorder, clock: Clock) -> Prober {
        Prober {
            clients: clients.iter().map(|c| c.with_timeout(PROBE_TIMEOUT)).collect(),
            recorder,
            clock,
            next: Arc::new(AtomicU32::new(0)),
        }
    }

    /// One probe write to node `id` in the background; an acknowledged one
    /// lowers `first_ack` to its completion time.
    fn spawn(&self, id: u64, first_ack: &Arc<AtomicU64>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let client = self.clients[(id - 1) as usize].clone();
        let recorder = self.recorder.clone();
        let clock = self.clock;
        let first_ack = Arc::clone(first_ack);
        tokio::spawn(async move {
            let value = format!("p{n}");
            let invoke_ns = clock.now_ns();
            let a = client.put(PROBE_KEY, &value).await;
            let complete_ns = clock.now_ns();
            let result = match a {
                Answer::Ok(_) => {
                    first_ack.fetch_min(complete_ns, Ordering::SeqCst);
                    Outcome::Ok
                }
                Answer::Fail(_) => Outcome::Fail,
                Answer::Unknown(_) => Outcome::Unknown,
            };
            recorder.record(OpRecord {
                op: OpKind::Put,
                key: PROBE_KEY.into(),
                value: Some(value),
                expect: None,
                result,
                cas_ok: None,
                read: None,
                client: PROBE_CLIENT_BASE + n,
                invoke_ns,
                complete_ns,
            });
        });
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
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
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
        }
    }

    pub fn parse(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            format!(
                "unknown fault kind '{s}' (kinds: {})",
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

/// The seeded order of faults: each round is a shuffle of every enabled kind,
/// so any `--cycles` at least the number of kinds exercises each one.
pub struct Schedule {
    rng: Rng,
    kinds: Vec<FaultKind>,
    bag: Vec<FaultKind>,
}

impl Schedule {
    pub fn new(seed: u64, kinds: Vec<FaultKind>) -> Schedule {
        assert!(!kinds.is_empty(), "at least one fault kind");
        Schedule {
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
}

/// What one cycle did.
#[derive(Clone, Debug)]
pub struct CycleReport {
    pub kind: FaultKind,
    /// The node the fault hit (`None` for ZooKeeper).
    pub target: Option<u64>,
    pub failover_ms: u64,
    /// The leader once the cluster was whole again.
    pub leader_after: u64,
    /// The whole cycle, repair included.
    pub took: Duration,
}

/// Runs one cycle of `kind`.
pub async fn run_cycle(kind: FaultKind, cluster: &mut SoakCluster, probe: &Prober) -> Result<CycleReport> {
    let started = Instant::now();
    let leader = cluster
        .wait_leader(RECOVERY_TIMEOUT, |_| true)
        .await
        .context("before the fault")?;
    let follower = 3 - leader;
    let fault_ns = probe.clock.now_ns();
    let target = match kind {
        FaultKind::KillLeader | FaultKind::KillLeaderWipe => {
            cluster.node(leader).kill9().await?;
            let failover = wait_failover(cluster, probe, fault_ns, Some(leader), |id| id == follower).await?;
            restart(cluster, leader, kind == FaultKind::KillLeaderWipe).await?;
            return finish(kind, Some(leader), failover, cluster, started).await;
        }
        FaultKind::KillFollower | FaultKind::KillFollowerWipe => {
            cluster.node(follower).kill9().await?;
            let failover = wait_failover(cluster, probe, fault_ns, Some(follower), |_| true).await?;
            restart(cluster, follower, kind == FaultKind::KillFollowerWipe).await?;
            return finish(kind, Some(follower), failover, cluster, started).await;
        }
        FaultKind::FreezeLeader => {
            cluster.node(leader).sigstop()?;
            // Frozen at least HOLD and until the other node leads and acks.
            let failover = wait_failover(cluster, probe, fault_ns, Some(leader), |id| id == follower).await;
            hold_until(started + HOLD).await;
            cluster.node(leader).sigcont()?;
            return finish(kind, Some(leader), failover?, cluster, started).await;
        }
        FaultKind::ZkRestart => {
            let Some(zk) = cluster.zk.as_mut() else {
                bail!("zk-restart needs the soak's own ZooKeeper (not --zk)");
            };
            zk.stop().await.context("stop ZooKeeper")?;
            zk.start_again().await.context("start ZooKeeper again")?;
            None
        }
        FaultKind::Cut => {
            cluster.cut();
            // Cut at least HOLD, and until a write is acknowledged during it
            // (by the old leader with W, or by the other after it took over).
            let failover = wait_failover(cluster, probe, fault_ns, None, |_| true).await;
            hold_until(started + HOLD).await;
            cluster.heal();
            return finish(kind, None, failover?, cluster, started).await;
        }
    };
    let failover = wait_failover(cluster, probe, fault_ns, None, |_| true).await?;
    finish(kind, target, failover, cluster, started).await
}

/// Probes from the fault on (never node `down`, which the fault stopped)
/// until a probe write is acknowledged, then waits for a ready leader that
/// `accept` takes; returns the failover time in ms.
async fn wait_failover(
    cluster: &mut SoakCluster,
    probe: &Prober,
    fault_ns: u64,
    down: Option<u64>,
    accept: impl Fn(u64) -> bool,
) -> Result<u64> {
    let first_ack = Arc::new(AtomicU64::new(u64::MAX));
    let end = Instant::now() + RECOVERY_TIMEOUT;
    let mut n = 0u64;
    loop {
        let ack = first_ack.load(Ordering::SeqCst);
        if ack != u64::MAX {
            cluster
                .wait_leader(RECOVERY_TIMEOUT, accept)
                .await
                .context("after the fault")?;
            return Ok(ack.saturating_sub(fault_ns) / 1_000_000);
        }
        cluster.check_crashes()?;
        if Instant::now() >= end {
            bail!(
                "no write invoked after the fault was acknowledged within {RECOVERY_TIMEOUT:?} ({:.1} s after the fault)",
                (probe.clock.now_ns() - fault_ns) as f64 / 1e9
            );
        }
        let id = match down {
            Some(d) => 3 - d,
            None => 1 + n % 2,
        };
        n += 1;
        probe.spawn(id, &first_ack);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

async fn restart(cluster: &mut SoakCluster, id: u64, wipe: bool) -> Result<()> {
    if wipe {
        cluster.node(id).wipe()?;
    }
    cluster.node(id).spawn()?;
    cluster.wait_live(id, RECOVERY_TIMEOUT).await
}

/// Waits until the cluster is whole again (both nodes caught up).
async fn finish(
    kind: FaultKind,
    target: Option<u64>,
    failover_ms: u64,
    cluster: &mut SoakCluster,
    started: Instant,
) -> Result<CycleReport> {
    cluster
        .wait_caught_up(RECOVERY_TIMEOUT)
        .await
        .context("repairing after the fault")?;
    let leader_after = cluster.wait_leader(RECOVERY_TIMEOUT, |_| true).await?;
    Ok(CycleReport {
        kind,
        target,
        failover_ms,
        leader_after,
        took: started.elapsed(),
    })
}

/// The fault's own minimum length (not a synchronisation: the waits above
/// already polled for what must have happened).
async fn hold_until(t: Instant) {
    tokio::time::sleep_until(t.into()).await;
}
