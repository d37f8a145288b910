//! ZooKeeper's own security, as walship uses it: SASL DIGEST-MD5 instead of
//! the clear-text digest scheme (`--zk-sasl`), and TLS to a ZooKeeper that
//! has only a secure client port (`--zk-tls-ca-file`, `--zk-tls-cert-file`,
//! `--zk-tls-key-file`). Each test starts its own ZooKeeper configured that
//! way (see `walship_testkit::ZkOptions`, the same settings as `zk/zk.sh`).

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::cluster::FIRST_LEADER_TIMEOUT;
use common::ports::free_addr;
use common::{Cluster, Deadline, Node, Setup};
use zookeeper_client as zk;

const TIMEOUT: Duration = Duration::from_secs(30);
const SECRET: &str = "correct horse battery staple";

fn write_secret(dir: &Path, name: &str, secret: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n"))?;
    Ok(path.display().to_string())
}

/// Every znode under `root` (itself included), breadth first, with its ACL
/// as `scheme:id:perms`.
async fn acls_under(client: &zk::Client, root: &str) -> Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    let mut queue = vec![root.to_string()];
    while let Some(path) = queue.pop() {
        let (acl, _) = client.get_acl(&path).await.with_context(|| format!("get acl {path}"))?;
        let shown = acl
            .iter()
            .map(|a| {
                let perms = if a.permission() == zk::Permission::ALL {
                    "cdrwa".to_string()
                } else {
                    format!("{:?}", a.permission())
                };
                format!("{}:{}:{perms}", a.scheme(), a.id())
            })
            .collect();
        out.push((path.clone(), shown));
        for child in client.list_children(&path).await? {
            queue.push(format!("{path}/{child}"));
        }
    }
    Ok(out)
}

/// Waits for a node process that must not start: its exit, and its log.
async fn refused_start(node: &mut Node, within: Duration) -> Result<String> {
    let deadline = Deadline::after(within, format!("node {} to exit", node.id()));
    loop {
        if let Some(status) = node.exited() {
            if status.success() {
                bail!("node {} exited 0: {}", node.id(), node.log_tail(30));
            }
            return Ok(node.log_tail(30));
        }
        if node.client().live().await.is_success() {
            bail!("node {} serves: {}", node.id(), node.log_tail(30));
        }
        deadline.tick(&"still running").await?;
    }
}

/// With `--zk-sasl` on a ZooKeeper with the SASL provider and the JAAS file
/// of `walship zk-jaas`: the cluster starts and serves; every znode of the
/// cluster carries `sasl:walship` (all rights) and nothing else, so an
/// unauthenticated client, and one with the secret in the old digest
/// scheme, can neither read nor write them; a node with a wrong secret is
/// refused at once (SASL) or cannot read the cluster (digest), and the
/// cluster is untouched. On the old code `--zk-sasl` does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_cluster_serves_and_its_znodes_carry_the_sasl_acl() -> Result<()> {
    let secrets = tempfile::tempdir()?;
    let secret = write_secret(secrets.path(), "secret", SECRET)?;
    let mut c = Setup::test("zk-sasl").zk_sasl(Path::new(&secret)).start_zk().await?;
    let jaas = std::fs::read_to_string(c.zk().options().jaas_file.as_ref().expect("jaas"))?;
    assert!(jaas.contains("user_walship=\""), "{jaas}");
    assert!(
        !jaas.contains(SECRET),
        "ZooKeeper's JAAS file holds a derived password, not the secret"
    );
    c.set_node_args(&["--secret-file", &secret, "--zk-sasl"]);
    for id in [1, 2] {
        c.spawn_node(id).await?;
    }
    let leader = c.wait_for_leader(FIRST_LEADER_TIMEOUT).await?;
    let follower = Cluster::other(leader);
    assert!(c.client(follower).put("k", "v1").await.is_success(), "forwarded write");
    assert!(c.client(leader).put("k2", "v2").await.is_success());
    assert_eq!(c.client(follower).get("k").await.into_result()?, Some("v1".to_string()));

    let root = format!("/walship/{}", c.name);
    let password = walship::auth::zk_sasl_password(SECRET);
    let sasl = zk::Client::connector()
        .with_sasl(zk::SaslOptions::digest_md5("walship", password))
        .connect(&c.zk().addr())
        .await?;
    let acls = acls_under(&sasl, &root).await?;
    for leaf in ["members", "members/1", "members/2", "witness", "leader"] {
        let path = format!("{root}/{leaf}");
        assert!(acls.iter().any(|(p, _)| *p == path), "{path} missing: {acls:?}");
    }
    for (path, acl) in &acls {
        assert_eq!(acl, &vec!["sasl:walship:cdrwa".to_string()], "{path}");
    }

    // Outsiders: no credentials, and the secret in the old digest scheme.
    let anonymous = zk::Client::connect(&c.zk().addr()).await?;
    let digest = zk::Client::connector()
        .with_auth("digest", format!("walship:{SECRET}").as_bytes())
        .connect(&c.zk().addr())
        .await?;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let witness = format!("{root}/witness");
    for (who, client) in [("anonymous", &anonymous), ("digest", &digest)] {
        assert_eq!(client.get_data(&witness).await.err(), Some(zk::Error::NoAuth), "{who}");
        assert_eq!(
            client.set_data(&witness, b"x", None).await.err(),
            Some(zk::Error::NoAuth),
            "{who}"
        );
        assert_eq!(
            client
                .set_data(&format!("{root}/members/{follower}"), b"127.0.0.1:1", None)
                .await
                .err(),
            Some(zk::Error::NoAuth),
            "{who} cannot redirect a node"
        );
        assert_eq!(
            client.create(&format!("{root}/members/3"), b"x", &open).await.err(),
            Some(zk::Error::NoAuth),
            "{who}"
        );
        assert_eq!(
            client.delete(&format!("{root}/leader"), None).await.err(),
            Some(zk::Error::NoAuth),
            "{who}"
        );
    }

    // A node with the wrong secret: refused by SASL at once, naming what to check.
    let wrong = write_secret(secrets.path(), "wrong", "not the secret")?;
    let mut intruder = Node::spawn_with(
        follower,
        &c.name,
        &c.zk().addr(),
        &c.dir().join("intruder"),
        free_addr()?,
        &["--secret-file".into(), wrong.clone(), "--zk-sasl".into()],
    )?;
    let log = refused_start(&mut intruder, TIMEOUT).await?;
    assert!(
        log.contains("refused this node's SASL DIGEST-MD5 credentials") && log.contains("secret_file"),
        "{log}"
    );
    // With the wrong secret in the digest scheme it gets a session, but no
    // further than the cluster's root.
    let mut intruder = Node::spawn_with(
        follower,
        &c.name,
        &c.zk().addr(),
        &c.dir().join("intruder2"),
        free_addr()?,
        &["--secret-file".into(), wrong],
    )?;
    let log = refused_start(&mut intruder, TIMEOUT).await?;
    assert!(log.contains("not authorized"), "{log}");

    // The cluster did not notice.
    assert_eq!(c.wait_for_leader(TIMEOUT).await?, leader);
    assert!(c.client(follower).put("k3", "v3").await.is_success());
    for (path, acl) in acls_under(&sasl, &root).await? {
        assert_eq!(acl, vec!["sasl:walship:cdrwa".to_string()], "{path}");
    }
    Ok(())
}

/// The node flags of ZooKeeper TLS with the cluster's dev-ca files: the
/// CA, and node `{id}`'s certificate as the client certificate
/// (`ssl.clientAuth=need` in the harness).
fn zk_tls_args(certs: &Path, ca: &Path) -> Vec<String> {
    let d = certs.display();
    vec![
        "--zk-tls-ca-file".into(),
        ca.display().to_string(),
        "--zk-tls-cert-file".into(),
        format!("{d}/node{{id}}.pem"),
        "--zk-tls-key-file".into(),
        format!("{d}/node{{id}}-key.pem"),
    ]
}

/// A ZooKeeper with only a secure client port (and SASL, as in production):
/// the nodes reach it over TLS with `--zk-tls-*` and `--zk-sasl`, serve
/// writes, fail over after kill -9 of the leader, take the old leader back,
/// and carry on through a restart of ZooKeeper (the session keeper probes
/// the servers over TLS while disconnected). On the old code
/// `--zk-tls-ca-file` does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_zookeeper_serves_and_fails_over() -> Result<()> {
    let secrets = tempfile::tempdir()?;
    let secret = write_secret(secrets.path(), "secret", SECRET)?;
    let mut c = Setup::test("zk-tls")
        .zk_sasl(Path::new(&secret))
        .zk_tls()
        .start_zk()
        .await?;
    let cfg = std::fs::read_to_string(c.zk().dir().join("zoo.cfg"))?;
    assert!(
        !cfg.lines().any(|l| l.starts_with("clientPort")) && cfg.contains("secureClientPort="),
        "{cfg}"
    );
    // Plain ZooKeeper gets no answer there.
    let plain = walship_zk::four_letter(&c.zk().addr(), "srvr", Duration::from_millis(500)).await;
    assert!(!plain.is_ok_and(|r| r.contains("Mode:")), "the port speaks only TLS");

    let certs = c.tls_dir();
    let mut args = zk_tls_args(&certs, &certs.join("ca.pem"));
    args.extend(["--secret-file".into(), secret.clone(), "--zk-sasl".into()]);
    c.set_node_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for id in [1, 2] {
        c.spawn_node(id).await?;
    }
    let leader = c.wait_for_leader(FIRST_LEADER_TIMEOUT).await?;
    let follower = Cluster::other(leader);
    for i in 0..5 {
        let via = if i % 2 == 0 { leader } else { follower };
        assert!(c.client(via).put(&format!("k{i}"), format!("v{i}")).await.is_success());
    }

    // Over TLS with SASL: the znodes carry the SASL ACL.
    let tls = c.zk().options().client_tls().expect("tls");
    let sasl = zk::Client::connector()
        .with_tls(tls.options())
        .with_sasl(zk::SaslOptions::digest_md5(
            "walship",
            walship::auth::zk_sasl_password(SECRET),
        ))
        .secure_connect(&c.zk().addr())
        .await?;
    for (path, acl) in acls_under(&sasl, &format!("/walship/{}", c.name)).await? {
        assert_eq!(acl, vec!["sasl:walship:cdrwa".to_string()], "{path}");
    }
    drop(sasl);

    c.node_mut(leader).kill9().await?;
    let new_leader = c.wait_for_new_leader(leader, TIMEOUT).await?;
    assert_eq!(new_leader, follower);
    assert!(c.client(new_leader).put("after-failover", "x").await.is_success());
    for i in 0..5 {
        assert_eq!(
            c.client(new_leader).get(&format!("k{i}")).await.into_result()?,
            Some(format!("v{i}")),
            "acknowledged before the kill"
        );
    }
    c.node_mut(leader).start()?;
    c.node_mut(leader).wait_live(TIMEOUT).await?;

    // ZooKeeper restarts: both sessions drop and come back over TLS.
    c.zk_mut().restart().await?;
    let deadline = Deadline::after(TIMEOUT, "a write after ZooKeeper's restart");
    loop {
        let reply = c.client(new_leader).put("after-zk-restart", "y").await;
        if reply.is_success() {
            break;
        }
        deadline.tick(&reply.to_string()).await?;
    }
    let leader_now = c.wait_for_leader(TIMEOUT).await?;
    let deadline = Deadline::after(TIMEOUT, "the restarted node to hold every write");
    loop {
        let got = c.client(Cluster::other(leader_now)).get_stale("after-zk-restart").await;
        if matches!(&got, common::Reply::Success { value: Some(v), .. } if v == "y") {
            break;
        }
        deadline.tick(&got.to_string()).await?;
    }
    Ok(())
}

/// A node whose `--zk-tls-ca-file` is not the CA of ZooKeeper's certificate
/// cannot connect and says so, naming the setting; one without the client
/// certificate ZooKeeper asks for is told to give `zk_tls_cert_file`.
/// On the old code the settings do not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zk_tls_with_the_wrong_ca_is_refused_naming_the_setting() -> Result<()> {
    let mut c = Setup::test("zk-tls-ca").zk_tls().start_zk().await?;
    let certs = c.tls_dir();
    let other = c.dir().join("other-ca");
    let out = std::process::Command::new(common::WALSHIP_BIN)
        .args(["dev-ca", "--cluster", "other", "--dir"])
        .arg(&other)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let args = zk_tls_args(&certs, &other.join("ca.pem"));
    c.set_node_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let e = c.spawn_node(1).await.expect_err("the wrong CA");
    let e = format!("{e:#}");
    assert!(
        e.contains("zk_tls_ca_file") && e.contains("does not accept") && e.contains(&other.display().to_string()),
        "{e}"
    );

    let ca = certs.join("ca.pem").display().to_string();
    c.set_node_args(&["--zk-tls-ca-file", &ca]);
    let e = c.spawn_node(2).await.expect_err("no client certificate");
    let e = format!("{e:#}");
    assert!(e.contains("zk_tls_cert_file"), "{e}");

    // With the right files it starts.
    let args = zk_tls_args(&certs, &certs.join("ca.pem"));
    c.set_node_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    c.spawn_node(1).await?;
    Ok(())
}
