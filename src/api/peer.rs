//! Inbound Raft RPC from the other node (`/raft/*`): check who sends it,
//! decode it, check its terms and indexes are in range, hand it to the
//! node ([`Node::append_from_leader`], [`Node::vote_for`],
//! [`Node::snapshot_chunk_from_leader`]), encode the answer. The sending half is
//! `network::peer`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::VoteRequest;
use serde::Serialize;

use crate::network::SnapshotChunk;
use crate::node::FromLeader;
use crate::node::Node;
use crate::types::NodeId;
use crate::types::TypeConfig;
use crate::types::Vote;

/// Largest vote or takeover body: a vote is a few dozen bytes, a takeover none.
const MAX_SMALL_BODY_BYTES: usize = 64 * 1024;

pub fn routes(node: Arc<Node>) -> Router<Arc<Node>> {
    Router::new()
        // Bodies: appends are capped by the sender (with room for a single
        // oversized entry); a snapshot comes in pieces of a fixed size.
        .route(
            "/raft/append",
            crate::serve::limited(post(append), 2 * crate::network::peer::MAX_APPEND_BODY_BYTES),
        )
        .route("/raft/vote", crate::serve::limited(post(vote), MAX_SMALL_BODY_BYTES))
        .route(
            "/raft/snapshot",
            crate::serve::limited(
                post(snapshot),
                crate::network::SNAPSHOT_CHUNK_BYTES + MAX_SMALL_BODY_BYTES,
            ),
        )
        .route(
            "/raft/takeover",
            crate::serve::limited(post(takeover), MAX_SMALL_BODY_BYTES),
        )
        .route_layer(axum::middleware::from_fn_with_state(node, require_peer))
}

/// Refuses peer RPC, before the body is read, from anyone but the other
/// node: in TLS mode its certificate must name it (`node<other>.<cluster>.walship`;
/// 401 without a certificate, 403 with another), and with a secret the
/// request must carry the token derived from it (401 missing, 403 wrong).
async fn require_peer(
    State(node): State<Arc<Node>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if node.server_tls().is_some() {
        let other = crate::node::other(node.cfg().id);
        let expected = crate::tls::node_name(&node.cfg().cluster, other);
        match req.extensions().get::<crate::tls::Identity>() {
            Some(crate::tls::Identity::Node(id)) if *id == other => {}
            None | Some(crate::tls::Identity::Anonymous) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    format!("peer RPC needs node {other}'s certificate ({expected})"),
                )
                    .into_response()
            }
            Some(who) => {
                tracing::warn!(?who, "peer RPC refused: the certificate is not node {other}'s");
                return (
                    StatusCode::FORBIDDEN,
                    format!("peer RPC needs node {other}'s certificate ({expected}); this one is {who:?}"),
                )
                    .into_response();
            }
        }
    }
    let presented = req
        .headers()
        .get(crate::auth::PEER_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    match node.auth().check_peer(presented) {
        Ok(()) => next.run(req).await,
        Err(crate::auth::Refusal::Missing) => (StatusCode::UNAUTHORIZED, "peer token required").into_response(),
        Err(crate::auth::Refusal::Wrong) => (StatusCode::FORBIDDEN, "wrong peer token").into_response(),
    }
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("undecodable raft rpc: {e}")).into_response()
}

/// Terms and indexes a peer may name. A real cluster stays far below (a
/// term per election, an index per entry); above, openraft's engine does
/// arithmetic that overflows (a vote of term u64::MAX panicked its core and
/// left both nodes leaderless, restarts included).
const MAX_PEER_TERM: u64 = 1 << 40;
const MAX_PEER_INDEX: u64 = 1 << 60;

/// Checks what a peer's request says before openraft sees it: the vote is
/// the other node's (or this node's, on a hand-over), its term and every
/// log id in range, and no log id's term above the vote's (a leader never
/// holds an entry from a later term than its own).
fn check_peer_input<'a>(
    vote: &Vote,
    log_ids: impl IntoIterator<Item = Option<&'a crate::types::LogId>>,
) -> Result<(), String> {
    let term = vote.leader_id().term;
    let from = vote.leader_id().voted_for();
    if !from.is_some_and(|id| crate::types::NODE_IDS.contains(&id)) {
        return Err(format!("vote of {from:?}: not a node of this cluster"));
    }
    if term > MAX_PEER_TERM {
        return Err(format!("term {term} is out of range"));
    }
    for l in log_ids.into_iter().flatten() {
        if l.leader_id.term > term || l.index > MAX_PEER_INDEX {
            return Err(format!("log id {l} is out of range for a vote of term {term}"));
        }
    }
    Ok(())
}

fn encode<T: Serialize>(v: &T) -> Response {
    match bincode::serialize(v) {
        Ok(b) => b.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "raft is restarting").into_response()
}

async fn append(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match bincode::deserialize(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let ids = [req.prev_log_id.as_ref(), req.leader_commit.as_ref()]
        .into_iter()
        .chain(req.entries.iter().map(|e| Some(&e.log_id)));
    if let Err(r) = check_peer_input(&req.vote, ids) {
        return bad_request(r);
    }
    let consecutive = req
        .entries
        .iter()
        .enumerate()
        .all(|(i, e)| e.log_id.index == req.prev_log_id.map_or(0, |p| p.index + 1) + i as u64);
    if !consecutive {
        return bad_request("entries do not follow prev_log_id one by one");
    }
    match node.append_from_leader(req).await {
        FromLeader::Answer(res) => encode(&res),
        FromLeader::Restarting => unavailable(),
        FromLeader::Refused(why) => (StatusCode::CONFLICT, why).into_response(),
    }
}

async fn vote(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let req: VoteRequest<NodeId> = match bincode::deserialize(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    if let Err(r) = check_peer_input(&req.vote, [req.last_log_id.as_ref()]) {
        return bad_request(r);
    }
    match node.vote_for(req).await {
        Some(res) => encode(&res),
        None => unavailable(),
    }
}

/// One piece of a snapshot from the leader (`network::SnapshotChunk`).
async fn snapshot(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let req: SnapshotChunk = match bincode::deserialize(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let ids = [
        req.meta.last_log_id.as_ref(),
        req.meta.last_membership.log_id().as_ref(),
    ];
    if let Err(r) = check_peer_input(&req.vote, ids) {
        return bad_request(r);
    }
    let max_bytes = node.cfg().max_snapshot_bytes;
    if req.total_bytes > max_bytes {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a snapshot of {} bytes; this node takes at most {max_bytes} (--max-snapshot-bytes)",
                req.total_bytes
            ),
        )
            .into_response();
    }
    match node.snapshot_chunk_from_leader(req).await {
        Ok(Some(res)) => encode(&res),
        Ok(None) => unavailable(),
        Err(why) => (StatusCode::CONFLICT, why).into_response(),
    }
}

/// The leader is stepping down (SIGTERM, `/admin/leave`): take over now.
async fn takeover(State(node): State<Arc<Node>>) -> Response {
    node.take_over_now();
    StatusCode::OK.into_response()
}
