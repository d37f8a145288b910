//! The clusters under test. `LocalCluster` is what `walship soak` and
//! `walship bench` share: ZooKeeper (ours, or an existing one), nodes 1 and
//! 2 as `procs::NodeProc`s, and the waits for a ready leader, a live node
//! and caught-up nodes. `SoakCluster` adds a fault proxy in front of each
//! node: node `i` listens on its own port and advertises its proxy's
//! address, so the other node (peer RPC and forwarded client requests)
//! reaches it only through the proxy, while the soak's clients and
//! ZooKeeper traffic go direct: cutting both proxies separates the nodes
//! from each other and from nothing else. Every wait here polls against a
//! deadline.

use std::net::SocketAddr;
use std::ops::Deref;
use std::ops::DerefMut;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

use super::client::NodeClient;
use super::client::Status;
use super::procs::NodeProc;
use super::procs::NodeSpec;
use super::procs::ZkServer;
use crate::faultproxy::CutMode;
use crate::faultproxy::FaultProxy;

/// Flags every soak node gets: snapshots every few hundred entries, so a
/// reborn empty node goes through W's snapshot, not only its WAL.
pub const NODE_ARGS: &[&str] = &["--snapshot-every-entries", "400"];

/// How a tool watches its cluster.
#[derive(Clone, Copy, Debug)]
pub struct Polling {
    /// The tool's name, for messages on stderr ("walship soak").
    pub tool: &'static str,
    /// Between two polls.
    pub every: Duration,
    /// Per status poll: it must not hang on a frozen node.
    pub request_timeout: Duration,
}

/// ZooKeeper and nodes 1 and 2, and the waits on them.
pub struct LocalCluster {
    pub name: String,
    pub zk_addr: String,
    /// Our own ZooKeeper (`None` for an existing one: not ours to restart).
    pub zk: Option<ZkServer>,
    nodes: Vec<NodeProc>,
    /// Short-timeout clients for status polls, by id - 1.
    polls: Vec<NodeClient>,
    polling: Polling,
}

impl LocalCluster {
    /// Nodes 1 and 2 as `specs` say (not started yet).
    pub fn new(name: &str, zk: Option<ZkServer>, zk_addr: String, specs: Vec<NodeSpec>, polling: Polling) -> Self {
        let http = NodeClient::pool();
        let polls = specs
            .iter()
            .map(|s| NodeClient::new(http.clone(), s.listen).with_timeout(polling.request_timeout))
            .collect();
        LocalCluster {
            name: name.to_string(),
            zk_addr,
            zk,
            nodes: specs.into_iter().map(NodeProc::new).collect(),
            polls,
            polling,
        }
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn addr(&self, id: u64) -> SocketAddr {
        self.nodes[(id - 1) as usize].spec.listen
    }

    pub fn log_path(&self, id: u64) -> &Path {
        &self.nodes[(id - 1) as usize].spec.log_path
    }

    /// (name, pid) of every running process: the nodes, then our ZooKeeper.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .nodes
            .iter()
            .filter_map(|n| Some((format!("node{}", n.id()), n.pid()?)))
            .collect();
        if let Some(p) = self.zk.as_ref().and_then(|z| z.pid()) {
            out.push(("zookeeper".into(), p));
        }
        out
    }

    /// A node that exited by itself is a bug: an error with its log tail.
    pub fn check_crashes(&mut self) -> Result<()> {
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

    /// `/v1/status` of every serving node.
    pub async fn statuses(&mut self) -> Vec<(u64, Option<Status>)> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_serving() {
                out.push((self.nodes[i].id(), self.polls[i].status().await));
            }
        }
        out
    }

    /// The one serving node that claims to lead and is ready, if exactly one.
    pub async fn ready_leader(&mut self) -> Option<u64> {
        let mut leaders = Vec::new();
        for (id, s) in self.statuses().await {
            if s.is_some_and(|s| s.is_leader()) && self.polls[(id - 1) as usize].ready().await {
                leaders.push(id);
            }
        }
        match leaders.as_slice() {
            [id] => Some(*id),
            _ => None,
        }
    }

    /// Polls until a ready leader that `accept` takes.
    pub async fn wait_leader(&mut self, timeout: Duration, accept: impl Fn(u64) -> bool) -> Result<u64> {
        let end = Instant::now() + timeout;
        loop {
            self.check_crashes()?;
            if let Some(id) = self.ready_leader().await.filter(|id| accept(*id)) {
                return Ok(id);
            }
            if Instant::now() >= end {
                bail!(
                    "no ready leader within {timeout:?}; statuses: {}; see {} and {}",
                    show(&self.statuses().await),
                    self.log_path(1).display(),
                    self.log_path(2).display()
                );
            }
            tokio::time::sleep(self.polling.every).await;
        }
    }

    /// Polls `/health/live` of node `id`; fails at once if it exits.
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
            tokio::time::sleep(self.polling.every).await;
        }
    }

    /// Polls until both nodes serve and have applied what the leader had
    /// applied when the wait began; returns that leader.
    pub async fn wait_caught_up(&mut self, timeout: Duration) -> Result<u64> {
        let leader = self.wait_leader(timeout, |_| true).await?;
        let target = self.polls[(leader - 1) as usize]
            .status()
            .await
            .and_then(|s| s.applied_index)
            .unwrap_or(0);
        let end = Instant::now() + timeout;
        loop {
            self.check_crashes()?;
            let statuses = self.statuses().await;
            let behind = statuses
                .iter()
                .any(|(_, s)| s.as_ref().and_then(|s| s.applied_index).is_none_or(|a| a < target));
            if !behind && statuses.len() == self.nodes.len() {
                return Ok(leader);
            }
            if Instant::now() >= end {
                bail!(
                    "nodes did not catch up to index {target} within {timeout:?}; statuses: {}",
                    show(&statuses)
                );
            }
            tokio::time::sleep(self.polling.every).await;
        }
    }

    /// Stops everything we started, by pid: nodes (SIGCONT first if frozen,
    /// SIGTERM, SIGKILL if they linger), then our ZooKeeper.
    pub async fn stop_all(&mut self) {
        let tool = self.polling.tool;
        for n in self.nodes.iter_mut() {
            if let Err(e) = n.stop().await {
                eprintln!("{tool}: stopping node {}: {e:#}", n.id());
            }
        }
        if let Some(zk) = self.zk.as_mut() {
            if let Err(e) = zk.stop().await {
                eprintln!("{tool}: stopping ZooKeeper: {e:#}");
            }
        }
    }
}

pub struct ClusterConfig {
    pub run_dir: PathBuf,
    pub bin: PathBuf,
    /// An existing ZooKeeper; `None` starts a private one in `<run_dir>/zk`.
    pub zk: Option<String>,
    pub cluster: String,
}

/// The soak's cluster: a `LocalCluster` (which it derefs to) with a fault
/// proxy in front of each node.
pub struct SoakCluster {
    local: LocalCluster,
    proxies: Vec<FaultProxy>,
    /// Clients for the workload and checks, one per node, by id - 1.
    pub clients: Vec<NodeClient>,
}

impl Deref for SoakCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.local
    }
}

impl DerefMut for SoakCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.local
    }
}

impl SoakCluster {
    /// Starts ZooKeeper (unless given), the proxies and both nodes; returns
    /// once both answer `/health/live` (a leader is `wait_leader`'s job).
    pub async fn start(cfg: &ClusterConfig) -> Result<SoakCluster> {
        let (zk, zk_addr) = match &cfg.zk {
            Some(addr) => (None, addr.clone()),
            None => {
                let z = ZkServer::start(&cfg.run_dir.join("zk")).await?;
                let a = z.addr();
                (Some(z), a)
            }
        };
        let http = NodeClient::pool();
        let mut specs = Vec::new();
        let mut proxies = Vec::new();
        let mut clients = Vec::new();
        for id in [1u64, 2] {
            let mut spec = NodeSpec::local(id, &cfg.bin, &cfg.cluster, &zk_addr, &cfg.run_dir)?;
            let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), spec.listen)
                .await
                .context("start the fault proxy")?;
            spec.advertise = Some(proxy.addr());
            spec.extra_args = NODE_ARGS.iter().map(|s| s.to_string()).collect();
            clients.push(NodeClient::new(http.clone(), spec.listen));
            specs.push(spec);
            proxies.push(proxy);
        }
        let polling = Polling {
            tool: "walship soak",
            every: Duration::from_millis(50),
            request_timeout: Duration::from_secs(1),
        };
        let mut cluster = SoakCluster {
            local: LocalCluster::new(&cfg.cluster, zk, zk_addr, specs, polling),
            proxies,
            clients,
        };
        for id in [1, 2] {
            cluster.node(id).spawn()?;
        }
        for id in [1, 2] {
            cluster.wait_live(id, Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    /// Cut (blackhole) both directions between the nodes.
    pub fn cut(&self) {
        for p in &self.proxies {
            p.cut(CutMode::Blackhole);
        }
    }

    pub fn heal(&self) {
        for p in &self.proxies {
            p.heal();
        }
    }

    /// Heals the cut, then stops everything we started (`LocalCluster::stop_all`).
    pub async fn stop_all(&mut self) {
        self.heal();
        self.local.stop_all().await;
    }
}

fn show(statuses: &[(u64, Option<Status>)]) -> String {
    if statuses.is_empty() {
        return "no serving node".into();
    }
    statuses
        .iter()
        .map(|(id, s)| match s {
            Some(s) => format!(
                "node {id}: {} (leader {:?}, applied {:?})",
                s.role, s.leader, s.applied_index
            ),
            None => format!("node {id}: no answer"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
