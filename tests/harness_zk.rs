//! Smoke test of the harness's ZooKeeper: it starts on a free loopback port,
//! serves four-letter words with the shared configuration, keeps a written znode
//! across SIGTERM and SIGKILL restarts (forceSync), and stops by pid.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::{TestDir, ZkServer};
use zookeeper_client::{Acls, Client, CreateMode};

async fn connect(zk: &ZkServer) -> Result<Client> {
    Client::connector()
        .with_session_timeout(Duration::from_secs(2))
        .connect(&zk.addr())
        .await
        .with_context(|| format!("connect to ZooKeeper at {}", zk.addr()))
}

#[tokio::test]
async fn zookeeper_starts_serves_survives_restarts_and_stops() -> Result<()> {
    let dir = TestDir::new("harness_zk")?;
    let mut zk = ZkServer::start(&dir.path().join("zk")).await?;

    let srvr = zk.four_letter("srvr").await?;
    assert!(srvr.contains("Mode: standalone"), "srvr reply: {srvr}");
    assert_eq!(zk.four_letter("ruok").await?, "imok");
    let conf = zk.four_letter("conf").await?;
    for setting in ["tickTime=100", "minSessionTimeout=400", "maxSessionTimeout=6000"] {
        assert!(conf.contains(setting), "{setting} missing from conf: {conf}");
    }
    let port = zk.port();
    assert!(zk.log_path().is_file(), "ZooKeeper logs to {}", zk.log_path().display());

    // A znode written before a restart is there after it, whichever way it stopped.
    let client = connect(&zk).await?;
    let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
    client.create("/harness", b"durable", &options).await?;
    drop(client);

    let status = zk.stop().await?;
    assert!(
        zk.four_letter("srvr").await.is_err(),
        "still answering after SIGTERM ({status})"
    );
    zk.start_again().await?;
    assert_eq!(zk.port(), port, "a restart keeps the port");
    assert_eq!(connect(&zk).await?.get_data("/harness").await?.0, b"durable");

    zk.restart_kill9().await?;
    assert_eq!(connect(&zk).await?.get_data("/harness").await?.0, b"durable");

    zk.kill9().await?;
    assert!(!zk.is_running());
    assert!(zk.four_letter("ruok").await.is_err(), "still answering after SIGKILL");
    Ok(())
}

#[tokio::test]
async fn two_zookeepers_run_side_by_side() -> Result<()> {
    let dir = TestDir::new("harness_zk_pair")?;
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b) = tokio::try_join!(ZkServer::start(&dir_a), ZkServer::start(&dir_b))?;
    assert_ne!(a.port(), b.port());
    assert!(a.four_letter("srvr").await?.contains("Mode:"));
    assert!(b.four_letter("srvr").await?.contains("Mode:"));
    // Drop kills both.
    Ok(())
}
