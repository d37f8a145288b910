//! The Raft log's files: append-only segments `raft/log/<first_index:020>.log`
//! of CRC'd entry records, and `raft/state` (vote, committed, purged). All
//! blocking; the caller serializes access (the `LogStore`'s disk mutex).

use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;
use walship_types::Entry;
use walship_types::LogId;
use walship_types::Vote;

use super::error::Result;
use super::error::StoreError;
use super::fault;
use super::fault::Faults;
use super::flusher::Flusher;
use super::frame;
use super::frame::ScanEnd;
use super::StorageMetrics;

const STATE_MAGIC: &[u8; 8] = b"WSHIPRS1";

/// When an append is reported done (see `flusher.rs` for why the default
/// need not wait for the disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogSync {
    /// After the write; a background thread fdatasyncs right behind.
    #[default]
    Background,
    /// After the write and its fdatasync.
    PerAppend,
}

/// The small, rarely written part of the log store, replaced atomically.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    /// Entries up to this id are gone from the log (they are in a snapshot).
    pub purged: Option<LogId>,
}

struct Segment {
    first_index: u64,
    path: PathBuf,
    /// Byte offset of each record; record `k` holds index `first_index + k`.
    record_offsets_bytes: Vec<u64>,
    len_bytes: u64,
}

impl Segment {
    fn next_index(&self) -> u64 {
        self.first_index + self.record_offsets_bytes.len() as u64
    }
}

pub struct Disk {
    /// Held (flock) while open, so two processes never write one log;
    /// `None` once closed.
    lock: Option<File>,
    log_dir: PathBuf,
    state_path: PathBuf,
    segments: Vec<Segment>,
    /// Open handle on the last segment, opened on first append.
    active: Option<File>,
    /// `active` was (re)opened since the flusher last saw a write.
    active_reopened: bool,
    /// Set in `LogSync::Background`: appends leave the fdatasync to it.
    flusher: Option<Arc<Flusher>>,
    segment_max_bytes: u64,
    hard: HardState,
    /// Set after a failed write or fsync: the kernel may have dropped the
    /// dirty pages, so nothing more is written until a restart re-reads the disk.
    poisoned: Option<String>,
    /// Test-only fault hooks (`fault.rs`); `None` unless `WALSHIP_FAULT_DIR` is set.
    faults: Option<Arc<Faults>>,
    /// `log_entries_read_back_total`.
    read_back: prometheus::IntCounter,
}

fn purged_index(hard: &HardState) -> Option<u64> {
    hard.purged.map(|p| p.index)
}

impl Disk {
    /// Opens (creating if needed) the log under `raft_dir`, verifying every
    /// record; hands each non-purged entry to `keep`, oldest first (so the
    /// caller can keep only the newest in memory while the rest stream by).
    /// Only a torn tail of the last segment is repaired (cut, with a
    /// warning); any other damage is an error.
    pub fn open(
        raft_dir: &Path,
        segment_max_bytes: u64,
        sync: LogSync,
        faults: Option<Arc<Faults>>,
        metrics: &StorageMetrics,
        keep: impl FnMut(Entry),
    ) -> Result<Disk> {
        let log_dir = raft_dir.join("log");
        frame::create_dir_durable(raft_dir)?;
        frame::create_dir_durable(&log_dir)?;
        let lock_path = raft_dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(|e| StoreError::io("create", &lock_path, e))?;
        lock.try_lock().map_err(|_| StoreError::InUse {
            path: raft_dir.to_path_buf(),
        })?;
        let state_path = raft_dir.join("state");
        let hard = match frame::read_checked_file(&state_path, STATE_MAGIC)? {
            Some(p) => bincode::deserialize(&p)
                .map_err(|e| StoreError::corrupt(&state_path, 0, format!("undecodable raft state: {e}")))?,
            None => HardState::default(),
        };
        let mut disk = Disk {
            lock: Some(lock),
            log_dir,
            state_path,
            segments: Vec::new(),
            active: None,
            active_reopened: true,
            flusher: match sync {
                LogSync::Background => Some(Flusher::start(faults.clone())),
                LogSync::PerAppend => None,
            },
            segment_max_bytes,
            hard,
            poisoned: None,
            faults,
            read_back: metrics.log_entries_read_back.clone(),
        };
        disk.load_segments(metrics, keep)?;
        Ok(disk)
    }

    pub fn hard(&self) -> &HardState {
        &self.hard
    }

    fn load_segments(&mut self, metrics: &StorageMetrics, mut keep: impl FnMut(Entry)) -> Result<()> {
        let purged = purged_index(&self.hard);
        let mut found = Vec::new();
        let dir_entries = fs::read_dir(&self.log_dir).map_err(|e| StoreError::io("list", &self.log_dir, e))?;
        for dir_entry in dir_entries {
            let path = dir_entry.map_err(|e| StoreError::io("list", &self.log_dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            match name
                .strip_suffix(".log")
                .filter(|d| d.len() == 20)
                .map(str::parse::<u64>)
            {
                Some(Ok(first_index)) => found.push((first_index, path)),
                _ if name.ends_with(".tmp") => {
                    fs::remove_file(&path).map_err(|e| StoreError::io("remove leftover", &path, e))?
                }
                _ => {
                    tracing::warn!(path = %path.display(), "ignoring unexpected file in the log directory")
                }
            }
        }
        found.sort();

        // The first kept entry's index (for the continuity check).
        let mut first_kept: Option<u64> = None;
        let count = found.len();
        for (i, (first_index, path)) in found.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let bytes = fs::read(&path).map_err(|e| StoreError::io("read", &path, e))?;
            let mut offsets = Vec::new();
            let end = frame::scan_records(&path, &bytes, 0, is_last, |offset, payload| {
                let entry: Entry = bincode::deserialize(payload)
                    .map_err(|e| StoreError::corrupt(&path, offset, format!("undecodable log entry: {e}")))?;
                let want = first_index + offsets.len() as u64;
                if entry.log_id.index != want {
                    let reason = format!("record holds index {}, expected {want}", entry.log_id.index);
                    return Err(StoreError::corrupt(&path, offset, reason));
                }
                offsets.push(offset);
                if purged.is_none_or(|p| want > p) {
                    first_kept.get_or_insert(want);
                    keep(entry);
                }
                Ok(())
            })?;
            // A crash can leave only the last segment empty (created, never
            // written). An empty one with segments after it lost its records
            // (they were fsync'd before the next segment was made): with no
            // purged id to compare against, the log would silently start later.
            if offsets.is_empty() && !is_last && purged.is_none_or(|p| first_index > p) {
                return Err(StoreError::corrupt(
                    &path,
                    0,
                    "empty log segment followed by later ones: its entries are lost",
                ));
            }
            let mut seg = Segment {
                first_index,
                path,
                record_offsets_bytes: offsets,
                len_bytes: bytes.len() as u64,
            };
            if let ScanEnd::TornTail { offset_bytes, reason } = end {
                // The last segment's tail is what a crash or a power loss
                // can leave half written (with `log_sync = background`, the
                // unsynced tail: a torn page has its full length and garbage
                // in it). The local log is a cache of W: every committed
                // entry is in ZooKeeper, and the node adopts W's log before
                // Raft starts, so cutting from the first bad record on loses
                // nothing acknowledged (brainstorm.md, "Local state is a
                // cache of W"). Damage anywhere else is an error.
                let records_dropped = fault::count_records(&bytes[offset_bytes as usize..]);
                tracing::warn!(
                    path = %seg.path.display(),
                    offset_bytes,
                    records_dropped,
                    cut_bytes = seg.len_bytes - offset_bytes,
                    reason,
                    "cutting the torn tail of the last log segment {} at byte offset {offset_bytes} ({records_dropped} record(s) dropped: {reason}); the node re-adopts what it lacks from ZooKeeper",
                    seg.path.display()
                );
                metrics.local_log_tail_repairs.inc();
                let synced = cut_file(&seg.path, offset_bytes, self.faults.as_deref())?;
                seg.len_bytes = offset_bytes;
                if let Some(f) = &self.faults {
                    f.cut(Some((&seg.path, offset_bytes)), synced);
                }
            }
            self.segments.push(seg);
        }
        self.check_continuity(first_kept)?;

        // Finish an interrupted purge, and drop segments left empty by a crash
        // right after their creation (or by a torn-tail cut).
        let before = self.segments.len();
        self.segments.retain(|s| {
            let dead = s.record_offsets_bytes.is_empty() || purged.is_some_and(|p| s.next_index() <= p + 1);
            if dead {
                if let Err(e) = fs::remove_file(&s.path) {
                    tracing::warn!(path = %s.path.display(), error = %e, "cannot remove a dead log segment");
                }
            }
            !dead
        });
        if self.segments.len() != before {
            frame::sync_dir(&self.log_dir)?;
        }
        Ok(())
    }

    /// The kept entries must be one run without holes, starting right after
    /// the purged id; segments holding kept entries must follow each other.
    fn check_continuity(&self, first_kept: Option<u64>) -> Result<()> {
        let purged = purged_index(&self.hard);
        let mut prev: Option<&Segment> = None;
        for seg in &self.segments {
            if seg.record_offsets_bytes.is_empty() {
                continue;
            }
            if let Some(p) = prev {
                let p_has_kept = purged.is_none_or(|pi| p.next_index() > pi + 1);
                if p_has_kept && seg.first_index != p.next_index() {
                    let reason = format!(
                        "segment starts at index {}, but the previous one ends at {}",
                        seg.first_index,
                        p.next_index() - 1
                    );
                    return Err(StoreError::corrupt(&seg.path, 0, reason));
                }
            }
            prev = Some(seg);
        }
        if let (Some(p), Some(first)) = (purged, first_kept) {
            if first != p + 1 {
                let reason = format!("first kept entry is {first}, but entries up to {p} were purged");
                return Err(StoreError::corrupt(&self.state_path, 0, reason));
            }
        }
        Ok(())
    }

    /// Refuses writes after a failed write or fsync, this store's own or
    /// its flusher's.
    fn check_writable(&self) -> Result<()> {
        match self
            .poisoned
            .clone()
            .or_else(|| self.flusher.as_ref().and_then(|f| f.failed()))
        {
            Some(why) => Err(StoreError::Poisoned(why)),
            None => Ok(()),
        }
    }

    /// Runs a write; an I/O failure poisons the store (see `poisoned`).
    fn guarded<T>(&mut self, op: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check_writable()?;
        let res = op(self);
        if let Err(e @ StoreError::Io { .. }) = &res {
            self.poisoned = Some(e.to_string());
            self.active = None;
        }
        res
    }

    /// Makes every append durable, then refuses all writes and releases the
    /// directory's lock, so another store (a node restarted in this process)
    /// can open it even while something still holds this one.
    pub fn close(&mut self) -> Result<()> {
        let synced = self.sync_barrier();
        self.poisoned = Some("the log store is closed (the node shut down)".into());
        self.active = None;
        self.lock = None;
        synced
    }

    /// Whether appending a batch that starts at `first_index` is one
    /// buffered write and nothing else: the active segment is open, has
    /// room and continues at `first_index`, and the flusher syncs behind
    /// (no segment roll, no fsync in the call).
    pub fn appends_in_place(&self, first_index: u64) -> bool {
        self.flusher.is_some()
            && self.poisoned.is_none()
            && self.active.is_some()
            && self
                .segments
                .last()
                .is_some_and(|s| s.len_bytes < self.segment_max_bytes && s.next_index() == first_index)
    }

    /// Returns once every append so far is on disk (a no-op per append).
    pub fn sync_barrier(&self) -> Result<()> {
        match &self.flusher {
            Some(f) => f.barrier().map_err(StoreError::Poisoned),
            None => Ok(()),
        }
    }

    /// Writes the state file; every append before it is made durable first,
    /// so its committed id never points past the durable log.
    pub fn save_hard(&mut self, hard: HardState) -> Result<()> {
        self.sync_barrier()?;
        self.guarded(|d| {
            let payload = bincode::serialize(&hard).map_err(|source| StoreError::Encode {
                what: "raft state",
                source,
            })?;
            d.stall("write", &d.state_path)?;
            frame::write_checked_file(&d.state_path, STATE_MAGIC, &payload)?;
            d.hard = hard;
            Ok(())
        })
    }

    /// Appends consecutive `entries` with one write and one fdatasync. The
    /// caller has checked they continue the log (no hole, no overlap).
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let first_index = first.log_id.index;
        self.guarded(|d| {
            d.stall("append to", &d.log_dir)?;
            let rotate = match d.segments.last() {
                None => true,
                Some(s) => s.len_bytes >= d.segment_max_bytes || s.next_index() != first_index,
            };
            let mut created = false;
            if rotate {
                // The segment left behind is complete: sync it now, as the
                // flusher only follows the active one, so that only the last
                // segment can ever lose a tail. Not opened yet by this
                // process (the first append since a restart): a previous
                // one may have left its tail unsynced, so open it to sync.
                if let Some(seg) = d.segments.last() {
                    let old = match d.active.take() {
                        Some(f) => f,
                        None => File::open(&seg.path).map_err(|e| StoreError::io("open log segment", &seg.path, e))?,
                    };
                    sync_segment(&old, &seg.path, seg.len_bytes, d.faults.as_deref())?;
                }
                let path = d.log_dir.join(format!("{first_index:020}.log"));
                let file = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| StoreError::io("create log segment", &path, e))?;
                d.segments.push(Segment {
                    first_index,
                    path,
                    record_offsets_bytes: Vec::new(),
                    len_bytes: 0,
                });
                d.active = Some(file);
                d.active_reopened = true;
                created = true;
            }
            let Some(seg) = d.segments.last_mut() else {
                return Err(StoreError::Invariant("no log segment to append to".into()));
            };
            if d.active.is_none() {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(|e| StoreError::io("open log segment", &seg.path, e))?;
                d.active = Some(file);
                d.active_reopened = true;
            }
            let mut buf = Vec::new();
            let mut offsets = Vec::with_capacity(entries.len());
            for e in entries {
                offsets.push(seg.len_bytes + buf.len() as u64);
                let payload = bincode::serialize(e).map_err(|source| StoreError::Encode {
                    what: "log entry",
                    source,
                })?;
                frame::encode_record(&mut buf, &payload, &seg.path)?;
            }
            let new_len = seg.len_bytes + buf.len() as u64;
            if let Some(file) = d.active.as_mut() {
                file.write_all(&buf)
                    .map_err(|e| StoreError::io("write", &seg.path, e))?;
                match &d.flusher {
                    Some(f) => {
                        f.written(file, &seg.path, d.active_reopened, new_len)
                            .map_err(|e| StoreError::io("duplicate the handle of", &seg.path, e))?;
                        d.active_reopened = false;
                    }
                    None => sync_segment(file, &seg.path, new_len, d.faults.as_deref())?,
                }
            }
            if created {
                frame::sync_dir(&d.log_dir)?;
            }
            seg.record_offsets_bytes.extend(offsets);
            seg.len_bytes += buf.len() as u64;
            Ok(())
        })
    }

    /// Durably removes every record with index >= `index`. Later segments go
    /// first, so a crash half way leaves a shorter log, never one with a hole.
    pub fn truncate(&mut self, index: u64) -> Result<()> {
        if self.faults.is_some() {
            // No sync of the old content may report in after the cut (the
            // `synced` trace would claim bytes written after it).
            self.sync_barrier()?;
        }
        self.guarded(|d| {
            d.stall("truncate", &d.log_dir)?;
            d.active = None;
            let mut removed = false;
            while let Some(seg) = d.segments.last().filter(|s| s.first_index >= index) {
                fs::remove_file(&seg.path).map_err(|e| StoreError::io("remove log segment", &seg.path, e))?;
                d.segments.pop();
                removed = true;
            }
            if removed {
                frame::sync_dir(&d.log_dir)?;
            }
            // Whether the last segment left was cut, durably.
            let mut synced = false;
            if let Some(seg) = d.segments.last_mut() {
                if index < seg.next_index() {
                    let k = (index - seg.first_index) as usize;
                    let offset_bytes = seg.record_offsets_bytes[k];
                    synced = cut_file(&seg.path, offset_bytes, d.faults.as_deref())?;
                    seg.record_offsets_bytes.truncate(k);
                    seg.len_bytes = offset_bytes;
                }
            }
            if let Some(f) = &d.faults {
                f.cut(d.segments.last().map(|s| (s.path.as_path(), s.len_bytes)), synced);
            }
            Ok(())
        })
    }

    /// Reads the entries with index `first..=last` back from the segments,
    /// every record's crc32 checked and its index compared with the one
    /// asked for: a mismatch is a `Corrupt` error naming the file and
    /// offset. The caller knows they are in the log (not purged, not past
    /// its end); a hole is an `Invariant` error. The bytes may still be in
    /// the page cache only (written, not yet synced): a read sees them.
    pub fn read_entries(&self, first: u64, last: u64) -> Result<Vec<Entry>> {
        use std::os::unix::fs::FileExt;
        let mut out = Vec::with_capacity(last.saturating_sub(first) as usize + 1);
        let mut want = first;
        for seg in &self.segments {
            if want > last {
                break;
            }
            if seg.next_index() <= want || seg.first_index > want {
                continue;
            }
            let k0 = (want - seg.first_index) as usize;
            let k1 = ((last.min(seg.next_index() - 1)) - seg.first_index) as usize;
            let from = seg.record_offsets_bytes[k0];
            let to = seg.record_offsets_bytes.get(k1 + 1).copied().unwrap_or(seg.len_bytes);
            let mut bytes = vec![0u8; (to - from) as usize];
            let file = File::open(&seg.path).map_err(|e| StoreError::io("open log segment", &seg.path, e))?;
            file.read_exact_at(&mut bytes, from)
                .map_err(|e| StoreError::io("read log segment", &seg.path, e))?;
            frame::scan_records(&seg.path, &bytes, from, false, |offset, payload| {
                let entry: Entry = bincode::deserialize(payload)
                    .map_err(|e| StoreError::corrupt(&seg.path, offset, format!("undecodable log entry: {e}")))?;
                if entry.log_id.index != want {
                    let reason = format!("record holds index {}, expected {want}", entry.log_id.index);
                    return Err(StoreError::corrupt(&seg.path, offset, reason));
                }
                want += 1;
                out.push(entry);
                Ok(())
            })?;
        }
        if want <= last {
            return Err(StoreError::Invariant(format!(
                "entries {first}..={last} asked of the log files, which hold none at {want}"
            )));
        }
        self.read_back.inc_by(out.len() as u64);
        Ok(out)
    }

    /// Deletes the segment files holding only entries <= `upto_index`. The
    /// purged id must already be saved: a crash half way leaves files whose
    /// entries the next open skips and deletes.
    pub fn remove_purged_segments(&mut self, upto_index: u64) -> Result<()> {
        self.guarded(|d| {
            d.stall("remove purged segments from", &d.log_dir)?;
            let mut removed = 0;
            for seg in &d.segments {
                if seg.next_index() > upto_index + 1 {
                    break;
                }
                fs::remove_file(&seg.path).map_err(|e| StoreError::io("remove log segment", &seg.path, e))?;
                removed += 1;
            }
            if removed > 0 {
                if removed == d.segments.len() {
                    d.active = None;
                }
                d.segments.drain(..removed);
                frame::sync_dir(&d.log_dir)?;
            }
            Ok(())
        })
    }
}

impl Disk {
    /// The stall and fail hooks (`fault.rs`), before an operation touches
    /// the disk: blocks while `stall` exists, then fails while `fail` does.
    fn stall(&self, what: &'static str, path: &Path) -> Result<()> {
        if let Some(f) = &self.faults {
            f.stall(what, path);
            if let Some(e) = f.injected_error() {
                return Err(StoreError::io(what, path, e));
            }
        }
        Ok(())
    }
}

/// fdatasyncs a segment whose first `len_bytes` are written, through the
/// fault hooks (stall, skip) if they are on, recording what is durable.
fn sync_segment(file: &File, path: &Path, len_bytes: u64, faults: Option<&Faults>) -> Result<()> {
    let Some(f) = faults else {
        return file.sync_data().map_err(|e| StoreError::io("fdatasync", path, e));
    };
    f.stall("fdatasync", path);
    if f.skip_sync() {
        return Ok(());
    }
    file.sync_data().map_err(|e| StoreError::io("fdatasync", path, e))?;
    f.synced(path, len_bytes);
    Ok(())
}

/// Cuts `path` to `len_bytes`, durably; false if the fault hooks skipped
/// the sync.
fn cut_file(path: &Path, len_bytes: u64, faults: Option<&Faults>) -> Result<bool> {
    if let Some(f) = faults {
        f.stall("truncate", path);
    }
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("open", path, e))?;
    f.set_len(len_bytes).map_err(|e| StoreError::io("truncate", path, e))?;
    if faults.is_some_and(|x| x.skip_sync()) {
        return Ok(false);
    }
    f.sync_all().map_err(|e| StoreError::io("fsync", path, e))?;
    Ok(true)
}
