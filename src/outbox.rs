//! Delivery to a socket actor whose peer may stop reading its socket.
//!
//! A WebSocket actor only runs while its socket drains (actix-web-actors drives it from the
//! response body), so a peer that stops reading freezes it and its mailbox fills. [`Outbox`]
//! sends with `try_send`; a full mailbox is fine while the actor keeps running (it stamps a
//! shared [`Progress`] whenever it handles a message), but a mailbox that stayed full without
//! the actor running for the stall timeout means the peer is gone: the caller drops it. Used by
//! the registry for worker sessions and by the stream module for consumer sockets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::prelude::*;

/// Milliseconds on a process-wide monotonic clock.
pub fn mono_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When a socket actor last ran (`mono_ms`), stamped by the actor itself.
#[derive(Debug, Clone)]
pub struct Progress(Arc<AtomicU64>);

impl Default for Progress {
    fn default() -> Self {
        Progress(Arc::new(AtomicU64::new(mono_ms())))
    }
}

impl Progress {
    /// Called by the actor whenever it handles a message.
    pub fn stamp(&self) {
        self.0.store(mono_ms(), Ordering::Relaxed);
    }

    fn last(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What happened to a message given to [`Outbox::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The peer has not drained anything for this long; drop it.
    Stalled {
        ms: u64,
    },
    /// The actor is gone.
    Closed,
}

/// A bounded, stall-aware way to message one socket actor.
pub struct Outbox<M>
where
    M: Message + Send,
    M::Result: Send,
{
    recipient: Recipient<M>,
    progress: Progress,
    full_since: Option<u64>,
    stall_timeout_ms: u64,
}

impl<M> Outbox<M>
where
    M: Message + Send,
    M::Result: Send,
{
    pub fn new(recipient: Recipient<M>, progress: Progress, stall_timeout_ms: u64) -> Self {
        Outbox {
            recipient,
            progress,
            full_since: None,
            stall_timeout_ms,
        }
    }

    /// Queues `msg` unless the peer has stalled.
    pub fn send(&mut self, msg: M) -> Delivery {
        match self.recipient.try_send(msg) {
            Ok(()) => {
                self.full_since = None;
                Delivery::Sent
            }
            Err(SendError::Full(msg)) => {
                let now = mono_ms();
                let since = *self.full_since.get_or_insert(now);
                if self.progress.last() >= since {
                    // It ran since the queue was first seen full: still draining.
                    self.full_since = Some(now);
                }
                let stalled = now.saturating_sub(self.full_since.unwrap_or(now));
                if stalled < self.stall_timeout_ms {
                    self.recipient.do_send(msg);
                    Delivery::Sent
                } else {
                    Delivery::Stalled { ms: stalled }
                }
            }
            Err(SendError::Closed(_)) => Delivery::Closed,
        }
    }

    /// Queues `msg` whatever the queue looks like (for the last word to a dropped peer).
    pub fn force(&self, msg: M) {
        self.recipient.do_send(msg);
    }
}
