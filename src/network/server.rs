//! Inbound Raft RPC from the other node: decode, hand to the local Raft,
//! encode its answer. One check happens here, before openraft sees an
//! append: an entry that has a local entry's log id but other bytes (a
//! reused log id, which openraft's log matching would keep) is refused and
//! repaired (see `node_repair.rs`).

use std::io::Cursor;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::VoteRequest;
use serde::Deserialize;
use serde::Serialize;

use crate::node::Node;
use crate::types::NodeId;
use crate::types::SnapshotMeta;
use crate::types::TypeConfig;
use crate::types::Vote;

/// A whole snapshot in one request (walship snapshots are in memory anyway).
#[derive(Serialize, Deserialize)]
pub struct SnapshotBody {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Largest vote or takeover body: a vote is a few dozen bytes, a takeover none.
const MAX_SMALL_BODY_BYTES: usize = 64 * 1024;

pub fn routes(node: Arc<Node>) -> Router<Arc<Node>> {
    let max_snapshot_bytes = usize::try_from(node.cfg.max_snapshot_bytes).unwrap_or(usize::MAX);
    Router::new()
        // Bodies: appends are capped by the sender (with room for a single
        // oversized entry); a snapshot is the whole state in one request.
        .route(
            "/raft/append",
            crate::serve::limited(post(append), 2 * super::peer::MAX_APPEND_BODY_BYTES),
        )
        .route("/raft/vote", crate::serve::limited(post(vote), MAX_SMALL_BODY_BYTES))
        .route(
            "/raft/snapshot",
            crate::serve::limited(post(snapshot), max_snapshot_bytes),
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
    if node.server_tls.is_some() {
        let other = crate::types::NODE_IDS
            .iter()
            .copied()
            .find(|id| *id != node.cfg.id)
            .expect("two nodes");
        let expected = crate::tls::node_name(&node.cfg.cluster, other);
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
    match node.auth.check_peer(presented) {
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
    let Some(raft) = node.raft() else { return unavailable() };
    let leader_vote = req.vote;
    // openraft's follower keeps an entry whose log id it already has,
    // whatever its bytes: compare them first. The leader sees an error and
    // retries (not a Conflict, which would make it search backwards), and
    // the repair replaces the local suffix (W's entry wins; none if W does
    // not hold the index). Past the local log's end, the usual case, this
    // is one empty range lookup.
    if let Some(reused) = node.log.first_reused(&req.entries) {
        // The leader is alive and reaching us: no failover over this.
        node.note_leader_contact(leader_vote);
        node.report_reused_in_catch_up(reused, leader_vote);
        return (
            StatusCode::CONFLICT,
            format!(
                "log id reused: this node holds another entry under {} (crc32 {:08x}, the leader's {:08x}); repairing its log, retry",
                reused.log_id, reused.local_digest, reused.other_digest
            ),
        )
            .into_response();
    }
    let res = raft.append_entries(req).await;
    if let Ok(
        AppendEntriesResponse::Success | AppendEntriesResponse::Conflict | AppendEntriesResponse::PartialSuccess(_),
    ) = &res
    {
        node.note_leader_contact(leader_vote);
    }
    encode(&res)
}

async fn vote(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let req: VoteRequest<NodeId> = match bincode::deserialize(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    if let Err(r) = check_peer_input(&req.vote, [req.last_log_id.as_ref()]) {
        return bad_request(r);
    }
    let Some(raft) = node.raft() else { return unavailable() };
    encode(&raft.vote(req).await)
}

async fn snapshot(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let req: SnapshotBody = match bincode::deserialize(&body) {
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
    let Some(raft) = node.raft() else { return unavailable() };
    crate::metrics::METRICS
        .snapshots
        .with_label_values(&["installed"])
        .inc();
    crate::metrics::METRICS
        .snapshot_bytes
        .with_label_values(&["installed"])
        .inc_by(req.data.len() as u64);
    let (index, bytes) = (req.meta.last_log_id.map(|l| l.index), req.data.len() as u64);
    let snapshot = openraft::Snapshot {
        meta: req.meta,
        snapshot: Box::new(Cursor::new(req.data)),
    };
    node.note_leader_contact(req.vote);
    // Known before installing, so the snapshot metric moving is not taken
    // for a snapshot this node built.
    node.events.snapshot_known(index);
    let installs = node.sm.installs();
    let res = raft.install_full_snapshot(req.vote, snapshot).await;
    if res.is_ok() && node.sm.installs() > installs {
        node.events
            .snapshot_installed(index, bytes, crate::events::SnapshotSource::Leader);
    }
    encode(&res)
}

/// The leader is stepping down (SIGTERM, `/admin/leave`): take over now.
async fn takeover(State(node): State<Arc<Node>>) -> Response {
    node.take_over_now();
    StatusCode::OK.into_response()
}
