//! `LogStore`: openraft's durable log and vote store over the segment files,
//! with the non-purged entries cached in memory, plus the offline operations
//! adoption uses while the `Raft` is shut down.

use std::collections::BTreeMap;
use std::collections::VecDeque;
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

/// What readers see of the log: every kept (non-purged) entry's log id, and
/// the newest entries themselves within the cache budget. Older entries are
/// read back from the segments when asked for (a follower catching up, an
/// adoption comparing), so memory stays the budget whatever the entries'
/// size and however long openraft keeps them after a snapshot.
///
/// Invariant: `uncached` (oldest first) then `entries` are one run of
/// consecutive indexes, starting right after `hard.purged`; `uncached` holds
/// no id newer than an entry in `entries`.
#[derive(Default)]
pub(super) struct Mem {
    /// The newest entries, within `cache_max_bytes` (and at least the last
    /// one).
    entries: BTreeMap<u64, Entry>,
    /// Log ids of the kept entries older than `entries`, on disk only.
    uncached: VecDeque<LogId>,
    /// Bytes of `entries` (their encoded size).
    cached_bytes: u64,
    /// The cache's budget ([`LogStore::set_cache_max_bytes`]).
    cache_max_bytes: u64,
    pub(super) hard: HardState,
}

/// The default budget of the in-memory copies of the newest entries. Apply
/// and replication to W and to an up-to-date follower read only the last
/// few batches; this is ~0.4 s of writes at the heaviest measured rate
/// (4 KiB values, ~40 MB/s). A follower further behind reads from the files
/// (mostly the page cache).
pub const LOG_CACHE_MAX_BYTES_DEFAULT: u64 = 16 << 20;

impl Mem {
    /// An empty log with the default cache budget.
    fn default_budget() -> Mem {
        Mem {
            cache_max_bytes: LOG_CACHE_MAX_BYTES_DEFAULT,
            ..Mem::default()
        }
    }

    pub(super) fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or_else(|| self.uncached.back().copied())
            .or(self.hard.purged)
    }

    /// The index the next appended entry must have.
    pub(super) fn next_index(&self) -> u64 {
        self.last_log_id().map_or(0, |l| l.index + 1)
    }

    /// The oldest kept entry's index.
    pub(super) fn first_index(&self) -> Option<u64> {
        self.uncached
            .front()
            .map(|l| l.index)
            .or_else(|| self.entries.keys().next().copied())
    }

    /// No entry kept (whether or not any was purged).
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.uncached.is_empty()
    }

    /// The id of the kept entry at `index`.
    pub(super) fn log_id_at(&self, index: u64) -> Option<LogId> {
        if let Some(e) = self.entries.get(&index) {
            return Some(e.log_id);
        }
        let front = self.uncached.front()?.index;
        let k = usize::try_from(index.checked_sub(front)?).ok()?;
        self.uncached.get(k).copied()
    }

    /// The kept indexes in `range`, as `first..=last`; `None` if none is.
    fn kept_in(&self, range: &impl RangeBounds<u64>) -> Option<(u64, u64)> {
        use std::ops::Bound;
        let (lo, hi) = (self.first_index()?, self.last_log_id()?.index);
        let first = match range.start_bound() {
            Bound::Included(&a) => a.max(lo),
            Bound::Excluded(&a) => a.checked_add(1)?.max(lo),
            Bound::Unbounded => lo,
        };
        let last = match range.end_bound() {
            Bound::Included(&b) => b.min(hi),
            Bound::Excluded(&b) => b.checked_sub(1)?.min(hi),
            Bound::Unbounded => hi,
        };
        (first <= last).then_some((first, last))
    }

    /// Appends entries that continue the log (already written to disk),
    /// then keeps the cache within its budget.
    pub(super) fn push(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            self.cached_bytes += entry_bytes(&e);
            self.entries.insert(e.log_id.index, e);
        }
        self.evict();
    }

    /// Drops the oldest cached entries (their ids stay) until the cache
    /// holds at most its budget, always keeping the last entry.
    fn evict(&mut self) {
        while self.cached_bytes > self.cache_max_bytes && self.entries.len() > 1 {
            let Some((_, e)) = self.entries.pop_first() else {
                break;
            };
            self.cached_bytes -= entry_bytes(&e);
            self.uncached.push_back(e.log_id);
        }
    }

    /// Everything the log keeps is forgotten (the disk dropped it all).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.uncached.clear();
        self.cached_bytes = 0;
    }

    /// Forgets every entry with index >= `index` (the disk cut them).
    pub(super) fn truncate(&mut self, index: u64) {
        let cut = self.entries.split_off(&index);
        self.cached_bytes -= cut.values().map(entry_bytes).sum::<u64>();
        if let Some(front) = self.uncached.front().map(|l| l.index) {
            self.uncached.truncate(index.saturating_sub(front) as usize);
        }
    }

    /// Forgets every entry with index <= `index` (purged into a snapshot).
    pub(super) fn purge(&mut self, index: u64) {
        let kept = self.entries.split_off(&(index + 1));
        let gone = std::mem::replace(&mut self.entries, kept);
        self.cached_bytes -= gone.values().map(entry_bytes).sum::<u64>();
        while self.uncached.front().is_some_and(|l| l.index <= index) {
            self.uncached.pop_front();
        }
    }
}

/// An entry's size in the cache: its encoded size, what it cost on disk.
fn entry_bytes(e: &Entry) -> u64 {
    bincode::serialized_size(e).unwrap_or(0)
}

/// Copies of the kept entries with index in `range`: cached ones from
/// memory, older ones read back from `disk` (which the caller holds, so no
/// write moves the log meanwhile).
pub(super) fn read_range(disk: &Disk, mem: &Mem, range: impl RangeBounds<u64>) -> Result<Vec<Entry>> {
    let Some((first, last)) = mem.kept_in(&range) else {
        return Ok(Vec::new());
    };
    let cached_from = mem.entries.keys().next().copied().unwrap_or(u64::MAX);
    let mut out = if first < cached_from {
        disk.read_entries(first, last.min(cached_from - 1))?
    } else {
        Vec::new()
    };
    if cached_from <= last {
        out.extend(mem.entries.range(first.max(cached_from)..=last).map(|(_, e)| e.clone()));
    }
    Ok(out)
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
    write(lock).push(entries);
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
        // Entries stream from the files into the cache, which keeps only the
        // newest: a start never holds the whole log in memory.
        let (disk, mem) = tokio::task::spawn_blocking(move || {
            let mut mem = Mem::default_budget();
            let disk = Disk::open(&raft_dir, segment_max_bytes, sync, faults, &metrics, |e| {
                mem.push(std::iter::once(e))
            })?;
            mem.hard = disk.hard().clone();
            Ok::<_, StoreError>((disk, mem))
        })
        .await??;
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
        mem.is_empty() && mem.hard.purged.is_none()
    }

    /// The last entry's id, or the purged id if no entry is left.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.mem().last_log_id()
    }

    /// The id of the entry at `index`, if it is in the (non-purged) log.
    pub fn log_id_at(&self, index: u64) -> Option<LogId> {
        self.mem().log_id_at(index)
    }

    /// Sets the budget of the in-memory copies of the newest entries (the
    /// rest of the log is read back from its files when asked for), and
    /// keeps to it at once.
    pub fn set_cache_max_bytes(&self, max_bytes: u64) {
        let mut mem = write(&self.inner.mem);
        mem.cache_max_bytes = max_bytes;
        mem.evict();
    }

    /// Bytes the in-memory copies of the newest entries take.
    pub fn cached_bytes(&self) -> u64 {
        self.mem().cached_bytes
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

    /// Copies of the kept entries with index in `range`. Those older than
    /// the in-memory cache are read back from the segment files under the
    /// disk lock, blocking: only a follower far behind or an adoption asks
    /// for them ([`RaftLogReader::try_get_log_entries`] does so on the
    /// blocking pool).
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>> {
        let (first, last) = {
            let mem = self.mem();
            let Some((first, last)) = mem.kept_in(&range) else {
                return Ok(Vec::new());
            };
            if mem.entries.contains_key(&first) {
                // The cache is a suffix of the log: it holds all of them.
                return Ok(mem.entries.range(first..=last).map(|(_, e)| e.clone()).collect());
            }
            (first, last)
        };
        let disk = self
            .inner
            .disk
            .lock()
            .map_err(|_| StoreError::Poisoned("a storage task panicked while writing".into()))?;
        read_range(&disk, &self.mem(), first..=last)
    }

    /// Whether every kept entry in `range` is in memory.
    fn cached(&self, range: &impl RangeBounds<u64>) -> bool {
        let mem = self.mem();
        mem.kept_in(range)
            .is_none_or(|(first, _)| mem.entries.contains_key(&first))
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
        let read = if self.cached(&range) {
            self.entries(range)
        } else {
            let store = self.clone();
            let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
            tokio::task::spawn_blocking(move || store.entries(bounds))
                .await
                .map_err(StoreError::from)
                .and_then(|r| r)
        };
        read.map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Read))
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
            if read(lock).next_index() <= log_id.index {
                return Ok(());
            }
            disk.truncate(log_id.index)?;
            write(lock).truncate(log_id.index);
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
            mem.purge(log_id.index);
            mem.hard = hard;
            Ok(())
        })
        .await
        .map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
