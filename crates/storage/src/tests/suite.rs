//! openraft's own conformance suite, run on the on-disk store.

use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use tempfile::TempDir;
use walship_types::StorageError;
use walship_types::TypeConfig;

use super::super::LogStore;
use super::super::LogSync;
use super::super::StateMachine;

/// The sync mode, and the in-memory cache's budget (`None`: the default).
struct DiskBuilder(LogSync, Option<u64>);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for DiskBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e))?;
        // Tiny segments so the suite's truncates and purges cross files.
        let log = LogStore::open_with(dir.path(), 64, self.0).await?;
        if let Some(max_bytes) = self.1 {
            log.set_cache_max_bytes(max_bytes);
        }
        let sm = StateMachine::open(dir.path()).await?;
        Ok((dir, log, sm))
    }
}

#[test]
fn conformance_suite_background_sync() {
    if let Err(e) = Suite::test_all(DiskBuilder(LogSync::Background, None)) {
        panic!("openraft's storage suite failed: {e}");
    }
}

#[test]
fn conformance_suite_per_append_sync() {
    if let Err(e) = Suite::test_all(DiskBuilder(LogSync::PerAppend, None)) {
        panic!("openraft's storage suite failed: {e}");
    }
}

/// Every entry but the last read back from the segment files.
#[test]
fn conformance_suite_nothing_cached() {
    for sync in [LogSync::Background, LogSync::PerAppend] {
        if let Err(e) = Suite::test_all(DiskBuilder(sync, Some(0))) {
            panic!("openraft's storage suite failed ({sync:?}, no cache): {e}");
        }
    }
}
