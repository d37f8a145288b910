//! Snapshot formats. The data blob (what the node ships to ZooKeeper, and
//! the tail of every snapshot file) checks itself:
//! `[magic 8][body_len u64][crc32 u32][body]`, the body being bincode
//! `SmContent` under magic `WSHIPSD2` (the key-value map and the session
//! table), or bincode `(SmContent, app bytes)` under `WSHIPSA2` when the node
//! runs an embedder's application (`crate::Application`); the CRC covers the
//! whole body either way. `WSHIPSD1`/`WSHIPSA1` are the same without the
//! session table (snapshots written before it), read with an empty one. The
//! file `snapshot/current.snap` is `[magic 8][record: bincode SnapshotMeta]
//! [data blob]`, replaced atomically; the leader ships that whole file to
//! its follower.
//!
//! Everything here streams: a snapshot is encoded straight into its file
//! (length and CRC patched into the header once the body is written),
//! checked in one pass over the file, then decoded in a second, so memory
//! does not grow with the snapshot, only with the largest single value.

use std::fs::File;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::path::Path;

use bincode::Options;
use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;
use walship_types::LogId;
use walship_types::SnapshotMeta;
use walship_types::StoredMembership;

use super::error::Result;
use super::error::StoreError;
use super::frame;
use crate::sessions::Sessions;
use crate::SnapshotWriter;

const DATA_MAGIC: &[u8; 8] = b"WSHIPSD2";
/// A data blob that also carries an application's snapshot.
const APP_DATA_MAGIC: &[u8; 8] = b"WSHIPSA2";
/// The same before the session table: decoded with an empty table.
const DATA_MAGIC_V1: &[u8; 8] = b"WSHIPSD1";
const APP_DATA_MAGIC_V1: &[u8; 8] = b"WSHIPSA1";
const KNOWN_DATA_MAGICS: [&[u8; 8]; 4] = [DATA_MAGIC, APP_DATA_MAGIC, DATA_MAGIC_V1, APP_DATA_MAGIC_V1];
pub const DATA_HEADER_BYTES: u64 = 8 + 8 + 4;
const FILE_MAGIC: &[u8; 8] = b"WSHIPSF1";
/// A snapshot meta is a few hundred bytes; a larger length is damage.
const MAX_META_BYTES: u32 = 16 << 20;
/// Buffer of every streaming read and write of a snapshot.
pub const IO_BUFFER_BYTES: usize = 1 << 20;

/// The key-value map: a persistent (structurally shared) B-tree, so taking
/// a snapshot's frozen copy under the apply lock costs a pointer copy, not a
/// copy of the state (`imbl`, maintained; clone is O(1), and an update of a
/// map shared with a running snapshot copies only the path it touches).
/// Values are `Bytes`, so a value read or copied out of the map shares its
/// buffer.
pub type KvMap = imbl::OrdMap<String, Bytes>;

/// Everything the state machine holds; a snapshot is this, encoded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SmContent {
    #[serde(with = "kv_map")]
    pub kv: KvMap,
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Client sessions, for exactly-once requests (`crate::sessions`).
    pub sessions: Sessions,
}

/// `SmContent` as snapshots before the session table held it.
#[derive(Deserialize)]
struct SmContentV1 {
    #[serde(with = "kv_map")]
    kv: KvMap,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl From<SmContentV1> for SmContent {
    fn from(v1: SmContentV1) -> SmContent {
        SmContent {
            kv: v1.kv,
            applied: v1.applied,
            membership: v1.membership,
            sessions: Sessions::default(),
        }
    }
}

/// The map encoded exactly as `walship_types::bytes_map` encodes a
/// `BTreeMap<String, Vec<u8>>` (the format every snapshot so far used): a
/// map, in key order, of strings to byte strings.
mod kv_map {
    use std::fmt;

    use serde::de::MapAccess;
    use serde::de::Visitor;
    use serde::Deserializer;
    use serde::Serializer;

    use super::KvMap;

    pub fn serialize<S: Serializer>(map: &KvMap, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, serde_bytes::Bytes::new(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KvMap, D::Error> {
        struct MapOfBytes;
        impl<'de> Visitor<'de> for MapOfBytes {
            type Value = KvMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings to byte strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = KvMap::new();
                while let Some((k, v)) = access.next_entry::<String, serde_bytes::ByteBuf>()? {
                    map.insert(k, v.into_vec().into());
                }
                Ok(map)
            }
        }
        d.deserialize_map(MapOfBytes)
    }
}

/// Counts and checksums the bytes on their way to `inner`.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn encode_error(source: bincode::Error) -> StoreError {
    StoreError::Encode {
        what: "snapshot",
        source,
    }
}

/// Writes the data blob of `content` (and of the application's writer, if
/// the node runs one) at `out`'s position, streaming: the header's length
/// and CRC, and the application part's length, are written as placeholders
/// and patched once known (the CRC of the whole body is combined from its
/// parts' with crc32fast's `combine`, so nothing is read back). Returns the
/// blob's size in bytes; `out` is left at the blob's end.
pub fn encode_data_to<W: Write + Seek>(out: &mut W, content: &SmContent, app: Option<SnapshotWriter>) -> Result<u64> {
    let io = |e: std::io::Error| encode_error(bincode::Error::from(e));
    let start = out.stream_position().map_err(io)?;
    let magic = if app.is_some() { APP_DATA_MAGIC } else { DATA_MAGIC };
    out.write_all(magic).map_err(io)?;
    out.write_all(&[0u8; 12]).map_err(io)?;
    let (body_bytes, crc, app_len_at) = {
        let mut app_len_at = None;
        let mut w = CrcWriter {
            inner: BufWriter::with_capacity(IO_BUFFER_BYTES, &mut *out),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        bincode::serialize_into(&mut w, content).map_err(encode_error)?;
        let content_bytes = w.bytes;
        if let Some(writer) = app {
            // The body is bincode of `(content, app bytes)`: the app part is a
            // u64 length, then the bytes. The length is known only afterwards.
            let content_crc = std::mem::replace(&mut w.crc, crc32fast::Hasher::new());
            w.inner.write_all(&[0u8; 8]).map_err(io)?;
            writer(&mut w).map_err(|e| StoreError::BadSnapshot {
                origin: "the application's snapshot writer".into(),
                reason: e.to_string(),
            })?;
            let app_bytes = w.bytes - content_bytes;
            let mut len_crc = crc32fast::Hasher::new();
            len_crc.update(&app_bytes.to_le_bytes());
            let mut body_crc = content_crc;
            body_crc.combine(&len_crc);
            body_crc.combine(&w.crc);
            w.crc = body_crc;
            w.bytes += 8;
            app_len_at = Some((start + DATA_HEADER_BYTES + content_bytes, app_bytes));
        }
        w.flush().map_err(io)?;
        (w.bytes, w.crc.clone().finalize(), app_len_at)
    };
    let end = start + DATA_HEADER_BYTES + body_bytes;
    let mut patch = |at: u64, bytes: &[u8]| -> std::io::Result<()> {
        out.seek(SeekFrom::Start(at))?;
        out.write_all(bytes)
    };
    if let Some((at, app_bytes)) = app_len_at {
        patch(at, &app_bytes.to_le_bytes()).map_err(io)?;
    }
    patch(start + 8, &body_bytes.to_le_bytes()).map_err(io)?;
    patch(start + 16, &crc.to_le_bytes()).map_err(io)?;
    out.seek(SeekFrom::Start(end)).map_err(io)?;
    Ok(end - start)
}

/// A data blob in memory (tests, small tools). `app`: the application's
/// snapshot, if the node runs one.
pub fn encode_data(content: &SmContent, app: Option<&[u8]>) -> Result<Vec<u8>> {
    let app = app.map(|bytes| {
        let bytes = bytes.to_vec();
        Box::new(move |w: &mut dyn Write| w.write_all(&bytes)) as SnapshotWriter
    });
    let mut out = std::io::Cursor::new(Vec::new());
    encode_data_to(&mut out, content, app)?;
    Ok(out.into_inner())
}

/// Checks a data blob read from `r` (`len_bytes` in all): magic, length,
/// and the CRC of its body, in one pass. On failure, the byte offset within
/// the blob and why. Returns the blob's magic.
pub fn verify_data_stream(r: &mut impl Read, len_bytes: u64) -> std::result::Result<[u8; 8], (u64, String)> {
    let read_err = |at: u64, e: std::io::Error| (at, format!("cannot read: {e}"));
    let mut head = [0u8; DATA_HEADER_BYTES as usize];
    if len_bytes < DATA_HEADER_BYTES {
        return Err((0, "not a walship snapshot (bad magic or too short)".into()));
    }
    r.read_exact(&mut head).map_err(|e| read_err(0, e))?;
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&head[..8]);
    if !KNOWN_DATA_MAGICS.iter().any(|m| **m == magic) {
        return Err((0, "not a walship snapshot (bad magic or too short)".into()));
    }
    let body_len = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes"));
    let have = len_bytes - DATA_HEADER_BYTES;
    if have != body_len {
        return Err((8, format!("snapshot body should be {body_len} bytes, is {have}")));
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; IO_BUFFER_BYTES];
    let mut left = body_len;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        r.read_exact(&mut buf[..n])
            .map_err(|e| read_err(DATA_HEADER_BYTES + body_len - left, e))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let actual = hasher.finalize();
    if actual != crc {
        return Err((
            16,
            format!("snapshot crc32 mismatch: stored {crc:08x}, computed {actual:08x}"),
        ));
    }
    Ok(magic)
}

/// Decodes a verified blob's body from `r` (positioned just after the
/// blob's header): the content, and for an application's blob the length
/// of the application part that `r` is then positioned at. `body_len`
/// bounds what is read, and the whole body must be used.
fn decode_body<R: Read>(magic: &[u8; 8], r: &mut std::io::Take<R>, origin: &str) -> Result<(SmContent, Option<u64>)> {
    let bad = |reason: String| StoreError::BadSnapshot {
        origin: origin.to_string(),
        reason,
    };
    let undecodable = |e: bincode::Error| bad(format!("undecodable: {e}"));
    let with_app = magic == APP_DATA_MAGIC || magic == APP_DATA_MAGIC_V1;
    // `bincode::deserialize`'s encoding, bounded by the body: from a stream
    // bincode allocates a byte string's claimed length before reading it,
    // so a length past the body is refused first, not allocated.
    let options = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(r.limit());
    let content: SmContent = if magic == DATA_MAGIC_V1 || magic == APP_DATA_MAGIC_V1 {
        options
            .deserialize_from::<_, SmContentV1>(&mut *r)
            .map_err(undecodable)?
            .into()
    } else {
        options.deserialize_from(&mut *r).map_err(undecodable)?
    };
    if !with_app {
        if r.limit() != 0 {
            return Err(bad(format!("{} bytes after the content", r.limit())));
        }
        return Ok((content, None));
    }
    let mut len = [0u8; 8];
    r.read_exact(&mut len)
        .map_err(|e| bad(format!("undecodable: the application part's length: {e}")))?;
    let app_len = u64::from_le_bytes(len);
    if app_len != r.limit() {
        return Err(bad(format!(
            "the application part says {app_len} bytes, {} remain",
            r.limit()
        )));
    }
    Ok((content, Some(app_len)))
}

fn check_against_meta(content: &SmContent, meta: &SnapshotMeta, origin: &str) -> Result<()> {
    if content.applied != meta.last_log_id || content.membership != meta.last_membership {
        return Err(StoreError::BadSnapshot {
            origin: origin.to_string(),
            reason: format!(
                "data holds applied {:?} / membership {:?}, but its meta says {:?} / {:?}",
                content.applied, content.membership, meta.last_log_id, meta.last_membership
            ),
        });
    }
    Ok(())
}

/// Verifies and decodes a data blob in memory, and checks it matches
/// `meta`. `origin` names where the blob came from, for the error. An
/// application's part, if any, is left out (see `decode_data_with_app`).
pub fn decode_data(data: &[u8], meta: &SnapshotMeta, origin: &str) -> Result<SmContent> {
    decode_data_with_app(data, meta, origin).map(|(content, _)| content)
}

/// As `decode_data`, plus the application's snapshot if the blob has one.
pub fn decode_data_with_app(data: &[u8], meta: &SnapshotMeta, origin: &str) -> Result<(SmContent, Option<Vec<u8>>)> {
    let bad = |reason: String| StoreError::BadSnapshot {
        origin: origin.to_string(),
        reason,
    };
    let magic = verify_data_stream(&mut &data[..], data.len() as u64)
        .map_err(|(off, why)| bad(format!("at byte {off}: {why}")))?;
    let body = &data[DATA_HEADER_BYTES as usize..];
    let mut r = body.take(body.len() as u64);
    let (content, app_len) = decode_body(&magic, &mut r, origin)?;
    check_against_meta(&content, meta, origin)?;
    let app = match app_len {
        Some(_) => {
            let mut app = Vec::new();
            r.read_to_end(&mut app).map_err(|e| bad(e.to_string()))?;
            Some(app)
        }
        None => None,
    };
    Ok((content, app))
}

/// Decodes a data blob file (W's snapshot as read from ZooKeeper: the blob
/// alone, no file header), verifying it first; the application part, if
/// any, is skipped. `origin` names the blob for errors.
pub fn decode_data_file(path: &Path, meta: &SnapshotMeta, origin: &str) -> Result<SmContent> {
    let bad = |reason: String| StoreError::BadSnapshot {
        origin: origin.to_string(),
        reason,
    };
    let open = || File::open(path).map_err(|e| StoreError::io("open", path, e));
    let len = open()?.metadata().map_err(|e| StoreError::io("stat", path, e))?.len();
    let mut r = BufReader::with_capacity(IO_BUFFER_BYTES, open()?);
    let magic = verify_data_stream(&mut r, len).map_err(|(off, why)| bad(format!("at byte {off}: {why}")))?;
    let mut r = BufReader::with_capacity(IO_BUFFER_BYTES, open()?);
    r.seek(SeekFrom::Start(DATA_HEADER_BYTES))
        .map_err(|e| StoreError::io("seek", path, e))?;
    let (content, _) = decode_body(&magic, &mut r.take(len - DATA_HEADER_BYTES), origin)?;
    check_against_meta(&content, meta, origin)?;
    Ok(content)
}

/// A snapshot file whose meta record and data blob were checked: where its
/// data blob lies.
#[derive(Clone, Debug)]
pub struct CheckedFile {
    pub meta: SnapshotMeta,
    pub data_offset: u64,
    pub data_bytes: u64,
    magic: [u8; 8],
}

/// `[FILE_MAGIC][meta record]`: a snapshot file's head.
pub fn file_head(path: &Path, meta: &SnapshotMeta) -> Result<Vec<u8>> {
    let meta_bytes = bincode::serialize(meta).map_err(|source| StoreError::Encode {
        what: "snapshot meta",
        source,
    })?;
    let mut bytes = Vec::with_capacity(8 + frame::RECORD_HEADER_BYTES + meta_bytes.len());
    bytes.extend_from_slice(FILE_MAGIC);
    frame::encode_record(&mut bytes, &meta_bytes, path)?;
    Ok(bytes)
}

/// Writes a whole snapshot file at `path` (a temporary name; the caller
/// renames it into place): the head, then the data blob of `content` and
/// `app`, streamed; fsync'd. Returns the data blob's size in bytes.
pub fn write_file(path: &Path, meta: &SnapshotMeta, content: &SmContent, app: Option<SnapshotWriter>) -> Result<u64> {
    let mut f = File::create(path).map_err(|e| StoreError::io("create", path, e))?;
    f.write_all(&file_head(path, meta)?)
        .map_err(|e| StoreError::io("write", path, e))?;
    let data_bytes = encode_data_to(&mut f, content, app)?;
    f.sync_all().map_err(|e| StoreError::io("fsync", path, e))?;
    Ok(data_bytes)
}

/// Writes a snapshot file at `path` from a data blob read from `blob` (W's
/// snapshot, fetched into a file): the head, then the blob copied by the
/// kernel where it can (`std::io::copy` between files); fsync'd. The blob is
/// checked afterwards by [`check_file`].
pub fn write_file_from_blob(path: &Path, meta: &SnapshotMeta, blob: &Path) -> Result<()> {
    let mut f = File::create(path).map_err(|e| StoreError::io("create", path, e))?;
    f.write_all(&file_head(path, meta)?)
        .map_err(|e| StoreError::io("write", path, e))?;
    let mut src = File::open(blob).map_err(|e| StoreError::io("open", blob, e))?;
    std::io::copy(&mut src, &mut f).map_err(|e| StoreError::io("copy into", path, e))?;
    f.sync_all().map_err(|e| StoreError::io("fsync", path, e))
}

/// Reads a snapshot file's head and checks its data blob's CRC in one
/// streaming pass; `None` if there is no file. Any damage is `Corrupt`
/// naming the file and the byte offset.
pub fn check_file(path: &Path) -> Result<Option<CheckedFile>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("open", path, e)),
    };
    let len = f.metadata().map_err(|e| StoreError::io("stat", path, e))?.len();
    check_open_file(path, f, len).map(Some)
}

/// As [`check_file`], on a file already open (read from its start).
pub fn check_open_file(path: &Path, f: File, len: u64) -> Result<CheckedFile> {
    let mut r = BufReader::with_capacity(IO_BUFFER_BYTES, f);
    let head_bytes = (8 + frame::RECORD_HEADER_BYTES) as u64;
    let mut head = [0u8; 8 + frame::RECORD_HEADER_BYTES];
    if len < head_bytes || r.read_exact(&mut head).is_err() || &head[..8] != FILE_MAGIC {
        return Err(StoreError::corrupt(
            path,
            0,
            "bad magic (not a walship snapshot file, or damaged)",
        ));
    }
    let meta_len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    let meta_crc = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
    let data_offset = head_bytes + meta_len as u64;
    if meta_len > MAX_META_BYTES || len < data_offset {
        return Err(StoreError::corrupt(
            path,
            8,
            format!("meta record of {meta_len} bytes runs past the end"),
        ));
    }
    let mut meta_payload = vec![0u8; meta_len as usize];
    r.read_exact(&mut meta_payload)
        .map_err(|e| StoreError::io("read", path, e))?;
    let actual = crc32fast::hash(&meta_payload);
    if actual != meta_crc {
        return Err(StoreError::corrupt(
            path,
            8,
            format!("crc32 mismatch: stored {meta_crc:08x}, computed {actual:08x}"),
        ));
    }
    let meta: SnapshotMeta = bincode::deserialize(&meta_payload)
        .map_err(|e| StoreError::corrupt(path, 8, format!("undecodable snapshot meta: {e}")))?;
    let data_bytes = len - data_offset;
    let magic = verify_data_stream(&mut r, data_bytes)
        .map_err(|(off, why)| StoreError::corrupt(path, data_offset + off, why))?;
    Ok(CheckedFile {
        meta,
        data_offset,
        data_bytes,
        magic,
    })
}

/// Decodes a checked snapshot file's content, streaming, and checks it
/// against the file's meta. For an application's snapshot, also returns
/// where its part lies (offset, bytes) for [`open_app_part`].
pub fn read_content(path: &Path, checked: &CheckedFile) -> Result<(SmContent, Option<(u64, u64)>)> {
    let origin = path.display().to_string();
    let f = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let mut r = BufReader::with_capacity(IO_BUFFER_BYTES, f);
    let body_at = checked.data_offset + DATA_HEADER_BYTES;
    r.seek(SeekFrom::Start(body_at))
        .map_err(|e| StoreError::io("seek", path, e))?;
    let body_len = checked.data_bytes - DATA_HEADER_BYTES;
    let mut body = r.take(body_len);
    let (content, app_len) = decode_body(&checked.magic, &mut body, &origin)?;
    check_against_meta(&content, &checked.meta, &origin)?;
    Ok((content, app_len.map(|n| (body_at + body_len - n, n))))
}

/// A reader of the application part of a snapshot file (see
/// [`read_content`]), for `Application::restore`.
pub fn open_app_part(path: &Path, (offset, len): (u64, u64)) -> Result<impl Read> {
    let f = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let mut r = BufReader::with_capacity(IO_BUFFER_BYTES, f);
    r.seek(SeekFrom::Start(offset))
        .map_err(|e| StoreError::io("seek", path, e))?;
    Ok(r.take(len))
}
