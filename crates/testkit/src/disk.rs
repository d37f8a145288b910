//! A node's storage fault hooks (`walship::storage::fault`): a node started
//! with `WALSHIP_FAULT_DIR=<dir>` blocks every local log write and sync while
//! `<dir>/stall` exists (a frozen disk), skips fdatasync while `<dir>/nosync`
//! exists, fails writes while `<dir>/fail` exists, and records in
//! `<dir>/synced` what is durable; `storage::fault::power_loss` then cuts a
//! stopped node's data dir back to that durable state.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use anyhow::Result;
use walship::storage::fault::FAIL_FILE;
use walship::storage::fault::NOSYNC_FILE;
use walship::storage::fault::STALL_FILE;

/// One node's fault-hook directory.
#[derive(Clone, Debug)]
pub struct FaultDir {
    path: PathBuf,
}

impl FaultDir {
    pub fn new(path: PathBuf) -> FaultDir {
        FaultDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// While on, the node's local log writes and syncs block.
    pub fn set_stall(&self, on: bool) -> Result<()> {
        self.set(STALL_FILE, on)
    }

    /// While on, the node skips fdatasync (what it writes is not durable).
    pub fn set_nosync(&self, on: bool) -> Result<()> {
        self.set(NOSYNC_FILE, on)
    }

    /// While on, the node's local log writes fail.
    pub fn set_fail(&self, on: bool) -> Result<()> {
        self.set(FAIL_FILE, on)
    }

    pub fn stalled(&self) -> bool {
        self.path.join(STALL_FILE).exists()
    }

    /// Every switch off (a stopped run must not leave a node hanging).
    pub fn clear(&self) -> Result<()> {
        self.set(STALL_FILE, false)?;
        self.set(NOSYNC_FILE, false)?;
        self.set(FAIL_FILE, false)
    }

    /// Empty and present (after a wipe: nothing of the old disk's
    /// durability record is left).
    pub fn reset(&self) -> Result<()> {
        if self.path.exists() {
            std::fs::remove_dir_all(&self.path).with_context(|| format!("clear {}", self.path.display()))?;
        }
        std::fs::create_dir_all(&self.path).with_context(|| format!("create {}", self.path.display()))
    }

    fn set(&self, name: &str, on: bool) -> Result<()> {
        let p = self.path.join(name);
        if on {
            std::fs::create_dir_all(&self.path).with_context(|| format!("create {}", self.path.display()))?;
            std::fs::write(&p, b"").with_context(|| format!("create {}", p.display()))
        } else {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("remove {}", p.display()))
                }
                _ => Ok(()),
            }
        }
    }
}
