//! TLS (rustls with the ring provider) for the node's listener, for every
//! request a node sends the other node, and for the CLI and tools.
//!
//! Identity is in the certificate, checked against the cluster's CA
//! (`--tls-ca-file`), by DNS name (subject alternative name):
//! - `node<id>.<cluster>.walship`: node `id` of `cluster`. A node presents
//!   it as a server and as a client, so its certificate carries both
//!   extended key usages.
//! - `client.<cluster>.walship`: a client of `cluster` (`walship dev-ca`
//!   writes one); it opens nothing a client without a certificate could not,
//!   unless the API asks for it (see `api::require_client_token`).
//!
//! A node connects to the address `members/<id>` gives in ZooKeeper, but
//! checks the certificate it finds there against `node<id>.<cluster>.walship`,
//! not against that address: ZooKeeper says where a node is, only its
//! certificate says who it is. The listener asks every client for a
//! certificate, accepts connections without one (probes, token clients),
//! and tags each connection with what its certificate proved ([`Identity`]);
//! peer routes accept only the other node's.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::danger::ServerCertVerified;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::ClientConfig;
use rustls::DigitallySignedStruct;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::ServerName;
use rustls_pki_types::UnixTime;

use crate::types::NodeId;
use crate::types::NODE_IDS;

/// The DNS name in node `id`'s certificate.
pub fn node_name(cluster: &str, id: NodeId) -> String {
    format!("node{id}.{cluster}.walship")
}

/// The DNS name in a client certificate of `cluster`.
pub fn client_name(cluster: &str) -> String {
    format!("client.{cluster}.walship")
}

/// The three files of TLS mode (`--tls-cert-file`, `--tls-key-file`,
/// `--tls-ca-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: this node's certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CA certificate(s) every peer and client certificate must chain to.
    pub ca: PathBuf,
}

/// What a connection's client certificate proved (already verified against
/// the CA by the handshake).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Identity {
    /// No client certificate, or a connection without TLS.
    #[default]
    Anonymous,
    /// Node `id` of this cluster.
    Node(NodeId),
    /// A client certificate of this cluster.
    Client,
    /// Signed by the CA, but for no node or client of this cluster (another
    /// cluster's, say).
    Stranger,
}

impl Identity {
    /// What `cert` (verified against the CA) names in `cluster`.
    pub fn of(cluster: &str, cert: &CertificateDer<'_>) -> Identity {
        let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
            return Identity::Stranger;
        };
        let names = |name: String| {
            ServerName::try_from(name)
                .ok()
                .is_some_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
        };
        if let Some(id) = NODE_IDS.iter().copied().find(|id| names(node_name(cluster, *id))) {
            return Identity::Node(id);
        }
        if names(client_name(cluster)) {
            Identity::Client
        } else {
            Identity::Stranger
        }
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; errors name the setting and the file.
pub fn load_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |why: String| format!("invalid setting {setting} = {}: {why}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read it: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(certs)
}

pub(crate) fn load_key(path: &Path, setting: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "invalid setting {setting} = {}: no private key read: {e}",
            path.display()
        )
    })
}

pub(crate) fn load_roots(path: &Path, setting: &str) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, setting)? {
        roots
            .add(cert)
            .map_err(|e| format!("invalid setting {setting} = {}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// A node's TLS: its listener's configuration and the one for requests to
/// the other node.
pub struct NodeTls {
    /// The listener's: this node's certificate, clients' checked if presented.
    pub server: Arc<ServerConfig>,
    /// For requests to the other node: its certificate checked against the CA.
    pub peer_client: ClientConfig,
}

impl NodeTls {
    /// Loads the files and checks that the certificate is node `id` of
    /// `cluster`'s, signed by the CA, before anything starts (a mix-up of
    /// files shows here, not as refused connections later).
    pub fn load(files: &TlsFiles, cluster: &str, id: NodeId) -> Result<NodeTls, String> {
        let certs = load_certs(&files.cert, "tls_cert_file")?;
        let key = load_key(&files.key, "tls_key_file")?;
        let roots = load_roots(&files.ca, "tls_ca_file")?;
        let own_name = server_name(node_name(cluster, id))?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider())
            .build()
            .map_err(|e| format!("invalid setting tls_ca_file = {}: {e}", files.ca.display()))?;
        server_verifier
            .verify_server_cert(&certs[0], &certs[1..], &own_name, &[], UnixTime::now())
            .map_err(|e| {
                format!(
                    "invalid setting tls_cert_file = {}: not a certificate of node {id} of cluster {cluster} \
                     ({own_name:?} as a DNS name) signed by tls_ca_file {}: {e}",
                    files.cert.display(),
                    files.ca.display()
                )
            })?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("invalid setting tls_ca_file = {}: {e}", files.ca.display()))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("invalid setting tls_key_file = {}: {e}", files.key.display()))?;
        let other = NODE_IDS.iter().copied().find(|o| *o != id).expect("two nodes");
        let peer_verifier = PeerVerifier {
            inner: server_verifier,
            expected: server_name(node_name(cluster, other))?,
        };
        let peer_client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(peer_verifier))
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("invalid setting tls_key_file = {}: {e}", files.key.display()))?;
        Ok(NodeTls {
            server: Arc::new(server),
            peer_client,
        })
    }
}

fn server_name(name: String) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.clone())
        .map_err(|_| format!("{name:?} is not a valid DNS name: TLS mode needs a cluster name that can be a DNS label"))
}

/// Checks the other node's certificate against its name in this cluster,
/// whatever address the connection went to (the one ZooKeeper gave): the
/// chain, validity and key usage as any server certificate, by the same
/// webpki verifier.
#[derive(Debug)]
struct PeerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: ServerName<'static>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.expected, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TLS for the CLI and tools: the server is checked against `ca` and the
/// URL's host (a node's certificate names the hosts it is reached by as
/// well as `node<id>.<cluster>.walship`); `identity` (certificate, key) is
/// presented when the node asks for one.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientConfig, String> {
    let roots = load_roots(ca, "tls_ca_file")?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs = load_certs(cert, "tls_cert_file")?;
            let key_der = load_key(key, "tls_key_file")?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| format!("invalid setting tls_key_file = {}: {e}", key.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_cluster_and_id() {
        assert_eq!(node_name("prod", 2), "node2.prod.walship");
        assert_eq!(client_name("prod"), "client.prod.walship");
    }
}
