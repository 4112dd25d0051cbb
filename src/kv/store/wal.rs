//! One append-only log file, `log-<base>.wal`: appending records, fsync, and reading the file back
//! at startup (torn tails trimmed and kept aside in a `.corrupt-<time>` file, mid-file damage
//! refused).
//!
//! Every log starts with a header record (`begin`, sequence number `<base>`), so an empty file
//! is never a log that simply had nothing written to it: it was truncated, and that is reported
//! loudly. (Logs written before the header existed have none and are read all the same.)

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::files::{log_path, sync_dir, temp_path};
use super::format::{decode_at, encode, find_record_after, Entry, EntryRef, Frame};
use super::{io_error, StoreError};

/// The log being written, or one being read back.
#[derive(Debug)]
pub(super) struct LogFile {
    file: File,
    path: PathBuf,
    /// Records in this file have sequence numbers above `base`.
    base: u64,
    /// Length of the valid records; the next record is written here.
    len: u64,
    /// Length of the header record (0 for a log without one).
    header_len: u64,
    /// Written since the last fsync.
    dirty: bool,
    /// A failed write could not be undone: the file may hold a partial record.
    poisoned: bool,
}

/// A record read back from a log.
#[derive(Debug)]
pub(super) struct Replayed {
    pub offset: u64,
    pub seq: u64,
    pub entry: Entry,
}

/// Result of scanning a log's bytes.
struct Scan {
    records: Vec<Replayed>,
    valid_len: usize,
    header_len: usize,
    /// Why the bytes after `valid_len` were dropped.
    dropped: Option<String>,
}

impl LogFile {
    /// Creates an empty `log-<base>.wal` (replacing any file of that name) durably.
    pub(super) fn create(dir: &Path, base: u64) -> Result<LogFile, StoreError> {
        let path = log_path(dir, base);
        let temp = temp_path(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_error("create log", &temp))?;
        let header = header(base);
        file.write_all_at(&header, 0)
            .and_then(|()| file.sync_all())
            .map_err(io_error("write log header", &temp))?;
        fs::rename(&temp, &path).map_err(io_error("rename log into place", &path))?;
        sync_dir(dir)?;
        let len = header.len() as u64;
        Ok(LogFile::new(file, path, base, len, len))
    }

    fn new(file: File, path: PathBuf, base: u64, len: u64, header_len: u64) -> LogFile {
        LogFile {
            file,
            path,
            base,
            len,
            header_len,
            dirty: false,
            poisoned: false,
        }
    }

    /// Opens an existing log and reads its records. An incomplete or damaged tail is cut off
    /// with a warning; damage followed by valid records fails with [`StoreError::Corrupt`].
    pub(super) fn open(path: &Path, base: u64) -> Result<(LogFile, Vec<Replayed>), StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error("open log", path))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(io_error("read log", path))?;
        if buf.is_empty() {
            log::error!(
                "{}: the log is EMPTY: it has lost even its header, so it was truncated or replaced, and every write it held is gone; starting from what the snapshots hold",
                path.display()
            );
            let header = header(base);
            file.write_all_at(&header, 0)
                .and_then(|()| file.sync_all())
                .map_err(io_error("write log header", path))?;
            let len = header.len() as u64;
            return Ok((
                LogFile::new(file, path.to_path_buf(), base, len, len),
                Vec::new(),
            ));
        }
        let scan = scan(path, &buf, base)?;
        if let Some(reason) = &scan.dropped {
            let kept = keep_aside(path, &buf[scan.valid_len..]);
            log::warn!(
                "{}: dropping {} bytes at byte offset {} ({reason}); keeping the {} records before it; the dropped bytes are in {kept}",
                path.display(),
                buf.len() - scan.valid_len,
                scan.valid_len,
                scan.records.len()
            );
            file.set_len(scan.valid_len as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_error("truncate log", path))?;
        }
        let log = LogFile::new(
            file,
            path.to_path_buf(),
            base,
            scan.valid_len as u64,
            scan.header_len as u64,
        );
        Ok((log, scan.records))
    }

    /// No record written since the header.
    pub(super) fn has_records(&self) -> bool {
        self.len > self.header_len
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn base(&self) -> u64 {
        self.base
    }

    /// Bytes of valid records.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub(super) fn poison(&mut self) {
        self.poisoned = true;
    }

    /// A second handle on the file (same open file: fsync through it covers every write).
    pub(super) fn handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Writes one framed record at the end of the log (write(2), no fsync). On failure the file
    /// is cut back to its previous length; if even that fails the log refuses further writes.
    pub(super) fn append(&mut self, frame: &[u8]) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned {
                file: self.path.clone(),
            });
        }
        if let Err(err) = self.file.write_all_at(frame, self.len) {
            self.roll_back();
            return Err(io_error("append to log", &self.path)(err));
        }
        self.len += frame.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Like [`LogFile::append`], then fsync. When the fsync fails the record is cut off again, so
    /// a write reported as failed does not come back at the next open.
    pub(super) fn append_synced(&mut self, frame: &[u8]) -> Result<(), StoreError> {
        let start = self.len;
        self.append(frame)?;
        if let Err(err) = self.sync() {
            self.len = start;
            self.roll_back();
            return Err(err);
        }
        Ok(())
    }

    /// fsync (data only) if anything was written since the last one. A failed fsync poisons the
    /// log: the kernel may have dropped the unsynced pages, and a retry could falsely succeed.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        if let Err(err) = self.file.sync_data() {
            self.poisoned = true;
            return Err(io_error("fsync log", &self.path)(err));
        }
        self.dirty = false;
        Ok(())
    }

    fn roll_back(&mut self) {
        if let Err(err) = self.file.set_len(self.len) {
            log::error!(
                "{}: cannot cut a failed write back to byte offset {}: {err}; no more writes until the store is compacted or reopened",
                self.path.display(),
                self.len
            );
            self.poisoned = true;
        }
    }
}

/// The first record of every log: `begin` with the log's base as its sequence number.
fn header(base: u64) -> Vec<u8> {
    encode(base, &EntryRef::Begin { seq: base }).unwrap_or_default()
}

/// Copies bytes cut off a log into `<log>.corrupt-<unix seconds>`; returns where (or why not).
fn keep_aside(path: &Path, bytes: &[u8]) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{secs}"));
    let aside = PathBuf::from(name);
    match fs::write(&aside, bytes).and_then(|()| File::open(&aside)?.sync_all()) {
        Ok(()) => aside.display().to_string(),
        Err(e) => format!("no file ({}: {e})", aside.display()),
    }
}

fn scan(path: &Path, buf: &[u8], base: u64) -> Result<Scan, StoreError> {
    let mut records = Vec::new();
    let mut pos = 0;
    let mut last = base;
    let mut header_len = 0;
    if let Frame::Record(record) = decode_at(buf, 0) {
        let is_header = record.seq == base
            && matches!(serde_json::from_slice(record.payload), Ok(Entry::Begin { seq }) if seq == base);
        if is_header {
            pos = record.end;
            header_len = record.end;
        }
    }
    while pos < buf.len() {
        let record = match decode_at(buf, pos) {
            Frame::Record(record) if record.seq > last => record,
            Frame::Record(record) => {
                let reason = format!("sequence number {} does not follow {last}", record.seq);
                return damaged(path, buf, pos, last, reason, records, header_len);
            }
            bad => {
                let reason = bad.reason().to_string();
                return damaged(path, buf, pos, last, reason, records, header_len);
            }
        };
        let entry = parse_entry(path, pos, record.payload)?;
        records.push(Replayed {
            offset: pos as u64,
            seq: record.seq,
            entry,
        });
        last = record.seq;
        pos = record.end;
    }
    Ok(Scan {
        records,
        valid_len: pos,
        header_len,
        dropped: None,
    })
}

/// Bad bytes at `pos`: a damaged tail when nothing valid follows, otherwise refused.
fn damaged(
    path: &Path,
    buf: &[u8],
    pos: usize,
    last: u64,
    reason: String,
    records: Vec<Replayed>,
    header_len: usize,
) -> Result<Scan, StoreError> {
    match find_record_after(buf, pos + 1, last) {
        Some(next) => Err(StoreError::Corrupt {
            file: path.to_path_buf(),
            offset: pos as u64,
            reason: format!(
                "{reason}, but a valid record follows at byte offset {next}; refusing to drop acknowledged data"
            ),
        }),
        None => Ok(Scan {
            records,
            valid_len: pos,
            header_len,
            dropped: Some(reason),
        }),
    }
}

/// A log payload: a `set` or `delete` entry. A record with a valid checksum whose payload is not
/// one was written that way, so it is refused rather than dropped.
fn parse_entry(path: &Path, pos: usize, payload: &[u8]) -> Result<Entry, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        file: path.to_path_buf(),
        offset: pos as u64,
        reason,
    };
    let entry: Entry = serde_json::from_slice(payload).map_err(|e| {
        corrupt(format!(
            "record has a valid checksum but an unreadable payload: {e}"
        ))
    })?;
    match entry {
        Entry::Set { .. } | Entry::Delete { .. } => Ok(entry),
        other => Err(corrupt(format!(
            "unexpected {} record in a log",
            other.kind()
        ))),
    }
}

#[cfg(test)]
impl LogFile {
    /// Swaps the underlying file, e.g. for a read-only handle to make writes fail.
    pub(super) fn replace_file(&mut self, file: File) {
        self.file = file;
    }

    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{crc32c_update, encode, EntryRef};
    use super::*;
    use serde_json::json;

    fn frame(seq: u64, item: &str) -> Vec<u8> {
        let value = json!(seq);
        let entry = EntryRef::Set {
            stream: "s",
            group: "g",
            item,
            value: &value,
        };
        encode(seq, &entry).expect("encode")
    }

    /// A frame with a correct checksum around an arbitrary payload.
    fn raw_frame(seq: u64, payload: &[u8]) -> Vec<u8> {
        let crc = crc32c_update(crc32c_update(0, &seq.to_le_bytes()), payload);
        let len = payload.len() as u32;
        [
            &len.to_le_bytes()[..],
            &crc.to_le_bytes(),
            &seq.to_le_bytes(),
            payload,
        ]
        .concat()
    }

    fn write_log(dir: &Path, frames: &[Vec<u8>]) -> PathBuf {
        let path = log_path(dir, 0);
        fs::write(&path, frames.concat()).expect("write log");
        path
    }

    fn items(records: &[Replayed]) -> Vec<(u64, u64, String)> {
        records
            .iter()
            .map(|r| match &r.entry {
                Entry::Set { item, .. } => (r.offset, r.seq, item.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn append_sync_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogFile::create(dir.path(), 0).expect("create");
        let h = log.len();
        assert!(h > 0 && !log.has_records(), "a new log holds its header");
        let (a, b) = (frame(1, "a"), frame(2, "b"));
        log.append(&a).expect("append");
        log.append_synced(&b).expect("append");
        assert!(!log.is_dirty());
        assert_eq!(log.len(), h + (a.len() + b.len()) as u64);
        drop(log);
        let (log, records) = LogFile::open(&log_path(dir.path(), 0), 0).expect("open");
        let expected = vec![
            (h, 1, "a".to_string()),
            (h + a.len() as u64, 2, "b".to_string()),
        ];
        assert_eq!(items(&records), expected);
        assert_eq!(log.len(), h + (a.len() + b.len()) as u64);
    }

    #[test]
    fn an_emptied_log_is_reported_and_a_cut_tail_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_log(dir.path(), &[]);
        let (log, records) = LogFile::open(&path, 0).expect("an empty log opens");
        assert!(
            records.is_empty() && log.len() > 0,
            "its header is written again"
        );
        let one = frame(1, "a");
        let garbage = b"\x01\x02torn".to_vec();
        let path = write_log(dir.path(), &[one.clone(), garbage.clone()]);
        let (log, records) = LogFile::open(&path, 0).expect("a torn tail is cut");
        assert_eq!((records.len(), log.len()), (1, one.len() as u64));
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(fs::read(aside[0].path()).unwrap(), garbage);
    }

    #[test]
    fn sequence_numbers_must_increase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (one, two) = (frame(1, "a"), frame(2, "b"));
        let path = write_log(dir.path(), &[one.clone(), two.clone(), frame(2, "c")]);
        let (log, records) = LogFile::open(&path, 0).expect("repeated last record is a tail");
        assert_eq!(records.len(), 2);
        assert_eq!(log.len(), (one.len() + two.len()) as u64);

        let path = write_log(dir.path(), &[one.clone(), frame(1, "b"), frame(2, "c")]);
        let err = LogFile::open(&path, 0).expect_err("repeated middle record");
        assert!(
            matches!(err, StoreError::Corrupt { offset, .. } if offset == one.len() as u64),
            "{err}"
        );
        assert!(err.to_string().contains("does not follow 1"), "{err}");
    }

    #[test]
    fn checksummed_but_unusable_payloads_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = frame(1, "a");
        for payload in [&b"{not json"[..], br#"{"op":"begin","seq":2}"#] {
            let path = write_log(dir.path(), &[one.clone(), raw_frame(2, payload)]);
            let err = LogFile::open(&path, 0).expect_err("refused");
            assert!(
                matches!(err, StoreError::Corrupt { offset, .. } if offset == one.len() as u64),
                "{err}"
            );
        }
    }
}
