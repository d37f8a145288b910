//! W's rules as a Raft voter (witness-protocol.md, "W answers as a Raft voter
//! would"): vote, append (with the log-id-reuse check), snapshot and the
//! purge behind it, and commit piggybacking, as pure functions of W's record
//! and the request. The ZooKeeper I/O
//! that carries a decision out lives in `mod.rs`; keeping the rules here lets
//! them be table-tested without ZooKeeper and read next to the design.

use openraft::raft::AppendEntriesRequest;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;

use super::record::entry_digest;
use super::record::SnapshotRef;
use super::record::WitnessRecord;
use walship_types::Entry;
use walship_types::LogId;
use walship_types::TypeConfig;
use walship_types::Vote;

/// What W's log holds at one index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// At or below W's snapshot: committed, so it matches any leader's entry.
    Purged,
    /// W's entry: its log id and its digest ([`super::record::entry_digest`],
    /// the crc32 its WAL record stores).
    Present(LogId, u32),
    Absent,
    /// W holds it, but this node has not read that segment yet.
    Unloaded,
}

/// `a >= b` in openraft's order of votes (a partial order in general;
/// false when incomparable, which is exactly when a voter must refuse).
pub fn vote_reaches(a: &Vote, b: &Vote) -> bool {
    matches!(
        a.partial_cmp(b),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    )
}

/// Vote(req): grant iff `req.vote >= W.vote` and `req.last_log_id >=
/// W.last_log_id`; then W.vote := req.vote. The comparison is openraft's
/// own, exactly as a node would apply it.
/// Returns the reply and, when granted, the record to write.
pub fn decide_vote(w: &WitnessRecord, req: &VoteRequest<u64>) -> (VoteResponse<u64>, Option<WitnessRecord>) {
    if req.last_log_id >= w.last_log_id && vote_reaches(&req.vote, &w.vote) {
        let mut next = w.clone();
        next.vote = req.vote;
        (VoteResponse::new(req.vote, w.last_log_id, true), Some(next))
    } else {
        (VoteResponse::new(w.vote, w.last_log_id, false), None)
    }
}

/// The outcome of AppendEntries against W.
#[derive(Clone, Debug, PartialEq)]
pub enum AppendDecision {
    /// W has promised a vote the sender's does not reach: it must step down.
    HigherVote(Vote),
    /// `prev_log_id` is not in W's log; `record` carries the adopted vote.
    Conflict { record: WitnessRecord },
    /// The request carries, at `index`, an entry with the log id of W's entry
    /// there but other bytes. A log id names one entry forever: two entries
    /// under one id mean a leader reused it (it restarted having forgotten
    /// what it appended), and W's is the one that may be committed. W keeps
    /// its entry and confirms nothing: the leader is told of an error, not
    /// `Conflict` (its retry would send the same entry again and again).
    LogIdReused {
        index: u64,
        witness_digest: u32,
        request_digest: u32,
    },
    /// The rules need W's entry at this index: load its segment and ask again.
    Load(u64),
    /// Make W's log: keep up to `truncate_from - 1` (if set), then append
    /// `append`; then write `record`.
    Accept {
        record: WitnessRecord,
        truncate_from: Option<u64>,
        append: Vec<Entry>,
    },
}

impl AppendDecision {
    /// True when nothing but a version check is needed: the record is
    /// unchanged and there is nothing to write (a plain heartbeat).
    pub fn is_check_only(&self, w: &WitnessRecord) -> bool {
        matches!(self, AppendDecision::Accept { record, truncate_from: None, append } if append.is_empty() && record == w)
    }
}

/// AppendEntries(req): if W's vote is not <= req.vote answer HigherVote. Else
/// W.vote := req.vote; if `prev_log_id` is not in W's log answer Conflict;
/// else delete W's entries from the first one that conflicts and append the
/// rest (entries W already holds with the same log id are kept, as Raft
/// requires). `slot(i)` looks W's log up; `Unloaded` makes the decision
/// `Load(i)`, and the caller loads W's segments from `i` on and asks again.
///
/// Raft's log matching compares log ids only, which is sound only while a
/// log id names one entry forever. So every entry of the request that W's
/// log also holds under the same log id is compared by digest too, and a
/// difference anywhere is `LogIdReused` (witness-protocol.md, "A log id
/// names one entry forever"): W keeps its own entry. That comparison has to
/// visit each overlapping entry (log matching, which would let a binary
/// search skip most of them, is what it checks), so the first entry W does
/// not hold is found by the same single pass. Digests are computed only for
/// entries W already holds: a leader's steady appends lie past W's last
/// entry and cost nothing; a new leader's first append that re-sends
/// entries W has costs one crc32 of each (W's side is read from its WAL
/// records, where the crc is stored).
pub fn decide_append(
    w: &WitnessRecord,
    req: &AppendEntriesRequest<TypeConfig>,
    slot: impl Fn(u64) -> Slot,
) -> AppendDecision {
    if !vote_reaches(&req.vote, &w.vote) {
        return AppendDecision::HigherVote(w.vote);
    }
    let mut next = w.clone();
    next.vote = req.vote;

    if let Some(prev) = req.prev_log_id {
        let ok = match slot(prev.index) {
            Slot::Purged => true,
            Slot::Present(have, _) => have == prev,
            Slot::Absent => false,
            Slot::Unloaded => return AppendDecision::Load(prev.index),
        };
        if !ok {
            return AppendDecision::Conflict { record: next };
        }
    }

    // Position in `req.entries` of the first entry W does not hold as is,
    // and whether W holds another entry there (then its log is cut there).
    let w_last = w.last_log_id.map(|l| l.index);
    let mut first_new: Option<(usize, bool)> = None;
    for (i, e) in req.entries.iter().enumerate() {
        if w_last.is_none_or(|l| e.log_id.index > l) {
            first_new.get_or_insert((i, false));
            break;
        }
        match slot(e.log_id.index) {
            Slot::Purged => {}
            Slot::Unloaded => return AppendDecision::Load(e.log_id.index),
            Slot::Absent => {
                first_new.get_or_insert((i, false));
            }
            Slot::Present(have, witness_digest) if have == e.log_id => {
                let request_digest = entry_digest(e);
                if request_digest != witness_digest {
                    return AppendDecision::LogIdReused {
                        index: e.log_id.index,
                        witness_digest,
                        request_digest,
                    };
                }
            }
            Slot::Present(..) => {
                first_new.get_or_insert((i, true));
            }
        }
    }
    let (lo, cut) = first_new.unwrap_or((req.entries.len(), false));
    let append = req.entries[lo..].to_vec();
    let truncate_from = append.first().filter(|_| cut).map(|e| e.log_id.index);
    if let Some(last) = append.last() {
        next.last_log_id = Some(last.log_id);
    }
    // A follower commits up to what the leader committed, but never past the
    // last entry this request proved W shares with the leader.
    let matched = req.entries.last().map(|e| e.log_id).or(req.prev_log_id);
    let committed = std::cmp::min(req.leader_commit, matched);
    if committed > next.committed {
        next.committed = committed;
    }
    AppendDecision::Accept {
        record: next,
        truncate_from,
        append,
    }
}

/// The outcome of storing a snapshot as W's.
// Decided once per snapshot upload: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotDecision {
    /// W has promised a vote the uploader's does not reach: the uploader is
    /// not the leader W follows, and nothing is kept.
    Refused(Vote),
    /// W's own snapshot already ends at or past this one.
    AlreadyCovered,
    /// The rule needs W's entry at this index: load its segment, ask again.
    Load(u64),
    /// Write `record` (W points at the snapshot); delete the WAL segments
    /// starting at `delete_segments`; `replaced` is W's previous snapshot,
    /// garbage once the record is written.
    Store {
        record: WitnessRecord,
        delete_segments: Vec<u64>,
        replaced: Option<SnapshotRef>,
    },
}

/// Snapshot(vote, s) (witness-protocol.md, "Snapshots and purge"): refused
/// unless `vote >= W.vote` (only the leader W follows may replace W's log);
/// nothing to do if W's snapshot already ends at or past `s.last`. Else W
/// points at `s`, and its last and committed log ids are at least `s.last`:
/// a snapshot holds only committed entries (Raft §7), so W may commit it.
/// W's WAL after `s.last` is kept only when W holds `s.last`'s very entry
/// (then W's log continues the snapshot); otherwise W's log becomes the
/// snapshot alone (`last := s.last`), since an entry after it that does not
/// continue it was never committed. The segments the snapshot covers (all
/// of them when the tail goes) are deleted. `segment_firsts` are the first
/// indexes of W's WAL segments, ascending; `slot` looks W's log up.
pub fn decide_snapshot(
    w: &WitnessRecord,
    vote: &Vote,
    snapshot: SnapshotRef,
    segment_firsts: &[u64],
    slot: impl Fn(u64) -> Slot,
) -> SnapshotDecision {
    if !vote_reaches(vote, &w.vote) {
        return SnapshotDecision::Refused(w.vote);
    }
    let Some(snap_last) = snapshot.meta.last_log_id else {
        return SnapshotDecision::AlreadyCovered;
    };
    if w.purged() >= Some(snap_last) {
        return SnapshotDecision::AlreadyCovered;
    }
    let keeps_tail = match slot(snap_last.index) {
        Slot::Unloaded => return SnapshotDecision::Load(snap_last.index),
        Slot::Present(l, _) => l == snap_last,
        Slot::Purged | Slot::Absent => false,
    };
    let w_last = w.last_log_id.map(|l| l.index);
    let delete_segments = segment_firsts
        .iter()
        .enumerate()
        .filter(|(i, first)| {
            let last = segment_firsts.get(i + 1).map(|n| n - 1).or(w_last).unwrap_or(**first);
            !keeps_tail || last <= snap_last.index
        })
        .map(|(_, first)| *first)
        .collect();
    let mut next = w.clone();
    let replaced = next
        .snapshot
        .replace(snapshot.clone())
        .filter(|old| old.meta.snapshot_id != snapshot.meta.snapshot_id);
    if next.last_log_id < Some(snap_last) || !keeps_tail {
        next.last_log_id = Some(snap_last);
    }
    if next.committed < Some(snap_last) {
        next.committed = Some(snap_last);
    }
    SnapshotDecision::Store {
        record: next,
        delete_segments,
        replaced,
    }
}

/// The last append W accepted on one replication stream: when it was sent,
/// its vote, and the log id W's log then ended at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub sent_at: std::time::Instant,
    pub vote: Vote,
    pub ends_at: Option<LogId>,
}

/// Commit piggybacking: after each append W accepts, openraft's replication
/// stream sends W an entry-less append only to carry the new commit index,
/// and sends nothing else until it is answered: under load every other W
/// round trip carried no entries. Such a request, on the stream whose last
/// append W accepted under the same vote less than `window` ago and that
/// asks for nothing beyond that append, is answered Success at once; W's
/// committed id (only a lower bound, used by adoption's fallback read) then
/// moves with the next append, which carries `leader_commit` too. Nothing
/// is acknowledged on it: a commit needs W's acceptance of the entries,
/// which was real. Leadership checks come on fresh streams (no `last`), so
/// they always reach ZooKeeper, and an idle leader's heartbeats (one per
/// heartbeat interval, longer than `window`) do too. walship's client of
/// the other node applies the same rule (`network::peer::PeerClient`): the
/// follower then learns the commit index from its next append or heartbeat.
pub fn piggybacks(
    req: &AppendEntriesRequest<TypeConfig>,
    last: Option<&Accepted>,
    now: std::time::Instant,
    window: std::time::Duration,
) -> bool {
    req.entries.is_empty()
        && last.is_some_and(|a| {
            now.saturating_duration_since(a.sent_at) < window && a.vote == req.vote && a.ends_at == req.prev_log_id
        })
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use openraft::EntryPayload;

    use super::*;

    fn lid(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }
    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Blank,
        }
    }
    fn rec(vote: Vote, last: Option<LogId>) -> WitnessRecord {
        WitnessRecord {
            cluster_id: "c".into(),
            vote,
            last_log_id: last,
            committed: None,
            snapshot: None,
        }
    }
    /// W's log: index -> term, with indexes <= purged compacted.
    fn log(terms: &[(u64, u64)], purged: Option<u64>) -> impl Fn(u64) -> Slot + '_ {
        move |i| {
            if purged.is_some_and(|p| i <= p) {
                return Slot::Purged;
            }
            terms
                .iter()
                .find(|(idx, _)| *idx == i)
                .map(|(idx, t)| Slot::Present(lid(*t, *idx), entry_digest(&entry(*t, *idx))))
                .unwrap_or(Slot::Absent)
        }
    }
    /// An entry with a payload, so two entries can share a log id and differ.
    fn put(term: u64, index: u64, value: &str) -> Entry {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Normal(walship_types::Batch::one(walship_types::Request::Set {
                key: "x".into(),
                value: value.as_bytes().to_vec(),
            })),
        }
    }
    /// W's log as whole entries, with indexes <= purged compacted.
    fn entries_log(entries: &[Entry], purged: Option<u64>) -> impl Fn(u64) -> Slot + '_ {
        move |i| {
            if purged.is_some_and(|p| i <= p) {
                return Slot::Purged;
            }
            entries
                .iter()
                .find(|e| e.log_id.index == i)
                .map(|e| Slot::Present(e.log_id, entry_digest(e)))
                .unwrap_or(Slot::Absent)
        }
    }
    fn append_req(
        vote: Vote,
        prev: Option<LogId>,
        entries: Vec<Entry>,
        commit: Option<LogId>,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote,
            prev_log_id: prev,
            entries,
            leader_commit: commit,
        }
    }

    // Table: (W vote, W last, req vote, req last) -> granted. Raft §5.2/5.4.1.
    #[test]
    fn vote_table() {
        let v = |t, n| Vote::new(t, n);
        let cases = [
            (v(1, 1), Some(lid(1, 5)), v(2, 2), Some(lid(1, 5)), true), // higher term, equal log
            (v(1, 1), Some(lid(1, 5)), v(2, 2), Some(lid(1, 4)), false), // log behind W
            (v(1, 1), Some(lid(1, 5)), v(2, 2), Some(lid(2, 3)), true), // higher last term wins
            // openraft's default leader ids order by (term, node id): a higher id of the same term wins.
            (v(2, 1), Some(lid(1, 5)), v(2, 2), Some(lid(1, 9)), true),
            (v(2, 2), Some(lid(1, 5)), v(2, 1), Some(lid(1, 9)), false),
            (v(2, 1), Some(lid(1, 5)), v(2, 1), Some(lid(1, 5)), true), // same candidate asks again
            (v(3, 1), None, v(2, 2), Some(lid(1, 9)), false),           // lower term
            (
                Vote::default(),
                Some(LogId::default()),
                v(1, 1),
                Some(LogId::default()),
                true,
            ), // first election after genesis
        ];
        for (i, (wv, wl, rv, rl, granted)) in cases.into_iter().enumerate() {
            let w = rec(wv, wl);
            let (resp, next) = decide_vote(&w, &VoteRequest::new(rv, rl));
            assert_eq!(resp.vote_granted, granted, "case {i}");
            assert_eq!(next.is_some(), granted, "case {i}");
            if granted {
                assert_eq!(next.unwrap().vote, rv, "case {i}");
            } else {
                assert_eq!(resp.vote, wv, "case {i}: a refusal reports W's vote");
            }
        }
    }

    #[test]
    fn append_refuses_lower_or_rival_vote() {
        let w = rec(Vote::new_committed(3, 2), Some(lid(3, 7)));
        for v in [Vote::new_committed(2, 1), Vote::new_committed(3, 1), Vote::new(3, 1)] {
            let d = decide_append(&w, &append_req(v, Some(lid(3, 7)), vec![], None), log(&[(7, 3)], None));
            assert_eq!(
                d,
                AppendDecision::HigherVote(w.vote),
                "stale leader {v} must be told W's vote"
            );
        }
    }

    #[test]
    fn append_conflict_when_prev_missing_or_other_term() {
        let w = rec(Vote::new_committed(2, 1), Some(lid(2, 5)));
        let terms = [(4, 1), (5, 2)];
        let v = Vote::new_committed(3, 2);
        for prev in [lid(2, 4), lid(3, 6)] {
            match decide_append(&w, &append_req(v, Some(prev), vec![], None), log(&terms, None)) {
                AppendDecision::Conflict { record } => assert_eq!(record.vote, v, "conflict still adopts the vote"),
                d => panic!("prev {prev} should conflict, got {d:?}"),
            }
        }
    }

    #[test]
    fn append_truncates_from_first_conflict_and_keeps_matching_prefix() {
        let w = rec(Vote::new_committed(2, 1), Some(lid(2, 6)));
        let terms = [(4, 1), (5, 2), (6, 2)];
        let v = Vote::new_committed(3, 2);
        let req = append_req(
            v,
            Some(lid(1, 4)),
            vec![entry(2, 5), entry(3, 6), entry(3, 7)],
            Some(lid(2, 5)),
        );
        match decide_append(&w, &req, log(&terms, None)) {
            AppendDecision::Accept {
                record,
                truncate_from,
                append,
            } => {
                assert_eq!(truncate_from, Some(6));
                assert_eq!(
                    append.iter().map(|e| e.log_id).collect::<Vec<_>>(),
                    vec![lid(3, 6), lid(3, 7)]
                );
                assert_eq!(record.last_log_id, Some(lid(3, 7)));
                assert_eq!(record.committed, Some(lid(2, 5)));
                assert_eq!(record.vote, v);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn stale_retransmit_does_not_truncate() {
        // The leader resends entries W already has: nothing is cut, nothing appended.
        let w = rec(Vote::new_committed(2, 1), Some(lid(2, 6)));
        let terms = [(4, 2), (5, 2), (6, 2)];
        let req = append_req(w.vote, Some(lid(2, 4)), vec![entry(2, 5)], None);
        let d = decide_append(&w, &req, log(&terms, None));
        assert!(d.is_check_only(&w), "{d:?}");
        assert_eq!(w.last_log_id, Some(lid(2, 6)));
    }

    #[test]
    fn heartbeat_is_check_only_and_commit_is_bounded_by_match() {
        let w = rec(Vote::new_committed(2, 1), Some(lid(2, 6)));
        let terms = [(6, 2)];
        let hb = append_req(w.vote, Some(lid(2, 6)), vec![], None);
        assert!(decide_append(&w, &hb, log(&terms, None)).is_check_only(&w));
        // leader_commit beyond what W is known to share is capped at prev.
        let hb = append_req(w.vote, Some(lid(2, 6)), vec![], Some(lid(2, 9)));
        match decide_append(&w, &hb, log(&terms, None)) {
            AppendDecision::Accept { record, .. } => assert_eq!(record.committed, Some(lid(2, 6))),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn purged_prefix_matches_and_is_skipped() {
        let mut w = rec(Vote::new_committed(2, 1), Some(lid(2, 10)));
        w.last_log_id = Some(lid(2, 10));
        let req = append_req(w.vote, Some(lid(1, 3)), vec![entry(1, 4), entry(2, 11)], None);
        match decide_append(&w, &req, log(&[(10, 2)], Some(8))) {
            AppendDecision::Accept {
                append, truncate_from, ..
            } => {
                assert_eq!(truncate_from, None);
                assert_eq!(append.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![11]);
            }
            d => panic!("{d:?}"),
        }
    }

    /// What a table case of `log_id_reuse_table` expects.
    #[derive(Debug)]
    enum Want {
        Reused(u64),
        /// Accept with this truncation point and these appended indexes.
        Accept(Option<u64>, Vec<u64>),
        CheckOnly,
        Conflict,
        HigherVote,
    }

    /// witness-protocol.md, "A log id names one entry forever" (issue 9):
    /// where a request's entry has the log id of W's entry at that index but
    /// other bytes, W keeps its own (the one that may be committed) and
    /// answers LogIdReused, wherever in the request the entry is, not only
    /// where log matching's probes would look. Raft §5.3's checks come first
    /// (a stale leader is still told W's vote; a request whose prev W lacks
    /// is still a Conflict), and entries inside W's snapshot are not compared
    /// (their bytes are no longer in W's WAL; they are committed).
    #[test]
    fn log_id_reuse_table() {
        let v = Vote::new_committed(1, 1);
        let (a, b) = ("OLD", "NEW");
        let w_log = vec![put(1, 9, "o"), put(1, 10, "p"), put(1, 11, "q"), put(1, 12, a)];
        let w2_log = vec![put(1, 9, "o"), put(1, 10, "p"), put(1, 11, "q"), put(2, 12, a)];
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vote, &[Entry], Option<u64>, Option<LogId>, Vec<Entry>, Want)> = vec![
            (
                // The issue's reproduction: a reborn leader of term 1 sends
                // its own (1,12) where W holds the forgotten one.
                "reused id at the request's only entry",
                v,
                &w_log,
                None,
                Some(lid(1, 11)),
                vec![put(1, 12, b)],
                Want::Reused(12),
            ),
            (
                "same id, same bytes: a retransmit, nothing to write",
                v,
                &w_log,
                None,
                Some(lid(1, 11)),
                vec![put(1, 12, a)],
                Want::CheckOnly,
            ),
            (
                "reused id in the middle, later entries equal: every entry is compared",
                v,
                &w_log,
                None,
                Some(lid(1, 9)),
                vec![put(1, 10, "p"), put(1, 11, "Q"), put(1, 12, a), put(1, 13, "r")],
                Want::Reused(11),
            ),
            (
                "reused id after the first log id conflict is refused too",
                v,
                &w2_log,
                None,
                Some(lid(1, 9)),
                vec![put(1, 10, "p"), put(2, 11, "q2"), put(2, 12, b)],
                Want::Reused(12),
            ),
            (
                "a conflict with no reuse truncates as Raft says",
                v,
                &w2_log,
                None,
                Some(lid(1, 9)),
                vec![put(1, 10, "p"), put(2, 11, "q2"), put(3, 12, b)],
                Want::Accept(Some(11), vec![11, 12]),
            ),
            (
                "entries inside W's snapshot are not compared",
                v,
                &w_log,
                Some(11),
                Some(lid(1, 9)),
                vec![put(1, 10, "other"), put(1, 11, "other"), put(1, 12, a), put(1, 13, "r")],
                Want::Accept(None, vec![13]),
            ),
            (
                "entries past W's last are new, whatever they hold",
                v,
                &w_log,
                None,
                Some(lid(1, 12)),
                vec![put(1, 13, "r"), put(1, 14, "s")],
                Want::Accept(None, vec![13, 14]),
            ),
            (
                "a stale leader is told W's vote first",
                Vote::new_committed(0, 2),
                &w_log,
                None,
                Some(lid(1, 11)),
                vec![put(1, 12, b)],
                Want::HigherVote,
            ),
            (
                "a prev W lacks is a Conflict first",
                v,
                &w_log,
                None,
                Some(lid(2, 11)),
                vec![put(2, 12, b)],
                Want::Conflict,
            ),
        ];
        for (name, vote, wl, purged, prev, entries, want) in cases {
            let w = rec(Vote::new_committed(1, 1), wl.last().map(|e| e.log_id));
            let req = append_req(vote, prev, entries, None);
            let d = decide_append(&w, &req, entries_log(wl, purged));
            let ok = match (&want, &d) {
                (
                    Want::Reused(i),
                    AppendDecision::LogIdReused {
                        index,
                        witness_digest,
                        request_digest,
                    },
                ) => {
                    let ours = wl.iter().find(|e| e.log_id.index == *i).expect("case names W's entry");
                    let theirs = req
                        .entries
                        .iter()
                        .find(|e| e.log_id.index == *i)
                        .expect("and the request's");
                    assert_eq!(*witness_digest, entry_digest(ours), "{name}");
                    assert_eq!(*request_digest, entry_digest(theirs), "{name}");
                    index == i
                }
                (
                    Want::Accept(cut, idx),
                    AppendDecision::Accept {
                        truncate_from, append, ..
                    },
                ) => cut == truncate_from && *idx == append.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
                (Want::CheckOnly, d) => d.is_check_only(&w),
                (Want::Conflict, AppendDecision::Conflict { .. }) => true,
                (Want::HigherVote, AppendDecision::HigherVote(_)) => true,
                _ => false,
            };
            assert!(ok, "{name}: wanted {want:?}, got {d:?}");
        }
    }

    #[test]
    fn unloaded_overlap_asks_for_the_first_unloaded_index() {
        // The whole overlap must be compared, so an unloaded segment
        // anywhere in it is loaded, not only where a binary search probes.
        let w_log = [put(1, 9, "o"), put(1, 10, "p"), put(1, 11, "q"), put(1, 12, "r")];
        let w = rec(Vote::new_committed(1, 1), Some(lid(1, 12)));
        let req = append_req(w.vote, Some(lid(1, 9)), w_log[1..].to_vec(), None);
        let slot = |i: u64| {
            if i == 12 {
                Slot::Unloaded
            } else {
                entries_log(&w_log, None)(i)
            }
        };
        assert_eq!(decide_append(&w, &req, slot), AppendDecision::Load(12));
    }

    fn snap(id: &str, term: u64, index: u64) -> SnapshotRef {
        SnapshotRef {
            meta: walship_types::SnapshotMeta {
                last_log_id: Some(lid(term, index)),
                last_membership: Default::default(),
                snapshot_id: id.into(),
            },
            chunk_count: 1,
            size_bytes: 10,
            crc32: 0,
        }
    }

    /// W's log 1..=25 in term 1 (segments from 1, 11, 21), or with
    /// `diverged_from` on in term 2 (a deposed leader's entries W accepted).
    fn long_log(diverged_from: Option<u64>) -> Vec<(u64, u64)> {
        (1..=25)
            .map(|i| (i, if diverged_from.is_some_and(|d| i >= d) { 2 } else { 1 }))
            .collect()
    }

    #[test]
    fn snapshot_refused_below_ws_vote_and_moot_when_covered() {
        let v2 = Vote::new_committed(2, 1);
        let w = rec(v2, Some(lid(1, 25)));
        let terms = long_log(None);
        assert_eq!(
            decide_snapshot(
                &w,
                &Vote::new_committed(1, 1),
                snap("s", 1, 15),
                &[1, 11, 21],
                log(&terms, None)
            ),
            SnapshotDecision::Refused(v2),
            "only the leader W follows may replace W's log"
        );
        let mut covered = w.clone();
        covered.snapshot = Some(snap("old", 1, 20));
        for at in [15, 20] {
            assert_eq!(
                decide_snapshot(&covered, &v2, snap("s", 1, at), &[21], log(&terms, Some(20))),
                SnapshotDecision::AlreadyCovered,
                "W's snapshot at 20 covers one at {at}"
            );
        }
    }

    #[test]
    fn snapshot_keeps_the_wal_that_continues_it_and_drops_what_it_covers() {
        let v = Vote::new_committed(1, 1);
        let mut w = rec(v, Some(lid(1, 25)));
        w.committed = Some(lid(1, 12));
        let terms = long_log(None);
        let SnapshotDecision::Store {
            record,
            delete_segments,
            replaced,
        } = decide_snapshot(&w, &v, snap("s", 1, 15), &[1, 11, 21], log(&terms, None))
        else {
            panic!("stored")
        };
        assert_eq!(delete_segments, vec![1], "only the segment wholly at or below 15 goes");
        assert_eq!(record.last_log_id, Some(lid(1, 25)), "the tail continues the snapshot");
        assert_eq!(
            record.committed,
            Some(lid(1, 15)),
            "a snapshot holds committed entries only"
        );
        assert_eq!(record.purged(), Some(lid(1, 15)));
        assert_eq!(replaced, None);
    }

    #[test]
    fn snapshot_drops_a_tail_that_does_not_continue_it() {
        let v = Vote::new_committed(3, 1);
        // W's entry at 15 is another leader's (term 2): W's log after 14
        // was never committed, and the snapshot ends at (1, 15).
        let w = rec(v, Some(lid(2, 25)));
        let terms = long_log(Some(15));
        let SnapshotDecision::Store {
            record,
            delete_segments,
            ..
        } = decide_snapshot(&w, &v, snap("s", 1, 15), &[1, 11, 21], log(&terms, None))
        else {
            panic!("stored")
        };
        assert_eq!(delete_segments, vec![1, 11, 21]);
        assert_eq!(record.last_log_id, Some(lid(1, 15)), "W's log is the snapshot alone");
        // W's log shorter than the snapshot: the same.
        let short = rec(v, Some(lid(1, 5)));
        let terms: Vec<(u64, u64)> = (1..=5).map(|i| (i, 1)).collect();
        let SnapshotDecision::Store {
            record,
            delete_segments,
            ..
        } = decide_snapshot(&short, &v, snap("s", 1, 15), &[1], log(&terms, None))
        else {
            panic!("stored")
        };
        assert_eq!(delete_segments, vec![1]);
        assert_eq!(record.last_log_id, Some(lid(1, 15)));
    }

    #[test]
    fn snapshot_asks_for_an_unloaded_entry_and_names_the_snapshot_it_replaces() {
        let v = Vote::new_committed(1, 1);
        let mut w = rec(v, Some(lid(1, 25)));
        assert_eq!(
            decide_snapshot(&w, &v, snap("s", 1, 15), &[1, 11, 21], |_| Slot::Unloaded),
            SnapshotDecision::Load(15)
        );
        w.snapshot = Some(snap("old", 1, 5));
        let terms = long_log(None);
        let replaced = |id: &str| match decide_snapshot(&w, &v, snap(id, 1, 15), &[11, 21], log(&terms, Some(5))) {
            SnapshotDecision::Store { replaced, .. } => replaced.map(|r| r.meta.snapshot_id),
            d => panic!("{d:?}"),
        };
        assert_eq!(
            replaced("new"),
            Some("old".to_string()),
            "the old chunks become garbage"
        );
        assert_eq!(
            replaced("old"),
            None,
            "a re-upload under the same id reuses the chunks: none are garbage"
        );
    }

    #[test]
    fn only_a_commit_carrier_right_after_an_accepted_append_piggybacks() {
        use std::time::Duration;
        use std::time::Instant;
        let v = Vote::new_committed(2, 1);
        let t0 = Instant::now();
        let window = Duration::from_millis(50);
        let last = Accepted {
            sent_at: t0,
            vote: v,
            ends_at: Some(lid(2, 7)),
        };
        let carrier = append_req(v, Some(lid(2, 7)), vec![], Some(lid(2, 7)));
        let soon = t0 + Duration::from_millis(10);
        assert!(piggybacks(&carrier, Some(&last), soon, window));
        let rows = [
            (
                "carries entries",
                append_req(v, Some(lid(2, 7)), vec![entry(2, 8)], None),
                Some(last),
                soon,
            ),
            ("fresh stream (a leadership check)", carrier.clone(), None, soon),
            (
                "the window passed (an idle heartbeat)",
                carrier.clone(),
                Some(last),
                t0 + window,
            ),
            (
                "another vote",
                append_req(Vote::new_committed(3, 1), Some(lid(2, 7)), vec![], None),
                Some(last),
                soon,
            ),
            (
                "asks beyond the accepted append",
                append_req(v, Some(lid(2, 6)), vec![], None),
                Some(last),
                soon,
            ),
        ];
        for (why, req, last, now) in rows {
            assert!(
                !piggybacks(&req, last.as_ref(), now, window),
                "{why}: must reach ZooKeeper"
            );
        }
    }
}
