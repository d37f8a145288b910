//! Where the CPU went during a measured point: utime + stime of each
//! process the bench started (from `/proc/<pid>/stat`) and of the bench
//! itself (the load generator), and the whole machine's busy time (from
//! /proc/stat), so the rest is what other work on the box used. On a
//! shared 2-core machine this says whether a point was CPU-bound and who
//! burnt it.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of `pid` in clock ticks (`None` once it has exited).
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Busy and total ticks of the whole machine (all cores).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// A start point of the measurement.
pub struct CpuMark {
    at: Instant,
    procs: Vec<(String, u32, u64)>,
    machine: Option<(u64, u64)>,
}

/// CPU used between a mark and now, in percent of one core.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuUse {
    /// By process: "bench" (the load generator), "node1", "node2", "zookeeper", "etcd".
    pub percent_of_core: BTreeMap<String, f64>,
    /// Every core of the machine, busy.
    pub machine_busy_percent_of_core: f64,
    /// Machine busy minus the processes above: other work on the box.
    pub others_percent_of_core: f64,
    pub cores: usize,
}

/// Marks the CPU counters of `procs` (name, pid) and of this process.
pub fn mark(procs: &[(String, u32)]) -> CpuMark {
    let mut all: Vec<(String, u32, u64)> = vec![("bench".into(), std::process::id(), 0)];
    all.extend(procs.iter().map(|(n, p)| (n.clone(), *p, 0)));
    for e in all.iter_mut() {
        e.2 = proc_ticks(e.1).unwrap_or(0);
    }
    CpuMark {
        at: Instant::now(),
        procs: all,
        machine: machine_ticks(),
    }
}

impl CpuMark {
    pub fn since(&self) -> CpuUse {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        let hz = clk_tck();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut out = CpuUse {
            cores,
            ..CpuUse::default()
        };
        let mut ours = 0.0;
        for (name, pid, before) in &self.procs {
            if let Some(now) = proc_ticks(*pid) {
                let pct = now.saturating_sub(*before) as f64 / hz / secs * 100.0;
                ours += pct;
                out.percent_of_core.insert(name.clone(), round1(pct));
            }
        }
        if let (Some((b0, t0)), Some((b1, t1))) = (self.machine, machine_ticks()) {
            let share = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
            out.machine_busy_percent_of_core = round1(share * cores as f64 * 100.0);
            out.others_percent_of_core = round1((out.machine_busy_percent_of_core - ours).max(0.0));
        }
        out
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_ticks_are_readable() {
        assert!(proc_ticks(std::process::id()).is_some());
        let m = mark(&[]);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let u = m.since();
        assert!(u.percent_of_core.contains_key("bench"));
        assert!(u.cores >= 1);
    }
}
