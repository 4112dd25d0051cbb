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
