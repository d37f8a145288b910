//! The embedding API in-process: two `Node`s started with
//! `Node::start_with` and a counter application, a private ZooKeeper, their
//! HTTP routers served on loopback listeners (as `walship node` does).
//! Lifecycle events (leader change, peer down/up, snapshots, adoption) and
//! commands proposed through `Node::propose` applied on both applications,
//! across a hand-over and a rebirth from ZooKeeper's snapshot.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use tokio::sync::broadcast;
use walship::app::Application;
use walship::events::Event;
use walship::events::Events;
use walship::events::SnapshotSource;
use walship::node::Node;
use walship::proposer::ProposeError;
use walship::types::NodeId;

/// The application: a counter. A command is a little-endian u64 to add;
/// its result the new total. Adding `BOOM` panics (a deterministic bug in
/// an application).
#[derive(Default)]
struct Counter {
    total: u64,
    commands: u64,
}

impl Application for Counter {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, String> {
        let delta = command.try_into().map(u64::from_le_bytes).unwrap_or(0);
        assert!(delta != BOOM, "the counter cannot add {delta}");
        self.total += delta;
        self.commands += 1;
        Ok(self.total.to_le_bytes().to_vec())
    }

    fn snapshot(&self) -> walship::app::SnapshotWriter {
        let bytes = [self.total.to_le_bytes(), self.commands.to_le_bytes()].concat();
        Box::new(move |out| out.write_all(&bytes))
    }

    fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
        let mut bytes = Vec::new();
        snapshot.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        if bytes.len() != 16 {
            return Err(format!("a counter snapshot is 16 bytes, not {}", bytes.len()));
        }
        self.total = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        self.commands = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
        Ok(())
    }
}

/// A running node, its server task, and every event it fired so far.
struct Running {
    node: Arc<Node>,
    running: walship::RunningNode,
    rx: broadcast::Receiver<Event>,
    seen: Vec<Event>,
}

impl Running {
    async fn start(id: NodeId, zk: &str, cluster: &str, data_dir: &Path) -> Result<Running> {
        let listen = common::ports::free_addr()?.to_string();
        let mut cfg = walship::config::NodeConfig::with_defaults(id, cluster, zk, data_dir, &listen)?;
        cfg.heartbeat_interval_ms = 100;
        cfg.election_timeout_ms = 600;
        // Subscribed before start, to see start-up's adoption too.
        let events = Events::new();
        let rx = events.subscribe();
        let running = walship::start(cfg, Some(Box::new(Counter::default())), events).await?;
        Ok(Running {
            node: Arc::clone(&running.node),
            running,
            rx,
            seen: Vec::new(),
        })
    }

    fn id(&self) -> NodeId {
        self.node.cfg().id
    }

    fn total(&self) -> Option<u64> {
        self.node.read_app(|c: &Counter| c.total)
    }

    /// The first event at or after `from` (an index into `seen`) that
    /// matches, waiting up to `within` for it.
    async fn event_after(
        &mut self,
        from: usize,
        what: &str,
        within: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event> {
        let deadline = tokio::time::Instant::now() + within;
        let mut at = from;
        loop {
            if let Some(e) = self.seen[at.min(self.seen.len())..].iter().find(|e| pred(e)) {
                return Ok(e.clone());
            }
            at = self.seen.len();
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Ok(e)) => self.seen.push(e),
                Ok(Err(e)) => bail!("node {}: event channel: {e}", self.id()),
                Err(_) => bail!(
                    "node {}: no {what} within {within:?}; events: {:?}",
                    self.id(),
                    self.seen
                ),
            }
        }
    }

    async fn event(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Result<Event> {
        self.event_after(0, what, Duration::from_secs(10), pred).await
    }

    async fn stop(mut self) -> Vec<Event> {
        self.running.shutdown().await;
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
        }
        self.seen
    }
}

/// The command the counter panics on.
const BOOM: u64 = u64::MAX;

fn cmd(delta: u64) -> Vec<u8> {
    delta.to_le_bytes().to_vec()
}

fn total_of(result: &[u8]) -> u64 {
    u64::from_le_bytes(result.try_into().expect("an 8-byte total"))
}

async fn until_total(r: &Running, want: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while r.total() != Some(want) {
        if tokio::time::Instant::now() > deadline {
            bail!("node {}: counter is {:?}, not {want}", r.id(), r.total());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_and_app_commands_across_hand_over_and_rebirth() -> Result<()> {
    let dir = common::TestDir::new("events")?;
    let zk = common::ZkServer::start(&dir.path().join("zk")).await?;
    let cluster = format!("events-{}", std::process::id());
    let zk_addr = zk.addr();
    let data = |id: u64| dir.path().join(format!("node{id}"));
    let (d1, d2) = (data(1), data(2));

    let (a, b) = tokio::join!(
        Running::start(1, &zk_addr, &cluster, &d1),
        Running::start(2, &zk_addr, &cluster, &d2),
    );
    let mut nodes = [a.context("start node 1")?, b.context("start node 2")?];

    // Both see the same leader, and each other up.
    let mut leaders = Vec::new();
    for r in nodes.iter_mut() {
        let peer = walship::node::other(r.id());
        let e = r
            .event("a leader", |e| {
                matches!(e, Event::LeaderChanged { leader: Some(_), .. })
            })
            .await?;
        r.event("the peer up", |e| matches!(e, Event::PeerUp { id, .. } if *id == peer))
            .await?;
        leaders.push(e);
    }
    let Event::LeaderChanged { leader: Some(l), term } = leaders[0] else {
        unreachable!()
    };
    assert!(term >= 1, "a leader's term is at least 1: {leaders:?}");
    assert_eq!(leaders[0], leaders[1], "both nodes report the same first leader");
    let (li, fi) = if l == 1 { (0, 1) } else { (1, 0) };

    // The follower does not propose; the leader does, and the result comes back.
    match nodes[fi].node.propose(cmd(1)).await {
        Err(ProposeError::NotLeader(Some(x))) => assert_eq!(x, l),
        other => panic!("a follower's propose should be NotLeader({l}), is {other:?}"),
    }
    assert_eq!(nodes[fi].total(), Some(0), "nothing was applied");
    // A command over the limit is refused for good, not "unavailable" (a
    // retrying client would loop forever on that).
    let oversize = vec![0u8; walship::app::MAX_COMMAND_BYTES + 1];
    match nodes[li].node.propose(oversize).await {
        Err(e @ ProposeError::Refused(_)) => assert!(!e.is_retryable(), "{e}"),
        other => panic!("an oversize command should be Refused, is {other:?}"),
    }
    let (i1, r1) = nodes[li].node.propose(cmd(5)).await?;
    assert_eq!(total_of(&r1), 5);
    // Concurrent proposals share batches (group commit); each gets its own result.
    let many = futures::future::join_all((0..10).map(|_| nodes[li].node.propose(cmd(1)))).await;
    let mut totals: Vec<u64> = many
        .into_iter()
        .map(|r| r.map(|(i, res)| (assert!(i > i1), total_of(&res)).1))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    totals.sort();
    assert_eq!(totals, (6..=15).collect::<Vec<_>>(), "each command saw its own total");
    until_total(&nodes[li], 15).await?;
    until_total(&nodes[fi], 15).await?;
    assert_eq!(nodes[fi].node.read_app(|c: &Counter| c.commands), Some(11));

    // A snapshot of the application, built and stored in ZooKeeper.
    let (snap, uploaded) = nodes[li].node.snapshot_now().await?;
    let snap = snap.context("a snapshot index")?;
    assert!(uploaded);
    nodes[li]
        .event(
            "SnapshotBuilt",
            |e| matches!(e, Event::SnapshotBuilt { index } if *index == snap),
        )
        .await?;
    nodes[li]
        .event(
            "SnapshotUploaded",
            |e| matches!(e, Event::SnapshotUploaded { index, bytes } if *index == snap && *bytes > 16),
        )
        .await?;

    // Hand-over: the leader stops; the other sees it go and takes over.
    let [n0, n1] = nodes;
    let (old, mut survivor) = if li == 0 { (n0, n1) } else { (n1, n0) };
    let mark = survivor.seen.len();
    let old_seen = old.stop().await;
    let stopped = tokio::time::Instant::now();
    survivor
        .event_after(
            mark,
            "PeerDown",
            Duration::from_secs(10),
            |e| matches!(e, Event::PeerDown { id } if *id == l),
        )
        .await?;
    let s = survivor.id();
    survivor
        .event_after(
            mark,
            "its own leadership",
            Duration::from_secs(10),
            |e| matches!(e, Event::LeaderChanged { leader: Some(x), .. } if *x == s),
        )
        .await?;
    let (_, r) = survivor.node.propose(cmd(100)).await?;
    assert_eq!(total_of(&r), 115, "the new leader continues from the old state");

    // The survivor's snapshot goes to ZooKeeper and W compacts past the old
    // leader's log: reborn, it installs that snapshot (restoring its
    // counter from it) during adoption at start.
    let (snap2, uploaded) = survivor.node.snapshot_now().await?;
    let snap2 = snap2.context("a second snapshot")?;
    assert!(uploaded && snap2 > snap);
    let mark = survivor.seen.len();
    let away_at_least_ms = stopped.elapsed().as_millis() as u64;
    let mut reborn = Running::start(l, &zk_addr, &cluster, &data(l)).await?;
    let installed = reborn
        .event("SnapshotInstalled", |e| matches!(e, Event::SnapshotInstalled { .. }))
        .await?;
    assert!(
        matches!(installed, Event::SnapshotInstalled { index, from: SnapshotSource::Witness, bytes } if index == snap2 && bytes > 16),
        "{installed:?}"
    );
    reborn
        .event(
            "Adopted",
            |e| matches!(e, Event::Adopted { snapshot_index: Some(i), .. } if *i == snap2),
        )
        .await?;
    assert_eq!(reborn.total(), Some(115), "restored from ZooKeeper's snapshot");
    let back = survivor
        .event_after(
            mark,
            "PeerUp",
            Duration::from_secs(10),
            |e| matches!(e, Event::PeerUp { id, .. } if *id == l),
        )
        .await?;
    // It had been away at least from its stop to its rebirth's start.
    assert!(
        matches!(back, Event::PeerUp { away_ms: Some(ms), .. } if ms >= away_at_least_ms),
        "{back:?}: away at least {away_at_least_ms} ms"
    );
    let (_, r) = survivor.node.propose(cmd(1000)).await?;
    assert_eq!(total_of(&r), 1115);
    until_total(&reborn, 1115).await?;

    let reborn_seen = reborn.stop().await;
    let survivor_seen = survivor.stop().await;
    eprintln!("old leader {l}: {old_seen:?}\nsurvivor {s}: {survivor_seen:?}\nreborn {l}: {reborn_seen:?}");
    Ok(())
}

/// An embedder restarting a node in-process: once `shutdown` returns, the
/// data dir opens again even while something still holds the old node (an
/// HTTP connection its server kept open, a clone in its own code). Before
/// `Node::shutdown` closed the log store this failed every time with "raft
/// is in use" (and the test above failed so now and then, when the peer's
/// pooled connection outlived the aborted server task).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shut_down_node_frees_its_data_dir_while_still_held() -> Result<()> {
    let dir = common::TestDir::new("events_restart_held")?;
    let zk = common::ZkServer::start(&dir.path().join("zk")).await?;
    let cluster = format!("held-{}", std::process::id());
    let data = dir.path().join("node1");
    let mut first = Running::start(1, &zk.addr(), &cluster, &data).await?;
    first
        .event("its leadership", |e| {
            matches!(e, Event::LeaderChanged { leader: Some(1), .. })
        })
        .await?;
    let (_, r) = first.node.propose(cmd(7)).await?;
    assert_eq!(total_of(&r), 7);
    let held = Arc::clone(&first.node);
    first.stop().await;
    let again = Running::start(1, &zk.addr(), &cluster, &data)
        .await
        .context("restart on the same data dir while the old node is still held")?;
    until_total(&again, 7).await?;
    // The old node refuses writes instead of touching the dir it gave up.
    assert!(held.propose(cmd(1)).await.is_err());
    drop(held);
    again.stop().await;
    Ok(())
}

/// A panic in the application's `apply` is loud: it is the same on both
/// nodes (they apply the same log), so both stop, each saying which entry
/// and why. On the code before this test both stopped too (openraft's
/// state machine task died with the panic) but said only "Write
/// Apply(...): channel closed", which names no cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_apply_stops_both_nodes_and_says_why() -> Result<()> {
    let dir = common::TestDir::new("apply-panic")?;
    let zk = common::ZkServer::start(&dir.path().join("zk")).await?;
    let cluster = format!("apply-panic-{}", std::process::id());
    let zk_addr = zk.addr();
    let (d1, d2) = (dir.path().join("node1"), dir.path().join("node2"));
    let (a, b) = tokio::join!(
        Running::start(1, &zk_addr, &cluster, &d1),
        Running::start(2, &zk_addr, &cluster, &d2),
    );
    let mut nodes = [a.context("start node 1")?, b.context("start node 2")?];
    let Event::LeaderChanged { leader: Some(l), .. } = nodes[0]
        .event("a leader", |e| {
            matches!(e, Event::LeaderChanged { leader: Some(_), .. })
        })
        .await?
    else {
        unreachable!()
    };
    let leader = &nodes[if l == 1 { 0 } else { 1 }];
    // Retried while leadership settles; then the counter works.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while leader.node.propose(cmd(5)).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("node {l} never took a command");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let boom = leader.node.propose(cmd(BOOM)).await;
    assert!(boom.is_err(), "a command whose apply panicked has no result: {boom:?}");
    for r in nodes.iter_mut() {
        tokio::time::timeout(Duration::from_secs(10), r.running.stop_requested())
            .await
            .with_context(|| format!("node {} still serves after its apply panicked", r.id()))?;
        let why = r.node.fatal().unwrap_or_default().to_string();
        assert!(
            why.contains("the application panicked") && why.contains("the counter cannot add"),
            "node {}: {why:?}",
            r.id()
        );
        // An embedder hears of it too, with the same reason.
        let failed = r.event("Failed", |e| matches!(e, Event::Failed { .. })).await?;
        assert_eq!(failed, Event::Failed { reason: why });
        assert_eq!(
            r.running
                .node
                .raft()
                .map(|raft| raft.metrics().borrow().state == openraft::ServerState::Leader),
            Some(false),
            "node {} still leads after its apply panicked",
            r.id()
        );
    }
    for r in nodes {
        r.stop().await;
    }
    Ok(())
}
