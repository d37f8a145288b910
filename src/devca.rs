//! `walship dev-ca`: a development CA and the certificates TLS mode needs
//! (see `crate::tls`), written as PEM files into one directory:
//!
//! ```text
//! ca.pem       ca-key.pem        the CA (--tls-ca-file; keep its key to sign more)
//! node1.pem    node1-key.pem     node 1: node1.<cluster>.walship, server and client
//! node2.pem    node2-key.pem     node 2: node2.<cluster>.walship
//! client.pem   client-key.pem    a client: client.<cluster>.walship
//! zk.pem       zk-key.pem        a ZooKeeper server (its secure client port)
//! zk-keystore.pem                zk-key.pem and zk.pem in one file: ZooKeeper's
//!                                ssl.keyStore.location (ssl.keyStore.type=PEM)
//! ```
//!
//! Node certificates also name `localhost`, 127.0.0.1, ::1 and every
//! `--host`, so the CLI can check a node by the host it dialled; the
//! ZooKeeper certificate names `localhost`, 127.0.0.1, ::1 and every
//! `--zk-host` (a node checks it against the host in `--zk`). For
//! development and tests: the keys are written unencrypted (mode 0600), and
//! a production CA should be the operator's own.

use std::path::Path;
use std::path::PathBuf;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;

use crate::tls::client_name;
use crate::tls::node_name;
use crate::types::NODE_IDS;

/// What `walship dev-ca` writes: where, for which cluster, and the extra
/// names the certificates carry ([`write()`] takes it from code too).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct DevCaArgs {
    /// Directory to write the files into (created if missing).
    #[cfg_attr(feature = "cli", arg(long))]
    pub dir: PathBuf,
    /// The cluster the certificates are for (as given to `walship node --cluster`).
    #[cfg_attr(feature = "cli", arg(long, env = "WALSHIP_CLUSTER", value_parser = parse_cluster))]
    pub cluster: String,
    /// More names or IP addresses the nodes are reached by (repeatable, or
    /// comma-separated); localhost, 127.0.0.1 and ::1 are always in.
    #[cfg_attr(feature = "cli", arg(long = "host", value_delimiter = ','))]
    pub hosts: Vec<String>,
    /// More names or IP addresses ZooKeeper is reached by (repeatable, or
    /// comma-separated), for its certificate zk.pem; localhost, 127.0.0.1
    /// and ::1 are always in.
    #[cfg_attr(feature = "cli", arg(long = "zk-host", value_delimiter = ','))]
    pub zk_hosts: Vec<String>,
    /// Overwrite files that exist (else refuse, so a CA is not replaced by mistake).
    #[cfg_attr(feature = "cli", arg(long))]
    pub force: bool,
}

#[cfg(feature = "cli")]
fn parse_cluster(s: &str) -> Result<String, String> {
    crate::config::check_cluster_name(s)?;
    Ok(s.to_string())
}

/// Validity: from the start of last year to the start of the year after
/// next (rcgen's default runs to 4096).
fn validity(params: &mut CertificateParams) {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    // The mean Gregorian year; off by a day at most, which the margins cover.
    let year = 1970 + (days * 400 / 146_097) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
}

/// Writes the CA and the certificates; returns the files written.
pub fn write(args: &DevCaArgs) -> Result<Vec<PathBuf>, String> {
    let names: Vec<&str> = ["ca", "node1", "node2", "client", "zk"].to_vec();
    let mut files: Vec<PathBuf> = names
        .iter()
        .flat_map(|n| [format!("{n}.pem"), format!("{n}-key.pem")])
        .map(|f| args.dir.join(f))
        .collect();
    files.push(args.dir.join(ZK_KEYSTORE));
    if !args.force {
        if let Some(f) = files.iter().find(|f| f.exists()) {
            return Err(format!(
                "{} exists; give --force to overwrite (a new CA invalidates every certificate of the old one)",
                f.display()
            ));
        }
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let err = |e: rcgen::Error| format!("cannot make a certificate: {e}");

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("walship development CA for {}", args.cluster),
    );
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    save(&args.dir, "ca", &ca_cert.pem(), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let with_loopback = |more: &[String]| -> Vec<String> {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        hosts.extend(more.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()));
        hosts
    };
    let hosts = with_loopback(&args.hosts);
    for id in NODE_IDS {
        let name = node_name(&args.cluster, id);
        let mut sans = vec![name.clone()];
        sans.extend(hosts.iter().cloned());
        let eku = [ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        leaf(&args.dir, &format!("node{id}"), &name, sans, &eku, &issuer)?;
    }
    let name = client_name(&args.cluster);
    leaf(
        &args.dir,
        "client",
        &name,
        vec![name.clone()],
        &[ExtendedKeyUsagePurpose::ClientAuth],
        &issuer,
    )?;
    // ZooKeeper: a server certificate (client auth too, for an ensemble's
    // quorum TLS), and the key and certificate in one file for its PEM keyStore.
    leaf(
        &args.dir,
        "zk",
        "zookeeper",
        with_loopback(&args.zk_hosts),
        &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        &issuer,
    )?;
    let read = |f: &str| {
        let p = args.dir.join(f);
        std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let keystore = format!("{}{}", read("zk-key.pem")?, read("zk.pem")?);
    write_private(&args.dir.join(ZK_KEYSTORE), &keystore)?;
    Ok(files)
}

/// ZooKeeper's PEM keyStore: its key, then its certificate.
pub const ZK_KEYSTORE: &str = "zk-keystore.pem";

fn leaf(
    dir: &Path,
    file: &str,
    common_name: &str,
    sans: Vec<String>,
    eku: &[ExtendedKeyUsagePurpose],
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(), String> {
    let err = |e: rcgen::Error| format!("cannot make the certificate {file}: {e}");
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(sans).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = eku.to_vec();
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    let cert = params.signed_by(&key, issuer).map_err(err)?;
    save(dir, file, &cert.pem(), &key.serialize_pem())
}

fn save(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let cert = dir.join(format!("{name}.pem"));
    std::fs::write(&cert, cert_pem).map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    write_private(&dir.join(format!("{name}-key.pem")), key_pem)
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Removed first so an existing file's looser mode does not survive --force.
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `walship dev-ca`: exit 0 with the files and the flags to use them, 2 on error.
#[cfg(feature = "cli")]
pub fn run(args: DevCaArgs) -> std::process::ExitCode {
    match write(&args) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            let d = args.dir.display();
            println!(
                "node <id>: walship node --id <id> --cluster {} --tls-cert-file {d}/node<id>.pem --tls-key-file {d}/node<id>-key.pem --tls-ca-file {d}/ca.pem ...",
                args.cluster
            );
            println!(
                "client:    walship kv --tls-ca-file {d}/ca.pem --tls-cert-file {d}/client.pem --tls-key-file {d}/client-key.pem ..."
            );
            println!(
                "ZooKeeper: ZK_TLS_DIR={d} zk/zk.sh start <dir> <port>, or in zoo.cfg: serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory, secureClientPort=<port>, ssl.keyStore.location={d}/{ZK_KEYSTORE}, ssl.keyStore.type=PEM, ssl.trustStore.location={d}/ca.pem, ssl.trustStore.type=PEM"
            );
            println!("           nodes: --zk-tls-ca-file {d}/ca.pem [--zk-tls-cert-file {d}/node<id>.pem --zk-tls-key-file {d}/node<id>-key.pem]");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("walship dev-ca: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Identity;

    #[test]
    fn certificates_name_nodes_and_client_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let args = DevCaArgs {
            dir: dir.path().to_path_buf(),
            cluster: "c1".into(),
            hosts: vec!["db.example".into()],
            zk_hosts: vec!["zk.example".into()],
            force: false,
        };
        write(&args).unwrap();
        let e = write(&args).unwrap_err();
        assert!(e.contains("--force"), "{e}");
        let p = |f: &str| dir.path().join(f);
        let files = |id: u64| crate::tls::TlsFiles {
            cert: p(&format!("node{id}.pem")),
            key: p(&format!("node{id}-key.pem")),
            ca: p("ca.pem"),
        };
        crate::tls::NodeTls::load(&files(1), "c1", 1).unwrap();
        crate::tls::NodeTls::load(&files(2), "c1", 2).unwrap();
        let e = crate::tls::NodeTls::load(&files(1), "c1", 2).err().unwrap();
        assert!(e.contains("not a certificate of node 2 of cluster c1"), "{e}");
        let e = crate::tls::NodeTls::load(&files(1), "c2", 1).err().unwrap();
        assert!(e.contains("node1.c2.walship"), "{e}");
        let cert = |f: &str| crate::tls::load_certs(&p(f), "x").unwrap().remove(0);
        assert_eq!(Identity::of("c1", &cert("node2.pem")), Identity::Node(2));
        assert_eq!(Identity::of("c1", &cert("client.pem")), Identity::Client);
        assert_eq!(Identity::of("other", &cert("node2.pem")), Identity::Stranger);
        let mode = std::fs::metadata(p("node1-key.pem")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // ZooKeeper's certificate: from the CA, for its hosts, and its PEM keyStore.
        let zk = cert("zk.pem");
        let ee = webpki::EndEntityCert::try_from(&zk).unwrap();
        for host in ["zk.example", "localhost"] {
            let name = rustls_pki_types::ServerName::try_from(host).unwrap();
            assert!(ee.verify_is_valid_for_subject_name(&name).is_ok(), "{host}");
        }
        let keystore = std::fs::read_to_string(p(ZK_KEYSTORE)).unwrap();
        assert!(keystore.contains("PRIVATE KEY") && keystore.contains("CERTIFICATE"));
        let mode = std::fs::metadata(p(ZK_KEYSTORE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let files = walship_zk::ZkTlsFiles {
            ca: p("ca.pem"),
            identity: Some((p("node1.pem"), p("node1-key.pem"))),
        };
        crate::zksec::load_tls(&files).unwrap();
    }
}
