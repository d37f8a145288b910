//! Baseline (a): the same writes straight to ZooKeeper, one znode per key,
//! each write one `setData` (the znodes are created before the measured
//! window), pipelined: N concurrent tasks share one zookeeper-client session,
//! whose requests go out back to back on one connection. Reads, for
//! reference, are `sync` + `getData` (ZooKeeper's linearizable read).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use futures::StreamExt;
use zookeeper_client as zk;

/// Root of the baseline's znodes (walship's own live under /walship).
pub const ROOT: &str = "/bench-zk";

/// A session of the bench's own on `addr` (zk-direct, `zkfloor`).
pub async fn connect(addr: &str) -> Result<zk::Client> {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(6))
        .with_connection_timeout(Duration::from_secs(4))
        .connect(addr)
        .await
        .with_context(|| format!("connect to ZooKeeper at {addr}"))
}

#[derive(Clone)]
pub struct ZkDirect {
    client: zk::Client,
    paths: Arc<Vec<String>>,
}

impl ZkDirect {
    /// Connects and creates `keyspace` znodes under `/bench-zk/<point>` holding `value`.
    pub async fn prepare(addr: &str, point: &str, keyspace: u64, value: &[u8]) -> Result<ZkDirect> {
        let client = connect(addr).await?;
        let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        for p in [ROOT.to_string(), format!("{ROOT}/{point}")] {
            match client.create(&p, &[], &opts).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(e).with_context(|| format!("create {p}")),
            }
        }
        let paths: Vec<String> = (0..keyspace).map(|i| format!("{ROOT}/{point}/k{i:07}")).collect();
        let creates = futures::stream::iter(paths.iter().cloned())
            .map(|p| {
                let c = client.clone();
                let v = value.to_vec();
                async move {
                    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                    match c.create(&p, &v, &opts).await {
                        Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
                        Err(e) => Err(anyhow::anyhow!("create {p}: {e}")),
                    }
                }
            })
            .buffer_unordered(256)
            .collect::<Vec<_>>()
            .await;
        creates.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(ZkDirect {
            client,
            paths: Arc::new(paths),
        })
    }

    pub async fn set(&self, index: u64, value: &[u8]) -> Result<(), String> {
        let p = &self.paths[index as usize % self.paths.len()];
        self.client
            .set_data(p, value, None)
            .await
            .map(|_| ())
            .map_err(|e| format!("setData {p}: {e}"))
    }

    pub async fn read(&self, index: u64) -> Result<(), String> {
        let p = &self.paths[index as usize % self.paths.len()];
        self.client.sync(p).await.map_err(|e| format!("sync {p}: {e}"))?;
        self.client
            .get_data(p)
            .await
            .map(|_| ())
            .map_err(|e| format!("getData {p}: {e}"))
    }

    /// Deletes the point's znodes (not timed), so ZooKeeper's memory holds
    /// only walship's state and the current point.
    pub async fn cleanup(&self, point: &str) -> Result<()> {
        let results = futures::stream::iter(self.paths.iter().cloned())
            .map(|p| {
                let c = self.client.clone();
                async move { c.delete(&p, None).await }
            })
            .buffer_unordered(256)
            .collect::<Vec<_>>()
            .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            anyhow::bail!("delete under {ROOT}/{point}: {e}");
        }
        let _ = self.client.delete(&format!("{ROOT}/{point}"), None).await;
        Ok(())
    }
}
