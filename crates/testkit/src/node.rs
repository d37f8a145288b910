//! One `walship node` process (or an embedder's program that takes the
//! same flags, such as an example): the real binary, started with explicit flags
//! (the developer's `WALSHIP_*` settings never leak in), its stdout and stderr
//! appended to its log (by default `<data dir>.log`, a sibling of the data
//! dir, so it survives a wipe), reached through a [`NodeClient`].

use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::ExitStatus;
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use walship::client::NodeClient;
use walship::client::Reply;

use crate::ports::free_addr;
use crate::process::append_log;
use crate::process::file_len;
use crate::process::says_addr_in_use;
use crate::process::tail;
use crate::process::Proc;
use crate::wait::Deadline;

/// How long a node may take to exit after SIGTERM before it counts as a failure.
pub const SIGTERM_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings a node must get from its flags alone (removed from its environment).
const CLEARED_ENV: &[&str] = &[
    "WALSHIP_ID",
    "WALSHIP_CLUSTER",
    "WALSHIP_ZK",
    "WALSHIP_DATA_DIR",
    "WALSHIP_LISTEN",
    "WALSHIP_ADVERTISE",
    "WALSHIP_CONFIG",
    "WALSHIP_FAULT_DIR",
    "WALSHIP_REBUILD_FROM_WITNESS",
    "WALSHIP_TLS_CERT_FILE",
    "WALSHIP_TLS_KEY_FILE",
    "WALSHIP_TLS_CA_FILE",
    "WALSHIP_TLS_CLIENT_AUTH",
    "WALSHIP_ZK_SASL",
    "WALSHIP_ZK_TLS_CA_FILE",
    "WALSHIP_ZK_TLS_CERT_FILE",
    "WALSHIP_ZK_TLS_KEY_FILE",
];

/// How a node is started (kept for every restart).
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    /// The program: the `walship` binary, or an embedder's (an example
    /// built on `walship::start` that takes `walship node`'s flags).
    pub bin: PathBuf,
    /// Its arguments before the node's flags: `["node"]` for the `walship`
    /// binary, none for an embedder's program.
    pub command: Vec<String>,
    pub cluster: String,
    /// Its `--zk`.
    pub zk: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub listen: SocketAddr,
    /// `--advertise`: a fault proxy in front of this node, what the other node dials.
    pub advertise: Option<SocketAddr>,
    /// More `walship node` flags.
    pub extra_args: Vec<String>,
    /// Environment variables set on every start.
    pub env: Vec<(String, String)>,
    /// In a process group of its own (see `Proc::spawn`).
    pub own_process_group: bool,
}

impl NodeSpec {
    /// Node `id` of `cluster` on a free loopback port, with `<dir>/node<id>` as
    /// its data dir and `<dir>/node<id>.log` as its log; no `--advertise`, no
    /// other flags.
    pub fn local(id: u64, bin: &Path, cluster: &str, zk: &str, dir: &Path) -> Result<NodeSpec> {
        Ok(NodeSpec {
            id,
            bin: bin.to_path_buf(),
            command: vec!["node".to_string()],
            cluster: cluster.to_string(),
            zk: zk.to_string(),
            data_dir: dir.join(format!("node{id}")),
            log_path: dir.join(format!("node{id}.log")),
            listen: free_addr()?,
            advertise: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            own_process_group: false,
        })
    }
}

/// One `walship node` process, restartable.
pub struct Node {
    spec: NodeSpec,
    proc: Option<Proc>,
    client: NodeClient,
    /// Number of times the process was started.
    starts: u32,
    /// Length of the log when the current process started.
    log_offset: u64,
}

impl Node {
    /// A node as `spec` says, reached through `client` (a client of any
    /// address: `at` moves it to the node's); not started.
    pub fn new(spec: NodeSpec, client: &NodeClient) -> Node {
        Node {
            client: client.at(spec.listen),
            spec,
            proc: None,
            starts: 0,
            log_offset: 0,
        }
    }

    /// Starts `walship node --id <id> --cluster <cluster> --zk <zk> --data-dir
    /// <data_dir> --listen <listen>` (the binary beside this executable), with
    /// a log beside the data dir and a plain-http client. Returns at once;
    /// see `wait_live`.
    pub fn spawn(id: u64, cluster: &str, zk: &str, data_dir: &Path, listen: SocketAddr) -> Result<Node> {
        Node::spawn_with(id, cluster, zk, data_dir, listen, &[])
    }

    /// `spawn` with more `walship node` flags, kept for every restart.
    pub fn spawn_with(
        id: u64,
        cluster: &str,
        zk: &str,
        data_dir: &Path,
        listen: SocketAddr,
        extra_args: &[String],
    ) -> Result<Node> {
        let bin = crate::process::walship_binary_beside_this_one().map_err(anyhow::Error::msg)?;
        let name = data_dir
            .file_name()
            .with_context(|| format!("data dir {} has no file name", data_dir.display()))?
            .to_string_lossy()
            .into_owned();
        let spec = NodeSpec {
            id,
            bin,
            command: vec!["node".to_string()],
            cluster: cluster.to_string(),
            zk: zk.to_string(),
            data_dir: data_dir.to_path_buf(),
            log_path: data_dir.with_file_name(format!("{name}.log")),
            listen,
            advertise: None,
            extra_args: extra_args.to_vec(),
            env: Vec::new(),
            own_process_group: false,
        };
        let mut node = Node::new(spec, &NodeClient::plain(listen));
        node.start()?;
        Ok(node)
    }

    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Starts the process with the spec's flags (and data dir, unless wiped).
    /// It must not be running (`kill9`, `sigterm`, `stop` first). Returns at
    /// once; see `wait_live`.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            bail!(
                "node {} is still running (pid {:?}); kill9() or sigterm() it first",
                self.spec.id,
                self.pid()
            );
        }
        let s = &self.spec;
        std::fs::create_dir_all(&s.data_dir).with_context(|| format!("create {}", s.data_dir.display()))?;
        self.log_offset = file_len(&s.log_path);
        self.starts += 1;
        let log = append_log(
            &s.log_path,
            &format!(
                "start #{} of node {} (listen {}, zk {}, cluster {})",
                self.starts, s.id, s.listen, s.zk, s.cluster
            ),
        )?;
        let stderr = log.try_clone()?;
        let mut cmd = Command::new(&s.bin);
        cmd.args(&s.command)
            .args(["--id", &s.id.to_string()])
            .args(["--cluster", &s.cluster])
            .args(["--zk", &s.zk])
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(["--listen", &s.listen.to_string()]);
        if let Some(a) = s.advertise {
            cmd.args(["--advertise", &a.to_string()]);
        }
        cmd.args(&s.extra_args);
        for var in CLEARED_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(s.env.iter().map(|(k, v)| (k, v)));
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
        cmd.env("RUST_LOG", rust_log)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let proc = Proc::spawn(format!("node {}", s.id), &mut cmd, s.own_process_group)
            .with_context(|| format!("spawn {}", s.bin.display()))?;
        self.proc = Some(proc);
        Ok(())
    }

    /// Environment variables set on every later start (replacing those set
    /// before), e.g. `WALSHIP_FAULT_DIR` for the storage fault hooks.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.spec.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Flags added to every later start (e.g. `--snapshot-every-entries 50`).
    pub fn set_extra_args(&mut self, args: &[&str]) {
        self.spec.extra_args = args.iter().map(|a| a.to_string()).collect();
    }

    pub fn id(&self) -> u64 {
        self.spec.id
    }

    pub fn listen(&self) -> SocketAddr {
        self.spec.listen
    }

    /// Use another listen address from the next start on (e.g. after a port clash).
    pub fn set_listen(&mut self, listen: SocketAddr) {
        self.spec.listen = listen;
        self.client = self.client.at(listen);
    }

    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log_path
    }

    /// The client for this node.
    pub fn client(&self) -> &NodeClient {
        &self.client
    }

    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| p.pid())
    }

    /// Alive (frozen counts as alive).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    pub fn is_frozen(&self) -> bool {
        self.proc.as_ref().is_some_and(|p| p.is_frozen())
    }

    /// Alive and not frozen: expected to answer requests.
    pub fn is_serving(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running() && !p.is_frozen())
    }

    /// The exit status, if the process has exited on its own (it is then reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.proc.as_mut()?.exited()?;
        self.proc = None;
        Some(status)
    }

    /// The last `lines` lines this process (the current start) wrote.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.spec.log_path, self.log_offset, lines)
    }

    /// Did the current start fail because its listen address was taken?
    pub fn failed_on_addr_in_use(&self) -> bool {
        says_addr_in_use(&self.spec.log_path, self.log_offset)
    }

    fn proc(&mut self) -> Result<&mut Proc> {
        let id = self.spec.id;
        self.proc.as_mut().with_context(|| format!("node {id} is not running"))
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) -> Result<()> {
        self.proc()?.kill9().await?;
        self.proc = None;
        Ok(())
    }

    /// SIGKILL without waiting (`reap` waits): to kill two nodes at once.
    pub fn sigkill(&mut self) -> Result<()> {
        self.proc()?.signal(libc::SIGKILL)
    }

    /// Waits for a node sent SIGKILL to exit, and reaps it.
    pub async fn reap(&mut self) -> Result<()> {
        if let Some(p) = self.proc.as_mut() {
            p.wait_exit(crate::process::STOP_TIMEOUT).await?;
            self.proc = None;
        }
        Ok(())
    }

    /// SIGSTOP: the process freezes (its ZooKeeper session will expire).
    pub fn sigstop(&mut self) -> Result<()> {
        self.proc()?.signal(libc::SIGSTOP)
    }

    /// SIGCONT after `sigstop`.
    pub fn sigcont(&mut self) -> Result<()> {
        self.proc()?.signal(libc::SIGCONT)
    }

    /// SIGTERM (SIGCONT first if frozen) and wait for the exit; its status
    /// (the contract: a clean exit). An error (after SIGKILL) if it is still
    /// running after 30 s.
    pub async fn sigterm(&mut self) -> Result<ExitStatus> {
        let status = self.proc()?.sigterm(SIGTERM_TIMEOUT).await;
        self.proc = None;
        status
    }

    /// Stops it whatever its state (a tool's clean-up): SIGTERM (SIGCONT
    /// first if frozen), SIGKILL if it lingers; nothing if it is gone.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.terminate().await?;
        }
        Ok(())
    }

    /// Empty the data dir (the node comes back with an empty disk). The node
    /// must be stopped.
    pub fn wipe_data_dir(&mut self) -> Result<()> {
        if self.is_running() {
            bail!(
                "node {} is still running; stop it before wiping its data dir",
                self.spec.id
            );
        }
        let dir = &self.spec.data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
    }

    /// Wait until `/health/live` answers 200. Fails at once if the process exits.
    pub async fn wait_live(&mut self, timeout: Duration) -> Result<()> {
        self.wait_health(false, timeout).await
    }

    /// Wait until `/health/ready` answers 200. Fails at once if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_health(true, timeout).await
    }

    async fn wait_health(&mut self, ready: bool, timeout: Duration) -> Result<()> {
        let (what, when) = match ready {
            true => (format!("node {} /health/ready", self.spec.id), ""),
            false => (
                format!("node {} /health/live on {}", self.spec.id, self.spec.listen),
                "during start-up",
            ),
        };
        let deadline = Deadline::after(timeout, what);
        loop {
            self.fail_if_exited(when)?;
            let reply = match ready {
                true => self.client.ready().await,
                false => self.client.live().await,
            };
            let last = match reply {
                Reply::Success { .. } => return Ok(()),
                other => other.to_string(),
            };
            deadline.tick(&last).await?;
        }
    }

    /// An error with the log's last lines if the process exited by itself.
    pub fn fail_if_exited(&mut self, when: &str) -> Result<()> {
        if let Some(status) = self.exited() {
            let when = if when.is_empty() {
                String::new()
            } else {
                format!(" {when}")
            };
            bail!(
                "node {} exited{when} ({status}); {}:\n{}",
                self.spec.id,
                self.spec.log_path.display(),
                self.log_tail(30)
            );
        }
        Ok(())
    }
}
