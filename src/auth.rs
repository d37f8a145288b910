//! Access control from one shared secret (`--secret-file`):
//! - ZooKeeper: each node's session authenticates with the digest scheme
//!   (`walship:<secret>`), and the cluster's znodes are created with the
//!   `auth` ACL (all rights to sessions with the same digest identity), so a
//!   client without the secret can read and write nothing there. With
//!   `--zk-sasl`, SASL DIGEST-MD5 instead, as user `walship` with a password
//!   derived from the secret, and `sasl:walship` ACLs (see `crate::zksec`).
//! - Node-to-node RPC carries a token derived from the secret
//!   (`x-walship-token`); a request without it is refused (401), with a wrong
//!   one too (403), before anything is decoded.
//! - The client API requires `Authorization: Bearer <token>` when
//!   `--api-token-file` is set; a follower forwards the client's header and
//!   the leader checks it again. The peer token is never a client credential.
//!
//! Tokens are compared in constant time.

use std::path::Path;

use sha2::Digest;
use sha2::Sha256;

/// The header peer RPC carries the cluster's node-to-node token in.
pub const PEER_TOKEN_HEADER: &str = "x-walship-token";
/// The digest user every node authenticates as.
const ZK_DIGEST_USER: &str = "walship";

/// A node's credentials, loaded once from `secret_file` and
/// `api_token_file`: ZooKeeper's, the node-to-node token and the client API
/// token (each `None` when its file is not configured).
#[derive(Clone, Default)]
pub struct Auth {
    /// `walship:<secret>` for ZooKeeper's digest scheme.
    zk_digest: Option<Vec<u8>>,
    /// The SASL DIGEST-MD5 password of user `walship` (`--zk-sasl`),
    /// derived from the secret.
    zk_sasl_password: Option<String>,
    peer_token: Option<String>,
    api_token: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Auth")
            .field("zookeeper_acl", &self.zk_digest.is_some())
            .field("zookeeper_sasl", &self.zk_sasl_password.is_some())
            .field("peer_token", &self.peer_token.is_some())
            .field("api_token", &self.api_token.is_some())
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials: 401.
    Missing,
    /// Wrong credentials: 403.
    Wrong,
}

impl Auth {
    /// Reads the secret and API token files (trailing newline ignored);
    /// errors name the file.
    pub fn load(secret_file: Option<&Path>, api_token_file: Option<&Path>) -> Result<Auth, String> {
        let secret = secret_file.map(|p| read_secret(p, "secret_file")).transpose()?;
        let api_token = api_token_file.map(|p| read_secret(p, "api_token_file")).transpose()?;
        Ok(Auth {
            zk_digest: secret.as_ref().map(|s| format!("{ZK_DIGEST_USER}:{s}").into_bytes()),
            zk_sasl_password: secret.as_ref().map(|s| zk_sasl_password(s)),
            peer_token: secret.as_ref().map(|s| derive("walship peer rpc", s)),
            api_token,
        })
    }

    /// The digest credentials for ZooKeeper, if a secret is set.
    pub fn zk_digest(&self) -> Option<&[u8]> {
        self.zk_digest.as_deref()
    }

    /// The SASL DIGEST-MD5 password for ZooKeeper, if a secret is set: what
    /// ZooKeeper's JAAS file must give user `walship` (`walship zk-jaas`).
    pub fn zk_sasl_password(&self) -> Option<&str> {
        self.zk_sasl_password.as_deref()
    }

    /// The token clients send as `Authorization: Bearer <token>`, if set.
    pub fn api_token(&self) -> Option<&str> {
        self.api_token.as_deref()
    }

    /// The token peer RPC sends and expects (derived from the secret).
    pub fn peer_token(&self) -> Option<&str> {
        self.peer_token.as_deref()
    }

    /// Checks a peer RPC's token.
    pub fn check_peer(&self, presented: Option<&str>) -> Result<(), Refusal> {
        check(self.peer_token.as_deref(), presented)
    }

    /// Checks a client request: the API token as a bearer token (the
    /// scheme case-insensitive, RFC 7235). A follower forwards the client's
    /// own header, so the leader checks the client, never the follower: the
    /// peer token is not a client credential (a captured one would otherwise
    /// open the client API too), and a bare token without the scheme is
    /// not a bearer credential.
    pub fn check_client(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        if self.api_token.is_none() {
            return Ok(());
        }
        let bearer = authorization.and_then(|a| {
            let (scheme, token) = a.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
        });
        check(self.api_token.as_deref(), bearer)
    }
}

fn check(expected: Option<&str>, presented: Option<&str>) -> Result<(), Refusal> {
    let Some(expected) = expected else { return Ok(()) };
    let Some(presented) = presented else {
        return Err(Refusal::Missing);
    };
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    let diff = a.len() != b.len() || a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0;
    if diff {
        Err(Refusal::Wrong)
    } else {
        Ok(())
    }
}

/// The SASL password for a secret: derived, so the secret itself is not
/// what ZooKeeper's JAAS file holds.
pub fn zk_sasl_password(secret: &str) -> String {
    derive("walship zookeeper sasl", secret)
}

fn derive(purpose: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(purpose.as_bytes());
    h.update([0u8]);
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn read_secret(path: &Path, setting: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("invalid setting {setting} = {}: cannot read it: {e}", path.display()))?;
    let s = text.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(format!(
            "invalid setting {setting} = {}: the file is empty",
            path.display()
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secret: &str, api: Option<&str>) -> Auth {
        Auth {
            zk_digest: Some(format!("walship:{secret}").into_bytes()),
            zk_sasl_password: Some(zk_sasl_password(secret)),
            peer_token: Some(derive("walship peer rpc", secret)),
            api_token: api.map(str::to_string),
        }
    }

    #[test]
    fn peer_token_checks() {
        let a = auth("s3cret", None);
        let t = a.peer_token().unwrap().to_string();
        assert_eq!(a.check_peer(Some(&t)), Ok(()));
        assert_eq!(a.check_peer(None), Err(Refusal::Missing));
        assert_eq!(a.check_peer(Some("nope")), Err(Refusal::Wrong));
        assert_ne!(
            t,
            derive("walship peer rpc", "other"),
            "the token depends on the secret"
        );
        assert_eq!(Auth::default().check_peer(None), Ok(()), "no secret, no check");
    }

    #[test]
    fn client_token_only() {
        let a = auth("s", Some("tok"));
        assert_eq!(a.check_client(Some("Bearer tok")), Ok(()));
        assert_eq!(
            a.check_client(Some("bearer tok")),
            Ok(()),
            "the scheme is case-insensitive"
        );
        assert_eq!(a.check_client(Some("BEARER  tok ")), Ok(()));
        assert_eq!(a.check_client(None), Err(Refusal::Missing));
        assert_eq!(
            a.check_client(Some("tok")),
            Err(Refusal::Missing),
            "no scheme, no credential"
        );
        assert_eq!(a.check_client(Some("Basic tok")), Err(Refusal::Missing));
        assert_eq!(a.check_client(Some("Bearer bad")), Err(Refusal::Wrong));
        let peer = a.peer_token().unwrap().to_string();
        assert_eq!(
            a.check_client(Some(&format!("Bearer {peer}"))),
            Err(Refusal::Wrong),
            "the peer token is not a client credential"
        );
        assert_eq!(auth("s", None).check_client(None), Ok(()), "no API token, open API");
    }

    #[test]
    fn secret_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = Auth::load(Some(&empty), None).unwrap_err();
        assert!(e.contains("secret_file") && e.contains("empty"), "{e}");
        let e = Auth::load(Some(&dir.path().join("missing")), None).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "abc\n").unwrap();
        let a = Auth::load(Some(&ok), None).unwrap();
        assert_eq!(a.zk_digest(), Some(&b"walship:abc"[..]));
    }
}
