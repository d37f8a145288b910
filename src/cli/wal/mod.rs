//! `walship wal ...`: read-only tools over what ZooKeeper holds for a cluster
//! (W's record, snapshot and WAL segments). They never write to ZooKeeper.
//!
//! Exit codes, shared by every subcommand (scripts rely on them):
//! 0 all good; 1 a problem found in ZooKeeper's data (corruption, a gap, a
//! lost write), everything readable still printed; 2 the command could not
//! look (bad usage, unreadable input, ZooKeeper unreachable, no such
//! cluster), with one line on stderr.

pub mod inspect;
pub mod verify;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use walship_zk::ZkError;
use walship_zk::ZkSession;
use zookeeper_client as zk;

use crate::cli::WalCommand;
use crate::cli::ZkTarget;
use crate::witness::Witness;
use crate::witness::WitnessError;

/// Exit code: corruption, a gap, or a write missing or wrong.
pub const EXIT_PROBLEM: u8 = 1;
/// Exit code: no verdict (bad usage, ZooKeeper unreachable, no such cluster).
pub const EXIT_CANNOT_LOOK: u8 = 2;

/// A tool is run by hand: an unreachable ZooKeeper should say so at once,
/// not after a node's minute of retries.
const CONNECT_DEADLINE_MS: u64 = 5_000;
/// Bound on one ZooKeeper read (a segment or chunk is below 1 MiB).
const OP_TIMEOUT_MS: u64 = 4_000;
/// The session only lives for the command; ZooKeeper's minimum is 2 ticks.
const SESSION_TIMEOUT_MS: u64 = 4_000;

/// Why a command stops without a verdict: the one line for stderr and the
/// exit code (always `EXIT_CANNOT_LOOK` except for a corrupt W record).
#[derive(Debug)]
pub struct Stop {
    /// The exit code.
    pub code: u8,
    /// Why, one line.
    pub message: String,
}

impl Stop {
    /// No verdict, for `message` ([`EXIT_CANNOT_LOOK`]).
    pub fn cannot_look(message: impl Into<String>) -> Stop {
        Stop {
            code: EXIT_CANNOT_LOOK,
            message: message.into(),
        }
    }
}

/// Runs a `walship wal` subcommand and turns its outcome into the exit code.
pub async fn run(cmd: WalCommand) -> ExitCode {
    let (name, result) = match cmd {
        WalCommand::Inspect(args) => ("inspect", inspect::run(&args).await),
        WalCommand::Verify(args) => ("verify", verify::run(&args).await),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(stop) => {
            // One line, whatever the error carried.
            eprintln!("walship wal {name}: {}", stop.message.replace('\n', " "));
            ExitCode::from(stop.code)
        }
    }
}

/// A ZooKeeper session for the command, within `CONNECT_DEADLINE_MS`.
pub async fn connect(target: &ZkTarget) -> Result<(Arc<ZkSession>, Witness), Stop> {
    let deadline = Duration::from_millis(CONNECT_DEADLINE_MS);
    let unreachable = |why: String| Stop::cannot_look(format!("cannot reach ZooKeeper at {}: {why}", target.zk));
    let connect = async {
        probe(&target.zk).await.map_err(&unreachable)?;
        let auth = crate::auth::Auth::load(target.secret_file.as_deref(), None).map_err(Stop::cannot_look)?;
        let security = target.security.load(&auth).map_err(Stop::cannot_look)?;
        ZkSession::connect_secured(
            &target.zk,
            SESSION_TIMEOUT_MS,
            OP_TIMEOUT_MS,
            CONNECT_DEADLINE_MS,
            |_| None,
            security,
            std::sync::Arc::new(()),
        )
        .await
        .map_err(|e| match e {
            ZkError::Unreachable(why) => unreachable(strip_hosts(&why, &target.zk)),
            e => unreachable(e.to_string()),
        })
    };
    match tokio::time::timeout(deadline, connect).await {
        Ok(Ok(session)) => {
            let witness = Witness::new(Arc::clone(&session), &target.cluster);
            Ok((session, witness))
        }
        Ok(Err(stop)) => Err(stop),
        Err(_) => Err(unreachable(format!(
            "no ZooKeeper session within {} s",
            deadline.as_secs()
        ))),
    }
}

/// Opens a TCP connection to every server of the connect string at once:
/// the ZooKeeper client retries a refused or unresolvable server until its
/// deadline and then only says "no session", so this gives the real reason,
/// and gives it at once. Ok if any server accepts.
async fn probe(connect_string: &str) -> Result<(), String> {
    const PROBE_TIMEOUT: Duration = Duration::from_millis(CONNECT_DEADLINE_MS);
    // An optional chroot follows the first '/'.
    let servers = connect_string.split('/').next().unwrap_or_default();
    let addrs: Vec<String> = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains(':') {
                s.to_string()
            } else {
                format!("{s}:2181")
            }
        })
        .collect();
    if addrs.is_empty() {
        return Err("no server in the connect string (expected host:port[,host:port...])".into());
    }
    let attempts = addrs.iter().map(|addr| async move {
        match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr.as_str())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{addr}: {e}")),
            Err(_) => Err(format!("{addr}: no answer within {} s", PROBE_TIMEOUT.as_secs())),
        }
    });
    let results = futures::future::join_all(attempts).await;
    if results.iter().any(Result::is_ok) {
        return Ok(());
    }
    let reasons: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if let [only] = reasons.as_slice() {
        // The caller's line names the connect string already.
        return Err(only.split_once(": ").map_or(only.clone(), |(_, why)| why.to_string()));
    }
    Err(reasons.join("; "))
}

/// `ZkSession` prefixes its message with the connect string, which the
/// caller's line already names.
fn strip_hosts(why: &str, hosts: &str) -> String {
    why.strip_prefix(hosts)
        .map(|rest| rest.trim_start_matches(':').trim().to_string())
        .unwrap_or_else(|| why.to_string())
}

/// The line for an error that stopped a read of W before any verdict.
pub fn read_failure(target: &ZkTarget, witness: &Witness, e: WitnessError) -> Stop {
    match e {
        e if e.is_zk(zk::Error::NoNode) => Stop::cannot_look(format!(
            "no cluster {:?} in ZooKeeper at {} ({} does not exist)",
            target.cluster,
            target.zk,
            witness.paths().witness()
        )),
        e @ (WitnessError::Zk(ZkError::Unreachable(_) | ZkError::Timeout { .. }) | WitnessError::Busy) => {
            Stop::cannot_look(format!("lost ZooKeeper at {} while reading: {e}", target.zk))
        }
        e @ (WitnessError::Corrupt { .. } | WitnessError::Identity(_)) => Stop {
            code: EXIT_PROBLEM,
            message: e.to_string(),
        },
        e => Stop::cannot_look(format!("reading from ZooKeeper at {}: {e}", target.zk)),
    }
}
