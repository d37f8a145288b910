//! `walship node`'s configuration: three layers merged into one
//! [`NodeConfig`], then checked.
//!
//! Precedence, highest first: a flag, its `WALSHIP_*` environment variable
//! (both read by clap into `walship::cli::NodeArgs` (feature `cli`), whose settings are all `Option`s so
//! that an absent flag lets the lower layers show through), the TOML file of
//! `--config` / `WALSHIP_CONFIG` ([`FileConfig`]), the defaults
//! ([`FileConfig::defaults`]).
//!
//! Every bad value is refused before anything starts, with a message naming
//! the setting, its value and where it came from; unknown keys and type
//! errors in the file name the key and the line. `walship node --print-config`
//! prints the merged result ([`to_toml`]) and exits: its output is a valid
//! `--config` file that gives the same configuration back.
//!
//! Adding a setting: a field in `NodeConfig` (below), an `Option` field in
//! `NodeArgs` (cli.rs, with its `env`), a line in the `settings!` call below
//! with its default and documentation, and a rule in `check` if it has one.
//! The unit tests fail if `NodeArgs` and this table disagree.

use std::fmt;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use crate::types::NodeId;

/// Why a configuration was refused: one line, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Everything a node is told: by `walship node`'s flags, file and
/// environment, or in code by [`NodeConfig::builder`]. Plain data, checked
/// when built; each field is the setting of the same name in [`SETTINGS`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id: 1 or 2 (3 is ZooKeeper, the witness).
    pub id: NodeId,
    /// The cluster's name; its state lives under `/walship/<cluster>` in ZooKeeper.
    pub cluster: String,
    /// ZooKeeper's connect string, `host:port[,host:port...]` (an optional
    /// chroot after a `/`).
    pub zk: String,
    /// Directory of the local Raft log, vote and snapshots.
    pub data_dir: PathBuf,
    /// `host:port` the HTTP API and peer RPC listen on.
    pub listen: String,
    /// Address peers and clients use to reach this node (defaults to `listen`).
    pub advertise: Option<String>,
    /// Leader heartbeat period, ms; also openraft's per-RPC timeout to ZooKeeper.
    pub heartbeat_interval_ms: u64,
    /// No word from the leader for this long means it is gone.
    pub election_timeout_ms: u64,
    /// ZooKeeper session timeout asked for, ms (ZooKeeper clamps it).
    pub zk_session_timeout_ms: u64,
    /// Bound on any single ZooKeeper call, ms.
    pub zk_op_timeout_ms: u64,
    /// Build a snapshot (and ship it to ZooKeeper) every this many entries.
    pub snapshot_every_entries: u64,
    /// Also snapshot once this many bytes went to W's WAL since the last one.
    pub snapshot_every_wal_bytes: u64,
    /// Most entries in one AppendEntries, and so in one ZooKeeper multi.
    pub max_payload_entries: u64,
    /// How long a client write may wait for its commit before it is a 504.
    pub write_timeout_ms: u64,
    /// Group commit: entries proposed concurrently, and payload bytes per entry.
    pub max_inflight_batches: usize,
    /// Group commit: payload bytes per batch (one Raft entry).
    pub max_batch_bytes: usize,
    /// Group commit: the longest a batch waits for the rest of its group, µs.
    pub max_group_wait_us: u64,
    /// Appends to ZooKeeper pipelined (several checked multis in flight).
    pub witness_pipeline: bool,
    /// When a local log append counts as done (storage/flusher.rs).
    pub log_sync: crate::storage::LogSync,
    /// Bytes of the newest log entries kept in memory; older ones are read
    /// back from the log files when asked for.
    pub log_cache_max_bytes: u64,
    /// Access control (see `crate::auth`): the cluster's shared secret
    /// (ZooKeeper ACLs, node-to-node RPC token); None: off.
    pub secret_file: Option<PathBuf>,
    /// The token clients send as `Authorization: Bearer`; None: the client
    /// API is open.
    pub api_token_file: Option<PathBuf>,
    /// An unreadable local log or snapshot is moved aside and rebuilt from W
    /// instead of refused (`storage::open_local`).
    pub rebuild_from_witness: bool,
    /// The HTTP listener's bounds: connections served at once (0: half the
    /// process's descriptor limit, 64..=4096).
    pub max_connections: usize,
    /// A request's head must arrive within this, ms; also the idle-connection timeout.
    pub header_read_timeout_ms: u64,
    /// A whole request is answered within this, ms (408 else).
    pub request_timeout_ms: u64,
    /// A request's body must arrive within this of its head, ms.
    pub body_read_timeout_ms: u64,
    /// Largest snapshot body accepted from the other node, bytes.
    pub max_snapshot_bytes: u64,
    /// TLS mode (see `crate::tls`); None: plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// TLS mode: client routes need a client certificate of this cluster.
    pub tls_client_auth: bool,
    /// ZooKeeper: SASL DIGEST-MD5 instead of the digest scheme (needs
    /// `secret_file`); see `crate::zksec`.
    pub zk_sasl: bool,
    /// ZooKeeper over TLS; None: plain TCP.
    pub zk_tls: Option<walship_zk::ZkTlsFiles>,
}

impl NodeConfig {
    /// The configuration of node `id` with every optional setting at its
    /// default (as `walship node --print-config` shows them), checked as
    /// `walship node` checks its flags: for embedders, who then change
    /// fields as they need (`NodeConfig` is plain data). Errors name the
    /// setting and why, as [`NodeConfigBuilder::build`]'s do.
    pub fn with_defaults(
        id: NodeId,
        cluster: &str,
        zk: &str,
        data_dir: impl Into<PathBuf>,
        listen: &str,
    ) -> Result<NodeConfig, ConfigError> {
        NodeConfig::builder(id, cluster, zk, data_dir, listen).build()
    }

    /// A builder of node `id`'s configuration: the five settings that have
    /// no default are its arguments (`zk`: ZooKeeper's connect string,
    /// `host:port[,host:port...]`; `listen`: the `host:port` of the HTTP API
    /// and peer RPC), every other setting is at `walship node`'s default
    /// until a setter changes it. [`NodeConfigBuilder::build`] checks the
    /// result as `walship node` checks its flags.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), walship::config::ConfigError> {
    /// use walship::config::NodeConfig;
    /// let cfg = NodeConfig::builder(1, "ledger", "zk1:2181,zk2:2181", "/var/lib/ledger", "0.0.0.0:8081")
    ///     .advertise("node1.example:8081")
    ///     .election_timeout_ms(1500)
    ///     .api_token_file("/etc/ledger/api-token")
    ///     .build()?;
    /// # let _ = cfg; Ok(()) }
    /// ```
    pub fn builder(
        id: NodeId,
        cluster: &str,
        zk: &str,
        data_dir: impl Into<PathBuf>,
        listen: &str,
    ) -> NodeConfigBuilder {
        NodeConfigBuilder {
            given: FileConfig {
                id: Some(id),
                cluster: Some(cluster.to_string()),
                zk: Some(zk.to_string()),
                data_dir: Some(data_dir.into()),
                listen: Some(listen.to_string()),
                ..FileConfig::default()
            },
        }
    }
}

/// Builds a [`NodeConfig`] in code (from [`NodeConfig::builder`]): a setter
/// per commonly changed setting, named as the TOML key and the flag
/// (`--election-timeout-ms` is `.election_timeout_ms(..)`), durations in
/// milliseconds as the names say. Nothing is checked before
/// [`NodeConfigBuilder::build`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct NodeConfigBuilder {
    /// The settings given so far (a layer over the defaults, as the flags are).
    given: FileConfig,
}

/// A setter per plain setting: `$key` takes `$ty` (converted by `$conv`).
macro_rules! builder_setters {
    ($( $(#[$doc:meta])* $key:ident : $ty:ty; )*) => {
        impl NodeConfigBuilder {
            $(
                $(#[$doc])*
                pub fn $key(mut self, value: $ty) -> NodeConfigBuilder {
                    self.given.$key = Some(value.into());
                    self
                }
            )*
        }
    };
}

builder_setters! {
    /// `host:port` the other node and clients reach this node by, when not
    /// `listen` (a wildcard or NATed listen address).
    advertise: impl Into<String>;
    /// Leader heartbeat period, ms (default 200); also the per-RPC timeout to
    /// ZooKeeper, so keep it above ZooKeeper's p99 multi latency.
    heartbeat_interval_ms: u64;
    /// Silence from the leader for this long (ms, default 1000) starts a
    /// failover; must be more than twice `heartbeat_interval_ms`.
    election_timeout_ms: u64;
    /// ZooKeeper session timeout asked for, ms (default 4000; ZooKeeper clamps it).
    zk_session_timeout_ms: u64;
    /// Bound on any single ZooKeeper call, ms (default 2000).
    zk_op_timeout_ms: u64;
    /// A write not confirmed within this (ms, default 5000) is answered 504,
    /// outcome unknown; must stay below `request_timeout_ms`.
    write_timeout_ms: u64;
    /// Build a snapshot (and ship it to ZooKeeper) every this many entries
    /// (default 10 000).
    snapshot_every_entries: u64;
    /// Also snapshot once this many bytes went to ZooKeeper's WAL since the
    /// last snapshot (default 64 MiB; 1 MiB..=1 TiB).
    snapshot_every_wal_bytes: u64;
    /// Group commit: client-request batches (Raft entries) in flight at once
    /// (default 1, at most 1024).
    max_inflight_batches: usize;
    /// Group commit: payload bytes per batch (default 256 KiB, 1 KiB..=768 KiB).
    max_batch_bytes: usize;
    /// Group commit: the longest a batch waits for as many writes as recent
    /// batches held, µs, and never more than a recent commit round
    /// (default 2000; 0: never waits).
    max_group_wait_us: u64;
    /// Send the leader's entries to ZooKeeper as it appends them, several
    /// checked multis in flight (default true).
    witness_pipeline: bool;
    /// Most entries in one AppendEntries, and so in one ZooKeeper multi
    /// (default 2048).
    max_payload_entries: u64;
    /// Bytes of the newest log entries kept in memory (default 16 MiB,
    /// 0..=1 TiB); older ones are read back from the log files.
    log_cache_max_bytes: u64;
    /// File holding the cluster's shared secret: ZooKeeper ACLs and the
    /// token on node-to-node RPC (default: none, no access control). Read
    /// by `build`, which fails if it is missing or empty.
    secret_file: impl Into<PathBuf>;
    /// File holding the token clients must send as `Authorization: Bearer`
    /// (default: none, the client API is open). Read by `build`.
    api_token_file: impl Into<PathBuf>;
    /// Authenticate to ZooKeeper by SASL DIGEST-MD5 instead of the digest
    /// scheme (default false; needs `secret_file`).
    zk_sasl: bool;
    /// HTTP connections served at once (default 0: half the process's
    /// descriptor limit, 64..=4096).
    max_connections: usize;
    /// A request's head must arrive within this, ms (default 60 000); also
    /// the idle-connection timeout.
    header_read_timeout_ms: u64;
    /// A whole request is answered within this, ms (default 60 000; 408
    /// else); must be more than `write_timeout_ms`.
    request_timeout_ms: u64;
    /// A request's body must arrive within this of its head, ms (default 10 000).
    body_read_timeout_ms: u64;
    /// Largest snapshot accepted from the other node, bytes (default 1 GiB;
    /// must stay above the state's size).
    max_snapshot_bytes: u64;
    /// Move an unreadable local log or snapshot aside and rebuild from
    /// ZooKeeper instead of refusing to start (default false; meant for one
    /// start after such an error).
    rebuild_from_witness: bool;
}

impl NodeConfigBuilder {
    /// When a local log append counts as done (default
    /// [`LogSync::Background`](crate::storage::LogSync::Background)).
    pub fn log_sync(mut self, sync: crate::storage::LogSync) -> NodeConfigBuilder {
        let text = match sync {
            crate::storage::LogSync::Background => "background",
            crate::storage::LogSync::PerAppend => "per-append",
        };
        self.given.log_sync = Some(text.to_string());
        self
    }

    /// TLS mode: this node's PEM certificate (naming it
    /// `node<id>.<cluster>.walship`) and key, and the CA the other node's and
    /// clients' certificates must chain to. The listener then speaks only
    /// TLS. `build` reads and checks the files.
    pub fn tls(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
        ca_file: impl Into<PathBuf>,
    ) -> NodeConfigBuilder {
        self.given.tls_cert_file = Some(cert_file.into());
        self.given.tls_key_file = Some(key_file.into());
        self.given.tls_ca_file = Some(ca_file.into());
        self
    }

    /// TLS mode: the key-value, application and admin routes also need a
    /// client certificate of this cluster (default false; needs [`tls`](Self::tls)).
    pub fn tls_client_auth(mut self, on: bool) -> NodeConfigBuilder {
        self.given.tls_client_auth = Some(on);
        self
    }

    /// ZooKeeper over TLS: the PEM CA ZooKeeper's certificate must chain to,
    /// and optionally a client certificate and key to present to it.
    pub fn zk_tls(mut self, ca_file: impl Into<PathBuf>, identity: Option<(PathBuf, PathBuf)>) -> NodeConfigBuilder {
        self.given.zk_tls_ca_file = Some(ca_file.into());
        let (cert, key) = identity.unzip();
        self.given.zk_tls_cert_file = cert;
        self.given.zk_tls_key_file = key;
        self
    }

    /// The configuration, checked as `walship node` checks its flags (ranges,
    /// the timeouts' relations, the id, the files it names). An error names
    /// the setting, its value and why, in one line.
    pub fn build(self) -> Result<NodeConfig, ConfigError> {
        check(&Layered::in_code(self.given))
    }
}

/// One setting's documentation: the TOML key (also `NodeConfig`'s field; the
/// flag is the key with dashes), its environment variable and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The TOML key, which is also `NodeConfig`'s field (`election_timeout_ms`).
    pub key: &'static str,
    /// The environment variable that sets it (`WALSHIP_ELECTION_TIMEOUT_MS`).
    pub env: &'static str,
    /// True when there is no default: the node does not start without it.
    pub required: bool,
    /// What it does, one paragraph (`--print-config` prints it above the key).
    pub doc: &'static str,
}

impl Setting {
    /// The command-line flag: the key with dashes (`--election-timeout-ms`).
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }
}

/// Declares [`FileConfig`] (every setting optional, unknown keys refused),
/// its merge, and [`SETTINGS`] (the table behind messages and
/// `--print-config`), from one list so they cannot drift apart.
macro_rules! settings {
    ($( $key:ident : $ty:ty = $default:expr, $env:literal, $doc:literal; )*) => {
        /// One layer of settings, in the shape of the TOML file: a value
        /// per setting given in that layer.
        #[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $(
                #[doc = $doc]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $key: Option<$ty>,
            )*
        }

        impl FileConfig {
            /// The defaults; `None` for the settings that have none.
            pub fn defaults() -> FileConfig {
                FileConfig { $( $key: $default, )* }
            }

            /// `self` where it has a value, else `below`.
            pub fn over(self, below: FileConfig) -> FileConfig {
                FileConfig { $( $key: self.$key.or(below.$key), )* }
            }

            /// The keys this layer sets.
            pub fn keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $( if self.$key.is_some() { keys.push(stringify!($key)); } )*
                keys
            }
        }

        /// Every setting, in `--print-config` order.
        pub const SETTINGS: &[Setting] = &[
            $( Setting {
                key: stringify!($key),
                env: $env,
                required: settings!(@required $default),
                doc: $doc,
            }, )*
        ];
    };
    (@required None) => { true };
    (@required $default:expr) => { false };
}

settings! {
    id: u64 = None, "WALSHIP_ID",
        "This node's id: 1 or 2 (3 is ZooKeeper, the witness).";
    cluster: String = None, "WALSHIP_CLUSTER",
        "Cluster name; its state lives under `/walship/<cluster>` in ZooKeeper.";
    zk: String = None, "WALSHIP_ZK",
        "ZooKeeper connect string, host:port[,host:port...].";
    data_dir: PathBuf = None, "WALSHIP_DATA_DIR",
        "Directory for the Raft log, vote and snapshots.";
    listen: String = None, "WALSHIP_LISTEN",
        "host:port for the HTTP API and peer RPC.";
    advertise: String = None, "WALSHIP_ADVERTISE",
        "host:port others use to reach this node; unset: the listen address.";
    heartbeat_interval_ms: u64 = Some(200), "WALSHIP_HEARTBEAT_MS",
        "Leader heartbeat period; also openraft's per-RPC timeout to ZooKeeper, so above ZooKeeper's p99 multi latency.";
    election_timeout_ms: u64 = Some(1000), "WALSHIP_ELECTION_TIMEOUT_MS",
        "Silence from the leader for this long starts a failover; more than twice heartbeat_interval_ms.";
    zk_session_timeout_ms: u64 = Some(4000), "WALSHIP_ZK_SESSION_TIMEOUT_MS",
        "ZooKeeper session timeout asked for (ZooKeeper clamps it to its own bounds).";
    zk_op_timeout_ms: u64 = Some(2000), "WALSHIP_ZK_OP_TIMEOUT_MS",
        "Bound on any single ZooKeeper call.";
    snapshot_every_entries: u64 = Some(10_000), "WALSHIP_SNAPSHOT_EVERY",
        "Build a snapshot (and ship it to ZooKeeper) every this many entries.";
    snapshot_every_wal_bytes: u64 = Some(64 << 20), "WALSHIP_SNAPSHOT_EVERY_WAL_BYTES",
        "Also snapshot once the leader has written this many bytes to ZooKeeper's WAL since the last snapshot (bounds ZooKeeper's memory for big values).";
    max_payload_entries: u64 = Some(2048), "WALSHIP_MAX_PAYLOAD_ENTRIES",
        "Most entries in one AppendEntries (and so in one ZooKeeper multi).";
    write_timeout_ms: u64 = Some(5000), "WALSHIP_WRITE_TIMEOUT_MS",
        "A write not confirmed within this is answered 504 (outcome unknown).";
    max_inflight_batches: usize = Some(1), "WALSHIP_MAX_INFLIGHT_BATCHES",
        "Group commit: client-request batches (Raft entries) in flight at once.";
    max_batch_bytes: usize = Some(256 * 1024), "WALSHIP_MAX_BATCH_BYTES",
        "Group commit: payload bytes per batch, 1024..=786432 (under ZooKeeper's 1 MiB request limit).";
    max_group_wait_us: u64 = Some(2000), "WALSHIP_MAX_GROUP_WAIT_US",
        "Group commit: the longest a batch waits for as many writes as recent batches held (clients that wait for their answers come back together), never more than a recent commit round; 0: a batch takes what has arrived.";
    witness_pipeline: bool = Some(true), "WALSHIP_WITNESS_PIPELINE",
        "Send the leader's entries to ZooKeeper as it appends them, several checked multis in flight on one session, instead of one append per round trip.";
    log_cache_max_bytes: u64 = Some(crate::storage::LOG_CACHE_MAX_BYTES_DEFAULT), "WALSHIP_LOG_CACHE_MAX_BYTES",
        "Bytes of the newest log entries kept in memory (replication and apply read those); older ones, until a snapshot purges them, are read back from the log files when a follower far behind asks.";
    log_sync: String = Some("background".to_string()), "WALSHIP_LOG_SYNC",
        "When a local log append counts as done: background (after the write, a thread fdatasyncs right behind; ZooKeeper's WAL holds every acknowledged write) or per-append (after its fdatasync too).";
    secret_file: PathBuf = None, "WALSHIP_SECRET_FILE",
        "File holding the cluster's shared secret: ZooKeeper digest ACL on the cluster's znodes and a token on node-to-node RPC; unset: no access control.";
    api_token_file: PathBuf = None, "WALSHIP_API_TOKEN_FILE",
        "File holding the token clients must send as `Authorization: Bearer <token>`; unset: the client API is open.";
    zk_sasl: bool = Some(false), "WALSHIP_ZK_SASL",
        "ZooKeeper authentication by SASL DIGEST-MD5 (user walship, password derived from secret_file: `walship zk-jaas` prints ZooKeeper's JAAS section) with sasl:walship ACLs, instead of the digest scheme, whose credentials cross the wire in clear text; needs secret_file and a ZooKeeper with the SASL provider.";
    zk_tls_ca_file: PathBuf = None, "WALSHIP_ZK_TLS_CA_FILE",
        "ZooKeeper over TLS: PEM CA certificate ZooKeeper's certificate must chain to; every zk server is then dialled over TLS (its secureClientPort), except one written tcp://host:port. Unset: plain TCP.";
    zk_tls_cert_file: PathBuf = None, "WALSHIP_ZK_TLS_CERT_FILE",
        "ZooKeeper over TLS: PEM client certificate presented to ZooKeeper (with zk_tls_key_file), for ssl.clientAuth=need.";
    zk_tls_key_file: PathBuf = None, "WALSHIP_ZK_TLS_KEY_FILE",
        "ZooKeeper over TLS: PEM private key of zk_tls_cert_file.";
    tls_cert_file: PathBuf = None, "WALSHIP_TLS_CERT_FILE",
        "TLS mode (with tls_key_file and tls_ca_file): PEM certificate naming this node as `node<id>.<cluster>.walship`; the listener then speaks only TLS, and peer RPC needs the other node's certificate. Unset: plain HTTP.";
    tls_key_file: PathBuf = None, "WALSHIP_TLS_KEY_FILE",
        "TLS mode: PEM private key of tls_cert_file.";
    tls_ca_file: PathBuf = None, "WALSHIP_TLS_CA_FILE",
        "TLS mode: PEM CA certificate the other node's and clients' certificates must chain to.";
    tls_client_auth: bool = Some(false), "WALSHIP_TLS_CLIENT_AUTH",
        "TLS mode: the key-value and admin routes also need a client certificate of this cluster (`client.<cluster>.walship`, or a node's); status, health and metrics stay open.";
    max_connections: usize = Some(0), "WALSHIP_MAX_CONNECTIONS",
        "HTTP connections served at once, more are closed on accept; 0: half the process's descriptor limit (64..=4096).";
    header_read_timeout_ms: u64 = Some(60_000), "WALSHIP_HEADER_READ_TIMEOUT_MS",
        "A request's head must arrive within this, and an idle connection is closed after it.";
    request_timeout_ms: u64 = Some(60_000), "WALSHIP_REQUEST_TIMEOUT_MS",
        "A whole request, body included, is answered within this (408 else); above write_timeout_ms.";
    body_read_timeout_ms: u64 = Some(10_000), "WALSHIP_BODY_READ_TIMEOUT_MS",
        "A request's body must have arrived within this of its head (408 else).";
    max_snapshot_bytes: u64 = Some(1 << 36), "WALSHIP_MAX_SNAPSHOT_BYTES",
        "Largest snapshot accepted from the other node (413 above): it streams to disk, so this bounds disk, not memory; must stay above the state's size.";
    rebuild_from_witness: bool = Some(false), "WALSHIP_REBUILD_FROM_WITNESS",
        "If the local log, state file or snapshot is unreadable (corrupt), move raft/ and snapshot/ into `<data_dir>/discarded-<unix_ms>/` and rebuild this node from ZooKeeper instead of refusing to start; meant for one start after such an error.";
}

/// Longest timeout or period accepted: one day.
const MAX_MS: u64 = 86_400_000;

/// The setting with TOML key `key`, if there is one.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Where a setting's value came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A flag or its environment variable.
    Args,
    /// The `--config` file at this path.
    File(PathBuf),
    /// Set in code, by [`NodeConfig::builder`] or [`NodeConfig::with_defaults`].
    Code,
    /// The setting's default.
    Default,
}

/// The merged configuration, before it is checked.
#[derive(Debug, Clone)]
pub struct Layered {
    /// Every setting's value after the merge (`None`: given nowhere, no default).
    pub merged: FileConfig,
    args: FileConfig,
    file: FileConfig,
    file_path: Option<PathBuf>,
    /// `args` came from code (the builder), not from flags.
    args_in_code: bool,
}

impl Layered {
    /// Merges the layers: `args` over `file` over the defaults.
    pub fn new(args: FileConfig, file: FileConfig, file_path: Option<PathBuf>) -> Layered {
        let merged = args.clone().over(file.clone()).over(FileConfig::defaults());
        Layered {
            merged,
            args,
            file,
            file_path,
            args_in_code: false,
        }
    }

    /// `given` (set in code) over the defaults.
    fn in_code(given: FileConfig) -> Layered {
        Layered {
            args_in_code: true,
            ..Layered::new(given, FileConfig::default(), None)
        }
    }

    /// Which layer `key`'s value came from.
    pub fn origin(&self, key: &str) -> Origin {
        if self.args.keys().contains(&key) && self.args_in_code {
            Origin::Code
        } else if self.args.keys().contains(&key) {
            Origin::Args
        } else if self.file.keys().contains(&key) {
            Origin::File(self.file_path.clone().unwrap_or_default())
        } else {
            Origin::Default
        }
    }

    fn origin_text(&self, key: &str) -> String {
        let s = setting(key).expect("a known setting");
        match self.origin(key) {
            Origin::Args => format!("{key} came from {} or {}", s.flag(), s.env),
            Origin::File(p) => format!("{key} came from the config file {}", p.display()),
            Origin::Code => format!("{key} was set in code"),
            Origin::Default => format!("{key} is the default"),
        }
    }

    /// "invalid setting KEY = VALUE: WHY; KEY came from ..." for `key` and
    /// every other setting the rule involves.
    fn invalid(&self, key: &str, value: &str, why: impl fmt::Display, involved: &[&str]) -> ConfigError {
        let mut from = vec![self.origin_text(key)];
        from.extend(involved.iter().map(|k| self.origin_text(k)));
        ConfigError(format!("invalid setting {key} = {value}: {why}; {}", from.join(", ")))
    }
}

/// Reads and parses a config file; errors name the file, the line and the key.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read the config file {}: {e}", path.display())))?;
    parse_file(&text, path)
}

/// Parses the text of a config file (`path` only names it in errors).
pub fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str::<FileConfig>(text).map_err(|e| file_error(text, path, &e))
}

/// One line for a TOML error: the key (unknown, or of the wrong type) when
/// there is one, and the line number.
fn file_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', " ");
    let (line_no, line) = match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line_no = text[..start].matches('\n').count() + 1;
            (Some(line_no), text.lines().nth(line_no - 1).unwrap_or_default())
        }
        None => (None, ""),
    };
    let at = match line_no {
        Some(n) => format!("{}, line {n}", path.display()),
        None => path.display().to_string(),
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default();
        let hint = match setting(&key.replace('-', "_")) {
            Some(s) => format!("did you mean {}?", s.key),
            None => format!(
                "the settings are: {}",
                SETTINGS.iter().map(|s| s.key).collect::<Vec<_>>().join(", ")
            ),
        };
        return ConfigError(format!("unknown setting {key} in the config file {at}; {hint}"));
    }
    // A type error points at the value: its key is what precedes '=' on that line.
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').trim_matches('\''))
        .filter(|k| setting(k).is_some());
    match key {
        Some(key) => ConfigError(format!("invalid setting {key} in the config file {at}: {message}")),
        None => ConfigError(format!("config file {at}: {message}")),
    }
}

/// TOML text for a value, as `--print-config` writes it.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn check_range(l: &Layered, key: &str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(l.invalid(key, &v.to_string(), format!("must be within {min}..={max}"), &[]))
    }
}

/// Checks the host:port form of an address setting.
fn check_addr(l: &Layered, key: &str, addr: &str) -> Result<(), ConfigError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(l.invalid(
            key,
            &toml_string(addr),
            "must be host:port with a port in 1..=65535",
            &[],
        ))
    }
}

/// A cluster name: 1-64 characters of [A-Za-z0-9._-], not starting with '.'.
pub fn check_cluster_name(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || s.starts_with('.')
    {
        return Err("cluster name must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'".into());
    }
    Ok(())
}

/// TLS mode needs all three files or none; the certificate is checked to
/// be this node's, signed by the CA.
fn check_tls(l: &Layered, id: u64, cluster: &str) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
    let m = &l.merged;
    let files = [
        ("tls_cert_file", &m.tls_cert_file),
        ("tls_key_file", &m.tls_key_file),
        ("tls_ca_file", &m.tls_ca_file),
    ];
    let (Some(cert), Some(key), Some(ca)) = (&m.tls_cert_file, &m.tls_key_file, &m.tls_ca_file) else {
        let given: Vec<&str> = files.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| *k).collect();
        let Some(first) = given.first() else { return Ok(None) };
        let missing: Vec<&str> = files.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
        let value = files.iter().find(|(k, _)| k == first).and_then(|(_, v)| v.as_ref());
        return Err(l.invalid(
            first,
            &toml_string(&value.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()),
            format!("TLS mode needs {} too", missing.join(" and ")),
            &[],
        ));
    };
    let files = crate::tls::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        ca: ca.clone(),
    };
    crate::tls::NodeTls::load(&files, cluster, id).map_err(ConfigError)?;
    Ok(Some(files))
}

/// ZooKeeper over TLS: a CA, and a client certificate and key together or
/// not at all; the files are read and checked now.
fn check_zk_tls(l: &Layered) -> Result<Option<walship_zk::ZkTlsFiles>, ConfigError> {
    let m = &l.merged;
    let shown = |p: &PathBuf| toml_string(&p.to_string_lossy());
    let identity = match (&m.zk_tls_cert_file, &m.zk_tls_key_file) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        (Some(c), None) => return Err(l.invalid("zk_tls_cert_file", &shown(c), "needs zk_tls_key_file too", &[])),
        (None, Some(k)) => return Err(l.invalid("zk_tls_key_file", &shown(k), "needs zk_tls_cert_file too", &[])),
    };
    let Some(ca) = &m.zk_tls_ca_file else {
        return match identity {
            Some((c, _)) => Err(l.invalid(
                "zk_tls_cert_file",
                &shown(&c),
                "needs zk_tls_ca_file (ZooKeeper over TLS)",
                &[],
            )),
            None => Ok(None),
        };
    };
    let files = walship_zk::ZkTlsFiles {
        ca: ca.clone(),
        identity,
    };
    crate::zksec::load_tls(&files).map_err(ConfigError)?;
    Ok(Some(files))
}

/// Turns the merged layers into a `NodeConfig`, refusing the first bad value.
pub fn check(l: &Layered) -> Result<NodeConfig, ConfigError> {
    let m = &l.merged;
    let missing = |key: &str| {
        let s = setting(key).expect("a known setting");
        ConfigError(format!(
            "missing setting {key}: give {}, {} or `{key} = ...` in the config file (--config)",
            s.flag(),
            s.env
        ))
    };
    let id = m.id.ok_or_else(|| missing("id"))?;
    if !crate::types::NODE_IDS.contains(&id) {
        return Err(l.invalid("id", &id.to_string(), "must be 1 or 2", &[]));
    }
    let cluster = m.cluster.clone().ok_or_else(|| missing("cluster"))?;
    check_cluster_name(&cluster).map_err(|why| l.invalid("cluster", &toml_string(&cluster), why, &[]))?;
    let zk = m.zk.clone().ok_or_else(|| missing("zk"))?;
    let servers = zk.split('/').next().unwrap_or_default();
    if servers.split(',').all(|s| s.trim().is_empty()) {
        return Err(l.invalid(
            "zk",
            &toml_string(&zk),
            "must name at least one server, host:port[,host:port...]",
            &[],
        ));
    }
    let data_dir = m.data_dir.clone().ok_or_else(|| missing("data_dir"))?;
    if data_dir.as_os_str().is_empty() {
        return Err(l.invalid("data_dir", "\"\"", "must be a directory path", &[]));
    }
    let listen = m.listen.clone().ok_or_else(|| missing("listen"))?;
    check_addr(l, "listen", &listen)?;
    if let Some(a) = &m.advertise {
        check_addr(l, "advertise", a)?;
    }

    let get = |v: Option<u64>| v.expect("every numeric setting has a default");
    let heartbeat = get(m.heartbeat_interval_ms);
    let election = get(m.election_timeout_ms);
    let session = get(m.zk_session_timeout_ms);
    let op = get(m.zk_op_timeout_ms);
    let snapshot_every = get(m.snapshot_every_entries);
    let snapshot_every_wal_bytes = get(m.snapshot_every_wal_bytes);
    let max_payload = get(m.max_payload_entries);
    let write_timeout = get(m.write_timeout_ms);
    let inflight = m.max_inflight_batches.expect("default");
    let batch_bytes = m.max_batch_bytes.expect("default");
    let group_wait = get(m.max_group_wait_us);
    let log_cache_max_bytes = get(m.log_cache_max_bytes);

    check_range(l, "heartbeat_interval_ms", heartbeat, 1, MAX_MS)?;
    check_range(l, "election_timeout_ms", election, 1, MAX_MS)?;
    if election <= 2 * heartbeat {
        return Err(l.invalid(
            "election_timeout_ms",
            &election.to_string(),
            format!("must be more than twice heartbeat_interval_ms ({heartbeat})"),
            &["heartbeat_interval_ms"],
        ));
    }
    check_range(l, "zk_session_timeout_ms", session, 1, MAX_MS)?;
    check_range(l, "zk_op_timeout_ms", op, 1, MAX_MS)?;
    check_range(l, "snapshot_every_entries", snapshot_every, 1, 1_000_000_000)?;
    check_range(
        l,
        "snapshot_every_wal_bytes",
        snapshot_every_wal_bytes,
        1 << 20,
        1 << 40,
    )?;
    check_range(l, "max_payload_entries", max_payload, 1, 1_000_000)?;
    check_range(l, "write_timeout_ms", write_timeout, 1, MAX_MS)?;
    check_range(l, "max_inflight_batches", inflight as u64, 1, 1024)?;
    check_range(l, "max_batch_bytes", batch_bytes as u64, 1024, 768 * 1024)?;
    check_range(l, "max_group_wait_us", group_wait, 0, 1_000_000)?;
    check_range(l, "log_cache_max_bytes", log_cache_max_bytes, 0, 1 << 40)?;
    let max_connections = m.max_connections.expect("default");
    check_range(l, "max_connections", max_connections as u64, 0, 1 << 20)?;
    let header_read_timeout = get(m.header_read_timeout_ms);
    check_range(l, "header_read_timeout_ms", header_read_timeout, 1, MAX_MS)?;
    let request_timeout = get(m.request_timeout_ms);
    check_range(l, "request_timeout_ms", request_timeout, 1, MAX_MS)?;
    if request_timeout <= write_timeout {
        return Err(l.invalid(
            "request_timeout_ms",
            &request_timeout.to_string(),
            format!("must be more than write_timeout_ms ({write_timeout})"),
            &["write_timeout_ms"],
        ));
    }
    let log_sync_text = m.log_sync.clone().expect("default");
    let log_sync = match log_sync_text.as_str() {
        "background" => crate::storage::LogSync::Background,
        "per-append" => crate::storage::LogSync::PerAppend,
        other => {
            return Err(l.invalid(
                "log_sync",
                &format!("{other:?}"),
                "must be \"background\" or \"per-append\"",
                &[],
            ))
        }
    };

    let body_read_timeout = get(m.body_read_timeout_ms);
    check_range(l, "body_read_timeout_ms", body_read_timeout, 1, MAX_MS)?;
    let max_snapshot_bytes = get(m.max_snapshot_bytes);
    check_range(l, "max_snapshot_bytes", max_snapshot_bytes, 1 << 20, 1 << 40)?;

    // Reading the files now names the setting if one is missing or empty.
    crate::auth::Auth::load(m.secret_file.as_deref(), m.api_token_file.as_deref()).map_err(ConfigError)?;
    let zk_sasl = m.zk_sasl.expect("default");
    if zk_sasl && m.secret_file.is_none() {
        return Err(l.invalid(
            "zk_sasl",
            "true",
            "needs secret_file (the SASL password is derived from the cluster's secret)",
            &[],
        ));
    }
    let zk_tls = check_zk_tls(l)?;
    let tls = check_tls(l, id, &cluster)?;
    let tls_client_auth = m.tls_client_auth.expect("default");
    if tls_client_auth && tls.is_none() {
        return Err(l.invalid(
            "tls_client_auth",
            "true",
            "needs TLS mode (tls_cert_file, tls_key_file and tls_ca_file)",
            &[],
        ));
    }

    Ok(NodeConfig {
        id,
        cluster,
        zk,
        data_dir,
        listen,
        advertise: m.advertise.clone(),
        heartbeat_interval_ms: heartbeat,
        election_timeout_ms: election,
        zk_session_timeout_ms: session,
        zk_op_timeout_ms: op,
        snapshot_every_entries: snapshot_every,
        snapshot_every_wal_bytes,
        max_payload_entries: max_payload,
        write_timeout_ms: write_timeout,
        max_inflight_batches: inflight,
        max_batch_bytes: batch_bytes,
        max_group_wait_us: group_wait,
        witness_pipeline: m.witness_pipeline.expect("default"),
        log_sync,
        log_cache_max_bytes,
        secret_file: m.secret_file.clone(),
        api_token_file: m.api_token_file.clone(),
        max_connections,
        header_read_timeout_ms: header_read_timeout,
        request_timeout_ms: request_timeout,
        body_read_timeout_ms: body_read_timeout,
        max_snapshot_bytes,
        tls,
        tls_client_auth,
        zk_sasl,
        zk_tls,
        rebuild_from_witness: m.rebuild_from_witness.expect("default"),
    })
}

/// The configuration as a `--config` file: every setting, each under its
/// documentation; an unset optional one (advertise) as a comment.
pub fn to_toml(c: &NodeConfig) -> String {
    let value = |key: &str| -> Option<String> {
        Some(match key {
            "id" => c.id.to_string(),
            "cluster" => toml_string(&c.cluster),
            "zk" => toml_string(&c.zk),
            "data_dir" => toml_string(&c.data_dir.to_string_lossy()),
            "listen" => toml_string(&c.listen),
            "advertise" => return c.advertise.as_deref().map(toml_string),
            "secret_file" => return c.secret_file.as_ref().map(|p| toml_string(&p.to_string_lossy())),
            "api_token_file" => return c.api_token_file.as_ref().map(|p| toml_string(&p.to_string_lossy())),
            "heartbeat_interval_ms" => c.heartbeat_interval_ms.to_string(),
            "election_timeout_ms" => c.election_timeout_ms.to_string(),
            "zk_session_timeout_ms" => c.zk_session_timeout_ms.to_string(),
            "zk_op_timeout_ms" => c.zk_op_timeout_ms.to_string(),
            "snapshot_every_entries" => c.snapshot_every_entries.to_string(),
            "snapshot_every_wal_bytes" => c.snapshot_every_wal_bytes.to_string(),
            "max_payload_entries" => c.max_payload_entries.to_string(),
            "write_timeout_ms" => c.write_timeout_ms.to_string(),
            "max_inflight_batches" => c.max_inflight_batches.to_string(),
            "max_batch_bytes" => c.max_batch_bytes.to_string(),
            "max_group_wait_us" => c.max_group_wait_us.to_string(),
            "witness_pipeline" => c.witness_pipeline.to_string(),
            "log_sync" => toml_string(match c.log_sync {
                crate::storage::LogSync::Background => "background",
                crate::storage::LogSync::PerAppend => "per-append",
            }),
            "log_cache_max_bytes" => c.log_cache_max_bytes.to_string(),
            "rebuild_from_witness" => c.rebuild_from_witness.to_string(),
            "max_connections" => c.max_connections.to_string(),
            "header_read_timeout_ms" => c.header_read_timeout_ms.to_string(),
            "request_timeout_ms" => c.request_timeout_ms.to_string(),
            "body_read_timeout_ms" => c.body_read_timeout_ms.to_string(),
            "max_snapshot_bytes" => c.max_snapshot_bytes.to_string(),
            "tls_cert_file" => return c.tls.as_ref().map(|t| toml_string(&t.cert.to_string_lossy())),
            "tls_key_file" => return c.tls.as_ref().map(|t| toml_string(&t.key.to_string_lossy())),
            "tls_ca_file" => return c.tls.as_ref().map(|t| toml_string(&t.ca.to_string_lossy())),
            "tls_client_auth" => c.tls_client_auth.to_string(),
            "zk_sasl" => c.zk_sasl.to_string(),
            "zk_tls_ca_file" => return c.zk_tls.as_ref().map(|t| toml_string(&t.ca.to_string_lossy())),
            "zk_tls_cert_file" => {
                return c
                    .zk_tls
                    .as_ref()
                    .and_then(|t| t.identity.as_ref())
                    .map(|(cert, _)| toml_string(&cert.to_string_lossy()))
            }
            "zk_tls_key_file" => {
                return c
                    .zk_tls
                    .as_ref()
                    .and_then(|t| t.identity.as_ref())
                    .map(|(_, key)| toml_string(&key.to_string_lossy()))
            }
            other => unreachable!("setting {other} has no printer"),
        })
    };
    let mut out = String::from(
        "# walship node configuration (walship node --print-config).\n\
         # Use it with --config FILE or WALSHIP_CONFIG=FILE; flags and WALSHIP_* variables override it.\n",
    );
    for s in SETTINGS {
        out.push_str(&format!("\n# {} ({}, {})\n", s.doc, s.flag(), s.env));
        match value(s.key) {
            Some(v) => out.push_str(&format!("{} = {v}\n", s.key)),
            None if s.key.ends_with("_file") => out.push_str(&format!("# {} = \"/path/to/file\"\n", s.key)),
            None => out.push_str(&format!("# {} = \"host:port\"\n", s.key)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<FileConfig, ConfigError> {
        parse_file(text, Path::new("w.toml"))
    }

    const REQUIRED: &str =
        "id = 1\ncluster = \"c\"\nzk = \"127.0.0.1:2181\"\ndata_dir = \"/d\"\nlisten = \"127.0.0.1:8081\"\n";

    fn layered(args: FileConfig, text: &str) -> Layered {
        Layered::new(args, file(text).unwrap(), Some("w.toml".into()))
    }

    #[test]
    fn precedence_args_over_file_over_defaults() {
        let args = FileConfig {
            heartbeat_interval_ms: Some(100),
            ..Default::default()
        };
        let l = layered(
            args,
            &format!("{REQUIRED}heartbeat_interval_ms = 300\nwrite_timeout_ms = 7000\n"),
        );
        let c = check(&l).unwrap();
        assert_eq!(c.heartbeat_interval_ms, 100);
        assert_eq!(c.write_timeout_ms, 7000);
        assert_eq!(c.election_timeout_ms, 1000);
        assert_eq!(l.origin("heartbeat_interval_ms"), Origin::Args);
        assert_eq!(l.origin("write_timeout_ms"), Origin::File("w.toml".into()));
        assert_eq!(l.origin("election_timeout_ms"), Origin::Default);
    }

    #[test]
    fn bad_values_name_the_setting_and_its_origin() {
        let l = layered(FileConfig::default(), &format!("{REQUIRED}election_timeout_ms = 50\n"));
        assert_eq!(
            check(&l).unwrap_err().0,
            "invalid setting election_timeout_ms = 50: must be more than twice heartbeat_interval_ms (200); \
             election_timeout_ms came from the config file w.toml, heartbeat_interval_ms is the default"
        );
        let args = FileConfig {
            id: Some(3),
            ..Default::default()
        };
        let e = check(&layered(args, REQUIRED)).unwrap_err().0;
        assert!(
            e.starts_with("invalid setting id = 3: must be 1 or 2; id came from --id or WALSHIP_ID"),
            "{e}"
        );
        for (text, want) in [
            ("listen = \"nope\"", "invalid setting listen = \"nope\""),
            ("cluster = \".x\"", "invalid setting cluster = \".x\""),
            (
                "max_batch_bytes = 10",
                "invalid setting max_batch_bytes = 10: must be within 1024..=786432",
            ),
            ("max_inflight_batches = 0", "invalid setting max_inflight_batches = 0"),
            ("zk = \",\"", "invalid setting zk = \",\""),
            ("advertise = \"h:0\"", "invalid setting advertise = \"h:0\""),
            (
                "tls_cert_file = \"/c.pem\"",
                "invalid setting tls_cert_file = \"/c.pem\": TLS mode needs tls_key_file and tls_ca_file too",
            ),
            (
                "tls_client_auth = true",
                "invalid setting tls_client_auth = true: needs TLS mode",
            ),
            ("zk_sasl = true", "invalid setting zk_sasl = true: needs secret_file"),
            (
                "zk_tls_cert_file = \"/c.pem\"",
                "invalid setting zk_tls_cert_file = \"/c.pem\": needs zk_tls_key_file too",
            ),
            (
                "zk_tls_ca_file = \"/nonexistent/ca.pem\"",
                "invalid setting zk_tls_ca_file = /nonexistent/ca.pem: cannot read it",
            ),
            (
                "body_read_timeout_ms = 0",
                "invalid setting body_read_timeout_ms = 0: must be within 1..=86400000",
            ),
        ] {
            let key = text.split(' ').next().unwrap();
            let without: String = REQUIRED
                .lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = check(&layered(FileConfig::default(), &format!("{without}{text}\n")))
                .unwrap_err()
                .0;
            assert!(e.starts_with(want), "{text}: {e}");
        }
        let e = check(&layered(FileConfig::default(), "id = 1\n")).unwrap_err().0;
        assert_eq!(
            e,
            "missing setting cluster: give --cluster, WALSHIP_CLUSTER or `cluster = ...` in the config file (--config)"
        );
    }

    #[test]
    fn file_errors_name_the_key_and_line() {
        let e = file("id = 1\nheartbeat-interval-ms = 5\n").unwrap_err().0;
        assert_eq!(
            e,
            "unknown setting heartbeat-interval-ms in the config file w.toml, line 2; did you mean heartbeat_interval_ms?"
        );
        let e = file("bogus = 5\n").unwrap_err().0;
        assert!(
            e.starts_with("unknown setting bogus in the config file w.toml, line 1; the settings are: id, cluster,"),
            "{e}"
        );
        let e = file("id = 1\n  election_timeout_ms = \"soon\"\n").unwrap_err().0;
        assert_eq!(
            e,
            "invalid setting election_timeout_ms in the config file w.toml, line 2: invalid type: string \"soon\", expected u64"
        );
        let e = file("id = -1\n").unwrap_err().0;
        assert!(
            e.starts_with("invalid setting id in the config file w.toml, line 1: "),
            "{e}"
        );
        let e = file("id = 1\nid 2\n").unwrap_err().0;
        assert!(e.starts_with("config file w.toml, line 2: "), "{e}");
        let e = file("[node]\nid = 1\n").unwrap_err().0;
        assert!(
            e.starts_with("unknown setting node in the config file w.toml, line 1"),
            "{e}"
        );
    }

    #[test]
    fn printed_config_parses_back_to_itself() {
        let args = FileConfig {
            advertise: Some("[::1]:9000".into()),
            data_dir: Some("/var/lib/wal ship \"x\"".into()),
            ..Default::default()
        };
        let c = check(&layered(args, REQUIRED)).unwrap();
        let text = to_toml(&c);
        let back = check(&layered(FileConfig::default(), &text)).unwrap();
        assert_eq!(to_toml(&back), text);
        assert_eq!(back.data_dir, c.data_dir);
        assert_eq!(back.advertise.as_deref(), Some("[::1]:9000"));
        // Without advertise it is a comment, and still round-trips.
        let c = check(&layered(FileConfig::default(), REQUIRED)).unwrap();
        let text = to_toml(&c);
        assert!(text.contains("\n# advertise = \"host:port\"\n"), "{text}");
        let back = check(&layered(FileConfig::default(), &text)).unwrap();
        assert_eq!(back.advertise, None);
    }

    #[test]
    fn with_defaults_is_the_defaults_and_checks_like_the_flags() {
        let c = NodeConfig::with_defaults(2, "c", "127.0.0.1:2181", "/d", "127.0.0.1:8082").unwrap();
        let from_file = check(&layered(
            FileConfig::default(),
            &REQUIRED.replace("id = 1", "id = 2").replace("8081", "8082"),
        ))
        .unwrap();
        assert_eq!(to_toml(&c), to_toml(&from_file));
        let e = NodeConfig::with_defaults(3, "c", "127.0.0.1:2181", "/d", "127.0.0.1:8082")
            .unwrap_err()
            .0;
        assert!(e.starts_with("invalid setting id = 3: must be 1 or 2"), "{e}");
    }

    #[test]
    fn the_builder_sets_what_it_is_told_and_checks_like_the_flags() {
        let c = NodeConfig::builder(1, "c", "127.0.0.1:2181", "/d", "127.0.0.1:8081")
            .election_timeout_ms(1500)
            .write_timeout_ms(3000)
            .log_sync(crate::storage::LogSync::PerAppend)
            .build()
            .unwrap();
        let mut expected = NodeConfig::with_defaults(1, "c", "127.0.0.1:2181", "/d", "127.0.0.1:8081").unwrap();
        expected.election_timeout_ms = 1500;
        expected.write_timeout_ms = 3000;
        expected.log_sync = crate::storage::LogSync::PerAppend;
        assert_eq!(to_toml(&c), to_toml(&expected));
        let e = NodeConfig::builder(1, "c", "127.0.0.1:2181", "/d", "127.0.0.1:8081")
            .heartbeat_interval_ms(500)
            .build()
            .unwrap_err()
            .0;
        assert!(
            e.starts_with(
                "invalid setting election_timeout_ms = 1000: must be more than twice heartbeat_interval_ms (500)"
            ),
            "{e}"
        );
        assert!(e.contains("heartbeat_interval_ms was set in code"), "{e}");
        let e = NodeConfig::builder(1, "c", "127.0.0.1:2181", "/d", "127.0.0.1:8081")
            .tls_client_auth(true)
            .build()
            .unwrap_err()
            .0;
        assert!(e.contains("needs TLS mode"), "{e}");
    }
}
