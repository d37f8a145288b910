//! An application's client path through the HTTP API, in-process: two
//! nodes started with `walship::start` and a small application (a tally
//! that can refuse), a private ZooKeeper, an API token. What a client of an
//! embedder sees: commands and queries through either node (a follower
//! forwards), a refusal by `validate` (nothing logged) and by `apply`
//! (committed, nothing changed), both 409; sessions that make a retry of an
//! applied command a replay; the token guarding all of it.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use walship::app::Application;
use walship::app::SnapshotWriter;
use walship::client::ClientOptions;
use walship::client::NodeClient;
use walship::client::Reply;
use walship::client::Session;
use walship::client::SessionError;
use walship::client::SessionTag;
use walship::types::NodeId;

/// `add N` (N > 0) and `take N` (only what is there); the query `total`.
/// `validate` refuses a malformed command or a take beyond the total; `apply`
/// checks the total again (validation saw a state that may have changed).
#[derive(Default)]
struct Tally {
    total: u64,
    /// Commands applied (rejections excluded): a retry must not add one.
    applied: u64,
}

fn parse(command: &[u8]) -> Result<(bool, u64), String> {
    let text = std::str::from_utf8(command).map_err(|_| "not UTF-8".to_string())?;
    let (op, n) = text.split_once(' ').ok_or("expected `add N` or `take N`")?;
    let n: u64 = n.parse().map_err(|_| format!("{n:?} is not a number"))?;
    match op {
        "add" if n > 0 => Ok((true, n)),
        "take" => Ok((false, n)),
        _ => Err(format!("cannot {op} {n}")),
    }
}

impl Application for Tally {
    fn validate(&self, command: &[u8]) -> Result<(), String> {
        match parse(command)? {
            (false, n) if n > self.total => Err(format!("cannot take {n}: the total is {}", self.total)),
            _ => Ok(()),
        }
    }

    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, String> {
        match parse(command)? {
            (true, n) => self.total += n,
            (false, n) if n <= self.total => self.total -= n,
            (false, n) => return Err(format!("cannot take {n}: the total is {}", self.total)),
        }
        self.applied += 1;
        Ok(self.total.to_string().into_bytes())
    }

    fn query(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        match query {
            b"total" => Ok(self.total.to_string().into_bytes()),
            b"applied" => Ok(self.applied.to_string().into_bytes()),
            _ => Err(format!("no such query: {}", String::from_utf8_lossy(query))),
        }
    }

    fn snapshot(&self) -> SnapshotWriter {
        let (total, applied) = (self.total, self.applied);
        Box::new(move |out| {
            out.write_all(&total.to_le_bytes())?;
            out.write_all(&applied.to_le_bytes())
        })
    }

    fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
        let mut b = [0u8; 16];
        snapshot.read_exact(&mut b).map_err(|e| e.to_string())?;
        self.total = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        self.applied = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        Ok(())
    }
}

const TOKEN: &str = "tally-token";

async fn start(id: NodeId, zk: &str, cluster: &str, dir: &Path) -> Result<walship::RunningNode> {
    let listen = common::ports::free_addr()?.to_string();
    let token_file = dir.join("token");
    std::fs::create_dir_all(dir)?;
    std::fs::write(&token_file, TOKEN)?;
    let mut cfg = walship::config::NodeConfig::with_defaults(id, cluster, zk, dir.join("data"), &listen)?;
    cfg.heartbeat_interval_ms = 100;
    cfg.election_timeout_ms = 600;
    cfg.api_token_file = Some(token_file);
    let events = walship::events::Events::new();
    Ok(walship::start(cfg, Some(Box::new(Tally::default())), events).await?)
}

fn client(addr: std::net::SocketAddr) -> Result<NodeClient> {
    let opts = ClientOptions {
        api_token: Some(TOKEN.into()),
        ..ClientOptions::default()
    };
    Ok(NodeClient::new(addr, &opts)?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The node that leads, polled until both agree on one.
async fn leader(nodes: &[walship::RunningNode]) -> Result<usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let leaders: Vec<_> = nodes
            .iter()
            .map(|r| r.node.raft().and_then(|raft| raft.metrics().borrow().current_leader))
            .collect();
        if let [Some(a), Some(b)] = leaders[..] {
            if a == b {
                return Ok(nodes
                    .iter()
                    .position(|r| r.node.cfg().id == a)
                    .expect("a node of the two"));
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no agreed leader: {leaders:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn application_commands_queries_refusals_and_sessions_over_http() -> Result<()> {
    let dir = common::TestDir::new("app-api")?;
    let zk = common::ZkServer::start(&dir.path().join("zk")).await?;
    let cluster = format!("app-api-{}", std::process::id());
    let zk_addr = zk.addr();
    let (d1, d2) = (dir.path().join("n1"), dir.path().join("n2"));
    let (a, b) = tokio::join!(start(1, &zk_addr, &cluster, &d1), start(2, &zk_addr, &cluster, &d2));
    let nodes = [a.context("node 1")?, b.context("node 2")?];
    let li = leader(&nodes).await?;
    let fi = 1 - li;
    let (lc, fc) = (client(nodes[li].addr)?, client(nodes[fi].addr)?);

    // Without the token nothing is read or changed.
    let anonymous = NodeClient::plain(nodes[fi].addr);
    assert_eq!(anonymous.command(None, "add 1").await.status(), Some(401));
    assert_eq!(anonymous.query("total", false).await.status(), Some(401));
    assert_eq!(anonymous.open_session().await.status(), Some(401));

    // Through the follower: forwarded to the leader, index and result back.
    let added = fc.command(None, "add 5").await.into_result()?;
    assert_eq!(text(&added.result), "5");
    assert!(added.index > 0);
    assert_eq!(
        fc.query("total", false).await.into_result()?,
        b"5".to_vec(),
        "linearizable, via the follower"
    );

    // `validate` refuses before logging: 409 and no entry.
    let before = nodes[li].node.raft().expect("raft").metrics().borrow().last_log_index;
    let refused = fc.command(None, "take 9").await;
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert!(refused.to_string().contains("the total is 5"), "{refused}");
    let after = nodes[li].node.raft().expect("raft").metrics().borrow().last_log_index;
    assert_eq!(before, after, "a command refused by validate is not logged");
    assert_eq!(lc.command(None, "sub 1").await.status(), Some(409), "malformed");
    assert_eq!(lc.query("nonsense", false).await.status(), Some(409));

    // Sessions: the same (session, seq) twice is applied once, answered twice.
    let id = fc.open_session().await.into_result()?;
    let tag = |seq| SessionTag {
        client: id,
        seq,
        acked_below: 1,
    };
    let first = fc.command(Some(tag(1)), "add 10").await.into_result()?;
    let again = lc.command(Some(tag(1)), "add 10").await.into_result()?;
    assert_eq!(text(&first.result), "15");
    assert_eq!(again.result, first.result, "the retry gets the first answer");
    assert_eq!(
        lc.query("total", false).await.into_result()?,
        b"15".to_vec(),
        "applied once"
    );
    // A retry of an applied `take` is a replay even though validate would
    // now refuse it (the total no longer covers it).
    let took = fc.command(Some(tag(2)), "take 15").await.into_result()?;
    assert_eq!(text(&took.result), "0");
    let retook = fc.command(Some(tag(2)), "take 15").await.into_result()?;
    assert_eq!(retook.result, took.result, "replayed, not validated again");
    // An unknown session is 410; a seq below what was acknowledged is 400.
    let unknown = SessionTag {
        client: id + 1_000_000,
        seq: 1,
        acked_below: 1,
    };
    assert_eq!(fc.command(Some(unknown), "add 1").await.status(), Some(410));
    let behind = SessionTag {
        client: id,
        seq: 1,
        acked_below: 3,
    };
    assert_eq!(fc.command(Some(behind), "add 1").await.status(), Some(400));

    // The session client: applied once each, refusals are final.
    let session = Session::new(vec![fc.clone(), lc.clone()]);
    for n in 1..=3 {
        session.command(format!("add {n}")).await?;
    }
    assert_eq!(session.query("total").await?, b"6".to_vec());
    match session.command("take 100").await {
        Err(SessionError::Rejected(why)) => assert!(why.contains("the total is 6"), "{why}"),
        other => bail!("take 100 should be rejected, is {other:?}"),
    }
    let applied: u64 = text(&session.query("applied").await?).parse()?;
    // add 5, add 10, take 15, add 1..3 — the replays and refusals added none.
    assert_eq!(applied, 6);

    // Both nodes applied the same.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stale = fc.query("total", true).await;
        if matches!(&stale, Reply::Success { value, .. } if value == b"6") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the follower's copy is {stale}, not 6");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two sessions opened (by hand, and by the Session client), on both nodes.
    for c in [&lc, &fc] {
        let (_, body) = c
            .raw(walship::client::Method::GET, "/metrics", None)
            .await
            .into_result()?;
        assert!(
            text(&body).lines().any(|l| l == "walship_client_sessions 2"),
            "{}: no `walship_client_sessions 2` in its metrics",
            c.endpoint()
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
