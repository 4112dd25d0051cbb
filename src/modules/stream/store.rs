//! The durable key/value store behind the `stream::*` functions: stream › group › item → JSON
//! value, kept in memory and persisted to an append-only log plus snapshots in one directory.
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
//! The store is plain synchronous code; the stream actor owns it and calls it from one thread.

mod data;
mod files;
mod format;
mod wal;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use self::data::Data;
use self::files::DirLock;
use self::format::{encode, EncodeError, Entry, EntryRef};
use self::wal::{LogFile, Replayed};

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
}

impl StoreOptions {
    /// Options for `dir` with the defaults: fsync every second, compaction at 64 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            compact_threshold_bytes: DEFAULT_COMPACT_THRESHOLD,
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
            "opened stream store {}: {} items, last sequence number {last_seq}",
            dir.display(),
            data.len()
        );
        let disk = Disk {
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
            "compacted stream store {}: snapshot at sequence number {}, {len} bytes",
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

/// The newest snapshot that loads completely, as (data, seq, file size); empty when none does.
fn load_snapshot(snapshots: &[(u64, PathBuf)]) -> (Data, u64, u64) {
    for (seq, path) in snapshots.iter().rev() {
        match files::read_snapshot(path, *seq) {
            Ok((data, len)) => return (data, *seq, len),
            Err(reason) => log::warn!("ignoring snapshot {}: {reason}", path.display()),
        }
    }
    (Data::default(), 0, 0)
}

/// Replays `logs` (sorted by base) on top of a snapshot at `snapshot_seq`. Returns the newest
/// log, to continue writing in (a new one when there is none), and the last sequence number.
fn replay_logs(
    dir: &Path,
    logs: &[(u64, PathBuf)],
    data: &mut Data,
    snapshot_seq: u64,
) -> Result<(LogFile, u64), StoreError> {
    let mut last = snapshot_seq;
    let mut newest = None;
    for (base, path) in logs {
        if *base > last {
            return Err(StoreError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason: format!(
                    "this log continues from sequence number {base}, but the snapshots and logs before it end at {last}: snapshot-{base:020}.snap is missing or unreadable"
                ),
            });
        }
        let (log, records) = LogFile::open(path, *base)?;
        for record in records {
            if record.seq <= snapshot_seq {
                continue;
            }
            apply_replayed(path, last, record, data)?;
            last += 1;
        }
        newest = Some(log);
    }
    let log = match newest {
        Some(log) => log,
        None => LogFile::create(dir, snapshot_seq)?,
    };
    Ok((log, last))
}

/// Applies one replayed record, which must be the one right after `last`.
fn apply_replayed(
    path: &Path,
    last: u64,
    record: Replayed,
    data: &mut Data,
) -> Result<(), StoreError> {
    if record.seq != last + 1 {
        return Err(StoreError::Corrupt {
            file: path.to_path_buf(),
            offset: record.offset,
            reason: format!(
                "expected sequence number {}, found {}: records are missing",
                last + 1,
                record.seq
            ),
        });
    }
    match record.entry {
        Entry::Set {
            stream,
            group,
            item,
            value,
        } => {
            data.insert(&stream, &group, &item, value);
        }
        Entry::Delete {
            stream,
            group,
            item,
        } => {
            data.remove(&stream, &group, &item);
        }
        Entry::Begin { .. } | Entry::End { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs::File;
    use std::process::Command;

    /// Set by the tests that re-run this test binary as a child process; the child tests do
    /// nothing without it.
    const CHILD_ENV: &str = "STREAM_STORE_TEST_CHILD_DIR";

    fn options(dir: &Path) -> StoreOptions {
        StoreOptions {
            dir: dir.to_path_buf(),
            fsync: FsyncPolicy::Never,
            compact_threshold_bytes: DEFAULT_COMPACT_THRESHOLD,
        }
    }

    fn open(dir: &Path) -> Store {
        let _ = env_logger::builder().is_test(true).try_init();
        Store::open(options(dir)).expect("open store")
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    /// Everything in the store: (stream, group, values in list order).
    fn dump(store: &Store) -> Vec<(String, String, Vec<Value>)> {
        let mut out = Vec::new();
        for (stream, groups) in store.list_all() {
            for group in groups {
                let values = store.list(&stream, &group);
                out.push((stream.clone(), group, values));
            }
        }
        out
    }

    fn only_log(dir: &Path) -> PathBuf {
        let listing = files::list_dir(dir).expect("list");
        assert_eq!(listing.logs.len(), 1, "{listing:?}");
        listing.logs[0].1.clone()
    }

    /// Writes five records of different sizes and returns (file bytes, start of each record).
    fn five_records(dir: &Path) -> (Vec<u8>, Vec<u64>) {
        let mut store = open(dir);
        let mut starts = Vec::new();
        for i in 0..5 {
            starts.push(store.disk().log.len());
            let value = json!({"i": i, "pad": "x".repeat(i * 7)});
            store.set("s", "g", &format!("k{i}"), value).expect("set");
        }
        store.close().expect("close");
        (fs::read(only_log(dir)).expect("read log"), starts)
    }

    fn first_values(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"i": i, "pad": "x".repeat(i * 7)}))
            .collect()
    }

    #[test]
    fn set_get_list_delete() {
        let dir = tempdir();
        let mut store = open(dir.path());
        assert_eq!(
            store.set("todo", "todos", "a", json!(1)).expect("set"),
            None
        );
        assert_eq!(
            store.set("todo", "todos", "b", json!(2)).expect("set"),
            None
        );
        assert_eq!(
            store.set("todo", "todos", "a", json!(3)).expect("set"),
            Some(json!(1))
        );
        store.set("todo", "other", "x", json!("x")).expect("set");
        store.set("alpha", "g", "x", json!(null)).expect("set");
        assert_eq!(store.get("todo", "todos", "a"), Some(&json!(3)));
        assert_eq!(store.get("todo", "todos", "zz"), None);
        assert_eq!(store.get("alpha", "g", "x"), Some(&Value::Null));
        assert_eq!(store.list("todo", "todos"), vec![json!(3), json!(2)]);
        assert_eq!(store.list("todo", "nope"), Vec::<Value>::new());
        assert_eq!(store.list_groups("todo"), ["other", "todos"]);
        assert_eq!(
            store.list_all(),
            vec![
                ("alpha".to_string(), vec!["g".to_string()]),
                (
                    "todo".to_string(),
                    vec!["other".to_string(), "todos".to_string()]
                ),
            ]
        );
        assert_eq!(
            store.delete("todo", "todos", "a").expect("delete"),
            Some(json!(3))
        );
        store.set("todo", "todos", "a", json!(4)).expect("set");
        assert_eq!(store.list("todo", "todos"), vec![json!(2), json!(4)]);
        assert_eq!(store.disk().last_seq, 7);
    }

    #[test]
    fn delete_of_absent_item_writes_nothing() {
        let dir = tempdir();
        let mut store = open(dir.path());
        store.set("s", "g", "a", json!(1)).expect("set");
        let len = store.disk().log.len();
        assert_eq!(store.delete("s", "g", "missing").expect("delete"), None);
        assert_eq!(store.delete("s", "nope", "a").expect("delete"), None);
        assert_eq!((store.disk().log.len(), store.disk().last_seq), (len, 1));
        store.delete("s", "g", "a").expect("delete");
        assert!(store.list_all().is_empty());
    }

    #[test]
    fn reopen_after_close_keeps_everything_in_order() {
        let dir = tempdir();
        let mut store = open(dir.path());
        for i in 0..50 {
            let group = format!("g{}", i % 3);
            store
                .set("s", &group, &format!("k{}", i % 7), json!(i))
                .expect("set");
            if i % 5 == 0 {
                store
                    .delete("s", "g1", &format!("k{}", i % 4))
                    .expect("delete");
            }
        }
        let before = dump(&store);
        let seq = store.disk().last_seq;
        store.close().expect("close");
        let store = open(dir.path());
        assert_eq!(dump(&store), before);
        assert_eq!(store.disk().last_seq, seq);
    }

    #[test]
    fn reopen_after_drop_without_close() {
        let dir = tempdir();
        let mut store = open(dir.path());
        store.set("s", "g", "a", json!({"v": 1})).expect("set");
        store.set("s", "g", "b", json!({"v": 2})).expect("set");
        store.delete("s", "g", "a").expect("delete");
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.list("s", "g"), vec![json!({"v": 2})]);
        assert_eq!(store.get("s", "g", "a"), None);
    }

    #[test]
    fn every_policy_persists_writes() {
        for fsync in [
            FsyncPolicy::Always,
            FsyncPolicy::EverySecond,
            FsyncPolicy::Never,
        ] {
            let dir = tempdir();
            let mut opts = options(dir.path());
            opts.fsync = fsync;
            let mut store = Store::open(opts.clone()).expect("open");
            store.set("s", "g", "a", json!(1)).expect("set");
            assert_eq!(store.disk().log.is_dirty(), fsync != FsyncPolicy::Always);
            store.sync().expect("sync");
            assert!(!store.disk().log.is_dirty());
            drop(store);
            let store = Store::open(opts).expect("reopen");
            assert_eq!(store.get("s", "g", "a"), Some(&json!(1)));
        }
    }

    #[test]
    fn killed_process_keeps_acknowledged_writes() {
        let dir = tempdir();
        let status = run_child("child_writes_then_is_killed", dir.path());
        assert!(
            !status.success(),
            "the child must die by SIGKILL: {status:?}"
        );
        let store = open(dir.path());
        let expected: Vec<Value> = (0..200).map(|i| json!({"n": i})).collect();
        assert_eq!(store.list("s", "g"), expected);
    }

    /// Child side of `killed_process_keeps_acknowledged_writes`.
    #[test]
    fn child_writes_then_is_killed() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let mut store = open(Path::new(&dir));
        for i in 0..200 {
            store
                .set("s", "g", &format!("k{i}"), json!({"n": i}))
                .expect("set");
        }
        // SAFETY: sending SIGKILL to ourselves; nothing runs afterwards.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }

    fn run_child(test: &str, dir: &Path) -> std::process::ExitStatus {
        let module = module_path!();
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        let exe = std::env::current_exe().expect("test binary");
        Command::new(exe)
            .args([&format!("{module}::{test}"), "--exact", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .output()
            .expect("run child")
            .status
    }

    #[test]
    fn every_truncation_inside_the_last_record_keeps_the_others() {
        let dir = tempdir();
        let (bytes, starts) = five_records(dir.path());
        let log = only_log(dir.path());
        let last = starts[4] as usize;
        for cut in last..bytes.len() {
            fs::write(&log, &bytes[..cut]).expect("write");
            let store = open(dir.path());
            assert_eq!(store.list("s", "g"), first_values(4), "cut at {cut}");
            assert_eq!(store.disk().last_seq, 4);
            drop(store);
            assert_eq!(fs::metadata(&log).expect("stat").len(), last as u64);
        }
    }

    #[test]
    fn flipped_bit_in_the_last_record_drops_only_it() {
        let dir = tempdir();
        let (bytes, starts) = five_records(dir.path());
        let log = only_log(dir.path());
        for at in starts[4] as usize..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << (at % 8);
            fs::write(&log, &damaged).expect("write");
            let mut store = open(dir.path());
            assert_eq!(store.list("s", "g"), first_values(4), "bit flipped at {at}");
            // Writing continues right after the last good record.
            store.set("s", "g", "new", json!(1)).expect("set");
            drop(store);
            let store = open(dir.path());
            assert_eq!(store.list("s", "g").len(), 5);
        }
    }

    #[test]
    fn flipped_bit_in_a_middle_record_refuses_to_open() {
        let dir = tempdir();
        let (bytes, starts) = five_records(dir.path());
        let log = only_log(dir.path());
        for at in starts[2] as usize..starts[3] as usize {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << (at % 8);
            fs::write(&log, &damaged).expect("write");
            let err = Store::open(options(dir.path())).expect_err("must refuse");
            let StoreError::Corrupt { file, offset, .. } = &err else {
                panic!("unexpected error {err}");
            };
            assert_eq!((file, *offset), (&log, starts[2]), "bit flipped at {at}");
            let message = err.to_string();
            assert!(
                message.contains(&format!("byte offset {}", starts[2])),
                "{message}"
            );
            assert!(message.contains(&log.display().to_string()), "{message}");
            assert_eq!(
                fs::read(&log).expect("read"),
                damaged,
                "file left untouched"
            );
        }
    }

    #[test]
    fn garbage_after_the_last_record_is_trimmed() {
        let dir = tempdir();
        let (bytes, _) = five_records(dir.path());
        let log = only_log(dir.path());
        let mut garbage = bytes.clone();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            garbage.push(x as u8);
        }
        fs::write(&log, &garbage).expect("write");
        let store = open(dir.path());
        assert_eq!(store.list("s", "g"), first_values(5));
        drop(store);
        assert_eq!(fs::read(&log).expect("read"), bytes);
    }

    #[test]
    fn compaction_keeps_data_and_bounds_the_log() {
        let dir = tempdir();
        let mut opts = options(dir.path());
        opts.compact_threshold_bytes = 2048;
        let mut store = Store::open(opts.clone()).expect("open");
        let (mut compactions, mut writes) = (0, 0);
        for i in 0..600u64 {
            let group = format!("g{}", i % 3);
            store
                .set("s", &group, &format!("k{}", i % 20), json!({"i": i}))
                .expect("set");
            writes += 1;
            if i % 7 == 0
                && store
                    .delete("s", "g2", &format!("k{}", i % 20))
                    .expect("delete")
                    .is_some()
            {
                writes += 1;
            }
            if store.needs_compaction() {
                store.compact().expect("compact");
                compactions += 1;
            }
            // The log stays within the threshold, or within the snapshot's size when that is
            // larger (rewriting a snapshot bigger than the log would not pay off).
            let bound = opts.compact_threshold_bytes.max(store.disk().snapshot_len);
            assert!(
                store.disk().log.len() <= bound,
                "log {} > {bound}",
                store.disk().log.len()
            );
            assert!(
                store.disk().snapshot_len < 8192,
                "snapshot {}",
                store.disk().snapshot_len
            );
        }
        assert!(compactions > 3, "only {compactions} compactions");
        let before = dump(&store);
        store.close().expect("close");
        let listing = files::list_dir(dir.path()).expect("list");
        assert_eq!(
            (listing.snapshots.len(), listing.logs.len()),
            (1, 1),
            "{listing:?}"
        );
        let store = Store::open(opts).expect("reopen");
        assert_eq!(dump(&store), before);
        assert_eq!(store.disk().last_seq, writes);
    }

    #[test]
    fn compaction_without_new_writes_is_a_no_op() {
        let dir = tempdir();
        let mut store = open(dir.path());
        store.compact().expect("empty compact");
        assert!(files::list_dir(dir.path())
            .expect("list")
            .snapshots
            .is_empty());
        store.set("s", "g", "a", json!(1)).expect("set");
        store.compact().expect("compact");
        store.compact().expect("compact again");
        assert_eq!(store.disk().snapshot_seq, 1);
        assert!(!store.needs_compaction());
    }

    #[test]
    fn crash_between_snapshot_rename_and_log_switch() {
        let dir = tempdir();
        let mut store = open(dir.path());
        for i in 0..10 {
            store
                .set("s", "g", &format!("k{i}"), json!(i))
                .expect("set");
        }
        files::write_snapshot(dir.path(), store.disk().last_seq, &store.data).expect("snapshot");
        drop(store); // crash before the new log exists
        let mut store = open(dir.path());
        assert_eq!(store.list("s", "g").len(), 10);
        for i in 10..15 {
            store
                .set("s", "g", &format!("k{i}"), json!(i))
                .expect("set");
        }
        drop(store);
        let mut store = open(dir.path());
        let expected: Vec<Value> = (0..15).map(|i| json!(i)).collect();
        assert_eq!(store.list("s", "g"), expected);
        store.compact().expect("compact");
        store.close().expect("close");
        let store = open(dir.path());
        assert_eq!(store.list("s", "g"), expected);
        let listing = files::list_dir(dir.path()).expect("list");
        assert_eq!(listing.snapshots[0].0, 15);
        assert_eq!(listing.logs[0].0, 15);
    }

    #[test]
    fn incomplete_snapshot_falls_back_to_the_previous_one() {
        let dir = tempdir();
        let mut store = open(dir.path());
        for i in 0..10 {
            store
                .set("s", "g", &format!("k{i}"), json!(i))
                .expect("set");
        }
        store.compact().expect("compact");
        for i in 10..15 {
            store
                .set("s", "g", &format!("k{i}"), json!(i))
                .expect("set");
        }
        // A crash while writing snapshot 15: complete temp file, cut short before the rename.
        files::write_snapshot(dir.path(), 15, &store.data).expect("snapshot");
        drop(store);
        let newest = files::snapshot_path(dir.path(), 15);
        let len = fs::metadata(&newest).expect("stat").len();
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .expect("open");
        file.set_len(len - 3).expect("truncate");
        fs::write(dir.path().join("snapshot-x.snap.tmp"), b"junk").expect("temp");
        fs::write(files::temp_path(&newest), b"junk").expect("temp");
        let store = open(dir.path());
        let expected: Vec<Value> = (0..15).map(|i| json!(i)).collect();
        assert_eq!(store.list("s", "g"), expected);
        assert_eq!(store.disk().snapshot_seq, 10);
        assert!(files::list_dir(dir.path()).expect("list").temps.is_empty());
    }

    #[test]
    fn missing_snapshot_refuses_to_open() {
        let dir = tempdir();
        let mut store = open(dir.path());
        store.set("s", "g", "a", json!(1)).expect("set");
        store.compact().expect("compact");
        store.set("s", "g", "b", json!(2)).expect("set");
        store.close().expect("close");
        fs::remove_file(files::snapshot_path(dir.path(), 1)).expect("remove");
        let err = Store::open(options(dir.path())).expect_err("must refuse");
        assert!(
            matches!(&err, StoreError::Corrupt { offset: 0, .. }),
            "unexpected error {err}"
        );
        assert!(err.to_string().contains("missing or unreadable"), "{err}");
    }

    #[test]
    fn second_open_fails_while_the_first_is_alive() {
        let dir = tempdir();
        let first = open(dir.path());
        let err = Store::open(options(dir.path())).expect_err("locked");
        let message = err.to_string();
        assert!(matches!(err, StoreError::Locked { .. }), "{message}");
        assert!(message.contains("is in use by another engine"), "{message}");
        assert!(
            message.contains(&dir.path().join("LOCK").display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        first.close().expect("close");
        let second = open(dir.path());
        drop(second);
        let third = open(dir.path());
        drop(third);
    }

    #[test]
    fn another_process_cannot_open_a_locked_directory() {
        let dir = tempdir();
        let store = open(dir.path());
        assert_eq!(run_child("child_tries_to_open", dir.path()).code(), Some(3));
        store.close().expect("close");
        assert_eq!(run_child("child_tries_to_open", dir.path()).code(), Some(0));
    }

    /// Child side of `another_process_cannot_open_a_locked_directory`: exit code 3 when locked
    /// out, 0 when the open succeeded.
    #[test]
    fn child_tries_to_open() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let code = match Store::open(options(Path::new(&dir))) {
            Ok(_) => 0,
            Err(StoreError::Locked { .. }) => 3,
            Err(_) => 4,
        };
        std::process::exit(code);
    }

    #[test]
    fn names_round_trip_without_collision() {
        let names: Vec<String> = [
            "",
            ":",
            "a:b",
            "a",
            "b:c",
            "/",
            "a/b",
            "..",
            "../..",
            "%",
            "%3A",
            "\0",
            "a\0b",
            "😀",
            "stream:a:b",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["x".repeat(1024), "😀".repeat(256)])
        .collect();
        let dir = tempdir();
        let mut store = open(dir.path());
        for s in &names {
            for g in &names {
                for i in names.iter().step_by(4) {
                    store.set(s, g, i, json!([s, g, i])).expect("set");
                }
            }
        }
        let check = |store: &Store| {
            assert_eq!(store.list_all().len(), names.len());
            for s in &names {
                assert_eq!(store.list_groups(s).len(), names.len());
                for g in &names {
                    for i in names.iter().step_by(4) {
                        assert_eq!(store.get(s, g, i), Some(&json!([s, g, i])));
                    }
                }
            }
        };
        check(&store);
        drop(store);
        let mut store = open(dir.path());
        check(&store);
        store.compact().expect("compact");
        drop(store);
        check(&open(dir.path()));
    }

    #[test]
    fn colon_joined_names_stay_apart() {
        let dir = tempdir();
        let mut store = open(dir.path());
        store.set("a:b", "c", "i", json!(1)).expect("set");
        store.set("a", "b:c", "i", json!(2)).expect("set");
        assert_eq!(store.get("a:b", "c", "i"), Some(&json!(1)));
        assert_eq!(store.get("a", "b:c", "i"), Some(&json!(2)));
        assert_eq!(store.list_groups("a"), ["b:c"]);
        assert_eq!(store.list_groups("a:b"), ["c"]);
    }

    #[test]
    fn failed_write_leaves_memory_unchanged() {
        let dir = tempdir();
        let mut store = open(dir.path());
        store.set("s", "g", "a", json!(1)).expect("set");
        let read_only = File::open(store.disk().log.path()).expect("open read-only");
        store
            .disk
            .as_mut()
            .expect("a store with a directory")
            .log
            .replace_file(read_only);
        let err = store.set("s", "g", "a", json!(2)).expect_err("write fails");
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert!(err.to_string().contains("append to log"), "{err}");
        assert_eq!(store.get("s", "g", "a"), Some(&json!(1)));
        // The failed write could not be cut back on a read-only handle: writes stay refused.
        let err = store.delete("s", "g", "a").expect_err("poisoned");
        assert!(matches!(err, StoreError::Poisoned { .. }), "{err}");
        assert_eq!(store.get("s", "g", "a"), Some(&json!(1)));
        assert_eq!(store.disk().last_seq, 1);
        store.compact().expect("compaction starts a fresh log");
        store.set("s", "g", "a", json!(3)).expect("set");
        store.close().expect("close");
        assert_eq!(open(dir.path()).get("s", "g", "a"), Some(&json!(3)));
    }

    #[test]
    fn error_messages_name_file_offset_and_reason() {
        let err = StoreError::Corrupt {
            file: PathBuf::from("/d/log-1.wal"),
            offset: 42,
            reason: "checksum mismatch".into(),
        };
        assert_eq!(
            err.to_string(),
            "/d/log-1.wal: corrupt data at byte offset 42: checksum mismatch"
        );
        let err = io_error("open log", Path::new("/d/x"))(io::Error::other("boom"));
        assert_eq!(err.to_string(), "cannot open log /d/x: boom");
    }
}
