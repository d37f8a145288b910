//! Local durable storage of a node: the Raft log and vote ([`LogStore`]), the
//! key-value state machine and its snapshots ([`StateMachine`]), with the
//! embedder's [`Application`] it may drive, and the data dir's identity
//! ([`NodeMeta`]). It depends on `walship-types` only; the `walship` library
//! re-exports it as `walship::storage`. Its counters are [`StorageMetrics`],
//! handed to [`open_local`] by the node that registers them.
//!
//! Layout under `data_dir` (every byte read back is CRC-checked; damage other
//! than a torn log tail is a start-up error naming the file, which
//! `--rebuild-from-witness` turns into a rebuild from W, see `rebuild.rs`;
//! `fault.rs` holds the test-only fault hooks):
//!
//! ```text
//! node.meta                        cluster, cluster_id, node id (checked file)
//! raft/LOCK                        flock held while a LogStore is open
//! raft/state                       vote, committed id, purged id (checked file, atomic replace)
//! raft/log/<first_index:020>.log   log segments: [len u32][crc32 u32][bincode Entry]...
//! snapshot/current.snap            [magic][meta record][data blob] (atomic replace)
//! snapshot/incoming-*.snap         snapshots being built or received (removed at open)
//! discarded-<unix_ms>/             raft/ and snapshot/ moved aside by --rebuild-from-witness
//! ```

mod adopt;
mod application;
mod error;
pub mod fault;
mod flusher;
mod frame;
mod log_store;
mod meta;
mod metrics;
mod rebuild;
mod segments;
mod sessions;
mod snapshot;
mod state_machine;
#[cfg(test)]
mod tests;

pub use adopt::install_snapshot_offline;
pub use adopt::Adopted;
pub use adopt::ReusedLogId;
pub use application::Application;
pub use application::SnapshotWriter;
pub use error::StoreError;
pub use error::REBUILD_HINT;
pub use error::WIPE_HINT;
pub use log_store::AppendHook;
pub use log_store::LogStore;
pub use log_store::LogSync;
pub use log_store::LOG_CACHE_MAX_BYTES_DEFAULT;
pub use log_store::SEGMENT_MAX_BYTES_DEFAULT;
pub use meta::meta_path;
pub use meta::open_or_init_meta;
pub use meta::read_meta;
pub use meta::write_meta;
pub use meta::NodeMeta;
pub use metrics::StorageMetrics;
pub use rebuild::open_local;
pub use sessions::Sessions;
pub use snapshot::decode_data as decode_snapshot_data;
pub use snapshot::decode_data_file as decode_snapshot_data_file;
pub use snapshot::encode_data as encode_snapshot_data;
pub use snapshot::KvMap;
pub use snapshot::SmContent;
pub use state_machine::apply_request;
pub use state_machine::session_id;
pub use state_machine::CurrentSnapshot;
pub use state_machine::StateMachine;
