//! A pluggable state machine for embedding programs.
//!
//! By default a node applies the log to its key-value map (the HTTP KV API).
//! An embedder can supply its own [`Application`] instead, with
//! [`Node::start_with_app`](crate::node::Node::start_with_app): commands proposed with [`Node::propose`](crate::node::Node::propose) travel
//! through the same group-commit proposer, Raft log, ZooKeeper witness and
//! crc-checked snapshot files as key-value writes do, and every node applies
//! them in log order to its own copy of the application.
//!
//! ```no_run
//! # async fn demo(cfg: walship::config::NodeConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use walship::app::Application;
//! use walship::node::Node;
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Application for Counter {
//!     fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, String> {
//!         self.0 += command.len() as u64;
//!         Ok(self.0.to_le_bytes().to_vec())
//!     }
//!     fn snapshot(&self) -> walship::app::SnapshotWriter {
//!         let total = self.0;
//!         Box::new(move |out| out.write_all(&total.to_le_bytes()))
//!     }
//!     fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
//!         let mut b = [0u8; 8];
//!         snapshot.read_exact(&mut b).map_err(|e| e.to_string())?;
//!         self.0 = u64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//!
//! let node = Node::start_with_app(cfg, Counter::default()).await?;
//! let mut events = node.subscribe();
//! node.run_background().await?;
//! // ... once this node leads (see `Event::LeaderChanged`):
//! let (index, result) = node.propose(b"+1".to_vec()).await?;
//! let value = node.read_app(|c: &Counter| c.0);
//! # let _ = (index, result, value, events.try_recv());
//! # Ok(()) }
//! ```
//!
//! The rules the application must keep are on [`Application`] (the trait
//! lives in `walship-storage`, whose state machine drives it; this module
//! re-exports it and holds the node's side: starting, proposing, reading).
//!
//! The application's state lives in memory, is written to disk only in
//! snapshots (`snapshot/current.snap`, under the same magic, length and
//! CRC32 framing as the key-value map's) and shipped to ZooKeeper like them;
//! after a restart the node restores the snapshot and re-applies the log
//! after it. The key-value HTTP API keeps working on an application node
//! (its map is snapshotted alongside the application's bytes).

pub use walship_storage::Application;
pub use walship_storage::SnapshotWriter;

/// The largest command [`Node::propose`](crate::node::Node::propose) accepts (as a key-value value:
/// well under ZooKeeper's 1 MiB request limit, which every entry must fit).
pub const MAX_COMMAND_BYTES: usize = crate::types::MAX_VALUE_BYTES;
