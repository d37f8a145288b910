//! Integration-test harness: a private ZooKeeper and real `walship` processes on
//! free loopback ports, in a per-test directory that is kept when the test fails.
//!
//! Layout of a test directory (printed when kept):
//!
//! ```text
//! <tmp>/walship-<test>-XXXX/
//!     zk/            zoo.cfg, log4j.properties, data/, zk.log, zk.out
//!     node1/         node 1's --data-dir        node1.log  its stderr (RUST_LOG=info)
//!     node2/         node 2's --data-dir        node2.log
//! ```
//!
//! Everything here is safe to use from tests running in parallel: ports are never
//! handed out twice in one process, cluster names are unique, and processes are
//! only ever signalled through the `Child` handles that started them.
//!
//! Environment:
//! - `WALSHIP_KEEP_LOGS=1` keeps the test directory even when the test passes.
//! - `WALSHIP_TEST_DIR` puts test directories there instead of the system temp dir.
//! - `RUST_LOG` is passed to the nodes (default `info`).
//! - `ZK_CLASSPATH` overrides the ZooKeeper classpath (as in `zk/zk.sh`).

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod cluster;
pub mod dir;
pub mod node;
pub mod ports;
pub mod process;
pub mod wait;
pub mod writer;
pub mod zk;

pub use api::{Api, CasResult, ClientTls, Reply, Status};
pub use cluster::Cluster;
pub use dir::TestDir;
pub use node::Node;
pub use ports::free_port;
pub use wait::Deadline;
pub use writer::{Writer, WriterLog, WriterOptions};
pub use zk::Zk;
