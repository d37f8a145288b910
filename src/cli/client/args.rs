//! The client's flags: `walship kv put|get|del|cas`, `walship status`,
//! `walship members`, and the options they share (`--endpoints`, `--json`,
//! `--timeout-ms`; `--zk` and `--cluster` for the ZooKeeper view).

use std::ffi::OsString;

use clap::Args;
use clap::Subcommand;

/// Options every client command takes, before or after the subcommand.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Nodes to ask, host:port[,host:port...]; tried in order until one
    /// answers (a node forwards writes and linearizable reads to the leader).
    #[arg(
        long,
        env = "WALSHIP_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:8081,127.0.0.1:8082",
        global = true
    )]
    pub endpoints: Vec<String>,
    /// One JSON document on stdout instead of text (errors stay one line on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this long, all endpoints included; a write still in
    /// flight then is an unknown outcome (exit 4).
    #[arg(long, env = "WALSHIP_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
    /// File holding the API token (as given to the nodes' --api-token-file),
    /// sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "WALSHIP_API_TOKEN_FILE", global = true)]
    pub api_token_file: Option<std::path::PathBuf>,
    /// Speak https to the endpoints (nodes in TLS mode), checking their
    /// certificates against this PEM CA and the endpoint's host.
    #[arg(long, env = "WALSHIP_TLS_CA_FILE", global = true)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// With --tls-ca-file: a PEM client certificate to present (needed by
    /// nodes run with --tls-client-auth), with --tls-key-file.
    #[arg(long, env = "WALSHIP_TLS_CERT_FILE", global = true, requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The private key of --tls-cert-file.
    #[arg(long, env = "WALSHIP_TLS_KEY_FILE", global = true, requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,
}

/// ZooKeeper, for the commands that can also read the cluster's znodes.
#[derive(Args, Debug, Clone)]
pub struct ZkOpts {
    /// ZooKeeper connect string; with --cluster, also shows ZooKeeper's view.
    #[arg(long, env = "WALSHIP_ZK", global = true)]
    pub zk: Option<String>,
    /// Cluster name (its znodes are under `/walship/<name>`).
    #[arg(long, env = "WALSHIP_CLUSTER", global = true)]
    pub cluster: Option<String>,
    /// The cluster's shared secret (as given to its nodes), needed to read
    /// the znodes of a cluster run with access control.
    #[arg(long, env = "WALSHIP_SECRET_FILE", global = true)]
    pub secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub security: crate::cli::ZkSecurityArgs,
}

/// `walship kv ...`
#[derive(Args, Debug, Clone)]
pub struct KvArgs {
    /// Which operation.
    #[command(subcommand)]
    pub command: KvCommand,
    /// Which nodes, and how to reach them.
    #[command(flatten)]
    pub opts: ClientOpts,
}

/// `walship kv`'s operations.
#[derive(Subcommand, Debug, Clone)]
pub enum KvCommand {
    /// Write a value. Prints the log index it was committed at.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Put {
        /// The key (UTF-8, at most 1024 bytes).
        key: String,
        /// The value, as raw bytes; `-` reads it from stdin.
        value: OsString,
    },
    /// Read a value (linearizable: through the leader, confirmed by a quorum).
    /// Prints the raw bytes (plus a newline on a terminal). Exit 1: not found.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Get {
        /// The key (UTF-8, at most 1024 bytes).
        key: String,
        /// Read the answering node's local copy instead: faster, may be behind.
        #[arg(long)]
        stale: bool,
    },
    /// Delete a key (deleting an absent key succeeds).
    #[command(after_help = super::EXIT_CODES_HELP)]
    Del {
        /// The key (UTF-8, at most 1024 bytes).
        key: String,
    },
    /// Compare and set: only if the key holds --expect (or is absent, with
    /// --expect-absent), set it to --value (or delete it, with --delete).
    /// Exit 1: not applied; the current value is printed.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Cas(CasArgs),
}

/// `walship kv cas`'s arguments.
#[derive(Args, Debug, Clone)]
pub struct CasArgs {
    /// The key (UTF-8, at most 1024 bytes).
    pub key: String,
    /// The value the key must hold now.
    #[arg(long, required_unless_present = "expect_absent", conflicts_with = "expect_absent")]
    pub expect: Option<String>,
    /// The key must be absent now.
    #[arg(long)]
    pub expect_absent: bool,
    /// The new value.
    #[arg(long, required_unless_present = "delete", conflicts_with = "delete")]
    pub value: Option<String>,
    /// Delete the key instead of setting it.
    #[arg(long)]
    pub delete: bool,
}

/// `walship app ...`
#[derive(Args, Debug, Clone)]
pub struct AppArgs {
    /// Command or query.
    #[command(subcommand)]
    pub command: AppCommand,
    /// Which nodes, and how to reach them.
    #[command(flatten)]
    pub opts: ClientOpts,
}

/// `walship app`'s operations.
#[derive(Subcommand, Debug, Clone)]
pub enum AppCommand {
    /// Send one command to the nodes' application, in a client session:
    /// retried (across --endpoints, until --timeout-ms) and applied at most
    /// once. Prints what the application returned. Exit 1: the application
    /// rejected it (nothing changed).
    #[command(after_help = super::EXIT_CODES_HELP)]
    Command {
        /// The command, as raw bytes; `-` reads it from stdin.
        command: OsString,
    },
    /// Ask the application (linearizable: answered by the leader after a
    /// quorum confirmed it). Prints the answer. Exit 1: the application
    /// refused the query.
    #[command(after_help = super::EXIT_CODES_HELP)]
    Query {
        /// The query, as raw bytes; `-` reads it from stdin.
        query: OsString,
        /// Ask the answering node's local copy instead: faster, may be behind.
        #[arg(long)]
        stale: bool,
    },
}

/// `walship status`
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Which nodes, and how to reach them.
    #[command(flatten)]
    pub opts: ClientOpts,
    /// ZooKeeper, for W's view (optional).
    #[command(flatten)]
    pub zk: ZkOpts,
}

/// `walship members`
#[derive(Args, Debug, Clone)]
pub struct MembersArgs {
    /// Which nodes, and how to reach them.
    #[command(flatten)]
    pub opts: ClientOpts,
    /// ZooKeeper, for the registered members and the leader znode (optional).
    #[command(flatten)]
    pub zk: ZkOpts,
}
