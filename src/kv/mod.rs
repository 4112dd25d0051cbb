//! Durable key/value storage shared by the modules that keep data: the stream module
//! (`iii-stream`, stream › group › item) and the state module (`iii-state`, scope › key, kept
//! as one stream of the same store format in a directory of its own).
//!
//! * [`store`] — the store itself: memory plus an append-only, checksummed log and snapshots in
//!   one locked directory; an acknowledged write is in the log before it returns.
//! * [`durable`] — what keeps it off its owner's thread: the fsync thread (group commit for
//!   `fsync: always`), answers held until their write is durable, and compactions written from
//!   a frozen copy on a thread of their own.

pub mod durable;
pub mod store;

use std::path::Path;

use crate::config::{FsyncMode, KvConfig, StoreMethod};
use durable::Mode;
use store::{FsyncPolicy, Store, StoreError, StoreOptions};

/// Opens the store a module's kv adapter config describes — in memory, or file based in `dir`
/// (the store only writes; when to fsync is the syncer's job, `durable.rs`) — with the mode
/// its answers wait in. `name` names it in log lines.
pub fn open(kv: &KvConfig, dir: &Path, name: &'static str) -> Result<(Store, Mode), StoreError> {
    let mode = match kv.fsync {
        FsyncMode::Always => Mode::Always,
        FsyncMode::EverySecond => Mode::EverySecond,
    };
    let store = match kv.store_method {
        StoreMethod::InMemory => {
            log::warn!(
                "iii-{name}: store_method is in_memory; {name} data will not survive a restart"
            );
            Store::in_memory()
        }
        StoreMethod::FileBased => Store::open(StoreOptions {
            dir: dir.to_path_buf(),
            fsync: FsyncPolicy::Never,
            compact_threshold_bytes: kv.compact_threshold_bytes,
            name,
        })?,
    };
    Ok((store, mode))
}
