//! The soak's cluster: a `walship_testkit::Cluster` in the run dir with
//! everything the faults need:
//!
//! - a peer proxy in front of each node: node `i` listens on its own port
//!   and advertises its proxy's address, so the other node (peer RPC and
//!   forwarded client requests) reaches it only through the proxy, while
//!   the soak's clients go direct: cutting both peer proxies separates the
//!   nodes from each other and from nothing else;
//! - a ZooKeeper proxy per node between it and ZooKeeper (the node's `--zk`
//!   is its proxy), so one node's link to ZooKeeper can be cut while the
//!   other keeps its own. With an ensemble of our own (`--ensemble`), one
//!   per server per node: node `i`'s `--zk` lists its three proxies, and
//!   cutting its link cuts all three;
//! - a fault-hook directory per node (`WALSHIP_FAULT_DIR`, see `disk`).

use std::path::PathBuf;

use anyhow::Result;
use walship_testkit::Cluster;
use walship_testkit::Setup;

/// Flags every soak node gets: snapshots every few hundred entries, so a
/// reborn empty node goes through W's snapshot, not only its WAL.
pub const NODE_ARGS: &[&str] = &["--snapshot-every-entries", "400"];

pub struct ClusterConfig {
    pub run_dir: PathBuf,
    pub bin: PathBuf,
    /// An existing ZooKeeper; `None` starts a private one in `<run_dir>/zk`
    /// (or an ensemble, see `ensemble`).
    pub zk: Option<String>,
    /// Start a private ensemble of this many servers (`<run_dir>/zk1`..)
    /// instead of one.
    pub ensemble: Option<u32>,
    pub cluster: String,
    /// TLS mode: dev-ca certificates in `<run_dir>/certs`, clients on https.
    pub tls: bool,
    /// The nodes run this program instead of `bin node` (the ledger
    /// example, `--workload ledger`); `bin` is still the `walship` CLI.
    pub node_program: Option<PathBuf>,
}

/// Starts ZooKeeper (unless given), the proxies and both nodes; returns once
/// both answer `/health/live` (a leader is the caller's to wait for).
pub async fn start(cfg: &ClusterConfig) -> Result<Cluster> {
    let mut setup = Setup::run_dir(&cfg.run_dir, &cfg.cluster)
        .bin(&cfg.bin)
        .partitionable()
        .zk_cuttable()
        .fault_dirs()
        .node_args(NODE_ARGS);
    if cfg.tls {
        setup = setup.tls();
    }
    if let Some(program) = &cfg.node_program {
        setup = setup.node_program(program);
    }
    setup = match (&cfg.zk, cfg.ensemble) {
        (Some(addr), _) => setup.zk_external(addr),
        (None, Some(n)) => setup.zk_ensemble(n),
        (None, None) => setup,
    };
    setup.start_nodes().await
}
