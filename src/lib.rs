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
