//! The clusters under test. `LocalCluster` is what `walship soak` and
//! `walship bench` share: ZooKeeper (ours, or an existing one), nodes 1 and
//! 2 as `procs::NodeProc`s, and the waits for a ready leader, a live node
//! and caught-up nodes. `SoakCluster` adds two fault proxies per node:
//!
//! - a peer proxy in front of each node: node `i` listens on its own port
//!   and advertises its proxy's address, so the other node (peer RPC and
//!   forwarded client requests) reaches it only through the proxy, while
//!   the soak's clients go direct: cutting both peer proxies separates the
//!   nodes from each other and from nothing else;
//! - a ZooKeeper proxy per node between it and ZooKeeper (the node's `--zk`
//!   is its proxy), so one node's link to ZooKeeper can be cut while the
//!   other keeps its own. With an ensemble of our own (`--ensemble`), one
//!   per server per node: node `i`'s `--zk` lists its three proxies, and
//!   cutting its link cuts all three.
//!
//! and a fault-hook directory per node (`WALSHIP_FAULT_DIR`, see `disk`).
//! Every wait here polls against a deadline.

use std::net::SocketAddr;
use std::ops::Deref;
use std::ops::DerefMut;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

use super::client::NodeClient;
use super::client::Status;
use super::disk::FaultDir;
use super::procs::NodeProc;
use super::procs::NodeSpec;
use super::procs::ZkMode;
use super::procs::ZkServer;
use walship_testkit::faultproxy::CutMode;
use walship_testkit::faultproxy::FaultProxy;

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
    /// Our own ZooKeeper: one server, or the servers of an ensemble (none
    /// for an existing one: not ours to restart).
    pub zk: Vec<ZkServer>,
    nodes: Vec<NodeProc>,
    /// Short-timeout clients for status polls, by id - 1.
    polls: Vec<NodeClient>,
    polling: Polling,
}

impl LocalCluster {
    /// Nodes 1 and 2 as `specs` say (not started yet).
    pub fn new(name: &str, zk: Option<ZkServer>, zk_addr: String, specs: Vec<NodeSpec>, polling: Polling) -> Self {
        Self::with_servers(name, zk.into_iter().collect(), zk_addr, specs, polling, None)
    }

    /// `new` with every ZooKeeper server of ours (an ensemble).
    pub fn with_servers(
        name: &str,
        zk: Vec<ZkServer>,
        zk_addr: String,
        specs: Vec<NodeSpec>,
        polling: Polling,
        client_tls: Option<rustls::ClientConfig>,
    ) -> Self {
        let https = client_tls.is_some();
        let http = NodeClient::pool(client_tls);
        let polls = specs
            .iter()
            .map(|s| NodeClient::new(http.clone(), s.listen, https).with_timeout(polling.request_timeout))
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
        for z in &self.zk {
            if let Some(p) = z.pid() {
                let name = match z.myid() {
                    0 => "zookeeper".to_string(),
                    id => format!("zookeeper{id}"),
                };
                out.push((name, p));
            }
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
        for zk in self.zk.iter_mut() {
            if let Err(e) = zk.stop().await {
                eprintln!("{tool}: stopping ZooKeeper {}: {e:#}", zk.addr());
            }
        }
    }
}

pub struct ClusterConfig {
    pub run_dir: PathBuf,
    pub bin: PathBuf,
    /// An existing ZooKeeper; `None` starts a private one in `<run_dir>/zk`
    /// (or an ensemble, see `ensemble`).
    pub zk: Option<String>,
    /// Start a private ensemble of this many servers (`<run_dir>/zk1`..)
    /// instead of one.
    pub ensemble: Option<u32>,
    pub cluster: String,
    /// TLS mode: dev-ca certificates in `<run_dir>/certs`, clients on https.
    pub tls: bool,
}

/// The soak's cluster: a `LocalCluster` (which it derefs to) with the fault
/// proxies and fault dirs of both nodes.
pub struct SoakCluster {
    local: LocalCluster,
    /// In front of each node, for the other node, by id - 1.
    proxies: Vec<Arc<FaultProxy>>,
    /// Between each node and ZooKeeper, by id - 1, one per ZooKeeper
    /// server (empty when ZooKeeper is an ensemble given with --zk: the
    /// soak does not know its servers).
    zk_proxies: Vec<ZkLink>,
    fault_dirs: Vec<FaultDir>,
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
        let (zk, zk_addr) = match (&cfg.zk, cfg.ensemble) {
            (Some(addr), _) => (Vec::new(), addr.clone()),
            (None, Some(n)) => {
                let servers = ZkServer::start_ensemble(&cfg.run_dir, n).await?;
                let a = servers.iter().map(|z| z.addr()).collect::<Vec<_>>().join(",");
                (servers, a)
            }
            (None, None) => {
                let z = ZkServer::start(&cfg.run_dir.join("zk")).await?;
                let a = z.addr();
                (vec![z], a)
            }
        };
        let certs = cfg.run_dir.join("certs");
        let client_tls = if cfg.tls {
            walship::devca::write(&walship::devca::DevCaArgs {
                dir: certs.clone(),
                cluster: cfg.cluster.clone(),
                hosts: Vec::new(),
                zk_hosts: Vec::new(),
                force: true,
            })
            .map_err(anyhow::Error::msg)?;
            let identity = (certs.join("client.pem"), certs.join("client-key.pem"));
            Some(
                walship::tls::client_config(&certs.join("ca.pem"), Some((&identity.0, &identity.1)))
                    .map_err(anyhow::Error::msg)?,
            )
        } else {
            None
        };
        let http = NodeClient::pool(client_tls.clone());
        let mut specs = Vec::new();
        let mut proxies = Vec::new();
        let mut zk_proxies = Vec::new();
        let mut fault_dirs = Vec::new();
        let mut clients = Vec::new();
        // One proxy per node per server we know the address of.
        let zk_upstream: Vec<SocketAddr> = if zk.is_empty() {
            zk_socket_addr(&zk_addr).await.into_iter().collect()
        } else {
            zk.iter().filter_map(|z| z.addr().parse().ok()).collect()
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        for id in [1u64, 2] {
            let mut spec = NodeSpec::local(id, &cfg.bin, &cfg.cluster, &zk_addr, &cfg.run_dir)?;
            let proxy = FaultProxy::start(loopback, spec.listen)
                .await
                .context("start the fault proxy")?;
            spec.advertise = Some(proxy.addr());
            if !zk_upstream.is_empty() {
                let mut link = Vec::new();
                for up in &zk_upstream {
                    let zp = FaultProxy::start(loopback, *up)
                        .await
                        .context("start the ZooKeeper fault proxy")?;
                    link.push(Arc::new(zp));
                }
                spec.zk = link.iter().map(|p| p.addr().to_string()).collect::<Vec<_>>().join(",");
                zk_proxies.push(ZkLink(link));
            }
            let fd = FaultDir::new(cfg.run_dir.join(format!("fault{id}")));
            fd.reset()?;
            spec.fault_dir = Some(fd.path().to_path_buf());
            spec.extra_args = NODE_ARGS.iter().map(|s| s.to_string()).collect();
            if cfg.tls {
                let file = |name: String| certs.join(name).display().to_string();
                spec.extra_args.extend([
                    "--tls-cert-file".to_string(),
                    file(format!("node{id}.pem")),
                    "--tls-key-file".to_string(),
                    file(format!("node{id}-key.pem")),
                    "--tls-ca-file".to_string(),
                    file("ca.pem".to_string()),
                ]);
            }
            clients.push(NodeClient::new(http.clone(), spec.listen, cfg.tls));
            specs.push(spec);
            proxies.push(Arc::new(proxy));
            fault_dirs.push(fd);
        }
        let polling = Polling {
            tool: "walship soak",
            every: Duration::from_millis(50),
            request_timeout: Duration::from_secs(1),
        };
        let mut cluster = SoakCluster {
            local: LocalCluster::with_servers(&cfg.cluster, zk, zk_addr, specs, polling, client_tls),
            proxies,
            zk_proxies,
            fault_dirs,
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

    /// Cut both directions between the nodes.
    pub fn cut(&self, mode: CutMode) {
        for p in &self.proxies {
            p.cut(mode);
        }
    }

    pub fn heal(&self) {
        for p in &self.proxies {
            p.heal();
        }
    }

    /// Whether each node has its own ZooKeeper proxy (one ZooKeeper address).
    pub fn has_zk_proxies(&self) -> bool {
        !self.zk_proxies.is_empty()
    }

    /// Node `id`'s link to ZooKeeper (the other node keeps its own).
    pub fn zk_link(&self, id: u64) -> Result<ZkLink> {
        match self.zk_proxies.get((id - 1) as usize) {
            Some(p) => Ok(p.clone()),
            None => bail!("no ZooKeeper proxy for node {id} (--zk names an ensemble)"),
        }
    }

    /// Cuts node `id`'s link to ZooKeeper.
    pub fn cut_zk(&self, id: u64, mode: CutMode) -> Result<()> {
        self.zk_link(id)?.cut(mode);
        Ok(())
    }

    pub fn heal_zk(&self, id: u64) -> Result<()> {
        self.zk_link(id)?.heal();
        Ok(())
    }

    pub fn fault_dir(&self, id: u64) -> &FaultDir {
        &self.fault_dirs[(id - 1) as usize]
    }

    /// `/v1/status` of node `id` (short timeout), if it answers.
    pub async fn status_of(&self, id: u64) -> Option<Status> {
        self.local.polls[(id - 1) as usize].status().await
    }

    /// Kills both nodes at once (SIGKILL to both, then reap both).
    pub async fn kill_both(&mut self) -> Result<()> {
        self.node(1).sigkill()?;
        self.node(2).sigkill()?;
        self.node(1).reap().await?;
        self.node(2).reap().await
    }

    /// Empties node `id`'s data dir and its fault dir (stopped node).
    pub fn wipe(&mut self, id: u64) -> Result<()> {
        self.node(id).wipe()?;
        self.fault_dirs[(id - 1) as usize].reset()
    }

    /// Heals every link and lifts every disk fault, then stops everything
    /// we started (`LocalCluster::stop_all`).
    pub async fn stop_all(&mut self) {
        self.heal();
        for p in &self.zk_proxies {
            p.heal();
        }
        for z in self.local.zk.iter_mut() {
            if z.is_frozen() {
                let _ = z.thaw();
            }
        }
        for d in &self.fault_dirs {
            if let Err(e) = d.clear() {
                eprintln!("walship soak: {e:#}");
            }
        }
        self.local.stop_all().await;
    }
}

/// One node's link to ZooKeeper: its proxy to each server.
#[derive(Clone)]
pub struct ZkLink(Vec<Arc<FaultProxy>>);

impl ZkLink {
    pub fn cut(&self, mode: CutMode) {
        for p in &self.0 {
            p.cut(mode);
        }
    }

    pub fn heal(&self) {
        for p in &self.0 {
            p.heal();
        }
    }
}

/// The ensemble's state as `srvr` tells it.
#[derive(Clone, Debug, Default)]
pub struct ZkView {
    /// Index (in `LocalCluster::zk`) of the server that says it leads.
    pub leader: Option<usize>,
    /// Servers that serve (leader, follower or standalone).
    pub serving: usize,
}

impl ZkView {
    /// A leader and a majority of `n` servers serving.
    pub fn has_quorum(&self, n: usize) -> bool {
        self.leader.is_some() && self.serving > n / 2
    }
}

impl LocalCluster {
    /// Asks every running, unfrozen server of ours what it is.
    pub async fn zk_view(&mut self) -> ZkView {
        let mut v = ZkView::default();
        for (i, z) in self.zk.iter_mut().enumerate() {
            match z.mode().await {
                Some(ZkMode::Leader) => {
                    v.leader = Some(i);
                    v.serving += 1;
                }
                Some(ZkMode::Follower | ZkMode::Standalone) => v.serving += 1,
                Some(ZkMode::NotServing) | None => {}
            }
        }
        v
    }

    /// Polls until the ensemble has a leader and a quorum serving; the
    /// instant it was first seen so.
    pub async fn wait_zk_quorum(&mut self, timeout: Duration) -> Result<(Instant, ZkView)> {
        let end = Instant::now() + timeout;
        let n = self.zk.len();
        loop {
            let v = self.zk_view().await;
            if v.has_quorum(n) {
                return Ok((Instant::now(), v));
            }
            if Instant::now() >= end {
                bail!("ZooKeeper had no leader with a quorum within {timeout:?} ({v:?})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until every running server of ours serves again.
    pub async fn wait_zk_whole(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let v = self.zk_view().await;
            if v.leader.is_some() && v.serving == self.zk.len() {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!("ZooKeeper servers not all serving within {timeout:?} ({v:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// ZooKeeper's one address, for a proxy; `None` for an ensemble
/// (`a:1,b:2`) or a name that does not resolve.
async fn zk_socket_addr(zk: &str) -> Option<SocketAddr> {
    if zk.contains(',') {
        return None;
    }
    if let Ok(a) = zk.parse::<SocketAddr>() {
        return Some(a);
    }
    tokio::net::lookup_host(zk).await.ok()?.next()
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
