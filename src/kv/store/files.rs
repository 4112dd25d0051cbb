//! The store directory: the `LOCK` file, file naming and listing, directory fsync, and writing and
//! reading snapshots.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::data::Data;
use super::format::{decode_at, encode, Entry, EntryRef, Frame};
use super::{io_error, StoreError};

pub(super) const LOCK_FILE: &str = "LOCK";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";
const LOG_PREFIX: &str = "log-";
const LOG_SUFFIX: &str = ".wal";
const TEMP_SUFFIX: &str = ".tmp";

/// Exclusive `flock(LOCK_EX | LOCK_NB)` on `<dir>/LOCK`, held until dropped.
#[derive(Debug)]
pub(super) struct DirLock {
    file: File,
}

impl DirLock {
    /// Takes the lock without waiting; fails with [`StoreError::Locked`] when another open store
    /// (in this process or another) holds it.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("open lock file", &path))?;
        // `try_lock` is flock(LOCK_EX | LOCK_NB) on Linux: per open file, so a second open in
        // this process conflicts too, and the kernel drops it when the process dies.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    lock_file: path.clone(),
                    holder: read_holder(&path),
                })
            }
            Err(TryLockError::Error(err)) => return Err(io_error("lock", &path)(err)),
        }
        let pid = format!("{}\n", std::process::id());
        if let Err(err) = file
            .set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        {
            log::warn!("could not record the pid in {}: {err}", path.display());
        }
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first also covers a descriptor
        // that was inherited by a forked child.
        let _ = self.file.unlock();
    }
}

/// " held by pid N" from the lock file, if it names one.
fn read_holder(path: &Path) -> String {
    fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .map(|pid| format!(", held by pid {pid}"))
        .unwrap_or_default()
}

/// fsync a directory so that creates, renames and removes in it are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

pub(super) fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{SNAPSHOT_PREFIX}{seq:020}{SNAPSHOT_SUFFIX}"))
}

pub(super) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{LOG_PREFIX}{base:020}{LOG_SUFFIX}"))
}

pub(super) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// The store's files found in a directory; snapshots and logs sorted by sequence number.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub snapshots: Vec<(u64, PathBuf)>,
    pub logs: Vec<(u64, PathBuf)>,
    pub temps: Vec<PathBuf>,
}

fn seq_in(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(super) fn list_dir(dir: &Path) -> Result<Listing, StoreError> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(io_error("list directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("list directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = seq_in(name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
            listing.snapshots.push((seq, entry.path()));
        } else if let Some(seq) = seq_in(name, LOG_PREFIX, LOG_SUFFIX) {
            listing.logs.push((seq, entry.path()));
        } else if name.ends_with(TEMP_SUFFIX)
            && (name.starts_with(SNAPSHOT_PREFIX) || name.starts_with(LOG_PREFIX))
        {
            listing.temps.push(entry.path());
        }
    }
    listing.snapshots.sort();
    listing.logs.sort();
    Ok(listing)
}

/// Removes files that an interrupted snapshot or log switch left behind.
pub(super) fn remove_temps(temps: &[PathBuf]) {
    for path in temps {
        log::info!("removing leftover temporary file {}", path.display());
        if let Err(err) = fs::remove_file(path) {
            log::warn!("could not remove {}: {err}", path.display());
        }
    }
}

/// Removes every snapshot and log except `snapshot-<keep>` and `log-<keep>`. Failures are logged:
/// the remaining files are still a loadable directory.
pub(super) fn remove_obsolete(dir: &Path, keep: u64) {
    let listing = match list_dir(dir) {
        Ok(listing) => listing,
        Err(err) => return log::warn!("could not clean up old files: {err}"),
    };
    let old_snapshots = listing.snapshots.iter().filter(|(seq, _)| *seq != keep);
    let old_logs = listing.logs.iter().filter(|(seq, _)| *seq != keep);
    for (_, path) in old_snapshots.chain(old_logs) {
        if let Err(err) = fs::remove_file(path) {
            log::warn!("could not remove {}: {err}", path.display());
        }
    }
    if let Err(err) = sync_dir(dir) {
        log::warn!("{err}");
    }
}

/// Writes `snapshot-<seq>.snap` (temp file, fsync, rename, directory fsync) and returns its size.
pub(super) fn write_snapshot(dir: &Path, seq: u64, data: &Data) -> Result<u64, StoreError> {
    let path = snapshot_path(dir, seq);
    let temp = temp_path(&path);
    let written = write_snapshot_file(&temp, seq, data);
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    let len = written?;
    fs::rename(&temp, &path).map_err(io_error("rename snapshot into place", &path))?;
    sync_dir(dir)?;
    Ok(len)
}

fn write_snapshot_file(path: &Path, seq: u64, data: &Data) -> Result<u64, StoreError> {
    let file = File::create(path).map_err(io_error("create snapshot", path))?;
    let mut out = BufWriter::new(file);
    let mut len = 0u64;
    let mut put = |entry: &EntryRef<'_>| -> Result<(), StoreError> {
        let frame = encode(seq, entry).map_err(|e| StoreError::from_encode(e, path))?;
        len += frame.len() as u64;
        out.write_all(&frame)
            .map_err(io_error("write snapshot", path))
    };
    put(&EntryRef::Begin { seq })?;
    for (stream, group, item, value) in data.items() {
        put(&EntryRef::Set {
            stream,
            group,
            item,
            value,
        })?;
    }
    put(&EntryRef::End { items: data.len() })?;
    let file = out
        .into_inner()
        .map_err(|e| io_error("write snapshot", path)(e.into_error()))?;
    file.sync_all().map_err(io_error("fsync snapshot", path))?;
    Ok(len)
}

/// Loads `snapshot-<seq>.snap`. Any defect (unreadable record, wrong sequence number, missing
/// `end` record, bytes after it) makes the whole snapshot invalid: `Err(reason)`.
pub(super) fn read_snapshot(path: &Path, seq: u64) -> Result<(Data, u64), String> {
    let buf = fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut data = Data::default();
    let (first, mut pos) = snapshot_entry(&buf, 0, seq)?;
    if first != (Entry::Begin { seq }) {
        return Err(format!(
            "byte offset 0: expected a begin record for seq {seq}"
        ));
    }
    loop {
        let (entry, end) = snapshot_entry(&buf, pos, seq)?;
        match entry {
            Entry::Set {
                stream,
                group,
                item,
                value,
            } => {
                data.insert(&stream, &group, &item, value);
            }
            Entry::End { items } if items == data.len() && end == buf.len() => {
                return Ok((data, buf.len() as u64));
            }
            other => {
                let kind = other.kind();
                return Err(format!("byte offset {pos}: unexpected {kind} record"));
            }
        }
        pos = end;
    }
}

/// The entry of the snapshot record at `pos` and the offset after it.
fn snapshot_entry(buf: &[u8], pos: usize, seq: u64) -> Result<(Entry, usize), String> {
    let record = match decode_at(buf, pos) {
        Frame::Record(record) if record.seq == seq => record,
        Frame::Record(record) => {
            return Err(format!("byte offset {pos}: record for seq {}", record.seq))
        }
        bad => {
            let reason = bad.reason();
            return Err(format!("byte offset {pos}: {reason} (incomplete snapshot)"));
        }
    };
    let entry = serde_json::from_slice(record.payload)
        .map_err(|e| format!("byte offset {pos}: unreadable payload: {e}"))?;
    Ok((entry, record.end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshot_round_trip_and_defects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut data = Data::default();
        data.insert("s", "g", "b", json!(1));
        data.insert("s", "g", "a", json!({"x": [1, 2]}));
        data.insert("t", "h", "c", json!("v"));
        let len = write_snapshot(dir.path(), 9, &data).expect("write");
        let path = snapshot_path(dir.path(), 9);
        let (loaded, loaded_len) = read_snapshot(&path, 9).expect("read");
        assert_eq!(loaded_len, len);
        assert_eq!(loaded.list("s", "g"), vec![json!(1), json!({"x": [1, 2]})]);
        assert_eq!(loaded.list_all(), data.list_all());
        assert!(
            read_snapshot(&path, 8).is_err(),
            "sequence number must match the name"
        );

        let bytes = fs::read(&path).expect("read");
        let mut extra = bytes.clone();
        extra.push(0);
        fs::write(&path, &extra).expect("write");
        assert!(
            read_snapshot(&path, 9).is_err(),
            "bytes after the end record"
        );
        fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
        let err = read_snapshot(&path, 9).expect_err("no end record");
        assert!(err.contains("incomplete snapshot"), "{err}");
        fs::write(&path, b"").expect("write");
        assert!(read_snapshot(&path, 9).is_err());
    }

    #[test]
    fn names_and_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "snapshot-00000000000000000007.snap",
            "snapshot-3.snap",
            "log-00000000000000000007.wal",
            "log-x.wal",
            "log-7.wal.tmp",
            "other.tmp",
            "LOCK",
        ] {
            fs::write(dir.path().join(name), b"").expect("write");
        }
        let listing = list_dir(dir.path()).expect("list");
        let seqs = |v: &[(u64, PathBuf)]| v.iter().map(|(s, _)| *s).collect::<Vec<_>>();
        assert_eq!(seqs(&listing.snapshots), [3, 7]);
        assert_eq!(seqs(&listing.logs), [7]);
        assert_eq!(listing.temps, [dir.path().join("log-7.wal.tmp")]);
        assert_eq!(
            log_path(dir.path(), 7),
            dir.path().join("log-00000000000000000007.wal")
        );
    }
}
