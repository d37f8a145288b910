//! What the numbers were measured on: the machine (cores, CPU, RAM, the
//! disk under the run dir, load average), the versions (walship commit,
//! openraft, ZooKeeper, etcd) and the settings (the nodes' effective
//! configuration, and zoo.cfg's timing and fsync lines).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::report::Machine;
use super::report::Settings;

/// Pinned with `=` in Cargo.toml.
pub const OPENRAFT_VERSION: &str = "0.9.25";

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn machine(run_dir: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let ram_kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        ram_bytes: ram_kb * 1024,
        disk: disk(run_dir),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
    }
}

/// The device and filesystem holding `dir`, and whether it is rotational.
fn disk(dir: &Path) -> String {
    let out = Command::new("df")
        .args(["--output=source,fstype,size"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let Some(line) = out.lines().nth(1) else {
        return "unknown".into();
    };
    let f: Vec<&str> = line.split_whitespace().collect();
    let (source, fstype, size) = (
        f.first().copied().unwrap_or("?"),
        f.get(1).copied().unwrap_or("?"),
        f.get(2).copied().unwrap_or("?"),
    );
    let dev = source.trim_start_matches("/dev/");
    let base: String = dev.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
    let rot = ["queue/rotational"]
        .iter()
        .find_map(|q| std::fs::read_to_string(format!("/sys/block/{base}/{q}")).ok())
        .map(|s| {
            if s.trim() == "1" {
                ", rotational"
            } else {
                ", non-rotational"
            }
        })
        .unwrap_or("");
    format!("{source} ({fstype}, {size} 1K-blocks{rot})")
}

/// `$WALSHIP_BENCH_COMMIT` (for a binary built from an exported tree), else
/// `git rev-parse --short HEAD` in the current dir, noting uncommitted changes.
pub fn walship_commit() -> String {
    if let Ok(c) = std::env::var("WALSHIP_BENCH_COMMIT") {
        if !c.trim().is_empty() {
            return c.trim().to_string();
        }
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("{c}{}", if dirty { " (with uncommitted changes)" } else { "" })
        }
        None => format!("unknown (version {})", env!("CARGO_PKG_VERSION")),
    }
}

/// The settings the nodes run with: `walship node --print-config` of the
/// node binary (flags > WALSHIP_* env > defaults: exactly what the spawned
/// nodes get, as they are given no setting flags), and zoo.cfg's timing and
/// durability lines.
pub fn settings(bin: &Path, etcd_flags: &str) -> Settings {
    let out = Command::new(bin)
        .args(["node", "--id", "1", "--cluster", "bench", "--zk", "127.0.0.1:1"])
        .args([
            "--data-dir",
            "/nonexistent",
            "--listen",
            "127.0.0.1:1",
            "--print-config",
        ])
        .output();
    let node = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .filter(|(k, _)| !matches!(k.as_str(), "id" | "cluster" | "zk" | "data_dir" | "listen"))
            .collect(),
        _ => BTreeMap::from([(
            "unknown".to_string(),
            "`walship node --print-config` failed".to_string(),
        )]),
    };
    let zoo_cfg = walship_testkit::zk::ZOO_CFG_TEMPLATE
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            matches!(
                *k,
                "tickTime" | "minSessionTimeout" | "maxSessionTimeout" | "forceSync" | "preAllocSize" | "snapCount"
            )
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings {
        node,
        zoo_cfg,
        etcd_flags: etcd_flags.to_string(),
    }
}

/// "3.8.0-..." from a `srvr` reply.
pub fn zk_version(srvr: &str) -> String {
    srvr.lines()
        .find_map(|l| l.strip_prefix("Zookeeper version:"))
        // Debian's build says "3.8.0-${mvngit.commit.id}, built on ...".
        .map(|v| {
            v.trim()
                .split([',', '$'])
                .next()
                .unwrap_or("")
                .trim_end_matches('-')
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}
