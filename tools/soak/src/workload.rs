//! The workload: `--clients` concurrent clients, each one operation at a
//! time, over a small key space (`--keys`) so that puts, deletes,
//! compare-and-sets and linearizable reads contend. Every request goes to a
//! random node (a follower forwards to the leader). Every operation is
//! recorded with its invocation and completion times and its result.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use super::ledger;
use super::recorder::Clock;
use super::recorder::OpKind;
use super::recorder::OpRecord;
use super::recorder::Outcome;
use super::recorder::Recorder;
use super::rng::Rng;
use walship::client::NodeClient;
use walship::client::Reply;

/// Pause after an operation that was not acknowledged, so a client does not
/// spin while there is no leader (pacing, not synchronisation).
const BACKOFF: Duration = Duration::from_millis(25);
/// How often a paused client looks whether it may go on.
const PAUSED_POLL: Duration = Duration::from_millis(10);

/// Live counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub writes: AtomicU64,
    pub writes_ok: AtomicU64,
    pub writes_fail: AtomicU64,
    pub writes_unknown: AtomicU64,
    pub cas_swapped: AtomicU64,
    pub cas_refused: AtomicU64,
    pub reads: AtomicU64,
    pub reads_ok: AtomicU64,
    pub reads_fail: AtomicU64,
}

impl Counters {
    pub fn ops(&self) -> u64 {
        self.writes.load(Ordering::Relaxed) + self.reads.load(Ordering::Relaxed)
    }

    pub fn acked(&self) -> u64 {
        self.writes_ok.load(Ordering::Relaxed)
    }
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub counters: Arc<Counters>,
    /// Each client's operation in flight, to record as unknown on abort.
    inflight: Arc<Mutex<Vec<Option<OpRecord>>>>,
    recorder: Recorder,
    clock: Clock,
}

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub clients: u32,
    pub keys: u32,
    /// Values are padded to this many bytes (0: just the tag).
    pub value_bytes: usize,
    pub seed: u64,
}

/// A client's value: its unique tag, padded with `~` to `value_bytes`.
pub fn value_of(tag: String, value_bytes: usize) -> String {
    let mut v = tag;
    if v.len() < value_bytes {
        v.extend(std::iter::repeat_n('~', value_bytes - v.len()));
    }
    v
}

/// Key `i` of the key space.
pub fn key_name(i: u64) -> String {
    format!("k{i:03}")
}

impl Workload {
    pub fn start(cfg: &WorkloadConfig, nodes: Vec<NodeClient>, recorder: Recorder, clock: Clock) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let inflight = Arc::new(Mutex::new(vec![None; cfg.clients as usize]));
        let nodes = Arc::new(nodes);
        let tasks = (0..cfg.clients)
            .map(|client| {
                let c = ClientLoop {
                    client,
                    keys: cfg.keys as u64,
                    value_bytes: cfg.value_bytes,
                    rng: Rng::fork(cfg.seed, 1 + client as u64),
                    nodes: Arc::clone(&nodes),
                    recorder: recorder.clone(),
                    clock,
                    stop: Arc::clone(&stop),
                    paused: Arc::clone(&paused),
                    counters: Arc::clone(&counters),
                    inflight: Arc::clone(&inflight),
                    seen: HashMap::new(),
                };
                tokio::spawn(c.run())
            })
            .collect();
        Workload {
            stop,
            paused,
            tasks,
            counters,
            inflight,
            recorder,
            clock,
        }
    }

    /// The ledger workload instead (`--workload ledger`, see `ledger`):
    /// the same pause, stop and counters (a command applied counts as an
    /// acknowledged write), its records in the returned log. The accounts
    /// must be open already (`ledger::open_accounts`).
    pub fn start_ledger(
        cfg: &WorkloadConfig,
        accounts: u64,
        retries: ledger::Retries,
        nodes: Vec<NodeClient>,
        recorder: Recorder,
        clock: Clock,
    ) -> (Workload, ledger::LedgerLog) {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let log = ledger::LedgerLog::default();
        let tasks = (0..cfg.clients)
            .map(|client| {
                // Half the clients try node 2 first, so followers forward too.
                let mut order = nodes.clone();
                order.rotate_left(client as usize % nodes.len());
                let c = ledger::LedgerClient {
                    client,
                    accounts,
                    retries,
                    rng: Rng::fork(cfg.seed, 1 + client as u64),
                    nodes: order,
                    stop: Arc::clone(&stop),
                    paused: Arc::clone(&paused),
                    counters: Arc::clone(&counters),
                    log: Arc::clone(&log),
                };
                tokio::spawn(c.run())
            })
            .collect();
        let workload = Workload {
            stop,
            paused,
            tasks,
            counters,
            // Ledger commands are not key-value operations: none to record
            // as unknown on abort.
            inflight: Arc::new(Mutex::new(Vec::new())),
            recorder,
            clock,
        };
        (workload, log)
    }

    /// Holds (or releases) every client before its next operation; one in
    /// flight finishes. A fault that needs the next log entries to be its own
    /// writes (see `faults`) pauses the workload for that moment.
    pub fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
    }

    /// Lets every client finish its operation in flight, then returns.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Stops at once (Ctrl-C): operations in flight are recorded as unknown.
    pub fn abort(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
        let now = self.clock.now_ns();
        for op in self.inflight.lock().expect("inflight lock").iter_mut() {
            if let Some(mut op) = op.take() {
                op.result = Outcome::Unknown;
                op.complete_ns = now.max(op.invoke_ns);
                self.recorder.record(op);
            }
        }
    }
}

struct ClientLoop {
    client: u32,
    keys: u64,
    value_bytes: usize,
    rng: Rng,
    nodes: Arc<Vec<NodeClient>>,
    recorder: Recorder,
    clock: Clock,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    counters: Arc<Counters>,
    inflight: Arc<Mutex<Vec<Option<OpRecord>>>>,
    /// The last value this client saw per key (for its CAS expectations).
    seen: HashMap<String, Option<String>>,
}

impl ClientLoop {
    async fn run(mut self) {
        let mut seq = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            if self.paused.load(Ordering::SeqCst) {
                tokio::time::sleep(PAUSED_POLL).await;
                continue;
            }
            seq += 1;
            let key = key_name(self.rng.below(self.keys));
            let node = &self.nodes[self.rng.below(self.nodes.len() as u64) as usize];
            let value = value_of(format!("c{}-{seq}", self.client), self.value_bytes);
            let roll = self.rng.below(100);
            let mut op = OpRecord {
                op: OpKind::Get,
                key: key.clone(),
                value: None,
                expect: None,
                result: Outcome::Unknown,
                cas_ok: None,
                read: None,
                client: self.client,
                invoke_ns: 0,
                complete_ns: 0,
            };
            match roll {
                0..35 => {
                    op.op = OpKind::Put;
                    op.value = Some(value);
                }
                35..42 => op.op = OpKind::Delete,
                42..62 => {
                    op.op = OpKind::Cas;
                    op.expect = match self.seen.get(&key) {
                        Some(v) if self.rng.percent(80) => v.clone(),
                        _ => None,
                    };
                    op.value = (!self.rng.percent(10)).then_some(value);
                }
                _ => {}
            }
            op.invoke_ns = self.clock.now_ns();
            self.inflight.lock().expect("inflight lock")[self.client as usize] = Some(op.clone());
            let (result, observed) = match op.op {
                OpKind::Put => write_result(node.put(&key, op.value.as_deref().unwrap_or_default()).await),
                OpKind::Delete => write_result(node.delete(&key).await),
                OpKind::Cas => match node.cas(&key, op.expect.as_deref(), op.value.as_deref()).await {
                    Reply::Success { value: a, .. } => {
                        op.cas_ok = Some(a.ok);
                        op.read = a.current.clone();
                        (Outcome::Ok, Some(a.current))
                    }
                    other => (other.outcome(), None),
                },
                OpKind::Get => match node.get(&key).await {
                    Reply::Success { value: v, .. } => {
                        op.read = v.clone();
                        (Outcome::Ok, Some(v))
                    }
                    other => (other.outcome(), None),
                },
            };
            op.complete_ns = self.clock.now_ns();
            op.result = result;
            self.inflight.lock().expect("inflight lock")[self.client as usize] = None;
            self.count(&op);
            match (op.op, observed) {
                (_, Some(v)) => {
                    self.seen.insert(key, v);
                }
                (OpKind::Put, None) if result == Outcome::Ok => {
                    self.seen.insert(key, op.value.clone());
                }
                (OpKind::Delete, None) if result == Outcome::Ok => {
                    self.seen.insert(key, None);
                }
                _ => {}
            }
            self.recorder.record(op);
            if result != Outcome::Ok {
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }

    fn count(&self, op: &OpRecord) {
        let c = &self.counters;
        let bump = |a: &AtomicU64| {
            a.fetch_add(1, Ordering::Relaxed);
        };
        if op.op == OpKind::Get {
            bump(&c.reads);
            match op.result {
                Outcome::Ok => bump(&c.reads_ok),
                _ => bump(&c.reads_fail),
            }
            return;
        }
        bump(&c.writes);
        match op.result {
            Outcome::Ok => bump(&c.writes_ok),
            Outcome::Fail => bump(&c.writes_fail),
            Outcome::Unknown => bump(&c.writes_unknown),
        }
        match op.cas_ok {
            Some(true) => bump(&c.cas_swapped),
            Some(false) => bump(&c.cas_refused),
            None => {}
        }
    }
}

fn write_result<T>(a: Reply<T>) -> (Outcome, Option<Option<String>>) {
    (a.outcome(), None)
}
