//! Adoption (witness-protocol.md, "Adoption" and "A reborn node"): the
//! offline operations that replay W's log and snapshot into a node's storage
//! while its `Raft` is shut down.

use std::path::Path;

use walship_types::entry_digest;
use walship_types::Entry;
use walship_types::LogId;
use walship_types::SnapshotMeta;

use super::error::Result;
use super::error::StoreError;
use super::log_store::check_consecutive;
use super::log_store::read;
use super::log_store::read_range;
use super::log_store::write;
use super::LogStore;
use super::StateMachine;

/// Installs W's snapshot, a data blob in the file `blob` (as
/// `Witness::read_snapshot_to` leaves it), into `sm` (unless `sm` is
/// already past it) and makes `log` consistent with it (purged up to its last
/// log id; the whole local log dropped if it diverged there). Verifies the
/// blob first, streaming; nothing changes if it is bad.
pub async fn install_snapshot_offline(
    sm: &StateMachine,
    log: &LogStore,
    meta: SnapshotMeta,
    blob: &Path,
) -> Result<()> {
    sm.install_snapshot_blob(&meta, blob, true).await?;
    if let Some(last) = meta.last_log_id {
        log.purge_to_snapshot(last).await?;
    }
    Ok(())
}

/// A local entry and W's under one log id with different bytes (a reused
/// log id: witness-protocol.md, "A log id names one entry forever").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReusedLogId {
    pub log_id: LogId,
    /// crc32 of the local entry's bytes ([`walship_types::entry_digest`]).
    pub local_digest: u32,
    /// crc32 of the other entry's bytes (W's, or the leader's).
    pub other_digest: u32,
}

/// What [`LogStore::adopt_entries`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Entries written from W.
    pub appended: usize,
    /// The index from which the local suffix was cut and replaced by W's.
    pub replaced_from: Option<u64>,
    /// Set when the first replaced entry had W's log id but other bytes.
    pub reused: Option<ReusedLogId>,
}

impl LogStore {
    /// The first of `entries` (consecutive) that this log holds under the
    /// same log id but with other bytes. Entries outside the in-memory log
    /// (purged, or past its end) are not compared; a request past the end,
    /// the steady state of replication, costs one empty range lookup.
    pub fn first_reused(&self, entries: &[Entry]) -> Result<Option<ReusedLogId>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(None);
        };
        let (first, last) = (first.log_id.index, last.log_id.index);
        let local = self.entries(first..=last)?;
        let reused = local.iter().find_map(|l| {
            let theirs = entries.get((l.log_id.index - first) as usize)?;
            (theirs.log_id == l.log_id && theirs != l).then_some((l, theirs))
        });
        Ok(reused.map(|(mine, theirs)| ReusedLogId {
            log_id: theirs.log_id,
            local_digest: entry_digest(mine),
            other_digest: entry_digest(theirs),
        }))
    }

    /// Adoption (witness-protocol.md): makes this log equal to `entries` (W's,
    /// consecutive) from the first index where they differ, in log id or in
    /// bytes: the local suffix from there is truncated, W's entries appended,
    /// all fsync'd. Entries at or below the purged id are skipped. Refuses to
    /// leave a hole, or to replace a committed entry by one with another log
    /// id. Only while no `Raft` runs on this store.
    ///
    /// A local entry that has W's log id but other bytes is replaced even at
    /// or below the committed hint. That hint names a log id, not bytes: it
    /// is what a leader reported committed, and the entry committed under
    /// that id is W's (W is in every quorum). W never swaps an entry for
    /// another under the same id: it only cuts its log at an entry whose log
    /// id differs (which shows that entry and all after it uncommitted), and
    /// it refuses a request that reuses an id (`AppendDecision::LogIdReused`).
    /// So an entry committed under an id is still in W under that id, with
    /// its bytes, and a local entry under it with other bytes was never
    /// committed, whatever the local hint says: it came from a leader that
    /// reused the id (restarted having forgotten what it appended), and the
    /// leader that committed told this node the id only. The replacement must
    /// keep the hint true of the new log (W's entries reach the hint's index
    /// with the hint's log id); the caller must roll the state machine back if
    /// it applied a replaced entry (`Adopted::replaced_from`).
    pub async fn adopt_entries(&self, entries: Vec<Entry>) -> Result<Adopted> {
        check_consecutive(&entries)?;
        let committed = self.committed();
        self.run(move |disk, lock| {
            let (k, conflict, reused) = {
                let mem = read(lock);
                let purged = mem.hard.purged.map(|p| p.index);
                // The local entries W's overlap, from memory or the files.
                let (first, last) = match (entries.first(), entries.last()) {
                    (Some(f), Some(l)) => (f.log_id.index, l.log_id.index),
                    _ => return Ok(Adopted::default()),
                };
                let local_entries = read_range(disk, &mem, first..=last)?;
                let local_at = |index: u64| {
                    let front = local_entries.first()?.log_id.index;
                    local_entries.get(usize::try_from(index.checked_sub(front)?).ok()?)
                };
                let fresh = entries.iter().position(|e| {
                    purged.is_none_or(|p| e.log_id.index > p) && local_at(e.log_id.index) != Some(e)
                });
                let Some(k) = fresh else {
                    return Ok(Adopted::default());
                };
                let at = entries[k].log_id;
                if at.index > mem.next_index() {
                    let last = mem.last_log_id();
                    return Err(StoreError::Invariant(format!(
                        "adopting from {at} would leave a hole after {last:?}"
                    )));
                }
                let local = local_at(at.index);
                let reused = local.filter(|l| l.log_id == at).map(|l| ReusedLogId {
                    log_id: at,
                    local_digest: entry_digest(l),
                    other_digest: entry_digest(&entries[k]),
                });
                if let (Some(local), Some(c)) = (local, committed.filter(|c| c.index >= at.index)) {
                    if reused.is_none() {
                        return Err(StoreError::Invariant(format!(
                            "adopting {at} would overwrite {}, at or below the committed {c}",
                            local.log_id
                        )));
                    }
                    if !entries[k..].iter().any(|e| e.log_id == c) {
                        return Err(StoreError::Invariant(format!(
                            "log id {at} reused at or below the committed {c}, and W's entries from there do not reach {c}: not replacing"
                        )));
                    }
                }
                (k, local.is_some(), reused)
            };
            let new = &entries[k..];
            let at = new[0].log_id.index;
            if conflict {
                disk.truncate(at)?;
                write(lock).truncate(at);
            }
            disk.append(new)?;
            write(lock).push(new.iter().cloned());
            Ok(Adopted {
                appended: new.len(),
                replaced_from: conflict.then_some(at),
                reused,
            })
        })
        .await
    }

    /// Cuts the log from `index` on, with Raft stopped: the repair of a
    /// reused log id that W does not hold (then neither copy is committed).
    /// Refuses to cut at or below the committed hint.
    pub async fn truncate_offline(&self, index: u64) -> Result<bool> {
        let committed = self.committed();
        self.run(move |disk, lock| {
            if let Some(c) = committed.filter(|c| c.index >= index) {
                return Err(StoreError::Invariant(format!(
                    "cutting the log from index {index} would drop the committed {c}"
                )));
            }
            if read(lock).next_index() <= index {
                return Ok(false);
            }
            disk.truncate(index)?;
            write(lock).truncate(index);
            Ok(true)
        })
        .await
    }

    /// After a snapshot up to `snapshot_last` was installed offline: purges the
    /// log up to it, dropping the whole local log first if its entry at that
    /// index has another id (then the local log diverged from the snapshot's).
    pub async fn purge_to_snapshot(&self, snapshot_last: LogId) -> Result<()> {
        self.run(move |disk, lock| {
            let (diverged_from, mut hard) = {
                let mem = read(lock);
                if mem.hard.purged.is_some_and(|p| p >= snapshot_last) {
                    return Ok(());
                }
                let diverged = mem.log_id_at(snapshot_last.index).is_some_and(|l| l != snapshot_last);
                (mem.first_index().filter(|_| diverged), mem.hard.clone())
            };
            if let Some(first) = diverged_from {
                disk.truncate(first)?;
                write(lock).clear();
            }
            hard.purged = Some(snapshot_last);
            let last = {
                let mem = read(lock);
                match mem.is_empty() {
                    true => snapshot_last,
                    false => mem.last_log_id().map_or(snapshot_last, |l| l.max(snapshot_last)),
                }
            };
            // Everything in the snapshot is committed; a committed id beyond
            // the remaining log would make openraft re-apply missing entries.
            hard.committed = Some(hard.committed.map_or(snapshot_last, |c| c.max(snapshot_last)).min(last));
            disk.save_hard(hard.clone())?;
            disk.remove_purged_segments(snapshot_last.index)?;
            let mut mem = write(lock);
            mem.purge(snapshot_last.index);
            mem.hard = hard;
            Ok(())
        })
        .await
    }
}
