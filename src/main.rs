//! `walship`: parses the command line and runs it; everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use walship::cli::Cli;
use walship::cli::Command;

/// glibc's malloc took ~20 % of a busy leader's CPU (`perf`: `_int_malloc`,
/// `malloc_consolidate`, `unlink_chunk`, `_int_free`): every request and
/// batch allocates and frees across threads. BENCHMARKS.md has the A/B.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| exit_on_bad_flags(e));
    match cli.command {
        Command::Node(args) => {
            let print_config = args.print_config;
            let cfg = match args.into_config() {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("walship node: {e}");
                    return ExitCode::from(2);
                }
            };
            if print_config {
                print!("{}", walship::config::to_toml(&cfg));
                return ExitCode::SUCCESS;
            }
            let id = cfg.id;
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .event_format(WithNodeId {
                    id,
                    inner: tracing_subscriber::fmt::format(),
                    quiet: Default::default(),
                })
                .init();
            match run_node(cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("walship node: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Wal(cmd) => walship::cli::wal::run(cmd).await,
        Command::Kv(args) => walship::cli::client::run_kv(args).await,
        Command::App(args) => walship::cli::client::run_app(args).await,
        Command::Status(args) => walship::cli::client::run_status(args).await,
        Command::Members(args) => walship::cli::client::run_members(args).await,
        Command::DevCa(args) => walship::devca::run(args),
        Command::ZkJaas(args) => walship::zksec::run_jaas(args),
        Command::External(args) => run_tool(args),
    }
}

/// `walship <tool> args...`: replaces this process with `walship-<tool>`
/// found beside this binary or on PATH (so its exit status is the tool's).
fn run_tool(args: Vec<std::ffi::OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let Some((tool, rest)) = args.split_first() else {
        return ExitCode::from(2);
    };
    let name = format!("walship-{}", tool.to_string_lossy());
    let beside = std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join(&name)))
        .filter(|p| p.is_file());
    let program = beside
        .map(std::ffi::OsString::from)
        .unwrap_or_else(|| name.clone().into());
    let err = std::process::Command::new(&program).args(rest).exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        eprintln!(
            "walship: no such command {:?}, and no {name} beside this binary or on PATH (the tools build with `cargo build --workspace`); see walship --help",
            tool.to_string_lossy()
        );
    } else {
        eprintln!("walship: cannot run {}: {err}", program.to_string_lossy());
    }
    ExitCode::from(2)
}

/// clap's own handling (usage, help, exit 2), except that `walship node`
/// and the client commands reject a bad flag with one line.
fn exit_on_bad_flags(e: clap::Error) -> ! {
    let sub = std::env::args()
        .nth(1)
        .filter(|a| matches!(a.as_str(), "node" | "kv" | "status" | "members" | "dev-ca" | "zk-jaas"));
    match sub {
        Some(sub) => walship::cli::exit_on_bad_flags(&format!("walship {sub}"), e),
        None => e.exit(),
    }
}

async fn run_node(cfg: walship::config::NodeConfig) -> anyhow::Result<()> {
    walship::start(cfg, None, walship::events::Events::new())
        .await?
        .run_until_signal()
        .await
}

/// Puts `node=<id>` at the start of every log line, including those of
/// spawned tasks and of openraft and zookeeper-client, which no span reaches.
///
/// It also keeps the libraries' per-request warnings from flooding the log:
/// while ZooKeeper or the peer is unreachable, openraft logs every failed RPC
/// and every waiting read (thousands of lines a minute), and zookeeper-client
/// every failed connect. Each of their WARN/ERROR call sites prints at most
/// once per `CHATTY_REPEAT_EVERY`, the next line saying how many were left
/// out, so a state change shows and the storm does not.
struct WithNodeId<F> {
    id: u64,
    inner: F,
    /// Per library call site: when it last printed, and lines left out since.
    quiet: std::sync::Mutex<std::collections::HashMap<tracing::callsite::Identifier, (std::time::Instant, u64)>>,
}

const CHATTY_REPEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithNodeId<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut left_out = 0;
        let chatty = meta.target().starts_with("openraft") || meta.target().starts_with("zookeeper_client");
        if chatty && *meta.level() <= tracing::Level::WARN {
            let mut quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            match quiet.get_mut(&meta.callsite()) {
                Some((at, n)) if now.duration_since(*at) < CHATTY_REPEAT_EVERY => {
                    *n += 1;
                    return Ok(()); // an empty line is not written
                }
                Some((at, n)) => {
                    left_out = std::mem::take(n);
                    *at = now;
                }
                None => {
                    quiet.insert(meta.callsite(), (now, 0));
                }
            }
        }
        write!(writer, "node={} ", self.id)?;
        if left_out > 0 {
            write!(writer, "[{left_out} like this left out] ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}
