//! Signals and exit waits for child processes we started ourselves.
//!
//! Signals are only sent to a `Child` that has not been reaped, so its pid cannot
//! have been recycled for someone else's process. They go through `sh -c kill`
//! (a shell builtin) to avoid a libc dependency.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::wait::Deadline;

/// Send `signal` ("TERM", "STOP", "CONT", "KILL", ...) to a live child.
pub fn signal(child: &mut Child, signal: &str) -> Result<()> {
    if let Some(status) = child.try_wait().context("try_wait")? {
        bail!("pid {} already exited ({status}); not sending SIG{signal}", child.id());
    }
    let pid = child.id().to_string();
    let out = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", signal, &pid])
        .stdin(Stdio::null())
        .output()
        .context("run sh -c kill")?;
    if !out.status.success() {
        bail!(
            "kill -s {signal} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Wait for a child to exit, polling (the runtime keeps running other tasks).
pub async fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> Result<ExitStatus> {
    let deadline = Deadline::after(timeout, format!("{what} (pid {}) to exit", child.id()));
    loop {
        if let Some(status) = child.try_wait().context("try_wait")? {
            return Ok(status);
        }
        deadline.tick(&"still running").await?;
    }
}

/// SIGKILL and reap, synchronously (for `Drop`).
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The last `lines` lines of a text file from byte `from` on ("" if unreadable).
pub fn tail(path: &Path, from: u64, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[from..]);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Current size of a file (0 if it does not exist).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Did the output since byte `from` say the listen address was taken?
pub fn says_addr_in_use(path: &Path, from: u64) -> bool {
    let text = tail(path, from, 200).to_ascii_lowercase();
    text.contains("address already in use") || text.contains("addrinuse") || text.contains("os error 98")
}
