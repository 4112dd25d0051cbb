//! Durability off the owning actor's thread: a syncer thread fsyncs the store's log, so no
//! call (`stream::*`, `state::*`) ever waits behind an fsync it does not need.
//!
//! With `fsync: every_second` the actor answers a write once it is in the log (write(2)) and
//! the syncer fsyncs the log once a second if anything was written. With `fsync: always` the
//! actor holds a write's answer (and its trigger events) until the syncer reports that an fsync
//! covering it has finished — group commit: the syncer starts the next fsync as soon as the
//! previous one ends, and one fsync covers every write made meanwhile, so 64 writers share one
//! fsync instead of queueing for 64.
//!
//! The actor tells the syncer about each write ([`Syncer::written`]) and about a new log file
//! after a compaction ([`Syncer::switch`]: the old file is fsynced once more before it is
//! forgotten); the syncer answers with [`Synced`]. [`Durability`] is the actor's side: the
//! answers it holds back, and compactions, which write their snapshot on a thread of their own
//! from a frozen copy of the contents (the actor only switches to a fresh log).

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::store::Store;
use crate::messages::BuiltinDone;
use crate::metrics::StoreStats;
use crate::protocol::ErrorBody;

const EVERY_SECOND: Duration = Duration::from_secs(1);

/// When the log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Once a second, if anything was written.
    EverySecond,
    /// Right away, covering everything written so far (group commit).
    Always,
}

/// From the syncer: every write up to this sequence number is on disk (`Always` mode), or an
/// fsync failed (both modes).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Synced(pub Result<u64, String>);

enum Cmd {
    /// Something was written (`always` mode: fsync it now).
    Written,
    Switch(File),
    Stop,
}

/// The handle on the syncer thread; dropping it without [`Syncer::stop`] stops it too.
pub struct Syncer {
    tx: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    mode: Mode,
    /// The last sequence number written. With `every_second` the syncer reads it once a
    /// second: telling it about each write would wake its thread once per write for nothing.
    written: Arc<AtomicU64>,
}

impl Syncer {
    /// Starts the thread for the log open as `file`; `up_to` is the last sequence number already
    /// written when it starts; fsync latencies go to `stats`.
    pub fn start(
        owner: &'static str,
        mode: Mode,
        file: File,
        up_to: u64,
        report: Recipient<Synced>,
        stats: Arc<StoreStats>,
    ) -> Syncer {
        let (tx, rx) = mpsc::channel();
        let written = Arc::new(AtomicU64::new(up_to));
        let seen = written.clone();
        let thread = std::thread::Builder::new()
            .name(format!("iii-{owner}-sync"))
            .spawn(move || run(owner, mode, file, seen, rx, report, stats))
            .ok();
        if thread.is_none() {
            log::error!("{owner} store: cannot start the fsync thread; writes are not fsynced");
        }
        Syncer {
            tx,
            thread,
            mode,
            written,
        }
    }

    /// Writes up to `seq` are in the log.
    pub fn written(&self, seq: u64) {
        self.written.fetch_max(seq, Ordering::Release);
        if self.mode == Mode::Always {
            let _ = self.tx.send(Cmd::Written);
        }
    }

    /// Later writes go to this new log file.
    pub fn switch(&self, file: File) {
        let _ = self.tx.send(Cmd::Switch(file));
    }

    /// A last fsync, then the thread ends; returns when it has.
    pub fn stop(mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
    }
}

fn run(
    owner: &'static str,
    mode: Mode,
    mut file: File,
    seen: Arc<AtomicU64>,
    rx: mpsc::Receiver<Cmd>,
    report: Recipient<Synced>,
    stats: Arc<StoreStats>,
) {
    let mut synced = seen.load(Ordering::Acquire);
    let mut retired: Vec<File> = Vec::new();
    let mut next_tick = Instant::now() + EVERY_SECOND;
    let mut stopping = false;
    while !stopping {
        let first = match mode {
            Mode::Always if seen.load(Ordering::Acquire) > synced => None,
            Mode::Always => rx.recv().ok().or(Some(Cmd::Stop)),
            Mode::EverySecond => {
                let wait = next_tick.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(cmd) => Some(cmd),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => Some(Cmd::Stop),
                }
            }
        };
        // Take everything that is already waiting: one fsync covers it all.
        for cmd in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match cmd {
                Cmd::Written => {}
                Cmd::Switch(new) => retired.push(std::mem::replace(&mut file, new)),
                Cmd::Stop => stopping = true,
            }
        }
        let due = match mode {
            Mode::Always => true,
            Mode::EverySecond => stopping || Instant::now() >= next_tick,
        };
        if !due {
            continue;
        }
        next_tick = Instant::now() + EVERY_SECOND;
        let written = seen.load(Ordering::Acquire);
        if written == synced && retired.is_empty() {
            continue;
        }
        let target = written;
        let began = Instant::now();
        let mut result = Ok(());
        for old in retired.drain(..) {
            result = result.and(old.sync_data());
        }
        let result = result.and_then(|()| file.sync_data());
        stats.fsync.observe(began.elapsed());
        match result {
            Ok(()) => {
                synced = target;
                if mode == Mode::Always {
                    report.do_send(Synced(Ok(synced)));
                }
            }
            Err(e) => {
                log::error!("{owner} store: fsync failed: {e}");
                report.do_send(Synced(Err(e.to_string())));
                // The kernel may have dropped the pages: do not pretend a retry made them safe.
                synced = target;
            }
        }
    }
}

/// A compaction finished on its own thread (sequence number and snapshot size, or why not).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CompactionDone(pub Result<(u64, u64), String>);

/// A call's answer and the change it made (`C`, what the owner announces), held until its
/// write is on disk.
pub struct Held<C> {
    seq: u64,
    pub done: BuiltinDone,
    pub change: Option<C>,
}

impl<C> Held<C> {
    /// Nothing to wait for.
    pub fn now(done: BuiltinDone, change: Option<C>) -> Held<C> {
        Held {
            seq: 0,
            done,
            change,
        }
    }
}

/// What the owning actor keeps for durability: the syncer, the answers it holds back, and
/// whether a compaction is running. Plain data; the actor feeds it and sends what it releases.
pub struct Durability<C> {
    /// `stream` or `state`: names threads, log lines and the write-failed error code.
    owner: &'static str,
    syncer: Option<Syncer>,
    mode: Mode,
    /// Highest sequence number the syncer was told about, and the highest known durable.
    noted: u64,
    synced: u64,
    held: VecDeque<Held<C>>,
    compacting: bool,
    stats: Arc<StoreStats>,
}

impl<C> Durability<C> {
    /// For `store` (no syncer for an in-memory store); reports go to `report`, numbers for
    /// `/metrics` to `stats`.
    pub fn new(
        owner: &'static str,
        store: &Store,
        mode: Mode,
        report: Recipient<Synced>,
        stats: Arc<StoreStats>,
    ) -> Durability<C> {
        let seq = store.last_seq();
        let syncer = match store.log_handle() {
            Some(Ok(file)) => Some(Syncer::start(owner, mode, file, seq, report, stats.clone())),
            Some(Err(e)) => {
                log::error!("{owner} store: no second handle on the log ({e}); writes are fsynced only at shutdown");
                None
            }
            None => None,
        };
        Durability {
            owner,
            mode: if syncer.is_some() {
                mode
            } else {
                Mode::EverySecond
            },
            syncer,
            noted: seq,
            synced: seq,
            held: VecDeque::new(),
            compacting: false,
            stats,
        }
    }

    /// A call was served while the store's last write was `seq`: its answer goes out now
    /// (returned) or once that write is durable (held).
    pub fn admit(&mut self, seq: u64, done: BuiltinDone, change: Option<C>) -> Option<Held<C>> {
        self.note(seq);
        let held = Held { seq, done, change };
        if self.mode == Mode::EverySecond || (seq <= self.synced && self.held.is_empty()) {
            return Some(held);
        }
        self.held.push_back(held);
        None
    }

    /// Something was written that no answer waits for (it is fsynced with the next batch).
    pub fn note(&mut self, seq: u64) {
        if seq > self.noted {
            self.noted = seq;
            if let Some(s) = &self.syncer {
                s.written(seq);
            }
        }
    }

    /// The syncer's report: the answers it makes durable, in order. A failed fsync poisons the
    /// store (writes refused until a compaction rewrites everything) and fails what was held.
    pub fn synced(&mut self, report: Result<u64, String>, store: &mut Store) -> Vec<Held<C>> {
        match report {
            Ok(seq) => {
                self.synced = self.synced.max(seq);
                let ready = self.held.iter().take_while(|h| h.seq <= seq).count();
                self.held.drain(..ready).collect()
            }
            Err(e) => {
                store.poison();
                self.held
                    .drain(..)
                    .map(|mut h| {
                        h.done.outcome = Err(ErrorBody::new(
                            format!("{}_WRITE_FAILED", self.owner.to_uppercase()),
                            format!(
                                "the store could not make the write durable (fsync failed: {e})"
                            ),
                        ));
                        h.change = None;
                        h
                    })
                    .collect()
            }
        }
    }

    /// The owner's periodic upkeep: publishes the store's size for `/metrics`, then
    /// [`Durability::maybe_compact`].
    pub fn maintain(&mut self, store: &mut Store, done: Recipient<CompactionDone>) {
        let (items, log_bytes) = store.size();
        self.stats.items.store(items, Ordering::Relaxed);
        self.stats.log_bytes.store(log_bytes, Ordering::Relaxed);
        self.maybe_compact(store, done);
    }

    /// Starts a compaction on its own thread when the log has grown (or a failure poisoned
    /// it), unless one is running: the store switches to a new log here, the snapshot is
    /// written there, and `done` hears the result.
    pub fn maybe_compact(&mut self, store: &mut Store, done: Recipient<CompactionDone>) {
        if self.compacting || !(store.needs_compaction() || store.is_poisoned()) {
            return;
        }
        let job = match store.start_compaction() {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => return log::error!("{} store: cannot start a compaction: {e}", self.owner),
        };
        if let (Some(s), Some(Ok(file))) = (&self.syncer, store.log_handle()) {
            s.switch(file);
        }
        self.compacting = true;
        let spawned = std::thread::Builder::new()
            .name(format!("iii-{}-compact", self.owner))
            .spawn(move || done.do_send(CompactionDone(job.run().map_err(|e| e.to_string()))));
        if let Err(e) = spawned {
            log::error!(
                "{} store: cannot start the compaction thread: {e}",
                self.owner
            );
            self.compacting = false;
        }
    }

    pub fn compaction_done(&mut self, result: Result<(u64, u64), String>, store: &mut Store) {
        self.compacting = false;
        match result {
            Ok((seq, len)) => store.finish_compaction(seq, len),
            Err(e) => log::error!("{} store: compaction failed: {e}", self.owner),
        }
    }

    /// Shutdown: stops the syncer (a last fsync) and releases everything held.
    pub fn close(&mut self) -> Vec<Held<C>> {
        if let Some(s) = self.syncer.take() {
            s.stop();
        }
        self.held.drain(..).collect()
    }
}

/// A store actor's shutdown: stops the fsync thread, flushes and closes the store (logging the
/// outcome under `owner`'s name), and returns the answers that were waiting, to be sent now.
pub fn shut_down<C>(
    owner: &str,
    durable: &mut Option<Durability<C>>,
    store: &mut Store,
) -> Vec<Held<C>> {
    let held = durable.take().map(|mut d| d.close()).unwrap_or_default();
    let on_disk = store.log_handle().is_some();
    match std::mem::replace(store, Store::in_memory()).close() {
        Ok(()) if on_disk => log::info!("{owner} store flushed and closed"),
        Ok(()) => {}
        Err(e) => log::error!("{owner} store: closing failed: {e}"),
    }
    held
}
