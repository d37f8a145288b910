//! The system under test: a private ZooKeeper (`soak::procs::ZkServer`: the
//! java command, classpath and zoo.cfg of zk/zk.sh, on a free loopback port
//! with its own data dir) and nodes 1 and 2 started from this very binary
//! with default node settings (no flags besides identity and addresses).
//! Every wait polls against a deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Result;

use crate::soak::client::NodeClient;
use crate::soak::client::Status;
use crate::soak::procs::free_port;
use crate::soak::procs::NodeProc;
use crate::soak::procs::NodeSpec;
use crate::soak::procs::ZkServer;

const POLL: Duration = Duration::from_millis(20);

pub struct BenchCluster {
    pub name: String,
    pub zk: ZkServer,
    nodes: Vec<NodeProc>,
    /// Short-timeout clients for status polls, by id - 1.
    polls: Vec<NodeClient>,
}

impl BenchCluster {
    /// Starts ZooKeeper, then both nodes; returns once a leader is ready.
    pub async fn start(run_dir: &std::path::Path, bin: &std::path::Path, name: &str) -> Result<BenchCluster> {
        let zk = ZkServer::start(&run_dir.join("zk")).await?;
        let mut cluster = BenchCluster::with_zk(zk, run_dir, bin, name)?;
        for id in [1, 2] {
            cluster.node(id).spawn()?;
        }
        cluster.wait_leader(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    fn with_zk(zk: ZkServer, run_dir: &std::path::Path, bin: &std::path::Path, name: &str) -> Result<BenchCluster> {
        let http = NodeClient::pool();
        let mut nodes = Vec::new();
        let mut polls = Vec::new();
        for id in [1u64, 2] {
            let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            nodes.push(NodeProc::new(NodeSpec {
                id,
                bin: bin.to_path_buf(),
                cluster: name.to_string(),
                zk: zk.addr(),
                data_dir: run_dir.join(format!("node{id}")),
                log_path: run_dir.join(format!("node{id}.log")),
                listen,
                advertise: None,
                extra_args: Vec::new(),
            }));
            polls.push(NodeClient::new(http.clone(), listen).with_timeout(Duration::from_millis(500)));
        }
        Ok(BenchCluster {
            name: name.to_string(),
            zk,
            nodes,
            polls,
        })
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn addr(&self, id: u64) -> SocketAddr {
        self.nodes[(id - 1) as usize].spec.listen
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.nodes[(id - 1) as usize].spec.log_path.clone()
    }

    /// (name, pid) of every process of the cluster, and etcd's if given.
    pub fn pids(&mut self, etcd: Option<u32>) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for id in [1, 2] {
            if let Some(p) = self.node(id).pid() {
                out.push((format!("node{id}"), p));
            }
        }
        if let Some(p) = self.zk.pid() {
            out.push(("zookeeper".into(), p));
        }
        if let Some(p) = etcd {
            out.push(("etcd".into(), p));
        }
        out
    }

    /// A node that exited by itself: an error with its log tail.
    fn check_crashes(&mut self) -> Result<()> {
        for n in self.nodes.iter_mut() {
            if let Some(status) = n.crashed() {
                bail!(
                    "node {} exited by itself ({status}); last lines of {}:\n{}",
                    n.id(),
                    n.spec.log_path.display(),
                    n.log_tail(20)
                );
            }
        }
        Ok(())
    }

    pub async fn status(&mut self, id: u64) -> Option<Status> {
        if !self.node(id).is_serving() {
            return None;
        }
        self.polls[(id - 1) as usize].status().await
    }

    /// The one running node that leads and is ready, if exactly one.
    pub async fn ready_leader(&mut self) -> Option<u64> {
        let mut leaders = Vec::new();
        for id in [1, 2] {
            if self.status(id).await.is_some_and(|s| s.is_leader()) && self.polls[(id - 1) as usize].ready().await {
                leaders.push(id);
            }
        }
        match leaders.as_slice() {
            [id] => Some(*id),
            _ => None,
        }
    }

    pub async fn wait_leader(&mut self, timeout: Duration) -> Result<u64> {
        let end = Instant::now() + timeout;
        loop {
            self.check_crashes()?;
            if let Some(id) = self.ready_leader().await {
                return Ok(id);
            }
            if Instant::now() >= end {
                bail!(
                    "no ready leader within {timeout:?}; see {} and {}",
                    self.log_path(1).display(),
                    self.log_path(2).display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until both nodes run, one leads, and both have applied what
    /// the leader had applied when the wait began.
    pub async fn wait_caught_up(&mut self, timeout: Duration) -> Result<u64> {
        let end = Instant::now() + timeout;
        let leader = self.wait_leader(timeout).await?;
        let target = self.status(leader).await.and_then(|s| s.applied_index).unwrap_or(0);
        loop {
            self.check_crashes()?;
            let mut behind = false;
            for id in [1, 2] {
                let s = self.status(id).await;
                if s.and_then(|s| s.applied_index).is_none_or(|a| a < target) {
                    behind = true;
                }
            }
            if !behind {
                return Ok(leader);
            }
            if Instant::now() >= end {
                bail!("the nodes did not both reach index {target} within {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `/health/live` of node `id`.
    pub async fn wait_live(&mut self, id: u64, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            self.check_crashes()?;
            if self.polls[(id - 1) as usize].live().await {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!(
                    "node {id} not live within {timeout:?}; see {}",
                    self.log_path(id).display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops both nodes, then ZooKeeper, by pid.
    pub async fn stop_all(&mut self) {
        for n in self.nodes.iter_mut() {
            if let Err(e) = n.stop().await {
                eprintln!("walship bench: stopping node {}: {e:#}", n.id());
            }
        }
        if let Err(e) = self.zk.stop().await {
            eprintln!("walship bench: stopping ZooKeeper: {e:#}");
        }
    }
}
