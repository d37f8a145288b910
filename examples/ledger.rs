//! Embedding walship: a bank ledger, replicated.
//!
//! The program is one walship node whose state machine is a ledger of
//! accounts instead of the key-value map. It takes the same flags (and
//! WALSHIP_* variables, and `--config` file) as `walship node`; clients
//! reach the ledger through the node's HTTP API, `POST /v1/app/command` and
//! `/v1/app/query` (`walship app command|query`, `walship::client::Session`,
//! `NodeClient`), on either node: a follower forwards to the leader.
//!
//! Commands and queries are JSON (see [`Command`] and [`Query`]):
//!
//! ```text
//! {"op":"open","tx":"t1","account":"alice"}
//! {"op":"deposit","tx":"t2","account":"alice","amount":100}
//! {"op":"withdraw","tx":"t3","account":"alice","amount":30}
//! {"op":"transfer","tx":"t4","from":"alice","to":"bob","amount":50}
//! {"q":"balance","account":"alice"}   {"q":"balances"}   {"q":"history","account":"alice"}
//! ```
//!
//! A withdraw or transfer the balance does not cover is rejected with
//! "insufficient funds" (HTTP 409): refused by `validate` before anything
//! is logged when the leader's state already shows it, and by `apply`
//! otherwise (the entry is committed and changes nothing). A transfer moves
//! the money or, rejected, nothing: both balances change in one `apply`.
//!
//! Every applied command appends its transaction id (`tx`) to the history of
//! each account it changed (the last [`HISTORY_LEN`] ids). The ledger does
//! not refuse a `tx` it has seen: retries are made safe by the client
//! session (exactly once, walship's job), and the history shows whether
//! they were; `tests/ledger.rs` counts duplicates in it.
//!
//! Run two of them against a local ZooKeeper: README.md, "Embedding walship".
//! Logs go to stderr, filtered by RUST_LOG (default `warn,openraft=off`).

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::BufRead;
use std::sync::Arc;

use clap::Parser;
use serde::Deserialize;
use serde::Serialize;
use walship::app::Application;
use walship::app::SnapshotWriter;

/// How many transaction ids each account keeps in its history.
pub const HISTORY_LEN: usize = 4096;

/// A command: every one names its transaction id, `tx`, chosen by the client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    Open {
        tx: String,
        account: String,
    },
    Deposit {
        tx: String,
        account: String,
        amount: u64,
    },
    Withdraw {
        tx: String,
        account: String,
        amount: u64,
    },
    Transfer {
        tx: String,
        from: String,
        to: String,
        amount: u64,
    },
}

/// A read-only question (answered linearizably unless asked `?stale=true`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "q", rename_all = "snake_case")]
pub enum Query {
    /// → `{"account":"alice","balance":70}`
    Balance { account: String },
    /// → `{"alice":70,"bob":50}`
    Balances,
    /// → the account's applied transaction ids, oldest first.
    History { account: String },
}

/// One account.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: u64,
    /// The ids of the last [`HISTORY_LEN`] commands applied to it.
    pub history: VecDeque<String>,
}

/// The replicated state.
///
/// Snapshots freeze it by cloning an `Arc` (copy-on-write): `snapshot` runs
/// while applying is paused, so it must be cheap whatever the size, and the
/// writer it returns streams the frozen map while `apply` goes on. `apply`
/// changes the map through `Arc::make_mut`, which copies it only when a
/// snapshot writer still holds the old one: at most one copy per snapshot,
/// paid by the first command after it. (Cloning the map in `snapshot` would
/// be as simple but would pay that copy with applying paused, every time.
/// For a large state, a persistent map, e.g. the `im` crate's, would make
/// each copy O(log n) instead of O(n).)
#[derive(Default)]
pub struct Ledger {
    accounts: Arc<BTreeMap<String, Account>>,
}

/// The snapshot's first line: the format, so a later version can read it.
const SNAPSHOT_HEADER: &str = "walship-ledger-v1";

fn insufficient(account: &str, balance: u64, amount: u64) -> String {
    format!("insufficient funds: {account} has {balance}, needs {amount}")
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a ledger request: {e}"))
}

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("ledger answers serialise")
}

impl Ledger {
    fn balance(&self, account: &str) -> Result<u64, String> {
        self.accounts
            .get(account)
            .map(|a| a.balance)
            .ok_or_else(|| format!("no such account: {account}"))
    }

    /// Whether `command` can be carried out on this state, and if so the
    /// balances it leaves (account → new balance). Shared by `validate`
    /// (on a state that may lag) and `apply` (the state that counts).
    fn check(&self, command: &Command) -> Result<Vec<(String, u64)>, String> {
        match command {
            Command::Open { account, .. } => match self.accounts.contains_key(account) {
                true => Err(format!("account {account} exists")),
                false => Ok(vec![(account.clone(), 0)]),
            },
            Command::Deposit { account, amount, .. } => {
                let balance = self.balance(account)?;
                let new = balance
                    .checked_add(*amount)
                    .ok_or_else(|| format!("{account}'s balance would overflow"))?;
                Ok(vec![(account.clone(), new)])
            }
            Command::Withdraw { account, amount, .. } => {
                let balance = self.balance(account)?;
                let new = balance
                    .checked_sub(*amount)
                    .ok_or_else(|| insufficient(account, balance, *amount))?;
                Ok(vec![(account.clone(), new)])
            }
            Command::Transfer { from, to, amount, .. } => {
                if from == to {
                    return Err(format!("a transfer from {from} to itself"));
                }
                let (from_balance, to_balance) = (self.balance(from)?, self.balance(to)?);
                let from_new = from_balance
                    .checked_sub(*amount)
                    .ok_or_else(|| insufficient(from, from_balance, *amount))?;
                let to_new = to_balance
                    .checked_add(*amount)
                    .ok_or_else(|| format!("{to}'s balance would overflow"))?;
                Ok(vec![(from.clone(), from_new), (to.clone(), to_new)])
            }
        }
    }
}

fn tx_of(command: &Command) -> &str {
    match command {
        Command::Open { tx, .. }
        | Command::Deposit { tx, .. }
        | Command::Withdraw { tx, .. }
        | Command::Transfer { tx, .. } => tx,
    }
}

impl Application for Ledger {
    /// On the leader, before logging: a command that cannot succeed on the
    /// state seen here is refused and costs nothing. walship confirms a
    /// refusal on an up-to-date state before answering (so a deposit
    /// acknowledged a moment ago is counted); `apply` decides for real.
    fn validate(&self, command: &[u8]) -> Result<(), String> {
        self.check(&parse(command)?).map(|_| ())
    }

    /// All or nothing: every check is made before anything changes, so a
    /// rejected transfer (or any rejection) leaves the state as it was.
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, String> {
        let command: Command = parse(command)?;
        let changes = self.check(&command)?;
        let tx = tx_of(&command);
        let accounts = Arc::make_mut(&mut self.accounts);
        for (name, balance) in &changes {
            let account = accounts.entry(name.clone()).or_default();
            account.balance = *balance;
            if account.history.len() == HISTORY_LEN {
                account.history.pop_front();
            }
            account.history.push_back(tx.to_string());
        }
        // The answer: the balances this command left.
        Ok(json(&changes.into_iter().collect::<BTreeMap<_, _>>()))
    }

    fn query(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        match parse(query)? {
            Query::Balance { account } => {
                let balance = self.balance(&account)?;
                Ok(json(&serde_json::json!({ "account": account, "balance": balance })))
            }
            Query::Balances => Ok(json(
                &self
                    .accounts
                    .iter()
                    .map(|(n, a)| (n, a.balance))
                    .collect::<BTreeMap<_, _>>(),
            )),
            Query::History { account } => match self.accounts.get(&account) {
                Some(a) => Ok(json(&a.history)),
                None => Err(format!("no such account: {account}")),
            },
        }
    }

    /// Freezes the state (an `Arc` clone, O(1)) and streams it: a header
    /// line, then one JSON line per account, written as it goes.
    fn snapshot(&self) -> SnapshotWriter {
        let frozen = Arc::clone(&self.accounts);
        Box::new(move |out| {
            writeln!(out, "{SNAPSHOT_HEADER}")?;
            for (name, account) in frozen.iter() {
                serde_json::to_writer(&mut *out, &(name, account))?;
                out.write_all(b"\n")?;
            }
            Ok(())
        })
    }

    /// Reads the stream line by line into a new map; only a whole, valid
    /// snapshot replaces the state.
    fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
        let mut lines = std::io::BufReader::new(snapshot).lines();
        match lines.next() {
            Some(Ok(header)) if header == SNAPSHOT_HEADER => {}
            other => return Err(format!("not a {SNAPSHOT_HEADER} snapshot: starts with {other:?}")),
        }
        let mut accounts = BTreeMap::new();
        for line in lines {
            let line = line.map_err(|e| format!("reading the snapshot: {e}"))?;
            let (name, account): (String, Account) =
                serde_json::from_str(&line).map_err(|e| format!("a bad snapshot line: {e}"))?;
            accounts.insert(name, account);
        }
        self.accounts = Arc::new(accounts);
        Ok(())
    }
}

#[derive(Parser)]
#[command(about = "A walship node carrying a replicated bank ledger (see the source's header)")]
struct Args {
    #[command(flatten)]
    node: walship::cli::NodeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Args::parse().node.into_config()?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,openraft=off".into()),
        )
        .init();
    // Binds --listen and serves the HTTP API (application commands and
    // queries included) and the peer RPC, as `walship node` does.
    let events = walship::events::Events::new();
    walship::start(cfg, Some(Box::new(Ledger::default())), events)
        .await?
        .run_until_signal()
        .await
}
