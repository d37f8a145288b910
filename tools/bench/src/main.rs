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
    let cli = Cli::try_parse().unwrap_or_else(|e| exit_on_bad_flags(e));
    walship_bench::run(cli.args).await
}

/// clap's own help and version; any other error as one line on stderr
/// (`walship bench: ...`), exit 2.
fn exit_on_bad_flags(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let text = e.to_string();
    let first = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "walship bench: {} (see walship bench --help)",
        first.trim_start_matches("error: ")
    );
    std::process::exit(2)
}
