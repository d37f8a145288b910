//! The per-test directory: deleted when the test passes, kept (and its path
//! printed) when it panics or when `WALSHIP_KEEP_LOGS` is set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::TempDir;

pub struct TestDir {
    /// `None` once kept.
    dir: Option<TempDir>,
    path: PathBuf,
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
        Ok(TestDir { dir: Some(dir), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        let keep_asked = std::env::var("WALSHIP_KEEP_LOGS").is_ok_and(|v| !v.is_empty() && v != "0");
        if std::thread::panicking() || keep_asked {
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
