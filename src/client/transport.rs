//! HTTP to the nodes of `--endpoints`: tries them in order, within one
//! deadline for the whole command, and sorts what happened into what a
//! script needs to know: answered, nothing sent (try the next one), or sent
//! without an answer (outcome unknown).

use std::time::Duration;
use std::time::Instant;

use reqwest::Method;

use super::ClientOpts;
use super::Failure;
use super::EXIT_SERVER;
use super::EXIT_UNAVAILABLE;
use super::EXIT_UNKNOWN;
use super::EXIT_USAGE;

/// A connection that cannot be made within this is given up for the next
/// endpoint (nothing was sent), however long `--timeout-ms` is.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An HTTP answer from one endpoint.
#[derive(Debug, Clone)]
pub struct Reply {
    pub endpoint: String,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The `error` of a JSON error body, else the body as text, else the status.
    pub fn error_text(&self) -> String {
        let from_json = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
        let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string());
        if text.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            text
        }
    }

    pub fn json(&self) -> Result<serde_json::Value, Failure> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Failure::new(
                EXIT_SERVER,
                format!(
                    "{} answered {} with a body that is not JSON: {e}",
                    self.endpoint, self.status
                ),
            )
        })
    }
}

/// What one try at one endpoint came to.
#[derive(Debug)]
pub enum Attempt {
    Answered(Reply),
    /// The request never left: connection refused, unresolvable, connect timeout.
    NotSent(String),
    /// Sent (or maybe sent), no complete answer: timeout, connection cut.
    NoAnswer(String),
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
    http: reqwest::Client,
    /// "https" with --tls-ca-file, else "http".
    scheme: &'static str,
    pub endpoints: Vec<String>,
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
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(path) = &opts.api_token_file {
            let auth = crate::auth::Auth::load(None, Some(path)).map_err(Failure::usage)?;
            let token = auth.api_token().unwrap_or_default();
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Failure::usage(format!("{}: the token is not a valid header value", path.display())))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(Duration::from_millis(opts.timeout_ms)))
            .default_headers(headers)
            .no_proxy();
        let https = opts.tls_ca_file.is_some();
        if let Some(ca) = &opts.tls_ca_file {
            let identity = opts.tls_cert_file.as_deref().zip(opts.tls_key_file.as_deref());
            let tls = crate::tls::client_config(ca, identity).map_err(Failure::usage)?;
            http = http.use_preconfigured_tls(tls);
        } else if opts.endpoints.iter().any(|e| e.trim().starts_with("https://")) {
            return Err(Failure::usage(
                "https:// endpoints need --tls-ca-file (the CA of the nodes' certificates)",
            ));
        }
        let http = http
            .build()
            .map_err(|e| Failure::new(EXIT_SERVER, format!("cannot build an HTTP client: {e}")))?;
        Ok(Transport {
            http,
            scheme: if https { "https" } else { "http" },
            endpoints,
            deadline: Instant::now() + Duration::from_millis(opts.timeout_ms),
            timeout_ms: opts.timeout_ms,
        })
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// One request to one endpoint, within what is left of the deadline.
    pub async fn try_one(&self, endpoint: &str, method: Method, path: &str, body: Option<&[u8]>) -> Attempt {
        self.try_within(endpoint, method, path, body, self.remaining()).await
    }

    async fn try_within(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        budget: Duration,
    ) -> Attempt {
        let left = budget.min(self.remaining());
        if left.is_zero() {
            return Attempt::NotSent(format!("--timeout-ms {} ran out before it was tried", self.timeout_ms));
        }
        let mut req = self
            .http
            .request(method, format!("{}://{endpoint}{path}", self.scheme))
            .timeout(left);
        if let Some(b) = body {
            req = req.body(b.to_vec());
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(b) => Attempt::Answered(Reply {
                        endpoint: endpoint.to_string(),
                        status,
                        body: b.to_vec(),
                    }),
                    Err(e) => Attempt::NoAnswer(format!("answered {status} but the body was cut: {}", why(&e))),
                }
            }
            Err(e) if e.is_connect() => Attempt::NotSent(why(&e)),
            Err(e) if e.is_timeout() => Attempt::NoAnswer(format!("no answer within {} ms", left.as_millis())),
            Err(e) => Attempt::NoAnswer(why(&e)),
        }
    }

    /// Sends the request to the endpoints in order until one gives an answer
    /// to keep (any status but 503, and for `Retry::Idempotent` any but a
    /// 5xx). The caller reads the status of the `Reply`; a `Failure` carries
    /// exit code 3 (nobody could serve), 4 (a write's outcome is unknown) or
    /// 5 (server errors).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        retry: Retry,
    ) -> Result<Reply, Failure> {
        let mut tried: Vec<String> = Vec::new();
        let mut server_error = false;
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            // A read shares the time left among the endpoints still to try, so
            // one that hangs (a frozen process) leaves time for the next; a
            // write cannot go elsewhere once sent, so it gets all of it.
            let budget = match retry {
                Retry::Idempotent => self.remaining() / (self.endpoints.len() - i) as u32,
                Retry::OnlyIfNotWritten => self.remaining(),
            };
            match self.try_within(endpoint, method.clone(), path, body, budget).await {
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

/// The innermost cause of a reqwest error, which says what went wrong
/// ("Connection refused (os error 111)") where the outer ones do not.
fn why(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(inner) = source.source() {
        source = inner;
    }
    let text = source.to_string();
    if text.is_empty() {
        e.to_string()
    } else {
        text
    }
}

/// The failure for an answer a command did not expect: 400/413 are bad
/// usage (the server refused the key or value), anything else a server error.
pub fn unexpected(r: &Reply) -> Failure {
    let code = match r.status {
        400 | 413 => EXIT_USAGE,
        503 => EXIT_UNAVAILABLE,
        504 => EXIT_UNKNOWN,
        _ => EXIT_SERVER,
    };
    Failure::new(code, format!("{}: {} ({})", r.endpoint, r.error_text(), r.status))
}

/// Percent-encodes a key into one path segment (everything outside RFC 3986's
/// unreserved set), as the API's `/v1/kv/{key}` expects.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(encode_key("a/b c%"), "a%2Fb%20c%25");
        assert_eq!(encode_key("ü"), "%C3%BC");
    }
}
