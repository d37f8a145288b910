//! How a node proves itself to ZooKeeper and protects the connection:
//!
//! - Credentials ([`ZkCredentials`]), from `--secret-file`: ZooKeeper's
//!   digest scheme (`walship:<secret>`, sent in clear text on every
//!   connection; the default), or, with `--zk-sasl`, SASL DIGEST-MD5 as user
//!   `walship` with a password derived from the secret (a challenge and
//!   response: neither the password nor the secret crosses the wire). The
//!   cluster's znodes then carry `digest:walship:<hash>` or `sasl:walship`
//!   ACLs, all rights to that identity only.
//! - Transport ([`ZkTls`]), with `--zk-tls-ca-file`: every server is dialled
//!   over TLS (zookeeper-client's `secure_connect`; `tcp://host:port` in the
//!   connect string stays plain), its certificate checked against that CA
//!   and the host dialled; `--zk-tls-cert-file`/`--zk-tls-key-file` add a
//!   client certificate for a ZooKeeper that asks for one
//!   (`ssl.clientAuth=need`).
//!
//! The session keeper probes servers with `srvr` while disconnected: over
//! TLS when TLS is on ([`four_letter_tls`]); a server that cannot be probed
//! that way (4lw not answered over TLS) still counts as a candidate, and
//! the connect finds out.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use zookeeper_client as zk;

/// The SASL user every node authenticates as; its znodes carry
/// `sasl:walship:cdrwa`.
pub const ZK_SASL_USER: &str = "walship";

/// The ACL of a cluster's znodes in SASL mode.
pub static SASL_ACL: [zk::Acl; 1] = [zk::Acl::new_const(zk::Permission::ALL, "sasl", ZK_SASL_USER)];

/// The files of TLS to ZooKeeper (`--zk-tls-ca-file`, optionally
/// `--zk-tls-cert-file` and `--zk-tls-key-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkTlsFiles {
    /// PEM: the CA(s) ZooKeeper's server certificate must chain to.
    pub ca: PathBuf,
    /// PEM certificate and key this node presents to ZooKeeper, if any.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// What a session authenticates with.
#[derive(Clone, Default)]
pub enum ZkCredentials {
    /// No secret: no authentication, open ACLs.
    #[default]
    Open,
    /// `walship:<secret>` for the digest scheme.
    Digest(Vec<u8>),
    /// SASL DIGEST-MD5 as `user`.
    Sasl { user: String, password: String },
}

impl std::fmt::Debug for ZkCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            ZkCredentials::Open => f.write_str("Open"),
            ZkCredentials::Digest(_) => f.write_str("Digest"),
            ZkCredentials::Sasl { user, .. } => write!(f, "Sasl({user})"),
        }
    }
}

impl ZkCredentials {
    /// From the cluster's secret: digest, or SASL with `sasl`.
    pub fn from_auth(auth: &crate::auth::Auth, sasl: bool) -> ZkCredentials {
        match (auth.zk_digest(), auth.zk_sasl_password(), sasl) {
            (_, Some(password), true) => ZkCredentials::Sasl {
                user: ZK_SASL_USER.to_string(),
                password: password.to_string(),
            },
            (Some(d), _, _) => ZkCredentials::Digest(d.to_vec()),
            _ => ZkCredentials::Open,
        }
    }

    /// The ACL scheme (and id, where it is fixed) every znode of the
    /// cluster must carry, for the start-up checks; `None` without a secret.
    pub fn expected_acl(&self) -> Option<(&'static str, Option<&str>)> {
        match self {
            ZkCredentials::Open => None,
            ZkCredentials::Digest(_) => Some(("digest", None)),
            ZkCredentials::Sasl { user, .. } => Some(("sasl", Some(user.as_str()))),
        }
    }
}

/// TLS to ZooKeeper, loaded and checked.
#[derive(Clone)]
pub struct ZkTls {
    pub files: ZkTlsFiles,
    /// For zookeeper-client's connections.
    options: zk::TlsOptions,
    /// The same CA and identity, for the keeper's probes and diagnostics.
    probe: Arc<ClientConfig>,
}

impl std::fmt::Debug for ZkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkTls").field("files", &self.files).finish()
    }
}

fn read_pem(path: &Path, setting: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("invalid setting {setting} = {}: cannot read it: {e}", path.display()))
}

impl ZkTls {
    /// Reads and checks the files; errors name the setting and the file.
    pub fn load(files: &ZkTlsFiles) -> Result<ZkTls, String> {
        // rustls' process default: zookeeper-client builds its configuration
        // with it, and with both ring and aws-lc-rs in the tree there is none.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_pem = read_pem(&files.ca, "zk_tls_ca_file")?;
        let roots = crate::tls::load_roots(&files.ca, "zk_tls_ca_file")?;
        let mut options = zk::TlsOptions::new()
            .with_pem_ca(&ca_pem)
            .map_err(|e| format!("invalid setting zk_tls_ca_file = {}: {e}", files.ca.display()))?;
        let builder = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let probe = match &files.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = crate::tls::load_certs(cert, "zk_tls_cert_file")?;
                let key_der = crate::tls::load_key(key, "zk_tls_key_file")?;
                let config = builder
                    .with_client_auth_cert(certs, key_der)
                    .map_err(|e| format!("invalid setting zk_tls_key_file = {}: {e}", key.display()))?;
                options = options
                    .with_pem_identity(&read_pem(cert, "zk_tls_cert_file")?, &read_pem(key, "zk_tls_key_file")?)
                    .map_err(|e| format!("invalid setting zk_tls_key_file = {}: {e}", key.display()))?;
                config
            }
        };
        Ok(ZkTls {
            files: files.clone(),
            options,
            probe: Arc::new(probe),
        })
    }

    pub fn options(&self) -> zk::TlsOptions {
        self.options.clone()
    }

    /// Why a TLS handshake with `addr` (`host:port`) fails, when it fails for
    /// a reason configuration must fix (ZooKeeper's certificate not from
    /// `zk_tls_ca_file`, or this node's certificate refused), naming the
    /// setting; `None` when it succeeds or fails otherwise (refused, no
    /// answer: the server may just be down).
    pub async fn diagnose(&self, addr: &str, limit: Duration) -> Option<String> {
        // A whole exchange, not just the handshake: with TLS 1.3 a server
        // that refuses the client's certificate says so after the client
        // has finished its handshake, on the first read.
        let err = match four_letter_tls(addr, "srvr", limit, self).await {
            Ok(_) => return None,
            Err(e) => e,
        };
        let rustls_err = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())?;
        let ca = self.files.ca.display();
        match rustls_err {
            rustls::Error::InvalidCertificate(why) => Some(format!(
                "ZooKeeper at {addr} presented a TLS certificate that zk_tls_ca_file ({ca}) does not accept for {}: {why:?}; is zk_tls_ca_file the CA that signed ZooKeeper's certificate (its ssl.keyStore), and does that certificate name the host in --zk?",
                host_of(addr)
            )),
            rustls::Error::AlertReceived(alert) => Some(match &self.files.identity {
                None => format!(
                    "ZooKeeper at {addr} refused the TLS handshake ({alert:?}): it asks for a client certificate (ssl.clientAuth=need) and none is set; give zk_tls_cert_file and zk_tls_key_file"
                ),
                Some((cert, _)) => format!(
                    "ZooKeeper at {addr} refused the TLS handshake ({alert:?}): does its ssl.trustStore hold the CA of zk_tls_cert_file ({})?",
                    cert.display()
                ),
            }),
            other => Some(format!("TLS to ZooKeeper at {addr} failed: {other}")),
        }
    }

    async fn handshake(&self, addr: &str) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = ServerName::try_from(host_of(addr).to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(Arc::clone(&self.probe))
            .connect(name, tcp)
            .await
    }
}

/// The host of `host:port` (`[v6]:port` too), brackets dropped.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Everything a ZooKeeper session needs besides the connect string.
#[derive(Clone, Debug, Default)]
pub struct ZkSecurity {
    pub credentials: ZkCredentials,
    pub tls: Option<ZkTls>,
}

impl ZkSecurity {
    /// The digest scheme with `digest`, or no authentication; no TLS.
    pub fn digest(digest: Option<Vec<u8>>) -> ZkSecurity {
        ZkSecurity {
            credentials: digest.map_or(ZkCredentials::Open, ZkCredentials::Digest),
            tls: None,
        }
    }

    /// From a node's or a tool's settings.
    pub fn load(auth: &crate::auth::Auth, sasl: bool, tls: Option<&ZkTlsFiles>) -> Result<ZkSecurity, String> {
        if sasl && auth.zk_sasl_password().is_none() {
            return Err("invalid setting zk_sasl = true: needs secret_file (the SASL password is derived from the cluster's secret)".into());
        }
        Ok(ZkSecurity {
            credentials: ZkCredentials::from_auth(auth, sasl),
            tls: tls.map(ZkTls::load).transpose()?,
        })
    }
}

/// `walship zk-jaas`.
#[derive(clap::Args, Debug, Clone)]
pub struct ZkJaasArgs {
    /// The cluster's secret file (as given to `walship node --secret-file`).
    #[arg(long, env = "WALSHIP_SECRET_FILE")]
    pub secret_file: PathBuf,
    /// Write the JAAS file here (mode 0600) instead of printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// ZooKeeper's JAAS file: the `Server` section DigestLoginModule reads,
/// with user `walship` and the password derived from `secret`.
pub fn jaas_file(secret: &str) -> String {
    let password = crate::auth::zk_sasl_password(secret);
    format!(
        "// ZooKeeper's side of `walship node --zk-sasl` (written by `walship zk-jaas`).\n\
         // Start ZooKeeper with -Djava.security.auth.login.config=<this file>, and in zoo.cfg:\n\
         //   authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n\
         // The password is derived from the cluster's secret: keep this file as private as the secret.\n\
         Server {{\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n    user_{ZK_SASL_USER}=\"{password}\";\n}};\n"
    )
}

/// `walship zk-jaas`: exit 0 with the JAAS file printed or written, 2 on error.
pub fn run_jaas(args: ZkJaasArgs) -> std::process::ExitCode {
    let result = (|| {
        let secret = crate::auth::read_secret(&args.secret_file, "secret_file")?;
        let text = jaas_file(&secret);
        match &args.out {
            None => {
                print!("{text}");
                Ok(())
            }
            Some(out) => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let _ = std::fs::remove_file(out);
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(out)
                    .and_then(|mut f| f.write_all(text.as_bytes()))
                    .map_err(|e| format!("cannot write {}: {e}", out.display()))
            }
        }
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walship zk-jaas: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `srvr` and the like over TLS: the whole reply, or an error when it does
/// not come within `limit`. ZooKeeper closes the connection after the reply,
/// without a TLS close_notify: an end of stream after some reply is its end.
pub async fn four_letter_tls(addr: &str, word: &str, limit: Duration, tls: &ZkTls) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    let exchange = async {
        let mut stream = tls.handshake(addr).await?;
        stream.write_all(word.as_bytes()).await?;
        stream.flush().await?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&reply).into_owned())
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{word} over TLS to {addr}: no reply within {} ms", limit.as_millis()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:2281"), "127.0.0.1");
        assert_eq!(host_of("zk.example:2281"), "zk.example");
        assert_eq!(host_of("[::1]:2281"), "::1");
    }

    #[test]
    fn credentials_from_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "abc\n").unwrap();
        let auth = crate::auth::Auth::load(Some(&secret), None).unwrap();
        let digest = ZkCredentials::from_auth(&auth, false);
        assert!(matches!(&digest, ZkCredentials::Digest(d) if d == b"walship:abc"));
        assert_eq!(digest.expected_acl(), Some(("digest", None)));
        let sasl = ZkCredentials::from_auth(&auth, true);
        let ZkCredentials::Sasl { user, password } = &sasl else {
            panic!("sasl")
        };
        assert_eq!(user, "walship");
        assert_ne!(password, "abc", "the secret itself is not the password");
        assert!(!password.contains("abc"));
        assert_eq!(sasl.expected_acl(), Some(("sasl", Some("walship"))));
        assert!(!format!("{sasl:?}").contains(password.as_str()), "never printed");
        let open = crate::auth::Auth::default();
        assert!(ZkSecurity::load(&open, true, None).unwrap_err().contains("zk_sasl"));
        assert!(matches!(ZkCredentials::from_auth(&open, false), ZkCredentials::Open));
    }
}
