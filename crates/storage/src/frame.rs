//! Byte formats shared by all storage files: CRC'd records
//! (`[len u32 LE][crc32 u32 LE][payload]`), small self-checking files
//! (`[magic 8][len u32][crc u32][payload]`), and atomic file replacement.

use std::fs;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use super::error::Result;
use super::error::StoreError;

pub const RECORD_HEADER_BYTES: usize = 8;
const MAGIC_BYTES: usize = 8;

/// Appends one record framing `payload` to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, payload: &[u8], path: &Path) -> Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        StoreError::Invariant(format!(
            "record of {} bytes for {} exceeds 4 GiB",
            payload.len(),
            path.display()
        ))
    })?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(())
}

/// How a scan of a record file ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belonged to a good record.
    Clean,
    /// From this byte offset on the file holds an unfinished or torn write:
    /// only zero bytes, a record header or payload cut short, a record whose
    /// crc32 does not match (a torn page keeps its length and holds garbage),
    /// or one `on_record` refused as `Corrupt`. `reason` says which.
    TornTail { offset_bytes: u64, reason: String },
}

/// Calls `on_record(offset, payload)` for every record in `bytes`, checking
/// each CRC. With `allow_torn_tail` the first bad record (see
/// `ScanEnd::TornTail`) ends the scan as a torn tail; otherwise it is a
/// `Corrupt` error naming `path`, as is any error `on_record` returns.
/// Offsets are `base_offset_bytes` plus the position in `bytes`.
pub fn scan_records(
    path: &Path,
    bytes: &[u8],
    base_offset_bytes: u64,
    allow_torn_tail: bool,
    mut on_record: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<ScanEnd> {
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let at = base_offset_bytes + pos as u64;
        let torn = |reason: &str| {
            if allow_torn_tail {
                Ok(ScanEnd::TornTail {
                    offset_bytes: at,
                    reason: reason.to_string(),
                })
            } else {
                Err(StoreError::corrupt(path, at, reason))
            }
        };
        // Zeros are what a crash leaves when the file grew but the data
        // never reached the disk; no real record starts with a zero length.
        if rest.iter().all(|b| *b == 0) {
            return torn("zero bytes where a record should start");
        }
        if rest.len() < RECORD_HEADER_BYTES {
            return torn("record header cut short");
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let body = &rest[RECORD_HEADER_BYTES..];
        if body.len() < len {
            return torn(&format!("record claims {len} bytes, only {} remain", body.len()));
        }
        let payload = &body[..len];
        let actual = crc32fast::hash(payload);
        if actual != crc {
            return torn(&format!("crc32 mismatch: stored {crc:08x}, computed {actual:08x}"));
        }
        match on_record(at, payload) {
            Err(StoreError::Corrupt { reason, .. }) if allow_torn_tail => return torn(&reason),
            res => res?,
        }
        pos += RECORD_HEADER_BYTES + len;
    }
    Ok(ScanEnd::Clean)
}

/// Atomically replaces `path` with a checked file holding `payload`.
pub fn write_checked_file(path: &Path, magic: &[u8; MAGIC_BYTES], payload: &[u8]) -> Result<()> {
    let mut bytes = Vec::with_capacity(MAGIC_BYTES + RECORD_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(magic);
    encode_record(&mut bytes, payload, path)?;
    write_atomic(path, &bytes)
}

/// Reads a file written by [`write_checked_file`]; `None` if it does not exist.
pub fn read_checked_file(path: &Path, magic: &[u8; MAGIC_BYTES]) -> Result<Option<Vec<u8>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read", path, e)),
    };
    if bytes.len() < MAGIC_BYTES || &bytes[..MAGIC_BYTES] != magic {
        return Err(StoreError::corrupt(
            path,
            0,
            "bad magic (not a walship file, or damaged)",
        ));
    }
    let mut payload = None;
    let body = &bytes[MAGIC_BYTES..];
    scan_records(path, body, MAGIC_BYTES as u64, false, |offset, p| {
        if payload.is_some() {
            return Err(StoreError::corrupt(path, offset, "trailing bytes after the record"));
        }
        payload = Some(p.to_vec());
        Ok(())
    })?;
    payload
        .map(Some)
        .ok_or_else(|| StoreError::corrupt(path, MAGIC_BYTES as u64, "no record after the magic"))
}

/// Writes `bytes` to `<path>.tmp`, fsyncs it, renames it over `path` and
/// fsyncs the directory, so a crash leaves either the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| StoreError::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| StoreError::io("fsync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| StoreError::io("rename into place", path, e))?;
    sync_parent_dir(path)
}

pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes creations, renames and deletions inside `path`'s directory durable.
pub fn sync_parent_dir(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// `fs::create_dir_all` plus fsync of the parent, so the directory survives a crash.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
    sync_parent_dir(dir)
}
