//! Where a cluster's files go.
//!
//! A test's [`TestDir`] is a fresh temporary directory named after the test:
//! deleted when the test passes, kept (and its path printed) when it panics,
//! when `keep_on_drop` was called (e.g. by `ClusterContext::in_cluster` on an
//! error, so tests that fail by returning `Err` keep their logs too), or when
//! `WALSHIP_KEEP_LOGS` is set. `WALSHIP_TEST_DIR` puts them there instead of
//! the system temp dir.
//!
//! A tool's run dir (`--run-dir`) is never deleted: [`prepare_run_dir`]
//! clears what a previous run left in it, and [`TestDir::run_dir`] wraps it.

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use anyhow::Context;
use anyhow::Result;
use tempfile::TempDir;

pub struct TestDir {
    /// `None` once kept, and for a run dir.
    dir: Option<TempDir>,
    path: PathBuf,
    keep_requested: AtomicBool,
}

impl TestDir {
    /// A fresh directory named after the test, under `$WALSHIP_TEST_DIR` or the
    /// system temp dir.
    pub fn new(test_name: &str) -> Result<TestDir> {
        let base = std::env::var_os("WALSHIP_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("walship-{}-", sanitize(test_name)))
            .tempdir_in(&base)
            .with_context(|| format!("create a temp dir in {}", base.display()))?;
        let path = dir.path().to_path_buf();
        Ok(TestDir {
            dir: Some(dir),
            path,
            keep_requested: AtomicBool::new(false),
        })
    }

    /// A tool's run dir (see `prepare_run_dir`): used as it is, never deleted.
    pub fn run_dir(path: &Path) -> TestDir {
        TestDir {
            dir: None,
            path: path.to_path_buf(),
            keep_requested: AtomicBool::new(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the directory when it is dropped (the test is failing by an `Err`).
    pub fn keep_on_drop(&self) {
        self.keep_requested.store(true, Ordering::Relaxed);
    }

    /// Wrap a test step: on `Err`, keep the directory and name it in the error.
    pub fn keep_on_error<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.keep_on_drop();
        }
        result.with_context(|| format!("test files in {}", self.path.display()))
    }

    /// Keep the directory whatever the outcome.
    pub fn keep(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if self.dir.is_none() {
            return;
        }
        let keep_asked = std::env::var("WALSHIP_KEEP_LOGS").is_ok_and(|v| !v.is_empty() && v != "0");
        if std::thread::panicking() || keep_asked || self.keep_requested.load(Ordering::Relaxed) {
            self.keep();
            eprintln!("walship test files kept in {}", self.path.display());
        }
    }
}

/// Lower-case letters, digits and '-' only (test names become cluster names and
/// file names).
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-');
    if s.is_empty() {
        "test".to_string()
    } else {
        s.chars().take(40).collect()
    }
}

/// Creates a tool's run dir and wipes what a previous run left in it: the
/// `subdirs` and the nodes' logs. A `--run-dir` error is one line.
pub fn prepare_run_dir(dir: &Path, subdirs: &[&str]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--run-dir {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("--run-dir {}: {e}", dir.display()))?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if dir.parent().is_none() || Some(&dir) == home.as_ref() {
        return Err(format!(
            "refusing to use {} as the run dir (parts of it are wiped)",
            dir.display()
        ));
    }
    for sub in subdirs {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| format!("cannot clear {}: {e}", p.display()))?;
        }
    }
    for log in ["node1.log", "node2.log"] {
        let _ = std::fs::remove_file(dir.join(log));
    }
    Ok(dir)
}
