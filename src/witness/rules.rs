//! W's rules as a Raft voter (witness-protocol.md, "W answers as a Raft voter
//! would"), as pure functions of W's record and the request. The ZooKeeper I/O
//! that carries a decision out lives in `mod.rs`; keeping the rules here lets
//! them be table-tested without ZooKeeper and read next to the design.

use openraft::raft::AppendEntriesRequest;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;

use super::record::WitnessRecord;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;

/// What W's log holds at one index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// At or below W's snapshot: committed, so it matches any leader's entry.
    Purged,
    Present(LogId),
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
/// `Load(i)`, and the caller loads that segment and asks again.
///
/// By Raft's log matching property, if W holds the request's entry at index
/// i then it holds all of the request's entries before i; so the first
/// conflicting entry is found by binary search, with a handful of lookups
/// however long the request (a new leader's first append can carry
/// thousands of entries W already has).
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
            Slot::Present(have) => have == prev,
            Slot::Absent => false,
            Slot::Unloaded => return AppendDecision::Load(prev.index),
        };
        if !ok {
            return AppendDecision::Conflict { record: next };
        }
    }

    // Position in `req.entries` of the first entry W does not hold as is.
    let holds = |i: usize| -> Result<bool, u64> {
        let e = &req.entries[i];
        match slot(e.log_id.index) {
            Slot::Purged => Ok(true),
            Slot::Present(have) => Ok(have == e.log_id),
            Slot::Absent => Ok(false),
            Slot::Unloaded => Err(e.log_id.index),
        }
    };
    let (mut lo, mut hi) = (0usize, req.entries.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match holds(mid) {
            Ok(true) => lo = mid + 1,
            Ok(false) => hi = mid,
            Err(index) => return AppendDecision::Load(index),
        }
    }
    let append = req.entries[lo..].to_vec();
    let truncate_from = match append.first() {
        Some(e) => match slot(e.log_id.index) {
            Slot::Present(_) => Some(e.log_id.index),
            Slot::Unloaded => return AppendDecision::Load(e.log_id.index),
            Slot::Purged | Slot::Absent => None,
        },
        None => None,
    };
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
                .map(|(idx, t)| Slot::Present(lid(*t, *idx)))
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
}
