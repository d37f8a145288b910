//! The integration tests' harness is `walship_testkit` (crates/testkit, shared
//! with the soak and the bench): a private ZooKeeper and real `walship node`
//! processes on free loopback ports, in a per-test directory that is kept
//! (and its path printed) when the test fails. This module only puts it, and
//! the product's typed client, within each test binary's reach as `common::`.
//!
//! Environment: `WALSHIP_KEEP_LOGS=1` keeps the test directory even when the
//! test passes; `WALSHIP_TEST_DIR` puts test directories there instead of the
//! system temp dir; `RUST_LOG` is passed to the nodes (default `info`);
//! `ZK_CLASSPATH` overrides the ZooKeeper classpath (as in `zk/zk.sh`).

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub use walship::client::CasResult;
pub use walship::client::NodeClient;
pub use walship::client::Reply;
pub use walship::client::Status;
pub use walship_testkit::*;

/// The binary under test, built by cargo for the integration tests (the one
/// the harness starts nodes from).
pub const WALSHIP_BIN: &str = env!("CARGO_BIN_EXE_walship");
