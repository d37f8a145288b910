//! `walship kv put|get|del|cas`, `walship app command|query`, `walship
//! status`, `walship members`: the
//! command-line client, in the spirit of etcdctl. It speaks the HTTP API of
//! `crate::api` through [`crate::client::NodeClient`]s, one per node of
//! `--endpoints` (tried in order, `transport`), and reads ZooKeeper directly
//! for the cluster's own view when given `--zk` and `--cluster`.
//!
//! Exit codes (a contract with scripts; also in `walship --help` and the README):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | `kv get`: key not found; `kv cas`: not applied; `app`: the application rejected it |
//! | 2 | bad usage (flags, key or value refused with 400/413, no such cluster) |
//! | 3 | no endpoint reachable, or unavailable (503): nothing was written |
//! | 4 | outcome unknown (504, or the connection cut after the request was sent) |
//! | 5 | another server error |
//!
//! Every error is one line on stderr, `walship <command>: <why>`.

pub(crate) mod app;
pub(crate) mod args;
pub(crate) mod kv;
pub(crate) mod members;
pub(crate) mod status;
pub(crate) mod table;
pub(crate) mod transport;
pub(crate) mod zkview;

use std::process::ExitCode;

pub use self::args::AppArgs;
pub use self::args::AppCommand;
pub use self::args::ClientOpts;
pub use self::args::KvArgs;
pub use self::args::KvCommand;
pub use self::args::MembersArgs;
pub use self::args::StatusArgs;

/// Done.
pub const EXIT_OK: u8 = 0;
/// `kv get`: no such key; `kv cas`: the expectation did not hold.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Bad usage: flags, or a key or value the node refused (400, 413), or no such cluster.
pub const EXIT_USAGE: u8 = 2;
/// No endpoint answered, or all said 503: nothing was written.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// A write may or may not have happened.
pub const EXIT_UNKNOWN: u8 = 4;
/// Another server error.
pub const EXIT_SERVER: u8 = 5;

/// The exit-code table, for `--help`.
pub const EXIT_CODES_HELP: &str =
    "Exit codes: 0 ok; 1 key not found (get), CAS not applied, or rejected by the application; 2 bad usage; \
3 no endpoint reachable or unavailable (503), nothing written; 4 outcome unknown (504 or connection cut); \
5 other server error.";

/// Why a command failed: its exit code and the one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit code, one of the `EXIT_*`.
    pub code: u8,
    /// What went wrong, one line.
    pub message: String,
}

impl Failure {
    /// A failure with exit code `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
    /// Bad usage ([`EXIT_USAGE`]).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_USAGE, message)
    }
}

/// Prints a failure as one line and turns the outcome into an exit code.
fn finish(command: &str, result: Result<u8, Failure>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            let line = f.message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("walship {command}: {line}");
            ExitCode::from(f.code)
        }
    }
}

/// `walship kv ...`: runs it, prints its result or one error line, and
/// returns its exit code.
pub async fn run_kv(args: KvArgs) -> ExitCode {
    let name = match &args.command {
        KvCommand::Put { .. } => "kv put",
        KvCommand::Get { .. } => "kv get",
        KvCommand::Del { .. } => "kv del",
        KvCommand::Cas(_) => "kv cas",
    };
    finish(name, kv::run(args).await)
}

/// `walship app ...`, as [`run_kv`].
pub async fn run_app(args: AppArgs) -> ExitCode {
    let name = match &args.command {
        AppCommand::Command { .. } => "app command",
        AppCommand::Query { .. } => "app query",
    };
    finish(name, app::run(args).await)
}

/// `walship status`, as [`run_kv`].
pub async fn run_status(args: StatusArgs) -> ExitCode {
    finish("status", status::run(args).await)
}

/// `walship members`, as [`run_kv`].
pub async fn run_members(args: MembersArgs) -> ExitCode {
    finish("members", members::run(args).await)
}

/// Prints a JSON document on stdout.
pub fn print_json(doc: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(doc).expect("a JSON value serializes")
    );
}
