//! Adoption (witness-protocol.md, "Adoption" and "A reborn node"): the
//! offline operations that replay W's log and snapshot into a node's storage
//! while its `Raft` is shut down.

use super::error::Result;
use super::error::StoreError;
use super::log_store::check_consecutive;
use super::log_store::read;
use super::log_store::write;
use super::LogStore;
use super::StateMachine;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::SnapshotMeta;

/// Installs W's snapshot into `sm` (unless `sm` is already past it) and makes
/// `log` consistent with it (purged up to its last log id; the whole local
/// log dropped if it diverged there). Verifies `data` first; nothing changes
/// if it is bad.
pub async fn install_snapshot_offline(
    sm: &StateMachine,
    log: &LogStore,
    meta: SnapshotMeta,
    data: Vec<u8>,
) -> Result<()> {
    sm.install_snapshot_bytes(&meta, data, true).await?;
    if let Some(last) = meta.last_log_id {
        log.purge_to_snapshot(last).await?;
    }
    Ok(())
}

impl LogStore {
    /// Adoption (witness-protocol.md): makes this log equal to `entries` (W's,
    /// consecutive) from the first index where they differ: a conflicting local
    /// suffix is truncated, the missing entries appended, all fsync'd. Entries
    /// at or below the purged id are skipped. Refuses to rewrite a committed
    /// entry or to leave a hole. Only while no `Raft` runs on this store.
    pub async fn adopt_entries(&self, entries: Vec<Entry>) -> Result<()> {
        check_consecutive(&entries)?;
        let committed = self.committed();
        self.run(move |disk, lock| {
            let (k, conflict) = {
                let mem = read(lock);
                let purged = mem.hard.purged.map(|p| p.index);
                let fresh = entries.iter().position(|e| {
                    purged.is_none_or(|p| e.log_id.index > p)
                        && mem.entries.get(&e.log_id.index).map(|l| l.log_id) != Some(e.log_id)
                });
                let Some(k) = fresh else { return Ok(()) };
                let at = entries[k].log_id;
                if at.index > mem.next_index() {
                    let last = mem.last_log_id();
                    return Err(StoreError::Invariant(format!(
                        "adopting from {at} would leave a hole after {last:?}"
                    )));
                }
                let local = mem.entries.get(&at.index).map(|e| e.log_id);
                if let (Some(local), Some(c)) = (local, committed.filter(|c| c.index >= at.index)) {
                    return Err(StoreError::Invariant(format!(
                        "adopting {at} would overwrite {local}, at or below the committed {c}"
                    )));
                }
                (k, local.is_some())
            };
            let new = &entries[k..];
            let at = new[0].log_id.index;
            if conflict {
                disk.truncate(at)?;
                write(lock).entries.split_off(&at);
            }
            disk.append(new)?;
            write(lock)
                .entries
                .extend(new.iter().map(|e| (e.log_id.index, e.clone())));
            Ok(())
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
                let diverged = mem
                    .entries
                    .get(&snapshot_last.index)
                    .is_some_and(|e| e.log_id != snapshot_last);
                (
                    mem.entries.keys().next().copied().filter(|_| diverged),
                    mem.hard.clone(),
                )
            };
            if let Some(first) = diverged_from {
                disk.truncate(first)?;
                write(lock).entries.clear();
            }
            hard.purged = Some(snapshot_last);
            let last = read(lock)
                .entries
                .last_key_value()
                .map_or(snapshot_last, |(_, e)| e.log_id.max(snapshot_last));
            // Everything in the snapshot is committed; a committed id beyond
            // the remaining log would make openraft re-apply missing entries.
            hard.committed = Some(hard.committed.map_or(snapshot_last, |c| c.max(snapshot_last)).min(last));
            disk.save_hard(hard.clone())?;
            disk.remove_purged_segments(snapshot_last.index)?;
            let mut mem = write(lock);
            mem.entries = mem.entries.split_off(&(snapshot_last.index + 1));
            mem.hard = hard;
            Ok(())
        })
        .await
    }
}
