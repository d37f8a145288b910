//! When a follower stands for election: the failover rules as pure
//! functions of what the node has seen and of `now` (no clock, no I/O), so
//! they read next to witness-protocol.md ("Leader loss", "Leases") and are
//! tested from tables. `node/failover.rs` (`failover_loop`, `leader_znode_watch`)
//! feeds them observations and acts on their verdicts.
//!
//! Safety never rests on these rules: W's single vote decides who leads,
//! and a leader deposed by mistake only costs an election. They decide
//! *when* to try, trading a fast failover against needless elections.

use std::time::Duration;
use std::time::Instant;

use serde::Deserialize;
use serde::Serialize;

use crate::types::NodeId;

/// The payload of the `leader` ephemeral znode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The term the leader was elected in.
    pub term: u64,
    /// The leader's node id.
    pub id: NodeId,
    /// The `host:port` it advertises.
    pub addr: String,
}

/// The term in a `leader` znode's payload, if it parses.
pub fn leader_term(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<LeaderInfo>(bytes).ok().map(|l| l.term)
}

/// The leader's lease, as seen through ZooKeeper. The leader rewrites its
/// ephemeral `leader` znode every touch interval (half a heartbeat), so a
/// follower can tell a leader that is alive and reaching ZooKeeper, hence
/// able to commit, from one that is hung or gone, without hearing from it
/// directly. A follower cut off from a live leader therefore does not depose
/// it (no leader flapping when only the node-to-node link fails), while a
/// frozen leader's lease expires within an election timeout.
#[derive(Debug, Clone, Default)]
pub struct LeaderLease {
    /// The holder, if the znode exists and parses.
    pub holder: Option<LeaderInfo>,
    /// (creation zxid, data version) of the znode when last read.
    stamp: Option<(i64, i32)>,
    /// When `stamp` last changed (the leader's last touch we saw).
    renewed_at: Option<Instant>,
    /// Since when the znode has been observed absent.
    absent_since: Option<Instant>,
    /// Start of the current unbroken run of observations through the
    /// ZooKeeper leader (each read follows a `sync`), and the last one.
    /// A lease is only judged over such a run: while ZooKeeper cannot take
    /// writes (no quorum, a frozen ZooKeeper leader) the leader cannot renew,
    /// and a ZooKeeper follower may still serve the old znode.
    observed_since: Option<Instant>,
    observed_at: Option<Instant>,
}

impl LeaderLease {
    /// A synced read of the znode at `now`: `(payload, czxid, version)`, or
    /// `None` when it does not exist (or does not parse).
    pub fn observe(&mut self, znode: Option<(LeaderInfo, i64, i32)>, now: Instant) {
        self.observed_since.get_or_insert(now);
        self.observed_at = Some(now);
        match znode {
            Some((info, czxid, version)) => {
                if self.stamp != Some((czxid, version)) {
                    self.stamp = Some((czxid, version));
                    self.renewed_at = Some(now);
                }
                self.holder = Some(info);
                self.absent_since = None;
            }
            None => {
                self.holder = None;
                self.stamp = None;
                self.absent_since.get_or_insert(now);
            }
        }
    }

    /// A synced read of the znode failed: the run of observations is broken.
    pub fn observe_failed(&mut self) {
        self.observed_since = None;
    }

    /// This process did not run for a while (see `overslept`): what it saw
    /// is as old as the pause, so the clocks restart at `now`.
    pub fn forgive_pause(&mut self, now: Instant) {
        if self.renewed_at.is_some() {
            self.renewed_at = Some(now);
        }
        if self.absent_since.is_some() {
            self.absent_since = Some(now);
        }
    }

    /// The lease has gone unrenewed for `timeout` while this node watched it
    /// through the ZooKeeper leader all along (the last look within half of
    /// `timeout`), so the leader had `timeout` of a writable ZooKeeper to
    /// renew it and did not.
    pub fn lapsed(&self, timeout: Duration, now: Instant) -> bool {
        let older = |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) > timeout);
        older(self.renewed_at)
            && older(self.observed_since)
            && self
                .observed_at
                .is_some_and(|t| now.saturating_duration_since(t) < timeout / 2)
    }

    /// The holder, if its lease (of a term of at least `term`) was renewed
    /// within `within` of `now`.
    pub fn live(&self, term: u64, within: Duration, now: Instant) -> Option<&LeaderInfo> {
        let h = self.holder.as_ref()?;
        let fresh = self
            .renewed_at
            .is_some_and(|t| now.saturating_duration_since(t) < within);
        (h.term >= term && fresh).then_some(h)
    }

    /// The lease was renewed within `within` of `now` (whoever holds it).
    pub fn renewed_within(&self, within: Duration, now: Instant) -> bool {
        self.renewed_at
            .is_some_and(|t| now.saturating_duration_since(t) < within)
    }
}

/// The timings the rules use (from the node's configuration).
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// `election_timeout_ms`.
    pub election_timeout: Duration,
    /// `heartbeat_interval_ms`.
    pub heartbeat: Duration,
    /// How often the leader touches its lease (half a heartbeat).
    pub touch: Duration,
}

/// What a follower knows when it asks whether the leader is lost.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// This node's id.
    pub me: NodeId,
    /// The leader this node's Raft follows, if any.
    pub following: Option<NodeId>,
    /// The last AppendEntries from a leader that this node accepted.
    pub contact_at: Instant,
    /// The leader's lease as last read from ZooKeeper.
    pub lease: &'a LeaderLease,
}

/// Why the leader counts as lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// No AppendEntries accepted for an election timeout (a frozen or
    /// unreachable leader, or none at all).
    Silent,
    /// The `leader` znode vanished (its session closed or expired) and two
    /// heartbeats were missed.
    ZnodeGone,
    /// The leader this node follows stopped renewing its lease while
    /// ZooKeeper took writes (it cannot commit: a stalled disk, a wedged
    /// core, or cut from ZooKeeper).
    LeaseLapsed,
    /// The znode is this node's own, from before a restart (the restart
    /// rule made it a follower), nobody renews it and nobody talks to us:
    /// no one leads.
    OwnStale,
}

/// Whether to fail over, and why. Never while another node's lease is
/// live: it reaches W, so it can commit, and deposing it only because this
/// node cannot hear it would make leadership flap across a cut
/// node-to-node link.
pub fn leader_lost(o: &Observed<'_>, t: Timings, now: Instant) -> Option<Lost> {
    let since = |at: Instant| now.saturating_duration_since(at);
    // Any term: a failed candidacy may have raised ours above the leader's,
    // and only a leader renews (a deposed one stops).
    if o.lease.live(0, t.election_timeout, now).is_some_and(|h| h.id != o.me) {
        return None;
    }
    if since(o.contact_at) > t.election_timeout {
        return Some(Lost::Silent);
    }
    if o.lease.absent_since.is_some() && since(o.contact_at) > 2 * t.heartbeat {
        return Some(Lost::ZnodeGone);
    }
    // A lapsed lease counts against the leader we follow only: after a
    // change of leader the znode may still be the old one (a killed
    // leader's, until its session expires) while the new one talks to us.
    // And only over time in which ZooKeeper took writes
    // (`LeaderLease::lapsed`): while it does not, nobody can commit, so
    // deposing the leader gains nothing, and once it is back the leader
    // needs a moment to renew; deposing it at the first look costs an
    // election (it did after every ZooKeeper outage).
    let held_by_followed = o.lease.holder.as_ref().is_some_and(|h| Some(h.id) == o.following);
    if held_by_followed && o.lease.lapsed(t.election_timeout, now) {
        return Some(Lost::LeaseLapsed);
    }
    let own = o.lease.holder.as_ref().is_some_and(|h| h.id == o.me);
    if own
        && o.following.is_none()
        && !o.lease.renewed_within(2 * t.touch, now)
        && since(o.contact_at) > 2 * t.heartbeat
    {
        return Some(Lost::OwnStale);
    }
    None
}

/// The failover loop asked to sleep `asked` at `slept_at` and woke at
/// `now`: if it overslept by more than `threshold`, this process did not
/// run for that long (SIGSTOP, a VM or GC pause, a starved machine), and
/// what it knows of the leader is as old as the pause. Only the sleep
/// counts: time the loop spent waiting on ZooKeeper in a failover attempt
/// is not a pause (taking it for one put off the next attempt).
pub fn overslept(slept_at: Instant, asked: Duration, now: Instant, threshold: Duration) -> Option<Duration> {
    let over = now.saturating_duration_since(slept_at).saturating_sub(asked);
    (over > threshold).then_some(over)
}

/// How long a pause must be to count as one: three failover ticks, or half
/// an election timeout, whichever is longer.
pub fn pause_threshold(tick: Duration, election_timeout: Duration) -> Duration {
    std::cmp::max(3 * tick, election_timeout / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn timings() -> Timings {
        Timings {
            election_timeout: MS(1000),
            heartbeat: MS(100),
            touch: MS(50),
        }
    }

    fn info(id: NodeId, term: u64) -> LeaderInfo {
        LeaderInfo {
            term,
            id,
            addr: format!("n{id}"),
        }
    }

    /// A lease observed every 50 ms from `t0` to `t0 + run_ms`, renewed by
    /// `holder` (a new version each time) until `t0 + renewed_until_ms`.
    fn watched(t0: Instant, holder: Option<LeaderInfo>, run_ms: u64, renewed_until_ms: u64) -> LeaderLease {
        let mut lease = LeaderLease::default();
        let mut version = 0;
        for at in (0..=run_ms).step_by(50) {
            if at <= renewed_until_ms {
                version += 1;
            }
            lease.observe(holder.clone().map(|h| (h, 7, version)), t0 + MS(at));
        }
        lease
    }

    /// Rows: (case, lease holder, observed for ms, renewed until ms, this
    /// node's id, following, ms since last contact, expected verdict).
    /// "now" is the end of the observation run. witness-protocol.md,
    /// "Leader loss": a follower stands only when the leader cannot commit
    /// or is gone; a live lease of another node always wins.
    #[test]
    fn leader_lost_table() {
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            &str,
            Option<LeaderInfo>,
            u64,
            u64,
            NodeId,
            Option<NodeId>,
            u64,
            Option<Lost>,
        )> = vec![
            (
                "healthy leader, in contact",
                Some(info(1, 3)),
                3000,
                3000,
                2,
                Some(1),
                20,
                None,
            ),
            // A cut node-to-node link: no contact, but the lease is live.
            (
                "cut link, live lease",
                Some(info(1, 3)),
                3000,
                3000,
                2,
                Some(1),
                5000,
                None,
            ),
            (
                "frozen leader: silent, lease lapsed",
                Some(info(1, 3)),
                3000,
                1500,
                2,
                Some(1),
                1500,
                Some(Lost::Silent),
            ),
            // Stalled disk or cut from ZooKeeper: still heartbeats us, no renewal.
            (
                "stalled leader: in contact, lease lapsed",
                Some(info(1, 3)),
                3000,
                1500,
                2,
                Some(1),
                20,
                Some(Lost::LeaseLapsed),
            ),
            (
                "lapsed, but not the leader we follow",
                Some(info(1, 3)),
                3000,
                1500,
                2,
                None,
                20,
                None,
            ),
            (
                "lapse not yet an election timeout",
                Some(info(1, 3)),
                3000,
                2500,
                2,
                Some(1),
                20,
                None,
            ),
            (
                "znode gone, two heartbeats missed",
                None,
                3000,
                0,
                2,
                Some(1),
                250,
                Some(Lost::ZnodeGone),
            ),
            (
                "znode gone, heartbeats still arrive",
                None,
                3000,
                0,
                2,
                Some(1),
                150,
                None,
            ),
            (
                "own stale znode after a restart, nobody talks",
                Some(info(2, 3)),
                3000,
                0,
                2,
                None,
                300,
                Some(Lost::OwnStale),
            ),
            (
                "own znode, renewed (we lead)",
                Some(info(2, 3)),
                3000,
                3000,
                2,
                None,
                300,
                None,
            ),
            (
                "own stale znode, but a leader talks to us",
                Some(info(2, 3)),
                3000,
                0,
                2,
                None,
                20,
                None,
            ),
        ];
        for (case, holder, run_ms, renewed_ms, me, following, contact_ms, want) in rows {
            let t0 = Instant::now();
            let now = t0 + MS(run_ms);
            let lease = watched(t0, holder, run_ms, renewed_ms);
            let o = Observed {
                me,
                following,
                contact_at: now - MS(contact_ms),
                lease: &lease,
            };
            assert_eq!(leader_lost(&o, timings(), now), want, "{case}");
        }
    }

    /// The class of issue 10's needless elections: the lease is judged only
    /// over an unbroken run of synced observations. A run broken by a failed
    /// read (ZooKeeper without quorum or with a frozen leader) restarts the
    /// clock; a run whose last look is old (the read hangs) does not count.
    #[test]
    fn a_lease_is_judged_only_while_zookeeper_takes_writes() {
        let t = timings();
        let t0 = Instant::now();
        // Renewed until 1000 ms, then ZooKeeper stalls: reads fail until 3000 ms.
        let mut lease = watched(t0, Some(info(1, 3)), 1000, 1000);
        lease.observe_failed();
        // Back at 3000 ms: the first synced read sees the old version.
        lease.observe(Some((info(1, 3), 7, 21)), t0 + MS(3000));
        let now = t0 + MS(3000);
        assert!(
            !lease.lapsed(t.election_timeout, now),
            "judged at the first look after the outage"
        );
        let o = Observed {
            me: 2,
            following: Some(1),
            contact_at: now - MS(20),
            lease: &lease,
        };
        assert_eq!(leader_lost(&o, t, now), None);
        // Still unrenewed a full election timeout of good reads later: lapsed.
        for at in (3050..=4100).step_by(50) {
            lease.observe(Some((info(1, 3), 7, 21)), t0 + MS(at));
        }
        assert!(lease.lapsed(t.election_timeout, t0 + MS(4100)));
        // A run whose last look is older than half an election timeout (the
        // read hangs on a frozen ZooKeeper leader) is no run.
        assert!(!lease.lapsed(t.election_timeout, t0 + MS(4700)));
    }

    #[test]
    fn a_pause_is_an_overslept_sleep_only() {
        let t0 = Instant::now();
        let tick = MS(50);
        let threshold = pause_threshold(tick, MS(1000));
        assert_eq!(threshold, MS(500));
        assert_eq!(pause_threshold(MS(400), MS(1000)), MS(1200));
        assert_eq!(overslept(t0, tick, t0 + MS(60), threshold), None);
        assert_eq!(overslept(t0, tick, t0 + MS(800), threshold), Some(MS(750)));
        // Woken early (a notification): never a pause.
        assert_eq!(overslept(t0, tick, t0 + MS(1), threshold), None);
    }

    #[test]
    fn a_pause_restarts_the_lease_clocks() {
        let t0 = Instant::now();
        let mut lease = watched(t0, Some(info(1, 3)), 3000, 1000);
        let now = t0 + MS(3000);
        assert!(lease.lapsed(MS(1000), now));
        lease.forgive_pause(now);
        assert!(!lease.lapsed(MS(1000), now + MS(10)));
        assert!(lease.live(3, MS(1000), now + MS(10)).is_some());
    }
}
