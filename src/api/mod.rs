//! The client HTTP/JSON API. Any node accepts any request: a follower
//! forwards to the leader (one hop; a forwarded request that lands on a
//! non-leader is a 503). Status codes: 400 bad input, 413 too large, 503
//! nothing was written (no leader, ZooKeeper unreachable), 504 outcome
//! unknown (proposed, not confirmed in time). A 200 for a write means it is
//! committed (hence in ZooKeeper, which sits in every quorum) and applied.

mod error;
pub(crate) mod peer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;
use axum::Json;
use axum::Router;
use openraft::ServerState;
use serde_json::json;

// axum's status codes inside: for the handlers here and in `peer`, not for embedders.
pub(crate) use self::error::ApiError;
use crate::node::Node;
use crate::proposer::ProposeError;
use crate::types::stages::RequestClock;
use crate::types::Request;

pub use crate::types::MAX_KEY_BYTES;
pub use crate::types::MAX_VALUE_BYTES;
/// Marks a request a follower forwarded, so it is never forwarded twice.
const FORWARDED: &str = "x-walship-forwarded";
/// A request's client session (`crate::types::SessionTag`), forwarded as is.
pub const SESSION: &str = "x-walship-session";
/// A request's number in its client session.
pub const SEQ: &str = "x-walship-seq";
/// The session's client has every answer below this number.
pub const ACKED_BELOW: &str = "x-walship-acked-below";
/// The log index of an application command's entry, in its answer.
pub const INDEX: &str = "x-walship-index";

/// The node's whole HTTP API (client routes, health, metrics, admin and the
/// peer RPC) as an axum [`Router`], for an embedder who serves it on a
/// server of their own; [`crate::start`] serves it without this, on a
/// listener with walship's connection cap, timeouts and TLS, which a server
/// of one's own must then provide. Feature `router`.
#[cfg(feature = "router")]
pub fn router(node: Arc<Node>) -> Router {
    routes(node)
}

/// [`router`]'s routes (public only with feature `router`).
pub(crate) fn routes(node: Arc<Node>) -> Router {
    // Client routes that need the API token when one is configured; status,
    // health and metrics stay open for probes, scrapers and operators.
    // The body limit of these routes is checked with the token, in one
    // layer (`require_client_token`), and the router's `DefaultBodyLimit`.
    let guarded = Router::new()
        .route("/v1/kv/*key", get(get_key).put(put_key).delete(delete_key))
        .route("/v1/cas/*key", post(cas_key))
        .route("/v1/session", post(open_session))
        .route("/v1/app/command", post(app_command))
        .route("/v1/app/query", post(app_query))
        .route("/admin/leave", post(admin_leave))
        .route("/admin/snapshot", post(admin_snapshot))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&node),
            require_client_token,
        ));
    Router::new()
        .merge(guarded)
        .route("/v1/status", get(status))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(peer::routes(Arc::clone(&node)))
        .layer(DefaultBodyLimit::max(MAX_CLIENT_BODY_BYTES))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(node)
}

/// The body a client route takes: larger than any valid value, so an
/// oversize value gets our JSON 413.
const MAX_CLIENT_BODY_BYTES: usize = 4 * MAX_VALUE_BYTES;

/// 401 without a token, 403 with a wrong one; nothing is read or changed.
/// Then 413 for a declared body over `MAX_CLIENT_BODY_BYTES`, before any of
/// it is read (a layer of its own cost every request a boxed service clone).
/// With `tls_client_auth`, the connection's certificate must also be a
/// client's of this cluster, or a node's (a follower forwarding a client's
/// request, whose certificate it checked; a node can change anything
/// through Raft anyway, so this opens nothing more to it).
async fn require_client_token(
    State(node): State<Arc<Node>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if node.cfg().tls_client_auth {
        use crate::tls::Identity;
        match req.extensions().get::<Identity>().copied().unwrap_or_default() {
            Identity::Client | Identity::Node(_) => {}
            Identity::Anonymous => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "this API needs a client certificate ({})",
                        crate::tls::client_name(&node.cfg().cluster)
                    ),
                )
                .into_response()
            }
            Identity::Stranger => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("the client certificate is not one of cluster {}", node.cfg().cluster),
                )
                .into_response()
            }
        }
    }
    let verdict = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        node.auth()
            .check_client(header(axum::http::header::AUTHORIZATION.as_str()))
    };
    match verdict {
        Ok(()) => match crate::serve::declared_too_large(req.headers(), MAX_CLIENT_BODY_BYTES) {
            Some(refused) => refused,
            None => next.run(req).await,
        },
        Err(crate::auth::Refusal::Missing) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this API needs `Authorization: Bearer <token>`",
        )
        .into_response(),
        Err(crate::auth::Refusal::Wrong) => ApiError::new(StatusCode::FORBIDDEN, "wrong API token").into_response(),
    }
}

/// The path a follower forwards for `key`: the key as the client meant it,
/// every byte outside RFC 3986's unreserved set percent-encoded, so the
/// leader decodes exactly this key. (Forwarding the decoded key raw made
/// `a%23b` write `a` and `..%2Fx` reach other routes: the same request wrote
/// different keys depending on which node got it.)
fn key_path(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", crate::client::encode_key(key))
}

/// `{"index":N}`, as `Json` writes it, without building a JSON value for it
/// on every write.
fn index_reply(index: u64) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        format!("{{\"index\":{index}}}"),
    )
        .into_response()
}

/// The path a request is forwarded to the leader on, built only if it is
/// (encoding the key on every request cost the leader for nothing).
#[derive(Clone, Copy)]
enum ForwardPath<'a> {
    Fixed(&'static str),
    /// A key route: its prefix and the key, encoded by [`key_path`].
    Key(&'static str, &'a str),
}

impl ForwardPath<'_> {
    fn render(self) -> String {
        match self {
            ForwardPath::Fixed(p) => p.to_string(),
            ForwardPath::Key(prefix, key) => key_path(prefix, key),
        }
    }
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request("empty key"));
    }
    // URLs treat these as dot-segments however they are encoded, so no node
    // could forward them, or be sent them, as a key.
    if key == "." || key == ".." {
        return Err(ApiError::bad_request(format!(
            "key {key:?} cannot be addressed in a URL"
        )));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::too_large(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(v: &[u8]) -> Result<(), ApiError> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(ApiError::too_large(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            v.len()
        )));
    }
    Ok(())
}

async fn put_key(State(node): State<Arc<Node>>, Path(key): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let _timer = node.metrics().write_seconds.start_timer();
    let clock = RequestClock::start();
    let res = async {
        check_key(&key)?;
        check_value(&body)?;
        let req = Request::Set {
            key: key.clone(),
            value: body.to_vec(),
        };
        clock.handed();
        write(
            &node,
            req,
            &headers,
            Method::PUT,
            ForwardPath::Key("/v1/kv/", &key),
            body.clone(),
        )
        .await
    };
    res.await
        .inspect(|(index, _)| clock.replied(*index))
        .map(|(index, _)| index_reply(index))
        .unwrap_or_else(|e| e.into_response())
}

async fn delete_key(State(node): State<Arc<Node>>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let _timer = node.metrics().write_seconds.start_timer();
    let clock = RequestClock::start();
    let res = async {
        check_key(&key)?;
        let req = Request::Delete { key: key.clone() };
        clock.handed();
        write(
            &node,
            req,
            &headers,
            Method::DELETE,
            ForwardPath::Key("/v1/kv/", &key),
            Bytes::new(),
        )
        .await
    };
    res.await
        .inspect(|(index, _)| clock.replied(*index))
        .map(|(index, _)| index_reply(index))
        .unwrap_or_else(|e| e.into_response())
}

/// `{"expect": string|null, "value": string|null}`, both fields required.
type Expect = Option<Vec<u8>>;

fn parse_cas(body: &[u8]) -> Result<(Expect, Option<Vec<u8>>), ApiError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("body must be a JSON object"))?;
    let field = |name: &str| -> Result<Option<Vec<u8>>, ApiError> {
        match obj.get(name) {
            None => Err(ApiError::bad_request(format!(
                "missing field \"{name}\" (use null for absent)"
            ))),
            Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.as_bytes().to_vec())),
            Some(_) => Err(ApiError::bad_request(format!(
                "field \"{name}\" must be a string or null"
            ))),
        }
    };
    Ok((field("expect")?, field("value")?))
}

async fn cas_key(State(node): State<Arc<Node>>, Path(key): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let _timer = node.metrics().write_seconds.start_timer();
    let clock = RequestClock::start();
    let res = async {
        check_key(&key)?;
        let (expect, value) = parse_cas(&body)?;
        if let Some(v) = &value {
            check_value(v)?;
        }
        let req = Request::Cas {
            key: key.clone(),
            expect,
            value,
        };
        clock.handed();
        write(
            &node,
            req,
            &headers,
            Method::POST,
            ForwardPath::Key("/v1/cas/", &key),
            body.clone(),
        )
        .await
    };
    match res.await.inspect(|(index, _)| clock.replied(*index)) {
        Ok((_, Some(resp))) => {
            let current = resp.current.map(|c| String::from_utf8_lossy(&c).into_owned());
            Json(json!({ "ok": resp.ok, "current": current })).into_response()
        }
        Ok((_, None)) => ApiError::internal("no CAS result").into_response(),
        Err(e) => e.into_response(),
    }
}

/// Proposes `req` (in the client's session, if its headers name one) if
/// this node leads; otherwise forwards the original HTTP request. Returns
/// (log index, response) when done here; a forwarded request's answer comes
/// back as `ApiError::Forwarded` carrying the leader's response verbatim.
async fn write(
    node: &Arc<Node>,
    req: Request,
    headers: &HeaderMap,
    method: Method,
    path: ForwardPath<'_>,
    body: Bytes,
) -> Result<(u64, Option<crate::types::Response>), ApiError> {
    let session = session_tag(headers)?;
    let (index, resp) = on_leader(node, headers, method, path, body, node.submit(session, req)).await?;
    Ok((index, Some(resp)))
}

/// Runs `work` (a proposal or read point) here; if this node does not lead,
/// forwards the client's request to the leader instead and relays its answer
/// as `ApiError::Forwarded`.
async fn on_leader<T>(
    node: &Arc<Node>,
    headers: &HeaderMap,
    method: Method,
    path: ForwardPath<'_>,
    body: Bytes,
    work: impl std::future::Future<Output = Result<T, ProposeError>>,
) -> Result<T, ApiError> {
    match work.await {
        Ok(v) => Ok(v),
        Err(ProposeError::NotLeader(Some(l))) if l != node.cfg().id => {
            Err(forward(node, l, headers, method, &path.render(), body).await)
        }
        Err(e) => Err(ApiError::from_propose(e)),
    }
}

/// The client session a request is part of, from its `x-walship-session`,
/// `x-walship-seq` and `x-walship-acked-below` headers (all three, or none).
fn session_tag(headers: &HeaderMap) -> Result<Option<crate::types::SessionTag>, ApiError> {
    let get = |name: &str| -> Result<Option<u64>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| ApiError::bad_request(format!("header {name} must be a decimal number")))
            })
            .transpose()
    };
    match (get(SESSION)?, get(SEQ)?, get(ACKED_BELOW)?) {
        (None, None, None) => Ok(None),
        (Some(client), Some(seq), Some(acked_below)) if seq >= 1 && acked_below >= 1 => {
            Ok(Some(crate::types::SessionTag {
                client,
                seq,
                acked_below,
            }))
        }
        (Some(_), Some(_), Some(_)) => Err(ApiError::bad_request(format!("{SEQ} and {ACKED_BELOW} count from 1"))),
        _ => Err(ApiError::bad_request(format!(
            "a request in a session carries all of {SESSION}, {SEQ} and {ACKED_BELOW}"
        ))),
    }
}

/// `POST /v1/session`: opens a client session (one committed entry) →
/// `{"session": id}`. Number the session's requests from 1.
async fn open_session(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let res = on_leader(
        &node,
        &headers,
        Method::POST,
        ForwardPath::Fixed("/v1/session"),
        Bytes::new(),
        node.open_session(),
    )
    .await;
    match res {
        Ok(id) => Json(json!({ "session": id })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/app/command`: the body is one command for the application;
/// the answer is what `apply` returned (octet-stream) with the entry's log
/// index in `x-walship-index`. 409 when the application rejected it (in
/// `validate`: nothing was written; in `apply`: committed, nothing changed).
async fn app_command(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let _timer = node.metrics().write_seconds.start_timer();
    let clock = RequestClock::start();
    let res = async {
        let session = session_tag(&headers)?;
        clock.handed();
        on_leader(
            &node,
            &headers,
            Method::POST,
            ForwardPath::Fixed("/v1/app/command"),
            body.clone(),
            node.propose_in(session, body.to_vec()),
        )
        .await
    };
    match res.await.inspect(|(index, _)| clock.replied(*index)) {
        Ok((index, result)) => ([(INDEX, index.to_string())], result).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/app/query[?stale=true]`: the body is a query for the
/// application; the answer is its `query`'s (octet-stream). Linearizable
/// (answered by the leader after a read point) unless `stale`.
async fn app_query(
    State(node): State<Arc<Node>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _timer = node.metrics().read_seconds.start_timer();
    let stale = q.get("stale").is_some_and(|v| v == "true" || v == "1");
    let res = if stale {
        node.query(&body, false).await.map_err(ApiError::from_propose)
    } else {
        on_leader(
            &node,
            &headers,
            Method::POST,
            ForwardPath::Fixed("/v1/app/query"),
            body.clone(),
            node.query(&body, true),
        )
        .await
    };
    match res {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Sends the client's request to the leader and relays its answer.
async fn forward(
    node: &Arc<Node>,
    leader: u64,
    headers: &HeaderMap,
    method: Method,
    path: &str,
    body: Bytes,
) -> ApiError {
    if headers.contains_key(FORWARDED) {
        return ApiError::unavailable("leadership is changing; nothing was written");
    }
    let addr = match node.peers().addr(leader).await {
        Ok(Some(a)) => a,
        _ => return ApiError::unavailable(format!("leader {leader} is not reachable; nothing was written")),
    };
    let url = node.peers().url(&addr, path);
    let timeout = Duration::from_millis(node.cfg().write_timeout_ms + 1000);
    let mut request = node
        .peers()
        .http()
        .request(method, url)
        .header(FORWARDED, node.cfg().id.to_string());
    // The leader checks the client's own token (ours is no client credential).
    if let Some(a) = headers.get(axum::http::header::AUTHORIZATION) {
        request = request.header(reqwest::header::AUTHORIZATION, a.as_bytes());
    }
    for name in [SESSION, SEQ, ACKED_BELOW] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v.as_bytes());
        }
    }
    let sent = request.timeout(timeout).body(body).send().await;
    match sent {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let index = resp
                .headers()
                .get(INDEX)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match resp.bytes().await {
                Ok(b) => ApiError::Forwarded(status, content_type, index, b),
                Err(e) => ApiError::unknown(format!("leader {leader} answered but the reply was cut: {e}")),
            }
        }
        Err(e) if e.is_connect() => {
            node.peers().forget(leader);
            // The cause says whether it was down or, in TLS mode, not who
            // ZooKeeper said it was.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            ApiError::unavailable(format!(
                "cannot connect to leader {leader} ({cause}): nothing was written"
            ))
        }
        Err(e) => ApiError::unknown(format!("leader {leader} did not answer: {e}")),
    }
}

async fn get_key(
    State(node): State<Arc<Node>>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let _timer = node.metrics().read_seconds.start_timer();
    if let Err(e) = check_key(&key) {
        return e.into_response();
    }
    let stale = q.get("stale").is_some_and(|v| v == "true" || v == "1");
    if !stale {
        if let Err(e) = linearize(&node, &headers, &key).await {
            return e.into_response();
        }
    }
    match node.state_machine().get(&key) {
        Some(v) => v.into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("key {key:?} not found")).into_response(),
    }
}

/// Waits until this node may answer a linearizable read: it leads, a quorum
/// (ZooKeeper included) confirmed that just now, and it has applied up to
/// that point. A follower sends the read to the leader instead, as
/// `on_leader` does for every request that needs the leader.
async fn linearize(node: &Arc<Node>, headers: &HeaderMap, key: &str) -> Result<(), ApiError> {
    on_leader(
        node,
        headers,
        Method::GET,
        ForwardPath::Key("/v1/kv/", key),
        Bytes::new(),
        node.proposer().linearize(),
    )
    .await
}

async fn status(State(node): State<Arc<Node>>) -> Response {
    let Some(raft) = node.raft() else {
        return ApiError::unavailable("node is restarting its raft").into_response();
    };
    let m = raft.metrics().borrow().clone();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    Json(json!({
        "id": node.cfg().id,
        "cluster": node.cfg().cluster,
        "role": role,
        "term": m.current_term,
        "leader": m.current_leader,
        "last_log_index": m.last_log_index,
        "applied_index": m.last_applied.map(|l| l.index),
        "snapshot_index": m.snapshot.map(|l| l.index),
        "witness_log_index": node.witness_last_log_id().map(|l| l.index),
        "zk_connected": node.zk_connected(),
        "keys": node.state_machine().len(),
    }))
    .into_response()
}

/// 200 only while a linearizable request can be served through this node:
/// ZooKeeper connected and a leader known (confirmed by a quorum if it is us).
async fn ready(State(node): State<Arc<Node>>) -> Response {
    let Some(raft) = node.raft() else {
        return ApiError::unavailable("raft restarting").into_response();
    };
    let m = raft.metrics().borrow().clone();
    let fresh_ms = node.cfg().election_timeout_ms;
    // A leader is ready only while it also holds a live lease in ZooKeeper
    // for its term, so a deposed leader that still remembers a recent
    // quorum does not answer ready beside its successor.
    let lease = node.lease();
    let holds_lease = lease
        .live(
            m.current_term,
            std::time::Duration::from_millis(fresh_ms),
            std::time::Instant::now(),
        )
        .is_some_and(|h| h.id == node.cfg().id && h.term == m.current_term);
    let ok = node.zk_connected()
        && match m.state {
            ServerState::Leader => holds_lease && m.millis_since_quorum_ack.is_some_and(|ms| ms < fresh_ms),
            _ => m.current_leader.is_some_and(|l| l != node.cfg().id),
        };
    if ok {
        Json(json!({ "ready": true })).into_response()
    } else {
        ApiError::unavailable("not ready: no confirmed leader or ZooKeeper unreachable").into_response()
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let body = node.metrics().render(&node.at_scrape());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Hands leadership over (if this node leads) and stops the process, as
/// SIGTERM does; answers once the hand-over has started.
async fn admin_leave(State(node): State<Arc<Node>>) -> Response {
    node.request_stop();
    Json(json!({ "leaving": true })).into_response()
}

/// Builds a snapshot now; on the leader it is also stored in ZooKeeper
/// (compacting W's WAL) before the answer.
async fn admin_snapshot(State(node): State<Arc<Node>>) -> Response {
    match node.snapshot_now().await {
        Ok((index, uploaded)) => {
            Json(json!({ "snapshot_index": index, "uploaded_to_zookeeper": uploaded })).into_response()
        }
        Err(e) => ApiError::unavailable(format!("snapshot failed: {e}")).into_response(),
    }
}

/// Live unless the Raft core stopped by itself (the process is then about
/// to exit: `Node::core_watch_loop`).
async fn live(State(node): State<Arc<Node>>) -> Response {
    match node.fatal() {
        Some(why) => ApiError::unavailable(why.to_string()).into_response(),
        None => "ok".into_response(),
    }
}
