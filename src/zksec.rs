//! A node's ZooKeeper security from its settings: the credentials from
//! `--secret-file` (and `--zk-sasl`), the TLS material from
//! `--zk-tls-ca-file`/`--zk-tls-cert-file`/`--zk-tls-key-file`; and ZooKeeper's
//! side of SASL (`walship zk-jaas`). The types, and what a session does with
//! them, are walship-zk's (`walship_zk::ZkSecurity`); this half stays here
//! because it reads the node's secret ([`crate::auth`]) and PEM files with
//! the node's own TLS loaders ([`crate::tls`]).

use std::path::Path;
use std::path::PathBuf;

use rustls::ClientConfig;
use walship_zk::ZkCredentials;
use walship_zk::ZkSecurity;
use walship_zk::ZkTls;
use walship_zk::ZkTlsFiles;
use walship_zk::ZK_SASL_USER;
use zookeeper_client as zk;

/// From the cluster's secret: digest, or SASL with `sasl`.
pub fn credentials(auth: &crate::auth::Auth, sasl: bool) -> ZkCredentials {
    match (auth.zk_digest(), auth.zk_sasl_password(), sasl) {
        (_, Some(password), true) => ZkCredentials::Sasl {
            user: ZK_SASL_USER.to_string(),
            password: password.to_string(),
        },
        (Some(d), _, _) => ZkCredentials::Digest(d.to_vec()),
        _ => ZkCredentials::Open,
    }
}

fn read_pem(path: &Path, setting: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("invalid setting {setting} = {}: cannot read it: {e}", path.display()))
}

/// Reads and checks TLS to ZooKeeper's files; errors name the setting and
/// the file.
pub fn load_tls(files: &ZkTlsFiles) -> Result<ZkTls, String> {
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
    Ok(ZkTls::new(files.clone(), options, probe))
}

/// From a node's or a tool's settings.
pub fn load_security(auth: &crate::auth::Auth, sasl: bool, tls: Option<&ZkTlsFiles>) -> Result<ZkSecurity, String> {
    if sasl && auth.zk_sasl_password().is_none() {
        return Err("invalid setting zk_sasl = true: needs secret_file (the SASL password is derived from the cluster's secret)".into());
    }
    Ok(ZkSecurity {
        credentials: credentials(auth, sasl),
        tls: tls.map(load_tls).transpose()?,
    })
}

/// `walship zk-jaas`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ZkJaasArgs {
    /// The cluster's secret file (as given to `walship node --secret-file`).
    #[cfg_attr(feature = "cli", arg(long, env = "WALSHIP_SECRET_FILE"))]
    pub secret_file: PathBuf,
    /// Write the JAAS file here (mode 0600) instead of printing it.
    #[cfg_attr(feature = "cli", arg(long))]
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
#[cfg(feature = "cli")]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "abc\n").unwrap();
        let auth = crate::auth::Auth::load(Some(&secret), None).unwrap();
        let digest = credentials(&auth, false);
        assert!(matches!(&digest, ZkCredentials::Digest(d) if d == b"walship:abc"));
        assert_eq!(digest.expected_acl(), Some(("digest", None)));
        let sasl = credentials(&auth, true);
        let ZkCredentials::Sasl { user, password } = &sasl else {
            panic!("sasl")
        };
        assert_eq!(user, "walship");
        assert_ne!(password, "abc", "the secret itself is not the password");
        assert!(!password.contains("abc"));
        assert_eq!(sasl.expected_acl(), Some(("sasl", Some("walship"))));
        assert!(!format!("{sasl:?}").contains(password.as_str()), "never printed");
        let open = crate::auth::Auth::default();
        assert!(load_security(&open, true, None).unwrap_err().contains("zk_sasl"));
        assert!(matches!(credentials(&open, false), ZkCredentials::Open));
    }
}
