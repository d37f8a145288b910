//! The witness, W: ZooKeeper as the third, passive Raft voter.
//!
//! W has no process. Each node reaches it through its own ZooKeeper session,
//! and every change to W is ONE `multi()` that starts with
//! `check(witness, version)` and (when the record changes) ends with
//! `setData(witness, record)`; the WAL and snapshot znodes it touches are
//! created or deleted inside the same multi. If the check fails, W is re-read
//! and the request re-decided. The decisions themselves are the pure
//! functions in [`rules`]; this file only carries them out.
//!
//! Layout under `/walship/<cluster>` (see [`record::Paths`]): `witness`,
//! `wal/<first index>`, `snapshots/<id>/<chunk>`, `members/<id>`, `leader`.

mod evict;
pub mod inspect;
mod pipeline;
pub mod record;
pub mod rules;
pub mod voter;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use walship_zk::ZkError;
use walship_zk::ZkSession;
use zookeeper_client as zk;

use self::record::Paths;
use self::record::SnapshotRef;
use self::record::WitnessRecord;
use self::rules::AppendDecision;
use self::rules::Slot;
use self::rules::SnapshotDecision;
use walship_types::genesis_entry;
use walship_types::Entry;
use walship_types::LogId;
use walship_types::SnapshotMeta;
use walship_types::TypeConfig;
use walship_types::Vote;

/// ZooKeeper refuses a request over `jute.maxbuffer` (1 MiB by default); one
/// multi, with its framing, stays below this.
pub const MAX_MULTI_BYTES: usize = 900 * 1024;
/// The payload of one snapshot chunk znode: under a multi's budget (so
/// under ZooKeeper's 1 MiB jute.maxbuffer with room for the framing).
pub const SNAPSHOT_CHUNK_BYTES: usize = MAX_MULTI_BYTES - 1024;
/// Chunk reads kept in flight while a snapshot streams out of W (a rebirth):
/// enough to hide most of the round trip, and memory stays this many chunks.
const SNAPSHOT_READS_IN_FLIGHT: usize = 4;
/// A WAL deletion op costs well under 100 bytes; this many fit in any multi.
const MAX_DELETES_PER_MULTI: usize = 2000;

#[derive(thiserror::Error, Debug)]
pub enum WitnessError {
    /// The session failed the call or the connect: unreachable, timed out,
    /// refused, or ZooKeeper's own error; its message is the session's.
    #[error(transparent)]
    Zk(#[from] ZkError),
    /// W's record changed under us (another node wrote it): re-read, re-decide.
    #[error("witness record changed concurrently")]
    VersionMismatch,
    #[error("corrupt znode {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{0}")]
    Identity(String),
    /// W holds another entry (other bytes) under `log_id`, which the
    /// request carries too (see [`rules::AppendDecision::LogIdReused`]).
    #[error(
        "log id reused: W holds another entry under the log id {log_id} (W's crc32 {witness_digest:08x}, the request's {request_digest:08x}); W keeps its own"
    )]
    LogIdReused {
        log_id: LogId,
        witness_digest: u32,
        request_digest: u32,
    },
    /// ZooKeeper answered a multi with something its request cannot
    /// produce (a bug in ZooKeeper or its client, never a network fault).
    #[error("ZooKeeper answered {what} with {reply}")]
    UnexpectedReply { what: String, reply: String },
    /// W changed under every one of a bounded number of reads (a busy
    /// leader appending meanwhile): nothing is wrong, read again later.
    #[error("W kept changing while it was being read")]
    Busy,
    /// A local file a snapshot streams from or into failed.
    #[error("cannot {what}: {source}")]
    LocalIo {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// W refused a snapshot: it has promised a higher vote.
    #[error("ZooKeeper refused the snapshot: W holds the vote {0}, which the uploader's does not reach (it no longer leads)")]
    SnapshotRefused(Vote),
    /// A pipelined append did not land (or its outcome is unknown); W is
    /// re-read and the request decided again.
    #[error("{0}")]
    Pipeline(String),
}

impl WitnessError {
    pub fn corrupt(path: &str, reason: impl Into<String>) -> WitnessError {
        WitnessError::Corrupt {
            path: path.to_string(),
            reason: reason.into(),
        }
    }
    /// True when ZooKeeper answered a call with `code`.
    pub fn is_zk(&self, code: zk::Error) -> bool {
        matches!(self, WitnessError::Zk(e) if e.is_zk(code))
    }

    /// True when a write may or may not have happened.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, WitnessError::Zk(e) if e.outcome_unknown())
    }
}

/// What W's view keeps of one entry: its log id and digest
/// ([`record::entry_digest`]).
type EntryId = (LogId, u32);

/// One multi of an append: its ops, the segments it creates (first index,
/// entry ids) and the record it leaves W with.
type Batch = (Vec<Op>, Vec<(u64, Vec<EntryId>)>, WitnessRecord);

/// One write op inside a multi.
enum Op {
    Create(String, Vec<u8>),
    Set(String, Vec<u8>),
    Delete(String),
    /// `check(path, version)`: the multi fails unless the znode exists with
    /// that version.
    Check(String, i32),
}

impl Op {
    fn payload_len(&self) -> usize {
        match self {
            Op::Create(_, d) | Op::Set(_, d) => d.len(),
            Op::Delete(_) | Op::Check(..) => 0,
        }
    }
}

/// The outcome of storing a snapshot as W's ([`Witness::install_snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotUpload {
    /// W's record now points at this snapshot.
    Stored,
    /// W already holds a snapshot at or past this one (or this one is
    /// empty): nothing was uploaded, nothing needed to be.
    AlreadyCovered,
    /// W has promised a vote the uploader's does not reach: the uploader is
    /// not the leader W follows. Nothing was kept.
    Refused(Vote),
}

/// What this node last knew of W: its record, the record's znode version and
/// the WAL segments (first index -> entry ids, loaded lazily).
///
/// With appends in flight on the pipeline, the view is W as it will be once
/// they land (each is checked against the version the previous one
/// produces); a failure among them makes the view worthless, and the next
/// change drops it and re-reads W.
struct View {
    version: i32,
    record: WitnessRecord,
    segments: BTreeMap<u64, Option<Vec<EntryId>>>,
    /// W's epoch as this node's own last checked write left it: `Some` only
    /// after such a write, and only then may appends be pipelined. A view
    /// read from ZooKeeper has none (`crate::pipeline` says why).
    epoch: Option<i32>,
    /// Appends sent ahead on the pipeline (from this view's epoch).
    pipe: Option<pipeline::Pipe>,
    /// The highest commit a leader's append told this view: what entries
    /// fed to the pipeline carry as `leader_commit`.
    leader_commit: Option<LogId>,
}

impl View {
    fn last_index(&self) -> Option<u64> {
        self.record.last_log_id.map(|l| l.index)
    }
    /// First index of the segment holding `index`, if W's WAL holds it.
    fn segment_of(&self, index: u64) -> Option<u64> {
        if self.last_index().is_none_or(|last| index > last) {
            return None;
        }
        self.segments.range(..=index).next_back().map(|(first, _)| *first)
    }
    fn slot(&self, index: u64) -> Slot {
        if self.record.purged().is_some_and(|p| index <= p.index) {
            return Slot::Purged;
        }
        match self.segment_of(index) {
            None => Slot::Absent,
            Some(first) => match &self.segments[&first] {
                Some(ids) => ids
                    .get((index - first) as usize)
                    .map(|(l, d)| Slot::Present(*l, *d))
                    .unwrap_or(Slot::Absent),
                None => Slot::Unloaded,
            },
        }
    }
}

/// Everything a node needs to adopt W's log (witness-protocol.md, "Adoption").
pub struct WitnessLog {
    pub record: WitnessRecord,
    /// W's snapshot, when the caller asked for entries W has compacted:
    /// its reference only; [`Witness::read_snapshot_to`] streams its chunks
    /// (a snapshot may be larger than memory).
    pub snapshot: Option<SnapshotRef>,
    /// W's entries after max(from, snapshot) up to `record.last_log_id`.
    pub entries: Vec<Entry>,
}

/// One WAL segment as the inspector shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SegmentReport {
    pub path: String,
    pub first_index: u64,
    pub last_index: Option<u64>,
    pub terms: Vec<u64>,
    pub bytes: usize,
    pub error: Option<String>,
    /// Set when the segment is not part of W's log (see [`inspect::classify_segments`]).
    pub garbage: Option<inspect::Garbage>,
}

/// Runs `$body` against W's current view (bound to `$view: &mut View`),
/// retrying with a fresh view when W changed underneath (`VersionMismatch`).
/// The cached view is only put back after a success, so a call cancelled
/// mid-flight (openraft times RPCs out) or failed leaves it empty and the
/// next call re-reads W.
///
/// The view's lock is held for the whole call, I/O included, on purpose:
/// a node's changes to W must happen one at a time anyway (each is checked
/// against the version the previous one produced), and the callers run these
/// in spawned tasks, so an RPC timeout in openraft never cancels a change
/// half-way and the next call finds the view warm.
macro_rules! with_view {
    ($self:ident, $what:expr, |$view:ident| $body:block) => {{
        let mut guard = $self.view.lock().await;
        // A change other than a pipelined append waits for the pipeline to
        // land; if any of it failed, W is re-read.
        if let Some(pipe) = guard.as_mut().and_then(|v| v.pipe.take()) {
            if let Err(e) = pipe.drain().await {
                tracing::debug!(error = %e, "pipelined append failed; re-reading W");
                *guard = None;
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut owned = match guard.take() {
                Some(v) => v,
                None => $self.load_view().await?,
            };
            let $view = &mut owned;
            let r: Result<_, WitnessError> = async { $body }.await;
            match r {
                Ok(t) => {
                    *$self.last_seen.lock().expect("last_seen lock") = owned.record.last_log_id;
                    *guard = Some(owned);
                    break Ok(t);
                }
                Err(WitnessError::VersionMismatch) if attempt < 8 => {
                    tracing::debug!(what = $what, "witness changed concurrently; re-reading");
                }
                Err(e) => break Err(e),
            }
        }
    }};
}

/// The namespace every walship cluster lives under.
const NAMESPACE: &str = "/walship";
/// Its ACL: anyone may read it and create a cluster in it; nobody may
/// delete in it or change its ACL.
static NAMESPACE_ACL: std::sync::LazyLock<[zk::Acl; 1]> = std::sync::LazyLock::new(|| {
    [zk::Acl::new(
        zk::Permission::READ | zk::Permission::CREATE,
        zk::AuthId::anyone(),
    )]
});

pub struct Witness {
    zk: Arc<ZkSession>,
    paths: Paths,
    view: tokio::sync::Mutex<Option<View>>,
    /// W's last log id as last seen, for status (never for a decision).
    last_seen: Mutex<Option<LogId>>,
    /// Bytes this node appended to W's WAL since it last stored a snapshot
    /// there: an entry can carry up to a whole batch, so a count of entries
    /// alone does not bound what ZooKeeper holds.
    wal_bytes: std::sync::atomic::AtomicU64,
    /// One snapshot upload at a time from this node: the leader's shipper,
    /// openraft's snapshot to W and `POST /admin/snapshot` may race, with
    /// the same snapshot id, over the same chunk znodes.
    upload: tokio::sync::Mutex<()>,
    /// The last log id reuse logged at ERROR and when: a leader retries the
    /// refused request every heartbeat, and one ERROR line per index per
    /// `REUSE_LOG_EVERY` says it (the metric counts every refusal).
    reuse_logged: Mutex<Option<(u64, std::time::Instant)>>,
    /// Requests refused for reusing a log id (`walship_log_id_conflicts_total{where="witness"}`).
    log_id_conflicts: prometheus::IntCounter,
    /// Appends to W and the pipeline's depth (`walship_witness_*`).
    metrics: WitnessMetrics,
    /// Whether appends may be pipelined (`pipeline`); off, each is one
    /// checked multi after the previous one's answer.
    pipelining: bool,
}

/// What W's appends report: checked multis that appended entries, the
/// entries, and how many multis were in flight when each was sent.
#[derive(Clone)]
pub struct WitnessMetrics {
    pub appends: prometheus::IntCounter,
    pub entries: prometheus::IntCounter,
    pub inflight_multis: prometheus::Histogram,
    /// Empty writes that push W's big multis out of ZooKeeper's history
    /// (`evict`).
    pub evictions: prometheus::IntCounter,
}

impl Default for WitnessMetrics {
    /// Counted nowhere (a node hands in registered ones).
    fn default() -> WitnessMetrics {
        WitnessMetrics {
            appends: prometheus::IntCounter::new("witness_appends_total", "unregistered").expect("metric"),
            entries: prometheus::IntCounter::new("witness_entries_total", "unregistered").expect("metric"),
            inflight_multis: prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(
                "witness_inflight_multis",
                "unregistered",
            ))
            .expect("metric"),
            evictions: prometheus::IntCounter::new("witness_zk_evictions_total", "unregistered").expect("metric"),
        }
    }
}

impl WitnessMetrics {
    fn appended(&self, entries: u64) {
        self.appends.inc();
        self.entries.inc_by(entries);
    }
}

/// How often the same refused log id reuse is logged again at ERROR.
const REUSE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Witness {
    pub fn new(zk: Arc<ZkSession>, cluster: &str) -> Witness {
        Witness {
            zk,
            paths: Paths::new(cluster),
            view: tokio::sync::Mutex::new(None),
            last_seen: Mutex::new(None),
            wal_bytes: std::sync::atomic::AtomicU64::new(0),
            upload: tokio::sync::Mutex::new(()),
            reuse_logged: Mutex::new(None),
            // Counted nowhere until a node hands in its metric.
            log_id_conflicts: prometheus::IntCounter::new("log_id_conflicts", "unregistered").expect("metric"),
            metrics: WitnessMetrics::default(),
            pipelining: true,
        }
    }

    /// Turns pipelined appends on or off (on by default).
    pub fn pipelining(mut self, on: bool) -> Witness {
        self.pipelining = on;
        self
    }

    /// Reports appends and the pipeline's depth into `metrics`.
    pub fn with_metrics(mut self, metrics: WitnessMetrics) -> Witness {
        self.metrics = metrics;
        self
    }

    /// The op every checked write to W's record carries unless it is a
    /// pipelined append: it bumps W's epoch (see `pipeline`). It goes just
    /// before the record's `setData`, which stays last.
    fn epoch_bump(&self) -> Op {
        Op::Set(self.paths.epoch(), Vec::new())
    }

    /// Counts requests refused for reusing a log id into `counter`.
    pub fn counting_log_id_conflicts(mut self, counter: prometheus::IntCounter) -> Witness {
        self.log_id_conflicts = counter;
        self
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn session(&self) -> &Arc<ZkSession> {
        &self.zk
    }

    /// Bytes this node appended to W's WAL since its last snapshot upload.
    pub fn wal_bytes_since_snapshot(&self) -> u64 {
        self.wal_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// W's last log id as this node last saw it (for status; not a decision).
    pub fn cached_last_log_id(&self) -> Option<LogId> {
        *self.last_seen.lock().expect("last_seen lock")
    }

    // ---- genesis -------------------------------------------------------

    /// Creates the cluster in ZooKeeper if it does not exist: W's record with
    /// a fresh cluster id and the genesis entry as WAL segment 0, all in one
    /// multi, so two nodes racing agree (the loser reads the winner's).
    /// Returns W's record; a path holding something else is an error.
    pub async fn bootstrap(&self) -> Result<WitnessRecord, WitnessError> {
        // `/walship` itself is shared by clusters with different secrets:
        // anyone may read it and create a cluster under it, nobody may
        // change its ACL or delete under it (`NAMESPACE_ACL`); everything of
        // this cluster gets the session's ACL.
        self.ensure_dir(NAMESPACE, zk::Acls::new(&NAMESPACE_ACL[..])).await?;
        self.close_open_namespace().await?;
        self.ensure_dir(&self.paths.root, self.zk.acls()).await?;
        self.ensure_dir(&self.paths.members_dir(), self.zk.acls()).await?;
        match self.read_record().await {
            Ok((record, _)) => {
                self.check_cluster_acls().await?;
                return Ok(record);
            }
            Err(e) if e.is_zk(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        let genesis = genesis_entry();
        let record = WitnessRecord {
            cluster_id: new_cluster_id(),
            vote: Vote::default(),
            last_log_id: Some(genesis.log_id),
            committed: Some(genesis.log_id),
            snapshot: None,
        };
        let ops = vec![
            Op::Create(self.paths.wal_dir(), vec![]),
            Op::Create(self.paths.segment(0), record::encode_segment([&genesis])),
            Op::Create(self.paths.snapshots_dir(), vec![]),
            Op::Create(self.paths.witness(), record::encode_record(&record)),
        ];
        let record = match self.multi("create the cluster (genesis)", None, ops).await {
            Ok(_) => {
                tracing::info!(
                    cluster_id = record.cluster_id,
                    path = self.paths.root,
                    "created cluster genesis in ZooKeeper"
                );
                record
            }
            Err(e) if e.is_zk(zk::Error::NodeExists) => self.read_record().await?.0,
            Err(e) => return Err(e),
        };
        self.check_cluster_acls().await?;
        Ok(record)
    }

    /// Creates `path` (its parent exists) unless it exists. Existence is
    /// looked up first: ZooKeeper checks CREATE on the parent before it
    /// checks whether the node exists, so a node restarting must not need
    /// CREATE on a parent someone else may have locked down.
    async fn ensure_dir(&self, path: &str, acls: zk::Acls<'static>) -> Result<(), WitnessError> {
        let p = path.to_string();
        let exists = self
            .zk
            .run(&format!("stat {path}"), |c| async move { c.check_stat(&p).await })
            .await?;
        if exists.is_some() {
            return Ok(());
        }
        let p = path.to_string();
        let opts = zk::CreateMode::Persistent.with_acls(acls);
        match self
            .zk
            .run(&format!("create {path}"), |c| async move {
                c.create(&p, &[], &opts).await.map(|_| ())
            })
            .await
        {
            Err(e) if e.is_zk(zk::Error::NodeExists) => Ok(()),
            r => Ok(r?),
        }
    }

    /// `/walship` made by walship before this check existed is open to all,
    /// ADMIN included, so any client could re-ACL it and stop every node
    /// from restarting. While it still grants ADMIN to the world, narrow it
    /// (the world's ADMIN is exactly what lets this node do so).
    async fn close_open_namespace(&self) -> Result<(), WitnessError> {
        let (acl, stat) = self
            .zk
            .run(&format!("get acl {NAMESPACE}"), |c| async move {
                c.get_acl(NAMESPACE).await
            })
            .await?;
        let world_admin = acl
            .iter()
            .any(|a| a.scheme() == "world" && a.permission().has(zk::Permission::ADMIN));
        if world_admin {
            let version = stat.aversion;
            self.zk
                .run(&format!("set acl {NAMESPACE}"), |c| async move {
                    c.set_acl(NAMESPACE, &NAMESPACE_ACL[..], Some(version))
                        .await
                        .map(|_| ())
                })
                .await?;
            tracing::info!(
                "{NAMESPACE} was open to every ZooKeeper client (ADMIN included); narrowed to read and create"
            );
        }
        Ok(())
    }

    /// With a secret, the cluster's znodes must carry the cluster's ACL
    /// (digest identities only, or `sasl:walship` only with `--zk-sasl`): a client without the secret could have
    /// created them first (a world-writable `members` lets it advertise its
    /// own address for a node, and receive the peer token and clients'
    /// writes). A start on such znodes is refused, naming the znode and the
    /// ACL found. Without a secret there is nothing to protect them with.
    async fn check_cluster_acls(&self) -> Result<(), WitnessError> {
        let Some((scheme, id)) = self.zk.credentials().expected_acl() else {
            return Ok(());
        };
        let ours = |a: &zk::Acl| a.scheme() == scheme && id.is_none_or(|id| a.id() == id);
        let expected = match id {
            Some(id) => format!("{scheme}:{id} only, from --secret-file and --zk-sasl"),
            None => format!("{scheme} identities only, from --secret-file"),
        };
        let paths = [
            self.paths.root.clone(),
            self.paths.members_dir(),
            self.paths.witness(),
            self.paths.wal_dir(),
            self.paths.snapshots_dir(),
            self.paths.leader(),
        ];
        for path in paths {
            let p = path.clone();
            let found = self
                .zk
                .run(&format!("get acl {path}"), |c| async move {
                    match c.get_acl(&p).await {
                        Ok((acl, _)) => Ok(Some(acl)),
                        Err(zk::Error::NoNode) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
                .await?;
            let Some(acl) = found else { continue };
            if acl.is_empty() || !acl.iter().all(ours) {
                let shown: Vec<String> = acl
                    .iter()
                    .map(|a| format!("{}:{}:{:?}", a.scheme(), a.id(), a.permission()))
                    .collect();
                return Err(WitnessError::Identity(format!(
                    "{path} has ACL [{}], not this cluster's ({expected}): a client without the secret created or changed it, or the cluster was created in another ZooKeeper authentication mode (digest or SASL); remove the cluster's znodes as a ZooKeeper superuser, or use another --cluster name",
                    shown.join(", ")
                )));
            }
        }
        Ok(())
    }

    // ---- reads ---------------------------------------------------------

    async fn read_record(&self) -> Result<(WitnessRecord, i32), WitnessError> {
        let path = self.paths.witness();
        let (bytes, stat) = self
            .zk
            .run(&format!("get {path}"), |c| async move { c.get_data(&path).await })
            .await?;
        let record = record::decode_record(&bytes, &self.paths.witness()).map_err(|e| {
            WitnessError::Identity(format!(
                "{} does not hold a walship witness record ({e}); is this ZooKeeper path used by something else?",
                self.paths.witness()
            ))
        })?;
        Ok((record, stat.version))
    }

    /// Reads W afresh: `sync` first, so a read served by a lagging ZooKeeper
    /// server cannot show an older W than a write this node already saw.
    async fn load_view(&self) -> Result<View, WitnessError> {
        let root = self.paths.root.clone();
        self.zk
            .run(&format!("sync {root}"), |c| async move { c.sync(&root).await })
            .await?;
        let (record, version) = self.read_record().await?;
        let wal = self.paths.wal_dir();
        let children = self
            .zk
            .run(&format!("list {wal}"), |c| async move { c.list_children(&wal).await })
            .await?;
        let purged = record.purged().map(|p| p.index);
        let mut firsts: Vec<u64> = children.iter().filter_map(|n| record::parse_segment_name(n)).collect();
        firsts.sort_unstable();
        let mut segments = BTreeMap::new();
        for (i, first) in firsts.iter().enumerate() {
            // A segment whose every entry is inside the snapshot is garbage
            // left for collection; it is not part of W's log.
            let next = firsts.get(i + 1).copied();
            let wholly_purged = purged.is_some_and(|p| next.is_some_and(|n| n - 1 <= p));
            let beyond_last = record.last_log_id.is_none_or(|l| *first > l.index);
            if !wholly_purged && !beyond_last {
                segments.insert(*first, None);
            }
        }
        Ok(View {
            version,
            record,
            segments,
            epoch: None,
            pipe: None,
            leader_commit: None,
        })
    }

    /// One segment's entries, each with its digest.
    async fn read_segment(&self, first: u64) -> Result<Vec<(Entry, u32)>, WitnessError> {
        let path = self.paths.segment(first);
        let p = path.clone();
        let (bytes, _) = self
            .zk
            .run(&format!("get {path}"), |c| async move { c.get_data(&p).await })
            .await?;
        record::decode_segment_digests(&bytes, &path, first)
    }

    /// Reads many segments with ZooKeeper multi-reads (one round trip per
    /// `SEGMENTS_PER_READ`), each batch also reading W's record so the caller
    /// can tell whether W changed in between: returns the segments (None for
    /// one that no longer exists) and the record versions seen.
    async fn read_segments(&self, firsts: &[u64]) -> Result<(Vec<Option<Vec<(Entry, u32)>>>, Vec<i32>), WitnessError> {
        const SEGMENTS_PER_READ: usize = 64;
        let mut out = Vec::with_capacity(firsts.len());
        let mut versions = Vec::new();
        for batch in firsts.chunks(SEGMENTS_PER_READ) {
            let witness = self.paths.witness();
            let paths: Vec<String> = batch.iter().map(|f| self.paths.segment(*f)).collect();
            let results = self
                .zk
                .run(&format!("multi-read {} segments", batch.len()), |c| async move {
                    let mut r = c.new_multi_reader();
                    r.add_get_data(&witness)?;
                    for p in &paths {
                        r.add_get_data(p)?;
                    }
                    r.commit().await
                })
                .await?;
            let mut results = results.into_iter();
            match results.next() {
                Some(zk::MultiReadResult::Data { stat, .. }) => versions.push(stat.version),
                other => {
                    return Err(WitnessError::corrupt(
                        &self.paths.witness(),
                        format!("unreadable: {other:?}"),
                    ))
                }
            }
            for (first, r) in batch.iter().zip(results) {
                let path = self.paths.segment(*first);
                match r {
                    zk::MultiReadResult::Data { data, .. } => {
                        out.push(Some(record::decode_segment_digests(&data, &path, *first)?))
                    }
                    zk::MultiReadResult::Error { err: zk::Error::NoNode } => out.push(None),
                    zk::MultiReadResult::Error { err } => {
                        return Err(ZkError::from_zk(&format!("get {path}"), err).into())
                    }
                    _ => return Err(WitnessError::corrupt(&path, "unexpected multi-read reply")),
                }
            }
        }
        Ok((out, versions))
    }

    /// Loads the entry ids (log id and digest) of every segment overlapping
    /// `[from, to]` that the view has not loaded yet, with multi-reads (64
    /// segments a round trip). A segment read at another record version than
    /// the view's, or gone, means W changed since the view was read:
    /// `VersionMismatch`, and the caller re-reads W.
    async fn load_segments(&self, view: &mut View, from: u64, to: u64) -> Result<(), WitnessError> {
        let Some(start) = view.segment_of(from).or_else(|| view.segments.keys().next().copied()) else {
            return Ok(());
        };
        let wanted: Vec<u64> = view
            .segments
            .range(start..=to)
            .filter(|(_, ids)| ids.is_none())
            .map(|(first, _)| *first)
            .collect();
        const SEGMENTS_PER_LOAD: usize = 64;
        for batch in wanted.chunks(SEGMENTS_PER_LOAD) {
            let (segments, versions) = self.read_segments(batch).await?;
            if versions.iter().any(|v| *v != view.version) {
                return Err(WitnessError::VersionMismatch);
            }
            for (first, seg) in batch.iter().zip(segments) {
                let Some(seg) = seg else {
                    return Err(WitnessError::VersionMismatch);
                };
                view.segments
                    .insert(*first, Some(seg.iter().map(|(e, d)| (e.log_id, *d)).collect()));
            }
        }
        Ok(())
    }

    // ---- writes --------------------------------------------------------

    /// Runs one multi. With `check_version`, the first op is
    /// `check(witness, version)`, and its failure is `VersionMismatch`.
    async fn multi(
        &self,
        what: &str,
        check_version: Option<i32>,
        ops: Vec<Op>,
    ) -> Result<Vec<zk::MultiWriteResult>, WitnessError> {
        let witness = self.paths.witness();
        let opts = zk::CreateMode::Persistent.with_acls(self.zk.acls());
        let bytes: u64 = ops.iter().map(|op| op.payload_len() as u64).sum();
        let res = self
            .zk
            .run(what, |c| async move {
                let mut w = c.new_multi_writer();
                if let Some(v) = check_version {
                    w.add_check_version(&witness, v)?;
                }
                for op in &ops {
                    match op {
                        Op::Create(p, d) => w.add_create(p, d, &opts)?,
                        Op::Set(p, d) => w.add_set_data(p, d, None)?,
                        Op::Delete(p) => w.add_delete(p, None)?,
                        Op::Check(p, v) => w.add_check_version(p, *v)?,
                    }
                }
                match w.commit().await {
                    Ok(r) => Ok(Ok(r)),
                    Err(zk::MultiWriteError::OperationFailed {
                        index: 0,
                        source: zk::Error::BadVersion | zk::Error::NoNode,
                    }) if check_version.is_some() => Ok(Err(())),
                    Err(e) => Err(zk::Error::from(e)),
                }
            })
            .await?;
        if res.is_ok() {
            evict::after_multi(&self.zk, &self.paths.root, bytes, &self.metrics.evictions);
        }
        res.map_err(|()| WitnessError::VersionMismatch)
    }

    /// Writes W's record alone (a vote), guarded by the view's version.
    async fn write_record(&self, view: &mut View, record: WitnessRecord, what: &str) -> Result<(), WitnessError> {
        let res = self
            .multi(
                what,
                Some(view.version),
                vec![
                    self.epoch_bump(),
                    Op::Set(self.paths.witness(), record::encode_record(&record)),
                ],
            )
            .await?;
        view.version = set_version(&res)?;
        view.epoch = Some(epoch_version(&res)?);
        view.record = record;
        Ok(())
    }

    /// Vote(req), see [`rules::decide_vote`].
    pub async fn vote(&self, req: VoteRequest<u64>) -> Result<VoteResponse<u64>, WitnessError> {
        // Votes are rare and usually follow the other node's writes: start fresh.
        self.view.lock().await.take();
        with_view!(self, "vote", |view| {
            let (resp, next) = rules::decide_vote(&view.record, &req);
            if let Some(next) = next {
                self.write_record(view, next, "witness vote").await?;
            }
            Ok(resp)
        })
    }

    /// AppendEntries(req), see [`rules::decide_append`].
    pub async fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, WitnessError> {
        if let Some(landing) = self.pipelined(pipeline::Source::Rpc(&req)).await {
            match landing.wait().await {
                Ok(()) => return Ok(AppendEntriesResponse::Success),
                Err(e) => tracing::debug!(error = %e, "deciding the append again on W as it is"),
            }
        }
        let w = self;
        let req = &req;
        // The overlap W must compare, for loading it in one go.
        let req_last = req.entries.last().map(|e| e.log_id.index);
        let answer = with_view!(self, "append", |view| {
            {
                let decision = loop {
                    match rules::decide_append(&view.record, req, |i| view.slot(i)) {
                        AppendDecision::Load(index) => {
                            let to = req_last.map_or(index, |l| l.max(index));
                            w.load_segments(view, index, to).await?
                        }
                        d => break d,
                    }
                };
                match decision {
                    AppendDecision::Load(_) => unreachable!("loaded above"),
                    AppendDecision::HigherVote(v) => Ok(Ok(AppendEntriesResponse::HigherVote(v))),
                    AppendDecision::Conflict { record } => {
                        // Conflict tells the sender W still follows its vote,
                        // which confirms leadership like any answer but
                        // HigherVote: it goes through ZooKeeper too (a checked
                        // multi; a changed W is re-read and re-decided).
                        if record != view.record {
                            w.write_record(view, record, "witness vote (conflict)").await?;
                        } else {
                            w.multi("witness conflict (check)", Some(view.version), vec![]).await?;
                        }
                        Ok(Ok(AppendEntriesResponse::Conflict))
                    }
                    AppendDecision::LogIdReused {
                        index,
                        witness_digest,
                        request_digest,
                    } => {
                        // Refuse on W as it is, not on a stale view: a changed
                        // W is re-read and the request re-decided.
                        w.multi("witness log id reuse (check)", Some(view.version), vec![])
                            .await?;
                        let log_id = req
                            .entries
                            .iter()
                            .find(|e| e.log_id.index == index)
                            .map(|e| e.log_id)
                            .expect("the rule names an entry of the request");
                        Ok(Err(WitnessError::LogIdReused {
                            log_id,
                            witness_digest,
                            request_digest,
                        }))
                    }
                    d if d.is_check_only(&view.record) => {
                        // A heartbeat still goes through ZooKeeper's consensus, so
                        // a deposed leader learns of it and cannot confirm a read.
                        w.multi("witness heartbeat", Some(view.version), vec![]).await?;
                        Ok(Ok(AppendEntriesResponse::Success))
                    }
                    AppendDecision::Accept {
                        record,
                        truncate_from,
                        append,
                    } => {
                        w.apply_append(view, record, truncate_from, append).await?;
                        Ok(Ok(AppendEntriesResponse::Success))
                    }
                }
            }
        })?;
        if let Err(WitnessError::LogIdReused {
            log_id,
            witness_digest,
            request_digest,
        }) = &answer
        {
            self.log_id_conflicts.inc();
            let loud = {
                let mut logged = self.reuse_logged.lock().expect("reuse_logged lock");
                let loud = logged.is_none_or(|(i, at)| i != log_id.index || at.elapsed() >= REUSE_LOG_EVERY);
                if loud {
                    *logged = Some((log_id.index, std::time::Instant::now()));
                }
                loud
            };
            if loud {
                tracing::error!(
                    index = log_id.index,
                    %log_id,
                    witness_crc32 = format!("{witness_digest:08x}"),
                    request_crc32 = format!("{request_digest:08x}"),
                    leader_vote = %req.vote,
                    "log id reused: the leader sent another entry under a log id W holds; W keeps its own (the one that may be committed) and refuses the append"
                );
            }
        }
        answer
    }

    /// Carries out an accepted append: truncation and the first batch of
    /// segments in one multi, further batches in further multis, each checked
    /// and each leaving W a valid prefix of the leader's log.
    async fn apply_append(
        &self,
        view: &mut View,
        record: WitnessRecord,
        truncate_from: Option<u64>,
        append: Vec<Entry>,
    ) -> Result<(), WitnessError> {
        let mut ops = Vec::new();
        let mut ops_bytes = 0usize;
        if let Some(cut) = truncate_from {
            let doomed: Vec<u64> = view.segments.range(cut..).map(|(f, _)| *f).collect();
            for first in &doomed {
                ops.push(Op::Delete(self.paths.segment(*first)));
                view.segments.remove(first);
            }
            if let Some(first) = view.segment_of(cut.saturating_sub(1)).filter(|f| *f < cut) {
                let mut kept = self.read_segment(first).await?;
                kept.truncate((cut - first) as usize);
                let bytes = record::encode_segment(kept.iter().map(|(e, _)| e));
                ops_bytes += bytes.len();
                ops.push(Op::Set(self.paths.segment(first), bytes));
                view.segments
                    .insert(first, Some(kept.iter().map(|(e, d)| (e.log_id, *d)).collect()));
            }
        }

        for (mut ops, new_segs, rec) in self.pack_segments(&append, ops, ops_bytes, &record) {
            ops.push(self.epoch_bump());
            ops.push(Op::Set(self.paths.witness(), record::encode_record(&rec)));
            let bytes: u64 = ops.iter().map(|op| op.payload_len() as u64).sum();
            let entries = new_segs.iter().map(|(_, ids)| ids.len() as u64).sum();
            let res = self.multi("witness append", Some(view.version), ops).await?;
            self.wal_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            self.metrics.appended(entries);
            view.version = set_version(&res)?;
            view.epoch = Some(epoch_version(&res)?);
            view.record = rec;
            for (first, ids) in new_segs {
                view.segments.insert(first, Some(ids));
            }
        }
        Ok(())
    }

    /// Packs `append` into new WAL segments, after `ops` (of `ops_bytes`)
    /// in the first multi: each multi stays under `MAX_MULTI_BYTES`, and
    /// each but the last leaves W's record at its own last entry (W a valid
    /// prefix of the leader's log after every one); the last leaves `record`.
    fn pack_segments(&self, append: &[Entry], ops: Vec<Op>, ops_bytes: usize, record: &WitnessRecord) -> Vec<Batch> {
        let mut ops = ops;
        let mut ops_bytes = ops_bytes;
        let mut batches: Vec<Batch> = Vec::new();
        let mut seg_bytes = record::encode_segment([]);
        let mut seg_ids: Vec<EntryId> = Vec::new();
        let mut new_segs: Vec<(u64, Vec<EntryId>)> = Vec::new();
        let flush_segment = |ops: &mut Vec<Op>,
                             seg_bytes: &mut Vec<u8>,
                             seg_ids: &mut Vec<EntryId>,
                             new_segs: &mut Vec<(u64, Vec<EntryId>)>| {
            if let Some((first, _)) = seg_ids.first() {
                ops.push(Op::Create(
                    self.paths.segment(first.index),
                    std::mem::replace(seg_bytes, record::encode_segment([])),
                ));
                let first = first.index;
                new_segs.push((first, std::mem::take(seg_ids)));
            }
        };
        for e in append {
            let bytes = record::entry_bytes(e);
            if ops_bytes + seg_bytes.len() + bytes.len() > MAX_MULTI_BYTES && !seg_ids.is_empty() {
                flush_segment(&mut ops, &mut seg_bytes, &mut seg_ids, &mut new_segs);
                let last = new_segs
                    .last()
                    .and_then(|(_, ids)| ids.last().map(|(l, _)| *l))
                    .expect("segment not empty");
                let mut rec = record.clone();
                rec.last_log_id = Some(last);
                rec.committed = std::cmp::min(rec.committed, Some(last));
                batches.push((std::mem::take(&mut ops), std::mem::take(&mut new_segs), rec));
                ops_bytes = 0;
            }
            seg_bytes.extend_from_slice(&bytes);
            seg_ids.push((e.log_id, record::framed_digest(&bytes)));
        }
        flush_segment(&mut ops, &mut seg_bytes, &mut seg_ids, &mut new_segs);
        batches.push((ops, new_segs, record.clone()));

        batches
    }

    /// Stores a snapshot as W's (from the leader's shipper or openraft's
    /// snapshot replication to W) and drops the WAL segments it covers, in
    /// the same multi that points W's record at it.
    ///
    /// The chunks are uploaded first, unreferenced until that multi, which
    /// also checks that every chunk is still there as uploaded (so W never
    /// points at a snapshot a sweep took apart). An upload that does not end
    /// in W's record is removed (unless the multi's outcome is unknown and
    /// it may have landed), and every successful one sweeps the snapshot
    /// directories W's record does not name: a failed upload's chunks do not
    /// outlive the next success.
    pub async fn install_snapshot(
        &self,
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<SnapshotUpload, WitnessError> {
        let size_bytes = data.len() as u64;
        self.install_snapshot_from(vote, meta, std::io::Cursor::new(data), size_bytes)
            .await
    }

    /// As [`Self::install_snapshot`], the snapshot's `size_bytes` bytes
    /// streamed from `data` one chunk at a time (memory: one chunk).
    pub async fn install_snapshot_from<R: tokio::io::AsyncRead + Unpin + Send>(
        &self,
        vote: Vote,
        meta: SnapshotMeta,
        data: R,
        size_bytes: u64,
    ) -> Result<SnapshotUpload, WitnessError> {
        let Some(snap_last) = meta.last_log_id else {
            return Ok(SnapshotUpload::AlreadyCovered);
        };
        let _one_at_a_time = self.upload.lock().await;
        // A cheap early refusal before uploading megabytes; the final multi
        // checks again.
        let (record, _) = self.read_record().await?;
        if !rules::vote_reaches(&vote, &record.vote) {
            return Ok(SnapshotUpload::Refused(record.vote));
        }
        if record.purged() >= Some(snap_last) {
            return Ok(SnapshotUpload::AlreadyCovered);
        }
        let id = meta.snapshot_id.clone();
        let result = match self.upload_chunks(&id, data, size_bytes).await {
            Ok((chunks, crc32)) => {
                let sref = SnapshotRef {
                    meta,
                    chunk_count: chunks.len() as u32,
                    size_bytes,
                    crc32,
                };
                self.point_at_snapshot(vote, sref, chunks).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((SnapshotUpload::Stored, leftover)) => {
                self.delete_unchecked(leftover).await;
                match self.sweep_snapshots(None).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(dirs = n, "removed snapshot uploads W's record does not name"),
                    Err(e) => tracing::warn!(error = %e, "could not sweep unreferenced snapshot uploads"),
                }
                self.wal_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(snapshot = %snap_last, bytes = size_bytes, "snapshot stored in ZooKeeper");
                Ok(SnapshotUpload::Stored)
            }
            Ok((other, _)) => {
                self.remove_failed_upload(&id).await;
                Ok(other)
            }
            Err(e) => {
                // A multi whose outcome is unknown may have landed: the
                // removal reads W's record first and keeps what it names.
                self.remove_failed_upload(&id).await;
                Err(e)
            }
        }
    }

    /// Uploads the `size_bytes` bytes of `data` as the chunks of snapshot
    /// `id`, reading one chunk at a time; returns each chunk's path and the
    /// znode version it was left at, and the crc32 of all the bytes.
    async fn upload_chunks<R: tokio::io::AsyncRead + Unpin>(
        &self,
        id: &str,
        data: R,
        size_bytes: u64,
    ) -> Result<(Vec<(String, i32)>, u32), WitnessError> {
        use tokio::io::AsyncReadExt;
        let chunk_count = size_bytes.div_ceil(SNAPSHOT_CHUNK_BYTES as u64).max(1);
        let mut data = data.take(size_bytes);
        let mut crc = crc32fast::Hasher::new();
        let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
        let dir = self.paths.snapshot_dir(id);
        let d = dir.clone();
        let opts = zk::CreateMode::Persistent.with_acls(self.zk.acls());
        match self
            .zk
            .run(&format!("create {dir}"), |c| async move {
                c.create(&d, &[], &opts).await.map(|_| ())
            })
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_zk(zk::Error::NodeExists) => {}
            Err(e) => return Err(e.into()),
        }
        let mut uploaded = Vec::with_capacity(chunk_count as usize);
        for i in 0..chunk_count {
            let path = self.paths.chunk(id, i as u32);
            chunk.clear();
            let want = (size_bytes - i * SNAPSHOT_CHUNK_BYTES as u64).min(SNAPSHOT_CHUNK_BYTES as u64);
            (&mut data)
                .take(want)
                .read_to_end(&mut chunk)
                .await
                .map_err(|source| WitnessError::LocalIo {
                    what: format!("read the snapshot for {path}"),
                    source,
                })?;
            if chunk.len() as u64 != want {
                return Err(WitnessError::LocalIo {
                    what: format!("read the snapshot for {path}"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} bytes where {want} were due", chunk.len()),
                    ),
                });
            }
            crc.update(&chunk);
            let bytes = record::encode_chunk(&chunk);
            let version = match self
                .multi(
                    &format!("create {path}"),
                    None,
                    vec![Op::Create(path.clone(), bytes.clone())],
                )
                .await
            {
                Ok(_) => 0,
                Err(e) if e.is_zk(zk::Error::NodeExists) => {
                    let res = self
                        .multi(&format!("set {path}"), None, vec![Op::Set(path.clone(), bytes)])
                        .await?;
                    match res.last() {
                        Some(zk::MultiWriteResult::SetData { stat }) => stat.version,
                        other => {
                            return Err(WitnessError::UnexpectedReply {
                                what: format!("set {path}"),
                                reply: format!("{other:?}"),
                            })
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            uploaded.push((path, version));
        }
        Ok((uploaded, crc.finalize()))
    }

    /// The final, checked multi of a snapshot install: points W's record at
    /// the uploaded chunks (each checked to be as uploaded) and deletes the
    /// WAL it covers. Returns the outcome and the znodes left to delete.
    async fn point_at_snapshot(
        &self,
        vote: Vote,
        sref: SnapshotRef,
        chunks: Vec<(String, i32)>,
    ) -> Result<(SnapshotUpload, Vec<String>), WitnessError> {
        let mut leftover: Vec<String> = Vec::new();
        let w = self;
        let outcome = with_view!(self, "witness snapshot", |view| {
            leftover.clear();
            let decision = loop {
                let firsts: Vec<u64> = view.segments.keys().copied().collect();
                match rules::decide_snapshot(&view.record, &vote, sref.clone(), &firsts, |i| view.slot(i)) {
                    SnapshotDecision::Load(index) => w.load_segments(view, index, index).await?,
                    d => break d,
                }
            };
            let (next, doomed, replaced) = match decision {
                SnapshotDecision::Load(_) => unreachable!("loaded above"),
                SnapshotDecision::Refused(v) => return Ok(SnapshotUpload::Refused(v)),
                SnapshotDecision::AlreadyCovered => return Ok(SnapshotUpload::AlreadyCovered),
                SnapshotDecision::Store {
                    record,
                    delete_segments,
                    replaced,
                } => (record, delete_segments, replaced),
            };
            let mut ops: Vec<Op> = chunks.iter().map(|(p, v)| Op::Check(p.clone(), *v)).collect();
            for first in &doomed {
                let p = w.paths.segment(*first);
                if ops.len() < MAX_DELETES_PER_MULTI {
                    ops.push(Op::Delete(p));
                } else {
                    leftover.push(p);
                }
            }
            if let Some(old) = replaced {
                for i in 0..old.chunk_count {
                    leftover.push(w.paths.chunk(&old.meta.snapshot_id, i));
                }
                leftover.push(w.paths.snapshot_dir(&old.meta.snapshot_id));
            }
            ops.push(w.epoch_bump());
            ops.push(Op::Set(w.paths.witness(), record::encode_record(&next)));
            let res = w.multi("witness snapshot", Some(view.version), ops).await?;
            view.version = set_version(&res)?;
            view.epoch = Some(epoch_version(&res)?);
            view.record = next;
            for first in doomed {
                view.segments.remove(&first);
            }
            Ok(SnapshotUpload::Stored)
        })?;
        Ok((outcome, leftover))
    }

    /// Deletes garbage nothing references any more (compacted WAL segments,
    /// a replaced snapshot's chunks): no check needed, and a failure only
    /// leaves garbage. In multis: one delete per call would be one round
    /// trip per segment (seconds for a busy WAL). Children go before their
    /// parent, and a multi failing on one (already gone) znode is redone one
    /// by one.
    async fn delete_unchecked(&self, paths: Vec<String>) {
        for chunk in paths.chunks(MAX_DELETES_PER_MULTI) {
            let ops = chunk.iter().map(|p| Op::Delete(p.clone())).collect();
            if self.multi("delete compacted znodes", None, ops).await.is_ok() {
                continue;
            }
            for path in chunk {
                let p = path.clone();
                if let Err(e) = self
                    .zk
                    .run(&format!("delete {path}"), |c| async move { c.delete(&p, None).await })
                    .await
                {
                    if !e.is_zk(zk::Error::NoNode) {
                        tracing::warn!(path, error = %e, "could not delete compacted znode");
                    }
                }
            }
        }
    }

    /// Removes the chunks of an upload that did not end in W's record.
    /// Failure only leaves garbage for the next sweep.
    async fn remove_failed_upload(&self, id: &str) {
        match self.sweep_snapshots(Some(id)).await {
            Ok(0) => {}
            Ok(_) => tracing::info!(
                snapshot_id = id,
                "removed the chunks of a snapshot upload W did not take"
            ),
            Err(e) => {
                tracing::warn!(snapshot_id = id, error = %e, "could not remove a failed snapshot upload; the next stored snapshot sweeps it")
            }
        }
    }

    /// Deletes snapshot directories (`snapshots/<id>` and its chunks) that
    /// W's record does not name: the one given, or every one. Each deletion
    /// is a multi checked against the record version that was read and did
    /// not name it, so a snapshot W's record points at is never touched,
    /// even if an install lands meanwhile. An upload in progress elsewhere
    /// may lose its chunks; its final multi then fails on their checks and
    /// it is retried. Returns the directories removed.
    async fn sweep_snapshots(&self, only: Option<&str>) -> Result<usize, WitnessError> {
        const TRIES: usize = 5;
        let ids = match only {
            Some(id) => vec![id.to_string()],
            None => {
                let (record, _) = self.read_record().await?;
                let named = sref_id(&record).to_string();
                let mut ids = self.list(&self.paths.snapshots_dir()).await?;
                ids.retain(|id| *id != named);
                ids
            }
        };
        let mut removed = 0;
        for id in ids {
            let dir = self.paths.snapshot_dir(&id);
            let chunks = self.list(&dir).await?;
            for _ in 0..TRIES {
                let (record, version) = self.read_record().await?;
                if record.snapshot.as_ref().is_some_and(|s| s.meta.snapshot_id == id) {
                    break;
                }
                let mut paths: Vec<String> = chunks.iter().map(|c| format!("{dir}/{c}")).collect();
                paths.push(dir.clone());
                let mut outcome = Ok(());
                for group in paths.chunks(MAX_DELETES_PER_MULTI) {
                    let ops = group.iter().map(|p| Op::Delete(p.clone())).collect();
                    outcome = self
                        .multi("delete an unreferenced snapshot upload", Some(version), ops)
                        .await
                        .map(|_| ());
                    if outcome.is_err() {
                        break;
                    }
                }
                match outcome {
                    Ok(()) => {
                        removed += 1;
                        break;
                    }
                    Err(WitnessError::VersionMismatch) => continue,
                    // Gone already, or changed by an upload meanwhile: the
                    // next sweep looks again.
                    Err(e) if e.is_zk(zk::Error::NoNode) || e.is_zk(zk::Error::NotEmpty) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }

    /// Reads W's log from `from_index` on for adoption, verifying every CRC.
    /// If W has compacted past `from_index`, W's snapshot comes too.
    ///
    /// The segments are read one by one, so the read is only taken as W's log
    /// if W's record has the same version afterwards. While a live leader
    /// keeps appending that may never happen; after a few tries the read
    /// falls back to the entries up to W's committed log id, which no later
    /// change can alter (committed entries are never truncated), and the
    /// leader replicates the rest.
    pub async fn read_log(&self, from_index: u64) -> Result<WitnessLog, WitnessError> {
        const WHOLE_LOG_TRIES: usize = 3;
        for attempt in 0..WHOLE_LOG_TRIES + 5 {
            let view = self.load_view().await?;
            let record = view.record.clone();
            let whole = attempt < WHOLE_LOG_TRIES;
            let upto = if whole {
                record.last_log_id
            } else {
                std::cmp::max(record.committed, record.purged())
            };
            let mut snapshot = None;
            let mut start = from_index;
            if let Some(purged) = record.purged() {
                if from_index <= purged.index {
                    snapshot = record.snapshot.clone();
                }
                start = start.max(purged.index + 1);
            }
            let mut wanted: Vec<(u64, u64)> = Vec::new();
            if let Some(upto) = upto {
                let firsts: Vec<u64> = view.segments.keys().copied().collect();
                for (i, first) in firsts.iter().enumerate() {
                    let seg_last = firsts.get(i + 1).map(|n| n - 1).unwrap_or(u64::MAX).min(upto.index);
                    if seg_last >= start && *first <= upto.index {
                        wanted.push((*first, seg_last));
                    }
                }
            }
            let firsts: Vec<u64> = wanted.iter().map(|(f, _)| *f).collect();
            let (segments, versions) = self.read_segments(&firsts).await?;
            if segments.iter().any(|s| s.is_none()) {
                continue; // compacted or truncated meanwhile
            }
            if whole && versions.iter().any(|v| *v != view.version) {
                continue;
            }
            let mut entries = Vec::new();
            for (seg, (_, seg_last)) in segments.into_iter().flatten().zip(&wanted) {
                entries.extend(
                    seg.into_iter()
                        .map(|(e, _)| e)
                        .filter(|e| e.log_id.index >= start && e.log_id.index <= *seg_last),
                );
            }
            check_contiguous(&entries, start, upto, &self.paths)?;
            if whole {
                *self.last_seen.lock().expect("last_seen lock") = view.record.last_log_id;
                *self.view.lock().await = Some(view);
            } else {
                tracing::info!(upto = ?upto, witness_last = ?record.last_log_id, "W is busy; read its committed prefix only");
            }
            return Ok(WitnessLog {
                record,
                snapshot,
                entries,
            });
        }
        Err(WitnessError::Busy)
    }

    /// Streams W's snapshot `sref` into `out` chunk by chunk (memory:
    /// [`SNAPSHOT_READS_IN_FLIGHT`] chunks), checking each chunk's crc32 (an error names the chunk's
    /// znode), then the size and the crc32 of the whole against W's record
    /// (an error names the snapshot's directory). A chunk gone (`NoNode`)
    /// means W replaced the snapshot meanwhile: read W's log again. On
    /// error `out` holds a part and must be discarded.
    pub async fn read_snapshot_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        sref: &SnapshotRef,
        out: &mut W,
    ) -> Result<(), WitnessError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let mut crc = crc32fast::Hasher::new();
        let mut size_bytes = 0u64;
        // A few reads in flight, taken in order: a rebirth waits for the
        // round trips one after another otherwise.
        let mut reads = futures::stream::iter(0..sref.chunk_count)
            .map(|i| {
                let path = self.paths.chunk(&sref.meta.snapshot_id, i);
                async move {
                    let p = path.clone();
                    let got = self
                        .zk
                        .run(&format!("get {path}"), |c| async move { c.get_data(&p).await })
                        .await;
                    (path, got)
                }
            })
            .buffered(SNAPSHOT_READS_IN_FLIGHT);
        while let Some((path, got)) = reads.next().await {
            let (bytes, _) = got?;
            let payload = record::decode_chunk(&bytes, &path)?;
            crc.update(payload);
            size_bytes += payload.len() as u64;
            out.write_all(payload).await.map_err(|source| WitnessError::LocalIo {
                what: format!("write the snapshot read from {path}"),
                source,
            })?;
        }
        out.flush().await.map_err(|source| WitnessError::LocalIo {
            what: "write W's snapshot".into(),
            source,
        })?;
        let crc = crc.finalize();
        if size_bytes != sref.size_bytes || crc != sref.crc32 {
            return Err(WitnessError::corrupt(
                &self.paths.snapshot_dir(&sref.meta.snapshot_id),
                format!(
                    "snapshot is {size_bytes} bytes crc {crc:08x}, record says {} bytes crc {:08x}",
                    sref.size_bytes, sref.crc32
                ),
            ));
        }
        Ok(())
    }

    /// Reads W's log from `from_index` on (as [`Self::read_log`]) and, if
    /// it comes with W's snapshot, streams that snapshot into the file
    /// `snapshot_file` (created or truncated, fsync'd). Retries when W
    /// replaced its snapshot during the read.
    pub async fn read_log_to(
        &self,
        from_index: u64,
        snapshot_file: &std::path::Path,
    ) -> Result<WitnessLog, WitnessError> {
        const SNAPSHOT_TRIES: usize = 5;
        let local = |what: &str, source: std::io::Error| WitnessError::LocalIo {
            what: format!("{what} {}", snapshot_file.display()),
            source,
        };
        for _ in 0..SNAPSHOT_TRIES {
            let log = self.read_log(from_index).await?;
            let Some(sref) = &log.snapshot else {
                return Ok(log);
            };
            let mut f = tokio::fs::File::create(snapshot_file)
                .await
                .map_err(|e| local("create", e))?;
            let mut w = tokio::io::BufWriter::with_capacity(SNAPSHOT_CHUNK_BYTES, &mut f);
            match self.read_snapshot_to(sref, &mut w).await {
                Ok(()) => {}
                Err(e) if e.is_zk(zk::Error::NoNode) => continue, // replaced meanwhile
                Err(e) => return Err(e),
            }
            drop(w);
            f.sync_all().await.map_err(|e| local("fsync", e))?;
            return Ok(log);
        }
        Err(WitnessError::Busy)
    }

    /// Every WAL segment with what it holds (see [`Witness::inspect_all`]
    /// for the snapshot and the gaps too). Corrupt segments are reported, not
    /// skipped; a record that does not decode is an error.
    pub async fn inspect(&self) -> Result<(WitnessRecord, Vec<SegmentReport>), WitnessError> {
        let i = self.inspect_all().await?;
        match (i.record, i.record_error) {
            (Some(record), _) => Ok((record, i.segments)),
            (None, reason) => Err(WitnessError::corrupt(
                &i.record_path,
                reason.unwrap_or_else(|| "undecodable".into()),
            )),
        }
    }
}

fn sref_id(record: &WitnessRecord) -> &str {
    record.snapshot.as_ref().map_or("", |s| s.meta.snapshot_id.as_str())
}

/// The epoch a multi ending in `[epoch_bump, set witness]` left.
fn epoch_version(results: &[zk::MultiWriteResult]) -> Result<i32, WitnessError> {
    match results.len().checked_sub(2).map(|i| &results[i]) {
        Some(zk::MultiWriteResult::SetData { stat }) => Ok(stat.version),
        other => Err(WitnessError::UnexpectedReply {
            what: "a multi bumping W's epoch before it sets the witness".into(),
            reply: format!("{other:?}"),
        }),
    }
}

fn set_version(results: &[zk::MultiWriteResult]) -> Result<i32, WitnessError> {
    match results.last() {
        Some(zk::MultiWriteResult::SetData { stat }) => Ok(stat.version),
        other => Err(WitnessError::UnexpectedReply {
            what: "a multi ending in set witness".into(),
            reply: format!("{other:?}"),
        }),
    }
}

fn check_contiguous(entries: &[Entry], start: u64, last: Option<LogId>, paths: &Paths) -> Result<(), WitnessError> {
    for (i, e) in entries.iter().enumerate() {
        if e.log_id.index != start + i as u64 {
            return Err(WitnessError::corrupt(
                &paths.wal_dir(),
                format!(
                    "gap in W's log: expected index {}, found {}",
                    start + i as u64,
                    e.log_id.index
                ),
            ));
        }
    }
    let got_last = entries.last().map(|e| e.log_id);
    match (got_last, last) {
        (Some(g), Some(l)) if g != l => Err(WitnessError::corrupt(
            &paths.wal_dir(),
            format!("W's log ends at {g}, its record says {l}"),
        )),
        (None, Some(l)) if l.index >= start => Err(WitnessError::corrupt(
            &paths.wal_dir(),
            format!("W's log is missing entries {start}..={}", l.index),
        )),
        _ => Ok(()),
    }
}

fn new_cluster_id() -> String {
    use std::time::SystemTime;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:032x}", nanos ^ ((std::process::id() as u128) << 64))
}
