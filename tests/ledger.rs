//! The ledger example (examples/ledger.rs) as its users run it: two ledger
//! processes and a private ZooKeeper, clients on the HTTP API, the leader
//! killed with kill -9 under load (three times, once reborn with an empty
//! disk from ZooKeeper).
//!
//! With client sessions (`walship::client::Session`), every acknowledged
//! transaction is applied exactly once, rejections change nothing, money is
//! conserved and both nodes end identical. The same load with plain retries
//! (a command sent again after a 504 or a cut connection) is run too, and
//! the duplicates it produced are printed: the difference sessions make.
//!
//! The clients, the reads and the judgement are the soak's
//! (`walship_soak::ledger`): one model of the ledger, so the test and the
//! soak cannot drift apart. The ledger records every applied transaction id
//! in the history of the accounts it changed, and does not refuse an id it
//! has seen, so a duplicate application shows there directly.
//!
//! Needs the example built: `cargo test --all-targets` builds it (or
//! `cargo build --example ledger`).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use anyhow::Context;
use anyhow::Result;
use common::Cluster;
use common::ClusterContext;
use common::Deadline;
use common::Reply;
use common::Setup;
use walship_soak::ledger;
use walship_soak::ledger::LedgerClient;
use walship_soak::ledger::LedgerLog;
use walship_soak::ledger::LedgerVerdict;
use walship_soak::ledger::LedgerView;
use walship_soak::ledger::Op;
use walship_soak::ledger::Retries;
use walship_soak::ledger::Told;
use walship_soak::rng::Rng;
use walship_soak::workload::Counters;

const ACCOUNTS: u64 = 6;
/// Concurrent clients per phase, each with its own session (or none), one command at a time.
const WORKERS: u32 = 3;
const KILLS: usize = 3;
/// Which kill (0-based) wipes the killed leader's data dir.
const WIPED_KILL: usize = 1;
/// Acknowledged commands between two kills (and after the last).
const ACKS_PER_STEP: u64 = 40;
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Polls until `counters` show `more` acknowledged commands since `from`.
async fn wait_acks(c: &mut Cluster, counters: &Counters, from: u64, more: u64) -> Result<u64> {
    let deadline = Deadline::after(CATCH_UP_TIMEOUT, format!("{more} more acknowledged commands"));
    loop {
        let now = counters.writes_ok.load(Ordering::Relaxed);
        if now >= from + more {
            return Ok(now);
        }
        c.check_crashes()?;
        deadline.tick(&format!("{} acknowledged since", now - from)).await?;
    }
}

/// Runs `WORKERS` clients retrying the `retries` way while killing the
/// leader `KILLS` times (once wiping its data dir), then stops them and
/// reads the ledger from both nodes, checking they agree. Client ids start
/// at `first_client`, so no two phases share a transaction id.
async fn phase(c: &mut Cluster, retries: Retries, first_client: u32, log: &LedgerLog) -> Result<LedgerView> {
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (first_client..first_client + WORKERS)
        .map(|client| {
            let load = LedgerClient {
                client,
                accounts: ACCOUNTS,
                retries,
                rng: Rng::fork(SEED, u64::from(client)),
                nodes: c.clients(),
                stop: stop.clone(),
                paused: Arc::new(AtomicBool::new(false)),
                counters: counters.clone(),
                log: log.clone(),
            };
            tokio::spawn(load.run())
        })
        .collect();

    let mut seen = 0;
    let killed: Result<()> = async {
        for k in 0..KILLS {
            seen = wait_acks(c, &counters, seen, ACKS_PER_STEP).await?;
            let leader = c.wait_for_leader(FAILOVER_TIMEOUT).await?;
            c.node_mut(leader).kill9().await?;
            if k == WIPED_KILL {
                c.wipe(leader)?;
            }
            c.wait_for_new_leader(leader, FAILOVER_TIMEOUT).await?;
            c.node_mut(leader).start()?;
            c.node_mut(leader).wait_live(CATCH_UP_TIMEOUT).await?;
            // Both up to date before the next kill: each kill is one fault.
            c.wait_caught_up(CATCH_UP_TIMEOUT).await?;
        }
        wait_acks(c, &counters, seen, ACKS_PER_STEP).await?;
        Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.context("a ledger client panicked")?;
    }
    killed?;

    // Both nodes' own copies, after both applied everything.
    let leader = c.wait_caught_up(CATCH_UP_TIMEOUT).await?;
    let views = [
        ledger::view(&c.client(1), true).await?,
        ledger::view(&c.client(2), true).await?,
    ];
    let linearizable = ledger::view(&c.client(Cluster::other(leader)), false).await?;
    let name = retries.name();
    ensure!(
        views[0] == views[1],
        "{name}: the nodes differ: node 1 {:?}, node 2 {:?}",
        views[0].balances,
        views[1].balances
    );
    ensure!(
        linearizable == views[0],
        "{name}: a linearizable read differs from the nodes' state"
    );
    let [view, _] = views;
    Ok(view)
}

/// The verdict on every command so far, failing on any violation.
fn judge(log: &LedgerLog, view: &LedgerView, retries: Retries) -> Result<LedgerVerdict> {
    let records = log.lock().expect("ledger log lock").clone();
    let v = ledger::check(&records, view, ACCOUNTS, retries);
    println!(
        "{}: {} commands: {} acknowledged, {} rejected, {} unknown ({} applied), {} not applied; \
         {} HTTP attempts; {} duplicate applications, {} applied though told otherwise",
        retries.name(),
        v.commands,
        v.acknowledged,
        v.rejected,
        v.unknown,
        v.unknown_applied,
        v.not_applied,
        v.http_attempts,
        v.duplicates,
        v.told_otherwise
    );
    ensure!(v.passed(), "{}: {}", retries.name(), v.violations.join("; "));
    Ok(v)
}

/// A rejected withdraw is refused before it is logged: 409 with the reason,
/// and the leader's log does not grow.
async fn check_validate_refusal(c: &mut Cluster) -> Result<()> {
    let leader = c.wait_caught_up(CATCH_UP_TIMEOUT).await?;
    let last = |s: Reply<common::Status>| s.into_result().map(|s| s.last_log_index);
    let before = last(c.status_of(leader).await)?;
    let withdraw = Op::Withdraw {
        account: ledger::account_name(0),
        amount: ledger::IMPOSSIBLE_AMOUNT,
    };
    let reply = c
        .client(Cluster::other(leader))
        .command(None, withdraw.command("refused-before-logging"))
        .await;
    match &reply {
        Reply::Failed { status: 409, error } if error.contains("insufficient funds") => {}
        other => anyhow::bail!("an impossible withdraw got {other}, not 409 insufficient funds"),
    }
    let after = last(c.status_of(leader).await)?;
    ensure!(
        before == after,
        "a withdraw refused by validate was logged: last log index {before:?} -> {after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_exactly_once_across_leader_kills() -> Result<()> {
    let mut c = Setup::test("ledger")
        .example("ledger")
        // Snapshots (streamed by the ledger) go to ZooKeeper during the run,
        // so the wiped node is reborn from one.
        .node_args(&["--snapshot-every-entries", "200"])
        .start()
        .await?;
    let result = async {
        ledger::open_accounts(&c.clients(), ACCOUNTS).await?;
        let log = LedgerLog::default();
        let view = phase(&mut c, Retries::Session, 0, &log).await?;
        let sessions = judge(&log, &view, Retries::Session)?;
        // The rejection path was taken: every withdraw no balance covers was refused.
        let records = log.lock().expect("ledger log lock").clone();
        let impossible: Vec<_> = records
            .iter()
            .filter(|r| matches!(r.op, Op::Withdraw { amount, .. } if amount == ledger::IMPOSSIBLE_AMOUNT))
            .collect();
        ensure!(
            !impossible.is_empty(),
            "no withdraw no balance covers was sent: the rejection path went untested"
        );
        if let Some(r) = impossible.iter().find(|r| !matches!(r.told, Told::Rejected(_))) {
            anyhow::bail!("{} withdraws more than any balance, yet was told {:?}", r.tx, r.told);
        }
        check_validate_refusal(&mut c).await?;

        // The same load without sessions: judged leniently (duplicates are
        // counted, not failed on; a lost write or money made still fails).
        let view = phase(&mut c, Retries::Plain, WORKERS, &log).await?;
        let plain = judge(&log, &view, Retries::Plain)?;
        println!(
            "without sessions: {} duplicate applications; with sessions: {}",
            plain.duplicates, sessions.duplicates
        );
        Ok(())
    }
    .await;
    result.in_cluster(&c)
}
