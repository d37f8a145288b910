//! Command-line interface: `walship node ...` runs a node. Flags double as
//! environment variables (`WALSHIP_*`), for containers and scripts.

use std::path::PathBuf;

use clap::Args;
use clap::Parser;
use clap::Subcommand;

use crate::node::NodeConfig;

#[derive(Parser, Debug)]
#[command(
    name = "walship",
    version,
    about = "Two-node Raft key-value store with ZooKeeper as the witness"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node.
    Node(NodeArgs),
    /// Read-only tools over what ZooKeeper holds for a cluster.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Die-and-reborn soak: ZooKeeper and both nodes under a concurrent workload
    /// while seeded faults cycle; checks that no acknowledged write is lost and
    /// that every key's history is linearizable. Exit 0: pass; 1: a violation,
    /// stall or crash; 2: bad flags or unreachable --zk; 130/143: interrupted.
    Soak(crate::soak::SoakArgs),
    /// Benchmarks: write/read throughput and latency against ZooKeeper-direct and
    /// etcd, failover and rebirth times, ZooKeeper footprint; a table, a JSON
    /// report and SVG plots. Exit 0: completed; 1: stopped on an error; 2: bad
    /// flags; 130/143: interrupted.
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Show W's record, snapshot and WAL segments with CRC verdicts and any gap.
    /// Exit 0: all good; 1: corruption or a gap found; 2: bad usage,
    /// ZooKeeper unreachable or no such cluster.
    Inspect(WalInspectArgs),
    /// Confirm from ZooKeeper alone that every acknowledged write of a history
    /// file (JSON Lines, see `walship::history`) holds its last acknowledged value.
    /// Exit 0: all present; 1: a write missing or wrong, or W corrupt; 2: bad
    /// usage or history, ZooKeeper unreachable or no such cluster.
    Verify(WalVerifyArgs),
}

/// Which ZooKeeper and which cluster a `walship wal` command reads.
#[derive(Args, Debug, Clone)]
pub struct ZkTarget {
    /// ZooKeeper connect string, host:port[,host:port...].
    #[arg(long, env = "WALSHIP_ZK")]
    pub zk: String,
    /// Cluster name (its state is under /walship/<name>).
    #[arg(long, env = "WALSHIP_CLUSTER", value_parser = parse_cluster)]
    pub cluster: String,
}

#[derive(Args, Debug, Clone)]
pub struct WalInspectArgs {
    #[command(flatten)]
    pub target: ZkTarget,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct WalVerifyArgs {
    #[command(flatten)]
    pub target: ZkTarget,
    /// The workload's history file (JSON Lines).
    #[arg(long)]
    pub history: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's id: 1 or 2 (3 is ZooKeeper, the witness).
    #[arg(long, env = "WALSHIP_ID", value_parser = clap::value_parser!(u64).range(1..=2))]
    pub id: u64,
    /// Cluster name; its state lives under /walship/<name> in ZooKeeper.
    #[arg(long, env = "WALSHIP_CLUSTER", value_parser = parse_cluster)]
    pub cluster: String,
    /// ZooKeeper connect string, host:port[,host:port...].
    #[arg(long, env = "WALSHIP_ZK")]
    pub zk: String,
    /// Directory for the Raft log, vote, snapshots.
    #[arg(long, env = "WALSHIP_DATA_DIR")]
    pub data_dir: PathBuf,
    /// host:port for the HTTP API and peer RPC.
    #[arg(long, env = "WALSHIP_LISTEN")]
    pub listen: String,
    /// host:port others use to reach this node, if not --listen.
    #[arg(long, env = "WALSHIP_ADVERTISE")]
    pub advertise: Option<String>,
    /// Leader heartbeat period; also openraft's per-RPC timeout to ZooKeeper,
    /// so it must stay above ZooKeeper's p99 multi latency.
    #[arg(long, env = "WALSHIP_HEARTBEAT_MS", default_value_t = 200)]
    pub heartbeat_interval_ms: u64,
    /// Silence from the leader for this long starts a failover.
    #[arg(long, env = "WALSHIP_ELECTION_TIMEOUT_MS", default_value_t = 1000)]
    pub election_timeout_ms: u64,
    #[arg(long, env = "WALSHIP_ZK_SESSION_TIMEOUT_MS", default_value_t = 4000)]
    pub zk_session_timeout_ms: u64,
    /// Bound on any single ZooKeeper call.
    #[arg(long, env = "WALSHIP_ZK_OP_TIMEOUT_MS", default_value_t = 2000)]
    pub zk_op_timeout_ms: u64,
    /// Build a snapshot (and ship it to ZooKeeper) every this many entries.
    #[arg(long, env = "WALSHIP_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every_entries: u64,
    /// Most entries in one AppendEntries (and so in one ZooKeeper multi batch).
    #[arg(long, env = "WALSHIP_MAX_PAYLOAD_ENTRIES", default_value_t = 2048)]
    pub max_payload_entries: u64,
    /// A write not confirmed within this is answered 504 (outcome unknown).
    #[arg(long, env = "WALSHIP_WRITE_TIMEOUT_MS", default_value_t = 5000)]
    pub write_timeout_ms: u64,
    /// Group commit: client-request batches (Raft entries) in flight at once.
    /// Fewer means bigger batches, more means more pipelining.
    #[arg(long, env = "WALSHIP_MAX_INFLIGHT_BATCHES", default_value_t = 4)]
    pub max_inflight_batches: usize,
    /// Group commit: payload bytes per batch; under ZooKeeper's 1 MiB request limit.
    #[arg(long, env = "WALSHIP_MAX_BATCH_BYTES", default_value_t = 256 * 1024)]
    pub max_batch_bytes: usize,
}

fn parse_cluster(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || s.starts_with('.')
    {
        return Err("cluster name must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'".into());
    }
    Ok(s.to_string())
}

impl NodeArgs {
    pub fn into_config(self) -> Result<NodeConfig, String> {
        if self.election_timeout_ms <= 2 * self.heartbeat_interval_ms {
            return Err(format!(
                "--election-timeout-ms ({}) must be more than twice --heartbeat-interval-ms ({})",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.max_inflight_batches == 0 || !(1024..=768 * 1024).contains(&self.max_batch_bytes) {
            return Err("--max-inflight-batches must be positive and --max-batch-bytes within 1024..=786432".into());
        }
        if self.heartbeat_interval_ms == 0 || self.snapshot_every_entries == 0 || self.max_payload_entries == 0 {
            return Err(
                "--heartbeat-interval-ms, --snapshot-every-entries and --max-payload-entries must be positive".into(),
            );
        }
        Ok(NodeConfig {
            id: self.id,
            cluster: self.cluster,
            zk: self.zk,
            data_dir: self.data_dir,
            listen: self.listen,
            advertise: self.advertise,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_ms: self.election_timeout_ms,
            zk_session_timeout_ms: self.zk_session_timeout_ms,
            zk_op_timeout_ms: self.zk_op_timeout_ms,
            snapshot_every_entries: self.snapshot_every_entries,
            max_payload_entries: self.max_payload_entries,
            write_timeout_ms: self.write_timeout_ms,
            max_inflight_batches: self.max_inflight_batches,
            max_batch_bytes: self.max_batch_bytes,
        })
    }
}
