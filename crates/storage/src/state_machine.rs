//! `StateMachine`: the in-memory key-value map that applied entries build,
//! and the embedder's application if there is one ([`crate::Application`]), persisted
//! only through snapshots (`snapshot/current.snap`); after a restart
//! openraft re-applies the log from the snapshot to the saved committed id.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::RaftSnapshotBuilder;
use openraft::Snapshot;
use walship_types::Entry;
use walship_types::LogId;
use walship_types::Refusal;
use walship_types::Request;
use walship_types::Response;
use walship_types::SnapshotMeta;
use walship_types::StorageError;
use walship_types::StoredMembership;
use walship_types::TypeConfig;

use super::error::Result;
use super::error::StoreError;
use super::fault::Faults;
use super::frame;
use super::snapshot;
use super::snapshot::SmContent;
use crate::sessions::Admit;
use crate::Application;

/// The replicated key-value map. Cloning shares the same state machine.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<SmInner>,
}

struct SmInner {
    snapshot_path: PathBuf,
    content: RwLock<SmContent>,
    /// Serializes snapshot file writes and reads (a build runs in its own
    /// task and may race an install); holds the current snapshot's meta.
    snapshot_meta: Mutex<Option<SnapshotMeta>>,
    /// The embedder's state machine, fed `Request::App` commands. Locked
    /// after `content` whenever both are held.
    app: Option<Mutex<Box<dyn Application>>>,
    /// Snapshots installed (from the leader or W) since open.
    installs: std::sync::atomic::AtomicU64,
    /// Test-only fault hooks (`fault.rs`): a stalled disk holds up snapshot writes.
    faults: Option<Arc<Faults>>,
}

impl SmInner {
    fn write_snapshot_file(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<()> {
        if let Some(f) = &self.faults {
            f.stall("write", &self.snapshot_path);
        }
        snapshot::write_file(&self.snapshot_path, meta, data)
    }
}

/// Why a snapshot and this node's kind of state machine do not go together.
fn app_mismatch(has_app: bool) -> String {
    if has_app {
        "it holds the key-value map only, but this node runs an application (both nodes must run the same application from the cluster's start)".into()
    } else {
        "it holds an application's state, but this node runs the key-value map (start it with the same application)"
            .into()
    }
}

/// Restores `app` from a snapshot's application part; checks the snapshot
/// and the node agree on having an application.
fn restore_app(app: Option<&mut (dyn Application + 'static)>, bytes: Option<Vec<u8>>, origin: &str) -> Result<()> {
    let bad = |reason: String| StoreError::BadSnapshot {
        origin: origin.to_string(),
        reason,
    };
    match (app, bytes) {
        (None, None) => Ok(()),
        (Some(app), Some(bytes)) => app
            .restore(&mut Cursor::new(bytes))
            .map_err(|e| bad(format!("the application refused it: {e}"))),
        (app, _) => Err(bad(app_mismatch(app.is_some()))),
    }
}

/// Runs an application's snapshot writer into memory.
fn write_app_snapshot(writer: crate::SnapshotWriter) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    writer(&mut out).map_err(|e| StoreError::BadSnapshot {
        origin: "the application's snapshot writer".into(),
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Applies one command of the application. A panic in `apply` is a bug in
/// the application, and deterministic in the usual case: the same command
/// would panic on every node and after every restart. It is caught here and
/// returned as a storage error naming the entry, which stops this node's
/// Raft core: the node stops serving and exits with that error, loudly,
/// instead of a core that waits forever for a result that never comes
/// (every later write a 504, the node still "ready"). The application's
/// state may be half-changed, which is why nothing of it is used after.
// openraft's trait returns its StorageError; boxing it here would only be unboxed at once.
#[allow(clippy::result_large_err)]
fn apply_app(app: &mut dyn Application, command: &[u8], log_id: LogId) -> Result<Response, StorageError> {
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app.apply(command))).map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        let e = std::io::Error::other(format!(
            "the application panicked applying the command of entry {log_id}: {why}"
        ));
        StorageError::from(openraft::StorageIOError::apply(log_id, &e))
    })?;
    Ok(match applied {
        Ok(result) => Response {
            ok: true,
            current: Some(result),
            refusal: None,
        },
        Err(why) => Response::refused(Refusal::Rejected(why)),
    })
}

/// The id of the session opened by request `position` of the entry at
/// `index`. Unique: the proposer packs concurrent requests into one entry,
/// so the log index alone gave every session opened in the same entry one
/// id, and their requests were taken for each other's retries (a write
/// acknowledged and never applied). `None` past 2^20 requests in an entry
/// (the proposer puts at most 4096) or an index too large to shift.
pub fn session_id(index: u64, position: usize) -> Option<u64> {
    const POSITION_BITS: u32 = 20;
    if position >= 1 << POSITION_BITS {
        return None;
    }
    index.checked_mul(1 << POSITION_BITS).map(|base| base | position as u64)
}

impl SmContent {
    /// Applies one request of a committed entry `log_id`: a session's
    /// request at most once (`crate::sessions`), a key-value request to the
    /// map, an `App` command to `app`. Public so that `walship wal verify`
    /// rebuilds the map from W exactly as nodes do (without an application).
    // openraft's trait returns its StorageError; boxing it here would only be unboxed at once.
    #[allow(clippy::result_large_err)]
    ///
    /// `position` is the request's place in its entry's batch: with the log
    /// index it names the request uniquely (one entry carries many).
    pub fn apply(
        &mut self,
        req: Request,
        log_id: LogId,
        position: usize,
        app: Option<&mut dyn Application>,
    ) -> Result<Response, StorageError> {
        match req {
            Request::OpenSession => match session_id(log_id.index, position) {
                Some(id) if self.sessions.open(id) => Ok(Response {
                    ok: true,
                    current: Some(id.to_le_bytes().to_vec()),
                    refusal: None,
                }),
                _ => Ok(Response::refused(Refusal::Malformed(format!(
                    "cannot open a session as request {position} of entry {log_id}"
                )))),
            },
            Request::Session {
                client,
                seq,
                acked_below,
                op,
            } => match self.sessions.admit(client, seq, acked_below, log_id.index) {
                Admit::Replay(reply) => Ok(reply),
                Admit::Refuse(why) => Ok(Response::refused(why)),
                Admit::Apply => {
                    let reply = match *op {
                        Request::OpenSession | Request::Session { .. } => {
                            Response::refused(Refusal::Malformed("a session request inside a session".into()))
                        }
                        op => self.apply_op(op, log_id, app)?,
                    };
                    self.sessions.record(client, seq, &reply);
                    Ok(reply)
                }
            },
            op => self.apply_op(op, log_id, app),
        }
    }

    #[allow(clippy::result_large_err)]
    fn apply_op(
        &mut self,
        req: Request,
        log_id: LogId,
        app: Option<&mut dyn Application>,
    ) -> Result<Response, StorageError> {
        match (req, app) {
            (Request::App(command), Some(app)) => apply_app(app, &command, log_id),
            (Request::App(_), None) => Ok(Response::refused(Refusal::NoApplication)),
            (req, _) => Ok(apply_request(&mut self.kv, req)),
        }
    }
}

/// Applies one key-value command to the map (the semantics clients see).
pub fn apply_request(kv: &mut BTreeMap<String, Vec<u8>>, req: Request) -> Response {
    match req {
        Request::Set { key, value } => {
            kv.insert(key, value.clone());
            Response {
                ok: true,
                current: Some(value),
                refusal: None,
            }
        }
        Request::Delete { key } => {
            kv.remove(&key);
            Response {
                ok: true,
                current: None,
                refusal: None,
            }
        }
        Request::Cas { key, expect, value } => {
            if kv.get(&key) != expect.as_ref() {
                return Response {
                    ok: false,
                    current: kv.get(&key).cloned(),
                    refusal: None,
                };
            }
            match &value {
                Some(v) => kv.insert(key, v.clone()),
                None => kv.remove(&key),
            };
            Response {
                ok: true,
                current: value,
                refusal: None,
            }
        }
        // Not the map's: `SmContent::apply` routes these.
        Request::App(_) => Response::refused(Refusal::NoApplication),
        Request::OpenSession | Request::Session { .. } => Response::refused(Refusal::Malformed(
            "a session request applied as a key-value one".into(),
        )),
    }
}

impl StateMachine {
    /// Opens the state machine under `data_dir`, loading and verifying
    /// `snapshot/current.snap` if there is one.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with_app(data_dir, None).await
    }

    /// As `open`, with an embedder's application to apply `Request::App`
    /// commands to (restored from the snapshot file if there is one).
    pub async fn open_with_app(data_dir: &Path, app: Option<Box<dyn Application>>) -> Result<Self> {
        Self::open_keeping_app(data_dir, app).await.map_err(|(e, _)| e)
    }

    /// As `open_with_app`, handing the application back on failure (so a
    /// caller can retry after moving a corrupt snapshot aside).
    pub(crate) async fn open_keeping_app(
        data_dir: &Path,
        app: Option<Box<dyn Application>>,
    ) -> std::result::Result<Self, (StoreError, Option<Box<dyn Application>>)> {
        let snapshot_path = data_dir.join("snapshot").join("current.snap");
        let path = snapshot_path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut app = app;
            let load = |app: &mut Option<Box<dyn Application>>| -> Result<_> {
                frame::create_dir_durable(path.parent().unwrap_or(&path))?;
                let Some((meta, data)) = snapshot::read_file(&path)? else {
                    return Ok(None);
                };
                let origin = path.display().to_string();
                let (content, app_bytes) = snapshot::decode_data_with_app(&data, &meta, &origin)
                    .map_err(|e| StoreError::corrupt(&path, 0, e.to_string()))?;
                restore_app(app.as_deref_mut(), app_bytes, &origin)?;
                Ok(Some((meta, content)))
            };
            match load(&mut app) {
                Ok(loaded) => Ok((loaded, app)),
                Err(e) => Err((e, app)),
            }
        })
        .await;
        let (loaded, app) = match loaded {
            Ok(res) => res?,
            Err(join) => return Err((join.into(), None)),
        };
        let (meta, content) = match loaded {
            Some((meta, content)) => (Some(meta), content),
            None => (None, SmContent::default()),
        };
        let inner = SmInner {
            snapshot_path,
            content: RwLock::new(content),
            snapshot_meta: Mutex::new(meta),
            app: app.map(Mutex::new),
            installs: std::sync::atomic::AtomicU64::new(0),
            faults: Faults::from_env(),
        };
        Ok(StateMachine { inner: Arc::new(inner) })
    }

    fn content(&self) -> RwLockReadGuard<'_, SmContent> {
        // Writers replace fields with ready values and cannot panic half way.
        self.inner.content.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.content().kv.get(key).cloned()
    }

    pub fn applied(&self) -> Option<LogId> {
        self.content().applied
    }

    pub fn membership(&self) -> StoredMembership {
        self.content().membership.clone()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.content().kv.len()
    }

    pub fn is_empty(&self) -> bool {
        self.content().kv.is_empty()
    }

    /// Whether the session table holds the answer to request `seq` of
    /// session `client` (it was applied here already).
    pub fn has_session_reply(&self, client: u64, seq: u64) -> bool {
        self.content().sessions.has_reply(client, seq)
    }

    /// Client sessions in the table.
    pub fn sessions(&self) -> usize {
        self.content().sessions.len()
    }

    /// Whether an embedder's application applies `Request::App` commands.
    pub fn has_app(&self) -> bool {
        self.inner.app.is_some()
    }

    /// Runs `f` on the application, if there is one (applying waits meanwhile).
    pub fn with_app<R>(&self, f: impl FnOnce(&dyn Application) -> R) -> Option<R> {
        let app = self.inner.app.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&**app))
    }

    /// The last log id of the current durable snapshot, if any.
    pub fn snapshot_last(&self) -> Option<LogId> {
        let meta = self.inner.snapshot_meta.lock().unwrap_or_else(|e| e.into_inner());
        meta.as_ref().and_then(|m| m.last_log_id)
    }

    /// How many snapshots were installed from the leader or W since open.
    pub fn installs(&self) -> u64 {
        self.inner.installs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The newest durable snapshot, verified, for shipping to ZooKeeper.
    pub async fn current_snapshot_bytes(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = inner.snapshot_meta.lock().unwrap_or_else(|e| e.into_inner());
            snapshot::read_file(&inner.snapshot_path)
        })
        .await?
    }

    /// Verifies `data` against `meta`, makes it the durable current snapshot,
    /// then replaces the map. With `only_if_newer`, a snapshot not beyond the
    /// applied id is ignored (returns false) so the state never goes back.
    pub async fn install_snapshot_bytes(
        &self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
        only_if_newer: bool,
    ) -> Result<bool> {
        if only_if_newer && meta.last_log_id <= self.applied() {
            return Ok(false);
        }
        let inner = self.inner.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            let origin = format!("snapshot {}", meta.snapshot_id);
            let (content, app_bytes) = snapshot::decode_data_with_app(&data, &meta, &origin)?;
            if app_bytes.is_some() != inner.app.is_some() {
                return Err(StoreError::BadSnapshot {
                    origin,
                    reason: app_mismatch(inner.app.is_some()),
                });
            }
            let mut current = inner.snapshot_meta.lock().unwrap_or_else(|e| e.into_inner());
            // The map and the application change together: nothing applies
            // in between.
            let mut c = inner.content.write().unwrap_or_else(|e| e.into_inner());
            if let Some(app) = &inner.app {
                let mut app = app.lock().unwrap_or_else(|e| e.into_inner());
                restore_app(Some(&mut **app), app_bytes, &origin)?;
            }
            inner.write_snapshot_file(&meta, &data)?;
            *current = Some(meta);
            *c = content;
            inner.installs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(true)
        })
        .await?
    }

    async fn build(&self) -> Result<Snapshot<TypeConfig>> {
        // A full copy, so apply is blocked only while copying, not while
        // encoding and writing. The application's state is taken under the
        // same lock, so both are at `applied`.
        let (content, app) = {
            let c = self.content();
            let app = self.with_app(|a| a.snapshot());
            (c.clone(), app)
        };
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let app = app.map(write_app_snapshot).transpose()?;
            let data = snapshot::encode_data(&content, app.as_deref())?;
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let snapshot_id = match content.applied {
                Some(l) => format!("{}-{}-{}-{millis}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => format!("none-{millis}"),
            };
            let meta = SnapshotMeta {
                last_log_id: content.applied,
                last_membership: content.membership,
                snapshot_id,
            };
            let mut current = inner.snapshot_meta.lock().unwrap_or_else(|e| e.into_inner());
            // An install that ran meanwhile may have left a newer snapshot.
            if current.as_ref().is_none_or(|c| c.last_log_id <= meta.last_log_id) {
                inner.write_snapshot_file(&meta, &data)?;
                *current = Some(meta.clone());
            }
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        })
        .await?
    }
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.content();
        f.debug_struct("StateMachine")
            .field("applied", &c.applied)
            .field("keys", &c.kv.len())
            .finish()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// Writes the snapshot durably before returning it (openraft may then
    /// purge the log it covers).
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.build()
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let c = self.content();
        Ok((c.applied, c.membership.clone()))
    }

    /// In memory only: durability comes from the log plus snapshots.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut c = self.inner.content.write().unwrap_or_else(|e| e.into_inner());
        let mut app = self
            .inner
            .app
            .as_ref()
            .map(|a| a.lock().unwrap_or_else(|e| e.into_inner()));
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let reply = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(batch) => {
                    let mut out = Vec::with_capacity(batch.ops.len());
                    for (position, req) in batch.ops.into_iter().enumerate() {
                        let app: Option<&mut dyn Application> = match app.as_mut() {
                            Some(a) => Some(&mut ***a),
                            None => None,
                        };
                        out.push(c.apply(req, log_id, position, app)?);
                    }
                    out
                }
                EntryPayload::Membership(m) => {
                    c.membership = StoredMembership::new(Some(log_id), m);
                    Vec::new()
                }
            };
            // Only once the whole entry is applied: a failed apply leaves
            // the entry unapplied (and the node stops; see `apply_app`).
            c.applied = Some(log_id);
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install_snapshot_bytes(meta, snapshot.into_inner(), false)
            .await
            .map(|_| ())
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self
            .current_snapshot_bytes()
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
