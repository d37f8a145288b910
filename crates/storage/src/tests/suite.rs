//! openraft's own conformance suite, run on the on-disk store.

use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use tempfile::TempDir;
use walship_types::StorageError;
use walship_types::TypeConfig;

use super::super::LogStore;
use super::super::LogSync;
use super::super::StateMachine;

struct DiskBuilder(LogSync);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for DiskBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e))?;
        // Tiny segments so the suite's truncates and purges cross files.
        let log = LogStore::open_with(dir.path(), 64, self.0).await?;
        let sm = StateMachine::open(dir.path()).await?;
        Ok((dir, log, sm))
    }
}

#[test]
fn conformance_suite_background_sync() {
    if let Err(e) = Suite::test_all(DiskBuilder(LogSync::Background)) {
        panic!("openraft's storage suite failed: {e}");
    }
}

#[test]
fn conformance_suite_per_append_sync() {
    if let Err(e) = Suite::test_all(DiskBuilder(LogSync::PerAppend)) {
        panic!("openraft's storage suite failed: {e}");
    }
}
