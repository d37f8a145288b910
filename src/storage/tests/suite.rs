//! openraft's own conformance suite, run on the on-disk store.

use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use tempfile::TempDir;

use super::super::LogStore;
use super::super::StateMachine;
use crate::types::StorageError;
use crate::types::TypeConfig;

struct DiskBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for DiskBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e))?;
        // Tiny segments so the suite's truncates and purges cross files.
        let log = LogStore::open_with_segment_max_bytes(dir.path(), 64).await?;
        let sm = StateMachine::open(dir.path()).await?;
        Ok((dir, log, sm))
    }
}

#[test]
fn conformance_suite() {
    if let Err(e) = Suite::test_all(DiskBuilder) {
        panic!("openraft's storage suite failed: {e}");
    }
}
