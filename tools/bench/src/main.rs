//! `walship-bench`: parses the command line and runs the benchmarks (see lib.rs).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "walship-bench",
    version,
    about = "Benchmarks: write/read throughput and latency against ZooKeeper-direct and etcd, failover and rebirth times, ZooKeeper footprint; a table, a JSON report and SVG plots. Exit 0: completed; 1: stopped on an error; 2: bad flags; 130/143: interrupted."
)]
struct Cli {
    #[command(flatten)]
    args: walship_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| walship::cli::exit_on_bad_flags("walship bench", e));
    walship_bench::run(cli.args).await
}
