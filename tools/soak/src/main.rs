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
    let cli = Cli::try_parse().unwrap_or_else(|e| exit_on_bad_flags(e));
    walship_soak::run(cli.args).await
}

/// clap's own help and version; any other error as one line on stderr
/// (`walship soak: ...`), exit 2.
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
        "walship soak: {} (see walship soak --help)",
        first.trim_start_matches("error: ")
    );
    std::process::exit(2)
}
