//! Command-line interface: `walship node ...` runs a node. Flags double as
//! environment variables (`WALSHIP_*`), for containers and scripts.

pub mod client;
pub mod wal;

use std::ffi::OsString;

use std::path::PathBuf;

use clap::Args;
use clap::Parser;
use clap::Subcommand;

use crate::config::ConfigError;
use crate::config::FileConfig;
use crate::config::Layered;
use crate::config::NodeConfig;

/// The `walship` command line: one subcommand.
#[derive(Parser, Debug)]
#[command(
    name = "walship",
    version,
    about = "Two-node Raft key-value store with ZooKeeper as the witness",
    long_about = None
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
/// `walship`'s subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node.
    Node(NodeArgs),
    /// Read-only tools over what ZooKeeper holds for a cluster.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Client: put, get, delete and compare-and-set keys through the nodes
    /// of --endpoints.
    #[command(after_help = self::client::EXIT_CODES_HELP)]
    Kv(self::client::KvArgs),
    /// Client: send commands and queries to the nodes' application (a node
    /// embedding walship with its own state machine; see README, "Embedding
    /// walship"). Commands go in a client session: applied at most once.
    #[command(after_help = self::client::EXIT_CODES_HELP)]
    App(self::client::AppArgs),
    /// Client: both nodes and ZooKeeper at a glance (role, term, log indexes,
    /// lag behind the leader, last contact; W's log and vote with --zk and
    /// --cluster). Exit 0: all answered; 2: no such cluster; 3: something did
    /// not answer.
    #[command(after_help = self::client::EXIT_CODES_HELP)]
    Status(self::client::StatusArgs),
    /// Client: the nodes registered in ZooKeeper and the leader znode's
    /// holder (with --zk and --cluster), else what the endpoints say.
    #[command(after_help = self::client::EXIT_CODES_HELP)]
    Members(self::client::MembersArgs),
    /// Development certificates for TLS mode: a CA, nodes 1 and 2 of
    /// --cluster, a client and a ZooKeeper server, as PEM files in --dir.
    /// Exit 0: written; 2: bad flags, or files there already (without --force).
    DevCa(crate::devca::DevCaArgs),
    /// ZooKeeper's JAAS file for `walship node --zk-sasl`: the Server
    /// section with user `walship` and the password derived from
    /// --secret-file (ZooKeeper never sees the secret itself). Exit 0:
    /// printed (or written with --out); 2: bad flags or an unreadable secret.
    ZkJaas(crate::zksec::ZkJaasArgs),
    /// `walship <tool> ...` runs `walship-<tool>` (from beside this binary, or
    /// from PATH) with the rest of the command line, as cargo and git do: the
    /// soak (`walship soak`) and the benchmarks (`walship bench`) are their
    /// own binaries (tools/), so the node binary carries none of their code.
    #[command(external_subcommand)]
    External(Vec<OsString>),
}

/// `walship wal`'s subcommands.
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
    /// Cluster name (its state is under `/walship/<name>`).
    #[arg(long, env = "WALSHIP_CLUSTER", value_parser = parse_cluster)]
    pub cluster: String,
    /// The cluster's secret file, when its znodes are ACL'd (`walship node --secret-file`).
    #[arg(long, env = "WALSHIP_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// How to authenticate to ZooKeeper and whether over TLS.
    #[command(flatten)]
    pub security: ZkSecurityArgs,
}

/// How a tool reaches a ZooKeeper whose nodes use `--zk-sasl` or
/// `--zk-tls-*` (the same flags and variables as `walship node`).
#[derive(Args, Debug, Clone, Default)]
pub struct ZkSecurityArgs {
    /// Authenticate to ZooKeeper by SASL DIGEST-MD5 (as `walship node --zk-sasl`; needs --secret-file).
    #[arg(
        long,
        env = "WALSHIP_ZK_SASL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL",
        global = true
    )]
    pub zk_sasl: Option<bool>,
    /// ZooKeeper over TLS: the CA of ZooKeeper's certificate.
    #[arg(long, env = "WALSHIP_ZK_TLS_CA_FILE", global = true)]
    pub zk_tls_ca_file: Option<PathBuf>,
    /// ZooKeeper over TLS: a client certificate to present.
    #[arg(long, env = "WALSHIP_ZK_TLS_CERT_FILE", global = true, requires = "zk_tls_key_file")]
    pub zk_tls_cert_file: Option<PathBuf>,
    /// ZooKeeper over TLS: the private key of --zk-tls-cert-file.
    #[arg(long, env = "WALSHIP_ZK_TLS_KEY_FILE", global = true, requires = "zk_tls_cert_file")]
    pub zk_tls_key_file: Option<PathBuf>,
}

impl ZkSecurityArgs {
    /// The ZooKeeper credentials and TLS these flags and `auth` give.
    pub fn load(&self, auth: &crate::auth::Auth) -> Result<walship_zk::ZkSecurity, String> {
        let tls = self.zk_tls_ca_file.as_ref().map(|ca| walship_zk::ZkTlsFiles {
            ca: ca.clone(),
            identity: self.zk_tls_cert_file.clone().zip(self.zk_tls_key_file.clone()),
        });
        crate::zksec::load_security(auth, self.zk_sasl.unwrap_or(false), tls.as_ref())
    }
}

/// `walship wal inspect`'s flags.
#[derive(Args, Debug, Clone)]
pub struct WalInspectArgs {
    /// The ZooKeeper and cluster to read.
    #[command(flatten)]
    pub target: ZkTarget,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `walship wal verify`'s flags.
#[derive(Args, Debug, Clone)]
pub struct WalVerifyArgs {
    /// The ZooKeeper and cluster to read.
    #[command(flatten)]
    pub target: ZkTarget,
    /// The workload's history file (JSON Lines).
    #[arg(long)]
    pub history: PathBuf,
}

/// `walship node`'s flag/env layer. Every setting is an `Option`: one not
/// given here comes from the `--config` file, else its default (see
/// `crate::config`, which merges and checks them into a `NodeConfig`).
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// TOML file of settings (keys as `--print-config` prints them); flags and
    /// WALSHIP_* variables override it, it overrides the defaults.
    #[arg(long, env = "WALSHIP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (flags > env > file > defaults) as
    /// TOML, every setting included, and exit 0 without starting. A bad or
    /// missing setting exits 2, as it does at start.
    #[arg(long)]
    pub print_config: bool,
    /// This node's id: 1 or 2 (3 is ZooKeeper, the witness). Required.
    #[arg(long, env = "WALSHIP_ID")]
    pub id: Option<u64>,
    /// Cluster name; its state lives under `/walship/<name>` in ZooKeeper. Required.
    #[arg(long, env = "WALSHIP_CLUSTER")]
    pub cluster: Option<String>,
    /// ZooKeeper connect string, host:port[,host:port...]. Required.
    #[arg(long, env = "WALSHIP_ZK")]
    pub zk: Option<String>,
    /// Directory for the Raft log, vote, snapshots. Required.
    #[arg(long, env = "WALSHIP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// host:port for the HTTP API and peer RPC. Required.
    #[arg(long, env = "WALSHIP_LISTEN")]
    pub listen: Option<String>,
    /// host:port others use to reach this node, if not --listen.
    #[arg(long, env = "WALSHIP_ADVERTISE")]
    pub advertise: Option<String>,
    /// File with the cluster's shared secret (ZooKeeper ACL, peer RPC token).
    #[arg(long, env = "WALSHIP_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// File with the token clients must present (`Authorization: Bearer`).
    #[arg(long, env = "WALSHIP_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// ZooKeeper: authenticate with SASL DIGEST-MD5 (user `walship`,
    /// password derived from --secret-file; `walship zk-jaas` prints
    /// ZooKeeper's side) and ACL the cluster's znodes `sasl:walship`,
    /// instead of the clear-text digest scheme. Default false.
    #[arg(
        long,
        env = "WALSHIP_ZK_SASL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub zk_sasl: Option<bool>,
    /// ZooKeeper over TLS: PEM CA certificate ZooKeeper's server certificate
    /// must chain to; every --zk server is then dialled over TLS (its secure
    /// client port), except one written tcp://host:port.
    #[arg(long, env = "WALSHIP_ZK_TLS_CA_FILE")]
    pub zk_tls_ca_file: Option<PathBuf>,
    /// ZooKeeper over TLS: PEM client certificate to present (with
    /// --zk-tls-key-file), for a ZooKeeper with ssl.clientAuth=need.
    #[arg(long, env = "WALSHIP_ZK_TLS_CERT_FILE")]
    pub zk_tls_cert_file: Option<PathBuf>,
    /// ZooKeeper over TLS: PEM private key of --zk-tls-cert-file.
    #[arg(long, env = "WALSHIP_ZK_TLS_KEY_FILE")]
    pub zk_tls_key_file: Option<PathBuf>,
    /// TLS mode (with --tls-key-file and --tls-ca-file): PEM certificate
    /// naming this node as `node<id>.<cluster>.walship` (`walship dev-ca`).
    #[arg(long, env = "WALSHIP_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS mode: PEM private key of --tls-cert-file.
    #[arg(long, env = "WALSHIP_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// TLS mode: PEM CA certificate the other node's and clients' certificates
    /// must chain to.
    #[arg(long, env = "WALSHIP_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// TLS mode: the client API's key-value and admin routes also need a
    /// client certificate of this cluster (`client.<cluster>.walship`, or a
    /// node's); status, health and metrics stay open. Default false.
    #[arg(
        long,
        env = "WALSHIP_TLS_CLIENT_AUTH",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub tls_client_auth: Option<bool>,
    /// Leader heartbeat period; also openraft's per-RPC timeout to ZooKeeper,
    /// so it must stay above ZooKeeper's p99 multi latency. Default 200.
    #[arg(long, env = "WALSHIP_HEARTBEAT_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Silence from the leader for this long starts a failover; more than
    /// twice --heartbeat-interval-ms. Default 1000.
    #[arg(long, env = "WALSHIP_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// ZooKeeper session timeout asked for. Default 4000.
    #[arg(long, env = "WALSHIP_ZK_SESSION_TIMEOUT_MS")]
    pub zk_session_timeout_ms: Option<u64>,
    /// Bound on any single ZooKeeper call. Default 2000.
    #[arg(long, env = "WALSHIP_ZK_OP_TIMEOUT_MS")]
    pub zk_op_timeout_ms: Option<u64>,
    /// Build a snapshot (and ship it to ZooKeeper) every this many entries.
    /// Default 10000.
    #[arg(long, env = "WALSHIP_SNAPSHOT_EVERY")]
    pub snapshot_every_entries: Option<u64>,
    /// Also snapshot after this many bytes written to ZooKeeper's WAL. Default 64 MiB.
    #[arg(long, env = "WALSHIP_SNAPSHOT_EVERY_WAL_BYTES")]
    pub snapshot_every_wal_bytes: Option<u64>,
    /// Most entries in one AppendEntries (and so in one ZooKeeper multi
    /// batch). Default 2048.
    #[arg(long, env = "WALSHIP_MAX_PAYLOAD_ENTRIES")]
    pub max_payload_entries: Option<u64>,
    /// A write not confirmed within this is answered 504 (outcome unknown).
    /// Default 5000.
    #[arg(long, env = "WALSHIP_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    /// Group commit: client-request batches (Raft entries) in flight at once.
    /// Fewer means bigger batches, more means more pipelining. Default 1
    /// (measured, 100 B writes at 64 clients: 1 gave 18-19k writes/s, 2 gave
    /// 16-17k, 8 gave 12k: ZooKeeper takes one append at a time anyway, and
    /// every batch costs a Raft entry's overhead).
    #[arg(long, env = "WALSHIP_MAX_INFLIGHT_BATCHES")]
    pub max_inflight_batches: Option<usize>,
    /// Group commit: payload bytes per batch, 1024..=786432 (under
    /// ZooKeeper's 1 MiB request limit). Default 262144.
    #[arg(long, env = "WALSHIP_MAX_BATCH_BYTES")]
    pub max_batch_bytes: Option<usize>,
    /// Group commit: the longest a batch waits, µs, for as many writes as
    /// recent batches held (clients that wait for their answers come back
    /// together); never more than a recent commit round. Default 2000; 0: a
    /// batch takes what has arrived.
    #[arg(long, env = "WALSHIP_MAX_GROUP_WAIT_US")]
    pub max_group_wait_us: Option<u64>,
    /// Send the leader's entries to ZooKeeper as it appends them, several
    /// checked multis in flight on one session (default true; false: one
    /// append per ZooKeeper round trip, as openraft asks).
    #[arg(
        long,
        env = "WALSHIP_WITNESS_PIPELINE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub witness_pipeline: Option<bool>,
    /// When a local log append counts as done: `background` (after the
    /// write; a thread fdatasyncs right behind, and ZooKeeper's WAL holds
    /// every acknowledged write) or `per-append` (after its fdatasync too).
    /// Default background.
    #[arg(long, env = "WALSHIP_LOG_SYNC")]
    pub log_sync: Option<String>,
    /// Bytes of the newest log entries kept in memory (default 16 MiB);
    /// older ones are read back from the log files when a follower far
    /// behind asks for them.
    #[arg(long, env = "WALSHIP_LOG_CACHE_MAX_BYTES")]
    pub log_cache_max_bytes: Option<u64>,
    /// HTTP connections served at once; more are closed on accept. 0 (the
    /// default): half the process's descriptor limit, 64..=4096.
    #[arg(long, env = "WALSHIP_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// A request's head must arrive within this, and an idle connection is
    /// closed after it. Default 60000.
    #[arg(long, env = "WALSHIP_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// A whole request, body included, is answered within this (408 else);
    /// more than write_timeout_ms. Default 60000.
    #[arg(long, env = "WALSHIP_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// A request's body must have arrived within this of its head (408
    /// else). Default 10000.
    #[arg(long, env = "WALSHIP_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Largest snapshot accepted from the other node (413 above); must stay
    /// above the state's size. Default 1 GiB.
    #[arg(long, env = "WALSHIP_MAX_SNAPSHOT_BYTES")]
    pub max_snapshot_bytes: Option<u64>,
    /// If the local log, state file or snapshot is unreadable (corrupt), move
    /// raft/ and snapshot/ into `<data-dir>/discarded-<unix_ms>/` and rebuild
    /// this node from ZooKeeper, instead of refusing to start. Meant for one
    /// start after such an error. `--rebuild-from-witness` alone means true.
    #[arg(
        long,
        env = "WALSHIP_REBUILD_FROM_WITNESS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub rebuild_from_witness: Option<bool>,
}

fn parse_cluster(s: &str) -> Result<String, String> {
    crate::config::check_cluster_name(s)?;
    Ok(s.to_string())
}

impl NodeArgs {
    /// The configuration to run with: these flags and env vars over the
    /// `--config` file over the defaults, every value checked.
    pub fn into_config(self) -> Result<NodeConfig, crate::config::ConfigError> {
        resolve(&self)
    }
}

/// clap's help and version as clap prints them; any other error as one line
/// on stderr, `<command>: <what is wrong> (see <command> --help)`, and exit
/// status 2. Shared by `walship`'s subcommands and the tools (walship-soak,
/// walship-bench).
pub fn exit_on_bad_flags(command: &str, e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    // The error without clap's usage block: its lines up to the first blank one, as one.
    let text = e.to_string();
    let first = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "{command}: {} (see {command} --help)",
        first.trim_start_matches("error: ")
    );
    std::process::exit(2)
}

/// The configuration `walship node` runs with: flags and env over the file
/// (`--config`, `WALSHIP_CONFIG`) over the defaults, checked.
pub fn resolve(args: &NodeArgs) -> Result<NodeConfig, ConfigError> {
    let file = match &args.config {
        Some(path) => crate::config::load_file(path)?,
        None => FileConfig::default(),
    };
    let layered = Layered::new(args_layer(args), file, args.config.clone());
    crate::config::check(&layered)
}

/// The flag/env layer: what clap found in flags and `WALSHIP_*` variables.
fn args_layer(a: &NodeArgs) -> FileConfig {
    FileConfig {
        id: a.id,
        cluster: a.cluster.clone(),
        zk: a.zk.clone(),
        data_dir: a.data_dir.clone(),
        listen: a.listen.clone(),
        advertise: a.advertise.clone(),
        heartbeat_interval_ms: a.heartbeat_interval_ms,
        election_timeout_ms: a.election_timeout_ms,
        zk_session_timeout_ms: a.zk_session_timeout_ms,
        zk_op_timeout_ms: a.zk_op_timeout_ms,
        snapshot_every_entries: a.snapshot_every_entries,
        snapshot_every_wal_bytes: a.snapshot_every_wal_bytes,
        max_payload_entries: a.max_payload_entries,
        write_timeout_ms: a.write_timeout_ms,
        max_inflight_batches: a.max_inflight_batches,
        max_batch_bytes: a.max_batch_bytes,
        max_group_wait_us: a.max_group_wait_us,
        witness_pipeline: a.witness_pipeline,
        log_sync: a.log_sync.clone(),
        log_cache_max_bytes: a.log_cache_max_bytes,
        secret_file: a.secret_file.clone(),
        api_token_file: a.api_token_file.clone(),
        zk_sasl: a.zk_sasl,
        zk_tls_ca_file: a.zk_tls_ca_file.clone(),
        zk_tls_cert_file: a.zk_tls_cert_file.clone(),
        zk_tls_key_file: a.zk_tls_key_file.clone(),
        tls_cert_file: a.tls_cert_file.clone(),
        tls_key_file: a.tls_key_file.clone(),
        tls_ca_file: a.tls_ca_file.clone(),
        tls_client_auth: a.tls_client_auth,
        max_connections: a.max_connections,
        header_read_timeout_ms: a.header_read_timeout_ms,
        request_timeout_ms: a.request_timeout_ms,
        body_read_timeout_ms: a.body_read_timeout_ms,
        max_snapshot_bytes: a.max_snapshot_bytes,
        rebuild_from_witness: a.rebuild_from_witness,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::CommandFactory;
    use clap::Parser;

    use super::*;
    use crate::config::parse_file;
    use crate::config::SETTINGS;

    const REQUIRED: &str =
        "id = 1\ncluster = \"c\"\nzk = \"127.0.0.1:2181\"\ndata_dir = \"/d\"\nlisten = \"127.0.0.1:8081\"\n";

    #[test]
    fn settings_table_matches_the_flags() {
        let cli = Cli::command();
        let node = cli.find_subcommand("node").expect("node subcommand");
        let mut flags: Vec<(String, String)> = node
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "config" | "print_config" | "help"))
            .map(|a| {
                (
                    a.get_id().to_string(),
                    a.get_env()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                )
            })
            .collect();
        flags.sort();
        let mut table: Vec<(String, String)> = SETTINGS
            .iter()
            .map(|s| (s.key.to_string(), s.env.to_string()))
            .collect();
        table.sort();
        assert_eq!(
            flags, table,
            "NodeArgs and config::SETTINGS must list the same settings and env vars"
        );
        let mut fields = FileConfig::defaults().over(parse_file(REQUIRED, Path::new("w.toml")).unwrap());
        // The optional settings without a default, set so every key shows.
        fields.advertise = Some("a:1".into());
        fields.secret_file = Some("/s".into());
        fields.api_token_file = Some("/t".into());
        fields.tls_cert_file = Some("/c".into());
        fields.tls_key_file = Some("/k".into());
        fields.tls_ca_file = Some("/ca".into());
        fields.zk_tls_ca_file = Some("/zca".into());
        fields.zk_tls_cert_file = Some("/zc".into());
        fields.zk_tls_key_file = Some("/zk".into());
        assert_eq!(fields.keys().len(), SETTINGS.len());
    }

    #[test]
    fn node_flags_are_optional_so_the_file_can_fill_them() {
        let cli = Cli::try_parse_from(["walship", "node", "--print-config"]).expect("no flag is required");
        let crate::cli::Command::Node(args) = cli.command else {
            panic!("node")
        };
        assert!(args.print_config);
    }
}
