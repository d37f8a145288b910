//! The client-session table that makes a retried request apply at most
//! once (Raft thesis §6.3). It is part of the replicated state: every node
//! builds it by applying the same log, and it goes into every snapshot, so
//! a retry that reaches a new leader, or a node reborn from ZooKeeper, is
//! recognised there too.
//!
//! A client opens a session (`Request::OpenSession`; its id is that
//! entry's log index) and numbers its requests 1, 2, 3, …; each carries the
//! lowest seq whose answer it still waits for (`acked_below`). Applying
//! `Session { client, seq, .. }`:
//!
//! - the answer to `seq` is in the table: return it, apply nothing;
//! - `seq` is below `acked_below`, or `MAX_SESSION_INFLIGHT` or more
//!   above it: refuse (the client is broken; applying could duplicate);
//! - the session is not in the table: refuse with `UnknownSession`, because
//!   its earlier answers are gone with it, so a retry cannot be recognised;
//! - otherwise apply `op`, keep its answer, and drop the answers below
//!   `acked_below`.
//!
//! Everything here is decided by the log alone (eviction goes by the log
//! index of a session's last use), so both nodes hold the same table.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;
use walship_types::Refusal;
use walship_types::Response;
use walship_types::MAX_SESSIONS;
use walship_types::MAX_SESSION_INFLIGHT;

/// The table: client id → its session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    clients: BTreeMap<u64, ClientSession>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
struct ClientSession {
    /// Log index of the last entry that used the session (for eviction).
    last_used_index: u64,
    /// Every answer below this seq has reached the client.
    acked_below: u64,
    /// Answers the client may still ask for again, by seq.
    replies: BTreeMap<u64, Response>,
}

/// What to do with a session request, decided before applying it.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Apply it, then hand its answer to [`Sessions::record`].
    Apply,
    /// Already applied: this is its answer; apply nothing.
    Replay(Response),
    /// Not applied, and never will be under this seq.
    Refuse(Refusal),
}

impl Sessions {
    /// Opens the session `client` (`crate::session_id` of its
    /// `OpenSession`), evicting the least recently used one if the table is
    /// full. Returns false, changing nothing, if `client` is open already:
    /// resetting it would drop the answers its retries need.
    pub fn open(&mut self, client: u64) -> bool {
        if self.clients.contains_key(&client) {
            return false;
        }
        while self.clients.len() >= MAX_SESSIONS {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(id, s)| (s.last_used_index, **id))
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => self.clients.remove(&id),
                None => break,
            };
        }
        self.clients.insert(
            client,
            ClientSession {
                last_used_index: client,
                acked_below: 1,
                replies: BTreeMap::new(),
            },
        );
        true
    }

    /// Whether request `seq` of `client`, sent knowing every answer below
    /// `acked_below`, is applied now (at log index `index`), replayed, or
    /// refused. Prunes the answers the client has acknowledged.
    pub fn admit(&mut self, client: u64, seq: u64, acked_below: u64, index: u64) -> Admit {
        let Some(s) = self.clients.get_mut(&client) else {
            return Admit::Refuse(Refusal::UnknownSession(client));
        };
        s.last_used_index = index;
        // A reordered, older request may carry a lower mark: never go back.
        if acked_below > s.acked_below {
            s.acked_below = acked_below;
            s.replies = s.replies.split_off(&acked_below);
        }
        if let Some(reply) = s.replies.get(&seq) {
            return Admit::Replay(reply.clone());
        }
        if seq < s.acked_below || seq - s.acked_below >= MAX_SESSION_INFLIGHT {
            return Admit::Refuse(Refusal::OutsideWindow {
                client,
                seq,
                acked_below: s.acked_below,
            });
        }
        Admit::Apply
    }

    /// Keeps the answer to `seq` of `client` (after `Admit::Apply`).
    pub fn record(&mut self, client: u64, seq: u64, reply: &Response) {
        if let Some(s) = self.clients.get_mut(&client) {
            s.replies.insert(seq, reply.clone());
        }
    }

    /// Whether the answer to `seq` of `client` is in the table.
    pub fn has_reply(&self, client: u64, seq: u64) -> bool {
        self.clients.get(&client).is_some_and(|s| s.replies.contains_key(&seq))
    }

    /// Sessions in the table.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: u8) -> Response {
        Response {
            ok: true,
            current: Some(vec![n]),
            refusal: None,
        }
    }

    #[test]
    fn a_retry_gets_the_first_answer_and_is_not_applied_again() {
        let mut t = Sessions::default();
        t.open(7);
        assert_eq!(t.admit(7, 1, 1, 8), Admit::Apply);
        t.record(7, 1, &answer(1));
        assert_eq!(t.admit(7, 1, 1, 9), Admit::Replay(answer(1)));
        // Concurrent requests: 3 before 2.
        assert_eq!(t.admit(7, 3, 1, 10), Admit::Apply);
        t.record(7, 3, &answer(3));
        assert_eq!(t.admit(7, 2, 1, 11), Admit::Apply);
        t.record(7, 2, &answer(2));
        assert_eq!(t.admit(7, 3, 1, 12), Admit::Replay(answer(3)));
    }

    #[test]
    fn acknowledged_answers_are_dropped_and_their_seqs_refused() {
        let mut t = Sessions::default();
        t.open(1);
        for seq in 1..=3 {
            assert_eq!(t.admit(1, seq, 1, 1 + seq), Admit::Apply);
            t.record(1, seq, &answer(seq as u8));
        }
        assert_eq!(t.admit(1, 4, 3, 10), Admit::Apply);
        assert_eq!(t.clients[&1].replies.keys().copied().collect::<Vec<_>>(), vec![3]);
        // A seq the client said it has the answer to is a broken client.
        assert!(matches!(
            t.admit(1, 2, 3, 11),
            Admit::Refuse(Refusal::OutsideWindow { .. })
        ));
        // An older mark does not bring answers back or move the window.
        assert_eq!(t.admit(1, 3, 1, 12), Admit::Replay(answer(3)));
        assert!(matches!(
            t.admit(1, 3 + MAX_SESSION_INFLIGHT, 3, 13),
            Admit::Refuse(Refusal::OutsideWindow { .. })
        ));
        assert_eq!(t.admit(1, 2 + MAX_SESSION_INFLIGHT, 3, 14), Admit::Apply);
    }

    #[test]
    fn unknown_sessions_are_refused_and_the_least_recently_used_is_evicted() {
        let mut t = Sessions::default();
        assert_eq!(t.admit(5, 1, 1, 6), Admit::Refuse(Refusal::UnknownSession(5)));
        for id in 1..=MAX_SESSIONS as u64 {
            t.open(id);
        }
        // Session 1 is used last, so session 2 is the oldest when 1 more opens.
        let next = MAX_SESSIONS as u64 + 1;
        assert_eq!(t.admit(1, 1, 1, next), Admit::Apply);
        t.open(next + 1);
        assert_eq!(t.len(), MAX_SESSIONS);
        assert_eq!(t.admit(2, 1, 1, next + 2), Admit::Refuse(Refusal::UnknownSession(2)));
        assert_eq!(t.admit(1, 2, 1, next + 3), Admit::Apply);
    }
}

/// The table against a network that duplicates, delays and reorders
/// requests: whatever arrives when, a numbered request is applied at most
/// once, and every answer a client gets for it is the answer of that one
/// application. (Without the `seq < acked_below` refusal, a late copy of
/// an answered request is applied again: this finds it.)
#[cfg(test)]
mod model {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// One step: client `c` sends its request `seq` (a first send or a
    /// retry; the copy may also be held back), or the network delivers a
    /// held-back copy `pick` (a late duplicate, with the `acked_below` it
    /// was sent with).
    #[derive(Clone, Debug)]
    enum Step {
        Send { c: usize, seq: u64, hold: bool },
        Deliver { pick: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, 1..12u64, any::<bool>()).prop_map(|(c, seq, hold)| Step::Send { c, seq, hold }),
            (0..64usize).prop_map(|pick| Step::Deliver { pick }),
        ]
    }

    struct World {
        table: Sessions,
        ids: Vec<u64>,
        /// Per client, the seqs it has an answer to.
        answered: Vec<BTreeSet<u64>>,
        /// (client, seq) → the answer of its one application.
        applied: BTreeMap<(usize, u64), Response>,
    }

    impl World {
        fn deliver(&mut self, c: usize, seq: u64, acked_below: u64, index: u64) -> Result<(), TestCaseError> {
            match self.table.admit(self.ids[c], seq, acked_below, index) {
                Admit::Apply => {
                    prop_assert!(!self.applied.contains_key(&(c, seq)), "({}, {}) applied twice", c, seq);
                    let answer = Response {
                        ok: true,
                        current: Some(index.to_le_bytes().to_vec()),
                        refusal: None,
                    };
                    self.table.record(self.ids[c], seq, &answer);
                    self.applied.insert((c, seq), answer);
                    self.answered[c].insert(seq);
                }
                Admit::Replay(answer) => {
                    prop_assert_eq!(
                        Some(&answer),
                        self.applied.get(&(c, seq)),
                        "a replay is the first answer"
                    );
                    self.answered[c].insert(seq);
                }
                Admit::Refuse(Refusal::OutsideWindow { .. }) => {}
                Admit::Refuse(other) => prop_assert!(false, "unexpected refusal {:?}", other),
            }
            Ok(())
        }
    }

    proptest! {
        #[test]
        fn at_most_once_whatever_the_network_does(steps in prop::collection::vec(step(), 1..200)) {
            let mut table = Sessions::default();
            let ids: Vec<u64> = (101..104).collect();
            for id in &ids {
                table.open(*id);
            }
            let mut w = World { table, ids, answered: vec![BTreeSet::new(); 3], applied: BTreeMap::new() };
            let mut held: Vec<(usize, u64, u64)> = Vec::new();
            let mut index = 200u64;
            for s in steps {
                index += 1;
                match s {
                    Step::Send { c, seq, hold } => {
                        if w.answered[c].contains(&seq) {
                            continue; // a client does not re-send what it has
                        }
                        // A correct client sends in order; its mark is the
                        // lowest seq it has no answer for.
                        let acked_below = (1..=seq).find(|n| !w.answered[c].contains(n)).unwrap_or(seq);
                        if hold {
                            held.push((c, seq, acked_below));
                        } else {
                            w.deliver(c, seq, acked_below, index)?;
                        }
                    }
                    Step::Deliver { pick } if !held.is_empty() => {
                        let (c, seq, acked_below) = held.remove(pick % held.len());
                        w.deliver(c, seq, acked_below, index)?;
                    }
                    Step::Deliver { .. } => {}
                }
            }
        }
    }
}
