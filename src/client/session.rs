//! A client session: requests applied exactly once, retried for you.
//!
//! Without one, a write whose answer is lost (a 504, a timeout, a leader
//! killed mid-write) cannot be retried safely: it may already be applied. A
//! [`Session`] opens a session in the cluster (`POST /v1/session`), numbers
//! its requests, and sends each with its number until it gets an answer,
//! across nodes and leader changes. The cluster keeps the answer to every
//! numbered request in its replicated state (the session table, in every
//! snapshot), so a retry of a request already applied gets the first answer
//! back and is not applied again (Raft thesis §6.3).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use walship::client::{NodeClient, Session};
//! let node = NodeClient::plain("127.0.0.1:8081");
//! let session = Session::new(vec![node.clone(), node.at("127.0.0.1:8082")]);
//! let applied = session.command(b"deposit alice 10".to_vec()).await?;
//! let index = session.put("greeting", "hello").await?;
//! # let _ = (applied, index); Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::decode_applied;
use super::encode_key;
use super::Applied;
use super::Attempt;
use super::Method;
use super::NodeClient;
use super::Reply;
use super::SessionTag;

/// How long a request is retried before giving up, by default.
pub const RETRY_FOR: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Why a session's request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The application rejected the command (409): nothing changed. The
    /// node's message, which names the application's reason.
    #[error("{0}")]
    Rejected(String),
    /// Refused for good (400, 401, 403, 413, …): nothing was written.
    #[error("refused: {0}")]
    Refused(String),
    /// No attempt within the retry time was applied, and none may have been:
    /// nothing was written.
    #[error("unavailable, nothing was written: {0}")]
    Unavailable(String),
    /// Retried until the deadline, and an attempt may have been applied
    /// (at most once), or the session expired after such an attempt.
    #[error("outcome unknown (applied at most once): {0}")]
    Unknown(String),
}

impl SessionError {
    /// Whether the request may still have been applied (once).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, SessionError::Unknown(_))
    }

    /// Whether sending the request again later (a new call, so a new
    /// sequence number) is safe and may succeed: only after `Unavailable`,
    /// when nothing was written. Not after `Unknown` (a new call could apply
    /// it a second time), `Rejected` or `Refused` (the same answer again).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SessionError::Unavailable(_))
    }
}

struct State {
    /// The session's id once opened (the log index of its `OpenSession`).
    id: Option<u64>,
    next_seq: u64,
    /// (session, number) sent and not yet answered (or given up on).
    pending: BTreeSet<(u64, u64)>,
    /// The node to try first: the last one that answered.
    preferred: usize,
}

/// Requests applied at most once, each retried until it has an answer or
/// [`Session::with_retry_for`] passes. Requests may run concurrently (up
/// to `walship::types::MAX_SESSION_INFLIGHT` unanswered); clone the
/// clients, not the session, to have several.
pub struct Session {
    nodes: Vec<NodeClient>,
    state: tokio::sync::Mutex<State>,
    retry_for: Duration,
}

impl Session {
    /// A session over these nodes (any of them; followers forward). It is
    /// opened in the cluster by the first request.
    pub fn new(nodes: Vec<NodeClient>) -> Session {
        assert!(!nodes.is_empty(), "a session needs at least one node");
        Session {
            nodes,
            state: tokio::sync::Mutex::new(State {
                id: None,
                next_seq: 1,
                pending: BTreeSet::new(),
                preferred: 0,
            }),
            retry_for: RETRY_FOR,
        }
    }

    /// Retry each request for this long (default [`RETRY_FOR`]).
    pub fn with_retry_for(mut self, retry_for: Duration) -> Session {
        self.retry_for = retry_for;
        self
    }

    /// The session's id, once a request opened it.
    pub async fn id(&self) -> Option<u64> {
        self.state.lock().await.id
    }

    /// An application command (`POST /v1/app/command`), applied once.
    pub async fn command(&self, command: impl Into<Vec<u8>>) -> Result<Applied, SessionError> {
        let r = self.once(Method::POST, "/v1/app/command", command.into()).await?;
        decode_applied(Attempt::Answered(r))
            .into_result()
            .map_err(|e| SessionError::Unknown(format!("applied, but the answer is unreadable: {e}")))
    }

    /// `PUT /v1/kv/{key}`, applied once → its log index.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<u64, SessionError> {
        let r = self
            .once(Method::PUT, &format!("/v1/kv/{}", encode_key(key)), value.into())
            .await?;
        index_of(&r.body)
    }

    /// `DELETE /v1/kv/{key}`, applied once → its log index.
    pub async fn delete(&self, key: &str) -> Result<u64, SessionError> {
        let r = self
            .once(Method::DELETE, &format!("/v1/kv/{}", encode_key(key)), Vec::new())
            .await?;
        index_of(&r.body)
    }

    /// A linearizable application query, retried like a command (reads
    /// change nothing, so every retry is safe).
    pub async fn query(&self, query: impl Into<Vec<u8>>) -> Result<Vec<u8>, SessionError> {
        let query = query.into();
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let node = self.node().await;
            let last = match self.nodes[node].query(query.clone(), false).await {
                Reply::Success { value, .. } => {
                    self.state.lock().await.preferred = node;
                    return Ok(value);
                }
                Reply::Failed { status: 409, error } => return Err(SessionError::Rejected(error)),
                Reply::Failed { status, error } if (400..500).contains(&status) => {
                    return Err(SessionError::Refused(error))
                }
                other => other.to_string(),
            };
            self.rotate(node).await;
            if Instant::now() + backoff >= deadline {
                return Err(SessionError::Unavailable(last));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sends one numbered request until it is answered: 200, or a refusal.
    async fn once(&self, method: Method, path: &str, body: Vec<u8>) -> Result<super::Response, SessionError> {
        let deadline = Instant::now() + self.retry_for;
        let (mut id, mut seq) = self.begin(deadline).await?;
        // Whether an attempt of this request may have been applied.
        let mut maybe_applied = false;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let node = self.node().await;
            let tag = SessionTag {
                client: id,
                seq,
                acked_below: self.acked_below(id).await,
            };
            let attempt = self.nodes[node]
                .send_in(Some(tag), method.clone(), path, Some(body.clone()))
                .await;
            let last = match attempt {
                Attempt::Answered(r) if r.status == 200 => {
                    self.finish(id, seq, Some(node)).await;
                    return Ok(r);
                }
                Attempt::Answered(r) if r.status == 409 => {
                    self.finish(id, seq, Some(node)).await;
                    return Err(SessionError::Rejected(r.error_text()));
                }
                // The session is gone (evicted): this attempt was not
                // applied. If no earlier one can have been, start over in a
                // new session; otherwise the outcome stays unknown.
                Attempt::Answered(r) if r.status == 410 => {
                    self.finish(id, seq, Some(node)).await;
                    if maybe_applied {
                        return Err(SessionError::Unknown(format!(
                            "session {id} expired after an attempt that may have been applied: {}",
                            r.error_text()
                        )));
                    }
                    self.forget(id).await;
                    (id, seq) = self.begin(deadline).await?;
                    continue;
                }
                Attempt::Answered(r) if (400..500).contains(&r.status) => {
                    self.finish(id, seq, Some(node)).await;
                    return Err(SessionError::Refused(r.error_text()));
                }
                Attempt::Answered(r) => {
                    maybe_applied |= r.status != 503;
                    format!("{}: HTTP {} {}", r.endpoint, r.status, r.error_text())
                }
                Attempt::NotSent(e) => e,
                Attempt::NoAnswer(e) => {
                    maybe_applied = true;
                    e
                }
            };
            self.rotate(node).await;
            if Instant::now() + backoff >= deadline {
                // Given up: its number leaves the window (a late attempt
                // may still apply it, once).
                self.finish(id, seq, None).await;
                return Err(if maybe_applied {
                    SessionError::Unknown(last)
                } else {
                    SessionError::Unavailable(last)
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The session's id (opening it first if needed) and a new number.
    async fn begin(&self, deadline: Instant) -> Result<(u64, u64), SessionError> {
        let mut state = self.state.lock().await;
        let mut backoff = FIRST_BACKOFF;
        while state.id.is_none() {
            let node = state.preferred;
            // Opening twice only leaves an unused session to be evicted.
            let last = match self.nodes[node].open_session().await {
                Reply::Success { value, .. } => {
                    state.id = Some(value);
                    state.next_seq = 1;
                    break;
                }
                Reply::Failed { status, error } if (400..500).contains(&status) => {
                    return Err(SessionError::Refused(error))
                }
                other => other.to_string(),
            };
            state.preferred = (node + 1) % self.nodes.len();
            if Instant::now() + backoff >= deadline {
                return Err(SessionError::Unavailable(format!("could not open a session: {last}")));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let id = state.id.expect("opened above");
        let seq = state.next_seq;
        state.next_seq += 1;
        state.pending.insert((id, seq));
        Ok((id, seq))
    }

    /// The lowest number of session `id` still waiting for its answer.
    async fn acked_below(&self, id: u64) -> u64 {
        let state = self.state.lock().await;
        let waiting = state
            .pending
            .range((id, 0)..=(id, u64::MAX))
            .next()
            .map(|(_, seq)| *seq);
        waiting.unwrap_or(if state.id == Some(id) { state.next_seq } else { u64::MAX })
    }

    async fn node(&self) -> usize {
        self.state.lock().await.preferred
    }

    async fn rotate(&self, from: usize) {
        let mut state = self.state.lock().await;
        if state.preferred == from {
            state.preferred = (from + 1) % self.nodes.len();
        }
    }

    async fn finish(&self, id: u64, seq: u64, answered_by: Option<usize>) {
        let mut state = self.state.lock().await;
        state.pending.remove(&(id, seq));
        if let Some(node) = answered_by {
            state.preferred = node;
        }
    }

    /// Drops session `id` after the cluster said it is gone.
    async fn forget(&self, id: u64) {
        let mut state = self.state.lock().await;
        if state.id == Some(id) {
            state.id = None;
        }
    }
}

fn index_of(body: &[u8]) -> Result<u64, SessionError> {
    #[derive(serde::Deserialize)]
    struct IndexBody {
        index: u64,
    }
    serde_json::from_slice::<IndexBody>(body)
        .map(|b| b.index)
        .map_err(|e| SessionError::Unknown(format!("applied, but the answer is unreadable: {e}")))
}
