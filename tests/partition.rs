//! Scenario S7 of witness-protocol.md: the two nodes cut off from each other
//! while both still reach ZooKeeper. Each node advertises a fault-injecting
//! proxy (`walship_testkit::faultproxy`) in front of its real listener, so every byte
//! between the nodes — Raft RPC and forwarded client requests — goes through
//! a proxy, and cutting the proxies really cuts that traffic. ZooKeeper and
//! the test's own clients (real listen addresses) are untouched.
//!
//! What must hold: never two leaders in one term, never two ready leaders at
//! once, no log index acknowledged twice, progress through whichever node
//! leads, and after healing every acknowledged write readable with its last
//! acknowledged value through both nodes, whose state machines agree.

mod common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::ensure;
use anyhow::Context;
use anyhow::Result;
use common::cluster::ClusterContext;
use common::writer::Outcome;
use common::Cluster;
use common::Deadline;
use common::NodeClient;
use common::Reply;
use common::Setup;
use common::Writer;
use common::WriterLog;
use common::WriterOptions;
use walship_testkit::faultproxy::CutMode;
use walship_testkit::faultproxy::ProxyStats;

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each test keeps the nodes apart.
const CUT_FOR: Duration = Duration::from_secs(10);
/// Acks to see before the cut and after healing.
const STEP_ACKS: u64 = 30;
/// Pause between two looks at the cluster during the cut.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Per-request limit of those looks (a blackholed node must not stall them).
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(500);
/// During a cut, some write must be acknowledged at least this often.
const MAX_PROGRESS_GAP: Duration = Duration::from_secs(5);
/// And at least this many in `CUT_FOR` (the brief's "20 in 10 s").
const MIN_ACKS_DURING_CUT: usize = 20;

/// How hard the writers push during a run.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// Each writer sends its next write as soon as the last one is answered.
    Full,
    /// Each writer starts a write at most every this often (a light load).
    Paced(Duration),
}

fn writer(api: NodeClient, prefix: &str, load: Load) -> Writer {
    let mut opts = WriterOptions::new(prefix);
    // Overwrites, so "last acknowledged value" is what gets checked.
    opts.key_space = Some(100);
    if let Load::Paced(interval) = load {
        opts.interval = Some(interval);
        // A client that gives up on a hung request and tries again, as a
        // real one would: a write the node forwarded into the blackhole
        // otherwise holds its writer for the node's whole forward timeout
        // (write timeout + 1 s), whoever leads meanwhile.
        opts.request_timeout = Duration::from_secs(2);
    }
    Writer::start(vec![api], opts)
}

/// One look at the cluster during a cut.
struct Sample {
    at: Duration,
    /// (node, term) of every node whose status says it leads.
    claims: Vec<(u64, u64)>,
    /// Nodes that claim to lead and answer `/health/ready` with 200.
    ready_leaders: Vec<u64>,
    /// The highest term any node reported.
    max_term: u64,
    text: String,
}

/// What the samples of one cut show.
struct Observation {
    samples: Vec<Sample>,
    /// Per term, every node seen claiming to lead in it.
    leaders_by_term: BTreeMap<u64, BTreeSet<u64>>,
    /// Times the ready leader changed (ignoring samples with none).
    ready_leader_changes: usize,
    /// Lowest and highest term seen.
    terms: (u64, u64),
    /// Samples in which each node was the ready leader.
    ready_samples: BTreeMap<u64, usize>,
}

impl Observation {
    fn from_samples(samples: Vec<Sample>) -> Observation {
        let mut leaders_by_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        let mut ready_samples: BTreeMap<u64, usize> = BTreeMap::new();
        let mut last_ready = None;
        let mut ready_leader_changes = 0;
        for s in &samples {
            for &(id, term) in &s.claims {
                leaders_by_term.entry(term).or_default().insert(id);
            }
            if let [id] = s.ready_leaders.as_slice() {
                *ready_samples.entry(*id).or_default() += 1;
                if last_ready.is_some_and(|l| l != *id) {
                    ready_leader_changes += 1;
                }
                last_ready = Some(*id);
            }
        }
        let terms = (
            leaders_by_term.keys().next().copied().unwrap_or(0),
            leaders_by_term.keys().last().copied().unwrap_or(0),
        );
        Observation {
            samples,
            leaders_by_term,
            ready_leader_changes,
            terms,
            ready_samples,
        }
    }

    /// Raft's election safety, as far as the samples show it.
    fn check_one_leader_per_term(&self) -> Result<()> {
        for (term, ids) in &self.leaders_by_term {
            ensure!(ids.len() == 1, "two leaders in term {term}: {ids:?}");
        }
        Ok(())
    }

    /// Samples in which two nodes claimed to lead and both answered
    /// `/health/ready` 200. Not a safety violation (the one with the older
    /// term can commit nothing, and its reads confirm with W first), but
    /// `/health/ready` then misleads a load balancer; see `s7_*` reports.
    fn two_ready(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.ready_leaders.len() > 1).collect()
    }

    /// Terms in which the samples saw a leader, minus the first.
    fn elections(&self) -> usize {
        self.leaders_by_term.len().saturating_sub(1)
    }

    fn max_term(&self) -> u64 {
        self.samples.iter().map(|s| s.max_term).max().unwrap_or(0)
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let span = self.samples.last().map(|s| s.at).unwrap_or_default();
        let none = self.samples.iter().filter(|s| s.ready_leaders.is_empty()).count();
        write!(
            f,
            "{} samples over {span:.1?}: leaders seen in terms {}..={} ({} sampled elections; highest term {}), \
             ready-leader changes {}, ready leader per sample {:?}, no ready leader in {none} samples, \
             two ready leaders in {} samples",
            self.samples.len(),
            self.terms.0,
            self.terms.1,
            self.elections(),
            self.max_term(),
            self.ready_leader_changes,
            self.ready_samples,
            self.two_ready().len()
        )
    }
}

/// Looks at the cluster every `SAMPLE_EVERY` for `period`.
async fn observe(c: &mut Cluster, since: Instant, period: Duration) -> Observation {
    let end = Instant::now() + period;
    let mut samples = Vec::new();
    while Instant::now() < end {
        let statuses = c.statuses().await;
        let mut claims = Vec::new();
        let mut ready_leaders = Vec::new();
        let mut text = Vec::new();
        let mut max_term = 0;
        for (id, status) in &statuses {
            text.push(format!("node {id}: {status}"));
            if let Reply::Success { value, .. } = status {
                max_term = max_term.max(value.term.unwrap_or(0));
                if value.is_leader() {
                    claims.push((*id, value.term.unwrap_or(0)));
                    if c.client(*id).with_timeout(SAMPLE_TIMEOUT).ready().await.is_success() {
                        ready_leaders.push(*id);
                    }
                }
            }
        }
        samples.push(Sample {
            at: since.elapsed(),
            claims,
            ready_leaders,
            max_term,
            text: text.join("; "),
        });
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    Observation::from_samples(samples)
}

/// Acknowledgements of both writers inside [from, to], by completion time.
fn acks_between(logs: &[&WriterLog], from: Instant, to: Instant) -> Vec<Instant> {
    let mut acks: Vec<Instant> = logs
        .iter()
        .flat_map(|l| l.ops.iter())
        .filter(|o| matches!(o.outcome, Outcome::Acked { .. }) && o.end >= from && o.end <= to)
        .map(|o| o.end)
        .collect();
    acks.sort();
    acks
}

/// The longest stretch in [from, to] with no acknowledged write.
fn longest_gap(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut points = vec![from];
    points.extend_from_slice(acks);
    points.push(to);
    points
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

/// One log, in real-time order: a write acknowledged (at log index `i`)
/// before another write started must sit below it in the log. Two leaders
/// committing on their own would break this across the two writers. (Group
/// commit puts concurrent writes in one entry, so equal indexes are fine for
/// writes that overlapped in time.)
fn check_real_time_order(logs: &[&WriterLog]) -> Result<()> {
    let mut acked: Vec<(Instant, Instant, u64, &str)> = logs
        .iter()
        .flat_map(|l| l.ops.iter())
        .filter_map(|o| match o.outcome {
            Outcome::Acked { index } => Some((o.start, o.end, index, o.value.as_str())),
            _ => None,
        })
        .collect();
    let mut by_end = acked.clone();
    by_end.sort_by_key(|a| a.1);
    acked.sort_by_key(|a| a.0);
    // Walk the writes by start time, folding in every write that ended before.
    let mut done = by_end.iter().peekable();
    let mut highest: Option<(u64, &str)> = None;
    for (start, _, index, value) in &acked {
        while let Some((_, end, i, v)) = done.peek() {
            if end >= start {
                break;
            }
            if highest.is_none_or(|(h, _)| *i > h) {
                highest = Some((*i, v));
            }
            done.next();
        }
        if let Some((h, v)) = highest {
            ensure!(
                *index > h,
                "{value:?} was acknowledged at log index {index}, but {v:?} was acknowledged at index {h} \
                 before {value:?} was even sent"
            );
        }
    }
    Ok(())
}

/// Outcomes of one writer's attempts that completed inside [from, to].
fn outcomes_between(log: &WriterLog, from: Instant, to: Instant) -> (usize, usize, usize) {
    let ops = log.ops.iter().filter(|o| o.end >= from && o.end <= to);
    ops.fold((0, 0, 0), |(a, r, u), o| match o.outcome {
        Outcome::Acked { .. } => (a + 1, r, u),
        Outcome::Rejected { .. } => (a, r + 1, u),
        Outcome::Unknown => (a, r, u + 1),
    })
}

/// After healing: every acknowledged write of each log is readable through
/// both nodes (linearizable), both state machines hold it once caught up,
/// and they agree key by key.
async fn verify_after_heal(c: &mut Cluster, logs: &[&WriterLog]) -> Result<()> {
    for log in logs {
        for id in [1, 2] {
            let api = c.client(id);
            log.verify_with(|key| read_retrying(api.clone(), key))
                .await
                .with_context(|| format!("linearizable reads through node {id}"))?;
        }
    }
    let leader = c.wait_for_leader(LEADER_TIMEOUT).await?;
    c.wait_caught_up_with(leader, CATCH_UP_TIMEOUT).await?;
    for log in logs {
        for id in [1, 2] {
            log.verify_stale(&c.client(id))
                .await
                .with_context(|| format!("local state of node {id}"))?;
        }
        for key in log.expected().keys() {
            let a = c.client(1).get_stale(key).await.into_result()?;
            let b = c.client(2).get_stale(key).await.into_result()?;
            ensure!(a == b, "the nodes diverge on {key}: {a:?} vs {b:?}");
        }
    }
    Ok(())
}

/// A linearizable read, tried again while the answer is "not now" (503, 504,
/// no response): right after healing, the node that stood for election in
/// vain during the cut has the higher term and forces one more election, and
/// a leadership check can time out on a busy ZooKeeper. Reads are idempotent.
async fn read_retrying(api: NodeClient, key: String) -> Reply<Option<String>> {
    let deadline = Deadline::after(LEADER_TIMEOUT, format!("a read of {key}"));
    loop {
        let reply = api.get(&key).await;
        let transient = matches!(&reply, Reply::NoResponse { .. })
            || matches!(&reply, Reply::Failed { status, .. } if *status == 503 || *status == 504);
        if !transient || deadline.tick(&reply).await.is_err() {
            return reply;
        }
    }
}

/// What one cut did, for the assertions and the report.
struct CutRun {
    obs: Observation,
    /// Nodes whose proxy was cut, with its counters at the cut and at heal.
    cut_proxies: Vec<(u64, ProxyStats, ProxyStats)>,
    logs: Vec<WriterLog>,
    cut_at: Instant,
    healed_at: Instant,
}

/// Starts a partitionable cluster, writes through both nodes, cuts with
/// `cut` for `CUT_FOR` while observing, heals, waits for both writers to be
/// acknowledged again, and checks everything that must hold in any cut.
async fn run_cut(name: &str, load: Load, cut: impl Fn(&Cluster, u64)) -> Result<(Cluster, CutRun)> {
    let mut c = Setup::test(name).partitionable().start().await?;
    let run = async {
        let leader_before = c.wait_for_leader(LEADER_TIMEOUT).await?;
        let w1 = writer(c.client(1), &format!("{name}-via1"), load);
        let w2 = writer(c.client(2), &format!("{name}-via2"), load);
        w1.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;
        w2.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT).await?;
        // The follower's writes were forwarded: the proxies carry real traffic.
        for (id, s) in c.proxy_stats() {
            ensure!(s.bytes_to_upstream > 0, "nothing went through node {id}'s proxy: {s}");
        }

        let term_at_cut = c.client(leader_before).status().await.into_result()?.term.unwrap_or(0);
        let cut_at = Instant::now();
        cut(&c, leader_before);
        let cut_ids: Vec<u64> = [1, 2]
            .into_iter()
            .filter(|&id| c.proxy(id).cut_mode().is_some())
            .collect();
        let stats_at_cut = c.proxy_stats();
        let obs = observe(&mut c, cut_at, CUT_FOR).await;
        // Still cut: the harness finds exactly one ready leader.
        let leader_in_cut = c
            .wait_for_leader(LEADER_TIMEOUT)
            .await
            .context("no single ready leader while cut")?;
        let stats_at_end = c.proxy_stats();
        c.heal_nodes();
        let healed_at = Instant::now();
        let won = elections_won(&c, term_at_cut)?;
        let cut_secs = (healed_at - cut_at).as_secs_f64();
        let takeovers = won.windows(2).filter(|w| w[0].1 != w[1].1).count()
            + usize::from(won.first().is_some_and(|&(_, id)| id != leader_before));
        eprintln!(
            "{name}: {load:?} load, cut {cut_ids:?} with node {leader_before} leading (term {term_at_cut}): {obs}"
        );
        eprintln!(
            "{name}: FLAPPING: {} elections won in {cut_secs:.1} s of cut ({:.1} per 10 s), {takeovers} leader changes \
             ({:.1} per 10 s); node {leader_in_cut} led at the end; (term, leader): {won:?}",
            won.len(),
            won.len() as f64 * 10.0 / cut_secs,
            takeovers as f64 * 10.0 / cut_secs
        );
        let mut cut_proxies = Vec::new();
        for ((id, a), (_, b)) in stats_at_cut.iter().zip(&stats_at_end) {
            eprintln!("{name}: proxy of node {id}: at the cut {a}; at heal {b}");
            if cut_ids.contains(id) {
                cut_proxies.push((*id, *a, *b));
            }
        }

        c.wait_for_leader(LEADER_TIMEOUT)
            .await
            .context("no leader after healing")?;
        w1.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT)
            .await
            .context("writes through node 1 did not resume after healing")?;
        w2.wait_for_more_acks(STEP_ACKS, CATCH_UP_TIMEOUT)
            .await
            .context("writes through node 2 did not resume after healing")?;
        let logs = vec![w1.stop().await?, w2.stop().await?];
        let refs: Vec<&WriterLog> = logs.iter().collect();
        for (i, log) in logs.iter().enumerate() {
            let (a, r, u) = outcomes_between(log, cut_at, healed_at);
            eprintln!(
                "{name}: writes via node {} during the cut: {a} acked, {r} rejected, {u} unknown; \
                 in all: {} acked, {} rejected, {} unknown",
                i + 1,
                log.acked(),
                log.rejected(),
                log.unknown()
            );
        }

        obs.check_one_leader_per_term()?;
        for s in obs.two_ready() {
            eprintln!("{name}: two ready leaders {:.1?} into the cut: {}", s.at, s.text);
        }
        if won.is_empty() && cut_ids.contains(&leader_before) {
            // Nobody else led, and forwarding to the leader was cut: the
            // follower cannot have acknowledged a write it received during
            // the cut. (In a one-way cut it still reaches the leader, and
            // writes it forwards are acknowledged by the leader: they are
            // checked with all the others below.)
            let follower = Cluster::other(leader_before);
            let log = &logs[follower as usize - 1];
            let acked: Vec<&str> = log
                .ops
                .iter()
                .filter(|o| o.start >= cut_at && o.end <= healed_at && matches!(o.outcome, Outcome::Acked { .. }))
                .map(|o| o.value.as_str())
                .collect();
            ensure!(
                acked.is_empty(),
                "node {follower} never led during the cut but acknowledged {acked:?}"
            );
        }
        check_real_time_order(&refs)?;
        verify_after_heal(&mut c, &refs).await?;
        Ok(CutRun {
            obs,
            cut_proxies,
            logs,
            cut_at,
            healed_at,
        })
    }
    .await
    .in_cluster(&c)?;
    Ok((c, run))
}

/// Every election won after `term` ((term, node), by term), from the nodes'
/// logs: a node that wins writes "leading; leader znode held term=N". Exact
/// where the status samples may miss a short reign.
fn elections_won(c: &Cluster, term: u64) -> Result<Vec<(u64, u64)>> {
    const MARK: &str = "leading; leader znode held term=";
    let mut won = Vec::new();
    for id in [1, 2] {
        let path = c.node(id).log_path();
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        for line in text.lines() {
            let Some(at) = line.find(MARK) else { continue };
            let digits: String = line[at + MARK.len()..]
                .chars()
                .take_while(|ch| ch.is_ascii_digit())
                .collect();
            match digits.parse::<u64>() {
                Ok(t) if t > term => won.push((t, id)),
                Ok(_) => {}
                Err(_) => bail!("unexpected line in {}: {line}", path.display()),
            }
        }
    }
    won.sort();
    Ok(won)
}

/// The cut proxies forwarded nothing while cut, and the nodes did try to get
/// through them (heartbeats, votes, forwarded writes): the traffic between
/// the nodes really went through the proxies and really stopped.
fn assert_cut_was_real(run: &CutRun) -> Result<()> {
    ensure!(!run.cut_proxies.is_empty(), "no proxy was cut");
    for (id, at_cut, at_heal) in &run.cut_proxies {
        ensure!(
            at_heal.bytes_to_upstream == at_cut.bytes_to_upstream
                && at_heal.bytes_from_upstream == at_cut.bytes_from_upstream,
            "node {id}'s proxy forwarded bytes while cut: at the cut {at_cut}; at heal {at_heal}"
        );
        let blocked = at_heal.cut_connections - at_cut.cut_connections;
        ensure!(
            blocked > 0,
            "nothing tried to reach node {id} through its cut proxy ({at_heal}): is the traffic going around it?"
        );
    }
    Ok(())
}

/// Progress during the cut, through whichever node leads.
fn assert_progress(name: &str, run: &CutRun) -> Result<()> {
    let refs: Vec<&WriterLog> = run.logs.iter().collect();
    let acks = acks_between(&refs, run.cut_at, run.healed_at);
    let gap = longest_gap(&acks, run.cut_at, run.healed_at);
    eprintln!(
        "{name}: {} writes acknowledged during the {:.1?} cut; longest stretch without one: {gap:.1?}",
        acks.len(),
        run.healed_at - run.cut_at
    );
    ensure!(
        acks.len() >= MIN_ACKS_DURING_CUT,
        "only {} writes acknowledged during the cut (want {MIN_ACKS_DURING_CUT}); {}",
        acks.len(),
        run.obs
    );
    ensure!(
        gap <= MAX_PROGRESS_GAP,
        "no write acknowledged for {gap:.1?} during the cut; {}",
        run.obs
    );
    Ok(())
}

/// Light load for the flapping runs: with little being written, a node that
/// adopts W's log is rarely behind W by the time it asks for W's vote, so it
/// wins elections; under full load it almost never does.
const LIGHT: Load = Load::Paced(Duration::from_millis(100));

/// S7 with connections refused: the nodes cannot hear each other, both still
/// reach ZooKeeper. One leader at a time; writes keep being acknowledged;
/// nothing acknowledged is lost; the nodes agree afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_cut_refuse_full_load() -> Result<()> {
    let (c, run) = run_cut("s7-refuse", Load::Full, |c, _| c.cut_nodes(CutMode::Refuse)).await?;
    assert_cut_was_real(&run)
        .and_then(|_| assert_progress("s7-refuse", &run))
        .in_cluster(&c)
}

/// S7 with the link blackholed: connections hang instead of failing, as in a
/// real partition, so every call between the nodes times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_cut_blackhole_full_load() -> Result<()> {
    let (c, run) = run_cut("s7-blackhole", Load::Full, |c, _| c.cut_nodes(CutMode::Blackhole)).await?;
    assert_cut_was_real(&run)
        .and_then(|_| assert_progress("s7-blackhole", &run))
        .in_cluster(&c)
}

/// S7 under a light load: the follower, cut off from a leader whose
/// ZooKeeper session is fine, takes over whenever it wins W's vote, and the
/// deposed leader does the same in turn. That is allowed and safe; what must
/// hold is one leader at a time, no loss, and progress through whichever
/// node leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_cut_light_load_progress_continues() -> Result<()> {
    let (c, run) = run_cut("s7-light", LIGHT, |c, _| c.cut_nodes(CutMode::Blackhole)).await?;
    assert_cut_was_real(&run)
        .and_then(|_| assert_progress("s7-light", &run))
        .in_cluster(&c)
}

/// S7, one way, light load: only the calls the leader makes to the follower
/// are cut (heartbeats and appends), so the follower hears nothing and
/// stands for election, while its own calls to the leader (votes, forwarded
/// writes) still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_one_way_cut_light_load_progress_continues() -> Result<()> {
    let (c, run) = run_cut("s7-oneway", LIGHT, |c, leader| {
        c.cut_node_inbound(Cluster::other(leader), CutMode::Blackhole)
    })
    .await?;
    assert_cut_was_real(&run)
        .and_then(|_| assert_progress("s7-oneway", &run))
        .in_cluster(&c)
}
