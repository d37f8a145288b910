//! `walship kv put|get|del|cas`: one request each, through the first
//! endpoint that can serve it (a node forwards to the leader itself).

use std::io::IsTerminal;
use std::io::Read;
use std::io::Write;

use serde_json::json;
use serde_json::Value;

use super::args::CasArgs;
use super::print_json;
use super::transport::json_body;
use super::transport::unexpected;
use super::transport::Retry;
use super::transport::Transport;
use super::Failure;
use super::KvArgs;
use super::KvCommand;
use super::EXIT_NOT_FOUND;
use super::EXIT_OK;
use super::EXIT_SERVER;
use crate::client::encode_key;
use crate::client::Method;
use crate::client::Response;

pub async fn run(args: KvArgs) -> Result<u8, Failure> {
    let t = Transport::new(&args.opts)?;
    let json = args.opts.json;
    match args.command {
        KvCommand::Put { key, value } => {
            check_key(&key)?;
            let value = read_value(value)?;
            let r = t
                .request(Method::PUT, &kv_path(&key), Some(&value), Retry::OnlyIfNotWritten)
                .await?;
            written("put", &key, &r, json)
        }
        KvCommand::Del { key } => {
            check_key(&key)?;
            let r = t
                .request(Method::DELETE, &kv_path(&key), None, Retry::OnlyIfNotWritten)
                .await?;
            written("del", &key, &r, json)
        }
        KvCommand::Get { key, stale } => {
            check_key(&key)?;
            let path = if stale {
                format!("{}?stale=true", kv_path(&key))
            } else {
                kv_path(&key)
            };
            let r = t.request(Method::GET, &path, None, Retry::Idempotent).await?;
            got(&key, &r, json)
        }
        KvCommand::Cas(cas) => {
            check_key(&cas.key)?;
            let r = t
                .request(
                    Method::POST,
                    &format!("/v1/cas/{}", encode_key(&cas.key)),
                    Some(&cas_body(&cas)),
                    Retry::OnlyIfNotWritten,
                )
                .await?;
            cas_result(&cas.key, &r, json)
        }
    }
}

fn check_key(key: &str) -> Result<(), Failure> {
    if key.is_empty() {
        Err(Failure::usage("the key is empty"))
    } else {
        Ok(())
    }
}

fn kv_path(key: &str) -> String {
    format!("/v1/kv/{}", encode_key(key))
}

/// The argument's raw bytes, or all of stdin for `-`.
pub fn read_value(value: std::ffi::OsString) -> Result<Vec<u8>, Failure> {
    use std::os::unix::ffi::OsStringExt;
    if value == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Failure::usage(format!("cannot read the value from stdin: {e}")))?;
        Ok(buf)
    } else {
        Ok(value.into_vec())
    }
}

fn cas_body(cas: &CasArgs) -> Vec<u8> {
    let expect = if cas.expect_absent { None } else { cas.expect.clone() };
    let value = if cas.delete { None } else { cas.value.clone() };
    serde_json::to_vec(&json!({ "expect": expect, "value": value })).expect("JSON serializes")
}

/// A value for JSON output: a string if it is UTF-8, else hex under another name.
pub fn value_fields(bytes: &[u8]) -> (&'static str, Value) {
    match std::str::from_utf8(bytes) {
        Ok(s) => ("value", Value::from(s)),
        Err(_) => (
            "value_hex",
            Value::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        ),
    }
}

fn written(op: &str, key: &str, r: &Response, json: bool) -> Result<u8, Failure> {
    if r.status != 200 {
        return Err(unexpected(r));
    }
    let index = json_body(r)?
        .get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| Failure::new(EXIT_SERVER, format!("{} answered without a log index", r.endpoint)))?;
    if json {
        print_json(&json!({ "ok": true, "op": op, "key": key, "index": index, "endpoint": r.endpoint }));
    } else {
        println!("OK (index {index})");
    }
    Ok(EXIT_OK)
}

fn got(key: &str, r: &Response, json: bool) -> Result<u8, Failure> {
    match r.status {
        200 => {
            if json {
                let (name, value) = value_fields(&r.body);
                let mut doc = json!({ "key": key, "found": true, "endpoint": r.endpoint });
                doc[name] = value;
                print_json(&doc);
            } else {
                let mut out = std::io::stdout().lock();
                let written = out.write_all(&r.body).and_then(|()| {
                    if out.is_terminal() && !r.body.ends_with(b"\n") {
                        out.write_all(b"\n")?;
                    }
                    out.flush()
                });
                if let Err(e) = written {
                    // A closed pipe (`| head`) is the reader's choice, not an error to report.
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        return Err(Failure::new(EXIT_SERVER, format!("cannot write the value: {e}")));
                    }
                }
            }
            Ok(EXIT_OK)
        }
        404 => {
            if json {
                print_json(&json!({ "key": key, "found": false, "endpoint": r.endpoint }));
                Ok(EXIT_NOT_FOUND)
            } else {
                Err(Failure::new(EXIT_NOT_FOUND, format!("key {key:?} not found")))
            }
        }
        _ => Err(unexpected(r)),
    }
}

fn cas_result(key: &str, r: &Response, json: bool) -> Result<u8, Failure> {
    if r.status != 200 {
        return Err(unexpected(r));
    }
    let doc = json_body(r)?;
    let ok = doc
        .get("ok")
        .and_then(Value::as_bool)
        .ok_or_else(|| Failure::new(EXIT_SERVER, format!("{} answered a CAS without \"ok\"", r.endpoint)))?;
    let current = doc.get("current").cloned().unwrap_or(Value::Null);
    if json {
        print_json(&json!({ "ok": ok, "key": key, "current": current, "endpoint": r.endpoint }));
    } else if ok {
        println!("OK");
    } else {
        match current.as_str() {
            Some(v) => println!("NOT APPLIED: {key:?} holds {v:?}"),
            None => println!("NOT APPLIED: {key:?} is absent"),
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_NOT_FOUND })
}
