//! The ledger workload (`--workload ledger`): the nodes run the ledger
//! example (examples/ledger.rs, an embedder's own state machine), and
//! `--clients` concurrent clients send it deposits, withdrawals and
//! transfers, each with a transaction id of its own, through a
//! `walship::client::Session` (`--ledger-retries session`, exactly once) or
//! re-sent without one after a 504 or no answer (`plain`, the comparison:
//! what a client without sessions gets).
//!
//! The ledger appends every applied transaction id to the history of each
//! account it changed and does not refuse an id it has seen, so the end
//! state says how often each transaction was applied. [`check`] holds it
//! against what each client was told.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use serde_json::json;
use walship::client::NodeClient;
use walship::client::Reply;
use walship::client::Session;
use walship::client::SessionError;

use super::rng::Rng;
use super::workload::Counters;

/// Every account's balance when the workload starts.
pub const OPENING_BALANCE: u64 = 1_000;
/// More than any balance can reach: a withdraw of it is always "insufficient funds".
pub const IMPOSSIBLE_AMOUNT: u64 = 1_000_000_000_000;
/// The ledger's `HISTORY_LEN` (examples/ledger.rs): an account keeps its
/// last this many transaction ids. A full history may have dropped a
/// duplicate, so the check refuses to judge one.
pub const HISTORY_LEN: usize = 4096;
/// One HTTP attempt. Below a node's own write timeout (5 s), so a write
/// stuck behind a dead or frozen leader is given up on, and retried, while
/// it may still commit: the case exactly-once is for.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command is retried (in a session or plainly) before the
/// client gives up with an unknown or not-applied outcome. Longer than any
/// fault's outage, so a session's command is normally answered.
pub const RETRY_FOR: Duration = Duration::from_secs(20);
/// Pause after a command that was not applied, so a client does not spin
/// while there is no leader (pacing, not synchronisation).
const BACKOFF: Duration = Duration::from_millis(25);
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(20);
const MAX_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// How often a paused client looks whether it may go on.
const PAUSED_POLL: Duration = Duration::from_millis(10);

/// How a client retries a command whose outcome it did not learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Retries {
    /// In a `walship::client::Session`: numbered, applied at most once.
    Session,
    /// No session: the same command sent again after a 504, a 503 or no
    /// answer, as a client without sessions would (duplicates are counted,
    /// not failed on).
    Plain,
}

impl Retries {
    pub fn name(self) -> &'static str {
        match self {
            Retries::Session => "session",
            Retries::Plain => "plain",
        }
    }
}

/// Account `i`.
pub fn account_name(i: u64) -> String {
    format!("acct{i:02}")
}

/// The transaction ids that open account `name` and give it its opening
/// balance (sent before the faults start).
fn opening_txs(name: &str) -> (String, String) {
    (format!("open-{name}"), format!("opening-{name}"))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Deposit { account: String, amount: u64 },
    Withdraw { account: String, amount: u64 },
    Transfer { from: String, to: String, amount: u64 },
}

impl Op {
    /// The ledger's JSON command, as any client program would write it.
    pub fn command(&self, tx: &str) -> Vec<u8> {
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
        serde_json::to_vec(&doc).expect("a ledger command serialises")
    }

    /// What one application does to each account it touches.
    pub fn effect(&self) -> Vec<(&str, i128)> {
        match self {
            Op::Deposit { account, amount } => vec![(account, *amount as i128)],
            Op::Withdraw { account, amount } => vec![(account, -(*amount as i128))],
            Op::Transfer { from, to, amount } => vec![(from, -(*amount as i128)), (to, *amount as i128)],
        }
    }
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Told {
    Applied,
    /// 409, with the node's reason.
    Rejected(String),
    /// Maybe applied (at most once in a session).
    Unknown(String),
    /// Definitely not applied (503 throughout, refused).
    NotApplied(String),
}

#[derive(Clone, Debug)]
pub struct LedgerRecord {
    pub tx: String,
    pub op: Op,
    pub told: Told,
    /// HTTP attempts the client made (plain retries; 1 for a session's command).
    pub attempts: u32,
}

/// Every record so far, shared by the clients and the soak.
pub type LedgerLog = Arc<Mutex<Vec<LedgerRecord>>>;

/// Mostly transfers and deposits; some withdraws; one in 16 a withdraw no
/// balance covers (rejected for sure); transfers up to 300, which an
/// account may not cover (rejected by validate or by apply).
fn random_op(rng: &mut Rng, accounts: u64) -> Op {
    let a = rng.below(accounts);
    match rng.below(16) {
        0 => Op::Withdraw {
            account: account_name(a),
            amount: IMPOSSIBLE_AMOUNT,
        },
        1..=4 => Op::Deposit {
            account: account_name(a),
            amount: 1 + rng.below(100),
        },
        5..=6 => Op::Withdraw {
            account: account_name(a),
            amount: 1 + rng.below(100),
        },
        _ => {
            let b = (a + 1 + rng.below(accounts - 1)) % accounts;
            Op::Transfer {
                from: account_name(a),
                to: account_name(b),
                amount: 1 + rng.below(300),
            }
        }
    }
}

/// Opens the accounts with their opening deposits, in a session (before
/// any fault, but they must not be doubled either).
pub async fn open_accounts(nodes: &[NodeClient], accounts: u64) -> Result<()> {
    let session = Session::new(nodes.to_vec()).with_retry_for(RETRY_FOR);
    for i in 0..accounts {
        let name = account_name(i);
        let (open, opening) = opening_txs(&name);
        let cmd = json!({"op": "open", "tx": open, "account": name});
        session
            .command(serde_json::to_vec(&cmd)?)
            .await
            .with_context(|| format!("opening {name}"))?;
        let deposit = Op::Deposit {
            account: name.clone(),
            amount: OPENING_BALANCE,
        };
        session
            .command(deposit.command(&opening))
            .await
            .with_context(|| format!("the opening deposit of {name}"))?;
    }
    Ok(())
}

/// One ledger client: a command at a time until `stop`, each recorded.
pub struct LedgerClient {
    pub client: u32,
    pub accounts: u64,
    pub retries: Retries,
    pub rng: Rng,
    /// The nodes, in the order this client tries them.
    pub nodes: Vec<NodeClient>,
    pub stop: Arc<AtomicBool>,
    pub paused: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    pub log: LedgerLog,
}

impl LedgerClient {
    pub async fn run(mut self) {
        let nodes: Vec<NodeClient> = self.nodes.iter().map(|n| n.with_timeout(ATTEMPT_TIMEOUT)).collect();
        let session = Session::new(nodes.clone()).with_retry_for(RETRY_FOR);
        let mut n = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            if self.paused.load(Ordering::SeqCst) {
                tokio::time::sleep(PAUSED_POLL).await;
                continue;
            }
            n += 1;
            let op = random_op(&mut self.rng, self.accounts);
            let tx = format!("c{}-{n}", self.client);
            let command = op.command(&tx);
            let (told, attempts) = match self.retries {
                Retries::Session => {
                    let told = match session.command(command).await {
                        Ok(_) => Told::Applied,
                        Err(SessionError::Rejected(why)) => Told::Rejected(why),
                        Err(e) if e.outcome_unknown() => Told::Unknown(e.to_string()),
                        Err(e) => Told::NotApplied(e.to_string()),
                    };
                    (told, 1)
                }
                Retries::Plain => {
                    let first = self.rng.below(nodes.len() as u64) as usize;
                    plain_command(&nodes, first, &command).await
                }
            };
            self.count(&told);
            let applied = told == Told::Applied;
            self.log
                .lock()
                .expect("ledger log lock")
                .push(LedgerRecord { tx, op, told, attempts });
            if !applied {
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }

    fn count(&self, told: &Told) {
        let c = &self.counters;
        c.writes.fetch_add(1, Ordering::Relaxed);
        let counter: &AtomicU64 = match told {
            Told::Applied => &c.writes_ok,
            Told::Unknown(_) => &c.writes_unknown,
            Told::Rejected(_) | Told::NotApplied(_) => &c.writes_fail,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends one command without a session: across the nodes until 200 or a
/// 4xx or [`RETRY_FOR`], the same bytes each time.
async fn plain_command(nodes: &[NodeClient], first: usize, command: &[u8]) -> (Told, u32) {
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let (mut node, mut attempts, mut maybe_applied) = (first, 0, false);
    let mut backoff = FIRST_RETRY_BACKOFF;
    loop {
        attempts += 1;
        let reply = nodes[node].command(None, command.to_vec()).await;
        match reply {
            Reply::Success { .. } => return (Told::Applied, attempts),
            Reply::Failed { status: 409, error } => return (Told::Rejected(error), attempts),
            ref r @ Reply::Failed { status, .. } if (400..500).contains(&status) => {
                return (Told::NotApplied(r.to_string()), attempts)
            }
            ref r => {
                maybe_applied |= r.outcome_unknown();
                if tokio::time::Instant::now() + backoff >= deadline {
                    let why = r.to_string();
                    return match maybe_applied {
                        true => (Told::Unknown(why), attempts),
                        false => (Told::NotApplied(why), attempts),
                    };
                }
            }
        }
        node = (node + 1) % nodes.len();
        // A retry's backoff (the next attempt decides, nothing waits on it).
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
    }
}

/// The whole ledger as one node sees it: balances and histories.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LedgerView {
    pub balances: BTreeMap<String, u64>,
    pub histories: BTreeMap<String, Vec<String>>,
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
    serde_json::from_slice(&answer).with_context(|| format!("the answer to {query} from {}", client.endpoint()))
}

/// How long the final reads of the ledger are retried (a leader may still
/// be settling after the last fault).
const VIEW_DEADLINE: Duration = Duration::from_secs(30);
const VIEW_RETRY: Duration = Duration::from_millis(100);

/// Every account on one node: linearizable (through the leader), or with
/// `stale` the node's own applied state; retried until [`VIEW_DEADLINE`].
pub async fn view(client: &NodeClient, stale: bool) -> Result<LedgerView> {
    let end = tokio::time::Instant::now() + VIEW_DEADLINE;
    loop {
        match view_once(client, stale).await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= end => return Err(e),
            // Polling with a deadline, not waiting for something to happen.
            Err(_) => tokio::time::sleep(VIEW_RETRY).await,
        }
    }
}

async fn view_once(client: &NodeClient, stale: bool) -> Result<LedgerView> {
    let balances: BTreeMap<String, u64> = query_json(client, json!({"q": "balances"}), stale).await?;
    let mut histories = BTreeMap::new();
    for account in balances.keys() {
        let history = query_json(client, json!({"q": "history", "account": account}), stale).await?;
        histories.insert(account.clone(), history);
    }
    Ok(LedgerView { balances, histories })
}

/// The transactions applied more than once so far, with how often: cheap
/// enough to ask after every cycle, and true at any moment (a duplicate
/// never goes away), unlike the end checks, which need the load stopped.
pub fn duplicated(view: &LedgerView) -> Vec<(String, usize)> {
    applications(view)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(tx, n)| (tx.to_string(), n))
        .collect()
}

/// What the ledger check found.
#[derive(Debug, Default, Clone)]
pub struct LedgerVerdict {
    pub retries: Option<Retries>,
    pub accounts: usize,
    pub commands: usize,
    pub acknowledged: usize,
    pub rejected: usize,
    pub unknown: usize,
    /// Unknown outcomes the ledger shows applied (once).
    pub unknown_applied: usize,
    pub not_applied: usize,
    pub http_attempts: u64,
    /// Applications of a transaction beyond its first.
    pub duplicates: usize,
    /// Transactions applied although the client was told otherwise
    /// (rejected or not applied; with plain retries a retry of an applied
    /// withdraw can be rejected).
    pub told_otherwise: usize,
    pub total_balance: i128,
    /// What must not happen, each naming the transaction.
    pub violations: Vec<String>,
    /// How the views were read and compared ("node 1 local = node 2 local").
    pub lines: Vec<String>,
}

impl LedgerVerdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// tx → how many times it was applied: the most any one account's history
/// holds it (a transfer is in both of its accounts' histories once per
/// application).
pub fn applications(view: &LedgerView) -> BTreeMap<&str, usize> {
    let mut per_account: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (account, history) in &view.histories {
        for tx in history {
            *per_account.entry((tx.as_str(), account.as_str())).or_default() += 1;
        }
    }
    let mut out: BTreeMap<&str, usize> = BTreeMap::new();
    for ((tx, _), n) in per_account {
        let e = out.entry(tx).or_default();
        *e = (*e).max(n);
    }
    out
}

/// The records against the ledger's end state (`view`, already known to
/// be the same on both nodes). Every check names the transaction.
///
/// Whatever the retries: no transaction the clients never sent; a transfer
/// applied to both its accounts or neither; every acknowledged transaction
/// applied at least once (a lost acknowledged write otherwise); each
/// balance is its opening balance plus what its history adds up to, and
/// the total is the opening money plus the net of every application
/// (money conserved). With sessions also: no duplicates; acknowledged
/// exactly once; unknown at most once; rejected ("insufficient funds"
/// only) and not-applied never.
pub fn check(records: &[LedgerRecord], view: &LedgerView, accounts: u64, retries: Retries) -> LedgerVerdict {
    let mut v = LedgerVerdict {
        retries: Some(retries),
        accounts: view.balances.len(),
        commands: records.len(),
        ..Default::default()
    };
    let apps = applications(view);
    let ops: BTreeMap<&str, &Op> = records.iter().map(|r| (r.tx.as_str(), &r.op)).collect();
    let expected_accounts: Vec<String> = (0..accounts).map(account_name).collect();
    let names: Vec<&String> = view.balances.keys().collect();
    if names
        .iter()
        .map(|s| s.as_str())
        .ne(expected_accounts.iter().map(|s| s.as_str()))
    {
        v.violations.push(format!(
            "the ledger holds accounts {names:?}, the soak opened {expected_accounts:?}"
        ));
    }
    for (account, history) in &view.histories {
        if history.len() >= HISTORY_LEN {
            v.violations.push(format!(
                "{account}'s history is full ({} ids): older ids were dropped, so duplicates cannot be judged; \
                 run with more --accounts or fewer cycles",
                history.len()
            ));
        }
        let (open, opening) = opening_txs(account);
        let mut balance = 0i128;
        for tx in history {
            if *tx == open {
                continue;
            }
            if *tx == opening {
                balance += OPENING_BALANCE as i128;
                continue;
            }
            match ops.get(tx.as_str()) {
                Some(op) => {
                    balance += op
                        .effect()
                        .iter()
                        .filter(|(a, _)| a == account)
                        .map(|(_, d)| d)
                        .sum::<i128>()
                }
                None => v.violations.push(format!(
                    "tx {tx}: in {account}'s history, but no client sent it (or its client never finished it)"
                )),
            }
        }
        if balance != view.balances[account] as i128 {
            v.violations.push(format!(
                "{account}: its history adds up to {balance}, its balance is {}",
                view.balances[account]
            ));
        }
        for tx in [&open, &opening] {
            let n = history.iter().filter(|t| *t == tx).count();
            if n != 1 {
                v.violations.push(format!("tx {tx}: acknowledged, applied {n} times"));
            }
        }
    }
    let mut net = 0i128;
    for r in records {
        let applied = apps.get(r.tx.as_str()).copied().unwrap_or(0);
        v.duplicates += applied.saturating_sub(1);
        v.http_attempts += r.attempts as u64;
        for (account, _) in r.op.effect() {
            let holds = view
                .histories
                .get(account)
                .map(|h| h.iter().filter(|t| **t == r.tx).count())
                .unwrap_or(0);
            if holds != applied {
                v.violations.push(format!(
                    "tx {} ({:?}): in {account}'s history {holds} times, applied {applied} times (a transfer half done)",
                    r.tx, r.op
                ));
            }
        }
        for (_, delta) in r.op.effect() {
            net += delta * applied as i128;
        }
        let session = retries == Retries::Session;
        match &r.told {
            Told::Applied => {
                v.acknowledged += 1;
                if applied == 0 {
                    v.violations
                        .push(format!("tx {}: acknowledged, never applied (a lost write)", r.tx));
                } else if applied > 1 && session {
                    v.violations
                        .push(format!("tx {}: acknowledged, applied {applied} times", r.tx));
                }
            }
            Told::Rejected(why) => {
                v.rejected += 1;
                if applied > 0 {
                    v.told_otherwise += 1;
                    if session {
                        v.violations
                            .push(format!("tx {}: rejected ({why}), applied {applied} times", r.tx));
                    }
                }
                if session && !why.contains("insufficient funds") {
                    v.violations
                        .push(format!("tx {}: rejected for another reason than funds: {why}", r.tx));
                }
            }
            Told::Unknown(why) => {
                v.unknown += 1;
                if applied > 0 {
                    v.unknown_applied += 1;
                }
                if applied > 1 && session {
                    v.violations
                        .push(format!("tx {}: outcome unknown ({why}), applied {applied} times", r.tx));
                }
            }
            Told::NotApplied(why) => {
                v.not_applied += 1;
                if applied > 0 {
                    v.told_otherwise += 1;
                    if session {
                        v.violations
                            .push(format!("tx {}: not applied ({why}), yet applied {applied} times", r.tx));
                    }
                }
            }
        }
    }
    if retries == Retries::Session && v.duplicates > 0 {
        v.violations.push(format!(
            "{} duplicate applications in sessions (must be 0)",
            v.duplicates
        ));
    }
    let total: i128 = view.balances.values().map(|b| *b as i128).sum();
    v.total_balance = total;
    let opened = (view.balances.len() as u64 * OPENING_BALANCE) as i128;
    if total != opened + net {
        v.violations.push(format!(
            "money not conserved: the balances total {total}, the opening {opened} plus the net of every application {net}"
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tx: &str, op: Op, told: Told) -> LedgerRecord {
        LedgerRecord {
            tx: tx.into(),
            op,
            told,
            attempts: 1,
        }
    }

    /// Two accounts opened with 1000 each, then `txs` applied in order.
    fn ledger(txs: &[(&str, &Op)]) -> LedgerView {
        let mut view = LedgerView::default();
        for i in 0..2 {
            let a = account_name(i);
            let (open, opening) = opening_txs(&a);
            view.balances.insert(a.clone(), OPENING_BALANCE);
            view.histories.insert(a, vec![open, opening]);
        }
        for (tx, op) in txs {
            for (a, d) in op.effect() {
                let b = view.balances.get_mut(a).expect("an account");
                *b = (*b as i128 + d) as u64;
                view.histories.get_mut(a).expect("an account").push(tx.to_string());
            }
        }
        view
    }

    fn transfer(amount: u64) -> Op {
        Op::Transfer {
            from: account_name(0),
            to: account_name(1),
            amount,
        }
    }

    #[test]
    fn exactly_once_passes() {
        let t = transfer(10);
        let w = Op::Withdraw {
            account: account_name(1),
            amount: IMPOSSIBLE_AMOUNT,
        };
        let records = [
            rec("c0-1", t.clone(), Told::Applied),
            rec("c0-2", w, Told::Rejected("insufficient funds: acct01".into())),
            rec("c1-1", transfer(5), Told::Unknown("504".into())),
        ];
        let v = check(&records, &ledger(&[("c0-1", &t)]), 2, Retries::Session);
        assert!(v.passed(), "{:?}", v.violations);
        assert_eq!((v.acknowledged, v.rejected, v.unknown, v.duplicates), (1, 1, 1, 0));
    }

    #[test]
    fn a_duplicate_names_its_transaction() {
        let t = transfer(10);
        let records = [rec("c0-1", t.clone(), Told::Applied)];
        let view = ledger(&[("c0-1", &t), ("c0-1", &t)]);
        let v = check(&records, &view, 2, Retries::Session);
        assert_eq!(v.duplicates, 1);
        assert!(v
            .violations
            .iter()
            .any(|s| s.contains("tx c0-1: acknowledged, applied 2 times")));
        // Plain retries: counted, not a violation (money still adds up).
        let v = check(&records, &view, 2, Retries::Plain);
        assert_eq!(v.duplicates, 1);
        assert!(v.passed(), "{:?}", v.violations);
    }

    #[test]
    fn lost_half_done_and_unsent_are_violations() {
        let t = transfer(10);
        let records = [rec("c0-1", t.clone(), Told::Applied)];
        let v = check(&records, &ledger(&[]), 2, Retries::Plain);
        assert!(v
            .violations
            .iter()
            .any(|s| s.contains("tx c0-1: acknowledged, never applied")));

        let mut half = ledger(&[]);
        half.histories.get_mut("acct00").unwrap().push("c0-1".into());
        *half.balances.get_mut("acct00").unwrap() -= 10;
        let v = check(&records, &half, 2, Retries::Session);
        assert!(
            v.violations.iter().any(|s| s.contains("half done")),
            "{:?}",
            v.violations
        );

        let v = check(&[], &ledger(&[("c9-9", &t)]), 2, Retries::Session);
        assert!(v
            .violations
            .iter()
            .any(|s| s.contains("tx c9-9: in acct00's history, but no client sent it")));
    }

    #[test]
    fn duplicated_lists_each_transaction_applied_twice() {
        let t = transfer(10);
        let d = Op::Deposit {
            account: account_name(1),
            amount: 5,
        };
        let view = ledger(&[("c0-1", &t), ("c1-1", &d), ("c0-1", &t), ("c1-1", &d), ("c1-1", &d)]);
        assert_eq!(
            duplicated(&view),
            vec![("c0-1".to_string(), 2), ("c1-1".to_string(), 3)]
        );
        assert!(duplicated(&ledger(&[("c0-1", &t)])).is_empty());
    }

    #[test]
    fn money_must_add_up() {
        let mut view = ledger(&[]);
        *view.balances.get_mut("acct01").unwrap() += 1;
        let v = check(&[], &view, 2, Retries::Session);
        assert!(v
            .violations
            .iter()
            .any(|s| s.contains("acct01: its history adds up to 1000, its balance is 1001")));
        assert!(v.violations.iter().any(|s| s.contains("money not conserved")));
    }
}
