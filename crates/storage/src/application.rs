//! The state machine an embedding program can plug in beside the key-value
//! map. The `walship` library re-exports it as `walship::app::Application`;
//! its module documentation shows how to start a node with one and propose
//! commands to it (that glue needs the node, so it lives there).

use std::any::Any;

/// An embedder's replicated state machine: it applies `Request::App`
/// commands in log order, and its state goes into every snapshot beside the
/// key-value map's.
///
/// Rules an implementation must keep (Raft replays the same log on both
/// nodes, and again after a restart from the last snapshot):
///
/// - `apply` is deterministic: the same state and command give the same
///   new state and result on every node, every time. No clocks, randomness,
///   I/O or thread-local state.
/// - `apply` does not panic. If it does, the panic is caught and stops this
///   node's Raft with an error naming the entry and the panic's message;
///   the node stops serving (`walship node` exits non-zero). A panic that
///   depends only on the state and the command happens on both nodes, so
///   both stop: fix the application and restart them; the entry is
///   committed and is applied again.
/// - `restore(snapshot())` gives back the same state; `restore` replaces the
///   whole state, and on `Err` leaves it as it was (the snapshot is then
///   refused and the node reports a storage error).
/// - Both nodes run the same application from the cluster's first command:
///   a node refuses a snapshot made by a node without an application, and the
///   other way round (a key-value node cannot load an application's snapshot).
pub trait Application: Any + Send + Sync + 'static {
    /// Applies one committed command and returns its result, which goes back
    /// to the proposer (`walship::node::Node::propose`) on the leader and is
    /// dropped on the other node.
    fn apply(&mut self, command: &[u8]) -> Vec<u8>;

    /// The whole state as bytes, for a snapshot. Called while applying is
    /// paused, so it sees the state after exactly the snapshot's last entry.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with a snapshot's (from this node's disk at
    /// start, the leader, or ZooKeeper). The bytes are what `snapshot`
    /// returned, already checked against their CRC32.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}
