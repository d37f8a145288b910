//! `walship app command|query`: the application's client. A command goes
//! in a client session ([`crate::client::Session`]): retried across the
//! endpoints until `--timeout-ms`, applied at most once.

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use super::kv::read_value;
use super::kv::value_fields;
use super::print_json;
use super::transport::unexpected;
use super::transport::Retry;
use super::transport::Transport;
use super::AppArgs;
use super::AppCommand;
use super::Failure;
use super::EXIT_NOT_FOUND;
use super::EXIT_OK;
use super::EXIT_SERVER;
use super::EXIT_UNAVAILABLE;
use super::EXIT_UNKNOWN;
use super::EXIT_USAGE;
use crate::client::Method;
use crate::client::Session;
use crate::client::SessionError;

/// One attempt's limit: above a node's forwarding timeout (6 s), so a slow
/// write shows up as the node's 504 and is retried in the session.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(7);

pub async fn run(args: AppArgs) -> Result<u8, Failure> {
    let t = Transport::new(&args.opts)?;
    let json = args.opts.json;
    match args.command {
        AppCommand::Command { command } => {
            let command = read_value(command)?;
            let total = Duration::from_millis(args.opts.timeout_ms);
            let nodes = t
                .nodes
                .iter()
                .map(|n| n.with_timeout(ATTEMPT_TIMEOUT.min(total)))
                .collect();
            let session = Session::new(nodes).with_retry_for(total);
            match session.command(command).await {
                Ok(applied) => {
                    if json {
                        let (name, value) = value_fields(&applied.result);
                        let mut doc = json!({ "ok": true, "index": applied.index });
                        doc[name.replace("value", "result")] = value;
                        print_json(&doc);
                    } else {
                        print_bytes(&applied.result)?;
                    }
                    Ok(EXIT_OK)
                }
                Err(e) => Err(session_failure(e)),
            }
        }
        AppCommand::Query { query, stale } => {
            let query = read_value(query)?;
            let path = if stale {
                "/v1/app/query?stale=true"
            } else {
                "/v1/app/query"
            };
            let r = t.request(Method::POST, path, Some(&query), Retry::Idempotent).await?;
            match r.status {
                200 if json => {
                    let (name, value) = value_fields(&r.body);
                    let mut doc = json!({ "ok": true, "endpoint": r.endpoint });
                    doc[name.replace("value", "answer")] = value;
                    print_json(&doc);
                    Ok(EXIT_OK)
                }
                200 => print_bytes(&r.body).map(|()| EXIT_OK),
                409 => Err(Failure::new(EXIT_NOT_FOUND, r.error_text())),
                _ => Err(unexpected(&r)),
            }
        }
    }
}

fn session_failure(e: SessionError) -> Failure {
    let code = match &e {
        SessionError::Rejected(_) => EXIT_NOT_FOUND,
        SessionError::Refused(_) => EXIT_USAGE,
        SessionError::Unavailable(_) => EXIT_UNAVAILABLE,
        SessionError::Unknown(_) => EXIT_UNKNOWN,
    };
    Failure::new(code, e.to_string())
}

fn print_bytes(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(bytes).and_then(|()| {
        if !bytes.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
        out.flush()
    });
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(EXIT_SERVER, format!("cannot write the answer: {e}")))
        }
        _ => Ok(()),
    }
}
