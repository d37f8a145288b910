//! What a node does while it leads, besides what openraft does: keep the
//! `leader` znode and its lease, prove it commits, ship snapshots to W, and
//! hand over when it stops. Also the watch on openraft's core.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;

use super::*;

/// A snapshot asked for because W's WAL grew large is asked again after
/// this even if it never reached W (a failed build or upload).
const WAL_SNAPSHOT_RETRY: Duration = Duration::from_secs(5);

impl Node {
    /// While leader: hold the `leader` znode and ship new snapshots to W.
    pub(super) async fn leader_duties_loop(self: Arc<Self>) {
        let path = self.witness.paths().leader();
        let mut held_term: Option<u64> = None;
        let shipped: Arc<Mutex<Option<crate::types::LogId>>> = Arc::new(Mutex::new(None));
        let mut shipping: Option<tokio::task::JoinHandle<()>> = None;
        let (mut seen_leader, mut seen_snapshot) = (None, None);
        // The last snapshot asked for because W's WAL grew large: what was
        // applied then (the snapshot covers at least that), and when.
        let mut wal_snapshot_asked: Option<(Option<crate::types::LogId>, Instant)> = None;
        let mut last_claim: Option<Instant> = None;
        let mut withholding = false;
        // The claim itself is a fresh lease; the first proof comes within a
        // touch interval, so a missing one right after it is not a stall.
        let mut claimed_at: Option<Instant> = None;
        let grace = Duration::from_millis(self.cfg.election_timeout_ms / 2);
        while !self.is_stopping() {
            let Some(raft) = self.raft() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let mut metrics = raft.metrics();
            // Its own ticker: metrics change with every commit under load,
            // and renewing only when they are quiet would let the lease lapse.
            let mut lease_ticker = tokio::time::interval(self.touch_interval());
            lease_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let m = metrics.borrow_and_update().clone();
                if m.current_leader != seen_leader {
                    self.metrics.leader_changes.inc();
                    seen_leader = m.current_leader;
                    let (term, leader) = (m.current_term, m.current_leader);
                    self.events.fire(crate::events::Event::LeaderChanged { term, leader });
                }
                if m.snapshot > seen_snapshot {
                    self.metrics.snapshots.with_label_values(&["built"]).inc();
                    seen_snapshot = m.snapshot;
                    self.events.snapshot_advanced(m.snapshot.map(|l| l.index));
                }
                if m.state == ServerState::Leader {
                    // Metrics change with every commit: claim at most once per
                    // touch interval, not on every change.
                    if held_term != Some(m.current_term)
                        && last_claim.is_none_or(|t: Instant| t.elapsed() >= self.touch_interval())
                    {
                        last_claim = Some(Instant::now());
                        let info = LeaderInfo {
                            term: m.current_term,
                            id: self.cfg.id,
                            addr: self.advertise_addr(),
                        };
                        match self
                            .zk
                            .register_ephemeral(
                                &path,
                                serde_json::to_vec(&info).expect("json"),
                                Claim::ReplaceLowerTerm(m.current_term),
                            )
                            .await
                        {
                            Ok(()) => {
                                tracing::info!(term = m.current_term, "leading; leader znode held");
                                held_term = Some(m.current_term);
                                claimed_at = Some(Instant::now());
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot claim the leader znode yet"),
                        }
                    }
                    // Shipped by its own task: an upload and the WAL compaction
                    // behind it can take seconds, and the lease below must not
                    // wait for them (a lapsed lease makes the follower take over).
                    let idle = shipping
                        .as_ref()
                        .is_none_or(|h: &tokio::task::JoinHandle<()>| h.is_finished());
                    if idle && m.snapshot.is_some() && m.snapshot > *shipped.lock().expect("shipped lock") {
                        let (node, shipped, vote) = (Arc::clone(&self), Arc::clone(&shipped), m.vote);
                        shipping = Some(tokio::spawn(async move {
                            match node.ship_snapshot(vote).await {
                                Ok(last) => {
                                    let mut s = shipped.lock().expect("shipped lock");
                                    *s = std::cmp::max(*s, last);
                                }
                                Err(e) => tracing::warn!(error = %e, "cannot ship the snapshot to ZooKeeper yet"),
                            }
                        }));
                    }
                } else if held_term.take().is_some() {
                    if let Err(e) = self.zk.unregister_ephemeral(&path).await {
                        tracing::warn!(error = %e, "cannot drop the leader znode");
                    }
                }
                // The lease: while leading, rewrite the znode every touch
                // interval so the follower sees this leader alive in ZooKeeper.
                tokio::select! {
                    r = metrics.changed() => if r.is_err() { break },
                    _ = lease_ticker.tick() => {
                        // Asked again once the previous one is in W (its
                        // WAL compacted), not at a fixed pace: at 50 MB/s a
                        // 5 s pace let W's WAL reach 238 MB against a 64 MiB
                        // bound, and ZooKeeper's heap and pauses with it.
                        if m.state == ServerState::Leader
                            && self.witness.wal_bytes_since_snapshot() > self.cfg.snapshot_every_wal_bytes
                            && wal_snapshot_asked.is_none_or(|(applied, at)| {
                                *shipped.lock().expect("shipped lock") >= applied || at.elapsed() > WAL_SNAPSHOT_RETRY
                            })
                        {
                            wal_snapshot_asked = Some((m.last_applied, Instant::now()));
                            tracing::info!(wal_bytes = self.witness.wal_bytes_since_snapshot(), "WAL in ZooKeeper is large: snapshotting");
                            let _ = raft.trigger().snapshot().await;
                        }
                        let leading = held_term == Some(m.current_term) && m.state == ServerState::Leader;
                        if leading && !self.commit_proven() {
                            // Let the lease lapse: this leader holds its
                            // session but cannot show that it commits.
                            let new_leadership = claimed_at.is_some_and(|t| t.elapsed() < grace);
                            if !new_leadership {
                                self.metrics.lease_withheld.inc();
                            }
                            if !withholding && !new_leadership {
                                withholding = true;
                                tracing::warn!("cannot prove this leader commits (disk, Raft core or apply stalled): not renewing the leader lease, so the other node can take over");
                            }
                        } else if leading {
                            if withholding {
                                withholding = false;
                                tracing::info!("commit path works again: renewing the leader lease");
                            }
                            if let Err(e) = self.renew_lease(&path, m.current_term).await {
                                tracing::debug!(error = %e, "cannot renew the leader lease");
                                if e.is_zk(zookeeper_client::Error::NoNode) {
                                    held_term = None; // gone with an old session: claim it again
                                }
                            }
                        }
                    }
                }
                if self.is_stopping() {
                    return;
                }
            }
        }
    }

    /// True when the commit path was proven to work within half an election
    /// timeout. The follower deposes a leader whose lease went unrenewed for
    /// an election timeout, so a leader that stalls stops renewing within
    /// half of one and is replaced within about 1.5.
    pub(super) fn commit_proven(&self) -> bool {
        let within = Duration::from_millis(self.cfg.election_timeout_ms / 2);
        self.commit_proof
            .lock()
            .expect("proof lock")
            .is_some_and(|t| t.elapsed() < within)
    }

    /// Gray failure (issue: a leader keeps its ZooKeeper session but cannot
    /// commit: local disk frozen, Raft core wedged or dead, apply stuck).
    /// The lease must say "this leader commits", not only "this process
    /// reaches ZooKeeper". Every touch interval, while leading, this proves
    /// it: entries were applied since the last look (under load), or else,
    /// with no entry left waiting since the last look, a leadership check
    /// succeeds in time (`ensure_linearizable`: a checked heartbeat to W
    /// through the Raft core, answered once everything committed is
    /// applied). Entries that wait a whole look with nothing applied mean
    /// nothing commits (W refuses the append, the local disk is frozen), and
    /// a heartbeat W still accepts must not hide that. Either proof is dated
    /// at the start of the look, so a proof never outlives what it observed.
    pub(super) async fn commit_probe_loop(self: Arc<Self>) {
        let probe_timeout = Duration::from_millis((self.cfg.election_timeout_ms / 2).max(1));
        let mut seen_applied: Option<Option<crate::types::LogId>> = None;
        let mut seen_waiting = false;
        while !self.is_stopping() {
            tokio::time::sleep(self.touch_interval()).await;
            let Some(raft) = self.raft() else { continue };
            let started = Instant::now();
            let m = raft.metrics().borrow().clone();
            if m.state != ServerState::Leader {
                *self.commit_proof.lock().expect("proof lock") = None;
                seen_applied = None;
                seen_waiting = false;
                continue;
            }
            let progressed = seen_applied.is_some_and(|seen| m.last_applied > seen);
            seen_applied = Some(m.last_applied);
            let waiting = m.last_log_index > m.last_applied.map(|l| l.index);
            let stuck = waiting && seen_waiting && !progressed;
            seen_waiting = waiting;
            let proven = progressed
                || (!stuck
                    && matches!(
                        tokio::time::timeout(probe_timeout, raft.ensure_linearizable()).await,
                        Ok(Ok(_))
                    ));
            if proven {
                let mut proof = self.commit_proof.lock().expect("proof lock");
                *proof = std::cmp::max(*proof, Some(started));
            }
        }
    }

    /// Rewrites the `leader` znode (same content, new version): the lease.
    /// Only while this session owns it, so a deposed leader cannot renew a
    /// successor's lease.
    pub(super) async fn renew_lease(&self, path: &str, term: u64) -> Result<(), ZkError> {
        let info = LeaderInfo {
            term,
            id: self.cfg.id,
            addr: self.advertise_addr(),
        };
        let data = serde_json::to_vec(&info).expect("json");
        let (_, stat) = self
            .zk
            .run(&format!("get {path}"), |c| async move { c.get_data(path).await })
            .await?;
        if Some(stat.ephemeral_owner) != self.zk.session_id() {
            return Err(ZkError::Call {
                what: format!("renew {path}"),
                source: zookeeper_client::Error::NoNode,
            });
        }
        self.zk
            .run(&format!("renew {path}"), |c| async move {
                c.set_data(path, &data, Some(stat.version)).await.map(|_| ())
            })
            .await
    }

    /// Stores this node's newest snapshot as W's (W drops the WAL it
    /// covers). Returns the snapshot's last log id.
    pub(super) async fn ship_snapshot(&self, vote: Vote) -> Result<Option<crate::types::LogId>, StartError> {
        // Checked (CRC) through the open file, then streamed from it chunk
        // by chunk: memory is one chunk whatever the snapshot's size.
        let Some(current) = self.sm.current_snapshot().await? else {
            return Ok(None);
        };
        let last = current.meta.last_log_id;
        let bytes = current.data_bytes;
        let mut file = current.file;
        let at = std::io::SeekFrom::Start(current.data_offset_bytes);
        tokio::io::AsyncSeekExt::seek(&mut file, at)
            .await
            .map_err(|source| WitnessError::LocalIo {
                what: format!("seek in {}", file.path.display()),
                source,
            })?;
        let data = tokio::io::BufReader::with_capacity(crate::witness::SNAPSHOT_CHUNK_BYTES, file);
        match self
            .witness
            .install_snapshot_from(vote, current.meta, data, bytes)
            .await?
        {
            crate::witness::SnapshotUpload::Stored => {}
            // W holds this snapshot or a later one: nothing was uploaded.
            crate::witness::SnapshotUpload::AlreadyCovered => return Ok(last),
            // Not an upload: an error, so neither the metric, the event
            // nor `POST /admin/snapshot` claims one.
            crate::witness::SnapshotUpload::Refused(higher) => {
                return Err(StartError::Witness(WitnessError::SnapshotRefused(higher)))
            }
        }
        self.metrics.snapshot_moved("uploaded", bytes);
        self.events.snapshot_uploaded(last.map(|l| l.index), bytes);
        Ok(last)
    }

    /// `POST /admin/snapshot`: build a snapshot now and, on the leader,
    /// store it in ZooKeeper before answering. Returns (its last index,
    /// whether it went to ZooKeeper).
    pub async fn snapshot_now(&self) -> Result<(Option<u64>, bool), StartError> {
        let raft = self.raft().ok_or(StartError::RaftRestarting)?;
        let before = raft.metrics().borrow().snapshot;
        let applied = raft.metrics().borrow().last_applied;
        raft.trigger().snapshot().await?;
        if applied > before {
            // Building takes time in proportion to the state: bounded by
            // the request's own deadline, not a write's.
            let wait = raft.wait(Some(Duration::from_millis(self.cfg.request_timeout_ms)));
            wait.metrics(|m| m.snapshot > before, "snapshot built")
                .await
                .map_err(|source| StartError::Wait {
                    what: "a snapshot",
                    source,
                })?;
        }
        let m = raft.metrics().borrow().clone();
        let uploaded = if m.state == ServerState::Leader {
            self.ship_snapshot(m.vote).await?;
            true
        } else {
            false
        };
        Ok((m.snapshot.map(|l| l.index), uploaded))
    }

    pub(super) async fn ask_peer_to_take_over(&self) {
        // ZooKeeper is closed by now; use the address last looked up.
        let Some(addr) = self.peers.cached_addr(other(self.cfg.id)) else {
            return;
        };
        let mut req = self.peers.http().post(self.peers.url(&addr, "/raft/takeover"));
        if let Some(t) = self.auth.peer_token() {
            req = req.header(crate::auth::PEER_TOKEN_HEADER, t);
        }
        let res = req.timeout(Duration::from_millis(500)).send().await;
        match res {
            Ok(r) if r.status().is_success() => tracing::info!(addr, "asked the other node to take over"),
            Ok(r) => tracing::warn!(addr, status = %r.status(), "the other node refused to take over"),
            Err(e) => tracing::warn!(addr, error = %e, "could not ask the other node to take over"),
        }
    }

    /// A Raft core that stopped by itself (a storage error such as a failed
    /// write or descriptor exhaustion, a panic) never comes back, and a node
    /// left serving without one answers 504 to every write while looking
    /// alive. So the node stops instead: `/health/live` turns 503 at once,
    /// the process exits non-zero with the reason (a supervisor restarts
    /// it, and a restart re-reads the disk and adopts W), and the other
    /// node takes over meanwhile. `Fatal::Stopped` is ours (failover
    /// restarts, shutdown) and ignored.
    pub(super) async fn core_watch_loop(self: Arc<Self>) {
        while !self.is_stopping() {
            let Some(raft) = self.raft() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let mut metrics = raft.metrics();
            loop {
                let state = metrics.borrow_and_update().running_state.clone();
                match state {
                    Err(openraft::error::Fatal::Stopped) => break,
                    Err(fatal) => {
                        let why = format!("the Raft core stopped: {fatal}");
                        tracing::error!("{why}; this node stops serving and exits so that it can be restarted");
                        let _ = self.fatal.set(why.clone());
                        self.events.fire(crate::events::Event::Failed { reason: why });
                        self.request_stop();
                        return;
                    }
                    Ok(()) => {}
                }
                if metrics.changed().await.is_err() {
                    break;
                }
            }
            // This core was stopped or replaced: watch the next one.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Why the Raft core stopped by itself, if it did (see `core_watch_loop`).
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.get().map(String::as_str)
    }
}
