//! What a session reports for its embedder's metrics. The crate keeps no
//! registry of its own: the embedder passes an implementation to
//! [`crate::ZkSession::connect_secured`] and records what it is told
//! wherever its metrics live.

use std::time::Duration;
use std::time::Instant;

/// Every method does nothing unless implemented; `()` implements none.
pub trait SessionMetrics: Send + Sync {
    /// A call on a client ended after `elapsed`: answered, failed, timed
    /// out, abandoned because its session was replaced, or dropped by its
    /// caller. Calls made while there was no client are not timed.
    fn call_ended(&self, elapsed: Duration) {
        let _ = elapsed;
    }
    /// A call failed; `kind`: `no_session` (no client, a new session being
    /// built), `timeout`, `session_replaced` (it waited on a client the
    /// keeper replaced), or [`crate::ZkError::kind`] of ZooKeeper's error
    /// (`unreachable`, `zookeeper`).
    fn call_failed(&self, kind: &'static str) {
        let _ = kind;
    }
    /// The keeper opened a new session on a server seen serving while the
    /// disconnected client was still trying to resume its own.
    fn session_replaced(&self) {}
}

impl SessionMetrics for () {}

/// Times a call from its creation to its drop, however the call ends.
pub(crate) struct CallTimer<'a> {
    metrics: &'a dyn SessionMetrics,
    started: Instant,
}

impl<'a> CallTimer<'a> {
    pub(crate) fn start(metrics: &'a dyn SessionMetrics) -> CallTimer<'a> {
        CallTimer {
            metrics,
            started: Instant::now(),
        }
    }
}

impl Drop for CallTimer<'_> {
    fn drop(&mut self) {
        self.metrics.call_ended(self.started.elapsed());
    }
}
