//! `walship wal inspect`: W's record, snapshot and WAL segments as an aligned
//! table (or one JSON document with `--json`), from
//! [`Witness::inspect_all`](crate::witness::Witness::inspect_all).

use serde_json::json;
use serde_json::Value;

use super::Stop;
use super::EXIT_PROBLEM;
use crate::cli::WalInspectArgs;
use crate::cli::ZkTarget;
use crate::types::LogId;
use crate::types::Vote;
use crate::witness::inspect::GapKind;
use crate::witness::inspect::Garbage;
use crate::witness::inspect::Inspection;

/// `walship wal inspect`: prints the inspection; the exit code says whether all is good.
pub async fn run(args: &WalInspectArgs) -> Result<u8, Stop> {
    let (session, witness) = super::connect(&args.target).await?;
    let result = witness.inspect_all().await;
    session.close().await;
    let inspection = result.map_err(|e| super::read_failure(&args.target, &witness, e))?;
    if args.json {
        let doc = to_json(&args.target, &inspection);
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
        );
    } else {
        print!("{}", render(&args.target, &inspection));
    }
    Ok(if inspection.problem_count() == 0 {
        0
    } else {
        EXIT_PROBLEM
    })
}

fn log_id_text(l: Option<LogId>) -> String {
    match l {
        Some(l) => format!(
            "index {} (term {}, leader {})",
            l.index, l.leader_id.term, l.leader_id.node_id
        ),
        None => "none".to_string(),
    }
}

fn vote_text(v: &Vote) -> String {
    format!(
        "term {}, node {}, {}",
        v.leader_id.term,
        v.leader_id.node_id,
        if v.committed { "committed" } else { "not committed" }
    )
}

fn range_text(first: u64, last: Option<u64>) -> String {
    match last {
        Some(l) if l == first => first.to_string(),
        Some(l) => format!("{first}-{l}"),
        None => format!("{first}-?"),
    }
}

fn garbage_text(g: Garbage) -> &'static str {
    match g {
        Garbage::BehindSnapshot => "garbage: behind the snapshot",
        Garbage::BeyondLastLogId => "garbage: past W's last log id",
    }
}

/// `cli::client::table::table`, indented two spaces under the section titles.
fn table(rows: &[Vec<String>]) -> String {
    crate::cli::client::table::table(rows)
        .lines()
        .map(|l| format!("{}\n", format!("  {l}").trim_end()))
        .collect()
}

/// The human-readable report.
pub fn render(target: &ZkTarget, i: &Inspection) -> String {
    let mut out = format!(
        "ZooKeeper {}, cluster {:?}\n\nW's record  {}\n",
        target.zk, target.cluster, i.record_path
    );
    match (&i.record, &i.record_error) {
        (Some(r), _) => {
            out.push_str(&table(&[
                vec!["CRC".into(), "ok".into()],
                vec!["cluster id".into(), r.cluster_id.clone()],
                vec!["vote".into(), vote_text(&r.vote)],
                vec!["last log id".into(), log_id_text(r.last_log_id)],
                vec!["committed".into(), log_id_text(r.committed)],
            ]));
        }
        (None, error) => {
            let why = error.as_deref().unwrap_or("undecodable");
            out.push_str(&table(&[vec!["CRC".into(), format!("BAD: {why}")]]));
        }
    }

    out.push_str("\nsnapshot\n");
    match &i.snapshot {
        None => out.push_str("  none (W's log starts at index 0)\n"),
        Some(s) => {
            let crc = match &s.error {
                None => "ok (every chunk and the whole snapshot)".to_string(),
                Some(e) => format!("BAD: {e}"),
            };
            out.push_str(&table(&[
                vec!["id".into(), s.snapshot_id.clone()],
                vec!["znodes".into(), format!("{}/<chunk>", s.dir)],
                vec!["last log id".into(), log_id_text(s.last_log_id)],
                vec![
                    "size".into(),
                    format!("{} bytes in {} chunk(s)", s.size_bytes, s.chunk_count),
                ],
                vec!["CRC".into(), crc],
            ]));
        }
    }
    for dir in &i.unreferenced_snapshots {
        out.push_str(&format!("  unreferenced (garbage): {dir}\n"));
    }

    let garbage = i.segments.iter().filter(|s| s.garbage.is_some()).count();
    let bad = i.segments.iter().filter(|s| s.error.is_some()).count();
    out.push_str(&format!(
        "\nWAL segments: {} ({garbage} garbage, {bad} with a bad CRC)\n",
        i.segments.len()
    ));
    if !i.segments.is_empty() {
        let mut rows = vec![vec![
            "ZNODE".to_string(),
            "INDEXES".to_string(),
            "TERMS".to_string(),
            "BYTES".to_string(),
            "CRC".to_string(),
            "NOTE".to_string(),
        ]];
        for s in &i.segments {
            let terms: Vec<String> = s.terms.iter().map(u64::to_string).collect();
            let mut note: Vec<String> = Vec::new();
            if let Some(g) = s.garbage {
                note.push(garbage_text(g).to_string());
            }
            if let Some(e) = &s.error {
                note.push(e.clone());
            }
            rows.push(vec![
                s.path.clone(),
                range_text(s.first_index, s.last_index),
                if terms.is_empty() { "?".into() } else { terms.join(",") },
                s.bytes.to_string(),
                if s.error.is_none() { "ok".into() } else { "BAD".into() },
                note.join("; "),
            ]);
        }
        out.push_str(&table(&rows));
    }

    out.push_str("\nlog layout\n");
    if let (Some(r), true) = (&i.record, i.gaps.is_empty()) {
        let from = r.purged().map_or(0, |p| p.index + 1);
        let what = if r.purged().is_some() {
            "W's log after the snapshot"
        } else {
            "W's log"
        };
        match r.last_log_id {
            Some(l) if l.index >= from => out.push_str(&format!(
                "  {what}: indexes {}, no gap or overlap\n",
                range_text(from, Some(l.index))
            )),
            _ => out.push_str("  every entry is in the snapshot; no WAL entry after it\n"),
        }
    } else if i.record.is_none() {
        out.push_str("  not checked: W's record is unreadable\n");
    } else {
        let rows: Vec<Vec<String>> = i
            .gaps
            .iter()
            .map(|g| {
                let kind = match g.kind {
                    GapKind::Gap => "GAP",
                    GapKind::Overlap => "OVERLAP",
                    GapKind::Mismatch => "MISMATCH",
                };
                vec![
                    kind.to_string(),
                    range_text(g.from_index, Some(g.to_index)),
                    g.detail.clone(),
                ]
            })
            .collect();
        out.push_str(&table(&rows));
    }
    if !i.consistent {
        out.push_str("  note: W kept changing while it was read (a leader is writing); figures may mix moments\n");
    }

    let problems = i.problem_count();
    if problems == 0 {
        out.push_str("\nverdict: OK\n");
    } else {
        out.push_str(&format!("\nverdict: {problems} problem(s) found\n"));
    }
    out
}

fn log_id_json(l: Option<LogId>) -> Value {
    match l {
        Some(l) => json!({ "term": l.leader_id.term, "node": l.leader_id.node_id, "index": l.index }),
        None => Value::Null,
    }
}

/// The `--json` document; its fields are a contract with scripts.
pub fn to_json(target: &ZkTarget, i: &Inspection) -> Value {
    let record = json!({
        "path": i.record_path,
        "crc_ok": i.record.is_some(),
        "error": i.record_error,
        "cluster_id": i.record.as_ref().map(|r| r.cluster_id.clone()),
        "vote": i.record.as_ref().map(|r| json!({
            "term": r.vote.leader_id.term,
            "node": r.vote.leader_id.node_id,
            "committed": r.vote.committed,
        })),
        "last_log_id": log_id_json(i.record.as_ref().and_then(|r| r.last_log_id)),
        "committed": log_id_json(i.record.as_ref().and_then(|r| r.committed)),
    });
    let snapshot = i.snapshot.as_ref().map(|s| {
        json!({
            "id": s.snapshot_id,
            "dir": s.dir,
            "last_log_id": log_id_json(s.last_log_id),
            "size_bytes": s.size_bytes,
            "chunk_count": s.chunk_count,
            "crc_ok": s.error.is_none(),
            "error": s.error,
        })
    });
    let segments: Vec<Value> = i
        .segments
        .iter()
        .map(|s| {
            json!({
                "path": s.path,
                "first_index": s.first_index,
                "last_index": s.last_index,
                "terms": s.terms,
                "bytes": s.bytes,
                "crc_ok": s.error.is_none(),
                "error": s.error,
                "garbage": s.garbage,
            })
        })
        .collect();
    json!({
        "zk": target.zk,
        "cluster": target.cluster,
        "ok": i.problem_count() == 0,
        "problems": i.problem_count(),
        "consistent": i.consistent,
        "record": record,
        "snapshot": snapshot,
        "unreferenced_snapshots": i.unreferenced_snapshots,
        "segments": segments,
        "gaps": i.gaps,
    })
}
