//! The processes the soak starts and hurts: a private ZooKeeper (the same java
//! command, classpath and configuration as `zk/zk.sh` and tests/common/zk.rs)
//! and `walship node` processes. Every process is a `Child` of ours in its own
//! process group (so a Ctrl-C on the terminal reaches only the soak, which
//! then stops them by pid), and is signalled only while it is unreaped, so a
//! recycled pid is never hit.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

/// zk/zoo.cfg.template (with @DATA_DIR@ and @CLIENT_PORT@).
pub const ZOO_CFG_TEMPLATE: &str = include_str!("../../../zk/zoo.cfg.template");
const LOG4J_PROPERTIES: &str = include_str!("../../../zk/log4j.properties");
const ZK_MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";
/// As zk/zk.sh: small heap and the serial collector, for a shared 2-core box.
const ZK_JVM_FLAGS: &[&str] = &[
    "-Xms32m",
    "-Xmx1g",
    "-XX:+UseSerialGC",
    "-Djava.net.preferIPv4Stack=true",
];
const ZK_START_TIMEOUT: Duration = Duration::from_secs(45);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

/// A child process of ours, signalled by pid only while unreaped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    frozen: bool,
}

impl Proc {
    fn new(name: String, child: Child) -> Proc {
        Proc {
            name,
            child: Some(child),
            frozen: false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Alive (not exited, whether frozen or not).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Sends `sig` if the child is alive and unreaped.
    pub fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("{} is not running", self.name))?;
        if let Some(status) = child.try_wait()? {
            bail!("{} (pid {}) already exited ({status})", self.name, child.id());
        }
        // SAFETY: kill(2) on the pid of our own unreaped child.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        if rc != 0 {
            bail!("kill({}, {sig}): {}", child.id(), std::io::Error::last_os_error());
        }
        match sig {
            libc::SIGSTOP => self.frozen = true,
            libc::SIGCONT => self.frozen = false,
            _ => {}
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)?;
        self.wait_exit(STOP_TIMEOUT).await
    }

    /// SIGTERM (after SIGCONT if frozen), wait; SIGKILL if it lingers.
    pub async fn terminate(&mut self) -> Result<()> {
        if !self.is_running() {
            self.child = None;
            return Ok(());
        }
        if self.frozen {
            let _ = self.signal(libc::SIGCONT);
        }
        let _ = self.signal(libc::SIGTERM);
        if self.wait_exit(STOP_TIMEOUT).await.is_err() {
            let _ = self.signal(libc::SIGKILL);
            self.wait_exit(STOP_TIMEOUT).await?;
        }
        Ok(())
    }

    async fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Ok(());
            };
            if child.try_wait()?.is_some() {
                self.child = None;
                self.frozen = false;
                return Ok(());
            }
            if Instant::now() >= end {
                bail!("{} (pid {}) still running after {timeout:?}", self.name, child.id());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The exit status, if it exited (and reaps it).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// A free loopback port (bind :0, note it, release it).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn append_log(path: &Path, banner: &str) -> Result<std::fs::File> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    writeln!(f, "=== walship soak: {banner} ===")?;
    Ok(f)
}

// ---------------------------------------------------------------- ZooKeeper

/// Debian's netty codec jar (package libnetty-java, a dependency of zookeeper).
const NETTY_CODEC_JAR: &str = "/usr/share/java/netty-codec.jar";

/// `zk/zk.sh classpath`: `$ZK_CLASSPATH`, or Debian's zookeeper.jar with
/// exactly one slf4j binding (log4j 1.2), and netty's codec when present.
pub fn zk_classpath() -> Result<String> {
    if let Ok(cp) = std::env::var("ZK_CLASSPATH") {
        if !cp.is_empty() {
            return Ok(cp);
        }
    }
    let jars = [
        "zookeeper.jar",
        "zookeeper-jute.jar",
        "slf4j-api.jar",
        "slf4j-log4j12.jar",
        "log4j-1.2.jar",
    ];
    let paths: Vec<String> = jars.iter().map(|j| format!("/usr/share/java/{j}")).collect();
    for p in &paths {
        if !Path::new(p).is_file() {
            bail!("{p} not found: ZooKeeper is not installed (run `zk/zk.sh install`, or set ZK_CLASSPATH)");
        }
    }
    // Netty's codec classes, which zookeeper.jar's manifest leaves out: the
    // secure client port (NettyServerCnxnFactory with TLS) needs them.
    let mut paths = paths;
    if Path::new(NETTY_CODEC_JAR).is_file() {
        paths.push(NETTY_CODEC_JAR.to_string());
    }
    Ok(paths.join(":"))
}

/// Send a four-letter word to `addr`; the whole reply (2 s limit).
pub async fn four_letter(addr: &str, word: &str) -> Result<String> {
    four_letter_within(addr, word, Duration::from_secs(2)).await
}

/// `four_letter` with its own limit (walship-zk's, which the session
/// keeper's probes use).
pub async fn four_letter_within(addr: &str, word: &str, limit: Duration) -> Result<String> {
    match walship_zk::four_letter(addr, word, limit).await {
        Ok(reply) => Ok(reply),
        // Its own message names the word and the server.
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("{word} to {addr}")),
    }
}

/// Our private ZooKeeper in `<dir>`: zoo.cfg, log4j.properties, data/, zk.log, zk.out.
/// Standalone (`start`), or one server of an ensemble on loopback
/// (`start_ensemble`): the same template, plus `server.N` lines and
/// `data/myid`.
pub struct ZkServer {
    dir: PathBuf,
    port: u16,
    /// 1-based id in an ensemble (`myid`); 0 standalone.
    myid: u32,
    /// The `server.N=...` lines of the ensemble (empty standalone).
    servers: String,
    proc: Option<Proc>,
}

/// What a server says it is (`srvr`'s `Mode:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZkMode {
    Leader,
    Follower,
    Standalone,
    /// Answering, but not serving (no quorum: electing).
    NotServing,
}

impl ZkServer {
    /// Starts on a free port (retrying on another if it was taken meanwhile).
    pub async fn start(dir: &Path) -> Result<ZkServer> {
        std::fs::create_dir_all(dir.join("data")).with_context(|| format!("create {}", dir.display()))?;
        let mut last = None;
        for _ in 0..5 {
            let mut zk = ZkServer {
                dir: dir.to_path_buf(),
                port: free_port()?,
                myid: 0,
                servers: String::new(),
                proc: None,
            };
            match zk.launch().await {
                Ok(()) => return Ok(zk),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried")).context("ZooKeeper did not start")
    }

    /// An ensemble of `n` servers on loopback in `<base>/zk1`..`zk<n>`, each
    /// with free client, quorum and election ports; returns once every
    /// server serves (one leader, the others following).
    pub async fn start_ensemble(base: &Path, n: u32) -> Result<Vec<ZkServer>> {
        let mut last = None;
        for _ in 0..3 {
            let mut ports = Vec::new();
            let mut lines = String::new();
            for id in 1..=n {
                let (client, quorum, election) = (free_port()?, free_port()?, free_port()?);
                ports.push(client);
                lines.push_str(&format!("server.{id}=127.0.0.1:{quorum}:{election}\n"));
            }
            let mut servers = Vec::new();
            for id in 1..=n {
                let dir = base.join(format!("zk{id}"));
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
                }
                std::fs::create_dir_all(dir.join("data")).with_context(|| format!("create {}", dir.display()))?;
                servers.push(ZkServer {
                    dir,
                    port: ports[(id - 1) as usize],
                    myid: id,
                    servers: lines.clone(),
                    proc: None,
                });
            }
            let started: Result<()> = async {
                for s in servers.iter_mut() {
                    s.spawn()?;
                }
                for s in servers.iter_mut() {
                    s.wait_serving(ZK_START_TIMEOUT).await?;
                }
                Ok(())
            }
            .await;
            match started {
                Ok(()) => return Ok(servers),
                Err(e) => {
                    for s in servers.iter_mut() {
                        let _ = s.kill9().await;
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("tried")).context("the ZooKeeper ensemble did not start")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `myid` in an ensemble (0 standalone).
    pub fn myid(&self) -> u32 {
        self.myid
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| p.pid())
    }

    /// Running (frozen or not).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    pub fn is_frozen(&self) -> bool {
        self.proc.as_ref().is_some_and(|p| p.is_frozen())
    }

    /// SIGTERM and wait (SIGKILL after 15 s).
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.terminate().await?;
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            if p.is_running() {
                p.kill9().await?;
            }
        }
        Ok(())
    }

    pub fn freeze(&mut self) -> Result<()> {
        self.proc
            .as_mut()
            .context("ZooKeeper not running")?
            .signal(libc::SIGSTOP)
    }

    pub fn thaw(&mut self) -> Result<()> {
        self.proc
            .as_mut()
            .context("ZooKeeper not running")?
            .signal(libc::SIGCONT)
    }

    /// Start again: same port, same data dir.
    pub async fn start_again(&mut self) -> Result<()> {
        self.launch().await
    }

    /// `srvr`'s `Mode:` (`None`: no answer; never asks a frozen server).
    pub async fn mode(&mut self) -> Option<ZkMode> {
        if !self.is_running() || self.is_frozen() {
            return None;
        }
        let r = four_letter_within(&self.addr(), "srvr", Duration::from_millis(500))
            .await
            .ok()?;
        Some(if r.contains("Mode: leader") {
            ZkMode::Leader
        } else if r.contains("Mode: follower") {
            ZkMode::Follower
        } else if r.contains("Mode: standalone") {
            ZkMode::Standalone
        } else {
            ZkMode::NotServing
        })
    }

    async fn launch(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_serving(ZK_START_TIMEOUT).await
    }

    /// Starts the JVM (no wait: a server of an ensemble serves only once a
    /// quorum of them runs).
    pub fn spawn(&mut self) -> Result<()> {
        let cp = zk_classpath()?;
        let mut cfg = ZOO_CFG_TEMPLATE
            .replace("@DATA_DIR@", &self.dir.join("data").display().to_string())
            .replace("@CLIENT_PORT@", &self.port.to_string());
        if self.myid > 0 {
            cfg.push_str("\n# walship soak: one server of an ensemble on loopback\n");
            cfg.push_str(&self.servers);
            std::fs::write(self.dir.join("data").join("myid"), format!("{}\n", self.myid))?;
        }
        let cfg_path = self.dir.join("zoo.cfg");
        std::fs::write(&cfg_path, cfg)?;
        let log4j = self.dir.join("log4j.properties");
        std::fs::write(&log4j, LOG4J_PROPERTIES)?;
        let out = append_log(
            &self.dir.join("zk.out"),
            &format!("starting ZooKeeper on {}", self.addr()),
        )?;
        let err = out.try_clone()?;
        let child = Command::new(std::env::var("JAVA").unwrap_or_else(|_| "java".into()))
            .args(ZK_JVM_FLAGS)
            .arg(format!("-Dzookeeper.log.dir={}", self.dir.display()))
            .arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
            .arg("-cp")
            .arg(&cp)
            .arg(ZK_MAIN_CLASS)
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .context("spawn java (is a JRE installed? run `zk/zk.sh install`)")?;
        self.proc = Some(Proc::new(format!("ZooKeeper {}", self.addr()), child));
        Ok(())
    }

    /// Polls `srvr` until the server serves (a `Mode:` line).
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let Some(proc) = self.proc.as_mut() else {
                bail!("ZooKeeper {} is not running", self.addr());
            };
            if let Some(status) = proc.exited() {
                self.proc = None;
                bail!(
                    "ZooKeeper exited during start-up ({status}); see {}",
                    self.dir.join("zk.log").display()
                );
            }
            let last = match four_letter(&self.addr(), "srvr").await {
                Ok(r) if r.contains("Mode:") => return Ok(()),
                Ok(r) => format!("srvr answered {r:?}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= end {
                if let Some(mut p) = self.proc.take() {
                    let _ = p.kill9().await;
                }
                bail!("ZooKeeper on {} did not serve within {timeout:?}: {last}", self.addr());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------- nodes

/// How a node is started (kept for every restart).
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub bin: PathBuf,
    pub cluster: String,
    pub zk: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub listen: SocketAddr,
    /// The fault proxy in front of this node: what the other node dials.
    pub advertise: Option<SocketAddr>,
    pub extra_args: Vec<String>,
    /// The storage layer's fault-hook directory (`WALSHIP_FAULT_DIR`):
    /// `stall` and `nosync` files in it freeze the disk or skip fdatasync,
    /// and its `synced` record says what a power loss keeps. `None`: no hooks.
    pub fault_dir: Option<PathBuf>,
}

impl NodeSpec {
    /// Node `id` of `cluster` on a free loopback port, with `<run_dir>/node<id>`
    /// as its data dir and `<run_dir>/node<id>.log` as its log; no
    /// `--advertise`, no other flags.
    pub fn local(id: u64, bin: &Path, cluster: &str, zk: &str, run_dir: &Path) -> Result<NodeSpec> {
        Ok(NodeSpec {
            id,
            bin: bin.to_path_buf(),
            cluster: cluster.to_string(),
            zk: zk.to_string(),
            data_dir: run_dir.join(format!("node{id}")),
            log_path: run_dir.join(format!("node{id}.log")),
            listen: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            advertise: None,
            extra_args: Vec::new(),
            fault_dir: None,
        })
    }
}

/// One `walship node` process, restartable.
pub struct NodeProc {
    pub spec: NodeSpec,
    proc: Option<Proc>,
    pub starts: u32,
}

impl NodeProc {
    pub fn new(spec: NodeSpec) -> NodeProc {
        NodeProc {
            spec,
            proc: None,
            starts: 0,
        }
    }

    pub fn id(&self) -> u64 {
        self.spec.id
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| p.pid())
    }

    /// Running and not frozen: worth sending requests to.
    pub fn is_serving(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running() && !p.is_frozen())
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    /// Exited by itself (a crash): its status.
    pub fn crashed(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.as_mut().and_then(|p| p.exited())
    }

    pub fn spawn(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("node {} is already running", self.spec.id);
        }
        std::fs::create_dir_all(&self.spec.data_dir)?;
        self.starts += 1;
        let s = &self.spec;
        let log = append_log(
            &s.log_path,
            &format!(
                "start #{} of node {} (listen {}, zk {})",
                self.starts, s.id, s.listen, s.zk
            ),
        )?;
        let err = log.try_clone()?;
        let mut cmd = Command::new(&s.bin);
        cmd.arg("node")
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
        for var in [
            "WALSHIP_ID",
            "WALSHIP_CLUSTER",
            "WALSHIP_ZK",
            "WALSHIP_DATA_DIR",
            "WALSHIP_LISTEN",
            "WALSHIP_ADVERTISE",
            "WALSHIP_FAULT_DIR",
        ] {
            cmd.env_remove(var);
        }
        if let Some(dir) = &s.fault_dir {
            std::fs::create_dir_all(dir)?;
            cmd.env("WALSHIP_FAULT_DIR", dir);
        }
        let child = cmd
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {}", s.bin.display()))?;
        self.proc = Some(Proc::new(format!("node {}", s.id), child));
        Ok(())
    }

    pub async fn kill9(&mut self) -> Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.kill9().await,
            None => bail!("node {} is not running", self.spec.id),
        }
    }

    /// SIGKILL without waiting (`reap` waits): to kill two nodes at once.
    pub fn sigkill(&mut self) -> Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.signal(libc::SIGKILL),
            None => bail!("node {} is not running", self.spec.id),
        }
    }

    /// Waits for a node sent SIGKILL to exit, and reaps it.
    pub async fn reap(&mut self) -> Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.wait_exit(STOP_TIMEOUT).await,
            None => Ok(()),
        }
    }

    pub fn sigstop(&mut self) -> Result<()> {
        self.proc.as_mut().context("not running")?.signal(libc::SIGSTOP)
    }

    pub fn sigcont(&mut self) -> Result<()> {
        self.proc.as_mut().context("not running")?.signal(libc::SIGCONT)
    }

    /// SIGTERM (SIGCONT first if frozen), SIGKILL if it lingers.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.terminate().await?;
        }
        Ok(())
    }

    /// Empty the data dir (the node must be stopped).
    pub fn wipe(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("node {} is running; not wiping its disk", self.spec.id);
        }
        if self.spec.data_dir.exists() {
            std::fs::remove_dir_all(&self.spec.data_dir)?;
        }
        std::fs::create_dir_all(&self.spec.data_dir)?;
        Ok(())
    }

    /// The last `n` lines of its log (for error messages).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.spec.log_path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

// ---------------------------------------------------------------- the run

/// Creates the run dir and wipes what a previous run left in it: the
/// `subdirs` and the nodes' logs. A `--run-dir` error is one line.
pub fn prepare_run_dir(dir: &Path, subdirs: &[&str]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("--run-dir {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("--run-dir {}: {e}", dir.display()))?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if dir.parent().is_none() || Some(&dir) == home.as_ref() {
        return Err(format!(
            "refusing to use {} as the run dir (parts of it are wiped)",
            dir.display()
        ));
    }
    for sub in subdirs {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| format!("cannot clear {}: {e}", p.display()))?;
        }
    }
    for log in ["node1.log", "node2.log"] {
        let _ = std::fs::remove_file(dir.join(log));
    }
    Ok(dir)
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
pub async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::signal;
    use tokio::signal::unix::SignalKind;
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The `walship` binary the tools start nodes from when no `--bin` is
/// given: the one cargo built beside the running tool (`target/<profile>/`),
/// or beside its parent directory for a test binary in `target/<profile>/deps/`.
pub fn walship_binary_beside_this_one() -> std::result::Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = me.parent().ok_or("this executable has no directory")?;
    for candidate in [dir.join("walship"), dir.join("../walship")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "no walship binary beside {}: build it first (cargo build, or cargo build --release) or pass --bin",
        me.display()
    ))
}
