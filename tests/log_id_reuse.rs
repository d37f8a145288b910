//! A log id names one entry forever (witness-protocol.md; issue 9, "Defence
//! in depth"), at a real node over a real ZooKeeper: adoption replaces a
//! local entry that has W's log id but not its bytes, and a follower refuses
//! a leader's catch-up entry that has a local entry's log id but not its
//! bytes, then repairs its own log (W's entry wins; where W lacks the index
//! the local suffix is cut; where W holds the local entry nothing changes).
//!
//! The node runs in this process (`Node::start` and the HTTP router, no
//! background loops, so it never elects itself); its "leader" is this test,
//! which speaks node 2's peer RPC and, through its own session, W.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::VoteRequest;
use openraft::storage::RaftLogStorageExt;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use walship::node::Node;
use walship::types::genesis_entry;
use walship::types::Entry;
use walship::types::LogId;
use walship::types::Request;
use walship::types::TypeConfig;
use walship::types::Vote;
use walship::witness::Witness;
use walship_zk::ZkSession;

fn lid(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 2), index)
}

/// Entry `index` of term 1 (led by node 2), setting x to `value`.
fn put(index: u64, value: &str) -> Entry {
    Entry {
        log_id: lid(index),
        payload: EntryPayload::Normal(walship::types::Batch::one(Request::Set {
            key: "x".into(),
            value: value.as_bytes().to_vec(),
        })),
    }
}

fn conflicts(node: &Node, place: &str) -> u64 {
    node.metrics().log_id_conflicts.with_label_values(&[place]).get()
}

const LEADER: Vote = Vote {
    leader_id: openraft::LeaderId { term: 1, node_id: 2 },
    committed: true,
};

fn append(prev: u64, entries: Vec<Entry>, commit: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: LEADER,
        prev_log_id: Some(lid(prev)),
        entries,
        leader_commit: Some(lid(commit)),
    }
}

/// ZooKeeper, and W with node 2 elected in term 1 and holding `entries`
/// (from index 1 on).
struct World {
    _dir: common::TestDir,
    zk: common::ZkServer,
    cluster: String,
    w: Witness,
    cluster_id: String,
}

async fn world(name: &str, entries: Vec<Entry>) -> Result<World> {
    let dir = common::TestDir::new(name)?;
    let zk = common::ZkServer::start(&dir.path().join("zk")).await?;
    let cluster = format!("{name}-{}", std::process::id());
    let w = Witness::new(
        ZkSession::connect(&zk.addr(), 4000, 2000, 10_000, |_| None).await?,
        &cluster,
    );
    let record = w.bootstrap().await?;
    let g = Some(LogId::default());
    anyhow::ensure!(w.vote(VoteRequest::new(Vote::new(1, 2), g)).await?.vote_granted);
    let mut req = append(0, entries, 0);
    req.prev_log_id = g;
    req.leader_commit = g;
    anyhow::ensure!(w.append_entries(req).await? == AppendEntriesResponse::Success);
    Ok(World {
        _dir: dir,
        zk,
        cluster,
        w,
        cluster_id: record.cluster_id,
    })
}

async fn start_node(world: &World, data_dir: &Path) -> Result<(Arc<Node>, String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let cfg = walship::cli::NodeArgs {
        id: Some(1),
        cluster: Some(world.cluster.clone()),
        zk: Some(world.zk.addr()),
        data_dir: Some(data_dir.to_path_buf()),
        listen: Some(addr.clone()),
        heartbeat_interval_ms: Some(100),
        election_timeout_ms: Some(600),
        ..Default::default()
    }
    .into_config()?;
    let node = Node::start(cfg).await?;
    let router = walship::api::router(Arc::clone(&node));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((node, addr, server))
}

/// Adoption at start: the node's log holds (1,2) with other bytes than W's
/// (1,2), and a (1,3) W lacks. W's entry replaces it and the local suffix
/// from there goes; it is counted.
#[tokio::test]
async fn adoption_replaces_a_local_entry_with_w_s_log_id_but_not_its_bytes() -> Result<()> {
    let world = world("reuse-adopt", vec![put(1, "a"), put(2, "W")]).await?;
    let data_dir = world._dir.path().join("node1");
    walship::storage::write_meta(
        &data_dir,
        &walship::storage::NodeMeta {
            cluster: world.cluster.clone(),
            cluster_id: world.cluster_id.clone(),
            node_id: 1,
        },
    )?;
    {
        let mut log = walship::storage::LogStore::open(&data_dir).await?;
        log.blocking_append(vec![genesis_entry(), put(1, "a"), put(2, "LOCAL"), put(3, "LOCAL3")])
            .await?;
    }
    let (node, _addr, server) = start_node(&world, &data_dir).await?;
    assert_eq!(
        node.log().entries(1..).expect("read the log"),
        vec![put(1, "a"), put(2, "W")]
    );
    // The node's own metrics (a registry per node): this adoption, once.
    assert_eq!(conflicts(&node, "adoption"), 1);
    node.shutdown().await;
    server.abort();
    Ok(())
}

/// POSTs an AppendEntries to the node as its leader would. Returns the HTTP
/// status and, on 200, openraft's answer.
async fn post(
    http: &reqwest::Client,
    addr: &str,
    req: &AppendEntriesRequest<TypeConfig>,
) -> Result<(u16, Option<AppendEntriesResponse<u64>>)> {
    let res = http
        .post(format!("http://{addr}/raft/append"))
        .body(bincode::serialize(req)?)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = res.status().as_u16();
    if status != 200 {
        return Ok((status, None));
    }
    let body: Result<AppendEntriesResponse<u64>, openraft::error::RaftError<u64>> =
        bincode::deserialize(&res.bytes().await?)?;
    Ok((status, Some(body?)))
}

/// Sends `req` as the leader's retries would until the node accepts it.
/// Returns the number of refusals first seen.
async fn until_accepted(http: &reqwest::Client, addr: &str, req: &AppendEntriesRequest<TypeConfig>) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = 0;
    loop {
        match post(http, addr, req).await? {
            (200, Some(AppendEntriesResponse::Success)) => return Ok(refused),
            (409, _) => refused += 1,
            (503, _) => {} // Raft restarting for the repair
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
        anyhow::ensure!(Instant::now() < deadline, "not accepted after {refused} refusals");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Catch-up from the leader: openraft keeps an entry whose log id it has,
/// whatever the bytes, so the peer RPC handler compares them first.
#[tokio::test]
async fn catch_up_refuses_a_reused_log_id_and_repairs_the_log() -> Result<()> {
    let world = world("reuse-catch-up", vec![put(1, "a"), put(2, "b")]).await?;
    let data_dir = world._dir.path().join("node1");
    let (node, addr, server) = start_node(&world, &data_dir).await?;
    let http = reqwest::Client::new();
    let (catch_up, adoption) = (conflicts(&node, "catch_up"), conflicts(&node, "adoption"));

    // The leader (term 1) sends 3 and 4; W never gets them.
    assert_eq!(
        post(&http, &addr, &append(2, vec![put(3, "L3"), put(4, "L4")], 2)).await?,
        (200, Some(AppendEntriesResponse::Success))
    );
    assert_eq!(
        node.log().entries(3..).expect("read the log"),
        vec![put(3, "L3"), put(4, "L4")]
    );

    // The leader restarts having forgotten them, leads term 1 again (what
    // the restart rule now forbids), and W takes its new (1,3).
    let mut to_w = append(2, vec![put(3, "W3")], 2);
    to_w.leader_commit = None;
    assert_eq!(world.w.append_entries(to_w).await?, AppendEntriesResponse::Success);

    // A: its catch-up carries (1,3) and (1,4) with other bytes. Refused,
    // the local 3 replaced by W's, then accepted: the node holds the
    // leader's entries, not its stale ones.
    let req = append(2, vec![put(3, "W3"), put(4, "W4")], 2);
    let refused = until_accepted(&http, &addr, &req).await?;
    assert!(refused >= 1, "the reused id went straight to openraft");
    assert_eq!(
        node.log().entries(3..).expect("read the log"),
        vec![put(3, "W3"), put(4, "W4")]
    );
    assert!(conflicts(&node, "catch_up") > catch_up);
    assert!(conflicts(&node, "adoption") > adoption, "the repair adopts W's entry");

    // B: W does not hold index 4, so neither (1,4) is committed; another
    // leader copy of (1,4) makes the node cut its own.
    let req = append(3, vec![put(4, "X4")], 2);
    let refused = until_accepted(&http, &addr, &req).await?;
    assert!(refused >= 1);
    assert_eq!(
        node.log().entries(3..).expect("read the log"),
        vec![put(3, "W3"), put(4, "X4")]
    );

    // C: W holds the node's (1,3) itself: a leader's other (1,3) is the
    // stray. It is refused every time and the node's log stays.
    let req = append(2, vec![put(3, "Y3")], 2);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let (status, _) = post(&http, &addr, &req).await?;
        assert!(status == 409 || status == 503, "the stray (1,3) was accepted: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.log().entries(3..=3).expect("read the log"), vec![put(3, "W3")]);
    let log = world.w.read_log(1).await.context("read W")?;
    assert_eq!(log.entries, vec![put(1, "a"), put(2, "b"), put(3, "W3")]);

    node.shutdown().await;
    server.abort();
    Ok(())
}
