//! A whole walship deployment: our ZooKeeper (one server, an ensemble, or an
//! existing one that is not ours to restart), nodes 1 and 2 under one cluster
//! name, and the waits on them, in one directory. The integration tests, the
//! soak and the bench all run their clusters through it.
//!
//! [`Setup`] says how: a test's (a fresh [`TestDir`] named after the test, a
//! unique cluster name, processes in the caller's process group) or a tool's
//! (its run dir and cluster name, processes in groups of their own), and:
//!
//! - `partitionable`: a [`FaultProxy`] in front of each node; the node
//!   advertises the proxy's address (its `members/<id>` znode), so every byte
//!   between the two nodes (Raft RPC, forwarded client requests) goes through
//!   a proxy and `cut_nodes` separates them, while ZooKeeper and the clients
//!   here (which use the real listen addresses) are untouched;
//! - `zk_cuttable`: a proxy per node between it and each ZooKeeper server of
//!   ours (its `--zk` lists them), so one node's link to ZooKeeper can be cut
//!   while the other keeps its own;
//! - `fault_dirs`: each node runs with the storage fault hooks
//!   (`WALSHIP_FAULT_DIR`, [`FaultDir`]);
//! - `tls`: TLS mode with `walship dev-ca` certificates in `<dir>/certs`, and
//!   https clients with its client certificate;
//! - `zk_sasl`, `zk_tls`: a ZooKeeper with SASL, or TLS only.
//!
//! Layout of the directory:
//!
//! ```text
//! zk/ (or zk1/ .. zkN/)   zoo.cfg, log4j.properties, data/, zk.log, zk.out
//! node1/  node1.log       node 1's --data-dir and its stdout/stderr (RUST_LOG=info)
//! node2/  node2.log
//! fault1/ fault2/         the nodes' fault hooks (fault_dirs)
//! certs/  jaas.conf       TLS and SASL material, when asked for
//! ```
//!
//! Every wait polls against a deadline; a node that exits by itself fails it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use walship::client::ClientOptions;
use walship::client::ClientTls;
use walship::client::NodeClient;
use walship::client::Reply;
use walship::client::Status;

use crate::dir::sanitize;
use crate::dir::TestDir;
use crate::disk::FaultDir;
use crate::faultproxy::CutMode;
use crate::faultproxy::FaultProxy;
use crate::faultproxy::ProxyStats;
use crate::node::Node;
use crate::node::NodeSpec;
use crate::ports::free_addr;
use crate::process::example_binary_beside_this_one;
use crate::process::tail;
use crate::process::walship_binary_beside_this_one;
use crate::wait::Deadline;
use crate::zk::ZkMode;
use crate::zk::ZkOptions;
use crate::zk::ZkServer;

/// Time for a fresh cluster to elect its first leader.
pub const FIRST_LEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for a node process to answer `/health/live` after it was started.
pub const LIVE_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 5;

static CLUSTER_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How the waits poll.
#[derive(Clone, Copy, Debug)]
pub struct Polling {
    /// Between two polls.
    pub every: Duration,
    /// Per status poll: it must not hang on a frozen node.
    pub request_timeout: Duration,
}

impl Default for Polling {
    fn default() -> Polling {
        Polling {
            every: crate::wait::POLL_INTERVAL,
            request_timeout: Duration::from_secs(1),
        }
    }
}

enum Place {
    /// A fresh test directory named after the test; a unique cluster name.
    Test(String),
    /// A tool's run dir, and the cluster name it chose.
    RunDir(PathBuf, String),
}

enum Zk {
    Own,
    Ensemble(u32),
    /// An address of someone else's ZooKeeper.
    External(String),
}

/// How a cluster is set up; `start` (or `start_nodes`, `start_zk`) builds it.
pub struct Setup {
    place: Place,
    bin: Option<PathBuf>,
    /// Run this example (`target/<profile>/examples/<name>`) as the nodes.
    example: Option<String>,
    /// Or this program (an embedder's, given by path) as the nodes.
    node_program: Option<PathBuf>,
    zk: Zk,
    zk_options: ZkOptions,
    zk_sasl_secret: Option<PathBuf>,
    zk_tls: bool,
    partitionable: bool,
    zk_cuttable: bool,
    fault_dirs: bool,
    tls: bool,
    node_args: Vec<String>,
    polling: Polling,
    own_process_groups: bool,
}

impl Setup {
    /// A test's cluster: a fresh directory named after `test` (kept when it
    /// fails), a unique cluster name (`<test>-<pid>-<n>`), the `walship`
    /// binary cargo built for the tests, processes in the test's process
    /// group.
    pub fn test(test: &str) -> Setup {
        Setup::new(Place::Test(test.to_string()), false)
    }

    /// A tool's cluster in its run dir (see `prepare_run_dir`), named
    /// `cluster`; processes in groups of their own (the tool handles Ctrl-C
    /// and stops them by pid), ZooKeeper with `zk/zk.sh`'s 1 GB heap.
    pub fn run_dir(dir: &Path, cluster: &str) -> Setup {
        let mut setup = Setup::new(Place::RunDir(dir.to_path_buf(), cluster.to_string()), true);
        setup.zk_options.max_heap = Some("1g".to_string());
        setup
    }

    fn new(place: Place, own_process_groups: bool) -> Setup {
        Setup {
            place,
            bin: None,
            example: None,
            node_program: None,
            zk: Zk::Own,
            zk_options: ZkOptions {
                own_process_group: own_process_groups,
                ..ZkOptions::default()
            },
            zk_sasl_secret: None,
            zk_tls: false,
            partitionable: false,
            zk_cuttable: false,
            fault_dirs: false,
            tls: false,
            node_args: Vec::new(),
            polling: Polling::default(),
            own_process_groups,
        }
    }

    /// The `walship` binary to run (default: the one beside this executable).
    pub fn bin(mut self, bin: &Path) -> Setup {
        self.bin = Some(bin.to_path_buf());
        self
    }

    /// Run the example `name` as both nodes instead of `walship node`: an
    /// embedder's program that takes `walship node`'s flags (it flattens
    /// `walship::cli::NodeArgs` and calls `walship::start`), found where
    /// cargo builds examples beside this executable.
    pub fn example(mut self, name: &str) -> Setup {
        self.example = Some(name.to_string());
        self
    }

    /// Run the program at `path` as both nodes, as [`Setup::example`] does
    /// with an example found by name (a tool's `--ledger-bin`, say). It
    /// takes precedence over `example`.
    pub fn node_program(mut self, path: &Path) -> Setup {
        self.node_program = Some(path.to_path_buf());
        self
    }

    /// More `walship node` flags for both nodes; `{id}` stands for the node's id.
    pub fn node_args(mut self, args: &[&str]) -> Setup {
        self.node_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// ZooKeeper's JVM heap (`-Xmx`, e.g. "4g"): W holds whole snapshots
    /// and the WAL behind them in ZooKeeper's memory.
    pub fn zk_max_heap(mut self, heap: &str) -> Setup {
        self.zk_options.max_heap = Some(heap.to_string());
        self
    }

    pub fn partitionable(mut self) -> Setup {
        self.partitionable = true;
        self
    }

    /// Each node's ZooKeeper link through proxies of its own (of every server
    /// of ours, or of an external ZooKeeper given as one address).
    pub fn zk_cuttable(mut self) -> Setup {
        self.zk_cuttable = true;
        self
    }

    pub fn fault_dirs(mut self) -> Setup {
        self.fault_dirs = true;
        self
    }

    /// The nodes in TLS mode (dev-ca certificates in `tls_dir()`), reached over https.
    pub fn tls(mut self) -> Setup {
        self.tls = true;
        self
    }

    /// ZooKeeper with SASL on, with the JAAS file `walship zk-jaas` writes
    /// for `secret` (a secret file).
    pub fn zk_sasl(mut self, secret: &Path) -> Setup {
        self.zk_sasl_secret = Some(secret.to_path_buf());
        self
    }

    /// A TLS-only ZooKeeper (client certificates required) with the dev-ca
    /// certificates in `tls_dir()` (the nodes are still reached over plain
    /// http unless `tls` is set too).
    pub fn zk_tls(mut self) -> Setup {
        self.zk_tls = true;
        self
    }

    /// ZooKeeper as an ensemble of `n` servers of ours.
    pub fn zk_ensemble(mut self, n: u32) -> Setup {
        self.zk = Zk::Ensemble(n);
        self
    }

    /// Someone else's ZooKeeper at `addr` (not ours to restart).
    pub fn zk_external(mut self, addr: &str) -> Setup {
        self.zk = Zk::External(addr.to_string());
        self
    }

    pub fn polling(mut self, polling: Polling) -> Setup {
        self.polling = polling;
        self
    }

    /// ZooKeeper, both nodes, and a ready leader.
    pub async fn start(self) -> Result<Cluster> {
        let mut cluster = self.start_nodes().await?;
        let elected = cluster.wait_for_leader(FIRST_LEADER_TIMEOUT).await;
        elected.in_cluster(&cluster)?;
        Ok(cluster)
    }

    /// ZooKeeper and both nodes, each answering `/health/live` (a leader is
    /// the caller's to wait for).
    pub async fn start_nodes(self) -> Result<Cluster> {
        let mut cluster = self.start_zk().await?;
        let started: Result<()> = async {
            for id in [1, 2] {
                cluster.spawn_node(id).await?;
            }
            Ok(())
        }
        .await;
        started.in_cluster(&cluster)?;
        Ok(cluster)
    }

    /// ZooKeeper (and the certificates) only; start nodes with `spawn_node`.
    pub async fn start_zk(self) -> Result<Cluster> {
        let (dir, name) = match &self.place {
            Place::Test(test) => {
                let name = format!(
                    "{}-{}-{}",
                    sanitize(test),
                    std::process::id(),
                    CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed)
                );
                (TestDir::new(test)?, name)
            }
            Place::RunDir(dir, name) => (TestDir::run_dir(dir), name.clone()),
        };
        let bin = match &self.bin {
            Some(b) => b.clone(),
            None => walship_binary_beside_this_one().map_err(anyhow::Error::msg)?,
        };
        let (node_bin, node_command) = match (&self.node_program, &self.example) {
            (Some(path), _) => (path.clone(), Vec::new()),
            (None, Some(name)) => (
                example_binary_beside_this_one(name).map_err(anyhow::Error::msg)?,
                Vec::new(),
            ),
            (None, None) => (bin.clone(), vec!["node".to_string()]),
        };
        let certs = dir.path().join("certs");
        let mut zk_options = self.zk_options.clone();
        let prepared = async {
            if let Some(secret) = &self.zk_sasl_secret {
                let jaas = dir.path().join("jaas.conf");
                let (secret, out) = (secret.display().to_string(), jaas.display().to_string());
                run_walship(&bin, &["zk-jaas", "--secret-file", &secret, "--out", &out])?;
                zk_options.jaas_file = Some(jaas);
            }
            if self.tls || self.zk_tls {
                walship::devca::write(&walship::devca::DevCaArgs {
                    dir: certs.clone(),
                    cluster: name.clone(),
                    hosts: Vec::new(),
                    zk_hosts: Vec::new(),
                    force: true,
                })
                .map_err(anyhow::Error::msg)?;
            }
            if self.zk_tls {
                zk_options.tls_dir = Some(certs.clone());
            }
            Ok(())
        }
        .await;
        dir.keep_on_error(prepared)?;
        let zk = match &self.zk {
            Zk::Own => vec![dir.keep_on_error(ZkServer::start_with(&dir.path().join("zk"), zk_options).await)?],
            Zk::Ensemble(n) => dir.keep_on_error(ZkServer::start_ensemble_with(dir.path(), *n, &zk_options).await)?,
            Zk::External(_) => Vec::new(),
        };
        let zk_addr = match &self.zk {
            Zk::External(addr) => addr.clone(),
            _ => zk.iter().map(ZkServer::addr).collect::<Vec<_>>().join(","),
        };
        let tls = self.tls.then(|| ClientTls::dev_ca(&certs));
        let options = ClientOptions {
            tls: tls.clone(),
            pool_idle_timeout: Some(Duration::from_secs(5)),
            ..ClientOptions::default()
        };
        let pool = dir.keep_on_error(NodeClient::new("127.0.0.1:0", &options).map_err(anyhow::Error::from))?;
        Ok(Cluster {
            name,
            nodes: Vec::new(),
            zk,
            zk_addr,
            proxies: BTreeMap::new(),
            zk_links: BTreeMap::new(),
            pool,
            tls,
            bin: node_bin,
            node_command,
            node_args: self.node_args.clone(),
            setup: self,
            dir,
        })
    }
}

pub struct Cluster {
    /// Unique per test run (`<test>-<pid>-<n>`), or the tool's.
    pub name: String,
    // Field order is drop order: processes die before their directory goes.
    nodes: Vec<Node>,
    zk: Vec<ZkServer>,
    /// ZooKeeper's connect string (the servers themselves, not the proxies).
    zk_addr: String,
    /// Node id → the proxy all traffic *to* that node from its peer goes
    /// through (`partitionable`).
    proxies: BTreeMap<u64, FaultProxy>,
    /// Node id → its link to ZooKeeper (`zk_cuttable`).
    zk_links: BTreeMap<u64, ZkLink>,
    /// The connection pool (and TLS) every node's client shares; its own
    /// endpoint is a placeholder.
    pool: NodeClient,
    tls: Option<ClientTls>,
    /// The nodes' program, and its arguments before their flags.
    bin: PathBuf,
    node_command: Vec<String>,
    /// Flags for the nodes `spawn_node` starts from now on.
    node_args: Vec<String>,
    setup: Setup,
    dir: TestDir,
}

impl Cluster {
    /// A test's ZooKeeper and both nodes, each on a free port; returns once a
    /// leader can serve linearizable reads.
    pub async fn start(test_name: &str) -> Result<Cluster> {
        Setup::test(test_name).start().await
    }

    /// Like `start`, with more `walship node` flags for both nodes.
    pub async fn start_with(test_name: &str, node_args: &[&str]) -> Result<Cluster> {
        Setup::test(test_name).node_args(node_args).start().await
    }

    /// Start node `id` (1 or 2) for the first time, data dir `<dir>/node<id>`,
    /// and wait until it is live. Retries on a new port if its port was taken.
    pub async fn spawn_node(&mut self, id: u64) -> Result<()> {
        if self.nodes.iter().any(|n| n.id() == id) {
            bail!("node {id} already exists in this cluster; use node_mut({id}).start()");
        }
        let mut spec = NodeSpec::local(id, &self.bin, &self.name, &self.zk_addr, self.dir.path())?;
        spec.own_process_group = self.setup.own_process_groups;
        spec.command = self.node_command.clone();
        spec.extra_args = self
            .node_args
            .iter()
            .map(|a| a.replace("{id}", &id.to_string()))
            .collect();
        if self.setup.tls {
            let file = |name: String| self.tls_dir().join(name).display().to_string();
            spec.extra_args.extend([
                "--tls-cert-file".to_string(),
                file(format!("node{id}.pem")),
                "--tls-key-file".to_string(),
                file(format!("node{id}-key.pem")),
                "--tls-ca-file".to_string(),
                file("ca.pem".to_string()),
            ]);
        }
        if self.setup.partitionable {
            let proxy = match self.proxies.remove(&id) {
                Some(p) => p,
                None => FaultProxy::start(loopback(), spec.listen)
                    .await
                    .with_context(|| format!("start the fault proxy for node {id}"))?,
            };
            proxy.set_upstream(spec.listen);
            spec.advertise = Some(proxy.addr());
            self.proxies.insert(id, proxy);
        }
        if self.setup.zk_cuttable {
            let upstream: Vec<SocketAddr> = match &self.setup.zk {
                Zk::External(addr) => zk_socket_addr(addr).await.into_iter().collect(),
                _ => self.zk.iter().filter_map(|z| z.addr().parse().ok()).collect(),
            };
            if !upstream.is_empty() {
                let mut link = Vec::new();
                for up in upstream {
                    let proxy = FaultProxy::start(loopback(), up)
                        .await
                        .with_context(|| format!("start the ZooKeeper proxy for node {id}"))?;
                    link.push(Arc::new(proxy));
                }
                spec.zk = link.iter().map(|p| p.addr().to_string()).collect::<Vec<_>>().join(",");
                self.zk_links.insert(id, ZkLink(link));
            }
        }
        if self.setup.fault_dirs {
            let faults = self.fault_dir(id);
            faults.reset()?;
            let path = faults.path().display().to_string();
            spec.env
                .push((walship::storage::fault::FAULT_DIR_ENV.to_string(), path));
        }
        let mut node = Node::new(spec, &self.pool);
        node.start()?;
        let mut attempt = 1;
        loop {
            match node.wait_live(LIVE_TIMEOUT).await {
                Ok(()) => break,
                Err(e) if attempt < PORT_ATTEMPTS && !node.is_running() && node.failed_on_addr_in_use() => {
                    eprintln!(
                        "node {id}: {} was taken, retrying on another port ({e:#})",
                        node.listen()
                    );
                    node.set_listen(free_addr()?);
                    if let Some(proxy) = self.proxies.get(&id) {
                        proxy.set_upstream(node.listen());
                    }
                    node.start()?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        self.nodes.push(node);
        self.nodes.sort_by_key(|n| n.id());
        Ok(())
    }

    /// Flags for the nodes `spawn_node` starts from now on (`{id}`: the node's id).
    pub fn set_node_args(&mut self, node_args: &[&str]) {
        self.node_args = node_args.iter().map(|a| a.to_string()).collect();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keep the test directory even if the test passes.
    pub fn keep_dir(&mut self) {
        self.dir.keep();
    }

    /// Where `walship dev-ca` wrote this cluster's certificates (`tls`, `zk_tls`).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The TLS files the clients here use (TLS clusters only).
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    // ------------------------------------------------------------ ZooKeeper

    /// ZooKeeper's connect string, as the nodes get it without proxies.
    pub fn zk_addr(&self) -> &str {
        &self.zk_addr
    }

    /// Our one ZooKeeper server.
    pub fn zk(&self) -> &ZkServer {
        match self.zk.as_slice() {
            [zk] => zk,
            _ => panic!(
                "cluster {} has {} ZooKeeper servers of its own, not one",
                self.name,
                self.zk.len()
            ),
        }
    }

    pub fn zk_mut(&mut self) -> &mut ZkServer {
        let (name, n) = (self.name.clone(), self.zk.len());
        match self.zk.as_mut_slice() {
            [zk] => zk,
            _ => panic!("cluster {name} has {n} ZooKeeper servers of its own, not one"),
        }
    }

    /// Every ZooKeeper server of ours (none for an external ZooKeeper).
    pub fn zk_servers(&self) -> &[ZkServer] {
        &self.zk
    }

    pub fn zk_servers_mut(&mut self) -> &mut [ZkServer] {
        &mut self.zk
    }

    // ------------------------------------------------------------ nodes

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id() == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id() == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// The client for node `id` (a clone: hold it across `node_mut` calls).
    pub fn client(&self, id: u64) -> NodeClient {
        self.node(id).client().clone()
    }

    /// Clients for every node, in id order.
    pub fn clients(&self) -> Vec<NodeClient> {
        self.nodes.iter().map(|n| n.client().clone()).collect()
    }

    /// The other node's id.
    pub fn other(id: u64) -> u64 {
        assert!(id == 1 || id == 2, "node ids are 1 and 2, got {id}");
        3 - id
    }

    /// The directory of node `id`'s storage fault hooks (`fault_dirs`).
    pub fn fault_dir(&self, id: u64) -> FaultDir {
        FaultDir::new(self.dir.path().join(format!("fault{id}")))
    }

    /// Kills both nodes at once (SIGKILL to both, then reap both).
    pub async fn kill_both(&mut self) -> Result<()> {
        self.node_mut(1).sigkill()?;
        self.node_mut(2).sigkill()?;
        self.node_mut(1).reap().await?;
        self.node_mut(2).reap().await
    }

    /// Empties node `id`'s data dir, and its fault dir (`fault_dirs`): a
    /// stopped node comes back with an empty disk.
    pub fn wipe(&mut self, id: u64) -> Result<()> {
        self.node_mut(id).wipe_data_dir()?;
        if self.setup.fault_dirs {
            self.fault_dir(id).reset()?;
        }
        Ok(())
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

    // ------------------------------------------------------------ faults

    /// The proxy in front of node `id` (`partitionable` only). A test that
    /// moves the node with `Node::set_listen` must `set_upstream` it.
    pub fn proxy(&self, id: u64) -> &FaultProxy {
        self.proxies
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} has no proxy: set up the cluster partitionable"))
    }

    /// Cuts the two nodes off from each other, in both directions, at once:
    /// open connections between them are dropped (`Refuse`) or frozen
    /// (`Blackhole`), new ones fail the same way. ZooKeeper is untouched.
    pub fn cut_nodes(&self, mode: CutMode) {
        for id in [1, 2] {
            self.proxy(id).cut(mode);
        }
    }

    /// A one-way cut: every call the peer makes *to* node `id` fails (request
    /// and answer ride the same connection), while the calls node `id` makes
    /// to the peer still go through. Cutting the follower's side this way
    /// stops the leader's heartbeats but lets the follower's vote requests
    /// reach the leader.
    pub fn cut_node_inbound(&self, id: u64, mode: CutMode) {
        self.proxy(id).cut(mode);
    }

    /// Lets traffic between the nodes through again (both directions).
    pub fn heal_nodes(&self) {
        for proxy in self.proxies.values() {
            proxy.heal();
        }
    }

    /// Each proxy's counters, by the id of the node behind it.
    pub fn proxy_stats(&self) -> Vec<(u64, ProxyStats)> {
        self.proxies.iter().map(|(id, p)| (*id, p.stats())).collect()
    }

    /// Whether the nodes have ZooKeeper proxies (`zk_cuttable`, and a
    /// ZooKeeper whose servers we know).
    pub fn has_zk_proxies(&self) -> bool {
        !self.zk_links.is_empty()
    }

    /// Node `id`'s link to ZooKeeper (the other node keeps its own).
    pub fn zk_link(&self, id: u64) -> Result<ZkLink> {
        match self.zk_links.get(&id) {
            Some(link) => Ok(link.clone()),
            None => bail!("node {id} has no ZooKeeper proxy (set up zk_cuttable, with ZooKeeper's servers known)"),
        }
    }

    /// Cuts node `id`'s link to ZooKeeper; the other node keeps its own.
    pub fn cut_zk(&self, id: u64, mode: CutMode) -> Result<()> {
        self.zk_link(id)?.cut(mode);
        Ok(())
    }

    /// Restores node `id`'s link to ZooKeeper.
    pub fn heal_zk(&self, id: u64) -> Result<()> {
        self.zk_link(id)?.heal();
        Ok(())
    }

    // ------------------------------------------------------------ waits

    /// `/v1/status` of every serving node (alive and not frozen), with the
    /// polling timeout.
    pub async fn statuses(&mut self) -> Vec<(u64, Reply<Status>)> {
        let timeout = self.setup.polling.request_timeout;
        let mut out = Vec::new();
        for node in self.nodes.iter_mut() {
            if node.is_serving() {
                out.push((node.id(), node.client().with_timeout(timeout).status().await));
            }
        }
        out
    }

    /// `/v1/status` of node `id`, with the polling timeout.
    pub async fn status_of(&self, id: u64) -> Reply<Status> {
        self.poll_client(id).status().await
    }

    fn poll_client(&self, id: u64) -> NodeClient {
        self.node(id).client().with_timeout(self.setup.polling.request_timeout)
    }

    /// The leader right now: the only serving node that claims to lead and
    /// answers `/health/ready` with 200.
    pub async fn leader(&mut self) -> Result<u64> {
        let statuses = self.statuses().await;
        let mut leaders = Vec::new();
        for (id, status) in &statuses {
            if let Reply::Success { value, .. } = status {
                if value.is_leader() && self.poll_client(*id).ready().await.is_success() {
                    leaders.push(*id);
                }
            }
        }
        match leaders.as_slice() {
            [id] => Ok(*id),
            [] => bail!("no ready leader; statuses: {}", show(&statuses)),
            _ => bail!("several ready leaders {leaders:?}; statuses: {}", show(&statuses)),
        }
    }

    /// Poll until exactly one serving node leads and is ready.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> Result<u64> {
        self.wait_for_leader_where(timeout, "a ready leader", |_| true).await
    }

    /// Poll until a node other than `old` leads and is ready.
    pub async fn wait_for_new_leader(&mut self, old: u64, timeout: Duration) -> Result<u64> {
        let what = format!("a ready leader other than node {old}");
        self.wait_for_leader_where(timeout, &what, |id| id != old).await
    }

    /// Poll until exactly one serving node leads, is ready, and `accept`s it
    /// (`what` names the wait in its error).
    pub async fn wait_for_leader_where(
        &mut self,
        timeout: Duration,
        what: &str,
        accept: impl Fn(u64) -> bool,
    ) -> Result<u64> {
        let deadline = self.deadline(timeout, what);
        loop {
            self.check_crashes()?;
            let last = match self.leader().await {
                Ok(id) if accept(id) => return Ok(id),
                Ok(id) => format!("node {id} leads"),
                Err(e) => format!("{e:#}"),
            };
            deadline.tick(&last).await?;
        }
    }

    /// Poll until every serving node has applied at least `index`.
    pub async fn wait_applied(&mut self, index: u64, timeout: Duration) -> Result<()> {
        self.wait_applied_by(index, timeout, false).await
    }

    /// Polls until every serving node has applied what node `id` (say, the
    /// leader) has applied now.
    pub async fn wait_caught_up_with(&mut self, id: u64, timeout: Duration) -> Result<()> {
        let status = self.client(id).status().await.into_result()?;
        self.wait_applied(status.applied_index.unwrap_or(0), timeout).await
    }

    /// Polls until both nodes serve and have applied what the leader had
    /// applied when the wait began; returns that leader.
    pub async fn wait_caught_up(&mut self, timeout: Duration) -> Result<u64> {
        let leader = self.wait_for_leader(timeout).await?;
        let target = self
            .status_of(leader)
            .await
            .success()
            .and_then(|s| s.applied_index)
            .unwrap_or(0);
        self.wait_applied_by(target, timeout, true).await?;
        Ok(leader)
    }

    /// `all`: every node must serve, not only those that do.
    async fn wait_applied_by(&mut self, index: u64, timeout: Duration, all: bool) -> Result<()> {
        let what = match all {
            true => format!("both nodes to serve and apply index {index}"),
            false => format!("every serving node to apply index {index}"),
        };
        let deadline = self.deadline(timeout, &what);
        loop {
            if all {
                self.check_crashes()?;
            }
            let statuses = self.statuses().await;
            let behind = statuses.iter().any(|(_, s)| match s {
                Reply::Success { value, .. } => value.applied_index.is_none_or(|a| a < index),
                _ => true,
            });
            if !behind && (!all || statuses.len() == self.nodes.len()) {
                return Ok(());
            }
            deadline.tick(&show(&statuses)).await?;
        }
    }

    fn deadline(&self, timeout: Duration, what: &str) -> Deadline {
        Deadline::after(timeout, what).every(self.setup.polling.every)
    }

    /// A node process that exited by itself is a bug worth failing fast on:
    /// an error with its log's last lines.
    pub fn check_crashes(&mut self) -> Result<()> {
        for node in self.nodes.iter_mut() {
            node.fail_if_exited("unexpectedly")?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ an ensemble

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
        let deadline = Deadline::after(timeout, "a ZooKeeper leader with a quorum").every(Duration::from_millis(20));
        let n = self.zk.len();
        loop {
            let v = self.zk_view().await;
            if v.has_quorum(n) {
                return Ok((Instant::now(), v));
            }
            deadline.tick(&format!("{v:?}")).await?;
        }
    }

    /// Polls until every running server of ours serves again.
    pub async fn wait_zk_whole(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Deadline::after(timeout, "every ZooKeeper server to serve");
        loop {
            let v = self.zk_view().await;
            if v.leader.is_some() && v.serving == self.zk.len() {
                return Ok(());
            }
            deadline.tick(&format!("{v:?}")).await?;
        }
    }

    // ------------------------------------------------------------ the end

    /// Heals every link and lifts every disk fault, then stops everything we
    /// started, by pid: nodes (SIGCONT first if frozen, SIGTERM, SIGKILL if
    /// they linger), then our ZooKeeper.
    pub async fn stop_all(&mut self) {
        self.heal_nodes();
        for link in self.zk_links.values() {
            link.heal();
        }
        for z in self.zk.iter_mut() {
            if z.is_frozen() {
                let _ = z.sigcont();
            }
        }
        if self.setup.fault_dirs {
            for id in [1, 2] {
                if let Err(e) = self.fault_dir(id).clear() {
                    eprintln!("cluster {}: {e:#}", self.name);
                }
            }
        }
        for n in self.nodes.iter_mut() {
            if let Err(e) = n.stop().await {
                eprintln!("cluster {}: stopping node {}: {e:#}", self.name, n.id());
            }
        }
        for zk in self.zk.iter_mut() {
            if zk.is_running() {
                if let Err(e) = zk.stop().await {
                    eprintln!("cluster {}: stopping ZooKeeper {}: {e:#}", self.name, zk.addr());
                }
            }
        }
    }

    /// The last lines of each node's log, on stderr (shown for failed tests).
    pub fn print_log_tails(&self) {
        for node in &self.nodes {
            eprintln!(
                "----- last lines of node {} ({}) -----\n{}",
                node.id(),
                node.log_path().display(),
                tail(node.log_path(), 0, 40)
            );
        }
        eprintln!("----- cluster {} logs: {} -----", self.name, self.log_paths().join(" "));
    }

    /// The paths of every log file, for messages.
    pub fn log_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.zk.iter().map(|z| z.log_path().display().to_string()).collect();
        paths.extend(self.nodes.iter().map(|n| n.log_path().display().to_string()));
        paths
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tails();
        }
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
    /// Index (in `zk_servers()`) of the server that says it leads.
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

/// For tests that return `Result`: on `Err`, name the cluster and its log
/// directory in the error, and keep that directory (a test failing by `Err` does
/// not panic, so the directory would otherwise be deleted).
pub trait ClusterContext<T> {
    fn in_cluster(self, cluster: &Cluster) -> Result<T>;
}

impl<T> ClusterContext<T> for Result<T> {
    fn in_cluster(self, cluster: &Cluster) -> Result<T> {
        if self.is_err() {
            cluster.dir.keep_on_drop();
            cluster.print_log_tails();
        }
        self.with_context(|| format!("cluster {} (logs in {})", cluster.name, cluster.dir().display()))
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// ZooKeeper's one address, for a proxy; `None` for an ensemble (`a:1,b:2`)
/// or a name that does not resolve.
async fn zk_socket_addr(zk: &str) -> Option<SocketAddr> {
    if zk.contains(',') {
        return None;
    }
    if let Ok(a) = zk.parse::<SocketAddr>() {
        return Some(a);
    }
    tokio::net::lookup_host(zk).await.ok()?.next()
}

fn show(statuses: &[(u64, Reply<Status>)]) -> String {
    let parts: Vec<String> = statuses.iter().map(|(id, s)| format!("node {id}: {s}")).collect();
    if parts.is_empty() {
        "no serving node".to_string()
    } else {
        parts.join("; ")
    }
}

/// Runs a `walship` tool command (zk-jaas) to completion.
fn run_walship(bin: &Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(bin)
        .args(args)
        .env_remove("WALSHIP_CLUSTER")
        .env_remove("WALSHIP_SECRET_FILE")
        .output()
        .with_context(|| format!("run walship {}", args[0]))?;
    if !out.status.success() {
        bail!("walship {} failed: {}", args[0], String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
