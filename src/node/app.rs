//! The embedding entry points of a node that runs an application
//! ([`crate::app`]): start it, submit commands (validated, in a client
//! session or not), answer queries, read its state.

use std::any::Any;

use super::Node;
use super::StartError;
use crate::app::Application;
use crate::app::MAX_COMMAND_BYTES;
use crate::proposer::ProposeError;
use crate::types::Refusal;
use crate::types::Request;
use crate::types::Response;
use crate::types::SessionTag;

impl Node {
    /// Starts a node whose log drives `app` instead of the key-value map
    /// (the key-value API still works beside it). Like [`Node::start`]:
    /// call [`Node::run_background`] next, and serve
    /// `walship::api::router` (feature `router`) for the peer RPC and client API; or let
    /// [`crate::start`] do all three, as `walship node` does. To see the
    /// events of start-up itself (adoption from ZooKeeper), use
    /// [`Node::start_with`] with an [`crate::events::Events`] subscribed
    /// beforehand.
    pub async fn start_with_app<A: Application>(
        cfg: crate::config::NodeConfig,
        app: A,
    ) -> Result<std::sync::Arc<Node>, StartError> {
        Node::start_with(cfg, Some(Box::new(app)), crate::events::Events::new()).await
    }

    /// Commits `command` through Raft (group-committed with other writes)
    /// and returns its log index and what [`Application::apply`] returned
    /// for it. Only the leader proposes: elsewhere this is
    /// `Err(NotLeader(leader))` and nothing was written. `Unavailable` means
    /// nothing was written either (retry later); `Refused` that it never
    /// will be (over [`MAX_COMMAND_BYTES`], or no application on this
    /// node); `Rejected` that the application refused it. `Unknown` (a
    /// timeout or a lost leadership after proposing) means the command may
    /// or may not be applied: to retry safely, send it in a client session
    /// ([`Node::propose_in`]).
    pub async fn propose(&self, command: Vec<u8>) -> Result<(u64, Vec<u8>), ProposeError> {
        self.propose_in(None, command).await
    }

    /// [`Node::propose`] as request `session.seq` of a client session: a
    /// retry of a request already applied gets its first answer back and
    /// is not applied again (see [`Node::open_session`]).
    pub async fn propose_in(
        &self,
        session: Option<SessionTag>,
        command: Vec<u8>,
    ) -> Result<(u64, Vec<u8>), ProposeError> {
        if !self.state_machine().has_app() {
            return Err(ProposeError::Refused(
                "this node runs the key-value map, not an application (start it with Node::start_with_app)".into(),
            ));
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(ProposeError::Refused(format!(
                "command is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                command.len()
            )));
        }
        self.validate(session, &command).await?;
        let (index, resp) = self.submit(session, Request::App(command)).await?;
        match resp {
            Response {
                ok: true,
                current: Some(result),
                ..
            } => Ok((index, result)),
            _ => Err(ProposeError::Unknown(format!("entry {index} gave no result"))),
        }
    }

    /// Opens a client session for exactly-once requests (one committed
    /// entry) and returns its id. Number the session's requests from 1.
    pub async fn open_session(&self) -> Result<u64, ProposeError> {
        let (index, resp) = self.submit(None, Request::OpenSession).await?;
        let id = resp
            .current
            .as_deref()
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes);
        id.ok_or_else(|| ProposeError::Unknown(format!("entry {index} opened no session")))
    }

    /// Commits `req` (in `session` if given) and returns its log index and
    /// response; a refusal decided by applying it is an error here, so an
    /// `Ok` is a request carried out (or a CAS that compared).
    pub async fn submit(&self, session: Option<SessionTag>, req: Request) -> Result<(u64, Response), ProposeError> {
        let req = match session {
            Some(tag) => tag.wrap(req),
            None => req,
        };
        let (index, resp) = self.proposer().write(req).await?;
        match resp.refusal {
            None => Ok((index, resp)),
            Some(Refusal::Rejected(why)) => Err(ProposeError::Rejected(why)),
            Some(Refusal::UnknownSession(client)) => Err(ProposeError::SessionUnknown(client)),
            Some(why @ (Refusal::NoApplication | Refusal::OutsideWindow { .. } | Refusal::Malformed(_))) => {
                Err(ProposeError::Refused(why.to_string()))
            }
        }
    }

    /// The application's `validate`, on this node's applied state. An
    /// acceptance proposes at once (apply decides for real); a refusal is
    /// confirmed first: after a linearizable read point (this node leads,
    /// and has applied everything committed before now) it asks again, so
    /// a write acknowledged just before, even by another leader, is seen.
    /// A request its session has an answer to skips validation: it was
    /// applied, and proposing it again replays that answer.
    async fn validate(&self, session: Option<SessionTag>, command: &[u8]) -> Result<(), ProposeError> {
        let answered = |node: &Node| session.is_some_and(|t| node.state_machine().has_session_reply(t.client, t.seq));
        let check = |node: &Node| node.state_machine().with_app(|a| a.validate(command)).unwrap_or(Ok(()));
        if answered(self) || check(self).is_ok() {
            return Ok(());
        }
        self.proposer().linearize().await?;
        if answered(self) {
            return Ok(());
        }
        check(self).map_err(ProposeError::Rejected)
    }

    /// Answers `query` with the application's [`Application::query`]. With
    /// `linearizable`, only on the leader, after a read point (a quorum,
    /// ZooKeeper included, confirmed its leadership, and it has applied
    /// everything committed before): the answer reflects every write
    /// acknowledged before the call. Otherwise from this node's applied
    /// state, which may lag.
    pub async fn query(&self, query: &[u8], linearizable: bool) -> Result<Vec<u8>, ProposeError> {
        if !self.state_machine().has_app() {
            return Err(ProposeError::Refused(
                "this node runs the key-value map, not an application".into(),
            ));
        }
        if linearizable {
            self.proposer().linearize().await?;
        }
        self.state_machine()
            .with_app(|a| a.query(query))
            .unwrap_or_else(|| Err("no application".into()))
            .map_err(ProposeError::Rejected)
    }

    /// Runs `f` on this node's copy of the application, if it runs one of
    /// type `A`. The state is this node's applied state: on a follower it
    /// may lag the leader; for a linearizable read, on the leader, await
    /// `node.proposer().linearize()` first (or use [`Node::query`]). `f`
    /// must not call back into the node (applying waits while it runs).
    pub fn read_app<A: Application, R>(&self, f: impl FnOnce(&A) -> R) -> Option<R> {
        self.state_machine()
            .with_app(|app| (app as &dyn Any).downcast_ref::<A>().map(f))
            .flatten()
    }
}
