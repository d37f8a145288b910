//! The typed HTTP client of one walship node: what the CLI, embedders, the
//! tests, the soak and the bench send to a node's API, and how its answer
//! maps to an outcome by the API's contract (README, "The HTTP API"):
//!
//! - 200 (and 404 for a read of a missing key): done, [`Reply::Success`];
//! - 503 and any 4xx: nothing was written, [`Reply::Failed`];
//! - 504, any other 5xx, or a 200 whose body does not decode: the outcome
//!   is unknown, [`Reply::Failed`] too ([`Reply::outcome_unknown`] tells);
//! - no (whole) answer to a request that went out (timeout, connection cut):
//!   unknown, [`Reply::NoResponse`] with `sent`;
//! - a connection that could not be opened: nothing was sent, so nothing
//!   was written, [`Reply::NoResponse`] without `sent`.
//!
//! Below the typed calls, [`NodeClient::send`] is one request and its
//! [`Attempt`]: answered, not sent, or sent without an answer. The CLI's
//! transport (`super::transport`) tries endpoints in order on top of it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use walship::client::{ClientOptions, NodeClient};
//! let node = NodeClient::new("127.0.0.1:8081", &ClientOptions::default())?;
//! let index = node.put("greeting", "hello").await.into_result()?;
//! let value = node.get("greeting").await.into_result()?;
//! # let _ = (index, value); Ok(()) }
//! ```

use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::header::HeaderValue;
use reqwest::header::AUTHORIZATION;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::history::Outcome;
pub use crate::types::SessionTag;

mod session;
pub use session::Session;
pub use session::SessionError;
pub use session::RETRY_FOR;

/// Default per-request limit: above a node's own write timeout (5 s) and its
/// forwarding timeout (6 s), so a slow write shows up as the node's 504
/// rather than as a client-side timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that cannot be made within this is given up (nothing was sent).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The files a client needs to speak https to nodes in TLS mode: the CA
/// their certificates are checked against (with the host dialled), and a
/// client certificate and key to present (nodes run with
/// `--tls-client-auth` require one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM: the CA the nodes' certificates must chain to (`--tls-ca-file`).
    pub ca: PathBuf,
    /// PEM: a client certificate and its key, for nodes with `--tls-client-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// The files `walship dev-ca` wrote into `dir`, with its client certificate.
    pub fn dev_ca(dir: &Path) -> ClientTls {
        ClientTls {
            ca: dir.join("ca.pem"),
            identity: Some((dir.join("client.pem"), dir.join("client-key.pem"))),
        }
    }
}

/// How a [`NodeClient`] talks to nodes.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// https with these files; `None`: plain http.
    pub tls: Option<ClientTls>,
    /// Sent as `Authorization: Bearer <token>` (the nodes' `--api-token-file`).
    pub api_token: Option<String>,
    /// Per request, unless [`NodeClient::with_timeout`] says otherwise.
    pub timeout: Duration,
    /// A connection not made within this is given up; nothing was sent.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept (`None`: reqwest's default).
    pub pool_idle_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            tls: None,
            api_token: None,
            timeout: REQUEST_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            pool_idle_timeout: None,
        }
    }
}

/// An HTTP method for [`NodeClient::send`] and [`NodeClient::raw`]: the
/// usual ones as constants, any other by [`Method::from_bytes`]. walship's
/// own type, so calling the client needs no HTTP library of one's own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Method(reqwest::Method);

impl Method {
    /// `GET`.
    pub const GET: Method = Method(reqwest::Method::GET);
    /// `HEAD`.
    pub const HEAD: Method = Method(reqwest::Method::HEAD);
    /// `PUT`.
    pub const PUT: Method = Method(reqwest::Method::PUT);
    /// `POST`.
    pub const POST: Method = Method(reqwest::Method::POST);
    /// `DELETE`.
    pub const DELETE: Method = Method(reqwest::Method::DELETE);
    /// `PATCH`.
    pub const PATCH: Method = Method(reqwest::Method::PATCH);
    /// `OPTIONS`.
    pub const OPTIONS: Method = Method(reqwest::Method::OPTIONS);

    /// Any method token (RFC 9110's `token` characters); `None` if `name`
    /// is not one.
    pub fn from_bytes(name: &[u8]) -> Option<Method> {
        reqwest::Method::from_bytes(name).ok().map(Method)
    }

    /// The method's name, as sent.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a [`NodeClient`] could not be built. None of these is retryable:
/// each needs a changed [`ClientOptions`] or file.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// [`ClientOptions::api_token`] cannot be sent in an HTTP header
    /// (a control character or a non-visible byte).
    #[error("the API token is not a valid header value")]
    BadToken,
    /// A TLS file is missing or unusable (the message names it).
    #[error("{0}")]
    Tls(String),
    /// The HTTP client library refused the options (the message says why;
    /// the source is the library's error).
    #[error("cannot build an HTTP client: {message}")]
    Build {
        /// What went wrong, in one line.
        message: String,
        /// The HTTP library's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `host:port` of the node that answered.
    pub endpoint: String,
    /// The HTTP status.
    pub status: u16,
    /// `x-walship-index`: the log index of an application command's entry.
    pub index: Option<u64>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
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
}

/// What one request to one node came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A whole HTTP answer came, whatever its status.
    Answered(Response),
    /// The request never left: connection refused, unresolvable, connect timeout.
    NotSent(String),
    /// Sent (or maybe sent), no complete answer: timeout, connection cut.
    NoAnswer(String),
}

/// A typed call's result; keeps the HTTP status, or says that no response
/// came and whether the request went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    /// The expected answer (200; also 404 for a read of a missing key, as `None`).
    Success {
        /// 200, or 404 for a missing key.
        status: u16,
        /// The decoded answer.
        value: T,
    },
    /// Any other status, with the `error` of the JSON body (or the raw body).
    /// A 200 whose body does not decode also lands here.
    Failed {
        /// The HTTP status.
        status: u16,
        /// The `error` of the JSON body, else the body as text.
        error: String,
    },
    /// No HTTP response. `sent: false`: the connection could not be made, so
    /// nothing was written; `true`: a timeout or a cut connection after the
    /// request went out.
    NoResponse {
        /// Whether the request went out.
        sent: bool,
        /// Why there was no answer.
        error: String,
    },
}

/// A [`Reply`] that is not a success, as an error; [`ReplyError::outcome_unknown`]
/// and [`ReplyError::is_retryable`] answer as [`Reply`]'s do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The node answered with an error status (or a 200 that did not decode).
    #[error("HTTP {status}: {error}")]
    Failed {
        /// The HTTP status.
        status: u16,
        /// The `error` of the JSON body, else the body as text.
        error: String,
    },
    /// No HTTP response.
    #[error("no response: {error}")]
    NoResponse {
        /// Whether the request went out (`false`: nothing was written).
        sent: bool,
        /// Why there was no answer (refused, timed out, cut).
        error: String,
    },
}

impl ReplyError {
    /// See [`Reply::outcome_unknown`].
    pub fn outcome_unknown(&self) -> bool {
        self.as_reply().outcome_unknown()
    }

    /// See [`Reply::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        self.as_reply().is_retryable()
    }

    fn as_reply(&self) -> Reply<()> {
        match self.clone() {
            ReplyError::Failed { status, error } => Reply::Failed { status, error },
            ReplyError::NoResponse { sent, error } => Reply::NoResponse { sent, error },
        }
    }
}

impl<T> Reply<T> {
    /// The HTTP status, if a response came.
    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Success { status, .. } | Reply::Failed { status, .. } => Some(*status),
            Reply::NoResponse { .. } => None,
        }
    }

    /// Whether the call got its expected answer.
    pub fn is_success(&self) -> bool {
        matches!(self, Reply::Success { .. })
    }

    /// The value of a success, else `None`.
    pub fn success(self) -> Option<T> {
        match self {
            Reply::Success { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The value, or an error naming the status and message.
    pub fn into_result(self) -> Result<T, ReplyError> {
        match self {
            Reply::Success { value, .. } => Ok(value),
            Reply::Failed { status, error } => Err(ReplyError::Failed { status, error }),
            Reply::NoResponse { sent, error } => Err(ReplyError::NoResponse { sent, error }),
        }
    }

    /// For a write: may it have been applied although it did not succeed?
    /// Only 503, a 4xx and a request that was never sent say "nothing was
    /// written"; a request sent without an answer, 504, any other 5xx and an
    /// undecodable 200 leave it open.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Reply::Success { .. } => false,
            Reply::NoResponse { sent, .. } => *sent,
            Reply::Failed { status, .. } => !(*status == 503 || (400..500).contains(status)),
        }
    }

    /// Whether the same request, sent again as it is (to this node later, or
    /// to the other one), is safe and may succeed: nothing was written (503,
    /// a connection never made) and the reason is passing (no leader,
    /// ZooKeeper unreachable, node down). Not after a success, a 4xx (bad
    /// input, too large, unauthorized, rejected by the application, session
    /// gone: the same answer again), nor when [`Reply::outcome_unknown`]
    /// (a retry outside a client session could apply a write twice; a
    /// [`Session`] retries those itself, at most once applied).
    pub fn is_retryable(&self) -> bool {
        match self {
            Reply::Success { .. } => false,
            Reply::NoResponse { sent, .. } => !*sent,
            Reply::Failed { status, .. } => *status == 503,
        }
    }

    /// The outcome a history records: done, definitely not, or unknown.
    pub fn outcome(&self) -> Outcome {
        if self.is_success() {
            Outcome::Ok
        } else if self.outcome_unknown() {
            Outcome::Unknown
        } else {
            Outcome::Fail
        }
    }

    /// A success's value through `f`; the other arms unchanged.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Reply<U> {
        match self {
            Reply::Success { status, value } => Reply::Success {
                status,
                value: f(value),
            },
            Reply::Failed { status, error } => Reply::Failed { status, error },
            Reply::NoResponse { sent, error } => Reply::NoResponse { sent, error },
        }
    }

    /// Any answer as `Failed`, no answer as `NoResponse` (for the non-success arms).
    fn from_attempt(a: Attempt) -> Reply<T> {
        match a {
            Attempt::Answered(r) => Reply::Failed {
                status: r.status,
                error: r.error_text(),
            },
            Attempt::NotSent(error) => Reply::NoResponse { sent: false, error },
            Attempt::NoAnswer(error) => Reply::NoResponse { sent: true, error },
        }
    }
}

impl<T: fmt::Debug> fmt::Display for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Success { status, value } => write!(f, "{status} {value:?}"),
            Reply::Failed { status, error } => write!(f, "{status} error: {error}"),
            Reply::NoResponse { sent: true, error } => write!(f, "no response: {error}"),
            Reply::NoResponse { sent: false, error } => write!(f, "not sent: {error}"),
        }
    }
}

/// `GET /v1/status`. Everything but `id` and `role` is optional, so a node
/// that has not applied anything yet (null) still decodes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Status {
    /// The node's id (1 or 2).
    pub id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`: openraft's state on the node.
    pub role: String,
    /// The cluster the node serves.
    #[serde(default)]
    pub cluster: Option<String>,
    /// The node's current Raft term.
    #[serde(default)]
    pub term: Option<u64>,
    /// The leader the node knows of.
    #[serde(default)]
    pub leader: Option<u64>,
    /// The last index in the node's local log.
    #[serde(default)]
    pub last_log_index: Option<u64>,
    /// The last index its state machine applied.
    #[serde(default)]
    pub applied_index: Option<u64>,
    /// The last index its current snapshot covers.
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    /// The last index this node knows W (ZooKeeper) holds.
    #[serde(default)]
    pub witness_log_index: Option<u64>,
    /// Whether its ZooKeeper session is connected.
    #[serde(default)]
    pub zk_connected: Option<bool>,
    /// Keys in the node's state machine (a cheap whole-state comparison).
    #[serde(default)]
    pub keys: Option<u64>,
}

impl Status {
    /// Claims to lead (role "leader" and names itself as leader).
    pub fn is_leader(&self) -> bool {
        self.role == "leader" && self.leader == Some(self.id)
    }
}

/// `POST /v1/cas/{key}`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CasResult {
    /// Whether the swap happened.
    pub ok: bool,
    /// The key's value after the call (the current one if the swap did not happen).
    pub current: Option<String>,
}

#[derive(Deserialize)]
struct IndexBody {
    index: u64,
}

/// A client of one node. Cheap to clone; clones (and [`NodeClient::at`])
/// share one connection pool.
#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    https: bool,
    /// `host:port`.
    endpoint: String,
    /// `<scheme>://<endpoint>`.
    base: String,
    timeout: Duration,
}

impl fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeClient({})", self.base)
    }
}

impl NodeClient {
    /// A client of the node at `endpoint` (`host:port`).
    pub fn new(endpoint: impl fmt::Display, opts: &ClientOptions) -> Result<NodeClient, ClientError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &opts.api_token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ClientError::BadToken)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(opts.connect_timeout)
            .default_headers(headers);
        if let Some(idle) = opts.pool_idle_timeout {
            builder = builder.pool_idle_timeout(idle);
        }
        if let Some(tls) = &opts.tls {
            let identity = tls.identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            let config = crate::tls::client_config(&tls.ca, identity).map_err(ClientError::Tls)?;
            builder = builder.use_preconfigured_tls(config);
        }
        let http = builder.build().map_err(|e| ClientError::Build {
            message: why(&e),
            source: Box::new(e),
        })?;
        let https = opts.tls.is_some();
        Ok(NodeClient::on(http, https, endpoint.to_string(), opts.timeout))
    }

    /// Plain http with the default options (cannot fail: no files to read).
    pub fn plain(endpoint: impl fmt::Display) -> NodeClient {
        NodeClient::new(endpoint, &ClientOptions::default()).expect("a plain http client builds")
    }

    fn on(http: reqwest::Client, https: bool, endpoint: String, timeout: Duration) -> NodeClient {
        let scheme = if https { "https" } else { "http" };
        NodeClient {
            base: format!("{scheme}://{endpoint}"),
            http,
            https,
            endpoint,
            timeout,
        }
    }

    /// A client of another node, with the same options and connection pool.
    pub fn at(&self, endpoint: impl fmt::Display) -> NodeClient {
        NodeClient::on(self.http.clone(), self.https, endpoint.to_string(), self.timeout)
    }

    /// The same client with another per-request limit.
    pub fn with_timeout(&self, timeout: Duration) -> NodeClient {
        NodeClient {
            timeout,
            ..self.clone()
        }
    }

    /// `host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `http://host:port` or `https://host:port`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The per-request limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `PUT /v1/kv/{key}` → the log index of the write.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Reply<u64> {
        let a = self.send(Method::PUT, &kv_path(key, false), Some(value.into())).await;
        decode_json::<IndexBody>(a).map(|b| b.index)
    }

    /// `DELETE /v1/kv/{key}` → the log index of the delete.
    pub async fn delete(&self, key: &str) -> Reply<u64> {
        decode_json::<IndexBody>(self.send(Method::DELETE, &kv_path(key, false), None).await).map(|b| b.index)
    }

    /// Linearizable `GET /v1/kv/{key}`: `Some(value)`, or `None` on 404. A
    /// value that is not UTF-8 is `Failed` (see `get_bytes`).
    pub async fn get(&self, key: &str) -> Reply<Option<String>> {
        decode_utf8(self.get_bytes(key, false).await)
    }

    /// `GET /v1/kv/{key}?stale=true`: the node's local state, no leader check.
    pub async fn get_stale(&self, key: &str) -> Reply<Option<String>> {
        decode_utf8(self.get_bytes(key, true).await)
    }

    /// `GET /v1/kv/{key}` (`stale`: `?stale=true`), the raw bytes.
    pub async fn get_bytes(&self, key: &str, stale: bool) -> Reply<Option<Vec<u8>>> {
        decode_value(self.send(Method::GET, &kv_path(key, stale), None).await)
    }

    /// `POST /v1/cas/{key}`; `None` means "absent" (expect) or "delete" (value).
    pub async fn cas(&self, key: &str, expect: Option<&str>, value: Option<&str>) -> Reply<CasResult> {
        let body = json!({ "expect": expect, "value": value }).to_string().into_bytes();
        decode_json(
            self.send(Method::POST, &format!("/v1/cas/{}", encode_key(key)), Some(body))
                .await,
        )
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Reply<Status> {
        decode_json(self.send(Method::GET, "/v1/status", None).await)
    }

    /// `GET /health/live`: success iff 200.
    pub async fn live(&self) -> Reply<()> {
        expect_200(self.send(Method::GET, "/health/live", None).await)
    }

    /// `GET /health/ready`: success iff 200 (it can serve linearizable requests).
    pub async fn ready(&self) -> Reply<()> {
        expect_200(self.send(Method::GET, "/health/ready", None).await)
    }

    /// Any request; a success with the status and raw body whatever the status.
    pub async fn raw(&self, method: Method, path_and_query: &str, body: Option<Vec<u8>>) -> Reply<(u16, Vec<u8>)> {
        match self.send(method, path_and_query, body).await {
            Attempt::Answered(r) => Reply::Success {
                status: r.status,
                value: (r.status, r.body),
            },
            other => Reply::from_attempt(other),
        }
    }

    /// `POST /v1/session`: opens a client session for exactly-once
    /// requests → its id (see [`Session`], which does this for you).
    pub async fn open_session(&self) -> Reply<u64> {
        #[derive(Deserialize)]
        struct Opened {
            session: u64,
        }
        decode_json::<Opened>(self.send(Method::POST, "/v1/session", None).await).map(|o| o.session)
    }

    /// `POST /v1/app/command` (in `session`, if given) → the entry's log
    /// index and what the application's `apply` returned. A rejection by
    /// the application is `Failed` with status 409.
    pub async fn command(&self, session: Option<SessionTag>, command: impl Into<Vec<u8>>) -> Reply<Applied> {
        decode_applied(
            self.send_in(session, Method::POST, "/v1/app/command", Some(command.into()))
                .await,
        )
    }

    /// `POST /v1/app/query` (`stale`: `?stale=true`, this node's state) →
    /// the application's answer. The application refusing is 409.
    pub async fn query(&self, query: impl Into<Vec<u8>>, stale: bool) -> Reply<Vec<u8>> {
        let path = if stale {
            "/v1/app/query?stale=true"
        } else {
            "/v1/app/query"
        };
        match self.send(Method::POST, path, Some(query.into())).await {
            Attempt::Answered(r) if r.status == 200 => Reply::Success {
                status: 200,
                value: r.body,
            },
            other => Reply::from_attempt(other),
        }
    }

    /// One request, within this client's timeout, and what it came to.
    pub async fn send(&self, method: Method, path_and_query: &str, body: Option<Vec<u8>>) -> Attempt {
        self.send_in(None, method, path_and_query, body).await
    }

    /// [`NodeClient::send`] as a request of a client session (its headers).
    pub async fn send_in(
        &self,
        session: Option<SessionTag>,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Attempt {
        let mut req = self
            .http
            .request(method.0, format!("{}{path_and_query}", self.base))
            .timeout(self.timeout);
        if let Some(tag) = session {
            req = req
                .header(crate::api::SESSION, tag.client)
                .header(crate::api::SEQ, tag.seq)
                .header(crate::api::ACKED_BELOW, tag.acked_below);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let index = resp
                    .headers()
                    .get(crate::api::INDEX)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                match resp.bytes().await {
                    Ok(b) => Attempt::Answered(Response {
                        endpoint: self.endpoint.clone(),
                        status,
                        index,
                        body: b.to_vec(),
                    }),
                    Err(e) => Attempt::NoAnswer(format!("answered {status} but the body was cut: {}", why(&e))),
                }
            }
            Err(e) if e.is_connect() => Attempt::NotSent(why(&e)),
            Err(e) if e.is_timeout() => Attempt::NoAnswer(format!("no answer within {} ms", self.timeout.as_millis())),
            Err(e) => Attempt::NoAnswer(why(&e)),
        }
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

fn decode_json<T: DeserializeOwned>(a: Attempt) -> Reply<T> {
    match a {
        Attempt::Answered(r) if r.status == 200 => match serde_json::from_slice(&r.body) {
            Ok(value) => Reply::Success { status: 200, value },
            Err(e) => Reply::Failed {
                status: 200,
                error: format!("undecodable body ({e}): {}", String::from_utf8_lossy(&r.body)),
            },
        },
        other => Reply::from_attempt(other),
    }
}

/// An application command carried out: its entry's log index and what
/// `apply` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The log index of the command's entry.
    pub index: u64,
    /// What the application's `apply` returned.
    pub result: Vec<u8>,
}

fn decode_applied(a: Attempt) -> Reply<Applied> {
    match a {
        Attempt::Answered(Response {
            status: 200,
            index: Some(index),
            body,
            ..
        }) => Reply::Success {
            status: 200,
            value: Applied { index, result: body },
        },
        Attempt::Answered(r) if r.status == 200 => Reply::Failed {
            status: 200,
            error: "an answer without x-walship-index".into(),
        },
        other => Reply::from_attempt(other),
    }
}

fn decode_value(a: Attempt) -> Reply<Option<Vec<u8>>> {
    match a {
        Attempt::Answered(r) if r.status == 200 => Reply::Success {
            status: 200,
            value: Some(r.body),
        },
        Attempt::Answered(r) if r.status == 404 => Reply::Success {
            status: 404,
            value: None,
        },
        other => Reply::from_attempt(other),
    }
}

fn decode_utf8(reply: Reply<Option<Vec<u8>>>) -> Reply<Option<String>> {
    match reply {
        Reply::Success { status, value: None } => Reply::Success { status, value: None },
        Reply::Success {
            status,
            value: Some(bytes),
        } => match String::from_utf8(bytes) {
            Ok(v) => Reply::Success { status, value: Some(v) },
            Err(e) => Reply::Failed {
                status,
                error: format!("value is not UTF-8: {e}"),
            },
        },
        other => other.map(|_| None),
    }
}

fn expect_200(a: Attempt) -> Reply<()> {
    match a {
        Attempt::Answered(r) if r.status == 200 => Reply::Success { status: 200, value: () },
        other => Reply::from_attempt(other),
    }
}

fn kv_path(key: &str, stale: bool) -> String {
    let query = if stale { "?stale=true" } else { "" };
    format!("/v1/kv/{}{query}", encode_key(key))
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

    fn answered(status: u16, body: &str) -> Attempt {
        Attempt::Answered(Response {
            endpoint: "h:1".into(),
            status,
            index: None,
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn methods_are_tokens() {
        assert_eq!(Method::PUT.to_string(), "PUT");
        assert_eq!(
            Method::from_bytes(b"PURGE").map(|m| m.to_string()),
            Some("PURGE".into())
        );
        assert_eq!(Method::from_bytes(b"NOT A TOKEN"), None);
    }

    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(encode_key("a/b c%"), "a%2Fb%20c%25");
        assert_eq!(encode_key("ü"), "%C3%BC");
        assert_eq!(kv_path("k", true), "/v1/kv/k?stale=true");
    }

    /// The API's contract, status by status (README, "The HTTP API").
    #[test]
    fn outcomes_follow_the_contract() {
        let index = |a| decode_json::<IndexBody>(a).map(|b| b.index);
        // (the attempt, its outcome, whether sending it again as it is is safe and may succeed)
        let cases: Vec<(Attempt, Outcome, bool)> = vec![
            (answered(200, r#"{"index":7}"#), Outcome::Ok, false),
            // Committed or not, nobody knows: the body did not decode.
            (answered(200, "garbage"), Outcome::Unknown, false),
            (answered(400, r#"{"error":"bad key"}"#), Outcome::Fail, false),
            (answered(401, ""), Outcome::Fail, false),
            // Too large stays too large: a retrying client must not loop on it.
            (answered(413, ""), Outcome::Fail, false),
            (answered(409, r#"{"error":"insufficient funds"}"#), Outcome::Fail, false),
            (answered(410, ""), Outcome::Fail, false),
            (answered(503, r#"{"error":"no leader"}"#), Outcome::Fail, true),
            (
                answered(504, r#"{"error":"not confirmed in time"}"#),
                Outcome::Unknown,
                false,
            ),
            (answered(500, ""), Outcome::Unknown, false),
            (answered(502, ""), Outcome::Unknown, false),
            (Attempt::NotSent("Connection refused".into()), Outcome::Fail, true),
            (
                Attempt::NoAnswer("no answer within 10 ms".into()),
                Outcome::Unknown,
                false,
            ),
        ];
        for (attempt, want, retryable) in cases {
            let shown = format!("{attempt:?}");
            let reply = index(attempt);
            assert_eq!(reply.outcome(), want, "{shown}: {reply}");
            assert_eq!(reply.outcome_unknown(), want == Outcome::Unknown, "{shown}");
            assert_eq!(reply.is_retryable(), retryable, "{shown}");
            if let Err(e) = reply.into_result() {
                assert_eq!(e.outcome_unknown(), want == Outcome::Unknown, "{shown}");
                assert_eq!(e.is_retryable(), retryable, "{shown}");
            }
        }
    }

    #[test]
    fn replies_keep_status_and_error() {
        let r = decode_json::<IndexBody>(answered(503, r#"{"error":"no leader"}"#)).map(|b| b.index);
        assert_eq!(
            r,
            Reply::Failed {
                status: 503,
                error: "no leader".into()
            }
        );
        assert_eq!(r.to_string(), "503 error: no leader");
        assert_eq!(r.into_result().unwrap_err().to_string(), "HTTP 503: no leader",);
        let empty = Response {
            endpoint: "h:1".into(),
            status: 502,
            index: None,
            body: b"  ".to_vec(),
        };
        assert_eq!(empty.error_text(), "HTTP 502");
        let r: Reply<()> = Reply::from_attempt(Attempt::NotSent("refused".into()));
        assert_eq!(r.status(), None);
        assert_eq!(r.to_string(), "not sent: refused");
    }

    #[test]
    fn reads_decode_values_and_absence() {
        let get = |a| decode_utf8(decode_value(a));
        assert_eq!(get(answered(200, "v")).success(), Some(Some("v".to_string())));
        assert_eq!(get(answered(404, r#"{"error":"not found"}"#)).success(), Some(None));
        assert_eq!(get(answered(504, "")).outcome(), Outcome::Unknown);
        let bad = Attempt::Answered(Response {
            endpoint: "h:1".into(),
            status: 200,
            index: None,
            body: vec![0xff],
        });
        assert!(matches!(get(bad), Reply::Failed { status: 200, .. }));
    }

    #[test]
    fn status_decodes_with_nulls_and_unknown_fields() {
        let s: Reply<Status> = decode_json(answered(
            200,
            r#"{"id":1,"role":"follower","term":2,"leader":null,"applied_index":null,"new_field":true}"#,
        ));
        let s = s.success().expect("decodes");
        assert_eq!((s.id, s.term, s.leader, s.keys), (1, Some(2), None, None));
        assert!(!s.is_leader());
    }

    #[test]
    fn a_bad_token_is_refused_before_any_request() {
        let opts = ClientOptions {
            api_token: Some("two\nlines".into()),
            ..ClientOptions::default()
        };
        assert!(matches!(NodeClient::new("h:1", &opts), Err(ClientError::BadToken)));
        let c = NodeClient::plain("127.0.0.1:1");
        assert_eq!(c.base_url(), "http://127.0.0.1:1");
        assert_eq!(c.at("h:2").base_url(), "http://h:2");
        assert_eq!(
            c.with_timeout(Duration::from_millis(5)).timeout(),
            Duration::from_millis(5)
        );
    }
}
