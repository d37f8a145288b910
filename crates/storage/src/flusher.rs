//! Background fdatasync of the active log segment (`LogSync::Background`).
//!
//! Why a node may report an append done before its fsync: W is in every
//! quorum, so nothing is committed (acknowledged, or visible to a read)
//! before it is in ZooKeeper's WAL, fsync'd by ZooKeeper; and every node
//! adopts W's log before it starts Raft and before it stands for election.
//! The local log is then a copy that saves a restarted node from re-reading
//! ZooKeeper, not what makes a write durable. openraft 0.9 waits for each
//! append's flush inside its core loop, before it replicates the entries to
//! W, so an fsync there puts a disk flush in series with every ZooKeeper
//! round trip. In this mode the write (to the page cache: a kill -9 loses
//! nothing) is reported done, and this thread syncs right after, continuously.
//! A machine crash can lose the unsynced tail; the node re-adopts it from W.
//! The committed id and the vote are only written after a [`Flusher::barrier`],
//! so the state file never points past the durable log.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::Weak;
use std::time::Duration;

use super::fault::Faults;

#[derive(Default)]
struct State {
    /// Bumped by every write; `synced` catches up after an fdatasync.
    written_seq: u64,
    synced_seq: u64,
    /// A duplicate handle on the segment last written, and its path; shared
    /// with the syncing thread, which syncs it unlocked.
    file: Option<(Arc<File>, PathBuf)>,
    /// The length of `file` after the last recorded write.
    written_len_bytes: u64,
    /// Barriers waiting: the pacing below does not apply to them.
    waiting: usize,
    /// The thread waits for a write (not for its pacing interval to end):
    /// only then does a write need to wake it. Waking it on every append
    /// cost each node two context switches per write.
    idle: bool,
    /// Set when an fdatasync failed: the kernel may have dropped the dirty
    /// pages, so the store stops taking writes (see `Disk::poisoned`).
    failed: Option<String>,
}

pub struct Flusher {
    state: Mutex<State>,
    /// Signalled on a new write (wakes the thread) and on a finished sync
    /// (wakes barriers).
    changed: Condvar,
    /// Test-only fault hooks (`fault.rs`): stall or skip the sync, trace it.
    faults: Option<Arc<Faults>>,
}

impl Flusher {
    /// Starts the syncing thread; it ends once the returned handle is dropped.
    pub fn start(faults: Option<Arc<Faults>>) -> Arc<Flusher> {
        let flusher = Arc::new(Flusher {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            faults,
        });
        let weak = Arc::downgrade(&flusher);
        std::thread::Builder::new()
            .name("walship-log-sync".into())
            .spawn(move || run(weak))
            .expect("spawn the log sync thread");
        flusher
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a write to `file` (the active segment at `path`), now
    /// `len_bytes` long; `reopened`: the handle is not the one of the
    /// previous write (a new segment, or the same name re-created after a
    /// truncation).
    pub fn written(&self, file: &File, path: &std::path::Path, reopened: bool, len_bytes: u64) -> std::io::Result<()> {
        let mut s = self.lock();
        if reopened || s.file.is_none() {
            s.file = Some((Arc::new(file.try_clone()?), path.to_path_buf()));
        }
        s.written_seq += 1;
        s.written_len_bytes = len_bytes;
        if s.idle {
            self.changed.notify_all();
        }
        Ok(())
    }

    /// Returns once every write recorded before the call is on disk.
    pub fn barrier(&self) -> Result<(), String> {
        let mut s = self.lock();
        let target = s.written_seq;
        s.waiting += 1;
        self.changed.notify_all();
        let res = loop {
            if let Some(why) = &s.failed {
                break Err(why.clone());
            }
            if s.synced_seq >= target {
                break Ok(());
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        };
        s.waiting -= 1;
        res
    }

    pub fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }
}

/// At most one background fdatasync per this interval (barriers excepted).
/// Syncing as fast as the disk allows meant ~1,400 fsyncs a second per node
/// under load, on the disk whose fsync latency ZooKeeper's commits (and so
/// every write) wait for.
const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(5);

fn run(weak: Weak<Flusher>) {
    let mut last_sync = std::time::Instant::now() - MIN_SYNC_INTERVAL;
    loop {
        let Some(f) = weak.upgrade() else { return };
        // Read before the job is taken: every append written by now is in it.
        let through = walship_types::stages::written_through();
        let job = {
            let mut s = f.lock();
            // Pace, unless a barrier waits: wake at the interval's end or on
            // a barrier's arrival.
            while s.waiting == 0 && last_sync.elapsed() < MIN_SYNC_INTERVAL {
                let left = MIN_SYNC_INTERVAL.saturating_sub(last_sync.elapsed());
                s = f.changed.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
            }
            s.idle = true;
            let (mut s, _) = f
                .changed
                .wait_timeout_while(s, Duration::from_millis(200), |s| {
                    s.written_seq == s.synced_seq || s.failed.is_some()
                })
                .unwrap_or_else(|e| e.into_inner());
            s.idle = false;
            match &s.file {
                Some((file, path)) if s.written_seq > s.synced_seq && s.failed.is_none() => {
                    Some((Arc::clone(file), path.clone(), s.written_seq, s.written_len_bytes))
                }
                _ => None,
            }
        };
        // The sync itself runs unlocked: writers keep appending meanwhile.
        if let Some((file, path, seq, len_bytes)) = job {
            last_sync = std::time::Instant::now();
            let res = match &f.faults {
                None => file.sync_data(),
                // Traced before `synced_seq` moves, so once a barrier
                // returns no earlier sync reports in late.
                Some(faults) => {
                    faults.stall("fdatasync", &path);
                    if faults.skip_sync() {
                        Ok(())
                    } else {
                        file.sync_data().inspect(|()| faults.synced(&path, len_bytes))
                    }
                }
            };
            let mut s = f.lock();
            match res {
                Ok(()) => {
                    s.synced_seq = s.synced_seq.max(seq);
                    walship_types::stages::flushed_through(through);
                }
                Err(e) => s.failed = Some(format!("fdatasync {}: {e}", path.display())),
            }
            f.changed.notify_all();
        }
        drop(f);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn barrier_waits_for_the_sync_of_every_earlier_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        let mut file = File::create(&path).expect("create");
        let f = Flusher::start(None);
        assert!(f.barrier().is_ok(), "nothing written: nothing to wait for");
        for i in 0..50u32 {
            file.write_all(&i.to_le_bytes()).expect("write");
            f.written(&file, &path, i == 0, u64::from(i + 1) * 4).expect("written");
        }
        f.barrier().expect("barrier");
        let s = f.lock();
        assert_eq!(s.written_seq, 50);
        assert!(s.synced_seq >= 50, "barrier returned before the sync: {}", s.synced_seq);
        assert!(s.failed.is_none());
    }

    #[test]
    fn a_write_to_an_idle_flusher_is_synced_without_a_barrier() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        let mut file = File::create(&path).expect("create");
        let f = Flusher::start(None);
        // Writes wake the thread only while it waits for one: wait until it does.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f.lock().idle {
            assert!(std::time::Instant::now() < deadline, "the flusher never went idle");
            std::thread::yield_now();
        }
        file.write_all(b"x").expect("write");
        f.written(&file, &path, true, 1).expect("written");
        while f.lock().synced_seq < 1 {
            assert!(std::time::Instant::now() < deadline, "the write was never synced");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_new_handle_replaces_the_followed_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let fa = File::create(&a).expect("create a");
        let fb = File::create(&b).expect("create b");
        let f = Flusher::start(None);
        f.written(&fa, &a, true, 0).expect("written a");
        f.written(&fb, &b, true, 0).expect("written b");
        f.barrier().expect("barrier");
        assert_eq!(f.lock().file.as_ref().map(|(_, p)| p.clone()), Some(b));
    }
}
