//! Adoption (witness-protocol.md, "Adoption"): before Raft starts and
//! before every election, the local log is made equal to W's wherever they
//! differ; an empty disk rebuilds itself entirely from W. Also the restart
//! rule: a node that led before it restarted leads again only through a
//! new election.

use super::*;

impl Node {
    /// The restart rule (brainstorm.md, "A restarted node never leads in a
    /// term it held"): openraft 0.9 resumes leadership without an election
    /// when it starts over a committed vote for itself (`Engine::startup`).
    /// A node that restarts may have forgotten entries it appended and sent
    /// to its peer (empty disk; power loss of the unsynced tail); leading
    /// again in that term would give new entries those entries' log ids, and
    /// log matching, which compares ids only, would keep the peer's stale
    /// copies. So before every `Raft::new` such a vote is stored uncommitted:
    /// the node starts as a follower and can lead only after W grants it a
    /// higher term. (Un-committing is always allowed: the vote stays the same
    /// term and candidate, and W's copy, not this one, carries the safety.)
    pub(super) async fn forget_own_leadership(&self) -> Result<(), StartError> {
        let Some(vote) = self.log.vote() else { return Ok(()) };
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(self.cfg.id) {
            return Ok(());
        }
        let uncommitted = Vote::new(vote.leader_id().term, self.cfg.id);
        tracing::info!(
            term = vote.leader_id().term,
            "this node led term {} before it restarted: it will lead again only through a new election",
            vote.leader_id().term
        );
        self.metrics.leadership_forgotten.inc();
        let mut log = self.log.clone();
        openraft::storage::RaftLogStorage::save_vote(&mut log, &uncommitted)
            .await
            .map_err(|source| StartError::SaveVote {
                what: "the un-committed vote",
                source,
            })
    }

    /// Reads W's log from the first index this node might not share with W:
    /// everything up to the local committed index is committed, hence in W.
    pub(super) async fn read_witness_log(&self) -> Result<WitnessLog, crate::witness::WitnessError> {
        let from = match (self.log.committed(), self.log.purged()) {
            (Some(c), _) => c.index + 1,
            (None, Some(p)) => p.index + 1,
            (None, None) => 0,
        };
        let from = from.min(self.log.last_log_id().map(|l| l.index + 1).unwrap_or(0));
        const SNAPSHOT_TRIES: usize = 5;
        for _ in 0..SNAPSHOT_TRIES {
            let w = self.witness.read_log(from).await?;
            match w.snapshot.as_ref().filter(|s| self.needs_snapshot(&s.meta)) {
                Some(sref) => match self.fetch_witness_snapshot(sref).await {
                    Ok(()) => {}
                    // W replaced its snapshot while it was read: read again.
                    Err(e) if e.is_zk(zookeeper_client::Error::NoNode) => continue,
                    Err(e) => return Err(e),
                },
                // No blob of an earlier read may pass for this one's.
                None => {
                    let _ = tokio::fs::remove_file(self.witness_blob_path()).await;
                }
            }
            return Ok(w);
        }
        Err(crate::witness::WitnessError::Busy)
    }

    /// Where W's snapshot is fetched to before it is installed.
    fn witness_blob_path(&self) -> std::path::PathBuf {
        self.sm.staging_path("witness-blob")
    }

    /// Streams W's snapshot into [`Self::witness_blob_path`], every chunk
    /// CRC-checked on the way (memory: one chunk).
    async fn fetch_witness_snapshot(
        &self,
        sref: &crate::witness::record::SnapshotRef,
    ) -> Result<(), crate::witness::WitnessError> {
        let path = self.witness_blob_path();
        let local = |what: &str, source: std::io::Error| crate::witness::WitnessError::LocalIo {
            what: format!("{what} {}", path.display()),
            source,
        };
        let mut f = tokio::fs::File::create(&path).await.map_err(|e| local("create", e))?;
        let mut w = tokio::io::BufWriter::with_capacity(crate::witness::SNAPSHOT_CHUNK_BYTES, &mut f);
        let res = self.witness.read_snapshot_to(sref, &mut w).await;
        drop(w);
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        f.sync_all().await.map_err(|e| local("fsync", e))
    }

    /// W's snapshot is needed when it ends past this node's purged point at
    /// an entry this node does not hold. Compared by position, not by
    /// openraft's log-id order: a stray entry of a leader that lost a duel
    /// in the same term (say (1, n2, 1), never in W) sorts above W's
    /// snapshot (1, n1, 2) although it sits at a lower index, and skipping
    /// the snapshot then left a hole before W's next entries, so the node
    /// could never start (found by the model, tests/model.rs).
    pub(super) fn needs_snapshot(&self, meta: &crate::types::SnapshotMeta) -> bool {
        meta.last_log_id
            .is_some_and(|last| snapshot_needed(last, self.log.purged(), self.log.log_id_at(last.index)))
    }

    /// True if W holds something this node's log lacks or has otherwise.
    pub(super) fn needs_adoption(&self, w: &WitnessLog) -> bool {
        if w.snapshot.as_ref().is_some_and(|s| self.needs_snapshot(&s.meta)) {
            return true;
        }
        w.entries.iter().any(|e| {
            e.log_id.index > self.log.purged().map(|p| p.index).unwrap_or(0)
                && self.log.log_id_at(e.log_id.index) != Some(e.log_id)
        }) || (self.log.last_log_id().is_none() && !w.entries.is_empty())
            // Same log id, other bytes: W's entry wins (node/repair.rs). A
            // local log that cannot be read to compare: adoption reads it
            // again and reports the error.
            || !matches!(self.log.first_reused(&w.entries), Ok(None))
    }

    /// Makes the local log equal W's where they differ (Raft must not be running).
    pub(crate) async fn adopt(&self, w: WitnessLog) -> Result<(), StartError> {
        if !self.needs_adoption(&w) {
            return Ok(());
        }
        let before = self.log.last_log_id();
        let mut snapshot_index = None;
        if let Some(sref) = w.snapshot {
            if self.needs_snapshot(&sref.meta) {
                let blob = self.witness_blob_path();
                if !tokio::fs::try_exists(&blob).await.unwrap_or(false) {
                    // Read without `read_witness_log` (a repair): fetch now.
                    self.fetch_witness_snapshot(&sref).await?;
                }
                let bytes = sref.size_bytes;
                tracing::info!(snapshot = ?sref.meta.last_log_id, bytes, "adopting W's snapshot");
                snapshot_index = sref.meta.last_log_id.map(|l| l.index);
                let installed = storage::install_snapshot_offline(&self.sm, &self.log, sref.meta, &blob).await;
                let _ = tokio::fs::remove_file(&blob).await;
                installed?;
                self.metrics.snapshot_moved("installed", bytes);
                let from = crate::events::SnapshotSource::Witness;
                self.events.snapshot_installed(snapshot_index, bytes, from);
            }
        }
        let n = w.entries.len();
        let adopted = self.log.adopt_entries(w.entries).await?;
        self.after_adoption(&adopted).await?;
        self.metrics.adoptions.inc();
        self.metrics.entries_adopted.inc_by(n as u64);
        let entries = n as u64;
        self.events.fire(crate::events::Event::Adopted {
            entries,
            snapshot_index,
        });
        // The adopted entries were accepted by W under W's vote; a local vote
        // below it (say, this node's own from a term it led before it died)
        // would make openraft restart as the leader of an older term over a
        // log from a newer one. Taking W's vote is what a follower does when
        // it accepts those entries from their leader.
        if self.log.vote().is_none_or(|v| w.record.vote > v) {
            let mut log = self.log.clone();
            openraft::storage::RaftLogStorage::save_vote(&mut log, &w.record.vote)
                .await
                .map_err(|source| StartError::SaveVote {
                    what: "W's vote",
                    source,
                })?;
        }
        tracing::info!(entries = n, ?before, after = ?self.log.last_log_id(), witness_last = ?w.record.last_log_id, "adopted W's log");
        Ok(())
    }
}

/// W's snapshot ending at `last` is needed by a node that purged up to
/// `purged` and holds `held` at `last.index`: unless the node's own snapshot
/// covers that index, or it holds that very entry (then its log continues
/// W's). By index and identity, never by log-id order (`Node::needs_snapshot`).
pub(super) fn snapshot_needed(
    last: crate::types::LogId,
    purged: Option<crate::types::LogId>,
    held: Option<crate::types::LogId>,
) -> bool {
    purged.is_none_or(|p| p.index < last.index) && held != Some(last)
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::snapshot_needed;
    use crate::types::LogId;

    fn lid(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    /// The model's liveness finding: node 2 won a duel in term 1, its blank
    /// (1, n2, 1) never reached W, and W's snapshot ends at (1, n1, 2). In
    /// log-id order (1, n2, 1) > (1, n1, 2), so the old rule ("W's snapshot
    /// is newer than my last entry") skipped the snapshot and adoption then
    /// refused to leave a hole: node 2 could never start.
    #[test]
    fn a_higher_ranked_stray_entry_at_a_lower_index_does_not_hide_ws_snapshot() {
        let (snap, stray) = (lid(1, 1, 2), lid(1, 2, 1));
        assert!(
            stray > snap,
            "the premise: openraft orders the stray entry above the snapshot"
        );
        assert!(snapshot_needed(snap, None, None));
    }

    #[test]
    fn a_snapshot_the_node_covers_or_continues_is_not_needed() {
        let snap = lid(2, 1, 5);
        assert!(
            !snapshot_needed(snap, Some(lid(2, 1, 5)), None),
            "own snapshot at the same point"
        );
        assert!(!snapshot_needed(snap, Some(lid(2, 1, 9)), None), "own snapshot past it");
        assert!(
            !snapshot_needed(snap, Some(lid(1, 1, 2)), Some(snap)),
            "holds the very entry"
        );
        assert!(
            snapshot_needed(snap, Some(lid(1, 1, 2)), Some(lid(1, 2, 5))),
            "another entry there"
        );
        assert!(snapshot_needed(snap, Some(lid(1, 1, 2)), None), "a shorter log");
    }
}
