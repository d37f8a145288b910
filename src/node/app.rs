//! The embedding entry points of a node that runs an application
//! ([`crate::app`]): start it, propose commands, read its state.

use std::any::Any;

use super::Node;
use super::StartError;
use crate::app::Application;
use crate::app::MAX_COMMAND_BYTES;
use crate::proposer::ProposeError;
use crate::types::Request;

impl Node {
    /// Starts a node whose log drives `app` instead of the key-value map
    /// (the key-value API still works beside it). Like [`Node::start`]:
    /// call [`Node::run_background`] next, and serve
    /// [`crate::api::router`] for the peer RPC and client API; or let
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
    /// node): do not retry. `Unknown` (a timeout or a lost
    /// leadership after proposing) means the command may or may not be
    /// applied, so commands should be safe to retry or carry their own
    /// identity.
    pub async fn propose(&self, command: Vec<u8>) -> Result<(u64, Vec<u8>), ProposeError> {
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
        let (index, resp) = self.proposer().write(Request::App(command)).await?;
        match resp {
            crate::types::Response {
                ok: true,
                current: Some(result),
            } => Ok((index, result)),
            // Applied by a node without an application: a no-op there.
            _ => Err(ProposeError::Unknown(format!(
                "entry {index} was applied by a node without an application"
            ))),
        }
    }

    /// Runs `f` on this node's copy of the application, if it runs one of
    /// type `A`. The state is this node's applied state: on a follower it
    /// may lag the leader; for a linearizable read, on the leader, await
    /// `node.proposer().linearize()` first. `f` must not call back into
    /// the node (applying waits while it runs).
    pub fn read_app<A: Application, R>(&self, f: impl FnOnce(&A) -> R) -> Option<R> {
        self.state_machine()
            .with_app(|app| (app as &dyn Any).downcast_ref::<A>().map(f))
            .flatten()
    }
}
