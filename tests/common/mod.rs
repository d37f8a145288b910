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

/// One sample of node `api`'s `/metrics` (`name` with its labels, e.g.
/// `walship_snapshots_total{event="uploaded"}`); 0 when the series is absent.
pub async fn metric(api: &NodeClient, name: &str) -> anyhow::Result<f64> {
    use anyhow::Context as _;
    let text = match api.raw(walship::client::Method::GET, "/metrics", None).await {
        Reply::Success { value: (200, body), .. } => String::from_utf8_lossy(&body).into_owned(),
        other => anyhow::bail!("GET /metrics on {}: {other:?}", api.base_url()),
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')) {
            return v.trim().parse().with_context(|| format!("metric line {line:?}"));
        }
    }
    Ok(0.0)
}
