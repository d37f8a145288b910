//! HTTP to the nodes of `--endpoints`: tries them in order, within one
//! deadline for the whole command, and sorts what happened into what a
//! script needs to know: answered, nothing sent (try the next one), or sent
//! without an answer (outcome unknown). Each endpoint is a
//! [`NodeClient`]; one try is its [`NodeClient::send`].

use std::time::Duration;
use std::time::Instant;

use super::ClientOpts;
use super::Failure;
use super::EXIT_SERVER;
use super::EXIT_UNAVAILABLE;
use super::EXIT_UNKNOWN;
use super::EXIT_USAGE;
use crate::client::Attempt;
use crate::client::ClientError;
use crate::client::ClientOptions;
use crate::client::ClientTls;
use crate::client::Method;
use crate::client::NodeClient;
use crate::client::Response;

/// A connection that cannot be made within this is given up for the next
/// endpoint (nothing was sent), however long `--timeout-ms` is.
const CONNECT_TIMEOUT: Duration = crate::client::CONNECT_TIMEOUT;

/// The JSON body of an answer, or exit 5 naming the endpoint.
pub fn json_body(r: &Response) -> Result<serde_json::Value, Failure> {
    serde_json::from_slice(&r.body).map_err(|e| {
        Failure::new(
            EXIT_SERVER,
            format!("{} answered {} with a body that is not JSON: {e}", r.endpoint, r.status),
        )
    })
}

/// Whether a request may be sent again to another endpoint after one that
/// may have received it did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads: any endpoint that did not answer usefully is skipped.
    Idempotent,
    /// Writes: only "nothing was written" (not sent, 503) moves on; a
    /// request that may have arrived ends the command (outcome unknown).
    OnlyIfNotWritten,
}

pub struct Transport {
    /// One client per endpoint, in order, sharing one connection pool.
    pub nodes: Vec<NodeClient>,
    deadline: Instant,
    timeout_ms: u64,
}

/// `host:port` of an endpoint, with or without `http://` (or `https://`)
/// and a trailing '/'.
pub fn normalize_endpoint(e: &str) -> Result<String, Failure> {
    let e = e.trim();
    let bare = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .unwrap_or(e)
        .trim_end_matches('/');
    let ok = bare
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok && !bare.contains('/') {
        Ok(bare.to_string())
    } else {
        Err(Failure::usage(format!(
            "bad endpoint {e:?}: expected host:port (--endpoints host:port,host:port)"
        )))
    }
}

impl Transport {
    pub fn new(opts: &ClientOpts) -> Result<Transport, Failure> {
        let endpoints = opts
            .endpoints
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(Failure::usage("no endpoint given (--endpoints host:port,host:port)"));
        }
        if opts.timeout_ms == 0 {
            return Err(Failure::usage("--timeout-ms must be positive"));
        }
        let api_token = match &opts.api_token_file {
            Some(path) => {
                let auth = crate::auth::Auth::load(None, Some(path)).map_err(Failure::usage)?;
                Some(auth.api_token().unwrap_or_default().to_string())
            }
            None => None,
        };
        let client_opts = ClientOptions {
            tls: opts.tls_ca_file.as_ref().map(|ca| ClientTls {
                ca: ca.clone(),
                identity: opts.tls_cert_file.clone().zip(opts.tls_key_file.clone()),
            }),
            api_token,
            timeout: Duration::from_millis(opts.timeout_ms),
            connect_timeout: CONNECT_TIMEOUT.min(Duration::from_millis(opts.timeout_ms)),
            pool_idle_timeout: None,
        };
        let token_file = opts.api_token_file.as_deref().map(|p| p.display().to_string());
        let first = NodeClient::new(&endpoints[0], &client_opts).map_err(|e| match e {
            ClientError::BadToken => Failure::usage(format!(
                "{}: the token is not a valid header value",
                token_file.unwrap_or_default()
            )),
            ClientError::Tls(message) => Failure::usage(message),
            e @ ClientError::Build { .. } => Failure::new(EXIT_SERVER, e.to_string()),
        })?;
        if opts.tls_ca_file.is_none() && opts.endpoints.iter().any(|e| e.trim().starts_with("https://")) {
            return Err(Failure::usage(
                "https:// endpoints need --tls-ca-file (the CA of the nodes' certificates)",
            ));
        }
        Ok(Transport {
            nodes: endpoints.iter().map(|e| first.at(e)).collect(),
            deadline: Instant::now() + Duration::from_millis(opts.timeout_ms),
            timeout_ms: opts.timeout_ms,
        })
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// One request to one endpoint, within what is left of the deadline.
    pub async fn try_one(&self, node: &NodeClient, method: Method, path: &str, body: Option<&[u8]>) -> Attempt {
        self.try_within(node, method, path, body, self.remaining()).await
    }

    async fn try_within(
        &self,
        node: &NodeClient,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        budget: Duration,
    ) -> Attempt {
        let left = budget.min(self.remaining());
        if left.is_zero() {
            return Attempt::NotSent(format!("--timeout-ms {} ran out before it was tried", self.timeout_ms));
        }
        node.with_timeout(left)
            .send(method, path, body.map(<[u8]>::to_vec))
            .await
    }

    /// Sends the request to the endpoints in order until one gives an answer
    /// to keep (any status but 503, and for `Retry::Idempotent` any but a
    /// 5xx). The caller reads the status of the `Response`; a `Failure` carries
    /// exit code 3 (nobody could serve), 4 (a write's outcome is unknown) or
    /// 5 (server errors).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        retry: Retry,
    ) -> Result<Response, Failure> {
        let mut tried: Vec<String> = Vec::new();
        let mut server_error = false;
        for (i, node) in self.nodes.iter().enumerate() {
            let endpoint = node.endpoint();
            // A read shares the time left among the endpoints still to try, so
            // one that hangs (a frozen process) leaves time for the next; a
            // write cannot go elsewhere once sent, so it gets all of it.
            let budget = match retry {
                Retry::Idempotent => self.remaining() / (self.nodes.len() - i) as u32,
                Retry::OnlyIfNotWritten => self.remaining(),
            };
            match self.try_within(node, method.clone(), path, body, budget).await {
                Attempt::Answered(r) if r.status == 503 => {
                    tried.push(format!("{endpoint}: {} (503)", r.error_text()));
                }
                Attempt::Answered(r) if r.status == 504 && retry == Retry::OnlyIfNotWritten => {
                    return Err(Failure::new(
                        EXIT_UNKNOWN,
                        format!(
                            "outcome unknown: {endpoint}: {} (504); the write may or may not have happened",
                            r.error_text()
                        ),
                    ));
                }
                Attempt::Answered(r) if r.status >= 500 && retry == Retry::Idempotent => {
                    server_error = true;
                    tried.push(format!("{endpoint}: {} ({})", r.error_text(), r.status));
                }
                Attempt::Answered(r) => return Ok(r),
                Attempt::NotSent(why) => tried.push(format!("{endpoint}: {why}")),
                Attempt::NoAnswer(why) if retry == Retry::OnlyIfNotWritten => {
                    return Err(Failure::new(
                        EXIT_UNKNOWN,
                        format!("outcome unknown: {endpoint}: {why}; the write may or may not have happened"),
                    ));
                }
                Attempt::NoAnswer(why) => tried.push(format!("{endpoint}: {why}")),
            }
        }
        let code = if server_error { EXIT_SERVER } else { EXIT_UNAVAILABLE };
        let what = if server_error {
            "no endpoint could serve"
        } else {
            "no endpoint reachable or available"
        };
        Err(Failure::new(code, format!("{what}: {}", tried.join("; "))))
    }
}

/// The failure for an answer a command did not expect: 400/413 are bad
/// usage (the server refused the key or value), anything else a server error.
pub fn unexpected(r: &Response) -> Failure {
    let code = match r.status {
        400 | 413 => EXIT_USAGE,
        503 => EXIT_UNAVAILABLE,
        504 => EXIT_UNKNOWN,
        _ => EXIT_SERVER,
    };
    Failure::new(code, format!("{}: {} ({})", r.endpoint, r.error_text(), r.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_port() {
        assert_eq!(normalize_endpoint("127.0.0.1:8081").unwrap(), "127.0.0.1:8081");
        assert_eq!(normalize_endpoint(" http://h:1/ ").unwrap(), "h:1");
        assert_eq!(normalize_endpoint("[::1]:80").unwrap(), "[::1]:80");
        for bad in ["h", "h:0", ":80", "h:x", "http://h:1/v1"] {
            assert_eq!(normalize_endpoint(bad).unwrap_err().code, EXIT_USAGE, "{bad}");
        }
    }
}
