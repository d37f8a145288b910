//! The soak's disk faults, through the storage layer's fault hooks
//! (`walship::storage::fault`): a node started with
//! `WALSHIP_FAULT_DIR=<dir>` blocks every local log write and sync while
//! `<dir>/stall` exists (a frozen disk), skips fdatasync while
//! `<dir>/nosync` exists, and records in `<dir>/synced` what is durable;
//! `storage::fault::power_loss` then cuts a stopped node's data dir back to
//! that durable state (optionally leaving a torn last record), which is
//! what a power cut after `kill -9` would have left on a disk.
//!
//! The soak turns `nosync` on for a window before the kill, so the
//! unsynced tail is long enough for a power loss to lose entries (with
//! `log_sync = background` the node reports an append done before it is
//! synced; the design's claim is that ZooKeeper holds every acknowledged
//! write anyway).

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use anyhow::Result;

/// One node's fault-hook directory.
#[derive(Clone, Debug)]
pub struct FaultDir {
    path: PathBuf,
}

const STALL: &str = "stall";
const NOSYNC: &str = "nosync";

impl FaultDir {
    pub fn new(path: PathBuf) -> FaultDir {
        FaultDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// While on, the node's local log writes and syncs block.
    pub fn set_stall(&self, on: bool) -> Result<()> {
        self.set(STALL, on)
    }

    /// While on, the node skips fdatasync (what it writes is not durable).
    pub fn set_nosync(&self, on: bool) -> Result<()> {
        self.set(NOSYNC, on)
    }

    pub fn stalled(&self) -> bool {
        self.path.join(STALL).exists()
    }

    /// Both switches off (a stopped soak must not leave a node hanging).
    pub fn clear(&self) -> Result<()> {
        self.set(STALL, false)?;
        self.set(NOSYNC, false)
    }

    /// After a wipe: nothing of the old disk's durability record is left.
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

/// What a power loss did, in one line, and how many log records it dropped.
pub struct PowerLoss {
    pub text: String,
    pub records_dropped: u64,
}

/// Power loss of a stopped node: its data dir cut back to what its fault
/// dir says was durable (`torn`: the first record not durable left half
/// written).
pub async fn power_loss(data_dir: &Path, fault_dir: &FaultDir, torn: bool) -> Result<PowerLoss> {
    let data = data_dir.to_path_buf();
    let fault = fault_dir.path().to_path_buf();
    let report = tokio::task::spawn_blocking(move || walship::storage::fault::power_loss(&data, &fault, torn))
        .await
        .context("power loss task")?
        .with_context(|| format!("power loss of {}", data_dir.display()))?;
    let mut text = format!(
        "power loss dropped {} records ({} bytes; {} segments removed, {} cut)",
        report.records_dropped,
        report.bytes_dropped,
        report.segments_removed.len(),
        report.segments_cut.len()
    );
    if let Some((seg, at)) = &report.torn {
        let name = seg
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        text.push_str(&format!(", torn record left at {name}+{at}"));
    }
    if report.trace.is_none() {
        text.push_str(", nothing had been synced");
    }
    Ok(PowerLoss {
        text,
        records_dropped: report.records_dropped,
    })
}
