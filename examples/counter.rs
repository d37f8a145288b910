//! Embedding walship: a replicated counter.
//!
//! The program is one walship node that carries its own state machine (a
//! counter) instead of the key-value map, prints the node's lifecycle events
//! as they happen, and, while it leads, proposes `+1` every `--every-ms`.
//! It takes the same flags (and WALSHIP_* variables, and `--config` file) as
//! `walship node`, plus `--every-ms`.
//!
//! Two of them against a local ZooKeeper (Debian: `zk/zk.sh install` once):
//!
//! ```text
//! zk/zk.sh start /tmp/counter-zk 2181
//! cargo run --example counter -- --id 1 --cluster counter --zk 127.0.0.1:2181 \
//!     --listen 127.0.0.1:7001 --data-dir /tmp/counter-1
//! cargo run --example counter -- --id 2 --cluster counter --zk 127.0.0.1:2181 \
//!     --listen 127.0.0.1:7002 --data-dir /tmp/counter-2        # in another terminal
//! ```
//!
//! One of them leads and counts; the other prints the same total as it
//! applies the log. Stop the leader with Ctrl-C (it hands over): the other
//! prints `PeerDown`, `LeaderChanged` to itself, and goes on counting from
//! the same total. Start the first again and the survivor prints `PeerUp`
//! with how long it was away; kill one with `kill -9` instead and the other
//! sees it down after the ZooKeeper session timeout (`--zk-session-timeout-ms`,
//! 4 s by default). `curl -X POST 127.0.0.1:700x/admin/snapshot` on the
//! leader builds a snapshot (the counter's 8 bytes inside walship's
//! crc-checked snapshot) and stores it in ZooKeeper: `SnapshotBuilt`,
//! `SnapshotUploaded`. `walship status --endpoints 127.0.0.1:7001,127.0.0.1:7002`
//! works as for any walship node.
//!
//! Logs go to stderr, filtered by RUST_LOG (default `warn,openraft=off`).
//!
//! Clean up with `zk/zk.sh stop /tmp/counter-zk; rm -rf /tmp/counter-*`.

use std::time::Duration;

use clap::Parser;
use walship::app::Application;
use walship::app::SnapshotWriter;
use walship::events::Event;
use walship::events::Events;
use walship::proposer::ProposeError;

/// The replicated state. A command is a signed decimal number to add, as
/// text (`+1`, `-3`); its result is the new total as text. Deterministic:
/// a command that does not parse is rejected, on both nodes alike. Any
/// query answers the total.
#[derive(Default)]
struct Counter {
    total: i64,
}

impl Application for Counter {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, String> {
        let parsed = std::str::from_utf8(command).ok().and_then(|s| s.parse::<i64>().ok());
        match parsed {
            Some(delta) => {
                self.total = self.total.wrapping_add(delta);
                Ok(self.total.to_string().into_bytes())
            }
            None => Err("not a number".into()),
        }
    }

    fn query(&self, _query: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self.total.to_string().into_bytes())
    }

    fn snapshot(&self) -> SnapshotWriter {
        let total = self.total;
        Box::new(move |out| out.write_all(&total.to_le_bytes()))
    }

    fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
        let mut bytes = [0u8; 8];
        snapshot
            .read_exact(&mut bytes)
            .map_err(|e| format!("a counter snapshot is 8 bytes: {e}"))?;
        self.total = i64::from_le_bytes(bytes);
        Ok(())
    }
}

#[derive(Parser)]
#[command(about = "A walship node carrying a replicated counter (see the source's header)")]
struct Args {
    #[command(flatten)]
    node: walship::cli::NodeArgs,
    /// While leading, propose "+1" this often.
    #[arg(long, default_value_t = 1000)]
    every_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = args.node.into_config()?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,openraft=off".into()),
        )
        .init();
    let id = cfg.id;

    // Subscribe before starting, to see start-up's adoption from ZooKeeper too.
    let events = Events::new();
    let mut rx = events.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(event) => println!("[node {id}] event: {}", describe(&event)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("[node {id}] missed {n} events")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    // Binds --listen and serves the node's HTTP API and peer RPC, as `walship node` does.
    let running = walship::start(cfg, Some(Box::new(Counter::default())), events).await?;
    let node = std::sync::Arc::clone(&running.node);

    let mut ticker = tokio::time::interval(Duration::from_millis(args.every_ms));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        let total = node.read_app(|c: &Counter| c.total).unwrap_or_default();
        match node.propose(b"+1".to_vec()).await {
            Ok((index, result)) => {
                println!(
                    "[node {id}] leader: +1 at log index {index} -> {}",
                    String::from_utf8_lossy(&result)
                )
            }
            Err(ProposeError::NotLeader(leader)) => {
                let leader = leader.map_or("none yet".to_string(), |l| l.to_string());
                println!("[node {id}] follower (leader: {leader}): total {total}")
            }
            Err(e) => println!("[node {id}] {e}"),
        }
    }
    println!("[node {id}] stopping: handing over if leading");
    if let Some(why) = running.shutdown().await {
        println!("[node {id}] it had failed: {why}");
    }
    Ok(())
}

fn describe(event: &Event) -> String {
    match event {
        Event::LeaderChanged { term, leader: Some(l) } => format!("leader is now node {l} (term {term})"),
        Event::LeaderChanged { term, leader: None } => format!("no leader (term {term}): electing"),
        Event::PeerDown { id } => format!("node {id} is down"),
        Event::PeerUp { id, away_ms: Some(ms) } => format!("node {id} is back after {ms} ms"),
        Event::PeerUp { id, away_ms: None } => format!("node {id} is up"),
        other => format!("{other:?}"),
    }
}
