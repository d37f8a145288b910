//! A pluggable state machine for embedding programs.
//!
//! By default a node applies the log to its key-value map (the HTTP KV API).
//! An embedder can supply its own [`Application`] instead, with
//! [`Node::start_with_app`]: commands proposed with [`Node::propose`] travel
//! through the same group-commit proposer, Raft log, ZooKeeper witness and
//! crc-checked snapshot files as key-value writes do, and every node applies
//! them in log order to its own copy of the application.
//!
//! ```no_run
//! # async fn demo(cfg: walship::config::NodeConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use walship::app::Application;
//! use walship::node::Node;
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Application for Counter {
//!     fn apply(&mut self, command: &[u8]) -> Vec<u8> {
//!         self.0 += command.len() as u64;
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     fn snapshot(&self) -> Vec<u8> {
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
//!         let b: [u8; 8] = snapshot.try_into().map_err(|_| "not 8 bytes".to_string())?;
//!         self.0 = u64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//!
//! let node = Node::start_with_app(cfg, Counter::default()).await?;
//! let mut events = node.subscribe();
//! node.run_background().await?;
//! // ... once this node leads (see `Event::LeaderChanged`):
//! let (index, result) = node.propose(b"+1".to_vec()).await?;
//! let value = node.read_app(|c: &Counter| c.0);
//! # let _ = (index, result, value, events.try_recv());
//! # Ok(()) }
//! ```
//!
//! The rules the application must keep are on [`Application`] (the trait
//! lives in `walship-storage`, whose state machine drives it; this module
//! re-exports it and holds the node's side: starting, proposing, reading).
//!
//! The application's state lives in memory, is written to disk only in
//! snapshots (`snapshot/current.snap`, under the same magic, length and
//! CRC32 framing as the key-value map's) and shipped to ZooKeeper like them;
//! after a restart the node restores the snapshot and re-applies the log
//! after it. The key-value HTTP API keeps working on an application node
//! (its map is snapshotted alongside the application's bytes).

use std::any::Any;

pub use walship_storage::Application;

use crate::node::Node;
use crate::node::StartError;
use crate::proposer::ProposeError;
use crate::types::Request;

/// The largest command [`Node::propose`] accepts (as a key-value value:
/// well under ZooKeeper's 1 MiB request limit, which every entry must fit).
pub const MAX_COMMAND_BYTES: usize = crate::types::MAX_VALUE_BYTES;

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
    /// nothing was written either; `Unknown` (a timeout or a lost
    /// leadership after proposing) means the command may or may not be
    /// applied, so commands should be safe to retry or carry their own
    /// identity.
    pub async fn propose(&self, command: Vec<u8>) -> Result<(u64, Vec<u8>), ProposeError> {
        if !self.state_machine().has_app() {
            return Err(ProposeError::Unavailable(
                "this node runs the key-value map, not an application (start it with Node::start_with_app)".into(),
            ));
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(ProposeError::Unavailable(format!(
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
