//! `LogStore`: openraft's durable log and vote store over the segment files,
//! with the non-purged entries cached in memory, plus the offline operations
//! adoption uses while the `Raft` is shut down.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::LogState;
use openraft::RaftLogReader;
use walship_types::stages::Mark;
use walship_types::stages::Span;
use walship_types::Entry;
use walship_types::LogId;
use walship_types::StorageError;
use walship_types::TypeConfig;
use walship_types::Vote;

use super::error::Result;
use super::error::StoreError;
use super::fault::Faults;
use super::segments::Disk;
use super::segments::HardState;
pub use super::segments::LogSync;
use super::StorageMetrics;

pub const SEGMENT_MAX_BYTES_DEFAULT: u64 = 64 << 20;

/// The Raft log of one node. Cloning shares the same store.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Locked only on blocking threads; it serializes every write, as
    /// openraft requires ("all write-IO must be serialized").
    disk: Mutex<Disk>,
    /// What readers see. Invariant: equal to what `disk` holds once each
    /// write returns; updated only after the write is durable.
    mem: RwLock<Mem>,
    /// The newest committed id openraft reported, and when one was last
    /// written to disk. openraft saves it on every commit advance; writing
    /// the state file (two fsyncs) each time would bound the commit rate,
    /// and the saved value is only a restart hint (re-apply up to it), so
    /// it is written at most once per `COMMITTED_FLUSH_INTERVAL` and with
    /// every other state write.
    committed: Mutex<(Option<LogId>, std::time::Instant)>,
    /// Told of every batch openraft appends, before it is written: the node
    /// sends its own entries on to ZooKeeper from here, so W's round trip
    /// overlaps the local write and openraft's turn-taking.
    on_append: std::sync::OnceLock<AppendHook>,
}

/// See [`LogStore::on_append`].
pub type AppendHook = Box<dyn Fn(&[Entry]) + Send + Sync>;

const COMMITTED_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Mem {
    pub(super) entries: BTreeMap<u64, Entry>,
    pub(super) hard: HardState,
}

impl Mem {
    pub(super) fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.hard.purged)
    }

    /// The index the next appended entry must have.
    pub(super) fn next_index(&self) -> u64 {
        self.last_log_id().map_or(0, |l| l.index + 1)
    }
}

pub(super) type MemLock = RwLock<Mem>;

// Mem is changed only by short, panic-free updates after a durable write, so
// a poisoned lock still holds consistent data.
pub(super) fn read(lock: &MemLock) -> RwLockReadGuard<'_, Mem> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn write(lock: &MemLock) -> RwLockWriteGuard<'_, Mem> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Appends a batch openraft hands over: it must continue the log, except
/// for entries already purged into the snapshot.
fn append_entries(disk: &mut Disk, lock: &MemLock, mut entries: Vec<Entry>) -> Result<()> {
    check_consecutive(&entries)?;
    let (last, purged) = {
        let mem = read(lock);
        (mem.last_log_id(), mem.hard.purged)
    };
    // Entries at or below the purged id are already in the snapshot;
    // openraft's suite appends such entries, and keeping them would put the
    // log behind its own purged id.
    let skip = purged.map_or(0, |p| entries.iter().take_while(|e| e.log_id.index <= p.index).count());
    let entries = entries.split_off(skip);
    let Some(first) = entries.first() else {
        return Ok(());
    };
    // An empty, never-purged log may start anywhere (openraft's suite
    // does); otherwise the batch must continue the log.
    if last.is_some_and(|l| first.log_id.index != l.index + 1) {
        return Err(StoreError::Invariant(format!(
            "append of {} does not continue the log, whose last id is {last:?}",
            first.log_id
        )));
    }
    disk.append(&entries)?;
    write(lock)
        .entries
        .extend(entries.into_iter().map(|e| (e.log_id.index, e)));
    Ok(())
}

pub(super) fn check_consecutive(entries: &[Entry]) -> Result<()> {
    for w in entries.windows(2) {
        if w[1].log_id.index != w[0].log_id.index + 1 {
            return Err(StoreError::Invariant(format!(
                "entries are not consecutive: {} then {}",
                w[0].log_id, w[1].log_id
            )));
        }
    }
    Ok(())
}

impl LogStore {
    /// Opens the log under `data_dir/raft`, verifying every record. Only a
    /// torn tail of the last segment is repaired (cut, with a warning); any
    /// other damage is a `Corrupt` error naming the file and offset.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with_segment_max_bytes(data_dir, SEGMENT_MAX_BYTES_DEFAULT).await
    }

    pub async fn open_with_segment_max_bytes(data_dir: &Path, segment_max_bytes: u64) -> Result<Self> {
        Self::open_with(data_dir, segment_max_bytes, LogSync::default()).await
    }

    /// With the fault hooks of `WALSHIP_FAULT_DIR` if it is set (`fault.rs`),
    /// counting into metrics of its own (a node's go through `open_local`).
    pub async fn open_with(data_dir: &Path, segment_max_bytes: u64, sync: LogSync) -> Result<Self> {
        Self::open_with_faults(
            data_dir,
            segment_max_bytes,
            sync,
            Faults::from_env(),
            &StorageMetrics::new(),
        )
        .await
    }

    /// As `open_with`, with these fault hooks (tests) instead of the
    /// environment's, counting into `metrics`.
    pub async fn open_with_faults(
        data_dir: &Path,
        segment_max_bytes: u64,
        sync: LogSync,
        faults: Option<Arc<Faults>>,
        metrics: &StorageMetrics,
    ) -> Result<Self> {
        let raft_dir = data_dir.join("raft");
        let metrics = metrics.clone();
        let (disk, entries) =
            tokio::task::spawn_blocking(move || Disk::open(&raft_dir, segment_max_bytes, sync, faults, &metrics))
                .await??;
        let mem = Mem {
            entries,
            hard: disk.hard().clone(),
        };
        Ok(LogStore {
            inner: Arc::new(Inner {
                disk: Mutex::new(disk),
                mem: RwLock::new(mem),
                committed: Mutex::new((None, std::time::Instant::now())),
                on_append: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Calls `hook` with every batch of entries openraft appends, before
    /// the write (so it must not block). Set once; later calls are ignored.
    pub fn on_append(&self, hook: AppendHook) {
        let _ = self.inner.on_append.set(hook);
    }

    fn mem(&self) -> RwLockReadGuard<'_, Mem> {
        read(&self.inner.mem)
    }

    /// Runs `op` with the disk lock on tokio's blocking pool. spawn_blocking
    /// rather than block_in_place: fsyncs take milliseconds, block_in_place
    /// panics on a current-thread runtime, and openraft awaits each storage
    /// call before the next, so the order of writes is kept. If the caller's
    /// future is dropped, `op` still runs to completion, keeping disk and
    /// memory in step. `op` reads `Mem` freely (only disk-lock holders
    /// change it) and takes the write lock only to publish a durable change,
    /// so readers never wait for an fsync.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Disk, &MemLock) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut disk = inner
                .disk
                .lock()
                .map_err(|_| StoreError::Poisoned("a storage task panicked while writing".into()))?;
            op(&mut disk, &inner.mem)
        })
        .await?
    }

    /// Closes the store (see `Disk::close`): durable, read-only from now
    /// on, and its directory free for another store. Reads still work.
    pub async fn close(&self) -> Result<()> {
        self.run(|disk, _| disk.close()).await
    }

    /// Returns once every append so far is on disk (`LogSync::Background`).
    pub async fn sync_barrier(&self) -> Result<()> {
        self.run(|disk, _| disk.sync_barrier()).await
    }

    /// True when the log never held anything: no entry and nothing purged.
    /// Such a node adopts ZooKeeper's log before it starts Raft.
    pub fn is_empty(&self) -> bool {
        let mem = self.mem();
        mem.entries.is_empty() && mem.hard.purged.is_none()
    }

    /// The last entry's id, or the purged id if no entry is left.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.mem().last_log_id()
    }

    /// The id of the entry at `index`, if it is in the (non-purged) log.
    pub fn log_id_at(&self, index: u64) -> Option<LogId> {
        self.mem().entries.get(&index).map(|e| e.log_id)
    }

    pub fn purged(&self) -> Option<LogId> {
        self.mem().hard.purged
    }

    pub fn vote(&self) -> Option<Vote> {
        self.mem().hard.vote
    }

    /// Writes the newest committed id now (a clean shutdown calls this).
    pub async fn flush_committed(&self) -> Result<()> {
        self.inner.committed.lock().unwrap_or_else(|e| e.into_inner()).1 = std::time::Instant::now();
        self.save_hard_with(|_| {}).await
    }

    /// The committed id, never past the log's last entry: with
    /// `LogSync::Background` the newest in-memory hint can be ahead of what a
    /// crash left on disk (the state file never is, see `Disk::save_hard`).
    pub fn committed(&self) -> Option<LogId> {
        let hint = self.inner.committed.lock().unwrap_or_else(|e| e.into_inner()).0;
        let mem = self.mem();
        std::cmp::min(std::cmp::max(mem.hard.committed, hint), mem.last_log_id())
    }

    /// Copies of the entries with index in `range`.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        self.mem().entries.range(range).map(|(_, e)| e.clone()).collect()
    }

    async fn save_hard_with(&self, change: impl FnOnce(&mut HardState) + Send + 'static) -> Result<()> {
        let committed = self.inner.committed.lock().unwrap_or_else(|e| e.into_inner()).0;
        self.run(move |disk, lock| {
            let mut hard = read(lock).hard.clone();
            // Every state write also carries the newest committed hint.
            hard.committed = std::cmp::max(hard.committed, committed);
            change(&mut hard);
            if hard != read(lock).hard {
                disk.save_hard(hard.clone())?;
                write(lock).hard = hard;
            }
            Ok(())
        })
        .await
    }
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mem = self.mem();
        f.debug_struct("LogStore")
            .field("purged", &mem.hard.purged)
            .field("last_log_id", &mem.last_log_id())
            .field("committed", &mem.hard.committed)
            .field("vote", &mem.hard.vote)
            .finish()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.entries(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.mem();
        Ok(LogState {
            last_purged_log_id: mem.hard.purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.save_hard_with(move |h| h.vote = Some(vote))
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote())
    }

    /// Durable, so a restart re-applies the log up to here on top of the
    /// snapshot. Written behind a sync barrier (`Disk::save_hard`), so it
    /// never points past the durable log.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let flush = {
            let mut c = self.inner.committed.lock().unwrap_or_else(|e| e.into_inner());
            c.0 = committed;
            c.1.elapsed() >= COMMITTED_FLUSH_INTERVAL
        };
        if !flush {
            return Ok(());
        }
        self.inner.committed.lock().unwrap_or_else(|e| e.into_inner()).1 = std::time::Instant::now();
        self.save_hard_with(|_| {})
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed())
    }

    /// Writes the whole batch with one write, then reports it flushed: with
    /// `LogSync::PerAppend` after one fdatasync, with `Background` at once
    /// (the flusher syncs behind; see flusher.rs for why that is safe here).
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut entries: Vec<Entry> = entries.into_iter().collect();
        let span = Span::marking(&entries, Mark::Appended);
        if let Some(hook) = self.inner.on_append.get() {
            hook(&entries);
        }
        // The common case, a batch continuing the active segment with the
        // fdatasync left to the flusher, is one buffered write: done here
        // rather than on the blocking pool, whose hand-off each way cost
        // more than the write (two thread wake-ups per batch). A segment
        // roll or the per-append sync (fsyncs), or the disk lock held by
        // another write, still go to the blocking pool. A frozen disk then
        // blocks this worker thread instead of a pooled one; openraft waits
        // for the append either way (tests/gray_failure.rs: the stalled
        // leader's writes still move to the other node).
        let first_index = entries.first().map(|e| e.log_id.index);
        let inline = match (self.inner.disk.try_lock(), first_index) {
            (Ok(mut disk), Some(first)) if disk.appends_in_place(first) => {
                Some(append_entries(&mut disk, &self.inner.mem, std::mem::take(&mut entries)))
            }
            _ => None,
        };
        let res = match inline {
            Some(res) => res,
            None => self.run(move |disk, lock| append_entries(disk, lock, entries)).await,
        };
        match res {
            Ok(()) => {
                span.mark(Mark::Written);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(e.into_raft(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.run(move |disk, lock| {
            if read(lock).entries.range(log_id.index..).next().is_none() {
                return Ok(());
            }
            disk.truncate(log_id.index)?;
            write(lock).entries.split_off(&log_id.index);
            Ok(())
        })
        .await
        .map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    /// Saves the purged id first, then deletes the segments wholly below it.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.run(move |disk, lock| {
            let mut hard = read(lock).hard.clone();
            if hard.purged.is_some_and(|p| p >= log_id) {
                return Ok(());
            }
            hard.purged = Some(log_id);
            disk.save_hard(hard.clone())?;
            disk.remove_purged_segments(log_id.index)?;
            let mut mem = write(lock);
            mem.entries = mem.entries.split_off(&(log_id.index + 1));
            mem.hard = hard;
            Ok(())
        })
        .await
        .map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
