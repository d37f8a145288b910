//! The failover driver (witness-protocol.md, "Failover"): watches the
//! leader (contact, its `leader` znode and lease, its process), decides with
//! the pure rules of `crate::failover::rules` whether it is lost, and then
//! adopts W's log and stands for election.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;

use super::*;

/// The probe of a leader the rules already found lost: long enough for a
/// refused connection to come back over a LAN, short against a host that
/// no longer answers at all.
const LOST_PROBE_MS: u64 = 20;

impl Node {
    /// The failover step: adopt W's log (restarting Raft over the changed
    /// store, since openraft reads its storage only at start), then elect.
    pub(super) async fn failover(&self) -> Result<(), StartError> {
        let _guard = self.failover_lock.lock().await;
        let Some(raft) = self.raft() else { return Ok(()) };
        if raft.metrics().borrow().state == ServerState::Leader {
            return Ok(());
        }
        let w = self.read_witness_log().await?;
        if self.needs_adoption(&w) {
            let old = self.raft.write().expect("raft lock").take();
            if let Some(old) = old {
                if let Err(e) = old.shutdown().await {
                    tracing::warn!(error = %e, "raft shutdown before adoption failed");
                }
            }
            let adopted = self.adopt(w).await;
            // Raft comes back even if adoption failed, so the node keeps serving.
            self.start_raft().await?;
            adopted?;
        }
        tracing::info!(last = ?self.log.last_log_id(), "standing for election");
        if let Some(raft) = self.raft() {
            raft.trigger().elect().await?;
        }
        Ok(())
    }

    /// Decides when the leader is gone: no contact for an election timeout,
    /// or its `leader` znode gone (its ZooKeeper session ended). Then adopts
    /// and elects, at most once per election timeout.
    pub(super) async fn failover_loop(self: Arc<Self>) {
        let election_timeout = Duration::from_millis(self.cfg.election_timeout_ms);
        // As often as the leader touches its lease: a kill -9 is noticed
        // from the lease going stale plus a refused connection, and a
        // coarser tick only adds to the failover time.
        let tick = self.touch_interval();
        let mut last_attempt: Option<Instant> = None;
        // When corruption in W was last logged, and attempts since (see below).
        let mut corrupt_logged: Option<(Instant, u64)> = None;
        let pause_threshold = rules::pause_threshold(tick, election_timeout);
        while !self.is_stopping() {
            let slept_at = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.wake.notified() => {}
            }
            // A tick far later than asked means this process did not run
            // (SIGSTOP, a VM or GC pause, a starved machine): what it knows
            // of the leader is as old as the pause, and the leader's
            // heartbeats are only now arriving. Count the resume as fresh
            // contact, so a live leader is not deposed for our own pause.
            // Only the sleep counts: a failover attempt that waited on
            // ZooKeeper last time round is not a pause (taking it for one
            // put off the next attempt by an election timeout).
            if let Some(overslept) = rules::overslept(slept_at, tick, Instant::now(), pause_threshold) {
                tracing::warn!(
                    paused_ms = overslept.as_millis() as u64,
                    "this node did not run for a while; giving the leader a fresh election timeout"
                );
                self.forgive_pause();
                continue;
            }
            let Some(raft) = self.raft() else { continue };
            let m = raft.metrics().borrow().clone();
            if m.state == ServerState::Leader {
                // A hand-over asked of a node that already leads is moot.
                self.takeover.store(false, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            // At most one attempt per election timeout on suspicion; a
            // leader handing over (SIGTERM, /admin/leave) is not suspicion:
            // two hand-overs within a second (a rolling restart) must not
            // wait for the first one's timer.
            let handed_over = self.takeover.swap(false, std::sync::atomic::Ordering::Relaxed);
            if !handed_over && last_attempt.is_some_and(|t| t.elapsed() < election_timeout) {
                continue;
            }
            // The rules first. Once they say lost, the probe only decides
            // whether to skip the duel wait below, so it gets a short
            // timeout: a refusal comes back within a round trip, and
            // against a vanished host (nothing answers, nothing refuses) a
            // full probe would add its whole timeout to the failover.
            let mut why = self.leader_lost();
            let probe_ms = if why.is_some() {
                LOST_PROBE_MS
            } else {
                self.cfg.heartbeat_interval_ms.max(20)
            };
            let gone = handed_over || self.leader_process_gone(m.current_leader, probe_ms).await;
            if !gone && why.is_none() {
                continue;
            }
            // Don't duel with a live peer that noticed at the same moment:
            // the lower id goes first, the other waits a heartbeat and looks
            // again. (When the leader's process is gone, or it asked us to
            // take over, there is no one to duel with.)
            if !gone && self.cfg.id != 1 && self.peers.addr(other(self.cfg.id)).await.ok().flatten().is_some() {
                tokio::time::sleep(tick).await;
                why = self.leader_lost();
                if why.is_none() {
                    continue;
                }
            }
            let contact_at = *self.last_contact.lock().expect("contact lock");
            last_attempt = Some(Instant::now());
            let why = if gone {
                "process gone or handed over".to_string()
            } else {
                format!("{why:?}")
            };
            tracing::info!(leader = ?m.current_leader, contact_ms = contact_at.elapsed().as_millis() as u64, why, "leader lost; adopting W's log before electing");
            match self.failover().await {
                Ok(()) => corrupt_logged = None,
                // A corrupt znode in W stops adoption (nothing of it is
                // applied) until someone repairs it: keep retrying, and say
                // so at ERROR with the path, but at most every
                // CORRUPT_LOG_EVERY rather than on every attempt.
                Err(StartError::Witness(e @ WitnessError::Corrupt { .. })) => match &mut corrupt_logged {
                    Some((at, skipped)) if at.elapsed() < CORRUPT_LOG_EVERY => *skipped += 1,
                    _ => {
                        let skipped = corrupt_logged.map_or(0, |(_, n)| n);
                        tracing::error!(error = %e, attempts_not_logged = skipped, "cannot adopt W's log: corrupt data in ZooKeeper, never applied; will retry");
                        corrupt_logged = Some((Instant::now(), 0));
                    }
                },
                Err(e) => tracing::warn!(error = %e, "failover attempt failed; will retry"),
            }
        }
    }

    /// Whether to fail over, and why (`failover::rules::leader_lost`).
    pub(super) fn leader_lost(&self) -> Option<rules::Lost> {
        let lease = self.lease.lock().expect("lease lock").clone();
        let contact_at = *self.last_contact.lock().expect("contact lock");
        let observed = rules::Observed {
            me: self.cfg.id,
            following: self.raft().and_then(|r| r.metrics().borrow().current_leader),
            contact_at,
            lease: &lease,
        };
        rules::leader_lost(&observed, self.timings(), Instant::now())
    }

    pub(super) fn timings(&self) -> rules::Timings {
        rules::Timings {
            election_timeout: Duration::from_millis(self.cfg.election_timeout_ms),
            heartbeat: Duration::from_millis(self.cfg.heartbeat_interval_ms),
            touch: self.touch_interval(),
        }
    }

    /// Restarts the clocks that judge the leader (contact, lease renewal,
    /// absence) at now; see the pause check in `failover_loop`.
    pub(super) fn forgive_pause(&self) {
        let now = Instant::now();
        *self.last_contact.lock().expect("contact lock") = now;
        self.lease.lock().expect("lease lock").forgive_pause(now);
    }

    /// The lease as last seen (for `/health/ready`).
    pub fn lease(&self) -> LeaderLease {
        self.lease.lock().expect("lease lock").clone()
    }

    /// How often the leader rewrites its `leader` znode (its lease): half
    /// a heartbeat, at least 20 ms.
    pub fn touch_interval(&self) -> Duration {
        Duration::from_millis((self.cfg.heartbeat_interval_ms / 2).max(20))
    }

    /// Fast path for a dead leader: a connection refused at its address means
    /// no process listens there (kill -9, crash, or SIGTERM closing its
    /// listener), and a name that no longer resolves means its container or
    /// host is gone, so there is no point in waiting out the election timeout.
    /// Electing while the leader is in fact alive would still be safe (W
    /// fences it); this only decides how soon we try.
    pub(super) async fn leader_process_gone(&self, leader: Option<NodeId>, probe_ms: u64) -> bool {
        let Some(leader) = leader.filter(|l| *l != self.cfg.id) else {
            return false;
        };
        // A lease renewed in the last two touches says the process lives
        // (a refusal then comes from the link, e.g. a firewall's REJECT).
        // Electing when it in fact lives is still safe (W fences it).
        let renewed = self
            .lease
            .lock()
            .expect("lease lock")
            .renewed_within(2 * self.touch_interval(), Instant::now());
        if renewed {
            return false;
        }
        let Ok(Some(addr)) = self.peers.addr(leader).await else {
            return false;
        };
        let probe = Duration::from_millis(probe_ms);
        // A name that no longer resolves is gone as surely as a refused
        // port: a container engine drops a dead container's name at once
        // (docker kill under compose), so the connect below would fail on
        // the lookup, not with a refusal, and we would wait out the lease.
        let resolved = match tokio::time::timeout(probe, tokio::net::lookup_host(&addr)).await {
            Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
            Ok(Err(e)) => {
                self.peers.forget(leader);
                tracing::info!(leader, addr, error = %e, "leader's address no longer resolves: its host or container is gone");
                return true;
            }
            Err(_) => return false, // a slow resolver says nothing
        };
        match tokio::time::timeout(probe, tokio::net::TcpStream::connect(&resolved[..])).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                self.peers.forget(leader);
                tracing::info!(
                    leader,
                    addr,
                    "leader's address refuses connections: its process is gone"
                );
                true
            }
            _ => false,
        }
    }

    /// Follows the `leader` znode with one-shot watches (re-armed after every
    /// event and every new ZooKeeper session) and re-reads it every touch
    /// interval, keeping `lease` current. Each read follows a `sync`, so it
    /// goes through the ZooKeeper leader: a read that works proves ZooKeeper
    /// takes writes, which a ZooKeeper follower serving reads alone does not.
    pub(super) async fn leader_znode_watch(self: Arc<Self>) {
        let path = self.witness.paths().leader();
        let mut generation = self.zk.generation();
        while !self.is_stopping() {
            let p = path.clone();
            let look_timeout = Duration::from_millis(self.cfg.election_timeout_ms / 2);
            let watched = self
                .zk
                .run_within(&format!("watch {path}"), look_timeout, |c| async move {
                    c.sync(&p).await?;
                    match c.get_and_watch_data(&p).await {
                        Ok((data, stat, w)) => Ok((Some((data, stat)), w)),
                        Err(zookeeper_client::Error::NoNode) => {
                            let (_, w) = c.check_and_watch_stat(&p).await?;
                            Ok((None, w))
                        }
                        Err(e) => Err(e),
                    }
                })
                .await;
            let watcher = match watched {
                Ok((znode, w)) => {
                    let parsed = znode.and_then(|(d, stat)| {
                        serde_json::from_slice::<LeaderInfo>(&d)
                            .ok()
                            .map(|h| (h, stat.czxid, stat.version))
                    });
                    let term = self.raft().map(|r| r.metrics().borrow().current_term).unwrap_or(0);
                    let stale = parsed.as_ref().is_none_or(|(h, _, _)| h.term < term);
                    self.lease.lock().expect("lease lock").observe(parsed, Instant::now());
                    if stale {
                        self.wake.notify_one();
                    }
                    Some(w)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch the leader znode");
                    self.lease.lock().expect("lease lock").observe_failed();
                    None
                }
            };
            walship_zk::next_look(watcher, &mut generation, self.touch_interval()).await;
        }
    }
}
