//! The soak's disk faults, through the storage layer's fault hooks
//! (`walship::storage::fault`, switched by `walship_testkit::FaultDir`):
//! `storage::fault::power_loss` cuts a stopped node's data dir back to the
//! durable state its fault dir recorded (optionally leaving a torn last
//! record), which is what a power cut after `kill -9` would have left on a
//! disk.
//!
//! The soak turns `nosync` on for a window before the kill, so the
//! unsynced tail is long enough for a power loss to lose entries (with
//! `log_sync = background` the node reports an append done before it is
//! synced; the design's claim is that ZooKeeper holds every acknowledged
//! write anyway).

use std::path::Path;

use anyhow::Context;
use anyhow::Result;
use walship_testkit::FaultDir;

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
