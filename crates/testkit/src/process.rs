//! Child processes of ours (ZooKeeper servers, `walship node`s), and the files
//! they write.
//!
//! A process is signalled only through the `Child` that started it and only
//! while it is unreaped, so its pid cannot have been recycled for someone
//! else's process. Dropping a [`Proc`] kills and reaps it.

use std::fs::File;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

use crate::wait::Deadline;

/// How long a process may take to exit after SIGKILL, or after SIGTERM before
/// `terminate` sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A child process of ours, signalled by pid only while unreaped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    frozen: bool,
}

impl Proc {
    /// Spawns `cmd`, named `name` in messages. With `own_group`, in a process
    /// group of its own: a Ctrl-C on the terminal then reaches only the tool
    /// that started it, which stops it by pid; without, it shares the caller's
    /// (a Ctrl-C on `cargo test` reaches it too).
    pub fn spawn(name: String, cmd: &mut Command, own_group: bool) -> std::io::Result<Proc> {
        if own_group {
            cmd.process_group(0);
        }
        let child = cmd.spawn()?;
        Ok(Proc {
            name,
            child: Some(child),
            frozen: false,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Alive (not exited, whether frozen or not).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Sends `sig` if the child is alive and unreaped.
    pub fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("{} is not running", self.name))?;
        if let Some(status) = child.try_wait().context("try_wait")? {
            bail!("{} (pid {}) already exited ({status})", self.name, child.id());
        }
        // SAFETY: kill(2) on the pid of our own unreaped child.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        if rc != 0 {
            bail!("kill({}, {sig}): {}", child.id(), std::io::Error::last_os_error());
        }
        match sig {
            libc::SIGSTOP => self.frozen = true,
            libc::SIGCONT => self.frozen = false,
            _ => {}
        }
        Ok(())
    }

    /// Waits for the exit (polling: the runtime keeps running other tasks) and
    /// reaps; an error if it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let name = self.name.clone();
        let child = self.child.as_mut().with_context(|| format!("{name} is not running"))?;
        let deadline = Deadline::after(timeout, format!("{name} (pid {}) to exit", child.id()));
        loop {
            if let Some(status) = child.try_wait().context("try_wait")? {
                self.child = None;
                self.frozen = false;
                return Ok(status);
            }
            deadline.tick(&"still running").await?;
        }
    }

    /// SIGKILL (a crash) and reap. An error if it had already exited by
    /// itself (a crash of its own is not to be hidden by ours).
    pub async fn kill9(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL)?;
        self.wait_exit(STOP_TIMEOUT).await
    }

    /// SIGTERM (SIGCONT first if frozen) and wait `timeout` for the exit: its
    /// status. An error, after SIGKILL, if it is still running by then.
    pub async fn sigterm(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if self.frozen {
            self.signal(libc::SIGCONT)?;
        }
        self.signal(libc::SIGTERM)?;
        match self.wait_exit(timeout).await {
            Ok(status) => Ok(status),
            Err(e) => {
                let _ = self.signal(libc::SIGKILL);
                let _ = self.wait_exit(STOP_TIMEOUT).await;
                Err(e)
            }
        }
    }

    /// Stops it whatever its state: nothing if it is gone, else SIGTERM
    /// (SIGCONT first if frozen) and SIGKILL if it lingers.
    pub async fn terminate(&mut self) -> Result<()> {
        if !self.is_running() {
            self.child = None;
            self.frozen = false;
            return Ok(());
        }
        if self.frozen {
            let _ = self.signal(libc::SIGCONT);
        }
        let _ = self.signal(libc::SIGTERM);
        if self.wait_exit(STOP_TIMEOUT).await.is_err() {
            let _ = self.signal(libc::SIGKILL);
            self.wait_exit(STOP_TIMEOUT).await?;
        }
        Ok(())
    }

    /// The exit status, if it exited by itself (and reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.frozen = false;
        Some(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Opens `path` for appending a process's output, with a banner line first.
pub fn append_log(path: &Path, banner: &str) -> Result<File> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    writeln!(f, "=== walship testkit: {banner} ===")?;
    Ok(f)
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

/// Resolves on SIGINT or SIGTERM, with the signal's name.
pub async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::signal;
    use tokio::signal::unix::SignalKind;
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The `walship` binary to start nodes from when none is given: the one cargo
/// built beside the running executable (`target/<profile>/`), or beside its
/// parent directory for a test binary in `target/<profile>/deps/` (cargo
/// builds it for the product's integration tests).
pub fn walship_binary_beside_this_one() -> std::result::Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = me.parent().ok_or("this executable has no directory")?;
    for candidate in [dir.join("walship"), dir.join("../walship")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "no walship binary beside {}: build it first (cargo build, or cargo build --release) or pass --bin",
        me.display()
    ))
}

/// The example `name` cargo built beside this executable's profile dir
/// (`target/<profile>/examples/<name>`; `cargo test --all-targets` builds
/// the examples, `cargo build --example <name>` one of them).
pub fn example_binary_beside_this_one(name: &str) -> std::result::Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = me.parent().ok_or("this executable has no directory")?;
    for candidate in [dir.join("examples").join(name), dir.join("../examples").join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "no example {name} beside {}: build it first (cargo build --workspace --examples)",
        me.display()
    ))
}
