//! A walship node: wires local storage, the witness, the network and Raft
//! together, and runs the protocol steps that live outside openraft
//! (witness-protocol.md):
//!
//! 1. Genesis: create or find the cluster in ZooKeeper; refuse a data dir of
//!    another cluster.
//! 2. Adoption before Raft starts: make the local log equal to W's wherever
//!    they differ (an empty disk rebuilds itself entirely from W).
//! 3. Elections are ours: openraft's own election timer is off. The failover
//!    loop watches for a lost leader (no contact, or the `leader` znode gone),
//!    adopts W's log, and only then calls `trigger().elect()`.
//! 4. The leader keeps the `leader` ephemeral znode and ships its snapshots to W.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;
use tokio::sync::Notify;
use walship_zk::Claim;
use walship_zk::ZkError;
use walship_zk::ZkSession;

use crate::network::directory::Directory;
use crate::network::directory::MemberInfo;
use crate::network::NetworkFactory;
use crate::storage;
use crate::storage::LogStore;
use crate::storage::StateMachine;
use crate::types::NodeId;
use crate::types::Raft;
use crate::types::Vote;
use crate::witness::Witness;
use crate::witness::WitnessError;
use crate::witness::WitnessLog;

/// Everything `walship node` is told (see `cli`).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub cluster: String,
    pub zk: String,
    pub data_dir: PathBuf,
    pub listen: String,
    /// Address peers and clients use to reach this node (defaults to `listen`).
    pub advertise: Option<String>,
    pub heartbeat_interval_ms: u64,
    /// No word from the leader for this long means it is gone.
    pub election_timeout_ms: u64,
    pub zk_session_timeout_ms: u64,
    pub zk_op_timeout_ms: u64,
    pub snapshot_every_entries: u64,
    /// Also snapshot once this many bytes went to W's WAL since the last one.
    pub snapshot_every_wal_bytes: u64,
    pub max_payload_entries: u64,
    /// How long a client write may wait for its commit before it is a 504.
    pub write_timeout_ms: u64,
    /// Group commit: entries proposed concurrently, and payload bytes per entry.
    pub max_inflight_batches: usize,
    pub max_batch_bytes: usize,
    /// When a local log append counts as done (storage/flusher.rs).
    pub log_sync: crate::storage::LogSync,
    /// Access control (see `crate::auth`); None: off.
    pub secret_file: Option<PathBuf>,
    pub api_token_file: Option<PathBuf>,
    /// An unreadable local log or snapshot is moved aside and rebuilt from W
    /// instead of refused (`storage::open_local`).
    pub rebuild_from_witness: bool,
    /// The HTTP listener's bounds (`crate::serve`); 0 connections: derived.
    pub max_connections: usize,
    pub header_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// A request's body must arrive within this of its head.
    pub body_read_timeout_ms: u64,
    /// Largest snapshot body accepted from the other node.
    pub max_snapshot_bytes: u64,
    /// TLS mode (see `crate::tls`); None: plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// TLS mode: client routes need a client certificate of this cluster.
    pub tls_client_auth: bool,
    /// ZooKeeper: SASL DIGEST-MD5 instead of the digest scheme (needs
    /// `secret_file`); see `crate::zksec`.
    pub zk_sasl: bool,
    /// ZooKeeper over TLS; None: plain TCP.
    pub zk_tls: Option<walship_zk::ZkTlsFiles>,
}

/// Corruption found in W during failover is logged at most this often.
const CORRUPT_LOG_EVERY: Duration = Duration::from_secs(5);

use crate::failover::rules;
use crate::failover::rules::leader_term;
pub use crate::failover::rules::LeaderInfo;
pub use crate::failover::rules::LeaderLease;

#[derive(thiserror::Error, Debug)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] storage::StoreError),
    #[error(transparent)]
    Witness(#[from] crate::witness::WitnessError),
    /// openraft's core stopped or could not start.
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    /// The local log refused a write openraft asked for.
    #[error("saving {what}: {source}")]
    SaveVote {
        what: &'static str,
        source: openraft::StorageError<NodeId>,
    },
    /// Raft is being rebuilt (adoption) or stopped: retry.
    #[error("raft is restarting")]
    RaftRestarting,
    /// A wait on Raft's metrics timed out or was cancelled.
    #[error("waiting for {what}: {source}")]
    Wait {
        what: &'static str,
        source: openraft::metrics::WaitError,
    },
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

pub struct Node {
    pub cfg: NodeConfig,
    pub zk: Arc<ZkSession>,
    pub witness: Arc<Witness>,
    pub directory: Arc<Directory>,
    pub log: LogStore,
    pub sm: StateMachine,
    /// For requests to the other node; in TLS mode it checks that the
    /// other end holds the other node's certificate.
    pub http: reqwest::Client,
    /// "https" in TLS mode, else "http".
    pub scheme: &'static str,
    /// The listener's TLS configuration, in TLS mode.
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: crate::auth::Auth,
    pub(crate) raft: RwLock<Option<Raft>>,
    network: NetworkFactory,
    raft_config: Arc<openraft::Config>,
    /// When this node last heard from a leader, and whose vote it carried.
    last_contact: Mutex<(Instant, Option<Vote>)>,
    /// What this node last saw of the `leader` znode (see `LeaderLease`).
    lease: Mutex<LeaderLease>,
    /// While leader: when the commit path was last proven to work (see
    /// `commit_probe_loop`); the lease is renewed only on a recent proof.
    commit_proof: Mutex<Option<Instant>>,
    /// Wakes the failover loop early (the `leader` znode changed).
    wake: Notify,
    /// One adoption/election at a time.
    pub(crate) failover_lock: tokio::sync::Mutex<()>,
    stopping: std::sync::atomic::AtomicBool,
    /// Set by `POST /admin/leave`; `main` stops the process as on SIGTERM.
    stop_requested: Notify,
    /// The background loops `run_background` started (ended by `shutdown`).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Why the Raft core stopped by itself (a storage error, a panic): the
    /// node then stops serving and exits with this error (`core_watch_loop`).
    fatal: std::sync::OnceLock<String>,
    /// Set by the leader's hand-over request: fail over at the next tick.
    takeover: std::sync::atomic::AtomicBool,
    /// Group commit of client requests; set once the node is in an Arc.
    proposer: std::sync::OnceLock<crate::proposer::Proposer>,
    /// Lifecycle events for embedders (`crate::events`).
    pub(crate) events: crate::events::Events,
}

impl Node {
    pub fn advertise_addr(&self) -> String {
        self.cfg.advertise.clone().unwrap_or_else(|| self.cfg.listen.clone())
    }

    /// The running Raft, or None while it is being rebuilt by adoption.
    pub fn raft(&self) -> Option<Raft> {
        self.raft.read().expect("raft lock").clone()
    }

    pub fn proposer(&self) -> &crate::proposer::Proposer {
        self.proposer.get().expect("proposer is set in Node::start")
    }

    pub fn note_leader_contact(&self, vote: Vote) {
        *self.last_contact.lock().expect("contact lock") = (Instant::now(), Some(vote));
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts a node: storage, ZooKeeper, genesis, adoption, Raft; then the
    /// background loops. Returns once the node is ready to serve HTTP.
    pub async fn start(cfg: NodeConfig) -> Result<Arc<Node>, StartError> {
        Node::start_with(cfg, None, crate::events::Events::new()).await
    }

    /// As `start`, with an embedder's application instead of the key-value
    /// map (`crate::app`; `None`: the map), firing lifecycle events to
    /// `events` from the start (subscribe to it first to see start-up's).
    pub async fn start_with(
        cfg: NodeConfig,
        app: Option<Box<dyn crate::app::Application>>,
        events: crate::events::Events,
    ) -> Result<Arc<Node>, StartError> {
        if !crate::types::NODE_IDS.contains(&cfg.id) {
            return Err(StartError::Config(format!("--id must be 1 or 2, not {}", cfg.id)));
        }
        let meta = storage::open_or_init_meta(&cfg.data_dir, &cfg.cluster, cfg.id)?;
        let (log, sm) = storage::open_local(&cfg.data_dir, cfg.log_sync, app, cfg.rebuild_from_witness).await?;
        events.snapshot_known(sm.snapshot_last().map(|l| l.index));

        let auth = crate::auth::Auth::load(cfg.secret_file.as_deref(), cfg.api_token_file.as_deref())
            .map_err(StartError::Config)?;
        let zk_security =
            crate::zksec::load_security(&auth, cfg.zk_sasl, cfg.zk_tls.as_ref()).map_err(StartError::Config)?;
        let zk = ZkSession::connect_secured(
            &cfg.zk,
            cfg.zk_session_timeout_ms,
            cfg.zk_op_timeout_ms,
            60_000,
            leader_term,
            zk_security,
            crate::metrics::zk_session_metrics(),
        )
        .await
        .map_err(WitnessError::from)?;
        let witness = Arc::new(Witness::new(Arc::clone(&zk), &cfg.cluster));
        let record = witness.bootstrap().await?;
        match meta {
            Some(m) => m.ensure_cluster_id(&cfg.data_dir, &record.cluster_id)?,
            None => storage::write_meta(
                &cfg.data_dir,
                &storage::NodeMeta {
                    cluster: cfg.cluster.clone(),
                    cluster_id: record.cluster_id.clone(),
                    node_id: cfg.id,
                },
            )?,
        }

        let directory = Arc::new(Directory::new(Arc::clone(&zk), witness.paths().clone()));
        let tls = cfg
            .tls
            .as_ref()
            .map(|f| crate::tls::NodeTls::load(f, &cfg.cluster, cfg.id))
            .transpose()
            .map_err(StartError::Config)?;
        let mut http = reqwest::Client::builder().tcp_nodelay(true);
        if let Some(t) = &tls {
            // Raft RPC, forwarded writes, takeover and snapshots all go
            // through this client, so all check the other node's certificate.
            http = http.use_preconfigured_tls(t.peer_client.clone());
        }
        let http = http.build().map_err(|e| StartError::Config(e.to_string()))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let network = NetworkFactory {
            scheme,
            peer_token: auth.peer_token().map(str::to_string),
            directory: Arc::clone(&directory),
            witness: Arc::clone(&witness),
            http: http.clone(),
            witness_piggyback: Duration::from_millis(cfg.heartbeat_interval_ms / 2),
        };
        let raft_config = Arc::new(
            openraft::Config {
                cluster_name: cfg.cluster.clone(),
                heartbeat_interval: cfg.heartbeat_interval_ms,
                // openraft's own timer is switched off at run time; these only
                // have to satisfy its validation (min > heartbeat).
                election_timeout_min: cfg.election_timeout_ms,
                election_timeout_max: cfg.election_timeout_ms * 2,
                max_payload_entries: cfg.max_payload_entries,
                snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every_entries),
                max_in_snapshot_log_to_keep: 1000,
                install_snapshot_timeout: 10_000,
                ..Default::default()
            }
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?,
        );

        let node = Arc::new(Node {
            cfg,
            zk,
            witness,
            directory,
            log,
            sm,
            http,
            scheme,
            server_tls: tls.map(|t| t.server),
            auth,
            raft: RwLock::new(None),
            network,
            raft_config,
            last_contact: Mutex::new((Instant::now(), None)),
            lease: Mutex::new(LeaderLease::default()),
            commit_proof: Mutex::new(None),
            wake: Notify::new(),
            failover_lock: tokio::sync::Mutex::new(()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            proposer: std::sync::OnceLock::new(),
            stop_requested: Notify::new(),
            fatal: std::sync::OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
            takeover: std::sync::atomic::AtomicBool::new(false),
            events,
        });
        let _ = node.proposer.set(crate::proposer::Proposer::start(&node));

        // An empty disk rebuilds from W here; a kept disk drops any
        // uncommitted suffix W does not share. Either way the node never
        // starts Raft with less than W holds.
        let wlog = node.read_witness_log().await?;
        node.adopt(wlog).await?;
        node.start_raft().await?;
        Ok(node)
    }

    pub(crate) async fn start_raft(&self) -> Result<(), StartError> {
        self.forget_own_leadership().await?;
        let raft = Raft::new(
            self.cfg.id,
            Arc::clone(&self.raft_config),
            self.network.clone(),
            self.log.clone(),
            self.sm.clone(),
        )
        .await?;
        raft.runtime_config().elect(false);
        *self.raft.write().expect("raft lock") = Some(raft);
        Ok(())
    }

    /// The restart rule (brainstorm.md, "A restarted node never leads in a
    /// term it held"): openraft 0.9 resumes leadership without an election
    /// when it starts over a committed vote for itself (`Engine::startup`).
    /// A node that restarts may have forgotten entries it appended and sent
    /// to its peer (empty disk; power loss of the unsynced tail); leading
    /// again in that term would give new entries those entries' log ids, and
    /// log matching, which compares ids only, would keep the peer's stale
    /// copies. So before every `Raft::new` such a vote is stored uncommitted:
    /// the node starts as a follower and can lead only after W grants it a
    /// higher term. (Un-committing is always allowed: the vote stays the same
    /// term and candidate, and W's copy, not this one, carries the safety.)
    async fn forget_own_leadership(&self) -> Result<(), StartError> {
        let Some(vote) = self.log.vote() else { return Ok(()) };
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(self.cfg.id) {
            return Ok(());
        }
        let uncommitted = Vote::new(vote.leader_id().term, self.cfg.id);
        tracing::info!(
            term = vote.leader_id().term,
            "this node led term {} before it restarted: it will lead again only through a new election",
            vote.leader_id().term
        );
        crate::metrics::METRICS.leadership_forgotten.inc();
        let mut log = self.log.clone();
        openraft::storage::RaftLogStorage::save_vote(&mut log, &uncommitted)
            .await
            .map_err(|source| StartError::SaveVote {
                what: "the un-committed vote",
                source,
            })
    }

    /// Reads W's log from the first index this node might not share with W:
    /// everything up to the local committed index is committed, hence in W.
    async fn read_witness_log(&self) -> Result<WitnessLog, crate::witness::WitnessError> {
        let from = match (self.log.committed(), self.log.purged()) {
            (Some(c), _) => c.index + 1,
            (None, Some(p)) => p.index + 1,
            (None, None) => 0,
        };
        let from = from.min(self.log.last_log_id().map(|l| l.index + 1).unwrap_or(0));
        self.witness.read_log(from).await
    }

    /// W's snapshot is needed when it ends past this node's purged point at
    /// an entry this node does not hold. Compared by position, not by
    /// openraft's log-id order: a stray entry of a leader that lost a duel
    /// in the same term (say (1, n2, 1), never in W) sorts above W's
    /// snapshot (1, n1, 2) although it sits at a lower index, and skipping
    /// the snapshot then left a hole before W's next entries, so the node
    /// could never start (found by the model, tests/model.rs).
    fn needs_snapshot(&self, meta: &crate::types::SnapshotMeta) -> bool {
        meta.last_log_id
            .is_some_and(|last| snapshot_needed(last, self.log.purged(), self.log.log_id_at(last.index)))
    }

    /// True if W holds something this node's log lacks or has otherwise.
    fn needs_adoption(&self, w: &WitnessLog) -> bool {
        if w.snapshot.as_ref().is_some_and(|(meta, _)| self.needs_snapshot(meta)) {
            return true;
        }
        w.entries.iter().any(|e| {
            e.log_id.index > self.log.purged().map(|p| p.index).unwrap_or(0)
                && self.log.log_id_at(e.log_id.index) != Some(e.log_id)
        }) || (self.log.last_log_id().is_none() && !w.entries.is_empty())
            // Same log id, other bytes: W's entry wins (node_repair.rs).
            || self.log.first_reused(&w.entries).is_some()
    }

    /// Makes the local log equal W's where they differ (Raft must not be running).
    pub(crate) async fn adopt(&self, w: WitnessLog) -> Result<(), StartError> {
        if !self.needs_adoption(&w) {
            return Ok(());
        }
        let before = self.log.last_log_id();
        let mut snapshot_index = None;
        if let Some((meta, data)) = w.snapshot {
            if self.needs_snapshot(&meta) {
                tracing::info!(snapshot = ?meta.last_log_id, bytes = data.len(), "adopting W's snapshot");
                let bytes = data.len() as u64;
                snapshot_index = meta.last_log_id.map(|l| l.index);
                storage::install_snapshot_offline(&self.sm, &self.log, meta, data).await?;
                crate::metrics::METRICS
                    .snapshots
                    .with_label_values(&["installed"])
                    .inc();
                crate::metrics::METRICS
                    .snapshot_bytes
                    .with_label_values(&["installed"])
                    .inc_by(bytes);
                let from = crate::events::SnapshotSource::Witness;
                self.events.snapshot_installed(snapshot_index, bytes, from);
            }
        }
        let n = w.entries.len();
        let adopted = self.log.adopt_entries(w.entries).await?;
        self.after_adoption(&adopted).await?;
        crate::metrics::METRICS.adoptions.inc();
        crate::metrics::METRICS.entries_adopted.inc_by(n as u64);
        let entries = n as u64;
        self.events.fire(crate::events::Event::Adopted {
            entries,
            snapshot_index,
        });
        // The adopted entries were accepted by W under W's vote; a local vote
        // below it (say, this node's own from a term it led before it died)
        // would make openraft restart as the leader of an older term over a
        // log from a newer one. Taking W's vote is what a follower does when
        // it accepts those entries from their leader.
        if self.log.vote().is_none_or(|v| w.record.vote > v) {
            let mut log = self.log.clone();
            openraft::storage::RaftLogStorage::save_vote(&mut log, &w.record.vote)
                .await
                .map_err(|source| StartError::SaveVote {
                    what: "W's vote",
                    source,
                })?;
        }
        tracing::info!(entries = n, ?before, after = ?self.log.last_log_id(), witness_last = ?w.record.last_log_id, "adopted W's log");
        Ok(())
    }

    /// The failover step: adopt W's log (restarting Raft over the changed
    /// store, since openraft reads its storage only at start), then elect.
    async fn failover(&self) -> Result<(), StartError> {
        let _guard = self.failover_lock.lock().await;
        let Some(raft) = self.raft() else { return Ok(()) };
        if raft.metrics().borrow().state == ServerState::Leader {
            return Ok(());
        }
        let w = self.read_witness_log().await?;
        if self.needs_adoption(&w) {
            let old = self.raft.write().expect("raft lock").take();
            if let Some(old) = old {
                if let Err(e) = old.shutdown().await {
                    tracing::warn!(error = %e, "raft shutdown before adoption failed");
                }
            }
            let adopted = self.adopt(w).await;
            // Raft comes back even if adoption failed, so the node keeps serving.
            self.start_raft().await?;
            adopted?;
        }
        tracing::info!(last = ?self.log.last_log_id(), "standing for election");
        if let Some(raft) = self.raft() {
            raft.trigger().elect().await?;
        }
        Ok(())
    }

    /// Registers this node's `members/<id>` znode and starts the loops.
    pub async fn run_background(self: &Arc<Self>) -> Result<(), StartError> {
        let me = MemberInfo {
            id: self.cfg.id,
            addr: self.advertise_addr(),
        };
        self.zk
            .register_ephemeral(
                &self.witness.paths().member(self.cfg.id),
                serde_json::to_vec(&me).expect("json"),
                Claim::Replace,
            )
            .await
            .map_err(WitnessError::from)?;
        // The leader-contact clock starts now, when this node can hear the
        // leader, not when it was built: a start slower than an election
        // timeout (a loaded machine, a long adoption) must not count as
        // silence and depose a healthy leader the moment the loops begin.
        self.last_contact.lock().expect("contact lock").0 = Instant::now();
        let handles = [
            tokio::spawn(Arc::clone(self).failover_loop()),
            tokio::spawn(Arc::clone(self).leader_znode_watch()),
            tokio::spawn(Arc::clone(self).leader_duties_loop()),
            tokio::spawn(Arc::clone(self).commit_probe_loop()),
            tokio::spawn(Arc::clone(self).core_watch_loop()),
            tokio::spawn(crate::events::watch_peer(Arc::clone(self))),
        ];
        self.tasks.lock().expect("tasks lock").extend(handles);
        Ok(())
    }

    /// Decides when the leader is gone: no contact for an election timeout,
    /// or its `leader` znode gone (its ZooKeeper session ended). Then adopts
    /// and elects, at most once per election timeout.
    async fn failover_loop(self: Arc<Self>) {
        let election_timeout = Duration::from_millis(self.cfg.election_timeout_ms);
        // As often as the leader touches its lease: a kill -9 is noticed
        // from the lease going stale plus a refused connection, and a
        // coarser tick only adds to the failover time.
        let tick = self.touch_interval();
        let mut last_attempt: Option<Instant> = None;
        // When corruption in W was last logged, and attempts since (see below).
        let mut corrupt_logged: Option<(Instant, u64)> = None;
        let pause_threshold = rules::pause_threshold(tick, election_timeout);
        while !self.is_stopping() {
            let slept_at = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.wake.notified() => {}
            }
            // A tick far later than asked means this process did not run
            // (SIGSTOP, a VM or GC pause, a starved machine): what it knows
            // of the leader is as old as the pause, and the leader's
            // heartbeats are only now arriving. Count the resume as fresh
            // contact, so a live leader is not deposed for our own pause.
            // Only the sleep counts: a failover attempt that waited on
            // ZooKeeper last time round is not a pause (taking it for one
            // put off the next attempt by an election timeout).
            if let Some(overslept) = rules::overslept(slept_at, tick, Instant::now(), pause_threshold) {
                tracing::warn!(
                    paused_ms = overslept.as_millis() as u64,
                    "this node did not run for a while; giving the leader a fresh election timeout"
                );
                self.forgive_pause();
                continue;
            }
            let Some(raft) = self.raft() else { continue };
            let m = raft.metrics().borrow().clone();
            if m.state == ServerState::Leader {
                // A hand-over asked of a node that already leads is moot.
                self.takeover.store(false, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            // At most one attempt per election timeout on suspicion; a
            // leader handing over (SIGTERM, /admin/leave) is not suspicion:
            // two hand-overs within a second (a rolling restart) must not
            // wait for the first one's timer.
            let handed_over = self.takeover.swap(false, std::sync::atomic::Ordering::Relaxed);
            if !handed_over && last_attempt.is_some_and(|t| t.elapsed() < election_timeout) {
                continue;
            }
            let gone = handed_over || self.leader_process_gone(m.current_leader).await;
            let mut why = self.leader_lost();
            if !gone && why.is_none() {
                continue;
            }
            // Don't duel with a live peer that noticed at the same moment:
            // the lower id goes first, the other waits a heartbeat and looks
            // again. (When the leader's process is gone, or it asked us to
            // take over, there is no one to duel with.)
            if !gone && self.cfg.id != 1 && self.directory.addr(other(self.cfg.id)).await.ok().flatten().is_some() {
                tokio::time::sleep(tick).await;
                why = self.leader_lost();
                if why.is_none() {
                    continue;
                }
            }
            let (contact_at, _) = *self.last_contact.lock().expect("contact lock");
            last_attempt = Some(Instant::now());
            let why = if gone {
                "process gone or handed over".to_string()
            } else {
                format!("{why:?}")
            };
            tracing::info!(leader = ?m.current_leader, contact_ms = contact_at.elapsed().as_millis() as u64, why, "leader lost; adopting W's log before electing");
            match self.failover().await {
                Ok(()) => corrupt_logged = None,
                // A corrupt znode in W stops adoption (nothing of it is
                // applied) until someone repairs it: keep retrying, and say
                // so at ERROR with the path, but at most every
                // CORRUPT_LOG_EVERY rather than on every attempt.
                Err(StartError::Witness(e @ WitnessError::Corrupt { .. })) => match &mut corrupt_logged {
                    Some((at, skipped)) if at.elapsed() < CORRUPT_LOG_EVERY => *skipped += 1,
                    _ => {
                        let skipped = corrupt_logged.map_or(0, |(_, n)| n);
                        tracing::error!(error = %e, attempts_not_logged = skipped, "cannot adopt W's log: corrupt data in ZooKeeper, never applied; will retry");
                        corrupt_logged = Some((Instant::now(), 0));
                    }
                },
                Err(e) => tracing::warn!(error = %e, "failover attempt failed; will retry"),
            }
        }
    }

    /// Whether to fail over, and why (`failover::rules::leader_lost`).
    fn leader_lost(&self) -> Option<rules::Lost> {
        let lease = self.lease.lock().expect("lease lock").clone();
        let (contact_at, _) = *self.last_contact.lock().expect("contact lock");
        let observed = rules::Observed {
            me: self.cfg.id,
            following: self.raft().and_then(|r| r.metrics().borrow().current_leader),
            contact_at,
            lease: &lease,
        };
        rules::leader_lost(&observed, self.timings(), Instant::now())
    }

    fn timings(&self) -> rules::Timings {
        rules::Timings {
            election_timeout: Duration::from_millis(self.cfg.election_timeout_ms),
            heartbeat: Duration::from_millis(self.cfg.heartbeat_interval_ms),
            touch: self.touch_interval(),
        }
    }

    /// Restarts the clocks that judge the leader (contact, lease renewal,
    /// absence) at now; see the pause check in `failover_loop`.
    fn forgive_pause(&self) {
        let now = Instant::now();
        self.last_contact.lock().expect("contact lock").0 = now;
        self.lease.lock().expect("lease lock").forgive_pause(now);
    }

    /// The lease as last seen (for `/health/ready`).
    pub fn lease(&self) -> LeaderLease {
        self.lease.lock().expect("lease lock").clone()
    }

    pub fn touch_interval(&self) -> Duration {
        Duration::from_millis((self.cfg.heartbeat_interval_ms / 2).max(20))
    }

    /// Fast path for a dead leader: a connection refused at its address means
    /// no process listens there (kill -9, crash, or SIGTERM closing its
    /// listener), and a name that no longer resolves means its container or
    /// host is gone, so there is no point in waiting out the election timeout.
    /// Electing while the leader is in fact alive would still be safe (W
    /// fences it); this only decides how soon we try.
    async fn leader_process_gone(&self, leader: Option<NodeId>) -> bool {
        let Some(leader) = leader.filter(|l| *l != self.cfg.id) else {
            return false;
        };
        // A lease renewed in the last two touches says the process lives
        // (a refusal then comes from the link, e.g. a firewall's REJECT).
        // Electing when it in fact lives is still safe (W fences it).
        let renewed = self
            .lease
            .lock()
            .expect("lease lock")
            .renewed_within(2 * self.touch_interval(), Instant::now());
        if renewed {
            return false;
        }
        let Ok(Some(addr)) = self.directory.addr(leader).await else {
            return false;
        };
        let probe_ms = self.cfg.heartbeat_interval_ms.max(20);
        let probe = Duration::from_millis(probe_ms);
        // A name that no longer resolves is gone as surely as a refused
        // port: a container engine drops a dead container's name at once
        // (docker kill under compose), so the connect below would fail on
        // the lookup, not with a refusal, and we would wait out the lease.
        let resolved = match tokio::time::timeout(probe, tokio::net::lookup_host(&addr)).await {
            Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
            Ok(Err(e)) => {
                self.directory.invalidate(leader);
                tracing::info!(leader, addr, error = %e, "leader's address no longer resolves: its host or container is gone");
                return true;
            }
            Err(_) => return false, // a slow resolver says nothing
        };
        match tokio::time::timeout(probe, tokio::net::TcpStream::connect(&resolved[..])).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                self.directory.invalidate(leader);
                tracing::info!(
                    leader,
                    addr,
                    "leader's address refuses connections: its process is gone"
                );
                true
            }
            _ => false,
        }
    }

    /// Follows the `leader` znode with one-shot watches (re-armed after every
    /// event and every new ZooKeeper session) and re-reads it every touch
    /// interval, keeping `lease` current. Each read follows a `sync`, so it
    /// goes through the ZooKeeper leader: a read that works proves ZooKeeper
    /// takes writes, which a ZooKeeper follower serving reads alone does not.
    async fn leader_znode_watch(self: Arc<Self>) {
        let path = self.witness.paths().leader();
        let mut generation = self.zk.generation();
        while !self.is_stopping() {
            let p = path.clone();
            let look_timeout = Duration::from_millis(self.cfg.election_timeout_ms / 2);
            let watched = self
                .zk
                .run_within(&format!("watch {path}"), look_timeout, |c| async move {
                    c.sync(&p).await?;
                    match c.get_and_watch_data(&p).await {
                        Ok((data, stat, w)) => Ok((Some((data, stat)), w)),
                        Err(zookeeper_client::Error::NoNode) => {
                            let (_, w) = c.check_and_watch_stat(&p).await?;
                            Ok((None, w))
                        }
                        Err(e) => Err(e),
                    }
                })
                .await;
            let watcher = match watched {
                Ok((znode, w)) => {
                    let parsed = znode.and_then(|(d, stat)| {
                        serde_json::from_slice::<LeaderInfo>(&d)
                            .ok()
                            .map(|h| (h, stat.czxid, stat.version))
                    });
                    let term = self.raft().map(|r| r.metrics().borrow().current_term).unwrap_or(0);
                    let stale = parsed.as_ref().is_none_or(|(h, _, _)| h.term < term);
                    self.lease.lock().expect("lease lock").observe(parsed, Instant::now());
                    if stale {
                        self.wake.notify_one();
                    }
                    Some(w)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch the leader znode");
                    self.lease.lock().expect("lease lock").observe_failed();
                    None
                }
            };
            let refresh = tokio::time::sleep(self.touch_interval());
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
    }

    /// While leader: hold the `leader` znode and ship new snapshots to W.
    async fn leader_duties_loop(self: Arc<Self>) {
        let path = self.witness.paths().leader();
        let mut held_term: Option<u64> = None;
        let shipped: Arc<Mutex<Option<crate::types::LogId>>> = Arc::new(Mutex::new(None));
        let mut shipping: Option<tokio::task::JoinHandle<()>> = None;
        let (mut seen_leader, mut seen_snapshot) = (None, None);
        let mut last_wal_snapshot: Option<Instant> = None;
        let mut last_claim: Option<Instant> = None;
        let mut withholding = false;
        // The claim itself is a fresh lease; the first proof comes within a
        // touch interval, so a missing one right after it is not a stall.
        let mut claimed_at: Option<Instant> = None;
        let grace = Duration::from_millis(self.cfg.election_timeout_ms / 2);
        while !self.is_stopping() {
            let Some(raft) = self.raft() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let mut metrics = raft.metrics();
            // Its own ticker: metrics change with every commit under load,
            // and renewing only when they are quiet would let the lease lapse.
            let mut lease_ticker = tokio::time::interval(self.touch_interval());
            lease_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let m = metrics.borrow_and_update().clone();
                if m.current_leader != seen_leader {
                    crate::metrics::METRICS.leader_changes.inc();
                    seen_leader = m.current_leader;
                    let (term, leader) = (m.current_term, m.current_leader);
                    self.events.fire(crate::events::Event::LeaderChanged { term, leader });
                }
                if m.snapshot > seen_snapshot {
                    crate::metrics::METRICS.snapshots.with_label_values(&["built"]).inc();
                    seen_snapshot = m.snapshot;
                    self.events.snapshot_advanced(m.snapshot.map(|l| l.index));
                }
                if m.state == ServerState::Leader {
                    // Metrics change with every commit: claim at most once per
                    // touch interval, not on every change.
                    if held_term != Some(m.current_term)
                        && last_claim.is_none_or(|t: Instant| t.elapsed() >= self.touch_interval())
                    {
                        last_claim = Some(Instant::now());
                        let info = LeaderInfo {
                            term: m.current_term,
                            id: self.cfg.id,
                            addr: self.advertise_addr(),
                        };
                        match self
                            .zk
                            .register_ephemeral(
                                &path,
                                serde_json::to_vec(&info).expect("json"),
                                Claim::ReplaceLowerTerm(m.current_term),
                            )
                            .await
                        {
                            Ok(()) => {
                                tracing::info!(term = m.current_term, "leading; leader znode held");
                                held_term = Some(m.current_term);
                                claimed_at = Some(Instant::now());
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot claim the leader znode yet"),
                        }
                    }
                    // Shipped by its own task: an upload and the WAL compaction
                    // behind it can take seconds, and the lease below must not
                    // wait for them (a lapsed lease makes the follower take over).
                    let idle = shipping
                        .as_ref()
                        .is_none_or(|h: &tokio::task::JoinHandle<()>| h.is_finished());
                    if idle && m.snapshot.is_some() && m.snapshot > *shipped.lock().expect("shipped lock") {
                        let (node, shipped, vote) = (Arc::clone(&self), Arc::clone(&shipped), m.vote);
                        shipping = Some(tokio::spawn(async move {
                            match node.ship_snapshot(vote).await {
                                Ok(last) => {
                                    let mut s = shipped.lock().expect("shipped lock");
                                    *s = std::cmp::max(*s, last);
                                }
                                Err(e) => tracing::warn!(error = %e, "cannot ship the snapshot to ZooKeeper yet"),
                            }
                        }));
                    }
                } else if held_term.take().is_some() {
                    if let Err(e) = self.zk.unregister_ephemeral(&path).await {
                        tracing::warn!(error = %e, "cannot drop the leader znode");
                    }
                }
                // The lease: while leading, rewrite the znode every touch
                // interval so the follower sees this leader alive in ZooKeeper.
                tokio::select! {
                    r = metrics.changed() => if r.is_err() { break },
                    _ = lease_ticker.tick() => {
                        if m.state == ServerState::Leader
                            && self.witness.wal_bytes_since_snapshot() > self.cfg.snapshot_every_wal_bytes
                            && last_wal_snapshot.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(5))
                        {
                            last_wal_snapshot = Some(Instant::now());
                            tracing::info!(wal_bytes = self.witness.wal_bytes_since_snapshot(), "WAL in ZooKeeper is large: snapshotting");
                            let _ = raft.trigger().snapshot().await;
                        }
                        let leading = held_term == Some(m.current_term) && m.state == ServerState::Leader;
                        if leading && !self.commit_proven() {
                            // Let the lease lapse: this leader holds its
                            // session but cannot show that it commits.
                            let new_leadership = claimed_at.is_some_and(|t| t.elapsed() < grace);
                            if !new_leadership {
                                crate::metrics::METRICS.lease_withheld.inc();
                            }
                            if !withholding && !new_leadership {
                                withholding = true;
                                tracing::warn!("cannot prove this leader commits (disk, Raft core or apply stalled): not renewing the leader lease, so the other node can take over");
                            }
                        } else if leading {
                            if withholding {
                                withholding = false;
                                tracing::info!("commit path works again: renewing the leader lease");
                            }
                            if let Err(e) = self.renew_lease(&path, m.current_term).await {
                                tracing::debug!(error = %e, "cannot renew the leader lease");
                                if e.is_zk(zookeeper_client::Error::NoNode) {
                                    held_term = None; // gone with an old session: claim it again
                                }
                            }
                        }
                    }
                }
                if self.is_stopping() {
                    return;
                }
            }
        }
    }

    /// A Raft core that stopped by itself (a storage error such as a failed
    /// write or descriptor exhaustion, a panic) never comes back, and a node
    /// left serving without one answers 504 to every write while looking
    /// alive. So the node stops instead: `/health/live` turns 503 at once,
    /// the process exits non-zero with the reason (a supervisor restarts
    /// it, and a restart re-reads the disk and adopts W), and the other
    /// node takes over meanwhile. `Fatal::Stopped` is ours (failover
    /// restarts, shutdown) and ignored.
    async fn core_watch_loop(self: Arc<Self>) {
        while !self.is_stopping() {
            let Some(raft) = self.raft() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let mut metrics = raft.metrics();
            loop {
                let state = metrics.borrow_and_update().running_state.clone();
                match state {
                    Err(openraft::error::Fatal::Stopped) => break,
                    Err(fatal) => {
                        let why = format!("the Raft core stopped: {fatal}");
                        tracing::error!("{why}; this node stops serving and exits so that it can be restarted");
                        let _ = self.fatal.set(why);
                        self.request_stop();
                        return;
                    }
                    Ok(()) => {}
                }
                if metrics.changed().await.is_err() {
                    break;
                }
            }
            // This core was stopped or replaced: watch the next one.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Why the Raft core stopped by itself, if it did (see `core_watch_loop`).
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.get().map(String::as_str)
    }

    /// True when the commit path was proven to work within half an election
    /// timeout. The follower deposes a leader whose lease went unrenewed for
    /// an election timeout, so a leader that stalls stops renewing within
    /// half of one and is replaced within about 1.5.
    fn commit_proven(&self) -> bool {
        let within = Duration::from_millis(self.cfg.election_timeout_ms / 2);
        self.commit_proof
            .lock()
            .expect("proof lock")
            .is_some_and(|t| t.elapsed() < within)
    }

    /// Gray failure (issue: a leader keeps its ZooKeeper session but cannot
    /// commit: local disk frozen, Raft core wedged or dead, apply stuck).
    /// The lease must say "this leader commits", not only "this process
    /// reaches ZooKeeper". Every touch interval, while leading, this proves
    /// it: entries were applied since the last look (under load), or else,
    /// with no entry left waiting since the last look, a leadership check
    /// succeeds in time (`ensure_linearizable`: a checked heartbeat to W
    /// through the Raft core, answered once everything committed is
    /// applied). Entries that wait a whole look with nothing applied mean
    /// nothing commits (W refuses the append, the local disk is frozen), and
    /// a heartbeat W still accepts must not hide that. Either proof is dated
    /// at the start of the look, so a proof never outlives what it observed.
    async fn commit_probe_loop(self: Arc<Self>) {
        let probe_timeout = Duration::from_millis((self.cfg.election_timeout_ms / 2).max(1));
        let mut seen_applied: Option<Option<crate::types::LogId>> = None;
        let mut seen_waiting = false;
        while !self.is_stopping() {
            tokio::time::sleep(self.touch_interval()).await;
            let Some(raft) = self.raft() else { continue };
            let started = Instant::now();
            let m = raft.metrics().borrow().clone();
            if m.state != ServerState::Leader {
                *self.commit_proof.lock().expect("proof lock") = None;
                seen_applied = None;
                seen_waiting = false;
                continue;
            }
            let progressed = seen_applied.is_some_and(|seen| m.last_applied > seen);
            seen_applied = Some(m.last_applied);
            let waiting = m.last_log_index > m.last_applied.map(|l| l.index);
            let stuck = waiting && seen_waiting && !progressed;
            seen_waiting = waiting;
            let proven = progressed
                || (!stuck
                    && matches!(
                        tokio::time::timeout(probe_timeout, raft.ensure_linearizable()).await,
                        Ok(Ok(_))
                    ));
            if proven {
                let mut proof = self.commit_proof.lock().expect("proof lock");
                *proof = std::cmp::max(*proof, Some(started));
            }
        }
    }

    /// Rewrites the `leader` znode (same content, new version): the lease.
    /// Only while this session owns it, so a deposed leader cannot renew a
    /// successor's lease.
    async fn renew_lease(&self, path: &str, term: u64) -> Result<(), ZkError> {
        let info = LeaderInfo {
            term,
            id: self.cfg.id,
            addr: self.advertise_addr(),
        };
        let data = serde_json::to_vec(&info).expect("json");
        let (_, stat) = self
            .zk
            .run(&format!("get {path}"), |c| async move { c.get_data(path).await })
            .await?;
        if Some(stat.ephemeral_owner) != self.zk.session_id() {
            return Err(ZkError::Call {
                what: format!("renew {path}"),
                source: zookeeper_client::Error::NoNode,
            });
        }
        self.zk
            .run(&format!("renew {path}"), |c| async move {
                c.set_data(path, &data, Some(stat.version)).await.map(|_| ())
            })
            .await
    }

    /// Stores this node's newest snapshot as W's (W drops the WAL it
    /// covers). Returns the snapshot's last log id.
    async fn ship_snapshot(&self, vote: Vote) -> Result<Option<crate::types::LogId>, StartError> {
        let Some((meta, data)) = self.sm.current_snapshot_bytes().await? else {
            return Ok(None);
        };
        let last = meta.last_log_id;
        let bytes = data.len() as u64;
        match self.witness.install_snapshot(vote, meta, data).await? {
            crate::witness::SnapshotUpload::Stored => {}
            // W holds this snapshot or a later one: nothing was uploaded.
            crate::witness::SnapshotUpload::AlreadyCovered => return Ok(last),
            // Not an upload: an error, so neither the metric, the event
            // nor `POST /admin/snapshot` claims one.
            crate::witness::SnapshotUpload::Refused(higher) => {
                return Err(StartError::Witness(WitnessError::SnapshotRefused(higher)))
            }
        }
        crate::metrics::METRICS.snapshots.with_label_values(&["uploaded"]).inc();
        crate::metrics::METRICS
            .snapshot_bytes
            .with_label_values(&["uploaded"])
            .inc_by(bytes);
        self.events.snapshot_uploaded(last.map(|l| l.index), bytes);
        Ok(last)
    }

    /// `POST /admin/snapshot`: build a snapshot now and, on the leader,
    /// store it in ZooKeeper before answering. Returns (its last index,
    /// whether it went to ZooKeeper).
    pub async fn snapshot_now(&self) -> Result<(Option<u64>, bool), StartError> {
        let raft = self.raft().ok_or(StartError::RaftRestarting)?;
        let before = raft.metrics().borrow().snapshot;
        let applied = raft.metrics().borrow().last_applied;
        raft.trigger().snapshot().await?;
        if applied > before {
            let wait = raft.wait(Some(Duration::from_millis(self.cfg.write_timeout_ms)));
            wait.metrics(|m| m.snapshot > before, "snapshot built")
                .await
                .map_err(|source| StartError::Wait {
                    what: "a snapshot",
                    source,
                })?;
        }
        let m = raft.metrics().borrow().clone();
        let uploaded = if m.state == ServerState::Leader {
            self.ship_snapshot(m.vote).await?;
            true
        } else {
            false
        };
        Ok((m.snapshot.map(|l| l.index), uploaded))
    }

    /// Asks the process to stop as on SIGTERM (`POST /admin/leave`).
    pub fn request_stop(&self) {
        self.stop_requested.notify_one();
    }

    /// Resolves when `request_stop` was called.
    pub async fn stop_requested(&self) {
        self.stop_requested.notified().await
    }

    /// The leader is handing over (`POST /raft/takeover` from it): adopt and
    /// elect now rather than after detecting its absence.
    pub fn take_over_now(&self) {
        self.takeover.store(true, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// SIGTERM or `POST /admin/leave`. A leader hands over: it stops taking
    /// writes (new ones get 503), lets those in flight finish (bounded by the
    /// write timeout, each still answered 200/504 as it resolves), stops
    /// Raft, closes its ZooKeeper session so the `leader` and `members`
    /// znodes vanish at once, and tells the other node to take over, which
    /// adopts W's log and elects itself without waiting for a timeout.
    pub async fn shutdown(&self) {
        let was_leader = self
            .raft()
            .is_some_and(|r| r.metrics().borrow().state == ServerState::Leader);
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        if was_leader {
            let drained = self
                .proposer()
                .drain(Duration::from_millis(self.cfg.write_timeout_ms))
                .await;
            tracing::info!(drained, "leader stepping down: in-flight writes settled");
        }
        let raft = self.raft.write().expect("raft lock").take();
        if let Some(raft) = raft {
            let _ = raft.shutdown().await;
        }
        self.zk.close().await;
        if was_leader {
            self.ask_peer_to_take_over().await;
        }
        if let Err(e) = self.log.flush_committed().await {
            tracing::warn!(error = %e, "could not save the committed id on exit");
        }
        // The loops hold the node (and so its log's lock) until they next
        // look at `stopping`; end them now, so that once this returns the
        // data dir can be opened again (an embedder restarting in-process).
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        // And whatever else still holds the node (an HTTP connection the
        // embedder's server keeps open, a clone in its own code) must not
        // keep the data dir: the log closes now, its lock released.
        if let Err(e) = self.log.close().await {
            tracing::warn!(error = %e, "closing the log store");
        }
    }
}

impl Node {
    async fn ask_peer_to_take_over(&self) {
        // ZooKeeper is closed by now; use the address last looked up.
        let Some(addr) = self.directory.cached_addr(other(self.cfg.id)) else {
            return;
        };
        let mut req = self.http.post(format!("{}://{addr}/raft/takeover", self.scheme));
        if let Some(t) = self.auth.peer_token() {
            req = req.header(crate::auth::PEER_TOKEN_HEADER, t);
        }
        let res = req.timeout(Duration::from_millis(500)).send().await;
        match res {
            Ok(r) if r.status().is_success() => tracing::info!(addr, "asked the other node to take over"),
            Ok(r) => tracing::warn!(addr, status = %r.status(), "the other node refused to take over"),
            Err(e) => tracing::warn!(addr, error = %e, "could not ask the other node to take over"),
        }
    }
}

/// W's snapshot ending at `last` is needed by a node that purged up to
/// `purged` and holds `held` at `last.index`: unless the node's own snapshot
/// covers that index, or it holds that very entry (then its log continues
/// W's). By index and identity, never by log-id order (`Node::needs_snapshot`).
fn snapshot_needed(
    last: crate::types::LogId,
    purged: Option<crate::types::LogId>,
    held: Option<crate::types::LogId>,
) -> bool {
    purged.is_none_or(|p| p.index < last.index) && held != Some(last)
}

pub fn other(id: NodeId) -> NodeId {
    if id == 1 {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::snapshot_needed;
    use crate::types::LogId;

    fn lid(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    /// The model's liveness finding: node 2 won a duel in term 1, its blank
    /// (1, n2, 1) never reached W, and W's snapshot ends at (1, n1, 2). In
    /// log-id order (1, n2, 1) > (1, n1, 2), so the old rule ("W's snapshot
    /// is newer than my last entry") skipped the snapshot and adoption then
    /// refused to leave a hole: node 2 could never start.
    #[test]
    fn a_higher_ranked_stray_entry_at_a_lower_index_does_not_hide_ws_snapshot() {
        let (snap, stray) = (lid(1, 1, 2), lid(1, 2, 1));
        assert!(
            stray > snap,
            "the premise: openraft orders the stray entry above the snapshot"
        );
        assert!(snapshot_needed(snap, None, None));
    }

    #[test]
    fn a_snapshot_the_node_covers_or_continues_is_not_needed() {
        let snap = lid(2, 1, 5);
        assert!(
            !snapshot_needed(snap, Some(lid(2, 1, 5)), None),
            "own snapshot at the same point"
        );
        assert!(!snapshot_needed(snap, Some(lid(2, 1, 9)), None), "own snapshot past it");
        assert!(
            !snapshot_needed(snap, Some(lid(1, 1, 2)), Some(snap)),
            "holds the very entry"
        );
        assert!(
            snapshot_needed(snap, Some(lid(1, 1, 2)), Some(lid(1, 2, 5))),
            "another entry there"
        );
        assert!(snapshot_needed(snap, Some(lid(1, 1, 2)), None), "a shorter log");
    }
}
