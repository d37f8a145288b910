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

mod adopt;
mod app;
mod failover;
mod leader;
mod repair;

use crate::config::NodeConfig;
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

impl crate::proposer::Consensus for Node {
    fn raft(&self) -> Option<Raft> {
        Node::raft(self)
    }

    fn zk_connected(&self) -> bool {
        self.zk.is_connected()
    }
}

/// What became of an append the leader sent ([`Node::append_from_leader`]).
pub enum FromLeader {
    /// openraft's answer.
    Answer(Result<openraft::raft::AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>>),
    /// Raft is being rebuilt (adoption): the leader retries.
    Restarting,
    /// Refused before openraft saw it, and why (a reused log id; the local
    /// log is being repaired, the leader retries).
    Refused(String),
}

/// Corruption found in W during failover is logged at most this often.
const CORRUPT_LOG_EVERY: Duration = Duration::from_secs(5);

use crate::failover::rules;
use crate::failover::rules::leader_term;
pub use crate::failover::rules::LeaderInfo;
pub use crate::failover::rules::LeaderLease;

/// Why a node did not start, or a Raft operation during its run failed;
/// [`StartError::is_retryable`] tells a passing cause from one that needs
/// an operator.
#[derive(thiserror::Error, Debug)]
pub enum StartError {
    /// The local log, vote or snapshot could not be read or written (I/O,
    /// corruption, another node's data directory).
    #[error(transparent)]
    Storage(#[from] storage::StoreError),
    /// ZooKeeper (W, the witness) could not be reached, or refused, or holds
    /// something this node cannot use.
    #[error(transparent)]
    Witness(#[from] crate::witness::WitnessError),
    /// openraft's core stopped or could not start.
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    /// The local log refused a write openraft asked for.
    #[error("saving {what}: {source}")]
    SaveVote {
        /// What was being saved.
        what: &'static str,
        /// openraft's storage error.
        source: openraft::StorageError<NodeId>,
    },
    /// Raft is being rebuilt (adoption) or stopped: retry.
    #[error("raft is restarting")]
    RaftRestarting,
    /// A wait on Raft's metrics timed out or was cancelled.
    #[error("waiting for {what}: {source}")]
    Wait {
        /// What was being waited for.
        what: &'static str,
        /// openraft's wait error.
        source: openraft::metrics::WaitError,
    },
    /// The configuration cannot work (the message names the setting).
    #[error("{0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address (`listen`).
        addr: String,
        /// Why: in use, not permitted, not local.
        source: std::io::Error,
    },
}

/// A snapshot file arriving from the leader in pieces.
struct IncomingSnapshot {
    snapshot_id: String,
    total_bytes: u64,
    next_offset_bytes: u64,
    file: tokio::fs::File,
}

/// One walship node: its storage, ZooKeeper session, Raft and state machine.
/// Shared as `Arc<Node>`; [`crate::start`] starts and serves one (see
/// [`crate::RunningNode::node`]). Its methods are what the HTTP API calls.
pub struct Node {
    cfg: NodeConfig,
    zk: Arc<ZkSession>,
    witness: Arc<Witness>,
    log: LogStore,
    sm: StateMachine,
    /// How this node reaches the other one (also inside `network`).
    peers: crate::network::Peers,
    /// The listener's TLS configuration, in TLS mode.
    server_tls: Option<Arc<rustls::ServerConfig>>,
    auth: crate::auth::Auth,
    raft: RwLock<Option<Raft>>,
    /// This node's metrics (`GET /metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    network: NetworkFactory,
    raft_config: Arc<openraft::Config>,
    /// When this node last heard from a leader, or granted a candidate its
    /// vote (Raft §5.2: either restarts a follower's election timer).
    last_contact: Mutex<Instant>,
    /// What this node last saw of the `leader` znode (see `LeaderLease`).
    lease: Mutex<LeaderLease>,
    /// While leader: when the commit path was last proven to work (see
    /// `commit_probe_loop`); the lease is renewed only on a recent proof.
    commit_proof: Mutex<Option<Instant>>,
    /// Wakes the failover loop early (the `leader` znode changed).
    wake: Notify,
    /// One adoption/election at a time.
    failover_lock: tokio::sync::Mutex<()>,
    /// The snapshot the leader is sending, piece by piece.
    snapshot_in: tokio::sync::Mutex<Option<IncomingSnapshot>>,
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
    events: crate::events::Events,
}

/// Sends this node's own entries on to W as openraft appends them locally
/// (`Witness::feed`, the pipeline): W's round trip starts before openraft's
/// replication asks for it. Entries another leader made are a follower's
/// and not W's business here. The task ends with the log store.
fn feed_witness(log: &storage::LogStore, witness: &Arc<Witness>, id: NodeId) {
    let (to_feeder, mut feeds) = tokio::sync::mpsc::unbounded_channel::<Vec<walship_types::Entry>>();
    log.on_append(Box::new(move |entries| {
        if entries.first().is_some_and(|e| e.log_id.leader_id.node_id == id) {
            let _ = to_feeder.send(entries.to_vec());
        }
    }));
    let witness = Arc::clone(witness);
    tokio::spawn(async move {
        while let Some(entries) = feeds.recv().await {
            witness.feed(entries).await;
        }
    });
}

impl Node {
    /// The `host:port` the other node and clients reach this node by
    /// (`advertise`, else `listen`).
    pub fn advertise_addr(&self) -> String {
        self.cfg.advertise.clone().unwrap_or_else(|| self.cfg.listen.clone())
    }

    /// The running Raft, or None while it is being rebuilt by adoption.
    pub fn raft(&self) -> Option<Raft> {
        self.raft.read().expect("raft lock").clone()
    }

    /// The proposer every write and linearizable read of this node goes through.
    pub fn proposer(&self) -> &crate::proposer::Proposer {
        self.proposer.get().expect("proposer is set in Node::start")
    }

    /// Restarts the clock that judges the leader silent (`failover::rules`).
    fn note_contact(&self) {
        *self.last_contact.lock().expect("contact lock") = Instant::now();
    }

    /// A receiver of this node's lifecycle events from now on (see
    /// [`crate::events::Event`]). Events of start-up itself were fired before this node
    /// was returned; see [`Node::start_with`] to receive them too.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::events::Event> {
        self.events.subscribe()
    }

    /// This node's configuration.
    pub fn cfg(&self) -> &NodeConfig {
        &self.cfg
    }

    /// Who may call this node (API token, peer token).
    pub fn auth(&self) -> &crate::auth::Auth {
        &self.auth
    }

    /// The listener's TLS configuration, in TLS mode (peers then must
    /// present their certificate).
    pub fn server_tls(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.server_tls.as_ref()
    }

    /// How this node reaches the other one (address, scheme, HTTP client).
    pub fn peers(&self) -> &crate::network::Peers {
        &self.peers
    }

    /// The local log (a handle; for inspection and tests).
    pub fn log(&self) -> &LogStore {
        &self.log
    }

    /// The local state machine (a handle: reads of the applied state).
    pub fn state_machine(&self) -> &StateMachine {
        &self.sm
    }

    /// Whether this node's ZooKeeper session is connected now.
    pub fn zk_connected(&self) -> bool {
        self.zk.is_connected()
    }

    /// W's last log id as this node last saw it (no ZooKeeper read).
    pub fn witness_last_log_id(&self) -> Option<crate::types::LogId> {
        self.witness.cached_last_log_id()
    }

    /// An append from the leader. One check comes before openraft's: an
    /// entry that has a local entry's log id but other bytes (a reused log
    /// id, which openraft's log matching would keep) is refused and the
    /// local log repaired (`node/repair.rs`). The leader then sees an error
    /// and retries (not a Conflict, which would make it search backwards);
    /// W's entry wins, none if W does not hold the index. Past the local
    /// log's end, the usual case, the check is one empty range lookup.
    pub async fn append_from_leader(
        self: &Arc<Self>,
        req: openraft::raft::AppendEntriesRequest<crate::types::TypeConfig>,
    ) -> FromLeader {
        self.peers.note_heard();
        let Some(raft) = self.raft() else {
            return FromLeader::Restarting;
        };
        // Contact is the leader reaching us, whatever our disk then takes:
        // an append under a vote at least ours is the current leader's (an
        // older leader's is refused below and counts for nothing). Counted
        // on receipt, not after openraft's flush, so a slow fsync right
        // after an election does not leave the new leader looking silent.
        let ours = raft.metrics().borrow().vote;
        if crate::witness::rules::vote_reaches(&req.vote, &ours) {
            self.note_contact();
        }
        let reused = match self.log.first_reused(&req.entries) {
            Ok(reused) => reused,
            // Nothing is taken that was not compared; the leader retries.
            Err(e) => return FromLeader::Refused(format!("cannot read this node's log to compare the entries: {e}")),
        };
        if let Some(reused) = reused {
            // The leader is alive and reaching us: no failover over this.
            self.note_contact();
            self.report_reused_in_catch_up(reused, req.vote);
            return FromLeader::Refused(format!(
                "log id reused: this node holds another entry under {} (crc32 {:08x}, the leader's {:08x}); repairing its log, retry",
                reused.log_id, reused.local_digest, reused.other_digest
            ));
        }
        // No second note after openraft's answer: it accepts (or answers
        // Conflict to) only a vote at least its own, which was noted above.
        FromLeader::Answer(raft.append_entries(req).await)
    }

    /// A vote request from the other node; `None` while Raft is being rebuilt.
    /// A vote granted restarts this node's election timer, as in Raft
    /// (§5.2): the candidate is about to lead, and its `leader` znode comes
    /// a moment after it does; judging the leader lost in between cost an
    /// election at every cold start on a loaded machine.
    pub async fn vote_for(
        &self,
        req: openraft::raft::VoteRequest<NodeId>,
    ) -> Option<Result<openraft::raft::VoteResponse<NodeId>, openraft::error::RaftError<NodeId>>> {
        self.peers.note_heard();
        let res = self.raft()?.vote(req).await;
        if res.as_ref().is_ok_and(|r| r.vote_granted) {
            self.note_contact();
        }
        Some(res)
    }

    /// One piece of a snapshot from the leader (`network::SnapshotChunk`),
    /// written to a staging file; the last one has the file checked and
    /// installed. `Ok(None)` while Raft is being rebuilt; `Err` (a piece out
    /// of order, a bad file, a local write failure) makes the leader start
    /// over.
    // openraft's answer (its Fatal error included) goes back as it is.
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    pub async fn snapshot_chunk_from_leader(
        &self,
        chunk: crate::network::SnapshotChunk,
    ) -> Result<Option<Result<Option<openraft::raft::SnapshotResponse<NodeId>>, openraft::error::Fatal<NodeId>>>, String>
    {
        use tokio::io::AsyncWriteExt;
        self.peers.note_heard();
        if self.raft().is_none() {
            return Ok(None);
        }
        // A long transfer is the leader at work: no failover over it.
        self.note_contact();
        let mut incoming = self.snapshot_in.lock().await;
        let path = self.sm.staging_path("leader");
        if chunk.offset_bytes == 0 {
            let file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            *incoming = Some(IncomingSnapshot {
                snapshot_id: chunk.meta.snapshot_id.clone(),
                total_bytes: chunk.total_bytes,
                next_offset_bytes: 0,
                file,
            });
        }
        let expected = incoming.as_ref().map(|i| (i.snapshot_id.clone(), i.next_offset_bytes));
        let Some(inc) = incoming.as_mut().filter(|i| {
            i.snapshot_id == chunk.meta.snapshot_id
                && i.total_bytes == chunk.total_bytes
                && i.next_offset_bytes == chunk.offset_bytes
                && chunk.offset_bytes + chunk.data.len() as u64 <= chunk.total_bytes
        }) else {
            return Err(format!(
                "snapshot {} piece at byte {} does not follow what arrived ({expected:?}); send it again from the start",
                chunk.meta.snapshot_id, chunk.offset_bytes
            ));
        };
        let write = inc.file.write_all(&chunk.data).await;
        if let Err(e) = write {
            *incoming = None;
            return Err(format!("cannot write {}: {e}", path.display()));
        }
        inc.next_offset_bytes += chunk.data.len() as u64;
        if inc.next_offset_bytes < inc.total_bytes {
            return Ok(Some(Ok(None)));
        }
        let inc = incoming.take().expect("matched above");
        let total_bytes = inc.total_bytes;
        let synced = inc.file.sync_all().await;
        drop(inc.file);
        // The lock stays held: no new transfer may overwrite the staging
        // file until it is installed (renamed away) or refused.
        let checked = match synced {
            Ok(()) => self
                .sm
                .check_snapshot_file(&path, &chunk.meta)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot fsync {}: {e}", path.display())),
        };
        if let Err(why) = checked {
            let _ = tokio::fs::remove_file(&path).await;
            tracing::warn!(error = %why, "refused a snapshot from the leader");
            return Err(why);
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let file = crate::types::SnapshotFile { file, path };
        let res = self
            .install_from_leader(chunk.vote, chunk.meta, file, total_bytes)
            .await;
        Ok(res.map(|r| r.map(Some)))
    }

    /// A whole snapshot from the leader, checked and staged; `None` while
    /// Raft is being rebuilt.
    async fn install_from_leader(
        &self,
        vote: Vote,
        meta: crate::types::SnapshotMeta,
        file: crate::types::SnapshotFile,
        bytes: u64,
    ) -> Option<Result<openraft::raft::SnapshotResponse<NodeId>, openraft::error::Fatal<NodeId>>> {
        let raft = self.raft()?;
        let index = meta.last_log_id.map(|l| l.index);
        self.metrics.snapshot_moved("installed", bytes);
        let snapshot = openraft::Snapshot {
            meta,
            snapshot: Box::new(file),
        };
        self.note_contact();
        // Known before installing, so the snapshot metric moving is not taken
        // for a snapshot this node built.
        self.events.snapshot_known(index);
        let installs = self.sm.installs();
        let res = raft.install_full_snapshot(vote, snapshot).await;
        if res.is_ok() && self.sm.installs() > installs {
            self.events
                .snapshot_installed(index, bytes, crate::events::SnapshotSource::Leader);
        }
        Some(res)
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// What `/metrics` shows of this node's state, read now.
    pub fn at_scrape(&self) -> crate::metrics::AtScrape {
        crate::metrics::AtScrape {
            raft: self.raft().map(|r| r.metrics().borrow().clone()),
            committed_index: self.log.committed().map(|l| l.index),
            witness_last_index: self.witness.cached_last_log_id().map(|l| l.index),
            client_sessions: self.state_machine().sessions(),
            log_cache_bytes: self.log.cached_bytes(),
        }
    }

    /// Whether the node is shutting down (its background loops end on it).
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
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let meta = storage::open_or_init_meta(&cfg.data_dir, &cfg.cluster, cfg.id)?;
        let (log, sm) = storage::open_local(
            &cfg.data_dir,
            cfg.log_sync,
            app,
            cfg.rebuild_from_witness,
            &metrics.storage,
        )
        .await?;
        log.set_cache_max_bytes(cfg.log_cache_max_bytes);
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
            Arc::clone(&metrics) as Arc<dyn walship_zk::SessionMetrics>,
        )
        .await
        .map_err(WitnessError::from)?;
        let witness = Arc::new(
            Witness::new(Arc::clone(&zk), &cfg.cluster)
                .counting_log_id_conflicts(metrics.log_id_conflicts.with_label_values(&["witness"]))
                .with_metrics(metrics.witness.clone())
                .pipelining(cfg.witness_pipeline),
        );
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
        let peers = crate::network::Peers::new(
            scheme,
            auth.peer_token().map(str::to_string),
            directory,
            http,
            &metrics.peer_appends,
        );
        let network = NetworkFactory {
            peers: peers.clone(),
            witness: Arc::clone(&witness),
            piggyback: Duration::from_millis(cfg.heartbeat_interval_ms / 2),
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

        if cfg.witness_pipeline {
            feed_witness(&log, &witness, cfg.id);
        }
        let node = Arc::new(Node {
            cfg,
            zk,
            witness,
            log,
            sm,
            peers,
            server_tls: tls.map(|t| t.server),
            auth,
            raft: RwLock::new(None),
            metrics,
            network,
            raft_config,
            last_contact: Mutex::new(Instant::now()),
            lease: Mutex::new(LeaderLease::default()),
            commit_proof: Mutex::new(None),
            wake: Notify::new(),
            failover_lock: tokio::sync::Mutex::new(()),
            snapshot_in: tokio::sync::Mutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
            proposer: std::sync::OnceLock::new(),
            stop_requested: Notify::new(),
            fatal: std::sync::OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
            takeover: std::sync::atomic::AtomicBool::new(false),
            events,
        });
        let limits = crate::proposer::Limits {
            max_inflight_batches: node.cfg.max_inflight_batches,
            max_batch_bytes: node.cfg.max_batch_bytes,
            write_timeout_ms: node.cfg.write_timeout_ms,
            max_group_wait_us: node.cfg.max_group_wait_us,
        };
        let _ = node
            .proposer
            .set(crate::proposer::Proposer::start(Arc::downgrade(&node), limits));

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
        self.note_contact();
        let handles = [
            tokio::spawn(Arc::clone(self).failover_loop()),
            tokio::spawn(Arc::clone(self).leader_znode_watch()),
            tokio::spawn(Arc::clone(self).leader_duties_loop()),
            tokio::spawn(Arc::clone(self).commit_probe_loop()),
            tokio::spawn(Arc::clone(self).core_watch_loop()),
            tokio::spawn({
                let peer = other(self.cfg.id);
                let node = Arc::clone(self);
                crate::events::watch_peer(
                    Arc::clone(&self.zk),
                    peer,
                    self.witness.paths().member(peer),
                    self.events.clone(),
                    {
                        let node = Arc::clone(&node);
                        move || node.is_stopping()
                    },
                    move || node.peers.last_heard(),
                )
            }),
        ];
        self.tasks.lock().expect("tasks lock").extend(handles);
        Ok(())
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

/// The id of the other real node: 2 for 1, 1 for 2.
pub fn other(id: NodeId) -> NodeId {
    if id == 1 {
        2
    } else {
        1
    }
}
