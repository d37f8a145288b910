//! `walship bench` flags, and the plan they make (the checks clap cannot do).
//! Every rejection is one line on stderr and exit status 2.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use walship_soak::parse_duration;

use super::failover::Kill;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Measured time of each throughput point, after its warm-up (e.g. 10s, 500ms).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before each throughput point (not measured).
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Client concurrencies, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_clients)]
    pub clients: Option<Vec<usize>>,
    /// Value sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_value_size)]
    pub value_sizes: Option<Vec<usize>>,
    /// Distinct keys each throughput point writes (overwritten round-robin), so state stays bounded.
    #[arg(long, value_parser = parse_positive)]
    pub keyspace: Option<u64>,
    /// Leader kills for the failover measurement (each kind in --failover-kinds).
    #[arg(long, value_parser = parse_positive)]
    pub kills: Option<u64>,
    /// Failover kinds, comma-separated: sigkill (kill -9), sigterm (hand-over),
    /// blackhole (the leader's machine vanishes: its peer and ZooKeeper links drop everything).
    #[arg(long, value_delimiter = ',', value_parser = Kill::parse)]
    pub failover_kinds: Option<Vec<Kill>>,
    /// ZooKeeper shapes the throughput part runs walship and zk-direct against,
    /// comma-separated: single (one server), ensemble (3 servers on loopback).
    #[arg(long, value_delimiter = ',', value_parser = ZkShape::parse)]
    pub zk_shapes: Option<Vec<ZkShape>>,
    /// Key counts for the rebirth measurement, comma-separated (ascending; keys accumulate).
    #[arg(long, value_delimiter = ',', value_parser = parse_positive)]
    pub rebirth_keys: Option<Vec<u64>>,
    /// State sizes in MB for the snapshot measurement (`--only snapshot`), comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_positive)]
    pub state_mb: Option<Vec<u64>>,
    /// Length of the ZooKeeper footprint write run, in seconds.
    #[arg(long, value_parser = parse_positive)]
    pub footprint_secs: Option<u64>,
    /// Short smoke run: a few seconds per point, 5 kills of each kind, 10k keys rebirth only.
    #[arg(long, conflicts_with = "smoke")]
    pub quick: bool,
    /// Lightest run (for tests): one point of ~2 s, 2 kills (1 blackhole), 1000 keys rebirth, 4 s footprint.
    #[arg(long)]
    pub smoke: bool,
    /// Only these parts, comma-separated: throughput, failover, rebirth, footprint, snapshot, stages, zk-floor (the last three never run unless named).
    #[arg(long, value_delimiter = ',', value_parser = Part::parse)]
    pub only: Option<Vec<Part>>,
    /// Leave etcd out (it is also left out, with a note, when it cannot be installed).
    #[arg(long)]
    pub skip_etcd: bool,
    /// Leave ZooKeeper-direct out.
    #[arg(long)]
    pub skip_zk_direct: bool,
    /// The JSON report.
    #[arg(long, default_value = "bench.json")]
    pub out: PathBuf,
    /// Where the SVG plots go.
    #[arg(long, default_value = "docs/bench")]
    pub plots_dir: PathBuf,
    /// Where ZooKeeper's, etcd's and the nodes' data and logs go (wiped first).
    #[arg(long, default_value = ".walship-bench")]
    pub run_dir: PathBuf,
    /// The walship binary to run the nodes with (default: this one).
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Throughput,
    Failover,
    Rebirth,
    Footprint,
    /// Snapshot build and rebirth of a big state with peak RSS (`snapshot.rs`).
    Snapshot,
    /// Where a write's time goes, stage by stage (`stages.rs`).
    Stages,
    /// ZooKeeper alone, one write at a time: the floor under a walship write (`zkfloor.rs`).
    ZkFloor,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Throughput, Part::Failover, Part::Rebirth, Part::Footprint];

    fn parse(s: &str) -> Result<Part, String> {
        match s.trim() {
            "throughput" => Ok(Part::Throughput),
            "failover" => Ok(Part::Failover),
            "rebirth" => Ok(Part::Rebirth),
            "footprint" => Ok(Part::Footprint),
            "snapshot" => Ok(Part::Snapshot),
            "stages" => Ok(Part::Stages),
            "zk-floor" => Ok(Part::ZkFloor),
            other => Err(format!(
                "unknown part '{other}' (throughput, failover, rebirth, footprint, snapshot, stages, zk-floor)"
            )),
        }
    }
}

/// The ZooKeeper walship's witness and zk-direct run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZkShape {
    /// One server: the cluster every other part uses too.
    Single,
    /// Three servers on loopback, production's shape: every write is also
    /// a quorum round between JVMs on the same two cores.
    Ensemble,
}

impl ZkShape {
    /// Servers in the shape.
    pub fn servers(self) -> u32 {
        match self {
            ZkShape::Single => 1,
            ZkShape::Ensemble => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ZkShape::Single => "single",
            ZkShape::Ensemble => "ensemble",
        }
    }

    fn parse(s: &str) -> Result<ZkShape, String> {
        match s.trim() {
            "single" => Ok(ZkShape::Single),
            "ensemble" => Ok(ZkShape::Ensemble),
            other => Err(format!("unknown ZooKeeper shape '{other}' (single, ensemble)")),
        }
    }
}

/// What the run will do, every default filled in.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plan {
    pub mode: &'static str,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    pub clients: Vec<usize>,
    /// Client counts of the stages part: `--clients`, else 1 and 64 (1 in smoke mode).
    pub stage_clients: Vec<usize>,
    pub value_sizes: Vec<usize>,
    pub keyspace: u64,
    pub kills: u64,
    /// Kills of the blackhole kind: each waits out a failure detector, so
    /// the smoke run does one.
    pub blackhole_kills: u64,
    pub failover_kinds: Vec<Kill>,
    pub zk_shapes: Vec<ZkShape>,
    pub rebirth_keys: Vec<u64>,
    pub footprint_secs: u64,
    pub state_mb: Vec<u64>,
    pub parts: Vec<Part>,
    pub etcd: bool,
    pub zk_direct: bool,
    pub out: PathBuf,
    pub plots_dir: PathBuf,
    pub run_dir: PathBuf,
    pub bin: PathBuf,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Plan {
    pub fn has(&self, p: Part) -> bool {
        self.parts.contains(&p)
    }
}

pub fn plan(args: BenchArgs) -> Result<Plan, String> {
    // (mode, duration, warmup, clients, sizes, kills, rebirth keys, footprint s)
    #[allow(clippy::type_complexity)]
    let (mode, duration, warmup, clients, sizes, kills, rebirth, footprint): (
        &'static str,
        Duration,
        Duration,
        Vec<usize>,
        Vec<usize>,
        u64,
        Vec<u64>,
        u64,
    ) = if args.smoke {
        (
            "smoke",
            Duration::from_secs(2),
            Duration::from_millis(500),
            vec![4],
            vec![100],
            2,
            vec![1000],
            4,
        )
    } else if args.quick {
        (
            "quick",
            Duration::from_secs(3),
            Duration::from_secs(1),
            vec![1, 16, 64, 256],
            vec![100, 4096],
            5,
            vec![10_000],
            10,
        )
    } else {
        (
            "full",
            Duration::from_secs(10),
            Duration::from_secs(2),
            vec![1, 16, 64, 256],
            vec![100, 4096],
            50,
            vec![10_000, 100_000, 1_000_000],
            60,
        )
    };
    let mut rebirth_keys = args.rebirth_keys.unwrap_or(rebirth);
    rebirth_keys.sort_unstable();
    rebirth_keys.dedup();
    let mut state_mb = args
        .state_mb
        .unwrap_or_else(|| if args.smoke { vec![16] } else { vec![64, 256] });
    state_mb.sort_unstable();
    state_mb.dedup();
    let mut stage_clients = args
        .clients
        .clone()
        .unwrap_or_else(|| if args.smoke { vec![1] } else { vec![1, 64] });
    stage_clients.sort_unstable();
    stage_clients.dedup();
    let mut clients = args.clients.unwrap_or(clients);
    clients.sort_unstable();
    clients.dedup();
    let mut value_sizes = args.value_sizes.unwrap_or(sizes);
    value_sizes.sort_unstable();
    value_sizes.dedup();
    let mut failover_kinds = args.failover_kinds.unwrap_or_else(|| Kill::ALL.to_vec());
    failover_kinds.sort_unstable();
    failover_kinds.dedup();
    let mut zk_shapes = args.zk_shapes.unwrap_or_else(|| vec![ZkShape::Single]);
    zk_shapes.sort_unstable();
    zk_shapes.dedup();
    let kills = args.kills.unwrap_or(kills);
    let blackhole_kills = match (args.smoke, args.kills) {
        (true, None) => 1,
        _ => kills,
    };
    let mut parts = args.only.unwrap_or_else(|| Part::ALL.to_vec());
    parts.sort_unstable();
    parts.dedup();
    let bin = match args.bin {
        Some(b) if b.is_file() => b,
        Some(b) => return Err(format!("--bin {}: no such file", b.display())),
        None => walship_testkit::process::walship_binary_beside_this_one()?,
    };
    if args.out.is_dir() {
        return Err(format!("--out {} is a directory; give a file name", args.out.display()));
    }
    Ok(Plan {
        mode,
        duration: args.duration.unwrap_or(duration),
        warmup: args.warmup.unwrap_or(warmup),
        clients,
        stage_clients,
        value_sizes,
        keyspace: args.keyspace.unwrap_or(1000),
        kills,
        blackhole_kills,
        failover_kinds,
        zk_shapes,
        rebirth_keys,
        footprint_secs: args.footprint_secs.unwrap_or(footprint),
        state_mb,
        parts,
        etcd: !args.skip_etcd,
        zk_direct: !args.skip_zk_direct,
        out: args.out,
        plots_dir: args.plots_dir,
        run_dir: args.run_dir,
        bin,
    })
}

fn parse_positive(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (num, mult) = match t.strip_suffix(['k', 'K']) {
        Some(n) => (n.to_string(), 1_000),
        None => match t.strip_suffix(['m', 'M']) {
            Some(n) => (n.to_string(), 1_000_000),
            None => (t.clone(), 1),
        },
    };
    match num.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large")),
        Err(_) => Err(format!("'{s}' is not a whole number (10000, 10k, 1M)")),
    }
}

fn parse_clients(s: &str) -> Result<usize, String> {
    match parse_positive(s)? {
        n if n <= 1024 => Ok(n as usize),
        _ => Err(format!("{s} clients: at most 1024")),
    }
}

fn parse_value_size(s: &str) -> Result<usize, String> {
    let n = parse_positive(s)?;
    let max = walship::api::MAX_VALUE_BYTES as u64;
    if n > max {
        return Err(format!("value size {n}: at most {max} bytes (the API's limit)"));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_numbers() {
        assert_eq!(parse_positive("10k"), Ok(10_000));
        assert_eq!(parse_positive("1M"), Ok(1_000_000));
        assert_eq!(parse_positive("100_000"), Ok(100_000));
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("x").is_err());
        assert!(parse_value_size("10M").is_err());
        assert!(parse_clients("2000").is_err());
    }
}
