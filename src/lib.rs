//! walship: a two-node key-value store replicated by Raft (openraft), with
//! ZooKeeper as a passive third voter that sits in every quorum; and a
//! library to replicate a state machine of one's own the same way.
//!
//! The embedding API, in the order one meets it:
//!
//! - [`config::NodeConfig::builder`]: a node's configuration in code, every
//!   setting at `walship node`'s default until a setter changes it, checked
//!   by `build()` as the flags are ([`config::ConfigError`] names the setting).
//! - [`app::Application`]: the state machine an embedder brings (validate,
//!   apply, query, snapshot, restore).
//! - [`start`]: binds the listener, starts the node with the application
//!   and serves the HTTP API (client routes, forwarding to the leader,
//!   tokens, TLS); [`RunningNode`] stops it. A [`node::StartError`] says
//!   whether trying again may help ([`node::StartError::is_retryable`]).
//! - [`events::Events`]: the node's lifecycle events (leader changes, peer
//!   down and up, adoption, snapshots).
//! - [`client::NodeClient`] and [`client::Session`]: the typed HTTP client;
//!   a session's commands are applied at most once however often they are
//!   retried. [`client::Reply::is_retryable`] and
//!   [`client::Reply::outcome_unknown`] tell what a failure allows.
//! - [`proposer::ProposeError`]: what a proposal made in-process came to
//!   ([`proposer::ProposeError::is_retryable`]).
//!
//! A node of a replicated counter, and a client of it:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::Read;
//! use walship::app::{Application, SnapshotWriter};
//! use walship::client::{ClientOptions, NodeClient, Session};
//! use walship::config::NodeConfig;
//! use walship::events::Events;
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Application for Counter {
//!     fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, String> {
//!         self.0 += command.len() as u64;
//!         Ok(self.0.to_le_bytes().to_vec())
//!     }
//!     fn query(&self, _query: &[u8]) -> Result<Vec<u8>, String> {
//!         Ok(self.0.to_le_bytes().to_vec())
//!     }
//!     fn snapshot(&self) -> SnapshotWriter {
//!         let total = self.0;
//!         Box::new(move |out| out.write_all(&total.to_le_bytes()))
//!     }
//!     fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), String> {
//!         let mut b = [0u8; 8];
//!         snapshot.read_exact(&mut b).map_err(|e| e.to_string())?;
//!         self.0 = u64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//!
//! // Node 1 (node 2 runs the same with id 2 and its own address).
//! let cfg = NodeConfig::builder(1, "counter", "zk:2181", "/var/lib/counter", "0.0.0.0:8081")
//!     .advertise("node1:8081")
//!     .build()?;
//! let node = match walship::start(cfg, Some(Box::new(Counter::default())), Events::new()).await {
//!     Ok(node) => node,
//!     // ZooKeeper unreachable, the port still held, ...: may start if tried again.
//!     Err(e) if e.is_retryable() => return Err(format!("not started yet: {e}").into()),
//!     // Bad configuration, unreadable or foreign data: needs an operator.
//!     Err(e) => return Err(e.into()),
//! };
//!
//! // A client, anywhere: either node answers (a follower forwards), and a
//! // session's command is applied at most once however often it is retried.
//! let opts = ClientOptions::default();
//! let session = Session::new(vec![NodeClient::new("node1:8081", &opts)?, NodeClient::new("node2:8081", &opts)?]);
//! match session.command(b"+1".to_vec()).await {
//!     Ok(applied) => println!("applied at log index {}", applied.index),
//!     Err(e) if e.outcome_unknown() => println!("applied at most once, maybe not: {e}"),
//!     Err(e) => println!("not applied: {e}"),
//! }
//! let total = session.query(Vec::new()).await?; // linearizable
//! # let _ = total;
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Cargo features:
//!
//! - `cli` (default): the command line, `walship::cli` (clap's argument types and
//!   the client commands) and the `walship` binary. An embedder that runs
//!   nodes from code can turn it off (`default-features = false`); no clap
//!   type is then in the API.
//! - `router`: `api::router`, the HTTP API as an axum `Router`, for
//!   serving it on a server of one's own. Without it no axum type is in
//!   the API; [`start`] serves the same routes.
#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod auth;
#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod config;
pub mod devca;
pub mod events;
mod failover;
pub mod history;
pub mod metrics;
// Node-to-node transport internals (peer RPC bodies, the member directory):
// public for the integration tests that decode its wire format, not part of
// the embedding API, so left out of the documentation.
#[doc(hidden)]
pub mod network;
pub mod node;

pub mod proposer;
pub mod running;
mod serve;
pub use walship_storage as storage;
pub mod tls;
pub use walship_types as types;
pub use walship_witness as witness;
pub mod zksec;

pub use running::start;
pub use running::RunningNode;
