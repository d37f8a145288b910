//! Fault hooks of the local storage, for tests and the soak's nemesis: a
//! frozen disk, a disk write cache that never reaches the platter, and the
//! power loss that follows. Off unless the environment variable
//! `WALSHIP_FAULT_DIR` names a directory; it is read once when a store opens
//! (`LogStore::open*`, `StateMachine::open*`), and when it is unset every hook
//! is one branch on a `None`.
//!
//! The contract, `$WALSHIP_FAULT_DIR` being the directory (the test creates
//! and removes the first two files; the node writes the third):
//!
//! - `stall`: while this file exists, every local log write (append), log
//!   truncation, segment removal, state-file write (`raft/state`), snapshot
//!   file write and every fdatasync/fsync of a log segment blocks *before* it
//!   touches the disk, polling every 10 ms: a frozen disk (`fsfreeze`). The
//!   appends block where they run (a tokio worker for one that continues
//!   the active segment, the blocking pool for the rest, see
//!   `LogStore::append`) under the store's disk mutex, which is what
//!   openraft awaits, so the Raft core waits as it would on a frozen disk.
//!   Logged at WARN once when a stall begins and once when it ends.
//! - `nosync`: while this file exists, the log's fdatasyncs (background
//!   sync thread, `log_sync = per-append`, a segment roll, a truncation's)
//!   are skipped but reported done: a volatile disk write cache that lies.
//! - `fail`: while this file exists, every local log write, truncation and
//!   state-file write fails with EIO (after any stall): a failing disk. The
//!   store refuses writes from then on and openraft's core stops.
//! - `synced`, written by the node (plain write + rename, no fsync: tests
//!   kill -9, they do not cut the power): one line `<segment file name>
//!   <durable length in bytes>`, rewritten after every fdatasync of a log
//!   segment. Meaning: every segment whose name sorts before that one is
//!   durable whole (a segment is fdatasync'd when the log rolls past it),
//!   that one up to the length, and any segment after it not at all. No
//!   file: nothing was ever synced.
//!
//! [`power_loss`] applies `synced` to a stopped node's data dir.

use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// The environment variable that turns the hooks on.
pub const FAULT_DIR_ENV: &str = "WALSHIP_FAULT_DIR";
/// Files in the fault directory.
pub const STALL_FILE: &str = "stall";
pub const NOSYNC_FILE: &str = "nosync";
pub const FAIL_FILE: &str = "fail";
pub const SYNCED_FILE: &str = "synced";

const STALL_POLL: Duration = Duration::from_millis(10);

/// The hooks of one store (shared by its sync thread).
#[derive(Debug)]
pub struct Faults {
    stall_path: PathBuf,
    nosync_path: PathBuf,
    fail_path: PathBuf,
    synced_path: PathBuf,
    /// A stall is under way (so it is logged once, not per waiter).
    stalled: AtomicBool,
    /// What `synced` says, kept in memory so a late report never moves it
    /// back (the sync thread may finish a sync of a segment after the log
    /// rolled past it and synced it whole).
    trace: Mutex<Option<(String, u64)>>,
}

impl Faults {
    /// The hooks if `WALSHIP_FAULT_DIR` is set (and not empty).
    pub fn from_env() -> Option<Arc<Faults>> {
        let dir = std::env::var_os(FAULT_DIR_ENV).filter(|d| !d.is_empty())?;
        let faults = Faults::new(Path::new(&dir));
        static ANNOUNCED: std::sync::Once = std::sync::Once::new();
        ANNOUNCED.call_once(|| {
            tracing::warn!(dir = %Path::new(&dir).display(), "{FAULT_DIR_ENV} is set: storage fault hooks are on (tests only)");
        });
        Some(Arc::new(faults))
    }

    /// Hooks on `dir` (created if needed), continuing the `synced` trace a
    /// previous process of this node left there.
    pub fn new(dir: &Path) -> Faults {
        if let Err(e) = fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the fault directory");
        }
        let synced_path = dir.join(SYNCED_FILE);
        Faults {
            stall_path: dir.join(STALL_FILE),
            nosync_path: dir.join(NOSYNC_FILE),
            fail_path: dir.join(FAIL_FILE),
            trace: Mutex::new(read_trace(&synced_path).ok().flatten()),
            synced_path,
            stalled: AtomicBool::new(false),
        }
    }

    /// Blocks while `stall` exists. `what` and `path` name the operation
    /// held up, for the log.
    pub fn stall(&self, what: &str, path: &Path) {
        if !self.stall_path.exists() {
            return;
        }
        if !self.stalled.swap(true, Ordering::SeqCst) {
            tracing::warn!(op = what, path = %path.display(), "fault hook: local disk stalled (while {} exists)", self.stall_path.display());
        }
        while self.stall_path.exists() {
            std::thread::sleep(STALL_POLL);
        }
        if self.stalled.swap(false, Ordering::SeqCst) {
            tracing::warn!(op = what, path = %path.display(), "fault hook: local disk stall ended");
        }
    }

    /// While `fail` exists, the I/O error a failing disk would give (EIO):
    /// the log poisons itself and openraft's core stops, as on a disk error
    /// or descriptor exhaustion.
    pub fn injected_error(&self) -> Option<io::Error> {
        self.fail_path.exists().then(|| io::Error::from_raw_os_error(libc::EIO))
    }

    /// True while `nosync` exists: skip the fdatasync, report it done.
    pub fn skip_sync(&self) -> bool {
        self.nosync_path.exists()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, u64)>> {
        self.trace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After an fdatasync of segment `path`: its first `len_bytes` are
    /// durable (and every earlier segment was synced whole when the log
    /// rolled). Never moves the trace back.
    pub fn synced(&self, path: &Path, len_bytes: u64) {
        let name = file_name(path);
        let mut trace = self.lock();
        if trace
            .as_ref()
            .is_some_and(|(n, l)| (n.as_str(), *l) >= (name.as_str(), len_bytes))
        {
            return;
        }
        *trace = Some((name, len_bytes));
        self.write(&trace);
    }

    /// After the log was cut (truncation, or a torn tail cut at open):
    /// `last` is the last segment left and its length, if any is left;
    /// `synced`: that segment was cut and the cut fsync'd (not skipped by
    /// `nosync`), so all of what is left of it is durable.
    pub fn cut(&self, last: Option<(&Path, u64)>, synced: bool) {
        let mut trace = self.lock();
        let new = match (last, trace.clone()) {
            (None, _) => None,
            (Some((path, len)), old) => {
                let name = file_name(path);
                match old {
                    // Segments after the durable one are still not durable.
                    Some((n, l)) if n < name => Some((n, l)),
                    // The cut shortens what was durable; a sync makes all of it so.
                    Some((n, l)) if n == name => Some((n, if synced { len } else { l.min(len) })),
                    // The durable one was removed: this one was synced whole
                    // when the log rolled past it.
                    Some(_) => Some((name, len)),
                    None if synced => Some((name, len)),
                    None => None,
                }
            }
        };
        if new != *trace {
            *trace = new;
            self.write(&trace);
        }
    }

    fn write(&self, trace: &Option<(String, u64)>) {
        let res = match trace {
            Some((name, len)) => {
                let tmp = self.synced_path.with_extension("tmp");
                fs::write(&tmp, format!("{name} {len}\n")).and_then(|()| fs::rename(&tmp, &self.synced_path))
            }
            None => match fs::remove_file(&self.synced_path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(e) = res {
            tracing::warn!(path = %self.synced_path.display(), error = %e, "fault hook: cannot write the synced trace");
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

/// Reads `synced`: `None` if absent.
fn read_trace(path: &Path) -> io::Result<Option<(String, u64)>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {text:?} is not \"<segment> <bytes>\"", path.display()),
        )
    };
    let mut words = text.split_whitespace();
    let (Some(name), Some(len), None) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    let len = len.parse::<u64>().map_err(|_| bad())?;
    Ok(Some((name.to_string(), len)))
}

/// What [`power_loss`] dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PowerLossReport {
    /// What `synced` said (segment file name, durable bytes); `None`: no trace,
    /// so nothing counted as durable.
    pub trace: Option<(String, u64)>,
    /// Segment files deleted (nothing in them was durable).
    pub segments_removed: Vec<PathBuf>,
    /// Segment files cut short: (path, length before, length after).
    pub segments_cut: Vec<(PathBuf, u64, u64)>,
    /// Records lost (whole or in part, the torn one included).
    pub records_dropped: u64,
    /// Bytes that were not durable: removed, or garbled in the torn record.
    pub bytes_dropped: u64,
    /// With `torn`: the segment and byte offset of the torn record left.
    pub torn: Option<(PathBuf, u64)>,
}

/// Emulates a power loss on a stopped node's data dir: drops from its log
/// segments whatever was not durable per `<fault_dir>/synced` (see the
/// module doc). Segments after the traced one are deleted and the traced
/// one is cut to its durable length. With `torn`, the first record that was
/// not durable is instead left torn, as a half-written page: it keeps its
/// length header, its payload is overwritten with garbage (its crc32 no
/// longer matches), and everything after it is dropped.
///
/// Without a trace nothing was ever synced, so nothing counts as durable:
/// every segment is deleted (with `torn`, all but the first record of the
/// first one, left torn). `raft/state` and the snapshot are left alone:
/// they are written with fsync and rename, which the hooks never skip, so
/// the state file may name a committed id past the log that is left (the
/// store clamps it). Errors if the node still holds `raft/LOCK`.
pub fn power_loss(data_dir: &Path, fault_dir: &Path, torn: bool) -> io::Result<PowerLossReport> {
    let trace = read_trace(&fault_dir.join(SYNCED_FILE))?;
    let mut report = PowerLossReport {
        trace: trace.clone(),
        ..Default::default()
    };
    let raft_dir = data_dir.join("raft");
    let log_dir = raft_dir.join("log");
    if !log_dir.is_dir() {
        return Ok(report);
    }
    let lock_path = raft_dir.join("LOCK");
    let _lock = match File::open(&lock_path) {
        Ok(lock) => {
            lock.try_lock().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked: stop the node first", lock_path.display()),
                )
            })?;
            Some(lock)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut segments: Vec<(String, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&log_dir)? {
        let path = entry?.path();
        let name = file_name(&path);
        let is_segment = name
            .strip_suffix(".log")
            .is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()));
        if is_segment {
            segments.push((name, path));
        }
    }
    segments.sort();

    let mut torn_left = !torn;
    for (name, path) in segments {
        let mut bytes = fs::read(&path)?;
        let len = bytes.len() as u64;
        let durable = match &trace {
            None => 0,
            Some((n, _)) if name < *n => len,
            Some((n, l)) if name == *n => (*l).min(len),
            Some(_) => 0,
        };
        if durable == len {
            continue;
        }
        report.records_dropped += count_records(&bytes[durable as usize..]);
        report.bytes_dropped += len - durable;
        let mut keep = durable;
        if !torn_left {
            torn_left = true;
            let at = durable as usize;
            let header = bytes.get(at..at + 8).map(|h| {
                (
                    u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize,
                    u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
                )
            });
            if let Some((rlen, crc)) = header {
                let end = (at + 8 + rlen).min(bytes.len());
                garble(&mut bytes[at..end], crc);
                keep = end as u64;
                let f = OpenOptions::new().write(true).open(&path)?;
                std::os::unix::fs::FileExt::write_all_at(&f, &bytes[at..end], at as u64)?;
                report.torn = Some((path.clone(), durable));
            }
        }
        if keep == 0 {
            fs::remove_file(&path)?;
            report.segments_removed.push(path);
        } else {
            OpenOptions::new().write(true).open(&path)?.set_len(keep)?;
            report.segments_cut.push((path, len, keep));
        }
    }
    Ok(report)
}

/// Overwrites a record's payload (`record` is header and payload) with
/// garbage that fails its crc32 `crc`, keeping the length header.
fn garble(record: &mut [u8], crc: u32) {
    let payload_start = 8.min(record.len());
    for (i, b) in record[payload_start..].iter_mut().enumerate() {
        *b = 0xA5 ^ (i as u8).wrapping_mul(31);
    }
    if record.len() > 8 {
        if crc32fast::hash(&record[8..]) == crc {
            record[8] ^= 0xFF;
        }
    } else if record.len() == 8 {
        // No payload to garble: the stored crc32 of an empty payload is 0.
        record[4] ^= 0xFF;
    }
}

/// Records in `bytes` (a run of `[len u32][crc u32][payload]`), a partial
/// one included; garbage lengths make this a lower bound.
pub(crate) fn count_records(bytes: &[u8]) -> u64 {
    let mut pos = 0usize;
    let mut n = 0;
    while pos < bytes.len() {
        if bytes[pos..].iter().all(|b| *b == 0) {
            break;
        }
        n += 1;
        let Some(h) = bytes.get(pos..pos + 4) else { break };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        pos = pos.saturating_add(8).saturating_add(len);
    }
    n
}
