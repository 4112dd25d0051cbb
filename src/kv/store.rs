//! The durable key/value store behind the `stream::*` and `state::*` functions: stream › group ›
//! item → JSON value, kept in memory and persisted to an append-only log plus snapshots in one
//! directory.
//!
//! # Promise (RELIABILITY.md §3.3)
//!
//! * Every [`Store::set`] / [`Store::delete`] is written to the log with write(2) **before** it
//!   returns `Ok`; memory changes only after the write succeeded. An acknowledged write therefore
//!   survives any death of the process. With [`FsyncPolicy::Always`] the log is also fsynced
//!   before returning (survives power loss); with [`FsyncPolicy::EverySecond`] the owner calls
//!   [`Store::sync`] every second; [`Store::close`] always fsyncs.
//! * A failed write returns `Err` and leaves memory unchanged.
//! * After a crash the store reloads to a prefix of the acknowledged writes: a torn last record
//!   is cut off with a warning, never fatal; damage with valid records after it makes
//!   [`Store::open`] fail with the file and byte offset instead of dropping data.
//! * One owner: a second [`Store::open`] of the same directory, from this or another process,
//!   fails while the first is open.
//!
//! Keys are structured (stream, group, item) everywhere, in memory and on disk; names are never
//! joined, so `("a:b", "c")` and `("a", "b:c")` are different groups and any UTF-8 name
//! round-trips exactly.
//!
//! # Files in the directory
//!
//! * `LOCK` — held with `flock(LOCK_EX | LOCK_NB)` for the store's lifetime; contains the pid of
//!   the holder (informational only).
//! * `snapshot-<seq>.snap` — the full contents as of sequence number `<seq>` (20-digit,
//!   zero-padded). Written as `snapshot-<seq>.snap.tmp`, fsynced, renamed, directory fsynced. Its
//!   records all carry `seq = <seq>`: a `begin` record, one `set` record per item (streams and
//!   groups sorted, each group's items in list order) and an `end` record with the item count. A
//!   snapshot without a matching `end` record, or with any bad record, is ignored in favour of
//!   the previous one.
//! * `log-<base>.wal` — the records written after snapshot `<base>` (`base` 0: from the start),
//!   one per set/delete, sequence numbers increasing by one. Created empty via a `.tmp` file and
//!   a rename.
//! * `*.tmp` — leftovers of an interrupted snapshot or log switch; removed at open.
//!
//! # Record format
//!
//! `[u32 LE len][u32 LE crc32c(seq ++ payload)][u64 LE seq][payload]`: `len` is the payload
//! length, the checksum is CRC-32C over the 8 little-endian bytes of `seq` followed by the
//! payload, and the payload is compact JSON:
//!
//! ```text
//! {"op":"set","stream":"todo","group":"todos","item":"t1","value":{…}}
//! {"op":"delete","stream":"todo","group":"todos","item":"t1"}
//! {"op":"begin","seq":42}          (snapshots only)
//! {"op":"end","items":17}          (snapshots only)
//! ```
//!
//! # Recovery ([`Store::open`])
//!
//! Load the newest valid snapshot, then replay every log in order of `<base>`, skipping records
//! the snapshot already holds and requiring the others to continue the sequence without a gap.
//! In each log, a bad record (incomplete, checksum mismatch, sequence number out of order) ends
//! the log: if no valid record follows it anywhere in the file it is a torn tail or trailing
//! garbage and is truncated away with a warning; otherwise `open` fails with
//! [`StoreError::Corrupt`].
//!
//! # Compaction ([`Store::compact`])
//!
//! Write `snapshot-<last seq>`, switch to an empty `log-<last seq>.wal`, then delete every other
//! snapshot and log. Each step leaves a loadable directory: before the rename the old snapshot
//! and log are complete; after it the new snapshot is complete and the old log's records are
//! skipped as already included; old files are removed only once the new ones are durable.
//!
//! The store is plain synchronous code; its module's actor owns it and calls it from one thread.

mod data;
mod files;
mod format;
mod recover;
#[cfg(test)]
mod tests;
mod wal;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use self::data::Data;
use self::files::DirLock;
use self::format::{encode, EncodeError, EntryRef};
use self::recover::{load_snapshot, replay_logs};
use self::wal::LogFile;

/// Default log size that triggers compaction: 64 MiB.
pub const DEFAULT_COMPACT_THRESHOLD: u64 = 64 * 1024 * 1024;

/// When the log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Inside every `set`/`delete`, before it returns.
    Always,
    /// When the owner calls [`Store::sync`], meant to be once a second.
    #[default]
    EverySecond,
    /// Only on [`Store::close`] and compaction.
    Never,
}

/// Where and how the store keeps its data.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The store's directory; created if missing.
    pub dir: PathBuf,
    /// When the log is fsynced.
    pub fsync: FsyncPolicy,
    /// [`Store::needs_compaction`] once the log is larger than this (and than the snapshot).
    pub compact_threshold_bytes: u64,
    /// What the store is called in log lines (`stream`, `state`).
    pub name: &'static str,
}

impl StoreOptions {
    /// Options for `dir` with the defaults: fsync every second, compaction at 64 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            compact_threshold_bytes: DEFAULT_COMPACT_THRESHOLD,
            name: "stream",
        }
    }
}

/// Everything that can go wrong with the store. Messages name the file, the byte offset where
/// relevant, and the reason.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "directory {} is in use by another engine (lock file {}{holder})",
        .dir.display(),
        .lock_file.display()
    )]
    Locked {
        dir: PathBuf,
        lock_file: PathBuf,
        /// `", held by pid N"` when the lock file names its holder, else empty.
        holder: String,
    },
    #[error("{}: corrupt data at byte offset {offset}: {reason}", .file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A failed write could not be cut back, or an fsync failed: the log's state on disk is
    /// unknown, so writes are refused. [`Store::compact`] rewrites everything from memory into a
    /// new snapshot and log and clears it.
    #[error(
        "{}: a failed write or fsync left the log in an unknown state; writes are refused until the store is compacted or reopened",
        .file.display()
    )]
    Poisoned { file: PathBuf },
    #[error("{}: cannot encode a record: {reason}", .file.display())]
    Encode { file: PathBuf, reason: String },
}

impl StoreError {
    fn from_encode(err: EncodeError, file: &Path) -> StoreError {
        let reason = match err {
            EncodeError::Json(e) => e.to_string(),
            EncodeError::TooLarge(len) => {
                format!("a payload of {len} bytes exceeds the 4 GiB record limit")
            }
        };
        StoreError::Encode {
            file: file.to_path_buf(),
            reason,
        }
    }
}

/// `map_err` helper: an I/O failure doing `action` on `path`.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// The open store: the contents in memory, and (unless it is an in-memory store) the directory
/// that keeps them. Dropping it releases the directory lock (without the final fsync that
/// [`Store::close`] does).
pub struct Store {
    data: Data,
    /// `None` for [`Store::in_memory`]: nothing is written and nothing can fail.
    disk: Option<Disk>,
}

/// The persistent side of a [`Store`].
struct Disk {
    name: &'static str,
    dir: PathBuf,
    fsync: FsyncPolicy,
    compact_threshold: u64,
    log: LogFile,
    /// Sequence number of the last record written.
    last_seq: u64,
    /// Sequence number and size of the snapshot the current log follows (0, 0 when none).
    snapshot_seq: u64,
    snapshot_len: u64,
    /// Declared last so the files are closed before the lock is released.
    _lock: DirLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Store");
        d.field("items", &self.data.len());
        if let Some(disk) = &self.disk {
            d.field("dir", &disk.dir)
                .field("last_seq", &disk.last_seq)
                .field("log", &disk.log.path())
                .field("log_len", &disk.log.len());
        }
        d.finish_non_exhaustive()
    }
}

impl Store {
    /// Creates the directory if needed, takes the lock, loads the newest valid snapshot and
    /// replays the logs.
    pub fn open(opts: StoreOptions) -> Result<Store, StoreError> {
        let dir = opts.dir;
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let used_before = dir.join(files::LOCK_FILE).exists();
        let lock = DirLock::acquire(&dir)?;
        let listing = files::list_dir(&dir)?;
        if listing.logs.is_empty() {
            if let Some((seq, _)) = listing.snapshots.last() {
                log::error!(
                    "{}: there is no log after snapshot {seq}: it was deleted, and every write after sequence number {seq} is gone",
                    dir.display()
                );
            } else if used_before {
                log::error!(
                    "{}: this store was used before (it has a LOCK file) but holds no log and no snapshot: they were deleted; starting EMPTY",
                    dir.display()
                );
            }
        }
        files::remove_temps(&listing.temps);
        let (mut data, snapshot_seq, snapshot_len) = load_snapshot(&listing.snapshots);
        let (log, last_seq) = replay_logs(&dir, &listing.logs, &mut data, snapshot_seq)?;
        log::info!(
            "opened {} store {}: {} items, last sequence number {last_seq}",
            opts.name,
            dir.display(),
            data.len()
        );
        let disk = Disk {
            name: opts.name,
            dir,
            fsync: opts.fsync,
            compact_threshold: opts.compact_threshold_bytes,
            log,
            last_seq,
            snapshot_seq,
            snapshot_len,
            _lock: lock,
        };
        Ok(Store {
            data,
            disk: Some(disk),
        })
    }

    /// A store without a directory (`store_method: in_memory`): nothing survives the process.
    pub fn in_memory() -> Store {
        Store {
            data: Data::default(),
            disk: None,
        }
    }

    /// The stored value, if any.
    pub fn get(&self, stream: &str, group: &str, item: &str) -> Option<&Value> {
        self.data.get(stream, group, item)
    }

    /// Stores `value` and returns the previous value. The record is in the log before this
    /// returns `Ok`; on `Err` nothing changed.
    pub fn set(
        &mut self,
        stream: &str,
        group: &str,
        item: &str,
        value: Value,
    ) -> Result<Option<Value>, StoreError> {
        if let Some(disk) = &mut self.disk {
            disk.append(&EntryRef::Set {
                stream,
                group,
                item,
                value: &value,
            })?;
        }
        Ok(self.data.insert(stream, group, item, value))
    }

    /// Deletes an item and returns its value; an absent item writes nothing and returns `None`.
    pub fn delete(
        &mut self,
        stream: &str,
        group: &str,
        item: &str,
    ) -> Result<Option<Value>, StoreError> {
        if self.data.get(stream, group, item).is_none() {
            return Ok(None);
        }
        if let Some(disk) = &mut self.disk {
            disk.append(&EntryRef::Delete {
                stream,
                group,
                item,
            })?;
        }
        Ok(self.data.remove(stream, group, item))
    }

    /// How many items it holds, and the size of its current log file (0 in memory).
    pub fn size(&self) -> (u64, u64) {
        let log = self.disk.as_ref().map_or(0, |d| d.log.len());
        (self.data.len(), log)
    }

    /// The group's values in insertion order (overwriting keeps an item's position).
    pub fn list(&self, stream: &str, group: &str) -> Vec<Value> {
        self.data.list(stream, group)
    }

    /// The stream's non-empty groups, sorted.
    pub fn list_groups(&self, stream: &str) -> Vec<String> {
        self.data.list_groups(stream)
    }

    /// Every stream with its groups, sorted by stream id, groups sorted.
    pub fn list_all(&self) -> Vec<(String, Vec<String>)> {
        self.data.list_all()
    }

    /// fsyncs the log if anything was written since the last fsync.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        match &mut self.disk {
            Some(disk) => disk.log.sync(),
            None => Ok(()),
        }
    }

    /// True when the log is larger than the compaction threshold and than the snapshot.
    pub fn needs_compaction(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| {
            let len = d.log.len();
            len > d.compact_threshold && len > d.snapshot_len
        })
    }

    /// Writes a snapshot of everything, starts a fresh log and removes the older files. Also
    /// the way to resume writing after [`StoreError::Poisoned`].
    pub fn compact(&mut self) -> Result<(), StoreError> {
        if let Some(job) = self.start_compaction()? {
            let (seq, len) = job.run()?;
            self.finish_compaction(seq, len);
        }
        Ok(())
    }

    /// The first half of [`Store::compact`], quick enough for the store's own thread: starts a
    /// fresh `log-<seq>` (later writes go there) and freezes the contents as of `<seq>`. The
    /// returned job writes `snapshot-<seq>` and removes the older files, on any thread; hand its
    /// result to [`Store::finish_compaction`]. A crash at any point leaves a loadable directory:
    /// until the snapshot is complete, the old snapshot and logs still hold everything. `None`
    /// when there is nothing to compact.
    pub fn start_compaction(&mut self) -> Result<Option<Compaction>, StoreError> {
        let Some(disk) = &mut self.disk else {
            return Ok(None);
        };
        let seq = disk.last_seq;
        let current = disk.log.base() == seq && disk.snapshot_seq == seq;
        if current && !disk.log.has_records() && !disk.log.is_poisoned() {
            return Ok(None);
        }
        if disk.log.base() != seq {
            disk.log = LogFile::create(&disk.dir, seq)?;
        } else if disk.log.is_poisoned() {
            // The log of this very sequence number is in an unknown state: replace it.
            disk.log = LogFile::create(&disk.dir, seq)?;
        }
        Ok(Some(Compaction {
            name: disk.name,
            dir: disk.dir.clone(),
            seq,
            data: self.data.clone(),
        }))
    }

    /// Records a finished [`Compaction`]: `snapshot-<seq>` of `len` bytes is in place.
    pub fn finish_compaction(&mut self, seq: u64, len: u64) {
        if let Some(disk) = &mut self.disk {
            if seq >= disk.snapshot_seq {
                disk.snapshot_seq = seq;
                disk.snapshot_len = len;
            }
        }
    }

    /// Sequence number of the last write (0 for an in-memory store).
    pub fn last_seq(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.last_seq)
    }

    /// A second handle on the log being written, for fsyncing it from another thread.
    pub fn log_handle(&self) -> Option<std::io::Result<fs::File>> {
        self.disk.as_ref().map(|d| d.log.handle())
    }

    /// Refuses writes until the next compaction: an fsync made elsewhere failed.
    pub fn poison(&mut self) {
        if let Some(d) = &mut self.disk {
            d.log.poison();
        }
    }

    /// Did a failed write or fsync stop writes (until [`Store::compact`])?
    pub fn is_poisoned(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.log.is_poisoned())
    }

    /// fsyncs the log and releases the lock.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.sync()
    }
}

impl Store {
    /// The persistent side, for tests that look at the files' state.
    #[cfg(test)]
    fn disk(&self) -> &Disk {
        self.disk.as_ref().expect("a store with a directory")
    }
}

/// The slow half of a compaction: see [`Store::start_compaction`].
pub struct Compaction {
    name: &'static str,
    dir: PathBuf,
    seq: u64,
    data: Data,
}

impl Compaction {
    /// Writes `snapshot-<seq>` durably and removes the files it replaces; returns the sequence
    /// number and the snapshot's size.
    pub fn run(self) -> Result<(u64, u64), StoreError> {
        let len = files::write_snapshot(&self.dir, self.seq, &self.data)?;
        files::remove_obsolete(&self.dir, self.seq);
        log::info!(
            "compacted {} store {}: snapshot at sequence number {}, {len} bytes",
            self.name,
            self.dir.display(),
            self.seq
        );
        Ok((self.seq, len))
    }
}

impl Disk {
    /// Frames `entry` with the next sequence number and writes it (and fsyncs under `Always`).
    fn append(&mut self, entry: &EntryRef<'_>) -> Result<(), StoreError> {
        let seq = self.last_seq + 1;
        let frame = encode(seq, entry).map_err(|e| StoreError::from_encode(e, self.log.path()))?;
        match self.fsync {
            FsyncPolicy::Always => self.log.append_synced(&frame)?,
            FsyncPolicy::EverySecond | FsyncPolicy::Never => self.log.append(&frame)?,
        }
        self.last_seq = seq;
        Ok(())
    }
}
