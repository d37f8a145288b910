//! How a session proves itself to ZooKeeper and protects the connection,
//! with material already loaded (reading it from a node's secret and PEM
//! files is the embedder's part):
//!
//! - Credentials ([`ZkCredentials`]): ZooKeeper's digest scheme
//!   (`walship:<secret>`, sent in clear text on every connection), or SASL
//!   DIGEST-MD5 as user `walship` (a challenge and response: the password
//!   does not cross the wire). The cluster's znodes then carry
//!   `digest:walship:<hash>` or `sasl:walship` ACLs, all rights to that
//!   identity only.
//! - Transport ([`ZkTls`]): every server is dialled over TLS
//!   (zookeeper-client's `secure_connect`; `tcp://host:port` in the connect
//!   string stays plain), its certificate checked against a CA and the host
//!   dialled, optionally with a client certificate for a ZooKeeper that asks
//!   for one (`ssl.clientAuth=need`).
//!
//! The session keeper probes servers with `srvr` while disconnected: over
//! TLS when TLS is on ([`four_letter_tls`]); a server that cannot be probed
//! that way (4lw not answered over TLS) still counts as a candidate, and
//! the connect finds out.

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
/// `--zk-tls-cert-file` and `--zk-tls-key-file`), which messages name.
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

impl ZkTls {
    /// From `files`' material: `options` for zookeeper-client's
    /// connections, `probe` (the same CA and identity) for the keeper's
    /// probes and diagnostics.
    pub fn new(files: ZkTlsFiles, options: zk::TlsOptions, probe: ClientConfig) -> ZkTls {
        // rustls' process default: zookeeper-client builds its configuration
        // with it, and with both ring and aws-lc-rs in the tree there is none.
        let _ = rustls::crypto::ring::default_provider().install_default();
        ZkTls {
            files,
            options,
            probe: Arc::new(probe),
        }
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
    fn credentials_are_never_printed() {
        let sasl = ZkCredentials::Sasl {
            user: ZK_SASL_USER.into(),
            password: "pw-from-the-secret".into(),
        };
        assert_eq!(format!("{sasl:?}"), "Sasl(walship)");
        assert_eq!(
            format!("{:?}", ZkCredentials::Digest(b"walship:abc".to_vec())),
            "Digest"
        );
        assert_eq!(sasl.expected_acl(), Some(("sasl", Some("walship"))));
        assert_eq!(ZkCredentials::Open.expected_acl(), None);
    }
}
