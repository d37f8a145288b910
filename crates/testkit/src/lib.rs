//! walship's test harness, shared by the integration tests (`tests/`), the
//! soak (`tools/soak`) and the bench (`tools/bench`): real processes on free
//! loopback ports, and the clusters built of them.
//!
//! - [`Cluster`] (`cluster`): ZooKeeper and nodes 1 and 2 as [`Setup`] says
//!   (a test's or a tool's; fault proxies, fault dirs, TLS, a secured
//!   ZooKeeper, an ensemble), and the waits on them (a ready leader, caught-up
//!   nodes, a ZooKeeper quorum);
//! - [`Node`] (`node`): one `walship node` process, restartable, reached
//!   through `walship::client::NodeClient`;
//! - [`ZkServer`] (`zk`): a private ZooKeeper server or ensemble, as `zk/zk.sh`;
//! - [`Proc`] (`process`): a child process signalled by pid only while unreaped;
//! - [`FaultProxy`] (`faultproxy`): a TCP proxy that cuts a link on demand;
//! - [`FaultDir`] (`disk`): a node's storage fault hooks;
//! - [`TestDir`] (`dir`), [`free_port`] (`ports`), [`Deadline`] (`wait`),
//!   [`Writer`] (`writer`, a background writer that records every outcome).
//!
//! Everything here is safe to use from tests running in parallel: ports are
//! never handed out twice in one process, cluster names are unique, and
//! processes are only ever signalled through the handles that started them.
//! Waits poll against a deadline; nothing sleeps as synchronisation.
//!
//! Environment:
//! - `WALSHIP_KEEP_LOGS=1` keeps a test's directory even when the test passes
//!   (a failing test's is always kept, and its path printed).
//! - `WALSHIP_TEST_DIR` puts test directories there instead of the system temp dir.
//! - `RUST_LOG` is passed to the nodes (default `info`).
//! - `ZK_CLASSPATH` overrides the ZooKeeper classpath (as in `zk/zk.sh`), `JAVA`
//!   the java command.
//!
//! It depends on the `walship` library for the typed client, the fault hooks'
//! file names, dev-ca and ZooKeeper's TLS: the tools and the tests link
//! `walship` anyway, so a product change rebuilds nothing more than before.

pub mod cluster;
pub mod dir;
pub mod disk;
pub mod faultproxy;
pub mod node;
pub mod ports;
pub mod process;
pub mod wait;
pub mod writer;
pub mod zk;

pub use cluster::Cluster;
pub use cluster::ClusterContext;
pub use cluster::Polling;
pub use cluster::Setup;
pub use dir::prepare_run_dir;
pub use dir::TestDir;
pub use disk::FaultDir;
pub use faultproxy::CutMode;
pub use faultproxy::FaultProxy;
pub use node::Node;
pub use node::NodeSpec;
pub use ports::free_addr;
pub use ports::free_port;
pub use process::Proc;
pub use wait::Deadline;
pub use writer::Writer;
pub use writer::WriterLog;
pub use writer::WriterOptions;
pub use zk::ZkMode;
pub use zk::ZkOptions;
pub use zk::ZkServer;
