//! Our own ZooKeeper: one loopback server on a free port, or the servers of an
//! ensemble, with the configuration, classpath and java command of `zk/zk.sh`.
//! Everything lives in the server's directory: zoo.cfg, log4j.properties,
//! data/, zk.log (ZooKeeper's log), zk.out (the JVM's output).

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::ExitStatus;
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

use crate::ports::free_port;
use crate::process::append_log;
use crate::process::file_len;
use crate::process::says_addr_in_use;
use crate::process::tail;
use crate::process::Proc;
use crate::wait::Deadline;

/// zk/zoo.cfg.template (with @DATA_DIR@ and @CLIENT_PORT@); the reasoning
/// behind every setting is in that file.
pub const ZOO_CFG_TEMPLATE: &str = include_str!("../../../zk/zoo.cfg.template");
const LOG4J_PROPERTIES: &str = include_str!("../../../zk/log4j.properties");
const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";
/// The serial collector and a small initial heap, for a shared 2-core box.
const JVM_FLAGS: &[&str] = &["-Xms32m", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true"];
/// The maximum heap unless `ZkOptions::max_heap` says otherwise: several
/// tests' servers run side by side.
const DEFAULT_MAX_HEAP: &str = "256m";
const START_TIMEOUT: Duration = Duration::from_secs(45);
const PORT_ATTEMPTS: usize = 5;
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
    let mut paths: Vec<String> = jars.iter().map(|j| format!("/usr/share/java/{j}")).collect();
    for p in &paths {
        if !Path::new(p).is_file() {
            bail!("{p} not found: ZooKeeper is not installed (run `zk/zk.sh install`, or set ZK_CLASSPATH)");
        }
    }
    // Netty's codec classes, which zookeeper.jar's manifest leaves out: the
    // secure client port (NettyServerCnxnFactory with TLS) needs them.
    if Path::new(NETTY_CODEC_JAR).is_file() {
        paths.push(NETTY_CODEC_JAR.to_string());
    }
    Ok(paths.join(":"))
}

/// Send a four-letter word to `addr`; the whole reply (2 s limit).
pub async fn four_letter(addr: &str, word: &str) -> Result<String> {
    four_letter_within(addr, word, Duration::from_secs(2)).await
}

/// `four_letter` with its own limit.
pub async fn four_letter_within(addr: &str, word: &str, limit: Duration) -> Result<String> {
    walship_zk::four_letter(addr, word, limit)
        .await
        .with_context(|| format!("{word} to {addr}"))
}

/// How a server runs (`zk/zk.sh`'s ZK_SASL_JAAS_FILE, ZK_TLS_DIR and
/// ZK_TLS_ONLY do the same for its servers).
#[derive(Clone, Debug, Default)]
pub struct ZkOptions {
    /// A JAAS file (`walship zk-jaas`): the SASL authentication provider on.
    pub jaas_file: Option<PathBuf>,
    /// A `walship dev-ca` directory: only a secure client port (TLS, with
    /// `zk-keystore.pem` and `ca.pem`, client certificates required), no
    /// plain one. `addr()` is then the secure port's.
    pub tls_dir: Option<PathBuf>,
    /// The JVM's `-Xmx` (`None`: 256m; `zk/zk.sh` and the soak give 1g).
    pub max_heap: Option<String>,
    /// In a process group of its own (see `Proc::spawn`).
    pub own_process_group: bool,
}

impl ZkOptions {
    /// The TLS a client of this ZooKeeper needs (node 1's certificate as
    /// its client certificate).
    pub fn client_tls(&self) -> Option<walship_zk::ZkTls> {
        let dir = self.tls_dir.as_ref()?;
        let files = walship_zk::ZkTlsFiles {
            ca: dir.join("ca.pem"),
            identity: Some((dir.join("node1.pem"), dir.join("node1-key.pem"))),
        };
        Some(walship::zksec::load_tls(&files).expect("dev-ca files load"))
    }
}

/// zoo.cfg for a standalone server with `options`: the shared template,
/// TLS-only (`clientPort` replaced by `secureClientPort`) and with SASL as asked.
pub fn zoo_cfg(template: &str, data_dir: &Path, port: u16, options: &ZkOptions) -> String {
    let mut cfg: String = template
        .replace("@DATA_DIR@", &data_dir.display().to_string())
        .replace("@CLIENT_PORT@", &port.to_string())
        .lines()
        .filter(|l| options.tls_dir.is_none() || !(l.starts_with("clientPort=") || l.starts_with("clientPortAddress=")))
        .map(|l| format!("{l}\n"))
        .collect();
    if let Some(dir) = &options.tls_dir {
        cfg.push_str(&format!(
            "\n# TLS only (walship testkit)\n\
             serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
             secureClientPort={port}\n\
             secureClientPortAddress=127.0.0.1\n\
             ssl.keyStore.location={ks}\n\
             ssl.keyStore.type=PEM\n\
             ssl.trustStore.location={ca}\n\
             ssl.trustStore.type=PEM\n\
             ssl.clientAuth=need\n",
            ks = dir.join("zk-keystore.pem").display(),
            ca = dir.join("ca.pem").display(),
        ));
    }
    if options.jaas_file.is_some() {
        cfg.push_str(
            "\n# SASL (walship testkit)\nauthProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n",
        );
    }
    cfg
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

/// One ZooKeeper server of ours: standalone (`start`), or one server of an
/// ensemble on loopback (`start_ensemble`: the same template, plus
/// `server.N` lines and `data/myid`).
pub struct ZkServer {
    dir: PathBuf,
    port: u16,
    /// 1-based id in an ensemble (`myid`); 0 standalone.
    myid: u32,
    /// The `server.N=...` lines of the ensemble (empty standalone).
    servers: String,
    options: ZkOptions,
    proc: Option<Proc>,
    /// Length of zk.log when the current process started (to read only its lines).
    log_offset: u64,
}

impl ZkServer {
    /// A standalone server in `dir` on a free port; returns once it serves.
    pub async fn start(dir: &Path) -> Result<ZkServer> {
        ZkServer::start_with(dir, ZkOptions::default()).await
    }

    /// `start`, with SASL, TLS and the JVM as `options` say. Retries on a new
    /// port if the chosen one was taken meanwhile.
    pub async fn start_with(dir: &Path, options: ZkOptions) -> Result<ZkServer> {
        std::fs::create_dir_all(dir.join("data")).with_context(|| format!("create {}", dir.display()))?;
        let mut zk = ZkServer::new(dir.to_path_buf(), 0, 0, String::new(), options);
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            zk.port = free_port()?;
            match zk.start_again().await {
                Ok(()) => return Ok(zk),
                Err(e) if zk.port_was_taken() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("at least one attempt")).context("ZooKeeper: no free port after retries")
    }

    /// An ensemble of `n` servers on loopback in `<base>/zk1`..`zk<n>`, each
    /// with free client, quorum and election ports; returns once every
    /// server serves (one leader, the others following).
    pub async fn start_ensemble(base: &Path, n: u32) -> Result<Vec<ZkServer>> {
        ZkServer::start_ensemble_with(base, n, &ZkOptions::default()).await
    }

    /// `start_ensemble`, every server with `options` (the JVM's; an ensemble
    /// has neither SASL nor TLS here).
    pub async fn start_ensemble_with(base: &Path, n: u32, options: &ZkOptions) -> Result<Vec<ZkServer>> {
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
                let port = ports[(id - 1) as usize];
                servers.push(ZkServer::new(dir, port, id, lines.clone(), options.clone()));
            }
            let started: Result<()> = async {
                for s in servers.iter_mut() {
                    s.spawn()?;
                }
                for s in servers.iter_mut() {
                    s.wait_serving(START_TIMEOUT).await?;
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

    fn new(dir: PathBuf, port: u16, myid: u32, servers: String, options: ZkOptions) -> ZkServer {
        ZkServer {
            dir,
            port,
            myid,
            servers,
            options,
            proc: None,
            log_offset: 0,
        }
    }

    /// `127.0.0.1:<port>`: the `--zk` argument for the nodes.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("zk.log")
    }

    /// `myid` in an ensemble (0 standalone).
    pub fn myid(&self) -> u32 {
        self.myid
    }

    pub fn options(&self) -> &ZkOptions {
        &self.options
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

    fn proc(&mut self) -> Result<&mut Proc> {
        let addr = self.addr();
        self.proc
            .as_mut()
            .with_context(|| format!("ZooKeeper {addr} is not running"))
    }

    /// SIGTERM (SIGCONT first if frozen), wait for the exit; an error (after
    /// SIGKILL) if it is still running after 15 s.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        let status = self.proc()?.sigterm(crate::process::STOP_TIMEOUT).await;
        self.proc = None;
        status
    }

    /// SIGKILL (a crash), wait for the exit (nothing to kill if it already
    /// exited by itself).
    pub async fn kill9(&mut self) -> Result<()> {
        let proc = self.proc()?;
        if proc.exited().is_none() {
            proc.kill9().await?;
        }
        self.proc = None;
        Ok(())
    }

    /// Freeze (SIGSTOP) / thaw (SIGCONT) the server, e.g. a long GC pause.
    pub fn sigstop(&mut self) -> Result<()> {
        self.proc()?.signal(libc::SIGSTOP)
    }

    pub fn sigcont(&mut self) -> Result<()> {
        self.proc()?.signal(libc::SIGCONT)
    }

    /// Start again, same port and data, after `stop()` or `kill9()`; returns
    /// once it serves.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("ZooKeeper is still running (pid {:?})", self.pid());
        }
        self.spawn()?;
        self.wait_serving(START_TIMEOUT).await
    }

    /// `stop()` (SIGTERM) then `start_again()`.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// `kill9()` then `start_again()`.
    pub async fn restart_kill9(&mut self) -> Result<()> {
        self.kill9().await?;
        self.start_again().await
    }

    /// Send a four-letter word ("srvr", "ruok", "mntr", ...) and return the
    /// reply (over TLS to a TLS-only ZooKeeper).
    pub async fn four_letter(&self, word: &str) -> Result<String> {
        match self.options.client_tls() {
            Some(tls) => Ok(walship_zk::four_letter_tls(&self.addr(), word, Duration::from_secs(2), &tls).await?),
            None => four_letter(&self.addr(), word).await,
        }
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

    fn port_was_taken(&self) -> bool {
        says_addr_in_use(&self.log_path(), self.log_offset) || says_addr_in_use(&self.dir.join("zk.out"), 0)
    }

    /// Writes the configuration and starts the JVM, without waiting (a
    /// server of an ensemble serves only once a quorum of them runs).
    pub fn spawn(&mut self) -> Result<()> {
        let cp = zk_classpath()?;
        let mut cfg = zoo_cfg(ZOO_CFG_TEMPLATE, &self.dir.join("data"), self.port, &self.options);
        if self.myid > 0 {
            cfg.push_str("\n# walship testkit: one server of an ensemble on loopback\n");
            cfg.push_str(&self.servers);
            std::fs::write(self.dir.join("data").join("myid"), format!("{}\n", self.myid))?;
        }
        let cfg_path = self.dir.join("zoo.cfg");
        std::fs::write(&cfg_path, cfg).with_context(|| format!("write {}", cfg_path.display()))?;
        let log4j = self.dir.join("log4j.properties");
        std::fs::write(&log4j, LOG4J_PROPERTIES).with_context(|| format!("write {}", log4j.display()))?;
        let out = append_log(
            &self.dir.join("zk.out"),
            &format!("starting ZooKeeper on {}", self.addr()),
        )?;
        let err = out.try_clone()?;
        self.log_offset = file_len(&self.log_path());
        let max_heap = self.options.max_heap.as_deref().unwrap_or(DEFAULT_MAX_HEAP);
        let mut cmd = Command::new(std::env::var("JAVA").unwrap_or_else(|_| "java".into()));
        // `ZK_JVM_FLAGS` (as in zk/zk.sh) replaces the flags; after -Xmx, so it can set that too.
        let jvm_flags: Vec<String> = match std::env::var("ZK_JVM_FLAGS") {
            Ok(flags) if !flags.trim().is_empty() => flags.split_whitespace().map(str::to_string).collect(),
            _ => JVM_FLAGS.iter().map(|f| f.to_string()).collect(),
        };
        cmd.arg(format!("-Xmx{max_heap}"))
            .args(&jvm_flags)
            .arg(format!("-Dzookeeper.log.dir={}", self.dir.display()))
            .arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
            .args(
                self.options
                    .jaas_file
                    .iter()
                    .map(|f| format!("-Djava.security.auth.login.config={}", f.display())),
            )
            .arg("-cp")
            .arg(&cp)
            .arg(MAIN_CLASS)
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let proc = Proc::spawn(
            format!("ZooKeeper {}", self.addr()),
            &mut cmd,
            self.options.own_process_group,
        )
        .context("spawn java (is a JRE installed? run `zk/zk.sh install`)")?;
        self.proc = Some(proc);
        Ok(())
    }

    /// Polls `srvr` until the server serves (a `Mode:` line); fails at once
    /// if it exits, and kills it if it does not serve in time.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Deadline::after(timeout, format!("ZooKeeper on {} to serve", self.addr()));
        loop {
            let Some(proc) = self.proc.as_mut() else {
                bail!("ZooKeeper {} is not running", self.addr());
            };
            if let Some(status) = proc.exited() {
                self.proc = None;
                bail!(
                    "ZooKeeper exited during start-up ({status}); {}:\n{}\n{}",
                    self.log_path().display(),
                    tail(&self.log_path(), self.log_offset, 20),
                    tail(&self.dir.join("zk.out"), 0, 10),
                );
            }
            let last = match self.four_letter("srvr").await {
                Ok(reply) if reply.contains("Mode:") => return Ok(()),
                Ok(reply) => format!("srvr answered {reply:?}"),
                Err(e) => format!("{e:#}"),
            };
            if let Err(e) = deadline.tick(&last).await {
                if let Some(mut p) = self.proc.take() {
                    let _ = p.kill9().await;
                }
                return Err(e.context(format!("see {}", self.log_path().display())));
            }
        }
    }
}
