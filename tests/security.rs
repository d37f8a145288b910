//! Access control: with a shared secret the cluster's znodes carry a digest
//! ACL (a client without the secret reads and writes nothing there), peer
//! RPC needs a token derived from it, and with an API token the client API
//! refuses requests without it. Every refusal is checked to change nothing.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::Cluster;
use common::Setup;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: &'static str,
) -> Result<(u16, String)> {
    let mut req = http.request(method, url).body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_and_tokens_refuse_outsiders() -> Result<()> {
    let secrets = tempfile::tempdir()?;
    let secret = secrets.path().join("secret");
    let token = secrets.path().join("api-token");
    std::fs::write(&secret, "correct horse battery staple\n")?;
    std::fs::write(&token, "client-token-123\n")?;
    let (s, t) = (
        secret.to_string_lossy().into_owned(),
        token.to_string_lossy().into_owned(),
    );
    let mut c = Cluster::start_with("security", &["--secret-file", &s, "--api-token-file", &t]).await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let addrs = [c.node(1).listen(), c.node(2).listen()];
    let url = move |id: u64, path: &str| format!("http://{}{path}", addrs[id as usize - 1]);

    // Client API: 401 without a token, 403 with a wrong one, nothing written.
    let (code, body) = send(&http, reqwest::Method::PUT, url(leader, "/v1/kv/k"), None, "x").await?;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"error\""), "refusals are JSON errors: {body}");
    let (code, _) = send(
        &http,
        reqwest::Method::PUT,
        url(follower, "/v1/kv/k"),
        Some("guess"),
        "x",
    )
    .await?;
    assert_eq!(code, 403);
    let (code, _) = send(&http, reqwest::Method::GET, url(leader, "/v1/kv/k"), None, "").await?;
    assert_eq!(code, 401, "reads need the token too");
    let (code, _) = send(
        &http,
        reqwest::Method::GET,
        url(leader, "/v1/kv/k"),
        Some("client-token-123"),
        "",
    )
    .await?;
    assert_eq!(code, 404, "the refused writes changed nothing");
    // With the token, through the follower (forwarded to the leader).
    let (code, body) = send(
        &http,
        reqwest::Method::PUT,
        url(follower, "/v1/kv/k"),
        Some("client-token-123"),
        "v",
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send(
        &http,
        reqwest::Method::GET,
        url(follower, "/v1/kv/k"),
        Some("client-token-123"),
        "",
    )
    .await?;
    assert_eq!((code, body.as_str()), (200, "v"));

    // Peer RPC: refused before decoding without the derived token.
    let (code, _) = send(&http, reqwest::Method::POST, url(leader, "/raft/vote"), None, "garbage").await?;
    assert_eq!(code, 401);
    let mut req = http.post(url(leader, "/raft/append")).body("garbage");
    req = req.header("x-walship-token", "not-the-token");
    assert_eq!(req.send().await?.status().as_u16(), 403);
    let (code, _) = send(&http, reqwest::Method::POST, url(follower, "/raft/takeover"), None, "").await?;
    assert_eq!(code, 401, "an outsider cannot make a node stand for election");
    assert_eq!(c.wait_for_leader(TIMEOUT).await?, leader, "refused RPC changed nothing");

    // ZooKeeper: a session without the secret can neither read nor write.
    let zk = zookeeper_client::Client::connect(&c.zk().addr()).await?;
    let root = format!("/walship/{}", c.name);
    let witness = format!("{root}/witness");
    assert_eq!(zk.get_data(&witness).await.err(), Some(zookeeper_client::Error::NoAuth));
    assert_eq!(
        zk.list_children(&root).await.err(),
        Some(zookeeper_client::Error::NoAuth)
    );
    let opts = zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    assert_eq!(
        zk.create(&format!("{root}/intruder"), b"x", &opts).await.err(),
        Some(zookeeper_client::Error::NoAuth)
    );
    assert_eq!(
        zk.set_data(&witness, b"x", None).await.err(),
        Some(zookeeper_client::Error::NoAuth)
    );
    // With the wrong secret, likewise.
    let wrong = zookeeper_client::Client::connector()
        .with_auth("digest", b"walship:not the secret")
        .connect(&c.zk().addr())
        .await?;
    assert_eq!(
        wrong.get_data(&witness).await.err(),
        Some(zookeeper_client::Error::NoAuth)
    );
    // The CLI: `kv` needs the token file, `status --zk` the secret file.
    let endpoint = c.client(leader).base_url().trim_start_matches("http://").to_string();
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(common::WALSHIP_BIN);
        cmd.args(args).args(["--endpoints", &endpoint, "--timeout-ms", "5000"]);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WALSHIP_")) {
            cmd.env_remove(k);
        }
        let o = cmd.output().expect("run walship");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code(), text)
    };
    let (code, text) = cli(&["kv", "put", "cli-key", "cli-value"]);
    assert_ne!(code, Some(0), "a write without the token: {text}");
    let (code, text) = cli(&["kv", "put", "cli-key", "cli-value", "--api-token-file", &t]);
    assert_eq!(code, Some(0), "a write with the token file: {text}");
    let (code, text) = cli(&["kv", "get", "cli-key", "--api-token-file", &t]);
    assert_eq!((code, text.trim()), (Some(0), "cli-value"));
    let zk_addr = c.zk().addr();
    let zk_args = ["status", "--zk", zk_addr.as_str(), "--cluster", c.name.as_str()];
    let (code, text) = cli(&zk_args);
    assert_ne!(
        code,
        Some(0),
        "read an ACL'd cluster's znodes without the secret: {text}"
    );
    let (code, text) = cli(&[&zk_args[..], &["--secret-file", s.as_str()]].concat());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("W's last log id") && text.contains("members/1"), "{text}");

    // The cluster still works after all that.
    let (code, _) = send(
        &http,
        reqwest::Method::PUT,
        url(leader, "/v1/kv/after"),
        Some("client-token-123"),
        "ok",
    )
    .await?;
    assert_eq!(code, 200);
    Ok(())
}

/// A peer's request naming a term or index no real cluster reaches is
/// refused before openraft sees it. On 342ed45 a vote of term u64::MAX
/// panicked openraft's core: both nodes ended at term u64::MAX with no
/// leader, every write 503/504, restarts included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_peer_terms_are_refused_and_change_nothing() -> Result<()> {
    use openraft::raft::AppendEntriesRequest;
    use openraft::raft::VoteRequest;
    use walship::types::Vote;
    let mut c = Cluster::start("peer-bounds").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let http = reqwest::Client::new();
    let post = |id: u64, path: &str, body: Vec<u8>| {
        let url = format!("http://{}{path}", c.node(id).listen());
        let req = http.post(url).body(body);
        async move { Ok::<u16, anyhow::Error>(req.send().await?.status().as_u16()) }
    };
    let huge_vote = VoteRequest::<u64>::new(Vote::new(u64::MAX, follower), None);
    let huge_append = AppendEntriesRequest::<walship::types::TypeConfig> {
        vote: Vote::new_committed(u64::MAX - 1, follower),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let stranger_vote = VoteRequest::<u64>::new(Vote::new(7, 99), None);
    for id in [leader, follower] {
        assert_eq!(post(id, "/raft/vote", bincode::serialize(&huge_vote)?).await?, 400);
        assert_eq!(post(id, "/raft/append", bincode::serialize(&huge_append)?).await?, 400);
        assert_eq!(post(id, "/raft/vote", bincode::serialize(&stranger_vote)?).await?, 400);
    }
    // Nothing changed: the same leader, a sane term, and writes go on.
    assert_eq!(c.wait_for_leader(TIMEOUT).await?, leader);
    let status = c.client(leader).status().await.into_result()?;
    assert!(
        status.term.is_some_and(|t| t < 1000),
        "term after the probes: {status:?}"
    );
    assert!(c.client(follower).put("after-probes", "ok").await.is_success());
    Ok(())
}

async fn zk_client(c: &Cluster) -> Result<zookeeper_client::Client> {
    Ok(zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&c.zk().addr())
        .await?)
}

/// `/walship` cannot be re-ACL'd by a client without rights (on 342ed45 it
/// was world:anyone:cdrwa, and `setAcl /walship world:anyone:r` from any
/// client stopped every node from ever restarting); a `/walship` left open
/// by an older walship is narrowed at start; and a node restarts without
/// needing CREATE on a parent that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_cannot_be_locked_by_an_outsider() -> Result<()> {
    use zookeeper_client as zk;
    let mut c = Setup::test("namespace-acl").start_zk().await?;
    let outsider = zk_client(&c).await?;
    // As an older walship left it: open to all, ADMIN included.
    outsider
        .create(
            "/walship",
            &[],
            &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
        )
        .await?;
    for id in [1, 2] {
        c.spawn_node(id).await?;
    }
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let (acl, _) = outsider.get_acl("/walship").await?;
    assert!(
        acl.iter().all(|a| !a.permission().has(zk::Permission::ADMIN)),
        "/walship still grants ADMIN: {acl:?}"
    );
    let locked = outsider
        .set_acl("/walship", zk::Acls::anyone_read().as_ref(), None)
        .await;
    assert!(
        matches!(locked, Err(zk::Error::NoAuth)),
        "an outsider re-ACL'd /walship: {locked:?}"
    );
    // Nothing stops a restart.
    c.node_mut(leader).kill9().await?;
    c.node_mut(leader).start()?;
    c.node_mut(leader).wait_live(TIMEOUT).await?;
    let now = c.wait_for_leader(TIMEOUT).await?;
    assert!(c.client(now).put("after-restart", "ok").await.is_success());
    Ok(())
}

/// A cluster name squatted by a client without the secret (its root and
/// `members` created first, world-writable) is refused at start, naming the
/// znode and the ACL found. On 342ed45 the nodes started on them, and the
/// squatter could then advertise its own address as a node's and receive
/// the peer token and clients' writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatted_cluster_znodes_are_refused() -> Result<()> {
    use zookeeper_client as zk;
    let secrets = tempfile::tempdir()?;
    let secret = secrets.path().join("secret");
    std::fs::write(&secret, "correct horse battery staple\n")?;
    let s = secret.to_string_lossy().into_owned();
    let mut c = Setup::test("squat").start_zk().await?;
    c.set_node_args(&["--secret-file", &s]);
    let outsider = zk_client(&c).await?;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    outsider.mkdir(&format!("/walship/{}/members", c.name), &open).await?;
    let refused = c.spawn_node(1).await;
    let e = format!("{:#}", refused.expect_err("a node started on squatted znodes"));
    assert!(
        e.contains(&format!("/walship/{}", c.name)) && e.contains("world:anyone"),
        "the refusal names the znode and its ACL: {e}"
    );
    Ok(())
}

/// Connections are bounded: an idle connection (or one that never sends a
/// whole request head) is closed after the header-read timeout, connections
/// past the cap are closed on accept, and a request whose body never comes
/// gets 408 at the request deadline. On 342ed45 none of these were bounded:
/// idle connections were never closed, and about a thousand of them under a
/// 1,024-descriptor limit made the leader fail its own state writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded() -> Result<()> {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    let mut c = Cluster::start_with(
        "conn-bounds",
        &[
            "--max-connections",
            "24",
            "--header-read-timeout-ms",
            "2000",
            "--request-timeout-ms",
            "6000",
        ],
    )
    .await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let addr = c.node(leader).listen();
    // Whether the server closed `s` within `within` (EOF or reset).
    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout(within, s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
    // Open more connections than the cap at once (the peer and the harness
    // hold a few slots too): those past it are closed at once, well before
    // the header-read timeout could close any.
    let mut conns = Vec::new();
    for _ in 0..40 {
        conns.push(tokio::net::TcpStream::connect(addr).await?);
    }
    let looks = futures::future::join_all(conns.iter_mut().map(|s| closed_within(s, Duration::from_millis(700)))).await;
    let refused = looks.iter().filter(|c| **c).count();
    assert!(
        (16..=40).contains(&refused),
        "{refused} of 40 connections closed at once with a cap of 24"
    );
    let mut idle: Vec<_> = conns
        .into_iter()
        .zip(looks)
        .filter(|(_, c)| !c)
        .map(|(s, _)| s)
        .collect();
    // Idle connections are closed after the header-read timeout.
    for s in idle.iter_mut() {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "an idle connection stayed open"
        );
    }
    // A body that never arrives: 408 at the request deadline.
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"PUT /v1/kv/slow HTTP/1.1\r\nHost: w\r\nContent-Length: 1000000\r\n\r\nabc")
        .await?;
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let head = String::from_utf8_lossy(&out);
    assert!(head.starts_with("HTTP/1.1 408"), "a stalled body got: {head:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // The node serves on, and nothing was written by the stalled request.
    assert!(c.client(leader).put("after-bounds", "ok").await.is_success());
    assert_eq!(c.client(leader).get("slow").await.into_result()?, None);
    Ok(())
}

/// Sends `head` (a request head, no body or only part of it) on a new
/// connection and returns what came back within `within`, and how long it took.
async fn answer_to(addr: std::net::SocketAddr, head: &str, within: Duration) -> Result<(String, Duration)> {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(head.as_bytes()).await?;
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    Ok((String::from_utf8_lossy(&out).into_owned(), started.elapsed()))
}

/// Bodies are bounded per route and in time, with the default settings: a
/// declared body above a route's limit is refused at once with 413 (peer
/// routes included: on 638758b `/raft/snapshot` had no limit and buffered
/// whatever came), and a body that does not arrive is cut off with 408
/// after the body-read timeout (10 s), well before the request deadline
/// (60 s, which was the only bound on 638758b).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_per_route_and_in_time() -> Result<()> {
    let mut c = Cluster::start("body-bounds").await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let addr = c.node(leader).listen();
    let within = Duration::from_secs(5);
    for (route, length) in [
        ("/raft/snapshot", 2u64 << 30),
        ("/raft/vote", 1 << 20),
        ("/raft/append", 64 << 20),
        ("/v1/kv/big", 1 << 30),
    ] {
        let method = if route.starts_with("/v1/") { "PUT" } else { "POST" };
        let head = format!("{method} {route} HTTP/1.1\r\nHost: w\r\nContent-Length: {length}\r\n\r\n");
        let (answer, took) = answer_to(addr, &head, within).await?;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{route} with a {length}-byte body: {answer:?} after {took:?}"
        );
    }
    // Stalled bodies under the limits: 408 after the body-read timeout.
    let deadline = Duration::from_secs(20);
    for (method, route, length) in [
        ("PUT", "/v1/kv/stalled", 1_000_000u64),
        // Under one snapshot piece (4 MiB and its header): the route's limit.
        ("POST", "/raft/snapshot", 2 << 20),
    ] {
        let head = format!("{method} {route} HTTP/1.1\r\nHost: w\r\nContent-Length: {length}\r\n\r\nabc");
        let (answer, took) = answer_to(addr, &head, deadline).await?;
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{route}, stalled: {answer:?} after {took:?}"
        );
        assert!(
            took < Duration::from_secs(15),
            "{route}: cut off after {took:?}, not at the body-read timeout"
        );
    }
    assert!(c.client(leader).put("after-bodies", "ok").await.is_success());
    assert_eq!(c.client(leader).get("stalled").await.into_result()?, None);
    Ok(())
}
