//! Lifecycle events for embedding programs: leader changes, the other node
//! going away and coming back, adoption of ZooKeeper's log, and snapshots.
//!
//! Subscribe with [`Node::subscribe`](crate::node::Node::subscribe) (after start) or, to also see what
//! happens during start-up (adoption before Raft starts), create an
//! [`Events`], subscribe to it, and pass it to [`Node::start_with`](crate::node::Node::start_with).
//!
//! Delivery is a `tokio::sync::broadcast` channel of [`EVENT_CAPACITY`]
//! events: every receiver sees every event fired after it subscribed, in the
//! order this node fired them, unless it falls more than that many behind,
//! in which case `recv` returns `Lagged(n)` once and continues with newer
//! events. Firing never blocks the node and nothing waits for receivers.
//!
//! Every event is this node's own view: the two nodes fire their own
//! sequences, which need not match (e.g. a follower may never see a leader
//! that lasted less than a heartbeat).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::broadcast;
use walship_zk::ZkSession;

use crate::types::NodeId;

/// Events a receiver can fall behind by before it loses some (`Lagged`).
pub const EVENT_CAPACITY: usize = 1024;

/// Where an installed snapshot came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotSource {
    /// Sent by the leader over Raft (this node was too far behind its log).
    Leader,
    /// Read from ZooKeeper during adoption (at start or before an election).
    Witness,
}

/// One lifecycle event (see each variant for when it fires).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// This node's view of the leader changed: fires whenever openraft's
    /// metrics on this node report a different current leader than before,
    /// including `None` (an election is under way, or this node's Raft is
    /// restarting around an adoption) and `Some(own id)` (this node now
    /// leads; its `leader` znode is claimed right after). `term` is this
    /// node's current term at that moment. It does not guarantee that
    /// the leader can still commit (see `/health/ready` for that).
    LeaderChanged {
        /// This node's current term.
        term: u64,
        /// The leader this node now knows of (`None`: none).
        leader: Option<NodeId>,
    },
    /// The other node's `members/<id>` ephemeral znode in ZooKeeper is gone:
    /// its ZooKeeper session ended. That is at once for a clean stop
    /// (SIGTERM, `/admin/leave`, [`Node::shutdown`](crate::node::Node::shutdown)) and after the session
    /// timeout (`zk_session_timeout_ms`) for a crash or a node cut off from
    /// ZooKeeper. A node that still reaches ZooKeeper but not this node is
    /// not reported down. Also fires once at start if the other node is not
    /// registered at this node's first look.
    PeerDown {
        /// The other node's id.
        id: NodeId,
    },
    /// The other node's `members/<id>` znode is there again (`None` for
    /// `away_ms` when this is the first look: the peer was up when this
    /// node started watching). A peer that re-registered between two looks
    /// (a new session: a quick restart) fires `PeerDown` and then `PeerUp`.
    PeerUp {
        /// The other node's id.
        id: NodeId,
        /// How long before now the peer last showed a sign of life: the
        /// last Raft message that went between the two nodes (either way),
        /// or, if none ever did, the last look that found its znode. Not
        /// the znode's absence, which a quick restart shortens to
        /// milliseconds (`None`: first look).
        away_ms: Option<u64>,
    },
    /// This node made its log equal to ZooKeeper's (the witness's) where
    /// they differed: at start, or before standing for election. `entries`
    /// is how many of W's entries were replayed into the local log (already
    /// present ones included); `snapshot_index` is set when W's snapshot
    /// was installed first (a `SnapshotInstalled` fired just before). The
    /// adopted entries are in the log, not yet applied: Raft applies them
    /// once it restarts and they are committed.
    Adopted {
        /// W's entries replayed into the local log.
        entries: u64,
        /// The index of W's snapshot, if one was installed first.
        snapshot_index: Option<u64>,
    },
    /// This node's current snapshot advanced to `index` by a snapshot this
    /// node built (after `snapshot_every_entries`, or `/admin/snapshot`). It
    /// is durable on disk, and the log it covers may now be purged.
    SnapshotBuilt {
        /// The last log index the snapshot covers.
        index: u64,
    },
    /// This node, leading, stored its snapshot up to `index` (`bytes` long,
    /// framing included) in ZooKeeper, which then dropped the WAL it
    /// covers: a node rebuilt from ZooKeeper starts from it. Once per
    /// snapshot, after the first successful store.
    SnapshotUploaded {
        /// The last log index the snapshot covers.
        index: u64,
        /// Its size in ZooKeeper, framing included.
        bytes: u64,
    },
    /// This node replaced its state with a snapshot up to `index` (`bytes`
    /// long) from `from`, after checking its CRC; it is durable on disk and
    /// the state machine (key-value map or application) holds its state.
    SnapshotInstalled {
        /// The last log index the snapshot covers.
        index: u64,
        /// Its size, framing included.
        bytes: u64,
        /// Where it came from.
        from: SnapshotSource,
    },
    /// This node's Raft core stopped by itself and cannot go on: a storage
    /// error, or the application's `apply` panicked (`reason` names the
    /// entry and the panic). The node stops serving at once (`/health/live`
    /// 503, a leader steps down by stopping) and `walship node` exits
    /// non-zero; the other node takes over unless it failed the same way.
    /// Fix the cause and restart: the node re-reads its disk and ZooKeeper.
    Failed {
        /// Why the core stopped, as `Node::fatal` reports it.
        reason: String,
    },
}

/// The sending side of a node's events; cheap to clone. Create one before
/// start to subscribe to start-up events ([`Node::start_with`](crate::node::Node::start_with)).
#[derive(Clone, Debug)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Highest snapshot index this node already reported or started with,
    /// so a snapshot is reported built only when it is new and not one that
    /// was installed (both advance openraft's snapshot metric).
    snapshot_seen: Arc<Mutex<Option<u64>>>,
    /// Highest snapshot index reported uploaded (the shipper and
    /// `/admin/snapshot` may both store the same one).
    uploaded_seen: Arc<Mutex<Option<u64>>>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// A new event channel with no subscriber yet; events fired with none
    /// are dropped.
    pub fn new() -> Events {
        Events {
            tx: broadcast::channel(EVENT_CAPACITY).0,
            snapshot_seen: Arc::new(Mutex::new(None)),
            uploaded_seen: Arc::new(Mutex::new(None)),
        }
    }

    /// A receiver of every event fired from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub(crate) fn fire(&self, event: Event) {
        tracing::debug!(?event, "event");
        // No receiver is fine: nobody is listening.
        let _ = self.tx.send(event);
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.snapshot_seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshot this node had on disk at start (not an event).
    pub(crate) fn snapshot_known(&self, index: Option<u64>) {
        let mut seen = self.seen();
        *seen = (*seen).max(index);
    }

    /// openraft's snapshot metric advanced: fires `SnapshotBuilt` unless
    /// the snapshot was already known (loaded at start or installed).
    pub(crate) fn snapshot_advanced(&self, index: Option<u64>) {
        let Some(index) = index else { return };
        let mut seen = self.seen();
        if seen.is_some_and(|s| s >= index) {
            return;
        }
        *seen = Some(index);
        drop(seen);
        self.fire(Event::SnapshotBuilt { index });
    }

    /// The leader stored its snapshot in ZooKeeper: fires
    /// `SnapshotUploaded` once per snapshot.
    pub(crate) fn snapshot_uploaded(&self, index: Option<u64>, bytes: u64) {
        let Some(index) = index else { return };
        let mut seen = self.uploaded_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.is_some_and(|s| s >= index) {
            return;
        }
        *seen = Some(index);
        drop(seen);
        self.fire(Event::SnapshotUploaded { index, bytes });
    }

    pub(crate) fn snapshot_installed(&self, index: Option<u64>, bytes: u64, from: SnapshotSource) {
        self.snapshot_known(index);
        self.fire(Event::SnapshotInstalled {
            index: index.unwrap_or(0),
            bytes,
            from,
        });
    }
}

/// What this node last saw of the other node's `members/<id>` znode.
enum PeerSeen {
    /// Not looked yet.
    Unknown,
    /// Present, created at `czxid`, last seen at `at`; `heard` is the last
    /// Raft message exchanged with the peer as known at that look.
    Up {
        czxid: i64,
        at: Instant,
        heard: Option<Instant>,
    },
    /// Absent; `since` is the peer's last sign of life before it went.
    Down { since: Instant },
}

impl PeerSeen {
    /// Moves to what a look at the znode found; returns the events to fire.
    ///
    /// `heard`: when this node last exchanged a Raft message with the peer.
    /// That, not the znode, dates the peer's going away: after a crash its
    /// ephemeral znode lingers for the ZooKeeper session timeout, and a
    /// quick restart replaces it within milliseconds, so the znode's
    /// absence (5 ms) said nothing of a node dead for 200 ms. Without any
    /// message yet, the last look that found the znode stands in.
    fn observe(&mut self, id: NodeId, czxid: Option<i64>, heard: Option<Instant>) -> Vec<Event> {
        let now = Instant::now();
        let away = |since: Instant| Some(now.saturating_duration_since(since).as_millis() as u64);
        // The last sign of life of the incarnation seen at the previous look.
        let last_sign = |at: Instant, heard: Option<Instant>| heard.map_or(at, |h| h.min(now));
        let (next, events) = match (&*self, czxid) {
            (PeerSeen::Unknown, Some(czxid)) => (
                PeerSeen::Up { czxid, at: now, heard },
                vec![Event::PeerUp { id, away_ms: None }],
            ),
            (PeerSeen::Down { since }, Some(czxid)) => (
                PeerSeen::Up { czxid, at: now, heard },
                vec![Event::PeerUp {
                    id,
                    away_ms: away(*since),
                }],
            ),
            // A new incarnation registered between two looks: what was heard
            // since the previous look may already be the new one, so the old
            // one's last sign is what was known then.
            (
                PeerSeen::Up {
                    czxid: old,
                    at,
                    heard: before,
                },
                Some(czxid),
            ) if *old != czxid => {
                let since = last_sign(*at, *before);
                (
                    PeerSeen::Up { czxid, at: now, heard },
                    vec![
                        Event::PeerDown { id },
                        Event::PeerUp {
                            id,
                            away_ms: away(since),
                        },
                    ],
                )
            }
            (PeerSeen::Up { .. }, Some(czxid)) => (PeerSeen::Up { czxid, at: now, heard }, vec![]),
            (PeerSeen::Up { at, .. }, None) => (
                PeerSeen::Down {
                    since: last_sign(*at, heard),
                },
                vec![Event::PeerDown { id }],
            ),
            (PeerSeen::Unknown, None) => (PeerSeen::Down { since: now }, vec![Event::PeerDown { id }]),
            (PeerSeen::Down { since }, None) => (PeerSeen::Down { since: *since }, vec![]),
        };
        *self = next;
        events
    }
}

/// How often the peer's znode is read even without a watch firing (a
/// fallback for watches lost with a ZooKeeper session).
const PEER_REFRESH: Duration = Duration::from_secs(1);

/// Follows the other node's `members/<id>` znode with one-shot existence
/// watches (re-armed after every event and every new ZooKeeper session)
/// and fires `PeerDown`/`PeerUp`. While ZooKeeper is unreachable nothing is
/// fired: the last state stands.
pub(crate) async fn watch_peer(
    zk: Arc<ZkSession>,
    peer: NodeId,
    path: String,
    events: Events,
    is_stopping: impl Fn() -> bool,
    last_heard: impl Fn() -> Option<Instant>,
) {
    let mut generation = zk.generation();
    let mut seen = PeerSeen::Unknown;
    while !is_stopping() {
        let p = path.clone();
        let looked = zk
            .run(
                &format!("watch {path}"),
                |c| async move { c.check_and_watch_stat(&p).await },
            )
            .await;
        let watcher = match looked {
            Ok((stat, w)) => {
                if !is_stopping() {
                    for event in seen.observe(peer, stat.map(|s| s.czxid), last_heard()) {
                        events.fire(event);
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the other node's member znode");
                None
            }
        };
        walship_zk::next_look(watcher, &mut generation, PEER_REFRESH).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_transitions() {
        let mut s = PeerSeen::Unknown;
        assert_eq!(
            s.observe(2, Some(7), None),
            vec![Event::PeerUp { id: 2, away_ms: None }]
        );
        assert_eq!(s.observe(2, Some(7), None), vec![]);
        assert_eq!(s.observe(2, None, None), vec![Event::PeerDown { id: 2 }]);
        assert_eq!(s.observe(2, None, None), vec![]);
        let up = s.observe(2, Some(9), None);
        assert!(matches!(
            up.as_slice(),
            [Event::PeerUp {
                id: 2,
                away_ms: Some(_)
            }]
        ));
        // Re-registered between two looks: down and up.
        let again = s.observe(2, Some(11), None);
        assert!(matches!(
            again.as_slice(),
            [
                Event::PeerDown { id: 2 },
                Event::PeerUp {
                    id: 2,
                    away_ms: Some(_)
                }
            ]
        ));
        let mut first_down = PeerSeen::Unknown;
        assert_eq!(first_down.observe(1, None, None), vec![Event::PeerDown { id: 1 }]);
    }

    /// The time away is dated from the last message exchanged with the
    /// peer, not from the znode: a quick restart replaces the znode within
    /// milliseconds of its delete, and that was reported as the time away.
    #[test]
    fn away_is_dated_from_the_last_message_not_the_znode() {
        let ago = |ms| Instant::now() - Duration::from_millis(ms);
        let away = |events: Vec<Event>| match events.last() {
            Some(Event::PeerUp { away_ms: Some(ms), .. }) => *ms,
            other => panic!("no PeerUp with a time away: {other:?}"),
        };
        // Crash 300 ms ago; the restart deletes the stale znode and creates
        // its own moments apart.
        let mut s = PeerSeen::Unknown;
        s.observe(2, Some(7), Some(ago(1000)));
        s.observe(2, Some(7), Some(ago(300)));
        assert_eq!(s.observe(2, None, Some(ago(300))), vec![Event::PeerDown { id: 2 }]);
        let ms = away(s.observe(2, Some(9), Some(ago(300))));
        assert!((300..2000).contains(&ms), "away {ms} ms, not ~300");
        // The delete and create fall between two looks: the last message
        // known at the previous look dates it, whatever was heard since
        // (the new incarnation already talking).
        s.observe(2, Some(9), Some(ago(250)));
        let ms = away(s.observe(2, Some(12), Some(Instant::now())));
        assert!((250..2000).contains(&ms), "away {ms} ms, not ~250");
    }

    #[test]
    fn built_only_when_new() {
        let events = Events::new();
        let mut rx = events.subscribe();
        events.snapshot_known(Some(10));
        events.snapshot_advanced(Some(10));
        events.snapshot_advanced(None);
        events.snapshot_installed(Some(20), 5, SnapshotSource::Leader);
        events.snapshot_advanced(Some(20));
        events.snapshot_advanced(Some(30));
        events.snapshot_uploaded(Some(30), 7);
        events.snapshot_uploaded(Some(30), 7);
        assert_eq!(
            rx.try_recv().ok(),
            Some(Event::SnapshotInstalled {
                index: 20,
                bytes: 5,
                from: SnapshotSource::Leader
            })
        );
        assert_eq!(rx.try_recv().ok(), Some(Event::SnapshotBuilt { index: 30 }));
        assert_eq!(
            rx.try_recv().ok(),
            Some(Event::SnapshotUploaded { index: 30, bytes: 7 })
        );
        assert!(rx.try_recv().is_err());
    }
}
