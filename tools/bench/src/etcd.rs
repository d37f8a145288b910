//! Baseline (b): etcd 3.4 from Debian's `etcd-server` package (installed with
//! apt-get if missing, like zk/zk.sh installs ZooKeeper), one member on
//! loopback with its own data dir and etcd's defaults (fsync on every
//! commit), driven through its gRPC-gateway JSON API: `POST /v3/kv/put` and
//! `POST /v3/kv/range` (linearizable by default), base64 keys and values.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use walship_testkit::free_port;
use walship_testkit::Deadline;
use walship_testkit::Proc;

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// etcd refuses writes past its backend quota (2 GiB by default); a full run
/// writes a few GB of revisions, none compacted, so the quota is raised.
const QUOTA_BYTES: &str = "8589934592";

/// The etcd binary, installing Debian's package if needed; Err says why not.
pub fn ensure_installed() -> Result<PathBuf, String> {
    if let Some(p) = find_etcd() {
        return Ok(p);
    }
    if unsafe { libc::geteuid() } != 0 {
        return Err("etcd is not installed and installing it needs root (apt-get install etcd-server)".into());
    }
    eprintln!("walship bench: installing Debian package etcd-server");
    let install = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", "etcd-server"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    match install {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("apt-get install etcd-server failed ({s})")),
        Err(e) => return Err(format!("cannot run apt-get: {e}")),
    }
    find_etcd().ok_or_else(|| "etcd-server installed but no etcd binary found".into())
}

fn find_etcd() -> Option<PathBuf> {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `etcd --version`'s first line.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// Our etcd member (a `walship_testkit::Proc`: signalled by pid only while
/// unreaped, killed when dropped).
pub struct EtcdServer {
    proc: Proc,
    pub client_url: String,
}

impl EtcdServer {
    pub async fn start(bin: &Path, dir: &Path) -> Result<EtcdServer> {
        std::fs::create_dir_all(dir)?;
        let (cport, pport) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{cport}");
        let peer_url = format!("http://127.0.0.1:{pport}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let mut cmd = Command::new(bin);
        cmd.args(["--name", "bench"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--quota-backend-bytes", QUOTA_BYTES])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let proc =
            Proc::spawn("etcd".to_string(), &mut cmd, true).with_context(|| format!("spawn {}", bin.display()))?;
        let mut server = EtcdServer { proc, client_url };
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        let deadline = Deadline::after(START_TIMEOUT, "etcd to serve").every(Duration::from_millis(100));
        loop {
            if let Some(status) = server.proc.exited() {
                bail!(
                    "etcd exited during start-up ({status}); see {}",
                    dir.join("etcd.log").display()
                );
            }
            let health = http.get(format!("{}/health", server.client_url)).send().await;
            let last = match health {
                Ok(r) => {
                    let status = r.status();
                    match r.text().await {
                        Ok(t) if status.is_success() && t.contains("true") => return Ok(server),
                        Ok(t) => format!("/health answered {status}: {t}"),
                        Err(e) => format!("/health answered {status}: {e}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            if let Err(e) = deadline.tick(&last).await {
                server.stop().await;
                return Err(e.context(format!("see {}", dir.join("etcd.log").display())));
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// SIGTERM, wait (SIGKILL if it lingers), reap.
    pub async fn stop(&mut self) {
        if let Err(e) = self.proc.terminate().await {
            eprintln!("walship bench: stopping etcd: {e:#}");
        }
    }
}

/// The gateway's request bodies (sent by `http1::Http1`).
pub struct Etcd;

impl Etcd {
    /// The JSON body of a put; `value_b64` is already base64.
    pub fn put_body(key: &str, value_b64: &str) -> String {
        format!(r#"{{"key":"{}","value":"{value_b64}"}}"#, B64.encode(key))
    }

    /// The JSON body of a range read of `key`.
    pub fn range_body(key: &str) -> String {
        format!(r#"{{"key":"{}"}}"#, B64.encode(key))
    }

    pub fn encode(v: &[u8]) -> String {
        B64.encode(v)
    }
}
