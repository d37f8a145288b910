//! One `walship node` process: the real binary, started with explicit flags, its
//! stdout and stderr appended to `<data dir>.log` (a sibling of the data dir, so
//! it survives `wipe_data_dir`).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::api::{Api, ClientTls, Reply};
use super::process::{file_len, kill_and_reap, says_addr_in_use, signal, tail, wait_exit};
use super::wait::Deadline;

/// The binary under test, built by cargo for integration tests.
pub const WALSHIP_BIN: &str = env!("CARGO_BIN_EXE_walship");

/// How long a node may take to exit after SIGTERM before it counts as a failure.
pub const SIGTERM_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Node {
    id: u64,
    cluster: String,
    zk: String,
    data_dir: PathBuf,
    listen: SocketAddr,
    log_path: PathBuf,
    api: Api,
    child: Option<Child>,
    /// Stopped with SIGSTOP and not yet continued.
    frozen: bool,
    /// Number of times the process was started.
    starts: u32,
    /// Length of the log when the current process started.
    log_offset: u64,
    /// More `walship node` flags (tuning), passed on every start.
    extra_args: Vec<String>,
    /// Environment variables set on every start (e.g. `WALSHIP_FAULT_DIR`).
    env: Vec<(String, String)>,
    /// Set when the node runs in TLS mode: how `api` reaches it.
    tls: Option<ClientTls>,
}

impl Node {
    /// Start `walship node --id <id> --cluster <cluster> --zk <zk> --data-dir
    /// <data_dir> --listen <listen>` with RUST_LOG (default `info`). Returns at once;
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
        Node::spawn_with_env(id, cluster, zk, data_dir, listen, extra_args, &[])
    }

    /// `spawn_with` with environment variables, kept for every restart.
    pub fn spawn_with_env(
        id: u64,
        cluster: &str,
        zk: &str,
        data_dir: &Path,
        listen: SocketAddr,
        extra_args: &[String],
        env: &[(String, String)],
    ) -> Result<Node> {
        let name = data_dir
            .file_name()
            .with_context(|| format!("data dir {} has no file name", data_dir.display()))?
            .to_string_lossy()
            .into_owned();
        let log_path = data_dir.with_file_name(format!("{name}.log"));
        let mut node = Node {
            id,
            cluster: cluster.to_string(),
            zk: zk.to_string(),
            data_dir: data_dir.to_path_buf(),
            listen,
            log_path,
            api: Api::new(listen),
            child: None,
            frozen: false,
            starts: 0,
            log_offset: 0,
            extra_args: extra_args.to_vec(),
            env: env.to_vec(),
            tls: None,
        };
        node.launch()?;
        Ok(node)
    }

    fn launch(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir).with_context(|| format!("create {}", self.data_dir.display()))?;
        self.log_offset = file_len(&self.log_path);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open {}", self.log_path.display()))?;
        self.starts += 1;
        writeln!(
            log,
            "=== walship test harness: start #{} of node {} (listen {}, zk {}, cluster {}) ===",
            self.starts, self.id, self.listen, self.zk, self.cluster
        )?;
        let stderr = log.try_clone()?;
        let mut cmd = Command::new(WALSHIP_BIN);
        cmd.arg("node")
            .args(["--id", &self.id.to_string()])
            .args(["--cluster", &self.cluster])
            .args(["--zk", &self.zk])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.listen.to_string()])
            .args(&self.extra_args);
        // Flags only: the developer's shell must not leak settings into a test.
        for var in [
            "WALSHIP_ID",
            "WALSHIP_CLUSTER",
            "WALSHIP_ZK",
            "WALSHIP_DATA_DIR",
            "WALSHIP_LISTEN",
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
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
        let child = cmd
            .env("RUST_LOG", rust_log)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawn {WALSHIP_BIN}"))?;
        self.child = Some(child);
        self.frozen = false;
        Ok(())
    }

    /// Environment variables set on every later start (replacing those set
    /// before), e.g. `WALSHIP_FAULT_DIR` for the storage fault hooks.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Flags added to every later start (e.g. `--snapshot-every-entries 50`).
    pub fn set_extra_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Use another listen address from the next start on (e.g. after a port clash).
    pub fn set_listen(&mut self, listen: SocketAddr) {
        self.listen = listen;
        self.api = Api::with_tls(listen, self.tls.as_ref());
    }

    /// Reach this node over https with `tls` (it runs in TLS mode).
    pub fn set_client_tls(&mut self, tls: ClientTls) {
        self.api = Api::with_tls(self.listen, Some(&tls));
        self.tls = Some(tls);
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The client for this node.
    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Alive (frozen counts as alive).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Alive and not frozen: expected to answer requests.
    pub fn is_serving(&mut self) -> bool {
        !self.frozen && self.is_running()
    }

    /// The exit status, if the process has exited on its own (it is then reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The last `lines` lines this process (the current start) wrote.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, self.log_offset, lines)
    }

    /// Did the current start fail because its listen address was taken?
    pub fn failed_on_addr_in_use(&self) -> bool {
        says_addr_in_use(&self.log_path, self.log_offset)
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("node {} is not running", self.id))?;
        child.kill().with_context(|| format!("SIGKILL node {}", self.id))?;
        self.frozen = false;
        wait_exit(
            &mut child,
            Duration::from_secs(10),
            &format!("node {} after SIGKILL", self.id),
        )
        .await?;
        Ok(())
    }

    /// SIGSTOP: the process freezes (its ZooKeeper session will expire).
    pub fn sigstop(&mut self) -> Result<()> {
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("node {} is not running", self.id))?;
        signal(child, "STOP")?;
        self.frozen = true;
        Ok(())
    }

    /// SIGCONT after `sigstop`.
    pub fn sigcont(&mut self) -> Result<()> {
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("node {} is not running", self.id))?;
        signal(child, "CONT")?;
        self.frozen = false;
        Ok(())
    }

    /// SIGTERM and wait for the exit; its status (the contract: a clean exit).
    /// Error (and SIGKILL) if it is still running after 30 s.
    pub async fn sigterm(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("node {} is not running", self.id))?;
        if self.frozen {
            signal(&mut child, "CONT")?;
            self.frozen = false;
        }
        signal(&mut child, "TERM")?;
        match wait_exit(&mut child, SIGTERM_TIMEOUT, &format!("node {} after SIGTERM", self.id)).await {
            Ok(status) => Ok(status),
            Err(e) => {
                kill_and_reap(&mut child);
                Err(e)
            }
        }
    }

    /// Start the process again with the same flags (and data dir, unless wiped).
    /// It must have been stopped first (`kill9`, `sigterm`), or have exited.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!(
                "node {} is still running (pid {:?}); kill9() or sigterm() it first",
                self.id,
                self.pid()
            );
        }
        self.child = None;
        self.launch()
    }

    /// Delete the data dir (the node comes back with an empty disk). The node must
    /// be stopped.
    pub fn wipe_data_dir(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("node {} is still running; stop it before wiping its data dir", self.id);
        }
        if self.data_dir.exists() {
            std::fs::remove_dir_all(&self.data_dir).with_context(|| format!("remove {}", self.data_dir.display()))?;
        }
        std::fs::create_dir_all(&self.data_dir).with_context(|| format!("create {}", self.data_dir.display()))
    }

    /// Wait until `/health/live` answers 200. Fails at once if the process exits.
    pub async fn wait_live(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Deadline::after(timeout, format!("node {} /health/live on {}", self.id, self.listen));
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "node {} exited during start-up ({status}); {}:\n{}",
                    self.id,
                    self.log_path.display(),
                    self.log_tail(30)
                );
            }
            let last = match self.api.live().await {
                Reply::Success { .. } => return Ok(()),
                other => other.to_string(),
            };
            deadline.tick(&last).await?;
        }
    }

    /// Wait until `/health/ready` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Deadline::after(timeout, format!("node {} /health/ready", self.id));
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "node {} exited ({status}); {}:\n{}",
                    self.id,
                    self.log_path.display(),
                    self.log_tail(30)
                );
            }
            let last = match self.api.ready().await {
                Reply::Success { .. } => return Ok(()),
                other => other.to_string(),
            };
            deadline.tick(&last).await?;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}
