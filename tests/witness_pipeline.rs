//! Pipelined appends to W against a real ZooKeeper (`witness::pipeline`):
//! several checked multis in flight on one session, and what happens to
//! them when W changes underneath or the session's connection goes.
//!
//! Node 1's session reaches ZooKeeper through a fault proxy, so its
//! requests can be held back (`hold`: delivered late, in order) or lost
//! (`Blackhole`) while node 2's session writes W directly.

mod common;

use std::time::Duration;

use anyhow::ensure;
use anyhow::Result;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::VoteRequest;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use walship::types::Entry;
use walship::types::LogId;
use walship::types::Request;
use walship::types::TypeConfig;
use walship::types::Vote;
use walship::witness::Witness;
use walship::witness::WitnessMetrics;
use walship_testkit::faultproxy::CutMode;
use walship_testkit::faultproxy::FaultProxy;
use walship_testkit::wait::Deadline;
use walship_zk::ZkSession;

fn lid(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn entries(term: u64, node: u64, from: u64, to: u64) -> Vec<Entry> {
    entries_of(100, term, node, from, to)
}

fn entries_of(value_bytes: usize, term: u64, node: u64, from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| Entry {
            log_id: lid(term, node, i),
            payload: EntryPayload::Normal(walship::types::Batch::one(Request::Set {
                key: format!("k{i}"),
                value: vec![b'v'; value_bytes],
            })),
        })
        .collect()
}

fn append(vote: Vote, prev: Option<LogId>, entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote,
        prev_log_id: prev,
        entries,
        leader_commit: None,
    }
}

/// Node 1's (openraft's) append of `entries` after `prev` under its term-1
/// vote, answered within 10 s or an error.
async fn leader_append(n1: &Witness, prev: LogId, entries: Vec<Entry>) -> Result<AppendEntriesResponse<u64>> {
    let req = append(Vote::new_committed(1, 1), Some(prev), entries);
    Ok(tokio::time::timeout(Duration::from_secs(10), n1.append_entries(req)).await??)
}

struct Fixture {
    zk: common::ZkServer,
    _dir: common::TestDir,
    cluster: String,
    /// Node 1's way to ZooKeeper.
    proxy: FaultProxy,
}

async fn fixture(name: &str) -> Result<Fixture> {
    let dir = common::TestDir::new(name)?;
    let zk = common::ZkServer::start(&dir.path().join("zk")).await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, zk.addr().parse()?).await?;
    Ok(Fixture {
        zk,
        _dir: dir,
        cluster: format!("{name}-{}", std::process::id()),
        proxy,
    })
}

fn metrics() -> WitnessMetrics {
    WitnessMetrics {
        appends: prometheus::IntCounter::new("appends", "test").expect("metric"),
        entries: prometheus::IntCounter::new("entries", "test").expect("metric"),
        inflight_multis: prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("inflight", "test").buckets(vec![1.0, 2.0, 3.0, 4.0, 5.0, 8.0]),
        )
        .expect("metric"),
        evictions: prometheus::IntCounter::new("evictions", "test").expect("metric"),
    }
}

/// Node 1 through the proxy, node 2 direct; W bootstrapped, node 1 elected
/// in term 1 and holding entries 1..=2 in W (its first append is a normal
/// checked write, which opens its pipeline).
async fn leader_with_open_pipeline(f: &Fixture, m: &WitnessMetrics) -> Result<(Witness, Witness)> {
    let s1 = ZkSession::connect(&f.proxy.addr().to_string(), 4000, 1000, 10_000, |_| None).await?;
    let s2 = ZkSession::connect(&f.zk.addr(), 4000, 1000, 10_000, |_| None).await?;
    let n1 = Witness::new(s1, &f.cluster).with_metrics(m.clone());
    let n2 = Witness::new(s2, &f.cluster);
    n1.bootstrap().await?;
    let g = Some(LogId::default());
    ensure!(n1.vote(VoteRequest::new(Vote::new(1, 1), g)).await?.vote_granted);
    let r = n1
        .append_entries(append(Vote::new_committed(1, 1), g, entries(1, 1, 1, 2)))
        .await?;
    ensure!(r == AppendEntriesResponse::Success, "first append: {r:?}");
    Ok((n1, n2))
}

/// Reads W from node 2's session and checks its log is whole: contiguous
/// from the genesis to the record's last log id.
async fn w_log(n2: &Witness) -> Result<(Vote, Vec<LogId>)> {
    let log = n2.read_log(0).await?;
    let ids: Vec<LogId> = log.entries.iter().map(|e| e.log_id).collect();
    for (i, id) in ids.iter().enumerate() {
        ensure!(id.index == i as u64, "W's log has a hole: {ids:?}");
    }
    ensure!(
        ids.last().copied() == log.record.last_log_id,
        "W's record ends at {:?}, its WAL at {:?}",
        log.record.last_log_id,
        ids.last()
    );
    Ok((log.record.vote, ids))
}

/// Fed entries go out before the last one is answered: five multis are in
/// flight at once behind a held link, land in order when it heals, and
/// openraft's append for all of them is then answered without another
/// write.
#[tokio::test]
async fn appends_are_in_flight_together_and_land_in_order() -> Result<()> {
    let f = fixture("wp-inflight").await?;
    let m = metrics();
    let (n1, n2) = leader_with_open_pipeline(&f, &m).await?;
    let before = m.appends.get();

    f.proxy.hold();
    for i in 0..5 {
        n1.feed(entries(1, 1, 3 + 2 * i, 4 + 2 * i)).await;
    }
    ensure!(
        m.inflight_multis.get_sample_sum() >= 1.0 + 2.0 + 3.0 + 4.0 + 5.0,
        "the five multis were not in flight together (sum of depths {})",
        m.inflight_multis.get_sample_sum()
    );
    f.proxy.heal();
    let all = entries(1, 1, 3, 12);
    let r = leader_append(&n1, lid(1, 1, 2), all).await?;
    ensure!(r == AppendEntriesResponse::Success, "append: {r:?}");
    ensure!(
        m.appends.get() - before == 5,
        "five pipelined multis, no more: {}",
        m.appends.get() - before
    );
    let (vote, ids) = w_log(&n2).await?;
    ensure!(vote == Vote::new_committed(1, 1));
    ensure!(ids.len() == 13, "W holds 0..=12: {ids:?}");
    Ok(())
}

/// W changes underneath the pipeline: node 2 wins W's vote while node 1's
/// three multis are held back. When they arrive, the first fails its
/// version check, and the second, whose version check would now pass (the
/// vote moved the version by exactly one), fails on W's epoch: none lands,
/// W keeps node 2's vote and a whole log, and node 1's append learns of
/// the higher vote.
#[tokio::test]
async fn a_write_between_pipelined_multis_fails_everything_behind_it() -> Result<()> {
    let f = fixture("wp-epoch").await?;
    let m = metrics();
    let (n1, n2) = leader_with_open_pipeline(&f, &m).await?;

    f.proxy.hold();
    for i in 0..3 {
        n1.feed(entries(1, 1, 3 + i, 3 + i)).await;
    }
    let r = n2.vote(VoteRequest::new(Vote::new(2, 2), Some(lid(1, 1, 2)))).await?;
    ensure!(r.vote_granted, "node 2 wins W: {r:?}");
    f.proxy.heal();

    let r = leader_append(&n1, lid(1, 1, 2), entries(1, 1, 3, 5)).await?;
    ensure!(
        r == AppendEntriesResponse::HigherVote(Vote::new(2, 2)),
        "node 1 must learn of the higher vote: {r:?}"
    );
    let (vote, ids) = w_log(&n2).await?;
    ensure!(vote == Vote::new(2, 2), "W forgot node 2's vote: {vote}");
    ensure!(ids.len() == 3, "no pipelined entry may land after the vote: {ids:?}");
    Ok(())
}

/// The connection goes with multis in flight (a blackhole, then the
/// session reconnects): their outcome is unknown, the pipeline fails, and
/// openraft's append for the same entries is decided again on W as it is
/// and lands them once, W's log whole.
#[tokio::test]
async fn a_lost_connection_with_multis_in_flight_is_decided_again() -> Result<()> {
    let f = fixture("wp-reconnect").await?;
    let m = metrics();
    let (n1, n2) = leader_with_open_pipeline(&f, &m).await?;

    f.proxy.cut(CutMode::Blackhole);
    for i in 0..3 {
        n1.feed(entries(1, 1, 3 + 2 * i, 4 + 2 * i)).await;
    }
    let req = append(Vote::new_committed(1, 1), Some(lid(1, 1, 2)), entries(1, 1, 3, 8));
    let first = tokio::time::timeout(Duration::from_secs(10), n1.append_entries(req.clone())).await?;
    ensure!(
        first.is_err(),
        "an append whose multis never reached ZooKeeper must not succeed: {first:?}"
    );
    f.proxy.heal();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match n1.append_entries(req.clone()).await {
            Ok(AppendEntriesResponse::Success) => break,
            other => {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "no success after the link healed: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let (vote, ids) = w_log(&n2).await?;
    ensure!(vote == Vote::new_committed(1, 1));
    ensure!(ids.len() == 9, "W holds 0..=8 once each: {ids:?}");
    // The pipeline opens again after the checked write that recovered.
    f.proxy.hold();
    n1.feed(entries(1, 1, 9, 9)).await;
    n1.feed(entries(1, 1, 10, 10)).await;
    f.proxy.heal();
    let r = leader_append(&n1, lid(1, 1, 8), entries(1, 1, 9, 10)).await?;
    ensure!(r == AppendEntriesResponse::Success);
    ensure!(w_log(&n2).await?.1.len() == 11);
    Ok(())
}

/// Closing the session after pipelined appends closes it in ZooKeeper at
/// once: the pipeline holds no client of its own between multis. (It did:
/// a SIGTERM'd leader's `leader` and `members` znodes then outlived its
/// stop, and the hand-over waited for the other node to notice instead.)
#[tokio::test]
async fn closing_the_session_after_pipelined_appends_drops_its_ephemerals() -> Result<()> {
    let f = fixture("wp-close").await?;
    let m = metrics();
    let (n1, n2) = leader_with_open_pipeline(&f, &m).await?;
    let member = n1.paths().member(1);
    n1.session()
        .register_ephemeral(&member, b"n1".to_vec(), walship_zk::Claim::Replace)
        .await?;
    n1.feed(entries(1, 1, 3, 4)).await;
    let r = n1
        .append_entries(append(
            Vote::new_committed(1, 1),
            Some(lid(1, 1, 2)),
            entries(1, 1, 3, 4),
        ))
        .await?;
    ensure!(r == AppendEntriesResponse::Success);
    n1.session().close().await;
    // Well inside the 4 s session timeout: only a closed session is this quick.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    let raw = n2.session().client()?;
    while raw.check_stat(&member).await?.is_some() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "node 1's ephemeral outlived its closed session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The data version of the cluster's root znode, read on node 2's session.
async fn root_version(n2: &Witness, cluster: &str) -> Result<i32> {
    let root = walship::witness::record::Paths::new(cluster).root;
    let stat = n2
        .session()
        .run("stat root", |c| async move { c.check_stat(&root).await })
        .await?;
    Ok(stat.map(|s| s.version).unwrap_or(-1))
}

/// Polls the root's data version until it is `want` (the writes are not
/// waited for by the append that sends them).
async fn root_reaches(n2: &Witness, cluster: &str, want: i32) -> Result<()> {
    let deadline = Deadline::after(Duration::from_secs(10), format!("the root's data version {want}"));
    loop {
        let v = root_version(n2, cluster).await?;
        if v == want {
            return Ok(());
        }
        deadline.tick(&format!("version {v}")).await?;
    }
}

/// W's big multis are followed by empty writes to the cluster's root, one
/// per full 64 KiB they carried, that push them out of ZooKeeper's in-memory
/// history of its last 500 transactions (`witness::evict`); multis of small
/// writes by none. Both ways W writes entries: the first, checked append
/// (`Witness::multi`) and the pipelined ones.
#[tokio::test]
async fn big_multis_are_pushed_out_of_zookeepers_history() -> Result<()> {
    let f = fixture("wp-evict").await?;
    let m = metrics();
    let (n1, n2) = leader_with_open_pipeline(&f, &m).await?;
    ensure!(m.evictions.get() == 0, "100 B entries evicted: {}", m.evictions.get());
    let v0 = root_version(&n2, &f.cluster).await?;

    // Three entries of 100 KiB: one multi of ~300 KiB, four full 64 KiB.
    let big = entries_of(100 * 1024, 1, 1, 3, 5);
    n1.feed(big.clone()).await;
    let r = leader_append(&n1, lid(1, 1, 2), big).await?;
    ensure!(r == AppendEntriesResponse::Success, "pipelined append: {r:?}");
    ensure!(
        m.evictions.get() == 4,
        "evictions after a ~300 KiB multi: {}",
        m.evictions.get()
    );
    root_reaches(&n2, &f.cluster, v0 + 4).await?;

    // The same through the checked path, on a node without a pipeline.
    let s3 = ZkSession::connect(&f.zk.addr(), 4000, 1000, 10_000, |_| None).await?;
    let n3 = Witness::new(s3, &f.cluster).pipelining(false).with_metrics(m.clone());
    let r = n3
        .append_entries(append(
            Vote::new_committed(1, 1),
            Some(lid(1, 1, 5)),
            entries_of(70 * 1024, 1, 1, 6, 6),
        ))
        .await?;
    ensure!(r == AppendEntriesResponse::Success, "checked append: {r:?}");
    ensure!(
        m.evictions.get() == 5,
        "evictions after a ~70 KiB multi: {}",
        m.evictions.get()
    );
    root_reaches(&n2, &f.cluster, v0 + 5).await?;
    let (_, ids) = w_log(&n2).await?;
    ensure!(ids.len() == 7, "W holds 0..=6: {ids:?}");
    Ok(())
}
