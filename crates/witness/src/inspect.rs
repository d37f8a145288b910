//! Read-only inspection of W's znodes, for `walship wal inspect`: W's record,
//! its snapshot with every chunk checked, every WAL segment with its CRC
//! verdict, and the gaps or overlaps that would stop a node from adopting W.
//!
//! Nothing here writes to ZooKeeper. Corruption is reported, never skipped
//! and never repaired: the caller shows it and decides the exit code.

use futures::StreamExt;
use futures::TryStreamExt;
use zookeeper_client as zk;

use super::record;
use super::record::SnapshotRef;
use super::record::WitnessRecord;
use super::SegmentReport;
use super::Witness;
use super::WitnessError;
use walship_types::LogId;

/// Reads of single znodes kept in flight at once: enough to hide the round
/// trip, few enough that big segments or chunks do not pile up in memory.
const READS_IN_FLIGHT: usize = 16;
/// Attempts at a read during which W's record did not change.
const CONSISTENT_READ_TRIES: usize = 5;

/// Why a WAL segment is not part of W's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Garbage {
    /// Every entry is inside W's snapshot; left for collection.
    BehindSnapshot,
    /// Starts after W's last log id (a truncation or compaction whose clean-up
    /// did not finish); nodes ignore it.
    BeyondLastLogId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapKind {
    /// Indexes of W's log that no segment holds.
    Gap,
    /// Indexes held by two segments, or by a segment past W's last log id.
    Overlap,
    /// The last segment ends at W's last index but with another term.
    Mismatch,
}

/// One break in W's log as its segments lay it out.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LogGap {
    pub kind: GapKind,
    pub from_index: u64,
    pub to_index: u64,
    pub detail: String,
}

/// W's snapshot as stored: what the record says, and whether the chunks agree.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotReport {
    pub snapshot_id: String,
    pub dir: String,
    pub last_log_id: Option<LogId>,
    pub size_bytes: u64,
    pub chunk_count: u32,
    /// None when every chunk's crc32, the total size and the whole-snapshot
    /// crc32 match the record; else the first problem, naming its znode.
    pub error: Option<String>,
}

/// Everything `walship wal inspect` shows.
#[derive(Clone, Debug)]
pub struct Inspection {
    pub record_path: String,
    /// None when the record znode does not decode (see `record_error`).
    pub record: Option<WitnessRecord>,
    pub record_error: Option<String>,
    pub snapshot: Option<SnapshotReport>,
    /// In index order, garbage included (see `SegmentReport::garbage`).
    pub segments: Vec<SegmentReport>,
    pub gaps: Vec<LogGap>,
    /// Snapshot directories other than the one W's record names.
    pub unreferenced_snapshots: Vec<String>,
    /// False when W's record changed during every attempt: the segments may
    /// then come from different moments (a live leader under load), and a gap
    /// at the end may be an append that landed while reading.
    pub consistent: bool,
}

impl Inspection {
    /// Corrupt znodes plus breaks in the log: zero means W is sound.
    pub fn problem_count(&self) -> usize {
        usize::from(self.record_error.is_some())
            + usize::from(self.snapshot.as_ref().is_some_and(|s| s.error.is_some()))
            + self.segments.iter().filter(|s| s.error.is_some()).count()
            + self.gaps.len()
    }
}

impl Witness {
    /// Reads every znode of W and checks it. `Err` only when ZooKeeper cannot
    /// be read or the cluster does not exist (`WitnessError::Zk` with
    /// `NoNode` on the record path); corruption is in the `Inspection`.
    ///
    /// The read is repeated while W's record version moves underneath (every
    /// change to W's WAL or snapshot also sets the record), so on a quiet
    /// cluster the result is one consistent picture.
    pub async fn inspect_all(&self) -> Result<Inspection, WitnessError> {
        let root = self.paths.root.clone();
        self.zk
            .run(&format!("sync {root}"), |c| async move { c.sync(&root).await })
            .await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut inspection, version_before) = self.inspect_once().await?;
            let path = self.paths.witness();
            let version_after = self
                .zk
                .run(&format!("stat {path}"), |c| async move { c.check_stat(&path).await })
                .await?
                .map(|s| s.version);
            if version_after == Some(version_before) || attempt >= CONSISTENT_READ_TRIES {
                inspection.consistent = version_after == Some(version_before);
                return Ok(inspection);
            }
        }
    }

    /// One pass over W's znodes; also returns the record's version at the start.
    async fn inspect_once(&self) -> Result<(Inspection, i32), WitnessError> {
        let record_path = self.paths.witness();
        let p = record_path.clone();
        let (bytes, stat) = self
            .zk
            .run(&format!("get {record_path}"), |c| async move { c.get_data(&p).await })
            .await?;
        let (record, record_error) = match record::decode_record(&bytes, &record_path) {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e.to_string())),
        };

        let mut segments = self.inspect_segments().await?;
        let snapshot = match record.as_ref().and_then(|r| r.snapshot.as_ref()) {
            Some(sref) => Some(self.check_snapshot(sref).await?),
            None => None,
        };
        let current = record
            .as_ref()
            .and_then(|r| r.snapshot.as_ref())
            .map(|s| s.meta.snapshot_id.clone());
        let unreferenced_snapshots = self
            .list(&self.paths.snapshots_dir())
            .await?
            .into_iter()
            .filter(|id| Some(id) != current.as_ref())
            .map(|id| self.paths.snapshot_dir(&id))
            .collect();
        let gaps = match &record {
            Some(r) => classify_segments(r, &mut segments),
            None => Vec::new(),
        };
        let inspection = Inspection {
            record_path,
            record,
            record_error,
            snapshot,
            segments,
            gaps,
            unreferenced_snapshots,
            consistent: true,
        };
        Ok((inspection, stat.version))
    }

    /// Children of `path`, sorted; none if the directory does not exist.
    pub(super) async fn list(&self, path: &str) -> Result<Vec<String>, WitnessError> {
        let p = path.to_string();
        match self
            .zk
            .run(&format!("list {path}"), |c| async move { c.list_children(&p).await })
            .await
        {
            Ok(mut children) => {
                children.sort();
                Ok(children)
            }
            Err(e) if e.is_zk(zk::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Raw bytes of each path (None for one deleted meanwhile), in order,
    /// several reads in flight.
    async fn get_many(&self, paths: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, WitnessError> {
        futures::stream::iter(paths)
            .map(|path| async move {
                let p = path.clone();
                match self
                    .zk
                    .run(&format!("get {path}"), |c| async move { c.get_data(&p).await })
                    .await
                {
                    Ok((bytes, _)) => Ok(Some(bytes)),
                    Err(e) if e.is_zk(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Every segment under `wal/`, decoded and CRC-checked; `garbage` is left
    /// for [`classify_segments`]. A segment deleted while listing is left out
    /// (only garbage goes without a record change, which `inspect_all` sees).
    async fn inspect_segments(&self) -> Result<Vec<SegmentReport>, WitnessError> {
        let mut firsts: Vec<u64> = self
            .list(&self.paths.wal_dir())
            .await?
            .iter()
            .filter_map(|n| record::parse_segment_name(n))
            .collect();
        firsts.sort_unstable();
        let paths: Vec<String> = firsts.iter().map(|f| self.paths.segment(*f)).collect();
        let contents = self.get_many(paths.clone()).await?;
        let mut out = Vec::with_capacity(firsts.len());
        for ((first, path), bytes) in firsts.into_iter().zip(paths).zip(contents) {
            let Some(bytes) = bytes else { continue };
            out.push(segment_report(path, first, &bytes));
        }
        Ok(out)
    }

    /// Reads every chunk of W's snapshot and checks each chunk's crc32, the
    /// total size and the whole-snapshot crc32 against the record.
    async fn check_snapshot(&self, sref: &SnapshotRef) -> Result<SnapshotReport, WitnessError> {
        let id = &sref.meta.snapshot_id;
        let dir = self.paths.snapshot_dir(id);
        // Chunk by chunk (a few in flight), folding each into the whole
        // snapshot's crc32: memory stays a few chunks, whatever its size.
        let mut crc = crc32fast::Hasher::new();
        let mut size_bytes = 0u64;
        let mut error = None;
        let all: Vec<u32> = (0..sref.chunk_count).collect();
        'chunks: for group in all.chunks(READS_IN_FLIGHT) {
            let paths: Vec<String> = group.iter().map(|i| self.paths.chunk(id, *i)).collect();
            let chunks = self.get_many(paths.clone()).await?;
            for (path, chunk) in paths.iter().zip(chunks) {
                let Some(bytes) = chunk else {
                    error = Some(format!("chunk {path} is missing"));
                    break 'chunks;
                };
                match record::decode_chunk(&bytes, path) {
                    Ok(payload) => {
                        crc.update(payload);
                        size_bytes += payload.len() as u64;
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break 'chunks;
                    }
                }
            }
        }
        if error.is_none() {
            let crc = crc.finalize();
            if size_bytes != sref.size_bytes || crc != sref.crc32 {
                error = Some(format!(
                    "corrupt snapshot {dir}: chunks hold {size_bytes} bytes crc32 {crc:08x}, the record says {} bytes crc32 {:08x}",
                    sref.size_bytes,
                    sref.crc32
                ));
            }
        }
        Ok(SnapshotReport {
            snapshot_id: id.clone(),
            dir,
            last_log_id: sref.meta.last_log_id,
            size_bytes: sref.size_bytes,
            chunk_count: sref.chunk_count,
            error,
        })
    }
}

/// What one segment's bytes hold, or why they cannot be trusted.
pub(super) fn segment_report(path: String, first: u64, bytes: &[u8]) -> SegmentReport {
    match record::decode_segment(bytes, &path, first) {
        Ok(es) => {
            let mut terms: Vec<u64> = es.iter().map(|e| e.log_id.leader_id.term).collect();
            terms.dedup();
            SegmentReport {
                path,
                first_index: first,
                last_index: es.last().map(|e| e.log_id.index),
                terms,
                bytes: bytes.len(),
                error: None,
                garbage: None,
            }
        }
        Err(e) => SegmentReport {
            path,
            first_index: first,
            last_index: None,
            terms: vec![],
            bytes: bytes.len(),
            // The path is the report's own field; keep only why.
            error: Some(match e {
                WitnessError::Corrupt { reason, .. } => reason,
                other => other.to_string(),
            }),
            garbage: None,
        },
    }
}

/// Marks garbage segments and returns every break in W's log as the others
/// lay it out: W's log must run without a hole from just after its snapshot
/// (index 0 without one) to its record's last log id.
///
/// A segment that does not decode is assumed to reach the next segment's
/// first index (as a node reading W would), so its own corruption is the one
/// problem it reports.
pub fn classify_segments(record: &WitnessRecord, segments: &mut [SegmentReport]) -> Vec<LogGap> {
    segments.sort_by_key(|s| s.first_index);
    let purged = record.purged().map(|p| p.index);
    let last = record.last_log_id;
    let next_firsts: Vec<Option<u64>> = (0..segments.len())
        .map(|i| segments.get(i + 1).map(|s| s.first_index))
        .collect();
    for (seg, next) in segments.iter_mut().zip(&next_firsts) {
        let end = seg.last_index.or(next.map(|n| n.saturating_sub(1)));
        seg.garbage = if purged.is_some_and(|p| end.is_some_and(|e| e <= p)) {
            Some(Garbage::BehindSnapshot)
        } else if last.is_none_or(|l| seg.first_index > l.index) {
            Some(Garbage::BeyondLastLogId)
        } else {
            None
        };
    }

    let mut gaps = Vec::new();
    let live: Vec<&SegmentReport> = segments.iter().filter(|s| s.garbage.is_none()).collect();
    // The next index W's log needs, and what holds the one before it.
    let mut expected: Option<u64> = Some(purged.map_or(0, |p| p + 1));
    let mut before = match purged {
        Some(p) => format!("the snapshot (up to index {p})"),
        None => "the start of the log".to_string(),
    };
    for (i, seg) in live.iter().enumerate() {
        if let Some(want) = expected {
            if seg.first_index > want {
                gaps.push(LogGap {
                    kind: GapKind::Gap,
                    from_index: want,
                    to_index: seg.first_index - 1,
                    detail: format!("no segment holds these indexes, between {before} and {}", seg.path),
                });
            } else if seg.first_index < want && i > 0 {
                gaps.push(LogGap {
                    kind: GapKind::Overlap,
                    from_index: seg.first_index,
                    to_index: want - 1,
                    detail: format!("{before} and {} both hold these indexes", seg.path),
                });
            }
        }
        let end = seg
            .last_index
            .or_else(|| live.get(i + 1).map(|n| n.first_index.saturating_sub(1)));
        // None only for a corrupt last segment: its end is unknown.
        expected = end.map(|e| e + 1);
        before = seg.path.clone();
    }
    if let (Some(want), Some(l)) = (expected, last) {
        if want <= l.index {
            gaps.push(LogGap {
                kind: GapKind::Gap,
                from_index: want,
                to_index: l.index,
                detail: format!(
                    "W's record says its log ends at index {}, but {before} ends before",
                    l.index
                ),
            });
        } else if want > l.index + 1 {
            gaps.push(LogGap {
                kind: GapKind::Overlap,
                from_index: l.index + 1,
                to_index: want - 1,
                detail: format!("{before} holds entries past W's last log id {l}"),
            });
        } else if let Some(seg) = live.last() {
            let term = seg.terms.last().copied();
            if seg.last_index == Some(l.index) && term.is_some_and(|t| t != l.leader_id.term) {
                gaps.push(LogGap {
                    kind: GapKind::Mismatch,
                    from_index: l.index,
                    to_index: l.index,
                    detail: format!(
                        "{} ends with term {}, W's last log id is {l}",
                        seg.path,
                        term.unwrap_or_default()
                    ),
                });
            }
        }
    }
    gaps
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use walship_types::SnapshotMeta;
    use walship_types::Vote;

    fn lid(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn record(last: u64, purged: Option<u64>) -> WitnessRecord {
        WitnessRecord {
            cluster_id: "c".into(),
            vote: Vote::new_committed(2, 1),
            last_log_id: Some(lid(2, last)),
            committed: Some(lid(2, last)),
            snapshot: purged.map(|p| SnapshotRef {
                meta: SnapshotMeta {
                    last_log_id: Some(lid(2, p)),
                    last_membership: Default::default(),
                    snapshot_id: "s".into(),
                },
                chunk_count: 1,
                size_bytes: 10,
                crc32: 0,
            }),
        }
    }

    /// A segment `first..=last` (None: corrupt) of term 2.
    fn seg(first: u64, last: Option<u64>) -> SegmentReport {
        SegmentReport {
            path: format!("/w/{first}"),
            first_index: first,
            last_index: last,
            terms: if last.is_some() { vec![2] } else { vec![] },
            bytes: 100,
            error: last.is_none().then(|| "crc32 mismatch".to_string()),
            garbage: None,
        }
    }

    fn kinds(gaps: &[LogGap]) -> Vec<(GapKind, u64, u64)> {
        gaps.iter().map(|g| (g.kind, g.from_index, g.to_index)).collect()
    }

    #[test]
    fn contiguous_log_has_no_gaps() {
        let mut s = vec![seg(0, Some(0)), seg(1, Some(4)), seg(5, Some(5))];
        assert_eq!(classify_segments(&record(5, None), &mut s), vec![]);
        assert!(s.iter().all(|s| s.garbage.is_none()));
    }

    #[test]
    fn segments_behind_the_snapshot_are_garbage_and_the_log_may_start_inside_one() {
        let mut s = vec![seg(0, Some(3)), seg(4, Some(9)), seg(10, Some(12))];
        assert_eq!(classify_segments(&record(12, Some(6)), &mut s), vec![]);
        let garbage: Vec<_> = s.iter().map(|s| s.garbage).collect();
        assert_eq!(garbage, vec![Some(Garbage::BehindSnapshot), None, None]);
    }

    #[test]
    fn snapshot_at_the_last_log_id_needs_no_segment() {
        let mut s = vec![seg(0, Some(6))];
        assert_eq!(classify_segments(&record(6, Some(6)), &mut s), vec![]);
        assert_eq!(s[0].garbage, Some(Garbage::BehindSnapshot));
    }

    #[test]
    fn gaps_overlaps_and_a_short_tail_are_found() {
        let mut s = vec![seg(0, Some(2)), seg(5, Some(7)), seg(7, Some(8))];
        assert_eq!(
            kinds(&classify_segments(&record(10, None), &mut s)),
            vec![(GapKind::Gap, 3, 4), (GapKind::Overlap, 7, 7), (GapKind::Gap, 9, 10)]
        );
    }

    #[test]
    fn a_gap_right_after_the_snapshot_is_found() {
        let mut s = vec![seg(9, Some(10))];
        assert_eq!(
            kinds(&classify_segments(&record(10, Some(6)), &mut s)),
            vec![(GapKind::Gap, 7, 8)]
        );
    }

    #[test]
    fn a_segment_past_the_last_log_id_overlaps_it_and_one_after_it_is_garbage() {
        let mut s = vec![seg(0, Some(6)), seg(9, Some(9))];
        assert_eq!(
            kinds(&classify_segments(&record(5, None), &mut s)),
            vec![(GapKind::Overlap, 6, 6)]
        );
        assert_eq!(s[1].garbage, Some(Garbage::BeyondLastLogId));
    }

    #[test]
    fn a_corrupt_segment_is_assumed_to_reach_the_next_one() {
        let mut s = vec![seg(0, Some(0)), seg(1, None), seg(5, Some(6))];
        assert_eq!(classify_segments(&record(6, None), &mut s), vec![]);
        // A corrupt last segment: its end is unknown, so no tail verdict.
        let mut s = vec![seg(0, Some(0)), seg(1, None)];
        assert_eq!(classify_segments(&record(6, None), &mut s), vec![]);
    }

    #[test]
    fn a_term_mismatch_at_the_end_is_found() {
        let mut s = vec![seg(0, Some(5))];
        let mut r = record(5, None);
        r.last_log_id = Some(lid(3, 5));
        assert_eq!(kinds(&classify_segments(&r, &mut s)), vec![(GapKind::Mismatch, 5, 5)]);
    }
}
