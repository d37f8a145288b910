//! Typed HTTP client for one node's API. Every call returns a [`Reply`] that keeps
//! the HTTP status, or says that no response came (the outcome of a write is then
//! unknown).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

/// Default per-request limit. Above the server's own write timeout, so a slow
/// write shows up as the server's 504 rather than as a client-side timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    /// The expected answer (200; also 404 for GET of a missing key, as `None`).
    Success { status: u16, value: T },
    /// Any other status, with the `error` field of the JSON body (or the raw body).
    /// A 200 whose body does not decode also lands here.
    Failed { status: u16, error: String },
    /// No HTTP response: connection refused or reset, or client timeout.
    NoResponse { error: String },
}

impl<T> Reply<T> {
    /// The HTTP status, if a response came.
    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Success { status, .. } | Reply::Failed { status, .. } => Some(*status),
            Reply::NoResponse { .. } => None,
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Reply::Success { .. })
    }

    pub fn success(self) -> Option<T> {
        match self {
            Reply::Success { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The value, or an error naming the status and message.
    pub fn into_result(self) -> anyhow::Result<T> {
        match self {
            Reply::Success { value, .. } => Ok(value),
            Reply::Failed { status, error } => Err(anyhow::anyhow!("HTTP {status}: {error}")),
            Reply::NoResponse { error } => Err(anyhow::anyhow!("no response: {error}")),
        }
    }

    /// For a write: may it or may it not have been applied? True for no response,
    /// 504, any 5xx other than 503 (503 means nothing was written), and an
    /// undecodable 200.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Reply::Success { .. } => false,
            Reply::NoResponse { .. } => true,
            Reply::Failed { status, .. } => *status == 200 || (*status >= 500 && *status != 503),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Reply<U> {
        match self {
            Reply::Success { status, value } => Reply::Success {
                status,
                value: f(value),
            },
            Reply::Failed { status, error } => Reply::Failed { status, error },
            Reply::NoResponse { error } => Reply::NoResponse { error },
        }
    }
}

impl<T: fmt::Debug> fmt::Display for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Success { status, value } => write!(f, "{status} {value:?}"),
            Reply::Failed { status, error } => write!(f, "{status} error: {error}"),
            Reply::NoResponse { error } => write!(f, "no response: {error}"),
        }
    }
}

/// `GET /v1/status`. Index fields are optional so a node that has not applied
/// anything yet (null) still decodes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Status {
    pub id: u64,
    pub role: String,
    #[serde(default)]
    pub term: Option<u64>,
    #[serde(default)]
    pub leader: Option<u64>,
    #[serde(default)]
    pub last_log_index: Option<u64>,
    #[serde(default)]
    pub applied_index: Option<u64>,
    #[serde(default)]
    pub witness_log_index: Option<u64>,
}

impl Status {
    /// Claims to lead (role "leader" and names itself as leader).
    pub fn is_leader(&self) -> bool {
        self.role == "leader" && self.leader == Some(self.id)
    }
}

/// `POST /v1/cas/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CasResult {
    pub ok: bool,
    pub current: Option<String>,
}

#[derive(Deserialize)]
struct IndexBody {
    index: u64,
}

/// The files a client needs to talk to nodes in TLS mode: the CA, and the
/// client certificate and key it presents.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl ClientTls {
    /// The files `walship dev-ca` wrote into `dir`, with its client certificate.
    pub fn dev_ca(dir: &std::path::Path) -> ClientTls {
        ClientTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client-key.pem"),
        }
    }
}

/// A client for one node. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct Api {
    http: Client,
    base: String,
    timeout: Duration,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Api({})", self.base)
    }
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api::with_tls(addr, None)
    }

    /// https with `tls`'s CA and client certificate when it is set, else http.
    pub fn with_tls(addr: SocketAddr, tls: Option<&ClientTls>) -> Api {
        let mut http = Client::builder().no_proxy().connect_timeout(Duration::from_secs(2));
        if let Some(t) = tls {
            let config = walship::tls::client_config(&t.ca, Some((&t.cert, &t.key))).expect("client TLS files");
            http = http.use_preconfigured_tls(config);
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        Api {
            http: http.build().expect("reqwest client"),
            base: format!("{scheme}://{addr}"),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same client with another per-request limit.
    pub fn with_timeout(&self, timeout: Duration) -> Api {
        Api {
            timeout,
            ..self.clone()
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `PUT /v1/kv/{key}` → the log index of the write.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Reply<u64> {
        let reply = self.send(Method::PUT, &kv_path(key), Some(value.into())).await;
        decode_json::<IndexBody>(reply).map(|b| b.index)
    }

    /// `DELETE /v1/kv/{key}` → the log index of the delete.
    pub async fn delete(&self, key: &str) -> Reply<u64> {
        let reply = self.send(Method::DELETE, &kv_path(key), None).await;
        decode_json::<IndexBody>(reply).map(|b| b.index)
    }

    /// Linearizable `GET /v1/kv/{key}`: `Some(value)`, or `None` on 404.
    pub async fn get(&self, key: &str) -> Reply<Option<String>> {
        decode_value(self.send(Method::GET, &kv_path(key), None).await)
    }

    /// `GET /v1/kv/{key}?stale=true`: the node's local state, no leader check.
    pub async fn get_stale(&self, key: &str) -> Reply<Option<String>> {
        decode_value(
            self.send(Method::GET, &format!("{}?stale=true", kv_path(key)), None)
                .await,
        )
    }

    /// `POST /v1/cas/{key}`; `None` means "absent" (expect) or "delete" (value).
    pub async fn cas(&self, key: &str, expect: Option<&str>, value: Option<&str>) -> Reply<CasResult> {
        let body = json!({ "expect": expect, "value": value }).to_string().into_bytes();
        decode_json(
            self.send(Method::POST, &format!("/v1/cas/{}", encode_key(key)), Some(body))
                .await,
        )
    }

    pub async fn status(&self) -> Reply<Status> {
        decode_json(self.send(Method::GET, "/v1/status", None).await)
    }

    /// `GET /health/live`: success iff 200.
    pub async fn live(&self) -> Reply<()> {
        expect_200(self.send(Method::GET, "/health/live", None).await)
    }

    /// `GET /health/ready`: success iff 200 (can serve linearizable reads).
    pub async fn ready(&self) -> Reply<()> {
        expect_200(self.send(Method::GET, "/health/ready", None).await)
    }

    /// Any request; the status and raw body whatever the status (for 400/413 tests).
    pub async fn raw(&self, method: Method, path_and_query: &str, body: Option<Vec<u8>>) -> Reply<(u16, Vec<u8>)> {
        match self.send(method, path_and_query, body).await {
            Ok((status, bytes)) => Reply::Success {
                status: status.as_u16(),
                value: (status.as_u16(), bytes),
            },
            Err(error) => Reply::NoResponse { error },
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, Vec<u8>), String> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .timeout(self.timeout);
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.map_err(|e| describe(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| describe(&e))?;
        Ok((status, bytes.to_vec()))
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // The source chain has the useful part ("Connection refused").
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

fn error_message(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) if map.contains_key("error") => match &map["error"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        _ => {
            let text = String::from_utf8_lossy(bytes);
            text.chars().take(300).collect()
        }
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(reply: Result<(StatusCode, Vec<u8>), String>) -> Reply<T> {
    match reply {
        Err(error) => Reply::NoResponse { error },
        Ok((status, bytes)) if status == StatusCode::OK => match serde_json::from_slice(&bytes) {
            Ok(value) => Reply::Success { status: 200, value },
            Err(e) => Reply::Failed {
                status: 200,
                error: format!("undecodable body ({e}): {}", String::from_utf8_lossy(&bytes)),
            },
        },
        Ok((status, bytes)) => Reply::Failed {
            status: status.as_u16(),
            error: error_message(&bytes),
        },
    }
}

fn decode_value(reply: Result<(StatusCode, Vec<u8>), String>) -> Reply<Option<String>> {
    match reply {
        Err(error) => Reply::NoResponse { error },
        Ok((StatusCode::OK, bytes)) => match String::from_utf8(bytes) {
            Ok(value) => Reply::Success {
                status: 200,
                value: Some(value),
            },
            Err(e) => Reply::Failed {
                status: 200,
                error: format!("value is not UTF-8: {e}"),
            },
        },
        Ok((StatusCode::NOT_FOUND, _)) => Reply::Success {
            status: 404,
            value: None,
        },
        Ok((status, bytes)) => Reply::Failed {
            status: status.as_u16(),
            error: error_message(&bytes),
        },
    }
}

fn expect_200(reply: Result<(StatusCode, Vec<u8>), String>) -> Reply<()> {
    match reply {
        Err(error) => Reply::NoResponse { error },
        Ok((StatusCode::OK, _)) => Reply::Success { status: 200, value: () },
        Ok((status, bytes)) => Reply::Failed {
            status: status.as_u16(),
            error: error_message(&bytes),
        },
    }
}

fn kv_path(key: &str) -> String {
    format!("/v1/kv/{}", encode_key(key))
}

/// Percent-encode everything outside RFC 3986's unreserved set, so a key is one
/// path segment whatever it contains.
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
