//! Repairs of a node's log when one log id turns out to name two entries
//! (witness-protocol.md, "A log id names one entry forever"; issue 9).
//!
//! Raft's log matching compares log ids only, so a leader that restarted
//! having forgotten entries it had appended (empty disk; power loss of the
//! unsynced tail) and led the same term again gives new entries the old
//! ones' ids, and a follower or W that already holds an id keeps its copy,
//! whatever the bytes. The restart rule (brainstorm.md) stops that at the
//! source; this is the defence behind it:
//! - W refuses a request that reuses an id it holds (`witness::rules`);
//! - adoption replaces a local entry that has W's id but not its bytes
//!   ([`Node::after_adoption`] here, `LogStore::adopt_entries`);
//! - a follower refuses the leader's catch-up entry that has a local entry's
//!   id but not its bytes (`api::peer`) and repairs its own log
//!   ([`Node::repair_log_from`]): W's entry wins where W holds that index;
//!   where W does not, neither copy is committed and the local one goes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;

use crate::node::Node;
use crate::node::StartError;
use crate::storage::Adopted;
use crate::storage::ReusedLogId;
use crate::storage::StoreError;

/// After a repair that changed nothing (W holds this node's entry, so the
/// leader's is the stray), the same index is looked at again no sooner than
/// this: the leader retries every heartbeat.
const REPAIR_AGAIN_AFTER: Duration = Duration::from_secs(2);

/// Per node (by data dir: one `LogStore` per dir and process, by its
/// lock): whether a repair runs, and the last index repaired or reported.
#[derive(Default)]
struct RepairState {
    running: bool,
    last: Option<(u64, Instant)>,
}

static REPAIRS: LazyLock<Mutex<HashMap<PathBuf, RepairState>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// What [`Node::repair_log_from`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repair {
    /// The local entry was replaced by W's (Raft restarted over the log).
    AdoptedWitness,
    /// W does not hold the index: the local suffix from it was cut.
    Truncated,
    /// W holds the local entry itself: the leader's copy is the stray one
    /// (W refuses it too); nothing to change here.
    LocalIsWitness,
    /// Nothing could be decided now (this node leads, Raft is restarting,
    /// W is busy and only its committed prefix was read).
    Deferred,
}

impl Node {
    /// After `LogStore::adopt_entries`: says loudly and counts a reused log
    /// id, and rolls the state machine back if it had applied an entry that
    /// adoption replaced (only possible for a reused id, which can lie
    /// below the local committed hint: see `adopt_entries`).
    pub(crate) async fn after_adoption(&self, adopted: &Adopted) -> Result<(), StartError> {
        if let Some(r) = adopted.reused {
            self.metrics.log_id_conflicts.with_label_values(&["adoption"]).inc();
            tracing::error!(
                index = r.log_id.index,
                log_id = %r.log_id,
                local_crc32 = format!("{:08x}", r.local_digest),
                witness_crc32 = format!("{:08x}", r.other_digest),
                "log id reused: this node's entry and W's share a log id but not their bytes; W's is the one that can be committed, so the local log from this index is replaced by W's"
            );
        }
        match adopted.replaced_from {
            Some(from) if self.sm.applied().is_some_and(|a| a.index >= from) => {
                self.roll_back_state_machine(from).await
            }
            _ => Ok(()),
        }
    }

    /// The state machine applied entries from `from` on that the log no
    /// longer holds: go back to the local snapshot (taken before `from`);
    /// openraft re-applies the log from there to the committed id when Raft
    /// starts. Raft must not be running.
    async fn roll_back_state_machine(&self, from: u64) -> Result<(), StartError> {
        let applied = self.sm.applied();
        match self.sm.current_snapshot().await? {
            Some(current) if current.meta.last_log_id.is_none_or(|l| l.index < from) => {
                tracing::error!(
                    ?applied,
                    replaced_from = from,
                    snapshot = ?current.meta.last_log_id,
                    "the state machine had applied a replaced entry: rolled back to the local snapshot, the log is re-applied from there"
                );
                self.sm.install_snapshot_file(&current.meta, current.file, false).await?;
                Ok(())
            }
            other => Err(StartError::Storage(StoreError::Invariant(format!(
                "the state machine applied up to {applied:?}, past the entry replaced at index {from}, and no local snapshot ({:?}) predates it; restart this node with an empty data dir to rebuild it from ZooKeeper",
                other.map(|c| c.meta.last_log_id)
            )))),
        }
    }

    /// A leader's AppendEntries carried an entry with a local entry's log id
    /// but other bytes (see `api::peer`). Counts and logs it (ERROR
    /// once per index per `REPAIR_AGAIN_AFTER`) and starts a repair unless
    /// one runs or this index was just looked at.
    pub(crate) fn report_reused_in_catch_up(self: &Arc<Self>, reused: ReusedLogId, leader: crate::types::Vote) {
        self.metrics.log_id_conflicts.with_label_values(&["catch_up"]).inc();
        let index = reused.log_id.index;
        let start = {
            let mut repairs = REPAIRS.lock().unwrap_or_else(|e| e.into_inner());
            let state = repairs.entry(self.cfg.data_dir.clone()).or_default();
            let recent = state
                .last
                .is_some_and(|(i, at)| i == index && at.elapsed() < REPAIR_AGAIN_AFTER);
            if !state.running && !recent {
                state.running = true;
                state.last = Some((index, Instant::now()));
                true
            } else {
                false
            }
        };
        if !start {
            tracing::debug!(index, "log id reuse in catch-up again; a repair runs or just ran");
            return;
        }
        tracing::error!(
            index,
            log_id = %reused.log_id,
            local_crc32 = format!("{:08x}", reused.local_digest),
            leader_crc32 = format!("{:08x}", reused.other_digest),
            leader_vote = %leader,
            "log id reused: the leader sent another entry under a log id this node holds; refused (openraft would keep the local one), repairing the local log from W"
        );
        let node = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = node.repair_log_from(index).await;
            match &outcome {
                Ok(r) => tracing::info!(index, outcome = ?r, "log repair after a reused log id done"),
                Err(e) => {
                    tracing::error!(index, error = %e, "log repair after a reused log id failed; retried at the leader's next append")
                }
            }
            let mut repairs = REPAIRS.lock().unwrap_or_else(|e| e.into_inner());
            let state = repairs.entry(node.cfg.data_dir.clone()).or_default();
            state.running = false;
            // A repair that changed the log may be needed again at once (the
            // leader's next entry); one that changed nothing waits.
            if matches!(outcome, Ok(Repair::AdoptedWitness | Repair::Truncated)) {
                state.last = None;
            }
        });
    }

    /// Repairs the local log from `index`, where a leader's entry and the
    /// local one share a log id but not their bytes: Raft is shut down (as
    /// `failover` does, under the same lock), W's log is adopted with the
    /// byte check (W's entry replaces the local one), and if W does not hold
    /// `index` at all (then neither copy is committed: every committed entry
    /// is in W) the local log is cut from `index`; then Raft starts again as
    /// a follower and the leader's retry goes through. Nothing is restarted
    /// when W holds the local entry itself (the leader's copy is the stray:
    /// W refuses it as well) or when W's entry at `index` could not be read.
    pub(crate) async fn repair_log_from(&self, index: u64) -> Result<Repair, StartError> {
        let _guard = self.failover_lock.lock().await;
        let Some(raft) = self.raft() else {
            return Ok(Repair::Deferred);
        };
        if raft.metrics().borrow().state == ServerState::Leader {
            return Ok(Repair::Deferred);
        }
        let Some(local) = self.log.entries(index..=index)?.pop() else {
            return Ok(Repair::Deferred); // gone meanwhile (purged or cut)
        };
        let w = self.witness.read_log(index).await?;
        let w_holds = w.record.purged().is_some_and(|p| p.index >= index)
            || w.record.last_log_id.is_some_and(|l| l.index >= index);
        let w_entry = w.entries.iter().find(|e| e.log_id.index == index);
        let plan = match (w_holds, w_entry) {
            (false, _) => Repair::Truncated,
            (true, Some(e)) if *e == local => return Ok(Repair::LocalIsWitness),
            (true, Some(_)) => Repair::AdoptedWitness,
            // Inside W's snapshot (committed, so W's; the local copy was
            // applied as committed: only a rebuild can tell), or past the
            // committed prefix W let itself be read up to.
            (true, None) => return Ok(Repair::Deferred),
        };
        let old = self.raft.write().expect("raft lock").take();
        if let Some(old) = old {
            if let Err(e) = old.shutdown().await {
                tracing::warn!(error = %e, "raft shutdown before the log repair failed");
            }
        }
        let repaired = async {
            match plan {
                Repair::AdoptedWitness => self.adopt(w).await,
                _ => {
                    if self.log.truncate_offline(index).await? {
                        tracing::error!(
                            index,
                            "W does not hold this index: neither copy is committed; the local log is cut from here"
                        );
                        self.after_adoption(&Adopted {
                            appended: 0,
                            replaced_from: Some(index),
                            reused: None,
                        })
                        .await?;
                    }
                    Ok(())
                }
            }
        }
        .await;
        // Raft comes back even if the repair failed, so the node keeps serving.
        self.start_raft().await?;
        repaired?;
        Ok(plan)
    }
}
