//! The soak's HTTP client for one node's API, and how an answer maps to an
//! outcome by the API's contract (src/api/mod.rs): 200 done; 503 and 4xx
//! nothing was written; 504, any other 5xx, a timeout or a connection cut
//! after the request went out: unknown. A connection that could not even be
//! opened sent nothing, so it is a failure too.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Client;
use reqwest::Method;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

/// A request's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<T> {
    Ok(T),
    /// Definitely not applied.
    Fail(String),
    /// May or may not have been applied.
    Unknown(String),
}

impl<T> Answer<T> {
    pub fn is_ok(&self) -> bool {
        matches!(self, Answer::Ok(_))
    }
}

/// `GET /v1/status`, the fields the soak uses.
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub id: u64,
    pub role: String,
    #[serde(default)]
    pub leader: Option<u64>,
    #[serde(default)]
    pub applied_index: Option<u64>,
    #[serde(default)]
    pub last_log_index: Option<u64>,
    #[serde(default)]
    pub term: Option<u64>,
    /// The last index this node knows W (ZooKeeper) holds.
    #[serde(default)]
    pub witness_log_index: Option<u64>,
    /// Keys in the node's state machine (a cheap whole-state comparison).
    #[serde(default)]
    pub keys: Option<u64>,
}

impl Status {
    pub fn is_leader(&self) -> bool {
        self.role == "leader" && self.leader == Some(self.id)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct CasAnswer {
    pub ok: bool,
    pub current: Option<String>,
}

#[derive(Deserialize)]
struct IndexBody {
    index: u64,
}

/// Client for one node; cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeClient {
    http: Client,
    base: String,
    timeout: Duration,
}

/// Per-request limit: above the node's own write timeout (5 s) and its
/// forwarding timeout (6 s), so a slow write shows up as the server's 504.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl NodeClient {
    /// A client of the node at `addr`, over https if `https` (with a pool
    /// from `pool(Some(..))`).
    pub fn new(http: Client, addr: SocketAddr, https: bool) -> NodeClient {
        let scheme = if https { "https" } else { "http" };
        NodeClient {
            http,
            base: format!("{scheme}://{addr}"),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The shared connection pool every client uses; with `tls` (TLS mode), https.
    pub fn pool(tls: Option<rustls::ClientConfig>) -> Client {
        let mut builder = Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(5));
        if let Some(config) = tls {
            builder = builder.use_preconfigured_tls(config);
        }
        builder.build().expect("reqwest client")
    }

    pub fn with_timeout(&self, timeout: Duration) -> NodeClient {
        NodeClient {
            timeout,
            ..self.clone()
        }
    }

    pub async fn put(&self, key: &str, value: &str) -> Answer<u64> {
        let r = self
            .send(Method::PUT, &kv_path(key, false), Some(value.as_bytes().to_vec()))
            .await;
        decode_index(r)
    }

    pub async fn delete(&self, key: &str) -> Answer<u64> {
        decode_index(self.send(Method::DELETE, &kv_path(key, false), None).await)
    }

    pub async fn cas(&self, key: &str, expect: Option<&str>, value: Option<&str>) -> Answer<CasAnswer> {
        let body = json!({ "expect": expect, "value": value }).to_string().into_bytes();
        match self
            .send(
                Method::POST,
                &format!("/v1/cas/{}", walship::client::encode_key(key)),
                Some(body),
            )
            .await
        {
            Sent::Reply(StatusCode::OK, b) => match serde_json::from_slice::<CasAnswer>(&b) {
                Ok(a) => Answer::Ok(a),
                Err(e) => Answer::Unknown(format!("undecodable CAS answer: {e}")),
            },
            other => other.classify_write(),
        }
    }

    /// Linearizable read (`stale`: the node's local state).
    pub async fn get(&self, key: &str, stale: bool) -> Answer<Option<String>> {
        match self.send(Method::GET, &kv_path(key, stale), None).await {
            Sent::Reply(StatusCode::OK, b) => match String::from_utf8(b) {
                Ok(v) => Answer::Ok(Some(v)),
                Err(e) => Answer::Fail(format!("value is not UTF-8: {e}")),
            },
            Sent::Reply(StatusCode::NOT_FOUND, _) => Answer::Ok(None),
            // A read changes nothing: an unanswered one is just unanswered.
            other => other.classify_write(),
        }
    }

    pub async fn status(&self) -> Option<Status> {
        match self.send(Method::GET, "/v1/status", None).await {
            Sent::Reply(StatusCode::OK, b) => serde_json::from_slice(&b).ok(),
            _ => None,
        }
    }

    pub async fn ready(&self) -> bool {
        matches!(
            self.send(Method::GET, "/health/ready", None).await,
            Sent::Reply(StatusCode::OK, _)
        )
    }

    pub async fn live(&self) -> bool {
        matches!(
            self.send(Method::GET, "/health/live", None).await,
            Sent::Reply(StatusCode::OK, _)
        )
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Sent {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .timeout(self.timeout);
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Sent::Refused(describe(&e)),
            Err(e) => return Sent::Lost(describe(&e)),
        };
        let status = resp.status();
        match resp.bytes().await {
            Ok(b) => Sent::Reply(status, b.to_vec()),
            Err(e) => Sent::Lost(format!("HTTP {status}, body cut: {}", describe(&e))),
        }
    }
}

enum Sent {
    Reply(StatusCode, Vec<u8>),
    /// Could not connect: nothing went out.
    Refused(String),
    /// Sent, but no (whole) answer.
    Lost(String),
}

impl Sent {
    fn classify_write<T>(self) -> Answer<T> {
        match self {
            Sent::Reply(s, b) => {
                let msg = format!("HTTP {}: {}", s.as_u16(), error_text(&b));
                if s == StatusCode::SERVICE_UNAVAILABLE || s.is_client_error() {
                    Answer::Fail(msg)
                } else {
                    Answer::Unknown(msg)
                }
            }
            Sent::Refused(e) => Answer::Fail(e),
            Sent::Lost(e) => Answer::Unknown(e),
        }
    }
}

fn decode_index(sent: Sent) -> Answer<u64> {
    match sent {
        Sent::Reply(StatusCode::OK, b) => match serde_json::from_slice::<IndexBody>(&b) {
            Ok(i) => Answer::Ok(i.index),
            Err(e) => Answer::Unknown(format!("undecodable write answer: {e}")),
        },
        other => other.classify_write(),
    }
}

fn error_text(b: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(b) {
        Ok(serde_json::Value::Object(m)) if m.contains_key("error") => m["error"].as_str().unwrap_or("").to_string(),
        _ => String::from_utf8_lossy(b).chars().take(200).collect(),
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
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

fn kv_path(key: &str, stale: bool) -> String {
    format!(
        "/v1/kv/{}{}",
        walship::client::encode_key(key),
        if stale { "?stale=true" } else { "" }
    )
}
