//! TLS mode (`--tls-cert-file`, `--tls-key-file`, `--tls-ca-file`, with
//! certificates from `walship dev-ca`): the cluster serves and fails over
//! over TLS, the CLI speaks https, plain HTTP is refused, and a node's
//! identity is proven by its certificate, not by the address ZooKeeper
//! gives: an impostor at a node's address, holding a valid certificate of
//! another node, gets neither Raft entries nor forwarded writes, and peer
//! routes refuse every certificate but the other node's.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::Cluster;
use common::Deadline;
use common::Reply;
use common::Setup;
use rustls_pki_types::pem::PemObject;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the `walship` CLI with `args`, no `WALSHIP_*` variables from the
/// developer's shell; returns its exit code and output.
fn cli(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(common::WALSHIP_BIN);
    cmd.args(args);
    if args.first() != Some(&"dev-ca") {
        cmd.args(["--timeout-ms", "8000"]);
    }
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
}

/// An https client trusting `certs/ca.pem`, presenting `identity` (a dev-ca
/// file stem such as "client" or "node1") if given.
fn https(certs: &Path, identity: Option<&str>) -> reqwest::Client {
    let files = identity.map(|n| (certs.join(format!("{n}.pem")), certs.join(format!("{n}-key.pem"))));
    let config = walship::tls::client_config(
        &certs.join("ca.pem"),
        files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .expect("client TLS");
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("https client")
}

/// The cluster serves reads and writes through either node over TLS (the
/// follower forwards over TLS), fails over after kill -9, and takes the
/// old leader back; with --tls-client-auth the key-value routes need a
/// client certificate; plain HTTP gets a 400 that says to use https; the
/// CLI works with --tls-ca-file. On the code before TLS mode the nodes do
/// not start (the flags are unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_serves_fails_over_and_the_cli_speaks_https() -> Result<()> {
    let mut c = Setup::test("tls-cluster")
        .tls()
        .node_args(&["--tls-client-auth"])
        .start()
        .await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let certs = c.tls_dir();

    assert!(c.client(follower).put("k1", "through the follower").await.is_success());
    assert!(c.client(leader).put("k2", "through the leader").await.is_success());
    assert_eq!(
        c.client(follower).get("k2").await.into_result()?.as_deref(),
        Some("through the leader")
    );

    // Plain HTTP to a TLS node: a 400 naming the cause, nothing written.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let resp = plain
        .put(format!("http://{}/v1/kv/plain", c.node(leader).listen()))
        .body("x")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 400);
    let body = resp.text().await?;
    assert!(body.contains("TLS only"), "{body}");

    // --tls-client-auth: without a client certificate, status is open and
    // the key-value routes are not; another cluster's CA fails the handshake.
    let anonymous = https(&certs, None);
    let url = |id: u64, path: &str| format!("https://{}{path}", c.node(id).listen());
    let code = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(code(anonymous.get(url(leader, "/v1/status")).send().await?), 200);
    assert_eq!(code(anonymous.get(url(leader, "/v1/kv/k1")).send().await?), 401);
    assert_eq!(
        code(anonymous.put(url(leader, "/v1/kv/plain")).body("x").send().await?),
        401
    );
    assert_eq!(
        c.client(leader).get("plain").await.into_result()?,
        None,
        "the refused writes changed nothing"
    );

    // The CLI, through the follower, with the client certificate.
    let endpoint = c.node(follower).listen().to_string();
    let ca = certs.join("ca.pem").display().to_string();
    let (cert, key) = (
        certs.join("client.pem").display().to_string(),
        certs.join("client-key.pem").display().to_string(),
    );
    let tls_args = [
        "--endpoints",
        &endpoint,
        "--tls-ca-file",
        &ca,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ];
    let (exit, text) = cli(&[&["kv", "put", "cli-key", "cli-value"], &tls_args[..]].concat());
    assert_eq!(exit, Some(0), "{text}");
    let (exit, text) = cli(&[&["kv", "get", "cli-key"], &tls_args[..]].concat());
    assert_eq!((exit, text.trim()), (Some(0), "cli-value"));
    let (exit, text) = cli(&[&["status"], &tls_args[..]].concat());
    assert_eq!(exit, Some(0), "{text}");
    assert!(text.contains("leader"), "{text}");
    let (exit, text) = cli(&["kv", "get", "cli-key", "--endpoints", &endpoint]);
    assert_ne!(exit, Some(0), "plain HTTP to a TLS node: {text}");
    assert!(text.contains("TLS only"), "{text}");
    let (exit, text) = cli(&["kv", "get", "cli-key", "--endpoints", &endpoint, "--tls-ca-file", &ca]);
    assert_ne!(exit, Some(0), "no client certificate: {text}");
    assert!(text.contains("client certificate"), "{text}");

    // kill -9 the leader: the follower takes over; the old leader comes
    // back and catches up, all over TLS.
    c.node_mut(leader).kill9().await?;
    assert_eq!(c.wait_for_new_leader(leader, TIMEOUT).await?, follower);
    let index = c.client(follower).put("after-failover", "yes").await.into_result()?;
    assert_eq!(
        c.client(follower).get("k1").await.into_result()?.as_deref(),
        Some("through the follower")
    );
    c.node_mut(leader).start()?;
    c.node_mut(leader).wait_live(TIMEOUT).await?;
    c.wait_applied(index, TIMEOUT).await?;
    assert_eq!(
        c.client(leader)
            .get_stale("after-failover")
            .await
            .into_result()?
            .as_deref(),
        Some("yes")
    );
    Ok(())
}

/// A TLS server at an address of our choosing, holding a valid certificate
/// (of the cluster's CA) for the wrong node, that would acknowledge
/// anything. Counts the connections made to it and the requests that got
/// through the handshake.
struct Impostor {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Impostor {
    async fn start(cert: &Path, key: &Path) -> Result<Impostor> {
        use tokio::io::AsyncReadExt;
        use tokio::io::AsyncWriteExt;
        let certs = walship::tls::load_certs(cert, "impostor cert").map_err(anyhow::Error::msg)?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let (acceptor, reqs) = (acceptor.clone(), Arc::clone(&reqs));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 64 * 1024];
                    if matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        // A false acknowledgement, were anyone to believe it.
                        let _ = tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"index\":999}")
                            .await;
                    }
                });
            }
        });
        Ok(Impostor {
            addr,
            connections,
            requests,
            task,
        })
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn member_json(id: u64, addr: impl std::fmt::Display) -> Vec<u8> {
    format!(r#"{{"id":{id},"addr":"{addr}"}}"#).into_bytes()
}

/// ZooKeeper says where a node is; only its certificate says who it is.
/// With `members/<leader>` pointing at an impostor that holds the
/// follower's (valid) certificate, the follower forwards no write to it
/// (503, nothing written, the impostor's false 200 never reaches the
/// client); with `members/<follower>` pointing at an impostor that holds
/// the leader's certificate, the leader sends it no entries while it keeps
/// committing. And the peer routes take only the other node's certificate.
/// Before TLS mode, the squatting attack of issue 14 got both the entries
/// (with the peer token) and the forwarded writes (with the client's token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_who_its_certificate_says_not_where_zookeeper_points() -> Result<()> {
    use zookeeper_client as zk;
    let mut c = Setup::test("tls-impostor").tls().start().await?;
    let leader = c.wait_for_leader(TIMEOUT).await?;
    let follower = Cluster::other(leader);
    let certs = c.tls_dir();
    let pem = |n: String| (certs.join(format!("{n}.pem")), certs.join(format!("{n}-key.pem")));
    let zk = zk::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(&c.zk().addr())
        .await?;
    let name = c.name.clone();
    let member = |id: u64| format!("/walship/{name}/members/{id}");

    // Peer routes: only the other node's certificate passes (to the
    // decoder, which refuses this body: 400).
    let vote = |client: reqwest::Client| {
        let url = format!("https://{}/raft/vote", c.node(leader).listen());
        async move { Ok::<u16, anyhow::Error>(client.post(url).body("junk").send().await?.status().as_u16()) }
    };
    assert_eq!(vote(https(&certs, None)).await?, 401, "no certificate");
    assert_eq!(
        vote(https(&certs, Some("client"))).await?,
        403,
        "a client's certificate"
    );
    assert_eq!(
        vote(https(&certs, Some(&format!("node{leader}")))).await?,
        403,
        "the node's own certificate"
    );
    assert_eq!(
        vote(https(&certs, Some(&format!("node{follower}")))).await?,
        400,
        "the other node's certificate"
    );
    // A certificate of another cluster's CA does not get through the handshake.
    let other_ca = c.dir().join("other-certs");
    let (exit, text) = cli(&["dev-ca", "--cluster", "other", "--dir", &other_ca.display().to_string()]);
    assert_eq!(exit, Some(0), "{text}");
    let stranger = {
        let config = walship::tls::client_config(
            &certs.join("ca.pem"),
            Some((&other_ca.join("node2.pem"), &other_ca.join("node2-key.pem"))),
        )
        .map_err(anyhow::Error::msg)?;
        reqwest::Client::builder().use_preconfigured_tls(config).build()?
    };
    let url = format!("https://{}/raft/vote", c.node(leader).listen());
    assert!(stranger.post(url).body("junk").send().await.is_err());

    // 1. members/<leader> → an impostor holding the follower's certificate:
    // the follower's forwarded writes fail the handshake (503).
    let (cert, key) = pem(format!("node{follower}"));
    let impostor = Impostor::start(&cert, &key).await?;
    let (real, _) = zk.get_data(&member(leader)).await?;
    zk.set_data(&member(leader), &member_json(leader, impostor.addr), None)
        .await?;
    // The follower reads addresses again after at most 2 s.
    let deadline = Deadline::after(TIMEOUT, "a forwarded write refused by the follower");
    let mut n = 0;
    let refused_key = loop {
        n += 1;
        let key = format!("forwarded-{n}");
        match c.client(follower).put(&key, "x").await {
            Reply::Success { .. } => deadline.tick(&"still forwarded to the real leader").await?,
            Reply::Failed { status: 503, error } => {
                assert!(error.contains("certificate"), "{error}");
                break key;
            }
            other => panic!("a write through the follower got {other}"),
        }
    };
    assert_eq!(impostor.requests(), 0, "the impostor received a forwarded request");
    assert!(impostor.connections() > 0, "the follower never tried the impostor");
    assert_eq!(
        c.client(leader).get(&refused_key).await.into_result()?,
        None,
        "nothing was written"
    );
    zk.set_data(&member(leader), &real, None).await?;

    // 2. The follower dies; members/<follower> → an impostor holding the
    // leader's certificate: the leader keeps committing (with ZooKeeper) and
    // sends it nothing.
    c.node_mut(follower).kill9().await?;
    let (cert, key) = pem(format!("node{leader}"));
    let impostor = Impostor::start(&cert, &key).await?;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let deadline = Deadline::after(TIMEOUT, "the dead follower's members znode to go");
    loop {
        match zk
            .create(&member(follower), &member_json(follower, impostor.addr), &open)
            .await
        {
            Ok(_) => break,
            Err(zk::Error::NodeExists) => deadline.tick(&"members znode still there").await?,
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = Deadline::after(TIMEOUT, "the leader to try the impostor");
    let mut i = 0;
    while impostor.connections() < 3 {
        i += 1;
        let r = c.client(leader).put(&format!("alone-{i}"), "x").await;
        assert!(r.is_success(), "the leader commits with ZooKeeper alone: {r}");
        deadline
            .tick(&format!("{} connections", impostor.connections()))
            .await?;
    }
    assert_eq!(impostor.requests(), 0, "the impostor received Raft RPC");
    Ok(())
}
