//! The state machine an embedding program plugs in beside the key-value
//! map. The `walship` library re-exports it as `walship::app::Application`;
//! its module documentation shows how to start a node with one, and how
//! clients reach it (HTTP, the CLI, `NodeClient`).

use std::any::Any;
use std::io::Read;
use std::io::Write;

/// Writes one snapshot of an application's state to the stream it is given.
///
/// [`Application::snapshot`] returns one while applying is paused; walship
/// then runs it on a blocking thread while applying goes on, so it must own
/// (or share, immutably) everything it writes: a frozen view of the state,
/// not a reference into it. Writing straight into the stream keeps memory
/// bounded: walship frames, checksums and files the bytes as they come.
pub type SnapshotWriter = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static>;

/// An embedder's replicated state machine: it applies `Request::App`
/// commands in log order, answers queries, and its state goes into every
/// snapshot beside the key-value map's.
///
/// Rules an implementation must keep (Raft replays the same log on both
/// nodes, and again after a restart from the last snapshot):
///
/// - `apply` is deterministic: the same state and command give the same
///   new state and result on every node, every time. No clocks, randomness,
///   I/O or thread-local state. Its `Err` (a rejection: the command changed
///   nothing) is as deterministic as its `Ok`.
/// - `apply` does not panic. If it does, the panic is caught and stops this
///   node's Raft with an error naming the entry and the panic's message;
///   the node stops serving (`walship node` exits non-zero). A panic that
///   depends only on the state and the command happens on both nodes, so
///   both stop: fix the application and restart them; the entry is
///   committed and is applied again.
/// - `validate` and `query` only read.
/// - Restoring what `snapshot` wrote gives back the same state; `restore`
///   replaces the whole state, and on `Err` leaves it as it was (the
///   snapshot is then refused and the node reports a storage error).
/// - Both nodes run the same application from the cluster's first command:
///   a node refuses a snapshot made by a node without an application, and the
///   other way round (a key-value node cannot load an application's snapshot).
pub trait Application: Any + Send + Sync + 'static {
    /// Checks a command on the leader before it is logged; `Err(reason)`
    /// refuses it, and nothing is written (the client gets the reason).
    /// The default accepts everything.
    ///
    /// It sees the leader's applied state, which may not yet include a
    /// write acknowledged a moment ago (by a previous leader, say). walship
    /// therefore proposes on `Ok` at once (`apply` decides for real), but
    /// confirms an `Err` first: it waits until this node has applied every
    /// entry committed when the refusal was made, and asks again. So a
    /// refusal is linearizable, like a read; an acceptance is only a hint.
    fn validate(&self, command: &[u8]) -> Result<(), String> {
        let _ = command;
        Ok(())
    }

    /// Applies one committed command. `Ok(result)` goes back to the client
    /// that proposed it; `Err(reason)` rejects it: the state must be as it
    /// was, and the client gets the reason. Either way the entry is
    /// committed, and a client retrying it in the same session gets the
    /// same answer without a second apply.
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, String>;

    /// Answers a read-only query from the applied state (`POST
    /// /v1/app/query`, linearizable unless the client asks for a stale
    /// read). The default answers none.
    fn query(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        let _ = query;
        Err("this application answers no queries".into())
    }

    /// A writer of the whole state as it is now (exactly after the last
    /// applied entry). Called while applying is paused, so it should only
    /// freeze the state (clone an `Arc`, a persistent map, a copy-on-write
    /// handle) and leave the writing to the returned [`SnapshotWriter`],
    /// which runs while applying goes on.
    fn snapshot(&self) -> SnapshotWriter;

    /// Replaces the whole state with a snapshot's (from this node's disk at
    /// start, the leader, or ZooKeeper), read from `snapshot`: the bytes a
    /// [`SnapshotWriter`] wrote, already checked against their CRC32
    /// before this is called.
    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), String>;
}
