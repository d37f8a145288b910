//! One ZooKeeper session per node, kept alive for the life of the process.
//!
//! zookeeper-client's `Expired` is final, so this module owns the client and
//! replaces it when the session dies: it builds a new client, re-creates the
//! node's ephemeral znodes and bumps a generation counter that watch loops use
//! to re-arm their (one-shot) watches. Every call goes through [`ZkSession::run`],
//! which bounds it with a timeout: a ZooKeeper that does not answer is an error,
//! never a hang.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use zookeeper_client as zk;

use crate::metrics::CallTimer;
use crate::security::four_letter_tls;
use crate::security::SASL_ACL;
use crate::SessionMetrics;
use crate::ZkCredentials;
use crate::ZkError;
use crate::ZkSecurity;

/// How a registered ephemeral znode is (re)claimed when it already exists
/// under another session, e.g. one left behind by a kill -9.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The path is ours by name (`members/<id>`): replace whatever is there.
    Replace,
    /// `leader`: replace only a holder whose term (read from its payload
    /// by the session's `term_of`; walship's `node::LeaderInfo`) is lower
    /// than ours.
    ReplaceLowerTerm(u64),
}

#[derive(Clone, Debug)]
struct Ephemeral {
    data: Vec<u8>,
    claim: Claim,
}

/// How long the client waits on one server, connecting or connected,
/// before it gives up on it and tries the next: the session timeout over
/// the number of servers, as ZooKeeper's own Java client does
/// (`sessionTimeout / hostCount`), so a frozen server costs one slice of
/// the session, not the whole op timeout; never more than the op timeout
/// (one server: as before), never under 100 ms.
///
/// zookeeper-client uses the same figure as its read timeout on a live
/// connection (nothing received for that long: next server) and pings
/// after 3/8 of it idle, so a frozen ensemble leader is also left after
/// one slice. With 3 servers and the default 4 s session: 1333 ms instead
/// of 2 s, and a server frozen after a reconnection costs 1.3 s, not 2 s.
pub fn connection_timeout(hosts: &str, session_timeout_ms: u64, op_timeout_ms: u64) -> Duration {
    let servers = hosts.split(',').filter(|h| !h.trim().is_empty()).count().max(1) as u64;
    Duration::from_millis((session_timeout_ms / servers).min(op_timeout_ms).max(100))
}

/// How long a disconnected client may try to resume by itself before the
/// keeper also probes the servers (its first round has no back-off).
const RESUME_GRACE_MS: u64 = 150;
/// How often the keeper probes the servers while disconnected.
const PROBE_INTERVAL_MS: u64 = 100;
/// How long a server may take to answer `srvr` before it counts as not
/// serving (a frozen one never answers).
const PROBE_TIMEOUT_MS: u64 = 250;

/// What the keeper does about a disconnect.
enum Reconnect {
    Resumed,
    Replaced(zk::Client),
    Lost(zk::SessionState),
    Closed,
}

/// A server's state as its `srvr` reply tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMode {
    /// `Mode: leader | follower | standalone | observer`: takes sessions.
    Serving,
    /// Read-only, "not currently serving requests" (no quorum), or an
    /// empty reply (a server starting up accepts and closes).
    NotServing,
    /// Answered something else, e.g. `srvr` is not in the server's
    /// `4lw.commands.whitelist`.
    Unknown,
}

impl ServerMode {
    pub fn of_srvr(reply: &str) -> ServerMode {
        let mode = reply.lines().find_map(|l| l.strip_prefix("Mode:")).map(str::trim);
        match mode {
            Some("leader" | "follower" | "standalone" | "observer") => ServerMode::Serving,
            Some(_) => ServerMode::NotServing,
            None if reply.contains("not currently serving") => ServerMode::NotServing,
            // Accepted and closed without a word: starting up or shutting down.
            None if reply.trim().is_empty() => ServerMode::NotServing,
            None => ServerMode::Unknown,
        }
    }
}

/// Splits a connect string into its servers, each as written (its
/// `tcp://` or `tcp+tls://` prefix kept: a new connect string of some of
/// them keeps each one's protocol; `server_addr` gives its `host:port`),
/// and its chroot suffix (`""` or `/path`, which ZooKeeper's syntax puts
/// after the last server).
pub fn split_connect_string_as_written(hosts: &str) -> (Vec<String>, String) {
    // `scheme://` prefixes also hold slashes: a chroot is a slash that does
    // not follow a colon as the start of `//`.
    let mut from = 0;
    let mut chroot_at = None;
    while let Some(off) = hosts[from..].find('/') {
        let at = from + off;
        if hosts[at..].starts_with("//") && hosts[..at].ends_with(':') {
            from = at + 2;
            continue;
        }
        chroot_at = Some(at);
        break;
    }
    let (list, chroot) = match chroot_at {
        Some(i) => (&hosts[..i], hosts[i..].to_string()),
        None => (hosts, String::new()),
    };
    let servers = list
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    (servers, chroot)
}

/// `host:port` of a server as written in a connect string.
fn server_addr(server: &str) -> &str {
    server
        .strip_prefix("tcp+tls://")
        .or_else(|| server.strip_prefix("tcp://"))
        .unwrap_or(server)
}

/// True when a server as written is dialled over TLS: `tcp+tls://`, or no
/// prefix when TLS is on (`secure_connect`).
fn server_is_tls(server: &str, tls_on: bool) -> bool {
    server.starts_with("tcp+tls://") || (tls_on && !server.starts_with("tcp://"))
}

/// Waits for the next reason to look at a znode again: its one-shot
/// `watcher` fired, the session was replaced (`generation` moved: watches
/// of the old session are gone and must be re-armed), or `refresh` passed
/// (a fallback for a watch that never fires). Without a watcher (the look
/// failed) only the last two count.
pub async fn next_look(watcher: Option<zk::OneshotWatcher>, generation: &mut watch::Receiver<u64>, refresh: Duration) {
    let refresh = tokio::time::sleep(refresh);
    match watcher {
        Some(w) => tokio::select! {
            _ = w.changed() => {}
            _ = generation.changed() => {}
            _ = refresh => {}
        },
        None => tokio::select! {
            _ = generation.changed() => {}
            _ = refresh => {}
        },
    }
}

/// Sends a four-letter word to a ZooKeeper server; its whole reply, or an
/// error when it does not come within `limit`.
pub async fn four_letter(addr: &str, word: &str, limit: Duration) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(word.as_bytes()).await?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{word} to {addr}: no reply within {} ms", limit.as_millis()),
        )),
    }
}

pub struct ZkSession {
    /// Credentials (digest or SASL, when access control is on) and TLS.
    security: ZkSecurity,
    hosts: String,
    session_timeout_ms: u64,
    op_timeout_ms: u64,
    client: Mutex<Option<zk::Client>>,
    /// Bumped every time a new session is established or an old one resumes
    /// after a disconnect; watch loops re-arm on every change.
    generation: watch::Sender<u64>,
    /// Bumped when the keeper installs a client of a new session: calls
    /// still waiting on the old one (queued while it was disconnected) fail
    /// at once instead of waiting out their timeout, so callers retry on
    /// the new session.
    client_epoch: watch::Sender<u64>,
    ephemerals: Mutex<BTreeMap<String, Ephemeral>>,
    /// Lets `claim_ephemeral` read the term of a `leader` payload without
    /// this module knowing its format.
    term_of: fn(&[u8]) -> Option<u64>,
    /// Told of every call's latency and failure and of sessions replaced.
    metrics: Arc<dyn SessionMetrics>,
}

impl ZkSession {
    /// Connects (retrying until `connect_deadline_ms`) and starts the keeper
    /// task that replaces the client whenever its session expires. No
    /// authentication, no TLS, no metrics.
    pub async fn connect(
        hosts: &str,
        session_timeout_ms: u64,
        op_timeout_ms: u64,
        connect_deadline_ms: u64,
        term_of: fn(&[u8]) -> Option<u64>,
    ) -> Result<Arc<ZkSession>, ZkError> {
        Self::connect_with_auth(
            hosts,
            session_timeout_ms,
            op_timeout_ms,
            connect_deadline_ms,
            term_of,
            None,
        )
        .await
    }

    /// `connect`, authenticating every session (this one and any that
    /// replaces it) with ZooKeeper's digest scheme; znodes it creates then
    /// carry the `auth` ACL ([`ZkSession::acls`]).
    pub async fn connect_with_auth(
        hosts: &str,
        session_timeout_ms: u64,
        op_timeout_ms: u64,
        connect_deadline_ms: u64,
        term_of: fn(&[u8]) -> Option<u64>,
        digest: Option<Vec<u8>>,
    ) -> Result<Arc<ZkSession>, ZkError> {
        Self::connect_secured(
            hosts,
            session_timeout_ms,
            op_timeout_ms,
            connect_deadline_ms,
            term_of,
            ZkSecurity::digest(digest),
            Arc::new(()),
        )
        .await
    }

    /// `connect`, every session (this one and any that replaces it)
    /// authenticated with `security`'s credentials (digest or SASL) and,
    /// with its TLS, over TLS. A refusal that retrying cannot mend (SASL
    /// credentials refused, ZooKeeper's certificate not from the CA, this
    /// node's certificate refused) fails at once, naming the setting.
    /// Calls and session replacements are reported to `metrics`.
    pub async fn connect_secured(
        hosts: &str,
        session_timeout_ms: u64,
        op_timeout_ms: u64,
        connect_deadline_ms: u64,
        term_of: fn(&[u8]) -> Option<u64>,
        security: ZkSecurity,
        metrics: Arc<dyn SessionMetrics>,
    ) -> Result<Arc<ZkSession>, ZkError> {
        let (generation, _) = watch::channel(0);
        let (client_epoch, _) = watch::channel(0);
        let session = Arc::new(ZkSession {
            security,
            hosts: hosts.to_string(),
            session_timeout_ms,
            op_timeout_ms,
            client: Mutex::new(None),
            generation,
            client_epoch,
            ephemerals: Mutex::new(BTreeMap::new()),
            term_of,
            metrics,
        });
        let deadline = tokio::time::Instant::now() + Duration::from_millis(connect_deadline_ms);
        let client = loop {
            match session.new_client().await {
                Ok(c) => break c,
                Err(e @ ZkError::Refused(_)) => return Err(e),
                Err(e) => {
                    if let Some(why) = session.tls_diagnosis().await {
                        return Err(ZkError::Refused(why));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, hosts, "cannot reach ZooKeeper yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let states = client.state_watcher();
        *session.client.lock().expect("zk client lock") = Some(client);
        tokio::spawn(Arc::clone(&session).keep(states));
        Ok(session)
    }

    async fn new_client(&self) -> Result<zk::Client, ZkError> {
        self.new_client_on(&self.hosts, false).await
    }

    /// A client of a new session on `hosts`. `one_pass`: try each server
    /// once and fail (no back-off rounds): the keeper's probes retry.
    /// The connection timeout is always the one of the whole server list,
    /// so a client built on a subset is no more impatient than the others.
    async fn new_client_on(&self, hosts: &str, one_pass: bool) -> Result<zk::Client, ZkError> {
        let mut connector = zk::Client::connector()
            .with_session_timeout(Duration::from_millis(self.session_timeout_ms))
            .with_connection_timeout(connection_timeout(
                &self.hosts,
                self.session_timeout_ms,
                self.op_timeout_ms,
            ));
        if one_pass {
            connector = connector.with_fail_eagerly();
        }
        match &self.security.credentials {
            ZkCredentials::Open => {}
            ZkCredentials::Digest(d) => connector = connector.with_auth("digest", d),
            ZkCredentials::Sasl { user, password } => {
                connector = connector.with_sasl(zk::SaslOptions::digest_md5(user.clone(), password.clone()));
            }
        }
        let connect = async {
            match &self.security.tls {
                Some(tls) => connector.with_tls(tls.options()).secure_connect(hosts).await,
                None => connector.connect(hosts).await,
            }
        };
        match tokio::time::timeout(Duration::from_millis(self.op_timeout_ms * 2), connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(zk::Error::AuthFailed)) => Err(ZkError::Refused(match &self.security.credentials {
                ZkCredentials::Sasl { user, .. } => format!(
                    "ZooKeeper at {hosts} refused this node's SASL DIGEST-MD5 credentials (user {user}, password derived from secret_file, zk_sasl = true): is secret_file the cluster's secret, and does ZooKeeper's JAAS file give user_{user} the password `walship zk-jaas` prints for it?"
                ),
                _ => format!("ZooKeeper at {hosts} refused this node's credentials (authentication failed)"),
            })),
            Ok(Err(e)) => Err(ZkError::Unreachable(format!("{hosts}: {e}"))),
            Err(_) => Err(ZkError::Unreachable(format!("{hosts}: connect timed out"))),
        }
    }

    /// With TLS on and every server failing: why a server's TLS handshake
    /// fails, if it is something only the configuration can mend.
    async fn tls_diagnosis(&self) -> Option<String> {
        let tls = self.security.tls.as_ref()?;
        let (servers, _) = split_connect_string_as_written(&self.hosts);
        for s in servers.iter().filter(|s| server_is_tls(s, true)) {
            if let Some(why) = tls.diagnose(server_addr(s), self.op_timeout()).await {
                return Some(why);
            }
        }
        None
    }

    /// The keeper: follows the session state; on expiry, or when a
    /// disconnect outlasts a server that already serves again (see
    /// `fresh_session_when_resume_lags`), installs a new client and
    /// re-creates every registered ephemeral.
    /// It holds only a state watcher, never a client: dropping the node's
    /// clients must be able to close the session.
    async fn keep(self: Arc<Self>, mut states: zk::StateWatcher) {
        loop {
            let fresh = loop {
                let outcome = match states.changed().await {
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => Reconnect::Resumed,
                    zk::SessionState::Disconnected => {
                        tracing::warn!("ZooKeeper disconnected; resuming the session, or starting a new one if a server serves first");
                        self.resume_or_replace(&mut states).await
                    }
                    zk::SessionState::Closed => Reconnect::Closed,
                    s => Reconnect::Lost(s),
                };
                match outcome {
                    Reconnect::Resumed => {
                        tracing::info!("ZooKeeper session resumed");
                        self.generation.send_modify(|g| *g += 1);
                    }
                    Reconnect::Replaced(client) => break Some(client),
                    Reconnect::Lost(s) => {
                        tracing::warn!(state = ?s, "ZooKeeper session lost; building a new one");
                        break None;
                    }
                    Reconnect::Closed => return,
                }
            };
            *self.client.lock().expect("zk client lock") = None;
            let client = match fresh {
                Some(c) => c,
                None => loop {
                    if Arc::strong_count(&self) == 1 {
                        return; // the node is shutting down
                    }
                    match self.new_client().await {
                        Ok(c) => break c,
                        Err(e) => {
                            tracing::warn!(error = %e, "ZooKeeper still unreachable");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                },
            };
            states = client.state_watcher();
            tracing::info!(session_id = ?client.session_id(), "new ZooKeeper session");
            *self.client.lock().expect("zk client lock") = Some(client);
            self.client_epoch.send_modify(|e| *e += 1);
            let registered: Vec<(String, Ephemeral)> = self
                .ephemerals
                .lock()
                .expect("ephemerals lock")
                .iter()
                .map(|(p, e)| (p.clone(), e.clone()))
                .collect();
            for (path, e) in registered {
                if let Err(err) = self.claim(&path, &e).await {
                    tracing::warn!(path, error = %err, "could not re-create ephemeral znode");
                }
            }
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// While disconnected: whichever comes first, the client resuming its
    /// session by itself, or a new session on a server seen serving.
    ///
    /// Why not only wait: zookeeper-client 0.11 retries the servers with a
    /// back-off that doubles per round (300 ms, 600 ms, 1.2 s, ... for three
    /// servers) and waits a whole connection timeout on a frozen server, so
    /// after a few seconds without quorum it resumes up to ~2.5 s after the
    /// quorum is back. Why a new session rather than the old one on a new
    /// client: the old client keeps retrying and would take the session's
    /// connection back once (the server drops the other connection); a new
    /// session only costs re-creating the ephemerals, which the old client
    /// closes on its own session when it next gets through.
    /// Cancellation safe: a probe or connect dropped midway leaves at most a
    /// session with no ephemerals, which the server expires.
    async fn resume_or_replace(self: &Arc<Self>, states: &mut zk::StateWatcher) -> Reconnect {
        let fresh = self.fresh_session_when_resume_lags();
        tokio::pin!(fresh);
        loop {
            tokio::select! {
                s = states.changed() => match s {
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => return Reconnect::Resumed,
                    zk::SessionState::Disconnected => {}
                    zk::SessionState::Closed => return Reconnect::Closed,
                    other => return Reconnect::Lost(other),
                },
                c = &mut fresh => return c.map_or(Reconnect::Closed, Reconnect::Replaced),
            }
        }
    }

    /// After `RESUME_GRACE_MS` (the client's own first round, which costs
    /// nothing, gets its chance), asks every server `srvr` in parallel every
    /// `PROBE_INTERVAL_MS` and opens a new session on those that serve.
    /// A server that does not answer within `PROBE_TIMEOUT_MS` (frozen, or
    /// gone) is left out, so it cannot hold the connect for a connection
    /// timeout. One that refuses `srvr` (not in `4lw.commands.whitelist`)
    /// counts as a candidate: the connect then finds out. `None` when the
    /// node shuts down.
    async fn fresh_session_when_resume_lags(self: &Arc<Self>) -> Option<zk::Client> {
        tokio::time::sleep(Duration::from_millis(RESUME_GRACE_MS)).await;
        let mut serving_seen = false;
        let (servers, chroot) = split_connect_string_as_written(&self.hosts);
        loop {
            if Arc::strong_count(self) == 1 {
                return None; // only the keeper holds the session: the node is shutting down
            }
            let probes = servers.iter().map(|s| async move { (s.clone(), self.probe(s).await) });
            let candidates: Vec<String> = futures::future::join_all(probes)
                .await
                .into_iter()
                .filter(|(_, mode)| matches!(mode, Some(ServerMode::Serving | ServerMode::Unknown)))
                .map(|(s, _)| s)
                .collect();
            if !candidates.is_empty() {
                if !serving_seen {
                    tracing::info!(servers = ?candidates, "ZooKeeper serves again; opening a new session");
                    serving_seen = true;
                }
                let hosts = format!("{}{chroot}", candidates.join(","));
                match self.new_client_on(&hosts, true).await {
                    Ok(c) => {
                        self.metrics.session_replaced();
                        return Some(c);
                    }
                    Err(e) => tracing::debug!(error = %e, hosts, "new ZooKeeper session not yet possible"),
                }
            }
            tokio::time::sleep(Duration::from_millis(PROBE_INTERVAL_MS)).await;
        }
    }

    /// `server` (as written in the connect string) asked `srvr`: over TLS
    /// when it is dialled over TLS. `None`: not a candidate (refused, no
    /// answer in time: down or frozen). A TLS server that cannot be probed
    /// (it does not answer four-letter words over TLS, or the handshake
    /// fails) is `Unknown`, a candidate: the connect finds out.
    async fn probe(&self, server: &str) -> Option<ServerMode> {
        let addr = server_addr(server);
        let limit = Duration::from_millis(PROBE_TIMEOUT_MS);
        match &self.security.tls {
            Some(tls) if server_is_tls(server, true) => match four_letter_tls(addr, "srvr", limit, tls).await {
                Ok(reply) => Some(ServerMode::of_srvr(&reply)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    None
                }
                Err(_) => Some(ServerMode::Unknown),
            },
            _ if server_is_tls(server, false) => Some(ServerMode::Unknown),
            _ => four_letter(addr, "srvr", limit)
                .await
                .ok()
                .map(|r| ServerMode::of_srvr(&r)),
        }
    }

    /// True when this session authenticates with the cluster's secret
    /// (digest or SASL).
    pub fn has_credentials(&self) -> bool {
        !matches!(self.security.credentials, ZkCredentials::Open)
    }

    /// How this session authenticates.
    pub fn credentials(&self) -> &ZkCredentials {
        &self.security.credentials
    }

    /// The ACL for znodes this session creates: all rights to the digest
    /// identity (`auth`) or to `sasl:walship` when access control is on,
    /// else open.
    pub fn acls(&self) -> zk::Acls<'static> {
        match &self.security.credentials {
            ZkCredentials::Open => zk::Acls::anyone_all(),
            ZkCredentials::Digest(_) => zk::Acls::creator_all(),
            ZkCredentials::Sasl { .. } => zk::Acls::new(&SASL_ACL[..]),
        }
    }

    /// The current client, or `Unreachable` while a new session is being built.
    pub fn client(&self) -> Result<zk::Client, ZkError> {
        self.client
            .lock()
            .expect("zk client lock")
            .clone()
            .ok_or_else(|| ZkError::Unreachable("no ZooKeeper session (reconnecting)".into()))
    }

    /// True while the session is connected (a write has a chance to succeed).
    pub fn is_connected(&self) -> bool {
        match self.client.lock().expect("zk client lock").as_ref() {
            Some(c) => matches!(c.state(), zk::SessionState::SyncConnected),
            None => false,
        }
    }

    pub fn session_id(&self) -> Option<i64> {
        self.client
            .lock()
            .expect("zk client lock")
            .as_ref()
            .map(|c| c.session_id().0)
    }

    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.op_timeout_ms)
    }

    /// Runs one ZooKeeper call on the current client, bounded by the op timeout.
    /// `what` names the operation and znode for error messages.
    pub async fn run<T, F, Fut>(&self, what: &str, f: F) -> Result<T, ZkError>
    where
        F: FnOnce(zk::Client) -> Fut,
        Fut: Future<Output = Result<T, zk::Error>>,
    {
        self.run_within(what, self.op_timeout(), f).await
    }

    pub async fn run_within<T, F, Fut>(&self, what: &str, timeout: Duration, f: F) -> Result<T, ZkError>
    where
        F: FnOnce(zk::Client) -> Fut,
        Fut: Future<Output = Result<T, zk::Error>>,
    {
        let metrics = &*self.metrics;
        // Subscribed before the client is taken: a replacement in between
        // at worst fails this call needlessly (the caller retries).
        let mut epoch = self.client_epoch.subscribe();
        let client = self.client().inspect_err(|_| metrics.call_failed("no_session"))?;
        let _timer = CallTimer::start(metrics);
        let call = tokio::time::timeout(timeout, f(client));
        let replaced = async {
            // The sender lives in `self`, so this only ends on a replacement.
            let _ = epoch.changed().await;
        };
        tokio::select! {
            r = call => match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => {
                    let e = ZkError::from_zk(what, e);
                    metrics.call_failed(e.kind());
                    Err(e)
                }
                Err(_) => {
                    metrics.call_failed("timeout");
                    Err(ZkError::Timeout {
                        what: what.to_string(),
                        timeout_ms: timeout.as_millis() as u64,
                    })
                }
            },
            _ = replaced => {
                metrics.call_failed("session_replaced");
                Err(ZkError::Unreachable(format!(
                    "{what}: the ZooKeeper session was replaced while this call waited (outcome unknown: the old client may still send it)"
                )))
            }
        }
    }

    /// Registers an ephemeral znode that must exist for as long as this node
    /// wants it, across session losses, and creates it now.
    pub async fn register_ephemeral(&self, path: &str, data: Vec<u8>, claim: Claim) -> Result<(), ZkError> {
        let e = Ephemeral { data, claim };
        self.ephemerals
            .lock()
            .expect("ephemerals lock")
            .insert(path.to_string(), e.clone());
        self.claim(path, &e).await
    }

    /// Stops maintaining an ephemeral and deletes it if this session owns it.
    pub async fn unregister_ephemeral(&self, path: &str) -> Result<(), ZkError> {
        self.ephemerals.lock().expect("ephemerals lock").remove(path);
        let Some(sid) = self.session_id() else { return Ok(()) };
        let stat = self
            .run(&format!("stat {path}"), |c| async move { c.check_stat(path).await })
            .await?;
        if let Some(stat) = stat {
            if stat.ephemeral_owner == sid {
                self.delete_if_unchanged(path, stat.version).await?;
            }
        }
        Ok(())
    }

    /// Deletes `path` at `version`; gone already or changed since is fine
    /// (someone else acted on it first).
    async fn delete_if_unchanged(&self, path: &str, version: i32) -> Result<(), ZkError> {
        match self
            .run(&format!("delete {path}"), |c| async move {
                c.delete(path, Some(version)).await
            })
            .await
        {
            Ok(())
            | Err(ZkError::Call {
                source: zk::Error::NoNode | zk::Error::BadVersion,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn claim(&self, path: &str, e: &Ephemeral) -> Result<(), ZkError> {
        let opts = zk::CreateMode::Ephemeral.with_acls(self.acls());
        for _ in 0..5 {
            let data = e.data.clone();
            let opts = opts.clone();
            let created = self
                .run(&format!("create {path}"), |c| async move {
                    c.create(path, &data, &opts).await.map(|_| ())
                })
                .await;
            match created {
                Ok(()) => return Ok(()),
                Err(ZkError::Call {
                    source: zk::Error::NodeExists,
                    ..
                }) => {}
                Err(err) => return Err(err),
            }
            let got = self
                .run(&format!("get {path}"), |c| async move { c.get_data(path).await })
                .await;
            let (old, stat) = match got {
                Ok(v) => v,
                Err(ZkError::Call {
                    source: zk::Error::NoNode,
                    ..
                }) => continue,
                Err(err) => return Err(err),
            };
            if Some(stat.ephemeral_owner) == self.session_id() {
                if old != e.data {
                    let data = e.data.clone();
                    self.run(&format!("set {path}"), |c| async move {
                        c.set_data(path, &data, None).await.map(|_| ())
                    })
                    .await?;
                }
                return Ok(());
            }
            // The very same claim from an earlier session is this node's own,
            // left by its previous life (a leader killed and restarted that
            // resumes the same term): replace it.
            if let (Claim::ReplaceLowerTerm(term), false) = (&e.claim, old == e.data) {
                let term = *term;
                if (self.term_of)(&old).is_some_and(|held| held >= term) {
                    return Err(ZkError::Held {
                        path: path.to_string(),
                        term,
                    });
                }
            }
            // Left by a dead session (kill -9 keeps it until the session times out).
            tracing::info!(path, owner = stat.ephemeral_owner, "replacing a stale ephemeral znode");
            self.delete_if_unchanged(path, stat.version).await?;
        }
        Err(ZkError::Unreachable(format!("could not claim {path} after 5 attempts")))
    }

    /// Closes the session so its ephemerals vanish at once (graceful exit).
    pub async fn close(&self) {
        self.ephemerals.lock().expect("ephemerals lock").clear();
        let client = self.client.lock().expect("zk client lock").take();
        if let Some(client) = client {
            let mut states = client.state_watcher();
            drop(client);
            // Dropping the last clone sends CloseSession; wait briefly for it.
            let _ = tokio::time::timeout(Duration::from_millis(self.op_timeout_ms), async {
                while !matches!(states.changed().await, zk::SessionState::Closed) {}
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srvr_replies_say_who_serves() {
        let leader = "Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.1/3\nMode: leader\nNode count: 12\n";
        assert_eq!(ServerMode::of_srvr(leader), ServerMode::Serving);
        assert_eq!(ServerMode::of_srvr("Mode: follower\n"), ServerMode::Serving);
        assert_eq!(ServerMode::of_srvr("Mode: standalone\n"), ServerMode::Serving);
        assert_eq!(ServerMode::of_srvr("Mode: read-only\n"), ServerMode::NotServing);
        assert_eq!(
            ServerMode::of_srvr("This ZooKeeper instance is not currently serving requests\n"),
            ServerMode::NotServing
        );
        assert_eq!(
            ServerMode::of_srvr("srvr is not executed because it is not in the whitelist.\n"),
            ServerMode::Unknown
        );
        assert_eq!(ServerMode::of_srvr(""), ServerMode::NotServing);
    }

    #[test]
    fn connect_strings_split_into_servers_and_chroot() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // The servers' `host:port`, as the probes dial them.
        let split_connect_string = |hosts: &str| {
            let (servers, chroot) = split_connect_string_as_written(hosts);
            (
                servers.iter().map(|x| server_addr(x).to_string()).collect::<Vec<_>>(),
                chroot,
            )
        };
        assert_eq!(split_connect_string("a:1,b:2"), (s(&["a:1", "b:2"]), String::new()));
        assert_eq!(
            split_connect_string("a:1, b:2/walship/x"),
            (s(&["a:1", "b:2"]), "/walship/x".into())
        );
        assert_eq!(
            split_connect_string("tcp://a:1,tcp://b:2/r"),
            (s(&["a:1", "b:2"]), "/r".into())
        );
        assert_eq!(split_connect_string("a:1,,"), (s(&["a:1"]), String::new()));
    }

    #[test]
    fn connection_timeout_is_a_slice_of_the_session_per_server() {
        let ms = |d: Duration| d.as_millis() as u64;
        // One server: the op timeout, as before.
        assert_eq!(ms(connection_timeout("127.0.0.1:2181", 4000, 2000)), 2000);
        // An ensemble: session timeout / servers.
        assert_eq!(ms(connection_timeout("a:1,b:2,c:3", 4000, 2000)), 1333);
        assert_eq!(ms(connection_timeout("a:1,b:2,c:3,d:4,e:5", 4000, 2000)), 800);
        // Never above the op timeout, never under 100 ms.
        assert_eq!(ms(connection_timeout("a:1,b:2", 10_000, 2000)), 2000);
        assert_eq!(ms(connection_timeout("a:1,b:2,c:3", 150, 2000)), 100);
        assert_eq!(ms(connection_timeout("a:1,,", 4000, 2000)), 2000);
    }
}
