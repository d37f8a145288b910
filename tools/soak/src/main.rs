//! `walship-soak`: parses the command line and runs the soak (see lib.rs).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "walship-soak",
    version,
    about = "Die-and-reborn soak: ZooKeeper and both walship nodes under a concurrent workload while seeded faults cycle; checks that no acknowledged write is lost and that every key's history is linearizable. Exit 0: pass; 1: a violation, stall or crash; 2: bad flags or unreachable --zk; 130/143: interrupted."
)]
struct Cli {
    #[command(flatten)]
    args: walship_soak::SoakArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| walship::cli::exit_on_bad_flags("walship soak", e));
    walship_soak::run(cli.args).await
}
