//! A whole walship deployment for one test: a private ZooKeeper and nodes 1 and 2,
//! under a unique cluster name, in one test directory.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use walship_testkit::faultproxy::{CutMode, FaultProxy, ProxyStats};

use super::api::{Api, ClientTls, Reply, Status};
use super::dir::{sanitize, TestDir};
use super::node::Node;
use super::ports::free_addr;
use super::process::tail;
use super::wait::Deadline;
use super::zk::{Zk, ZkOptions};

/// Time for a fresh cluster to elect its first leader.
pub const FIRST_LEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for a node process to answer `/health/live` after it was started.
pub const LIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-request limit of the status polls used while waiting (a frozen node must
/// not stall the wait).
const POLL_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const PORT_ATTEMPTS: usize = 5;

static CLUSTER_COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Cluster {
    /// Unique per test run: `<test>-<pid>-<counter>`.
    pub name: String,
    // Field order is drop order: processes die before their directory goes.
    nodes: Vec<Node>,
    pub zk: Zk,
    dir: TestDir,
    /// Flags given to every node of this cluster.
    node_args: Vec<String>,
    /// Set by `start_partitionable`: every node gets a `FaultProxy` in front
    /// of it and advertises the proxy's address.
    partitionable: bool,
    /// Node id → the proxy all traffic *to* that node from its peer goes
    /// through (Raft RPC and forwarded client requests). Empty unless
    /// `partitionable`.
    proxies: std::collections::BTreeMap<u64, FaultProxy>,
    /// Set by `start_zk_cuttable`: node id → the proxy between that node and
    /// ZooKeeper (its `--zk`), so one node's ZooKeeper link can be cut while
    /// the other keeps its own.
    zk_proxies: std::collections::BTreeMap<u64, FaultProxy>,
    zk_cuttable: bool,
    /// Set by `with_fault_dirs`: each node runs with `WALSHIP_FAULT_DIR` =
    /// `fault_dir(id)` (the storage fault hooks: stall, nosync, power loss).
    fault_dirs: bool,
    /// Set by `start_tls`: the nodes run in TLS mode with the certificates
    /// `walship dev-ca` wrote into `tls_dir()`, and are reached over https.
    tls: Option<ClientTls>,
}

impl Cluster {
    /// ZooKeeper and both nodes, each on a free port; returns once a leader can
    /// serve linearizable reads.
    pub async fn start(test_name: &str) -> Result<Cluster> {
        Cluster::start_with(test_name, &[]).await
    }

    /// Like `start`, with more `walship node` flags for both nodes.
    pub async fn start_with(test_name: &str, node_args: &[&str]) -> Result<Cluster> {
        Cluster::start_stopped(test_name).await?.start_both(node_args).await
    }

    /// Like `start`, but each node advertises (in its `members/<id>` znode)
    /// the address of a fault-injecting proxy that forwards to its real
    /// `--listen`. So every byte between the two nodes goes through a proxy
    /// and `cut_nodes` really separates them, while ZooKeeper and the test's
    /// own clients (which use the real listen addresses) are untouched.
    pub async fn start_partitionable(test_name: &str) -> Result<Cluster> {
        Cluster::start_partitionable_with(test_name, &[]).await
    }

    /// `start_partitionable` with more `walship node` flags for both nodes.
    pub async fn start_partitionable_with(test_name: &str, node_args: &[&str]) -> Result<Cluster> {
        let mut cluster = Cluster::start_stopped(test_name).await?;
        cluster.partitionable = true;
        cluster.start_both(node_args).await
    }

    /// Like `start_with`, but each node reaches ZooKeeper through a fault
    /// proxy of its own (`cut_zk`), and node-to-node traffic goes through
    /// proxies as in `start_partitionable`.
    pub async fn start_zk_cuttable_with(test_name: &str, node_args: &[&str]) -> Result<Cluster> {
        Cluster::start_faulty(test_name, node_args, false).await
    }

    /// `start_zk_cuttable_with`, and every node also runs with the storage
    /// fault hooks on (`fault_dir`).
    pub async fn start_zk_cuttable_with_fault_dirs(test_name: &str, node_args: &[&str]) -> Result<Cluster> {
        Cluster::start_faulty(test_name, node_args, true).await
    }

    /// The directory of node `id`'s storage fault hooks
    /// (`walship::storage::fault`): create `stall` or `nosync` in it.
    pub fn fault_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("faults{id}"))
    }

    async fn start_faulty(test_name: &str, node_args: &[&str], fault_dirs: bool) -> Result<Cluster> {
        let mut cluster = Cluster::start_stopped(test_name).await?;
        cluster.partitionable = true;
        cluster.zk_cuttable = true;
        cluster.fault_dirs = fault_dirs;
        cluster.start_both(node_args).await
    }

    /// Starts nodes 1 and 2 with `node_args` and waits for a leader.
    async fn start_both(mut self, node_args: &[&str]) -> Result<Cluster> {
        self.set_node_args(node_args);
        let started = async {
            for id in [1, 2] {
                self.spawn_node(id).await?;
            }
            self.wait_for_leader(FIRST_LEADER_TIMEOUT).await
        }
        .await;
        started.in_cluster(&self)?;
        Ok(self)
    }

    /// Like `start_with`, in TLS mode: `walship dev-ca` writes a CA and
    /// certificates for this cluster into `tls_dir()`, each node runs with
    /// its own, and the harness's clients use https with the client
    /// certificate.
    pub async fn start_tls(test_name: &str, node_args: &[&str]) -> Result<Cluster> {
        let mut cluster = Cluster::start_stopped(test_name).await?;
        cluster.make_dev_ca()?;
        let mut args: Vec<&str> = cluster_tls_args().to_vec();
        args.extend_from_slice(node_args);
        let certs = cluster.tls_dir().display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{certs}", &certs)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.start_both(&args).await
    }

    /// Runs `walship dev-ca` for this cluster into `tls_dir()`, and reaches
    /// the nodes spawned from now on over https (their flags are the
    /// caller's: see `tls_node_args`).
    pub fn make_dev_ca(&mut self) -> Result<()> {
        let dir = self.tls_dir();
        run_walship(&["dev-ca", "--cluster", &self.name, "--dir", &dir.display().to_string()])?;
        self.tls = Some(ClientTls::dev_ca(&dir));
        Ok(())
    }

    /// The node flags of TLS mode with this cluster's dev-ca files (node
    /// `{id}`'s certificate: `spawn_node` fills the id in).
    pub fn tls_node_args(&self) -> Vec<String> {
        let certs = self.tls_dir().display().to_string();
        cluster_tls_args()
            .iter()
            .map(|a| a.replace("{certs}", &certs))
            .collect()
    }

    /// Where `walship dev-ca` wrote this cluster's certificates.
    pub fn tls_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("certs")
    }

    /// The TLS files the harness's clients use (TLS clusters only).
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// Cut node `id`'s link to ZooKeeper (`start_zk_cuttable_with` only);
    /// the other node keeps its own.
    pub fn cut_zk(&self, id: u64, mode: CutMode) {
        self.zk_proxy(id).cut(mode);
    }

    /// Restore node `id`'s link to ZooKeeper.
    pub fn heal_zk(&self, id: u64) {
        self.zk_proxy(id).heal();
    }

    fn zk_proxy(&self, id: u64) -> &FaultProxy {
        self.zk_proxies
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} has no ZooKeeper proxy: use Cluster::start_zk_cuttable_with"))
    }

    /// Flags for the nodes `spawn_node` starts from now on.
    pub fn set_node_args(&mut self, node_args: &[&str]) {
        self.node_args = node_args.iter().map(|a| a.to_string()).collect();
    }

    /// ZooKeeper only; start nodes with `spawn_node`.
    pub async fn start_stopped(test_name: &str) -> Result<Cluster> {
        Cluster::start_stopped_secured(test_name, None, false).await
    }

    /// ZooKeeper only, secured: with `sasl_secret` (a secret file), SASL on
    /// with the JAAS file `walship zk-jaas` writes for it; with `tls`, a
    /// TLS-only ZooKeeper (client certificates required) with the
    /// certificates `walship dev-ca` writes into `tls_dir()` (the nodes are
    /// still reached over plain HTTP unless the caller asks for TLS mode).
    pub async fn start_stopped_secured(
        test_name: &str,
        sasl_secret: Option<&std::path::Path>,
        tls: bool,
    ) -> Result<Cluster> {
        let dir = TestDir::new(test_name)?;
        let name = format!(
            "{}-{}-{}",
            sanitize(test_name),
            std::process::id(),
            CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut options = ZkOptions::default();
        if let Some(secret) = sasl_secret {
            let jaas = dir.path().join("jaas.conf");
            run_walship(&[
                "zk-jaas",
                "--secret-file",
                &secret.display().to_string(),
                "--out",
                &jaas.display().to_string(),
            ])?;
            options.jaas_file = Some(jaas);
        }
        if tls {
            let certs = dir.path().join("certs");
            run_walship(&["dev-ca", "--cluster", &name, "--dir", &certs.display().to_string()])?;
            options.tls_dir = Some(certs);
        }
        let zk = dir.keep_on_error(Zk::start_with(dir.path(), options).await)?;
        Ok(Cluster {
            name,
            nodes: Vec::new(),
            zk,
            dir,
            node_args: Vec::new(),
            partitionable: false,
            proxies: Default::default(),
            zk_proxies: Default::default(),
            zk_cuttable: false,
            fault_dirs: false,
            tls: None,
        })
    }

    /// Start node `id` (1 or 2) for the first time, data dir `<dir>/node<id>`, and
    /// wait until it is live. Retries on a new port if its port was taken.
    pub async fn spawn_node(&mut self, id: u64) -> Result<()> {
        if self.nodes.iter().any(|n| n.id() == id) {
            bail!("node {id} already exists in this cluster; use node_mut({id}).restart()");
        }
        let data_dir = self.dir.path().join(format!("node{id}"));
        let listen = free_addr()?;
        // "{id}" stands for the node's id (per-node certificate files).
        let mut args: Vec<String> = self
            .node_args
            .iter()
            .map(|a| a.replace("{id}", &id.to_string()))
            .collect();
        if self.partitionable {
            let proxy = match self.proxies.remove(&id) {
                Some(p) => p,
                None => FaultProxy::start(([127, 0, 0, 1], 0).into(), listen)
                    .await
                    .with_context(|| format!("start the fault proxy for node {id}"))?,
            };
            proxy.set_upstream(listen);
            args.extend(["--advertise".to_string(), proxy.addr().to_string()]);
            self.proxies.insert(id, proxy);
        }
        let mut zk_addr = self.zk.addr();
        if self.zk_cuttable {
            let upstream: std::net::SocketAddr = zk_addr.parse().context("ZooKeeper address")?;
            let proxy = FaultProxy::start(([127, 0, 0, 1], 0).into(), upstream)
                .await
                .with_context(|| format!("start the ZooKeeper proxy for node {id}"))?;
            zk_addr = proxy.addr().to_string();
            self.zk_proxies.insert(id, proxy);
        }
        let mut env = Vec::new();
        if self.fault_dirs {
            let dir = self.fault_dir(id);
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            env.push((
                walship::storage::fault::FAULT_DIR_ENV.to_string(),
                dir.display().to_string(),
            ));
        }
        let mut node = Node::spawn_with_env(id, &self.name, &zk_addr, &data_dir, listen, &args, &env)?;
        if let Some(tls) = &self.tls {
            node.set_client_tls(tls.clone());
        }
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
                    node.restart()?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        self.nodes.push(node);
        self.nodes.sort_by_key(|n| n.id());
        Ok(())
    }

    /// The proxy in front of node `id` (partitionable clusters only). A test
    /// that moves the node with `Node::set_listen` must `set_upstream` it.
    pub fn proxy(&self, id: u64) -> &FaultProxy {
        self.proxies
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} has no proxy: use Cluster::start_partitionable"))
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

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Keep the test directory even if the test passes.
    pub fn keep_dir(&mut self) {
        self.dir.keep();
    }

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
    pub fn api(&self, id: u64) -> Api {
        self.node(id).api().clone()
    }

    /// Clients for every node, in id order.
    pub fn apis(&self) -> Vec<Api> {
        self.nodes.iter().map(|n| n.api().clone()).collect()
    }

    /// The other node's id.
    pub fn other(id: u64) -> u64 {
        assert!(id == 1 || id == 2, "node ids are 1 and 2, got {id}");
        3 - id
    }

    /// `/v1/status` of every serving node (alive and not frozen).
    pub async fn statuses(&mut self) -> Vec<(u64, Reply<Status>)> {
        let mut out = Vec::new();
        for node in self.nodes.iter_mut() {
            if node.is_serving() {
                let status = node.api().with_timeout(POLL_REQUEST_TIMEOUT).status().await;
                out.push((node.id(), status));
            }
        }
        out
    }

    /// The leader right now: the only serving node that claims to lead and
    /// answers `/health/ready` with 200.
    pub async fn leader(&mut self) -> Result<u64> {
        let statuses = self.statuses().await;
        let mut leaders = Vec::new();
        for (id, status) in &statuses {
            if let Reply::Success { value, .. } = status {
                if value.is_leader() {
                    let ready = self.node(*id).api().with_timeout(POLL_REQUEST_TIMEOUT).ready().await;
                    if ready.is_success() {
                        leaders.push(*id);
                    }
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
        self.wait_for_leader_where(timeout, &format!("a ready leader other than node {old}"), |id| {
            id != old
        })
        .await
    }

    async fn wait_for_leader_where(
        &mut self,
        timeout: Duration,
        what: &str,
        accept: impl Fn(u64) -> bool,
    ) -> Result<u64> {
        let deadline = Deadline::after(timeout, what);
        loop {
            self.fail_if_a_node_died()?;
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
        let deadline = Deadline::after(timeout, format!("every serving node to apply index {index}"));
        loop {
            let statuses = self.statuses().await;
            let behind: Vec<_> = statuses
                .iter()
                .filter(|(_, s)| match s {
                    Reply::Success { value, .. } => value.applied_index.is_none_or(|a| a < index),
                    _ => true,
                })
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            deadline.tick(&show(&statuses)).await?;
        }
    }

    /// A node process that exited by itself is a bug worth failing fast on.
    fn fail_if_a_node_died(&mut self) -> Result<()> {
        for node in self.nodes.iter_mut() {
            if let Some(status) = node.exited() {
                bail!(
                    "node {} exited unexpectedly ({status}); {}:\n{}",
                    node.id(),
                    node.log_path().display(),
                    node.log_tail(30)
                );
            }
        }
        Ok(())
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
        let mut paths = vec![self.zk.log_path().display().to_string()];
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

/// TLS mode's node flags; `{certs}` is the dev-ca directory, `{id}` the node's id.
fn cluster_tls_args() -> [&'static str; 6] {
    [
        "--tls-cert-file",
        "{certs}/node{id}.pem",
        "--tls-key-file",
        "{certs}/node{id}-key.pem",
        "--tls-ca-file",
        "{certs}/ca.pem",
    ]
}

fn show(statuses: &[(u64, Reply<Status>)]) -> String {
    let parts: Vec<String> = statuses.iter().map(|(id, s)| format!("node {id}: {s}")).collect();
    if parts.is_empty() {
        "no serving node".to_string()
    } else {
        parts.join("; ")
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

/// Runs a `walship` tool command (dev-ca, zk-jaas) to completion.
fn run_walship(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(super::node::WALSHIP_BIN)
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
