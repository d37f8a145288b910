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
//! The ledger records every applied transaction id in the history of the
//! accounts it changed, and does not refuse an id it has seen, so a
//! duplicate application shows there directly.
//!
//! Needs the example built: `cargo test --all-targets` builds it (or
//! `cargo build --example ledger`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use anyhow::Context;
use anyhow::Result;
use common::Cluster;
use common::ClusterContext;
use common::Deadline;
use common::NodeClient;
use common::Reply;
use common::Setup;
use serde_json::json;
use walship::client::Session;
use walship::client::SessionError;

const ACCOUNTS: usize = 6;
const OPENING_BALANCE: u64 = 1_000;
/// Concurrent clients, each with its own session (or none), one command at a time.
const WORKERS: usize = 3;
const KILLS: usize = 3;
/// Which kill (0-based) wipes the killed leader's data dir.
const WIPED_KILL: usize = 1;
/// More than any balance can reach: a withdraw of it is always "insufficient funds".
const IMPOSSIBLE_AMOUNT: u64 = 1_000_000_000_000;
/// Acknowledged commands between two kills (and after the last).
const ACKS_PER_STEP: u64 = 40;
/// One HTTP attempt; a leader's own write timeout answers 504 before it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command is retried (session or plain) before giving up.
const RETRY_FOR: Duration = Duration::from_secs(20);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// The ledger's `HISTORY_LEN`: a longer history would drop ids, hiding duplicates.
const HISTORY_LEN: usize = 4096;

#[derive(Clone, Debug)]
enum Op {
    Deposit { account: String, amount: u64 },
    Withdraw { account: String, amount: u64 },
    Transfer { from: String, to: String, amount: u64 },
}

impl Op {
    /// The ledger's JSON command, as any client program would write it.
    fn command(&self, tx: &str) -> Vec<u8> {
        let doc = match self {
            Op::Deposit { account, amount } => {
                json!({"op": "deposit", "tx": tx, "account": account, "amount": amount})
            }
            Op::Withdraw { account, amount } => {
                json!({"op": "withdraw", "tx": tx, "account": account, "amount": amount})
            }
            Op::Transfer { from, to, amount } => {
                json!({"op": "transfer", "tx": tx, "from": from, "to": to, "amount": amount})
            }
        };
        serde_json::to_vec(&doc).expect("json")
    }

    /// What one application does to each account it touches.
    fn effect(&self) -> Vec<(&str, i128)> {
        match self {
            Op::Deposit { account, amount } => vec![(account, *amount as i128)],
            Op::Withdraw { account, amount } => vec![(account, -(*amount as i128))],
            Op::Transfer { from, to, amount } => vec![(from, -(*amount as i128)), (to, *amount as i128)],
        }
    }

    /// Money it adds to (or takes from) the whole ledger; a transfer none.
    fn net(&self) -> i128 {
        self.effect().iter().map(|(_, d)| d).sum()
    }
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Applied,
    /// 409, with the reason.
    Rejected(String),
    /// Maybe applied (at most once with a session).
    Unknown(String),
    /// Nothing was written.
    NotApplied(String),
}

#[derive(Clone, Debug)]
struct Record {
    tx: String,
    op: Op,
    outcome: Outcome,
    /// HTTP attempts it took (plain retries only; 1 in a session).
    attempts: u32,
}

/// A small deterministic generator (xorshift64*), seeded per worker.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn account(phase: &str, i: u64) -> String {
    format!("{phase}-acct{i}")
}

/// Mostly transfers and deposits; some withdraws; one in 16 a withdraw that
/// cannot be covered (rejected for sure), and transfers up to 300 that an
/// account may not cover (rejected by validate or by apply).
fn random_op(rng: &mut Rng, phase: &str) -> Op {
    let a = rng.below(ACCOUNTS as u64);
    match rng.below(16) {
        0 => Op::Withdraw {
            account: account(phase, a),
            amount: IMPOSSIBLE_AMOUNT,
        },
        1..=4 => Op::Deposit {
            account: account(phase, a),
            amount: 1 + rng.below(100),
        },
        5..=6 => Op::Withdraw {
            account: account(phase, a),
            amount: 1 + rng.below(100),
        },
        _ => {
            let b = (a + 1 + rng.below(ACCOUNTS as u64 - 1)) % ACCOUNTS as u64;
            Op::Transfer {
                from: account(phase, a),
                to: account(phase, b),
                amount: 1 + rng.below(300),
            }
        }
    }
}

/// How a worker sends its commands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// In a `Session`: retried with its number, applied at most once.
    Session,
    /// No session: the same bytes sent again after any answer but 200/409.
    PlainRetries,
}

/// Sends one command the plain way: retried across the nodes until 200 or
/// 409 or `RETRY_FOR`, as a client without sessions would.
async fn plain_command(nodes: &[NodeClient], command: &[u8]) -> (Outcome, u32) {
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let (mut node, mut attempts, mut maybe_applied) = (0, 0, false);
    let mut backoff = Duration::from_millis(20);
    loop {
        attempts += 1;
        let reply = nodes[node].command(None, command.to_vec()).await;
        match reply {
            Reply::Success { .. } => return (Outcome::Applied, attempts),
            Reply::Failed { status: 409, error } => return (Outcome::Rejected(error), attempts),
            ref r @ Reply::Failed { status, .. } if (400..500).contains(&status) => {
                return (Outcome::NotApplied(r.to_string()), attempts)
            }
            ref r => {
                maybe_applied |= r.outcome_unknown();
                if tokio::time::Instant::now() + backoff >= deadline {
                    let why = r.to_string();
                    return match maybe_applied {
                        true => (Outcome::Unknown(why), attempts),
                        false => (Outcome::NotApplied(why), attempts),
                    };
                }
            }
        }
        node = (node + 1) % nodes.len();
        // A retry's backoff (no synchronisation: the next attempt decides).
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// One client: random commands until `stop`, each recorded with its outcome.
async fn worker(
    mode: Mode,
    phase: String,
    id: usize,
    nodes: Vec<NodeClient>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Vec<Record> {
    let session = Session::new(nodes.clone()).with_retry_for(RETRY_FOR);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) << 32) ^ phase.len() as u64);
    let mut records = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let op = random_op(&mut rng, &phase);
        let tx = format!("{phase}-w{id}-{n}");
        let command = op.command(&tx);
        let (outcome, attempts) = match mode {
            Mode::Session => {
                let outcome = match session.command(command).await {
                    Ok(_) => Outcome::Applied,
                    Err(SessionError::Rejected(why)) => Outcome::Rejected(why),
                    Err(e) if e.outcome_unknown() => Outcome::Unknown(e.to_string()),
                    Err(e) => Outcome::NotApplied(e.to_string()),
                };
                (outcome, 1)
            }
            Mode::PlainRetries => plain_command(&nodes, &command).await,
        };
        if outcome == Outcome::Applied {
            acked.fetch_add(1, Ordering::Relaxed);
        }
        records.push(Record {
            tx,
            op,
            outcome,
            attempts,
        });
    }
    records
}

/// Polls until `acked` has grown by `more` since `from`.
async fn wait_acks(c: &mut Cluster, acked: &AtomicU64, from: u64, more: u64) -> Result<u64> {
    let deadline = Deadline::after(CATCH_UP_TIMEOUT, format!("{more} more acknowledged commands"));
    loop {
        let now = acked.load(Ordering::Relaxed);
        if now >= from + more {
            return Ok(now);
        }
        c.check_crashes()?;
        deadline.tick(&format!("{} acknowledged since", now - from)).await?;
    }
}

/// One ledger's whole state as a node sees it: balances and histories.
#[derive(Debug, PartialEq, Eq)]
struct LedgerView {
    balances: BTreeMap<String, u64>,
    histories: BTreeMap<String, Vec<String>>,
}

async fn query_json<T: serde::de::DeserializeOwned>(
    client: &NodeClient,
    query: serde_json::Value,
    stale: bool,
) -> Result<T> {
    let answer = client
        .query(serde_json::to_vec(&query)?, stale)
        .await
        .into_result()
        .with_context(|| format!("query {query} on {}", client.endpoint()))?;
    serde_json::from_slice(&answer).with_context(|| format!("the answer to {query}"))
}

/// The phase's accounts on one node (`stale`: its own applied state).
async fn view(client: &NodeClient, phase: &str, stale: bool) -> Result<LedgerView> {
    let all: BTreeMap<String, u64> = query_json(client, json!({"q": "balances"}), stale).await?;
    let balances: BTreeMap<String, u64> = all.into_iter().filter(|(a, _)| a.starts_with(phase)).collect();
    let mut histories = BTreeMap::new();
    for account in balances.keys() {
        let history = query_json(client, json!({"q": "history", "account": account}), stale).await?;
        histories.insert(account.clone(), history);
    }
    Ok(LedgerView { balances, histories })
}

/// What one phase came to.
struct PhaseReport {
    records: Vec<Record>,
    view: LedgerView,
    kills: usize,
}

impl PhaseReport {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.records.iter().filter(|r| f(&r.outcome)).count()
    }

    /// tx → how many times it was applied (the most any account's history holds it).
    fn applications(&self) -> BTreeMap<&str, usize> {
        let mut per_account: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (account, history) in &self.view.histories {
            for tx in history {
                *per_account.entry((tx, account)).or_default() += 1;
            }
        }
        let mut out: BTreeMap<&str, usize> = BTreeMap::new();
        for ((tx, _), n) in per_account {
            let e = out.entry(tx).or_default();
            *e = (*e).max(n);
        }
        out
    }

    /// Extra applications: every application of a tx beyond its first.
    fn duplicates(&self) -> usize {
        self.applications().values().map(|n| n.saturating_sub(1)).sum()
    }

    fn summary(&self, mode: Mode) -> String {
        format!(
            "{mode:?}: {} kills, {} commands: {} acknowledged, {} rejected, {} unknown, {} not applied; \
             {} HTTP attempts; {} duplicate applications",
            self.kills,
            self.records.len(),
            self.count(|o| *o == Outcome::Applied),
            self.count(|o| matches!(o, Outcome::Rejected(_))),
            self.count(|o| matches!(o, Outcome::Unknown(_))),
            self.count(|o| matches!(o, Outcome::NotApplied(_))),
            self.records.iter().map(|r| r.attempts as u64).sum::<u64>(),
            self.duplicates(),
        )
    }
}

/// Opens the phase's accounts with their opening deposits (in a session:
/// nothing is being killed yet, but they must not be doubled either).
async fn open_accounts(c: &Cluster, phase: &str) -> Result<()> {
    let session = Session::new(c.clients()).with_retry_for(RETRY_FOR);
    for i in 0..ACCOUNTS as u64 {
        let name = account(phase, i);
        let open = json!({"op": "open", "tx": format!("{name}-open"), "account": name});
        session.command(serde_json::to_vec(&open)?).await?;
        let deposit = Op::Deposit {
            account: name.clone(),
            amount: OPENING_BALANCE,
        };
        session.command(deposit.command(&format!("{name}-opening"))).await?;
    }
    Ok(())
}

/// Runs the load in `mode` while killing the leader `KILLS` times (once
/// wiping its data dir), then stops it and reads the ledger from both nodes,
/// checking they agree.
async fn phase(c: &mut Cluster, mode: Mode, phase: &str) -> Result<PhaseReport> {
    open_accounts(c, phase).await?;
    let nodes: Vec<NodeClient> = c.clients().iter().map(|n| n.with_timeout(ATTEMPT_TIMEOUT)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            let (nodes, stop, acked) = (nodes.clone(), stop.clone(), acked.clone());
            tokio::spawn(worker(mode, phase.to_string(), id, nodes, stop, acked))
        })
        .collect();

    let mut seen = 0;
    let mut kills = 0;
    let killed: Result<()> = async {
        for k in 0..KILLS {
            seen = wait_acks(c, &acked, seen, ACKS_PER_STEP).await?;
            let leader = c.wait_for_leader(FAILOVER_TIMEOUT).await?;
            c.node_mut(leader).kill9().await?;
            kills += 1;
            if k == WIPED_KILL {
                c.wipe(leader)?;
            }
            c.wait_for_new_leader(leader, FAILOVER_TIMEOUT).await?;
            c.node_mut(leader).start()?;
            c.node_mut(leader).wait_live(CATCH_UP_TIMEOUT).await?;
            // Both up to date before the next kill: each kill is one fault.
            c.wait_caught_up(CATCH_UP_TIMEOUT).await?;
        }
        wait_acks(c, &acked, seen, ACKS_PER_STEP).await?;
        Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut records = Vec::new();
    for w in workers {
        records.extend(w.await.context("a worker panicked")?);
    }
    killed?;

    // Both nodes' own copies, after both applied everything.
    let leader = c.wait_caught_up(CATCH_UP_TIMEOUT).await?;
    let views = [
        view(&c.client(1), phase, true).await?,
        view(&c.client(2), phase, true).await?,
    ];
    let linearizable = view(&c.client(Cluster::other(leader)), phase, false).await?;
    ensure!(
        views[0] == views[1],
        "{mode:?}: the nodes differ: node 1 {:?}, node 2 {:?}",
        views[0].balances,
        views[1].balances
    );
    ensure!(
        linearizable == views[0],
        "{mode:?}: a linearizable read differs from the nodes' state"
    );
    let [view, _] = views;
    ensure!(
        view.balances.len() == ACCOUNTS,
        "{mode:?}: accounts {:?}",
        view.balances
    );
    for (account, history) in &view.histories {
        ensure!(
            history.len() < HISTORY_LEN,
            "{account}'s history is full ({} ids): duplicates could have been dropped; run fewer commands",
            history.len()
        );
    }
    Ok(PhaseReport { records, view, kills })
}

/// Checks that hold whatever the client did: each balance is what the
/// commands in its history add up to.
fn check_consistent(report: &PhaseReport, phase: &str) -> Result<()> {
    let ops: BTreeMap<&str, &Op> = report.records.iter().map(|r| (r.tx.as_str(), &r.op)).collect();
    for (account, history) in &report.view.histories {
        let mut balance = 0i128;
        for tx in history {
            if tx == &format!("{account}-open") {
                continue;
            }
            if tx == &format!("{account}-opening") {
                balance += OPENING_BALANCE as i128;
                continue;
            }
            let op = ops
                .get(tx.as_str())
                .with_context(|| format!("{account}: unknown tx {tx}"))?;
            balance += op
                .effect()
                .iter()
                .filter(|(a, _)| a == account)
                .map(|(_, d)| d)
                .sum::<i128>();
        }
        ensure!(
            balance == report.view.balances[account] as i128,
            "{phase}: {account}'s history adds up to {balance}, its balance is {}",
            report.view.balances[account]
        );
    }
    Ok(())
}

/// Exactly once: the session phase's outcomes against the ledger.
fn check_exactly_once(report: &PhaseReport) -> Result<()> {
    ensure!(report.kills == KILLS, "{} kills", report.kills);
    ensure!(
        report.duplicates() == 0,
        "{} duplicate applications in a session",
        report.duplicates()
    );
    let applications = report.applications();
    let mut expected: BTreeMap<&str, i128> = report
        .view
        .balances
        .keys()
        .map(|a| (a.as_str(), OPENING_BALANCE as i128))
        .collect();
    let (mut net, mut rejected) = (0i128, 0);
    for r in &report.records {
        let applied = applications.get(r.tx.as_str()).copied().unwrap_or(0);
        // Every account a transfer touches holds it, or none: all or nothing.
        for (account, _) in r.op.effect() {
            let holds = report.view.histories[account].iter().filter(|t| **t == r.tx).count();
            ensure!(
                holds == applied,
                "{} ({:?}) is in {account}'s history {holds} times, applied {applied} times",
                r.tx,
                r.op
            );
        }
        match &r.outcome {
            Outcome::Applied => ensure!(applied == 1, "acknowledged {} applied {applied} times", r.tx),
            Outcome::Rejected(why) => {
                ensure!(applied == 0, "rejected {} was applied ({why})", r.tx);
                ensure!(
                    why.contains("insufficient funds"),
                    "{} rejected for another reason: {why}",
                    r.tx
                );
                rejected += 1;
            }
            Outcome::NotApplied(why) => ensure!(applied == 0, "{} applied after {why}", r.tx),
            Outcome::Unknown(_) => ensure!(applied <= 1, "unknown {} applied {applied} times", r.tx),
        }
        if applied == 1 {
            for (account, delta) in r.op.effect() {
                *expected.get_mut(account).context("an account")? += delta;
            }
            net += r.op.net();
        }
    }
    let impossible = report
        .records
        .iter()
        .filter(|r| matches!(r.op, Op::Withdraw { amount, .. } if amount == IMPOSSIBLE_AMOUNT))
        .count();
    ensure!(
        rejected >= impossible && impossible > 0,
        "{rejected} rejections, fewer than the {impossible} withdraws no balance covers"
    );
    let actual: BTreeMap<&str, i128> = report
        .view
        .balances
        .iter()
        .map(|(a, b)| (a.as_str(), *b as i128))
        .collect();
    ensure!(
        actual == expected,
        "balances {actual:?}, acknowledged commands give {expected:?}"
    );
    let total: i128 = actual.values().sum();
    ensure!(
        total == (ACCOUNTS as u64 * OPENING_BALANCE) as i128 + net,
        "money not conserved: total {total}, opened with {} and deposited net {net}",
        ACCOUNTS as u64 * OPENING_BALANCE
    );
    Ok(())
}

/// A rejected withdraw is refused before it is logged: 409 with the reason,
/// and the leader's log does not grow.
async fn check_validate_refusal(c: &mut Cluster, phase: &str) -> Result<()> {
    let leader = c.wait_caught_up(CATCH_UP_TIMEOUT).await?;
    let last = |s: Reply<common::Status>| s.into_result().map(|s| s.last_log_index);
    let before = last(c.status_of(leader).await)?;
    let withdraw = Op::Withdraw {
        account: account(phase, 0),
        amount: IMPOSSIBLE_AMOUNT,
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
        let sessions = phase(&mut c, Mode::Session, "s").await?;
        println!("{}", sessions.summary(Mode::Session));
        check_consistent(&sessions, "session")?;
        check_exactly_once(&sessions)?;
        check_validate_refusal(&mut c, "s").await?;

        // The same load without sessions: reported, not asserted (a run
        // may see no retry of an applied command).
        let plain = phase(&mut c, Mode::PlainRetries, "p").await?;
        println!("{}", plain.summary(Mode::PlainRetries));
        check_consistent(&plain, "plain")?;
        let applications = plain.applications();
        let wrong = plain
            .records
            .iter()
            .filter(|r| r.outcome != Outcome::Applied && applications.contains_key(r.tx.as_str()))
            .count();
        println!(
            "without sessions: {} duplicate applications, {wrong} commands applied though the client was told otherwise; \
             with sessions: {} duplicates",
            plain.duplicates(),
            sessions.duplicates()
        );
        Ok(())
    }
    .await;
    result.in_cluster(&c)
}
