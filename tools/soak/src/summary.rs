//! The soak's summary: what ran, what the workload saw, failover times, the
//! two checks, and the verdict. Printed at the end, and on Ctrl-C with what
//! there is so far.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::check::QuorumLossTally;
use super::faults::CycleReport;
use super::faults::FaultKind;
use super::ledger::LedgerVerdict;
use super::recorder::OpKind;
use super::recorder::OpRecord;
use super::recorder::Outcome;

#[derive(Default)]
pub struct Summary {
    pub seed: u64,
    pub cluster: String,
    /// Which ZooKeeper the run used, in words.
    pub zookeeper: String,
    pub elapsed: Duration,
    pub history_path: PathBuf,
    pub kinds: Vec<FaultKind>,
    /// Kinds left out, and why.
    pub skipped: Vec<(FaultKind, String)>,
    pub cycles: Vec<CycleReport>,
    /// Workload operations (the final check's own reads excluded).
    pub workload_clients: u32,
    pub records: Vec<OpRecord>,
    /// One line per durability source ("node 1, linearizable: ok").
    pub durable: Vec<String>,
    pub durability_violations: Vec<String>,
    /// Per key: linearizable or not, and the operations checked.
    pub linearizability: Option<Linearizability>,
    /// Anything that stopped the soak early (a stall, a crash).
    pub problems: Vec<String>,
    /// Set on Ctrl-C / SIGTERM.
    pub interrupted: Option<&'static str>,
    /// What writes saw while ZooKeeper had no quorum (zk-quorum-loss).
    pub quorum_loss: QuorumLossTally,
    /// Empty writes the nodes sent to push W's big multis out of
    /// ZooKeeper's in-memory history (the cluster root's data version).
    pub zk_evictions: Option<i32>,
    /// `--workload ledger`: the exactly-once check, once it ran.
    pub ledger: Option<LedgerVerdict>,
    /// `--workload ledger`: set from the start, so a soak stopped before
    /// the check says it did not run.
    pub ledger_workload: bool,
}

#[derive(Default)]
pub struct Linearizability {
    pub keys: usize,
    pub ok: usize,
    pub undecided: Vec<String>,
    pub violations: Vec<String>,
    pub ops: usize,
    pub took: Duration,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.interrupted.is_none()
            && self.problems.is_empty()
            && self.durability_violations.is_empty()
            && self
                .linearizability
                .as_ref()
                .is_some_and(|l| l.violations.is_empty() && l.undecided.is_empty())
            && (!self.ledger_workload || self.ledger.as_ref().is_some_and(|l| l.passed()))
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let verdict = if self.interrupted.is_some() {
            "INTERRUPTED"
        } else if self.passed() {
            "PASS"
        } else {
            "FAIL"
        };
        let _ = writeln!(s, "\nwalship soak: {verdict}");
        let _ = writeln!(
            s,
            "  seed          {} (--seed {} repeats this fault sequence)",
            self.seed, self.seed
        );
        let _ = writeln!(
            s,
            "  ran           {} cycles in {}, cluster {}",
            self.cycles.len(),
            show_duration(self.elapsed),
            self.cluster
        );
        if !self.zookeeper.is_empty() {
            let _ = writeln!(s, "  zookeeper     {}", self.zookeeper);
        }
        let mut per_kind: BTreeMap<FaultKind, usize> = self.kinds.iter().map(|k| (*k, 0)).collect();
        for c in &self.cycles {
            *per_kind.entry(c.kind).or_default() += 1;
        }
        let kinds: Vec<String> = per_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(s, "  cycles        {}", kinds.join(", "));
        s.push_str(&self.fault_table());
        s.push_str(&self.zk_table());
        for (k, why) in &self.skipped {
            let _ = writeln!(s, "  skipped       {k}: {why}");
        }
        let w = self.workload();
        if self.ledger_workload {
            s.push_str(&self.ledger_lines());
        } else {
            let _ = writeln!(
                s,
                "  writes        attempted {}, acknowledged {} (cas: {} swapped, {} refused), failed {}, unknown {}",
                w.writes, w.acked, w.cas_swapped, w.cas_refused, w.failed, w.unknown
            );
            let _ = writeln!(
                s,
                "  reads         {} linearizable reads: {} answered, {} failed or unanswered",
                w.reads, w.reads_ok, w.reads_bad
            );
        }
        if let Some(n) = self.zk_evictions {
            let _ = writeln!(
                s,
                "  zk history    {n} empty writes pushed W's multis of 64 KiB and more out of ZooKeeper's history"
            );
        }
        let mut ms: Vec<u64> = self.cycles.iter().map(|c| c.failover_ms).collect();
        ms.sort_unstable();
        if ms.is_empty() {
            let _ = writeln!(s, "  failover      no faults completed");
        } else {
            let _ = writeln!(
                s,
                "  failover ms   min {}, median {}, p99 {}, max {}  (fault -> next acknowledged write, {} faults)",
                ms[0],
                rank(&ms, 50),
                rank(&ms, 99),
                ms[ms.len() - 1],
                ms.len()
            );
        }
        for line in &self.durable {
            let _ = writeln!(s, "  durable       {line}");
        }
        for v in self.durability_violations.iter().take(20) {
            let _ = writeln!(s, "  VIOLATION     {v}");
        }
        match &self.linearizability {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "  linearizable  {} of {} keys ({} operations checked in {} ms; {} violations, {} undecided)",
                    l.ok,
                    l.keys,
                    l.ops,
                    l.took.as_millis(),
                    l.violations.len(),
                    l.undecided.len()
                );
                for v in l.violations.iter().chain(&l.undecided).take(20) {
                    let _ = writeln!(s, "  VIOLATION     {v}");
                }
            }
            None => {
                let _ = writeln!(s, "  linearizable  not checked");
            }
        }
        for p in &self.problems {
            let _ = writeln!(s, "  PROBLEM       {p}");
        }
        let _ = writeln!(
            s,
            "  history       {} ({} operations)",
            self.history_path.display(),
            self.records.len()
        );
        let why = match (self.interrupted, self.passed()) {
            (Some(sig), _) => format!("INTERRUPTED by {sig}: the checks did not run; the numbers above are so far"),
            (None, true) if self.ledger_workload => match &self.ledger {
                Some(l) if l.retries == Some(super::ledger::Retries::Plain) => format!(
                    "PASS: every acknowledged write present; every key's history linearizable; the ledger consistent \
                     ({} duplicate applications without sessions, counted, not failed on)",
                    l.duplicates
                ),
                _ => "PASS: every acknowledged write present; every key's history linearizable; \
                      every ledger transaction applied as its client was told"
                    .into(),
            },
            (None, true) => "PASS: every acknowledged write present; every key's history linearizable".into(),
            (None, false) => {
                let mut reasons = Vec::new();
                if !self.durability_violations.is_empty() {
                    reasons.push(format!(
                        "{} lost or wrong acknowledged writes",
                        self.durability_violations.len()
                    ));
                }
                if let Some(l) = &self.linearizability {
                    if !l.violations.is_empty() {
                        reasons.push(format!("{} keys not linearizable", l.violations.len()));
                    }
                    if !l.undecided.is_empty() {
                        reasons.push(format!("{} keys undecided", l.undecided.len()));
                    }
                }
                if let Some(l) = self.ledger.as_ref().filter(|l| !l.passed()) {
                    reasons.push(format!("{} ledger violations", l.violations.len()));
                } else if self.ledger_workload && self.ledger.is_none() {
                    reasons.push("the ledger was not checked".into());
                }
                if !self.problems.is_empty() {
                    reasons.push(format!("{} problems", self.problems.len()));
                }
                format!("FAIL: {}", reasons.join(", "))
            }
        };
        let _ = writeln!(s, "  verdict       {why}");
        s
    }

    /// Which fault kinds and combinations ran, how often, with which
    /// choices and outcomes, and their failover percentiles.
    pub fn fault_table(&self) -> String {
        let mut s = String::new();
        let combined = self.cycles.iter().filter(|c| c.kind.combined()).count();
        let _ = writeln!(
            s,
            "  faults        {} cycles: {} single faults, {} combined (two faults at once)",
            self.cycles.len(),
            self.cycles.len() - combined,
            combined
        );
        let mut rows: BTreeMap<FaultKind, Vec<&CycleReport>> = self.kinds.iter().map(|k| (*k, Vec::new())).collect();
        for c in &self.cycles {
            rows.entry(c.kind).or_default().push(c);
        }
        let width = rows.keys().map(|k| k.name().len()).max().unwrap_or(4).max(4) + 2;
        let _ = writeln!(
            s,
            "    {:<width$}{:>4} {:>8} {:>8} {:>8}  choices; outcomes",
            "kind", "runs", "p50 ms", "p99 ms", "max ms"
        );
        // Single kinds first, then the combinations.
        let mut order: Vec<(&FaultKind, &Vec<&CycleReport>)> = rows.iter().collect();
        order.sort_by_key(|(k, _)| (k.combined(), **k));
        for (kind, cycles) in order {
            let mut ms: Vec<u64> = cycles.iter().map(|c| c.failover_ms).collect();
            ms.sort_unstable();
            let (p50, p99, max) = if ms.is_empty() {
                ("-".to_string(), "-".to_string(), "-".to_string())
            } else {
                (
                    rank(&ms, 50).to_string(),
                    rank(&ms, 99).to_string(),
                    ms[ms.len() - 1].to_string(),
                )
            };
            let tally = |items: &mut dyn Iterator<Item = &String>| {
                let mut t: BTreeMap<&str, usize> = BTreeMap::new();
                for i in items {
                    *t.entry(i.as_str()).or_default() += 1;
                }
                t.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
            };
            let choices = tally(&mut cycles.iter().flat_map(|c| c.variant.iter()));
            let outcomes = tally(&mut cycles.iter().flat_map(|c| c.outcomes.iter()));
            let text = match (choices.is_empty(), outcomes.is_empty()) {
                (_, true) => choices,
                (true, false) => format!("-; {outcomes}"),
                (false, false) => format!("{choices}; {outcomes}"),
            };
            let name = if kind.combined() {
                format!("{} *", kind.name())
            } else {
                kind.name().to_string()
            };
            let row = format!(
                "    {name:<width$}{:>4} {p50:>8} {p99:>8} {max:>8}  {text}",
                cycles.len()
            );
            let _ = writeln!(s, "{}", row.trim_end());
        }
        let _ = writeln!(
            s,
            "    (* two faults at once; failover: fault -> first acknowledged write invoked after it)"
        );
        for c in &self.cycles {
            for l in &c.liveness {
                let _ = writeln!(s, "  LIVENESS      {}: {l}", c.kind);
            }
        }
        s
    }

    /// Per ZooKeeper fault kind: how long the ensemble had no leader with a
    /// quorum, how long after its return (or the fault's end) the first
    /// write was acknowledged (target: 1 s), and the ERROR lines the nodes
    /// logged; then what writes saw while the quorum was gone.
    pub fn zk_table(&self) -> String {
        let mut s = String::new();
        let mut rows: BTreeMap<FaultKind, Vec<&CycleReport>> = BTreeMap::new();
        for c in self.cycles.iter().filter(|c| c.zk_recovery_ms.is_some()) {
            rows.entry(c.kind).or_default().push(c);
        }
        for k in self.kinds.iter().filter(|k| k.needs_ensemble()) {
            rows.entry(*k).or_default();
        }
        if rows.is_empty() {
            return s;
        }
        let width = rows.keys().map(|k| k.name().len()).max().unwrap_or(4).max(4) + 2;
        let _ = writeln!(
            s,
            "  zk recovery   quorum back (or fault end) -> first acknowledged write; target within 1 s"
        );
        let _ = writeln!(
            s,
            "    {:<width$}{:>4} {:>10} {:>8} {:>8} {:>8} {:>9} {:>10}",
            "kind", "runs", "outage p50", "p50 ms", "p99 ms", "max ms", "<= 1 s", "ERROR/run"
        );
        let mut order: Vec<(&FaultKind, &Vec<&CycleReport>)> = rows.iter().collect();
        order.sort_by_key(|(k, _)| (k.combined(), **k));
        for (kind, cycles) in order {
            let mut rec: Vec<u64> = cycles.iter().filter_map(|c| c.zk_recovery_ms).collect();
            rec.sort_unstable();
            let mut out: Vec<u64> = cycles.iter().filter_map(|c| c.zk_outage_ms).collect();
            out.sort_unstable();
            let pick = |v: &[u64], p: usize| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    rank(v, p).to_string()
                }
            };
            let within = rec.iter().filter(|r| **r <= 1000).count();
            let errors: u64 = cycles.iter().map(|c| c.error_lines).sum();
            let per_run = if cycles.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", errors as f64 / cycles.len() as f64)
            };
            let name = if kind.combined() {
                format!("{} *", kind.name())
            } else {
                kind.name().to_string()
            };
            let _ = writeln!(
                s,
                "    {name:<width$}{:>4} {:>10} {:>8} {:>8} {:>8} {:>9} {:>10}",
                cycles.len(),
                pick(&out, 50),
                pick(&rec, 50),
                pick(&rec, 99),
                pick(&rec, 100),
                format!("{within}/{}", rec.len()),
                per_run
            );
        }
        let total: u64 = self.cycles.iter().map(|c| c.error_lines).sum();
        let zk: u64 = self
            .cycles
            .iter()
            .filter(|c| c.kind.needs_ensemble())
            .map(|c| c.error_lines)
            .sum();
        let _ = writeln!(
            s,
            "    (outage: fault -> ZooKeeper leader with a quorum again, 0 for a follower; ERROR lines: {total} in the nodes' logs over all cycles, {zk} in ZooKeeper-fault cycles)"
        );
        let q = &self.quorum_loss;
        if q.windows > 0 {
            let _ = writeln!(
                s,
                "  quorum loss   {} windows, {} ms without quorum: writes invoked and completed inside them: {} acknowledged (must be 0), {} failed (503), {} unknown (504/timeout), {} CAS refused",
                q.windows, q.down_ms, q.acked, q.failed, q.unknown, q.cas_refused
            );
        }
        s
    }

    /// The ledger workload's lines: what the clients were told, what the
    /// ledger shows, and each violation by transaction id.
    fn ledger_lines(&self) -> String {
        let mut s = String::new();
        let Some(l) = &self.ledger else {
            let _ = writeln!(s, "  ledger        not checked");
            return s;
        };
        // A session retries inside `Session::command`, unseen: its attempts are not counted.
        let how = match l.retries {
            Some(super::ledger::Retries::Plain) => format!("plain retries, {} HTTP attempts", l.http_attempts),
            _ => "session retries".to_string(),
        };
        let _ = writeln!(
            s,
            "  ledger        {} commands ({how}) over {} accounts: acknowledged {}, \
             rejected {}, unknown {} ({} of them applied), not applied {}",
            l.commands, l.accounts, l.acknowledged, l.rejected, l.unknown, l.unknown_applied, l.not_applied
        );
        let must = if l.retries == Some(super::ledger::Retries::Session) {
            " (must be 0)"
        } else {
            " (no sessions: counted, not failed on)"
        };
        let _ = writeln!(
            s,
            "  duplicates    {}{must}; applied though told otherwise {}; total balance {}",
            l.duplicates, l.told_otherwise, l.total_balance
        );
        for line in &l.lines {
            let _ = writeln!(s, "  ledger        {line}");
        }
        for v in l.violations.iter().take(20) {
            let _ = writeln!(s, "  VIOLATION     ledger: {v}");
        }
        if l.violations.len() > 20 {
            let _ = writeln!(s, "  VIOLATION     ledger: ... {} more", l.violations.len() - 20);
        }
        s
    }

    fn workload(&self) -> WorkloadCounts {
        let mut w = WorkloadCounts::default();
        for r in self.records.iter().filter(|r| r.client < self.workload_clients) {
            if r.op == OpKind::Get {
                w.reads += 1;
                if r.result == Outcome::Ok {
                    w.reads_ok += 1;
                } else {
                    w.reads_bad += 1;
                }
                continue;
            }
            w.writes += 1;
            match r.result {
                Outcome::Ok => w.acked += 1,
                Outcome::Fail => w.failed += 1,
                Outcome::Unknown => w.unknown += 1,
            }
            match r.cas_ok {
                Some(true) => w.cas_swapped += 1,
                Some(false) => w.cas_refused += 1,
                None => {}
            }
        }
        w
    }
}

#[derive(Default)]
struct WorkloadCounts {
    writes: u64,
    acked: u64,
    failed: u64,
    unknown: u64,
    cas_swapped: u64,
    cas_refused: u64,
    reads: u64,
    reads_ok: u64,
    reads_bad: u64,
}

/// Nearest-rank percentile of a sorted, non-empty slice.
pub fn rank(sorted: &[u64], p: usize) -> u64 {
    let n = sorted.len();
    let idx = (p * n).div_ceil(100).clamp(1, n) - 1;
    sorted[idx]
}

pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(kind: FaultKind, ms: u64, variant: &[&str], outcomes: &[&str]) -> CycleReport {
        CycleReport {
            kind,
            variant: variant.iter().map(|s| s.to_string()).collect(),
            params: vec!["stall 3000 ms".into()],
            target: Some(1),
            failover_ms: ms,
            leader_after: 2,
            took: Duration::from_secs(3),
            notes: vec!["a note".into()],
            outcomes: outcomes.iter().map(|s| s.to_string()).collect(),
            liveness: Vec::new(),
            violations: Vec::new(),
            zk_outage_ms: None,
            zk_recovery_ms: None,
            quorum_down_ns: None,
            error_lines: 0,
        }
    }

    #[test]
    fn fault_table_counts_kinds_choices_and_outcomes() {
        let s = Summary {
            kinds: vec![FaultKind::ZkCutLeader, FaultKind::PowerLossBoth, FaultKind::Cut],
            cycles: vec![
                cycle(FaultKind::ZkCutLeader, 100, &["refuse"], &[]),
                cycle(FaultKind::ZkCutLeader, 300, &["blackhole"], &[]),
                cycle(FaultKind::ZkCutLeader, 200, &["refuse"], &[]),
                cycle(FaultKind::PowerLossBoth, 900, &["1 of 2 torn"], &["log records lost"]),
            ],
            ..Default::default()
        };
        let t = s.fault_table();
        assert!(t.contains("4 cycles: 3 single faults, 1 combined"), "{t}");
        let row = |k: &str| {
            t.lines()
                .find(|l| l.trim_start().starts_with(k))
                .unwrap_or("")
                .to_string()
        };
        let zk_row = row("zk-cut-leader ");
        let zk: Vec<&str> = zk_row.split_whitespace().collect();
        assert_eq!(&zk[..5], ["zk-cut-leader", "3", "200", "300", "300"], "{t}");
        assert!(row("zk-cut-leader ").ends_with("blackhole 1, refuse 2"), "{t}");
        assert!(
            row("power-loss-both *").ends_with("1 of 2 torn 1; log records lost 1"),
            "{t}"
        );
        // An enabled kind that did not run still has its row.
        assert!(row("cut ").contains(" 0 "), "{t}");
        // Single kinds before combinations.
        assert!(t.find("cut ").unwrap() < t.find("power-loss-both").unwrap(), "{t}");
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(rank(&v, 50), 50);
        assert_eq!(rank(&v, 99), 99);
        assert_eq!(rank(&[7], 99), 7);
        assert_eq!(rank(&[1, 2], 50), 1);
    }
}
