//! `walship soak` flags, and the checks clap cannot do. Every rejection is one
//! line on stderr and exit status 2.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::faults::KindSet;
pub use super::ledger::Retries;

/// What the soak's clients do (`--workload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// The key-value store: puts, deletes, compare-and-sets, reads.
    Kv,
    /// The ledger example's deposits, withdrawals and transfers.
    Ledger,
}

/// Cycles when neither `--cycles` nor `--duration` is given: under a minute.
pub const DEFAULT_CYCLES: u64 = 12;

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Fault cycles to run (default 12 when --duration is not given either).
    #[arg(long, value_parser = parse_positive)]
    pub cycles: Option<u64>,
    /// Run for this long instead (or as well: whichever ends first), e.g. 90s, 2m, 1h.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Concurrent workload clients, each one operation at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub clients: u32,
    /// Size of the key space; small, so writes, CAS and reads contend.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub keys: u32,
    /// Pad every value the kv clients write to this many bytes (at least its tag, e.g.
    /// `c3-17`): with enough clients W's appends become multis of 64 KiB and more, the
    /// shape of big values (ZooKeeper's history evictions, multi-chunk snapshots).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=262_144))]
    pub value_bytes: u32,
    /// Seed of the fault sequence and the workload (printed at start; default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where ZooKeeper's and the nodes' data and logs go (its zk/, node1/, node2/ are wiped first).
    #[arg(long, default_value = ".walship-soak")]
    pub run_dir: PathBuf,
    /// The history file (JSON Lines; default RUN_DIR/history.jsonl).
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Use this ZooKeeper (host:port) instead of starting one; zk-restart is then skipped
    /// (and, for an ensemble a:1,b:2, the kinds that cut one node's link to ZooKeeper).
    #[arg(long, conflicts_with = "ensemble")]
    pub zk: Option<String>,
    /// Run ZooKeeper as a 3-server ensemble on loopback (the production shape)
    /// instead of one server; enables the ZooKeeper faults (zk-kill-leader,
    /// zk-kill-follower, zk-quorum-loss, zk-freeze-leader and their
    /// combinations with a walship fault). zk-restart is left out.
    #[arg(long)]
    pub ensemble: bool,
    /// Only these fault kinds, comma-separated (default all). Single: kill-leader,
    /// kill-leader-wipe, kill-follower, kill-follower-wipe, freeze-leader, zk-restart, cut,
    /// zk-cut-leader, zk-cut-follower, power-loss-leader, power-loss-follower, stall-leader.
    /// Combined: zk-cut-leader+cut, zk-cut-leader+kill-both+wipe, zk-cut-leader+kill-follower,
    /// power-loss-both, stall-leader+kill-follower, freeze-leader+zk-cut. With --ensemble:
    /// zk-kill-leader, zk-kill-follower, zk-quorum-loss, zk-freeze-leader,
    /// zk-kill-leader+kill-leader, zk-kill-follower+kill-leader, zk-quorum-loss+kill-leader,
    /// zk-freeze-leader+freeze-leader. Groups: all, single, combined, classic (the first
    /// seven), zk (the ZooKeeper-ensemble kinds); a group holds only what the run can do.
    #[arg(long, value_delimiter = ',', value_parser = KindSet::parse)]
    pub kinds: Option<Vec<KindSet>>,
    /// The walship binary to run the nodes with (default: this one).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// What the clients do: `kv`, puts, deletes, compare-and-sets and reads
    /// of the key-value store (checked for durability and linearizability);
    /// `ledger`, the nodes run the ledger example (an embedder's state
    /// machine) and the clients send deposits, withdrawals and transfers
    /// with transaction ids of their own, checked for exactly-once
    /// application, rejections, conserved money and identical nodes.
    #[arg(long, value_enum, default_value_t = Workload::Kv)]
    pub workload: Workload,
    /// The ledger example binary the nodes run with --workload ledger
    /// (default: target/<profile>/examples/ledger beside this one).
    #[arg(long)]
    pub ledger_bin: Option<PathBuf>,
    /// How ledger clients retry a command whose outcome they did not learn:
    /// `session` (walship::client::Session, exactly once; a duplicate fails
    /// the soak) or `plain` (the same command re-sent after a 504 or no
    /// answer, without a session: the duplicates are counted, not failed on).
    #[arg(long, value_enum, default_value_t = Retries::Session)]
    pub ledger_retries: Retries,
    /// Ledger accounts (--workload ledger); few, so transfers contend and
    /// balances run out. Each keeps its last 4096 transaction ids, which a
    /// long run must not overflow (the check says so if it does).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pub accounts: u64,
    /// Run the nodes in TLS mode (certificates from `walship dev-ca` in
    /// RUN_DIR/certs) and the workload and checks over https.
    #[arg(long)]
    pub tls: bool,
}

/// A whole number above zero.
pub fn parse_positive(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// `90`, `90s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 90s, 2m, 1h)"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("'{s}' has an unknown unit '{unit}' (use ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(d)
}

/// `host:port` with a port.
pub fn check_zk_addr(s: &str) -> Result<(), String> {
    for part in s.split(',') {
        let Some((host, port)) = part.rsplit_once(':') else {
            return Err(format!("--zk '{s}': expected host:port"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("--zk '{s}': expected host:port with a port in 1..65535"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn zk_addresses() {
        assert!(check_zk_addr("127.0.0.1:2181").is_ok());
        assert!(check_zk_addr("a:1,b:2").is_ok());
        assert!(check_zk_addr("localhost").is_err());
        assert!(check_zk_addr("h:0").is_err());
    }
}
