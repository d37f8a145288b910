//! `StateMachine`: the in-memory key-value map that applied entries build,
//! and the embedder's application if there is one ([`crate::Application`]), persisted
//! only through snapshots (`snapshot/current.snap`); after a restart
//! openraft re-applies the log from the snapshot to the saved committed id.

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
use walship_types::SnapshotFile;
use walship_types::SnapshotMeta;
use walship_types::StorageError;
use walship_types::StoredMembership;
use walship_types::TypeConfig;

use super::error::Result;
use super::error::StoreError;
use super::fault::Faults;
use super::frame;
use super::snapshot;
use super::snapshot::CheckedFile;
use super::snapshot::KvMap;
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
    /// A read-write lock: queries, validation and `read_app` share it and
    /// wait only while a batch applies (or a snapshot freezes the state).
    app: Option<RwLock<Box<dyn Application>>>,
    /// Snapshots installed (from the leader or W) since open.
    installs: std::sync::atomic::AtomicU64,
    /// Test-only fault hooks (`fault.rs`): a stalled disk holds up snapshot writes.
    faults: Option<Arc<Faults>>,
}

/// Files in `snapshot/` named so are snapshots on their way in (received,
/// being built); removed at open, never read as the current snapshot.
const STAGING_PREFIX: &str = "incoming-";

impl SmInner {
    fn snapshot_dir(&self) -> &Path {
        self.snapshot_path.parent().unwrap_or(&self.snapshot_path)
    }

    fn staging_path(&self, purpose: &str) -> PathBuf {
        self.snapshot_dir().join(format!("{STAGING_PREFIX}{purpose}.snap"))
    }

    fn is_staging(&self, path: &Path) -> bool {
        path.parent() == Some(self.snapshot_dir())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(STAGING_PREFIX))
    }

    /// Makes the checked staging file `staged` the durable current snapshot.
    fn promote(&self, staged: &Path) -> Result<()> {
        if let Some(f) = &self.faults {
            f.stall("write", &self.snapshot_path);
        }
        std::fs::rename(staged, &self.snapshot_path)
            .map_err(|e| StoreError::io("rename into place", &self.snapshot_path, e))?;
        frame::sync_parent_dir(&self.snapshot_path)
    }
}

/// A received snapshot file that fails its checks is a bad snapshot (not
/// this node's damaged disk: the rebuild hint would mislead).
fn refused_file(path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Corrupt {
            offset_bytes, reason, ..
        } => StoreError::BadSnapshot {
            origin: path.display().to_string(),
            reason: format!("at byte offset {offset_bytes}: {reason}"),
        },
        e => e,
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

/// Checks the snapshot file at `path` and the node agree on having an
/// application.
fn check_app_presence(has_app: bool, app_part: Option<(u64, u64)>, path: &Path) -> Result<()> {
    if has_app != app_part.is_some() {
        return Err(StoreError::BadSnapshot {
            origin: path.display().to_string(),
            reason: app_mismatch(has_app),
        });
    }
    Ok(())
}

/// Restores `app` from the application part of the snapshot file at
/// `path`, streaming it from the file.
fn restore_app(app: &mut dyn Application, path: &Path, part: (u64, u64)) -> Result<()> {
    let mut r = snapshot::open_app_part(path, part)?;
    app.restore(&mut r).map_err(|e| StoreError::BadSnapshot {
        origin: path.display().to_string(),
        reason: format!("the application refused it: {e}"),
    })
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
pub fn apply_request(kv: &mut KvMap, req: Request) -> Response {
    match req {
        Request::Set { key, value } => {
            kv.insert(key, value.clone().into());
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
            if kv.get(&key).map(|v| &v[..]) != expect.as_deref() {
                return Response {
                    ok: false,
                    current: kv.get(&key).map(|v| v.to_vec()),
                    refusal: None,
                };
            }
            match &value {
                Some(v) => kv.insert(key, v.clone().into()),
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
                let dir = path.parent().unwrap_or(&path);
                frame::create_dir_durable(dir)?;
                remove_staging_files(dir)?;
                // Two passes over the file: the CRC first, then decoding
                // (nothing is decoded from unchecked bytes).
                let Some(checked) = snapshot::check_file(&path)? else {
                    return Ok(None);
                };
                let (content, app_part) = snapshot::read_content(&path, &checked)
                    .map_err(|e| StoreError::corrupt(&path, 0, e.to_string()))?;
                check_app_presence(app.is_some(), app_part, &path)?;
                if let (Some(app), Some(part)) = (app.as_deref_mut(), app_part) {
                    restore_app(app, &path, part)?;
                }
                Ok(Some((checked.meta, content)))
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
            app: app.map(RwLock::new),
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
        self.content().kv.get(key).map(|v| v.to_vec())
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

    /// Runs `f` on the application, if there is one (applying waits
    /// meanwhile; other readers do not).
    pub fn with_app<R>(&self, f: impl FnOnce(&dyn Application) -> R) -> Option<R> {
        let app = self.inner.app.as_ref()?.read().unwrap_or_else(|e| e.into_inner());
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

    /// Where a snapshot on its way in is staged: `purpose` keeps
    /// concurrent receivers apart ("leader", "witness"). A file there is
    /// taken over (renamed, not copied) by [`Self::install_snapshot_file`];
    /// any left over is removed at the next open.
    pub fn staging_path(&self, purpose: &str) -> PathBuf {
        self.inner.staging_path(purpose)
    }

    /// The current durable snapshot as an open file (at its start), its
    /// data blob's CRC verified through that same file, so what was checked
    /// is what a reader gets even if a newer snapshot replaces the path
    /// meanwhile. `None` if there is none.
    pub async fn current_snapshot(&self) -> Result<Option<CurrentSnapshot>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = inner.snapshot_meta.lock().unwrap_or_else(|e| e.into_inner());
            let path = &inner.snapshot_path;
            let mut f = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::io("open", path, e)),
            };
            let len = f.metadata().map_err(|e| StoreError::io("stat", path, e))?.len();
            let reader = f.try_clone().map_err(|e| StoreError::io("open", path, e))?;
            let checked = snapshot::check_open_file(path, reader, len)?;
            std::io::Seek::rewind(&mut f).map_err(|e| StoreError::io("seek", path, e))?;
            Ok(Some(CurrentSnapshot {
                meta: checked.meta,
                data_offset_bytes: checked.data_offset,
                data_bytes: checked.data_bytes,
                file: SnapshotFile {
                    file: tokio::fs::File::from_std(f),
                    path: path.clone(),
                },
            }))
        })
        .await?
    }

    /// Installs the snapshot file `file` (walship's snapshot file format,
    /// read from its start) as the durable current snapshot and replaces the
    /// state with it: checks its CRC and that its meta is `meta`, decodes it
    /// streaming, restores the application from it, then renames it into
    /// place. A file staged at [`Self::staging_path`] is renamed; any other
    /// is copied in first. With `only_if_newer`, a snapshot not beyond the
    /// applied id is ignored (returns false) so the state never goes back.
    /// A bad file changes nothing and is removed if it was staged.
    pub async fn install_snapshot_file(
        &self,
        meta: &SnapshotMeta,
        file: SnapshotFile,
        only_if_newer: bool,
    ) -> Result<bool> {
        if only_if_newer && meta.last_log_id <= self.applied() {
            return Ok(false);
        }
        let inner = self.inner.clone();
        let meta = meta.clone();
        let SnapshotFile { file, path } = file;
        let mut src = file.into_std().await;
        tokio::task::spawn_blocking(move || {
            let staged = if inner.is_staging(&path) {
                path
            } else {
                // Not staged here (openraft's conformance suite hands over
                // another store's file): copy it in, streaming.
                let staged = inner.staging_path("copy");
                let mut copy = || -> std::io::Result<()> {
                    std::io::Seek::rewind(&mut src)?;
                    let mut dst = std::fs::File::create(&staged)?;
                    std::io::copy(&mut src, &mut dst)?;
                    dst.sync_all()
                };
                copy().map_err(|e| StoreError::io("copy into", &staged, e))?;
                staged
            };
            drop(src);
            let res = install_staged(&inner, &meta, &staged);
            if res.is_err() {
                let _ = std::fs::remove_file(&staged);
            }
            res
        })
        .await?
    }

    /// Checks a snapshot file received at `path` (its CRCs, and that it
    /// holds `meta`) without installing it: a bad transfer is then refused
    /// to its sender, not turned into a storage error of this node's Raft.
    pub async fn check_snapshot_file(&self, path: &Path, meta: &SnapshotMeta) -> Result<()> {
        let (path, meta) = (path.to_path_buf(), meta.clone());
        tokio::task::spawn_blocking(move || {
            let checked = snapshot::check_file(&path)
                .map_err(|e| refused_file(&path, e))?
                .ok_or_else(|| StoreError::io("open", &path, std::io::ErrorKind::NotFound.into()))?;
            check_meta(&checked, &meta, &path)
        })
        .await?
    }

    /// As [`Self::install_snapshot_file`], from a bare data blob in the file
    /// `blob` (W's snapshot as read from ZooKeeper) that `meta` describes.
    pub async fn install_snapshot_blob(&self, meta: &SnapshotMeta, blob: &Path, only_if_newer: bool) -> Result<bool> {
        if only_if_newer && meta.last_log_id <= self.applied() {
            return Ok(false);
        }
        let inner = self.inner.clone();
        let meta = meta.clone();
        let blob = blob.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let staged = inner.staging_path("blob");
            let res = snapshot::write_file_from_blob(&staged, &meta, &blob)
                .and_then(|()| install_staged(&inner, &meta, &staged));
            if res.is_err() {
                let _ = std::fs::remove_file(&staged);
            }
            res
        })
        .await?
    }

    async fn build(&self) -> Result<Snapshot<TypeConfig>> {
        // The freeze under the lock is cheap: the map is persistent (a
        // clone shares it), and the application hands over a writer of a
        // frozen view. Both are at `applied`. Encoding and writing run after,
        // while applying goes on.
        let (content, app) = {
            let c = self.content();
            let app = self.with_app(|a| a.snapshot());
            (c.clone(), app)
        };
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let snapshot_id = match content.applied {
                Some(l) => format!("{}-{}-{}-{millis}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => format!("none-{millis}"),
            };
            let meta = SnapshotMeta {
                last_log_id: content.applied,
                last_membership: content.membership.clone(),
                snapshot_id,
            };
            let built = inner.staging_path("build");
            snapshot::write_file(&built, &meta, &content, app)?;
            drop(content);
            let file = std::fs::File::open(&built).map_err(|e| StoreError::io("open", &built, e))?;
            let mut current = inner.snapshot_meta.lock().unwrap_or_else(|e| e.into_inner());
            // An install that ran meanwhile may have left a newer snapshot.
            let path = if current.as_ref().is_none_or(|c| c.last_log_id <= meta.last_log_id) {
                inner.promote(&built)?;
                *current = Some(meta.clone());
                inner.snapshot_path.clone()
            } else {
                // The open file stays readable for openraft.
                let _ = std::fs::remove_file(&built);
                built
            };
            Ok(Snapshot {
                meta,
                snapshot: Box::new(SnapshotFile {
                    file: tokio::fs::File::from_std(file),
                    path,
                }),
            })
        })
        .await?
    }
}

/// The current snapshot, opened ([`StateMachine::current_snapshot`]).
#[derive(Debug)]
pub struct CurrentSnapshot {
    pub meta: SnapshotMeta,
    /// The whole snapshot file, at its start.
    pub file: SnapshotFile,
    /// Where the data blob (what W stores) starts in the file, and its size.
    pub data_offset_bytes: u64,
    pub data_bytes: u64,
}

/// Checks the staged snapshot file, decodes it, then, with applying held
/// off, restores the application from it, renames it into place and swaps
/// the map in.
fn install_staged(inner: &SmInner, meta: &SnapshotMeta, staged: &Path) -> Result<bool> {
    let checked: CheckedFile = snapshot::check_file(staged)
        .map_err(|e| refused_file(staged, e))?
        .ok_or_else(|| StoreError::io("open", staged, std::io::ErrorKind::NotFound.into()))?;
    check_meta(&checked, meta, staged)?;
    let (content, app_part) = snapshot::read_content(staged, &checked).map_err(|e| refused_file(staged, e))?;
    check_app_presence(inner.app.is_some(), app_part, staged)?;
    let mut current = inner.snapshot_meta.lock().unwrap_or_else(|e| e.into_inner());
    // The map and the application change together: nothing applies in
    // between.
    let mut c = inner.content.write().unwrap_or_else(|e| e.into_inner());
    if let (Some(app), Some(part)) = (&inner.app, app_part) {
        let mut app = app.write().unwrap_or_else(|e| e.into_inner());
        restore_app(&mut **app, staged, part)?;
    }
    inner.promote(staged)?;
    *current = Some(checked.meta);
    *c = content;
    inner.installs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(true)
}

fn check_meta(checked: &CheckedFile, meta: &SnapshotMeta, path: &Path) -> Result<()> {
    if checked.meta != *meta {
        return Err(StoreError::BadSnapshot {
            origin: path.display().to_string(),
            reason: format!(
                "the file holds snapshot {:?}, not the {:?} it came as",
                checked.meta, meta
            ),
        });
    }
    Ok(())
}

/// Removes snapshots left half-received or half-built by a crash.
fn remove_staging_files(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("list", dir, e)),
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(STAGING_PREFIX))
        {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
        }
    }
    Ok(())
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
            .map(|a| a.write().unwrap_or_else(|e| e.into_inner()));
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            walship_types::stages::mark(log_id.index, walship_types::stages::Mark::ApplyStart);
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
            walship_types::stages::mark(log_id.index, walship_types::stages::Mark::ApplyEnd);
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// An empty staging file in `snapshot/` (openraft's chunked receive,
    /// which walship does not use; `install_snapshot` takes whatever file).
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let path = self.staging_path("raft");
        let file = tokio::fs::File::create(&path).await.map_err(|e| {
            StoreError::io("create", &path, e).into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write)
        })?;
        Ok(Box::new(SnapshotFile { file, path }))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<SnapshotFile>) -> Result<(), StorageError> {
        self.install_snapshot_file(meta, *snapshot, false)
            .await
            .map(|_| ())
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self
            .current_snapshot()
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(current.map(|c| Snapshot {
            meta: c.meta,
            snapshot: Box::new(c.file),
        }))
    }
}
