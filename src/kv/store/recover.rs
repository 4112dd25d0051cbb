//! Loading a store at start-up: the newest snapshot that loads completely, then every log
//! replayed on top of it, in order, without a gap in the sequence numbers.

use std::path::{Path, PathBuf};

use super::data::Data;
use super::files;
use super::format::Entry;
use super::wal::{LogFile, Replayed};
use super::StoreError;

/// The newest snapshot that loads completely, as (data, seq, file size); empty when none does.
pub(super) fn load_snapshot(snapshots: &[(u64, PathBuf)]) -> (Data, u64, u64) {
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
pub(super) fn replay_logs(
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
