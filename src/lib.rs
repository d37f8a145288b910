#![warn(missing_docs)]
//! walship: a two-node key-value store replicated by Raft (openraft), with
//! ZooKeeper as a passive third voter that sits in every quorum.

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
