//! A private, loopback-only ZooKeeper for one test: same configuration, classpath
//! and java command as `zk/zk.sh`, on a free port, in `<test dir>/zk`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ports::free_port;
use super::process::{file_len, kill_and_reap, says_addr_in_use, signal, tail, wait_exit};
use super::wait::Deadline;

/// The shared configuration (see the reasoning in that file).
const ZOO_CFG_TEMPLATE: &str = include_str!("../../zk/zoo.cfg.template");
const LOG4J_PROPERTIES: &str = include_str!("../../zk/log4j.properties");
const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";
/// Small heap and the serial collector: several servers share a 2-core CI box.
const JVM_FLAGS: &[&str] = &[
    "-Xms32m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-Djava.net.preferIPv4Stack=true",
];

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const PORT_ATTEMPTS: usize = 5;

/// The classpath `zk/zk.sh classpath` prints (the library's copy, shared
/// with the soak and the bench).
pub fn zk_classpath() -> Result<String> {
    walship_testkit::procs::zk_classpath()
}

/// How a test's ZooKeeper protects itself (`zk/zk.sh`'s ZK_SASL_JAAS_FILE,
/// ZK_TLS_DIR and ZK_TLS_ONLY do the same).
#[derive(Clone, Debug, Default)]
pub struct ZkOptions {
    /// A JAAS file (`walship zk-jaas`): the SASL authentication provider on.
    pub jaas_file: Option<PathBuf>,
    /// A `walship dev-ca` directory: only a secure client port (TLS, with
    /// `zk-keystore.pem` and `ca.pem`, client certificates required), no
    /// plain one. `addr()` is then the secure port's.
    pub tls_dir: Option<PathBuf>,
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

/// zoo.cfg for `options`: the shared template, TLS-only (`clientPort`
/// replaced by `secureClientPort`) and with SASL as asked.
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
            "\n# TLS only (test harness)\n\
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
            "\n# SASL (test harness)\nauthProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n",
        );
    }
    cfg
}

pub struct Zk {
    dir: PathBuf,
    port: u16,
    options: ZkOptions,
    child: Option<Child>,
    /// Length of zk.log when the current process started (to read only its lines).
    log_offset: u64,
}

impl Zk {
    /// Start a ZooKeeper in `<parent>/zk` on a free port; returns once it serves.
    /// Retries on a new port if the chosen one was taken meanwhile.
    pub async fn start(parent: &Path) -> Result<Zk> {
        Zk::start_with(parent, ZkOptions::default()).await
    }

    /// `start`, with SASL and/or TLS as `options` say.
    pub async fn start_with(parent: &Path, options: ZkOptions) -> Result<Zk> {
        let dir = parent.join("zk");
        std::fs::create_dir_all(dir.join("data")).with_context(|| format!("create {}", dir.display()))?;
        let mut zk = Zk {
            dir,
            port: 0,
            options,
            child: None,
            log_offset: 0,
        };
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            zk.port = free_port()?;
            match zk.launch().await {
                Ok(()) => return Ok(zk),
                Err(e) if zk.port_was_taken() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("at least one attempt")).context("ZooKeeper: no free port after retries")
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

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM, wait for the exit (SIGKILL after 15 s).
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("ZooKeeper is not running")?;
        signal(&mut child, "TERM")?;
        match wait_exit(&mut child, STOP_TIMEOUT, "ZooKeeper after SIGTERM").await {
            Ok(status) => Ok(status),
            Err(e) => {
                kill_and_reap(&mut child);
                Err(e)
            }
        }
    }

    /// SIGKILL (a crash), wait for the exit.
    pub async fn kill9(&mut self) -> Result<()> {
        let mut child = self.child.take().context("ZooKeeper is not running")?;
        child.kill().context("SIGKILL ZooKeeper")?;
        wait_exit(&mut child, STOP_TIMEOUT, "ZooKeeper after SIGKILL").await?;
        Ok(())
    }

    /// Freeze (SIGSTOP) / thaw (SIGCONT) the server, e.g. to simulate a long GC pause.
    pub fn sigstop(&mut self) -> Result<()> {
        signal(self.child.as_mut().context("ZooKeeper is not running")?, "STOP")
    }

    pub fn sigcont(&mut self) -> Result<()> {
        signal(self.child.as_mut().context("ZooKeeper is not running")?, "CONT")
    }

    /// Start again, same port and data, after `stop()` or `kill9()`.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("ZooKeeper is still running (pid {:?})", self.pid());
        }
        self.launch().await
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
            None => four_letter(self.port, word).await,
        }
    }

    pub fn options(&self) -> &ZkOptions {
        &self.options
    }

    fn port_was_taken(&self) -> bool {
        says_addr_in_use(&self.log_path(), self.log_offset) || says_addr_in_use(&self.dir.join("zk.out"), 0)
    }

    async fn launch(&mut self) -> Result<()> {
        let cp = zk_classpath()?;
        let cfg = zoo_cfg(ZOO_CFG_TEMPLATE, &self.dir.join("data"), self.port, &self.options);
        let cfg_path = self.dir.join("zoo.cfg");
        std::fs::write(&cfg_path, cfg).with_context(|| format!("write {}", cfg_path.display()))?;
        let log4j_path = self.dir.join("log4j.properties");
        std::fs::write(&log4j_path, LOG4J_PROPERTIES).with_context(|| format!("write {}", log4j_path.display()))?;

        let out_path = self.dir.join("zk.out");
        let mut out = OpenOptions::new().create(true).append(true).open(&out_path)?;
        writeln!(
            out,
            "=== walship test harness: starting ZooKeeper on 127.0.0.1:{} ===",
            self.port
        )?;
        let err = out.try_clone()?;
        self.log_offset = file_len(&self.log_path());

        let child = Command::new(std::env::var("JAVA").unwrap_or_else(|_| "java".into()))
            .args(JVM_FLAGS)
            .arg(format!("-Dzookeeper.log.dir={}", self.dir.display()))
            .arg(format!("-Dlog4j.configuration=file:{}", log4j_path.display()))
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
            .stderr(err)
            .spawn()
            .context("spawn java (is a JRE installed? run `zk/zk.sh install`)")?;
        self.child = Some(child);

        let deadline = Deadline::after(START_TIMEOUT, format!("ZooKeeper on {} to serve", self.addr()));
        loop {
            let child = self.child.as_mut().expect("just set");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "ZooKeeper exited during start-up ({status}); {}:\n{}\n{}",
                    self.log_path().display(),
                    tail(&self.log_path(), self.log_offset, 20),
                    tail(&out_path, 0, 10),
                );
            }
            let last = match self.four_letter("srvr").await {
                Ok(reply) if reply.contains("Mode:") => return Ok(()),
                Ok(reply) => format!("srvr answered {reply:?}"),
                Err(e) => format!("{e:#}"),
            };
            if let Err(e) = deadline.tick(&last).await {
                if let Some(mut child) = self.child.take() {
                    kill_and_reap(&mut child);
                }
                return Err(e.context(format!("see {}", self.log_path().display())));
            }
        }
    }
}

impl Drop for Zk {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

/// Send a four-letter word to 127.0.0.1:`port`; the whole reply (2 s limit).
pub async fn four_letter(port: u16, word: &str) -> Result<String> {
    walship_testkit::procs::four_letter(&format!("127.0.0.1:{port}"), word).await
}
