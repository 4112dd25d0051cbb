//! Delivery to a socket actor whose peer may read slowly or not at all.
//!
//! A WebSocket actor only runs while its socket drains (actix-web-actors drives it from the
//! response body), so a peer that stops reading freezes it and everything sent to it waits in
//! its mailbox. [`Outbox`] counts those bytes in the connection's [`Flow`]: past the flow's
//! outbound limit the engine stops reading that connection (it is not reading its replies), and
//! a connection whose queue passes `max_bytes`, or stays over the limit without the actor
//! writing anything for the stall timeout, is reported so its owner can drop it. Nothing is
//! ever refused because a mailbox is momentarily full. Used by the registry for worker
//! sessions and by the stream module for consumer sockets.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::prelude::*;

use crate::flow::Flow;

/// Milliseconds on a process-wide monotonic clock.
pub fn mono_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What happened to a message given to [`Outbox::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The peer has not drained anything for this long while over its limit; drop it.
    Stalled {
        ms: u64,
    },
    /// More than the hard limit is queued for the peer; drop it.
    Overflow {
        queued: usize,
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
    flow: Arc<Flow>,
    /// When the queue was first seen over the flow's outbound limit, and the socket's write
    /// count then (progress since means it is still draining).
    backed_up_since: Option<(u64, u64)>,
    stall_timeout_ms: u64,
    max_bytes: usize,
}

impl<M> Outbox<M>
where
    M: Message + Send,
    M::Result: Send,
{
    pub fn new(
        recipient: Recipient<M>,
        flow: Arc<Flow>,
        stall_timeout_ms: u64,
        max_bytes: usize,
    ) -> Self {
        Outbox {
            recipient,
            flow,
            backed_up_since: None,
            stall_timeout_ms,
            max_bytes,
        }
    }

    pub fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    /// Queues `msg`, which takes about `bytes` on the wire, unless the peer has stalled or holds
    /// too much already. One message larger than `max_bytes` still goes to an empty queue.
    pub fn send(&mut self, msg: M, bytes: usize) -> Delivery {
        let queued = self.flow.out_queued(bytes);
        if queued > bytes && queued > self.max_bytes {
            self.flow.out_written(bytes);
            return Delivery::Overflow { queued };
        }
        if let Some(ms) = self.stalled_for() {
            self.flow.out_written(bytes);
            return Delivery::Stalled { ms };
        }
        match self.recipient.try_send(msg) {
            Ok(()) => Delivery::Sent,
            Err(SendError::Full(msg)) => {
                self.recipient.do_send(msg);
                Delivery::Sent
            }
            Err(SendError::Closed(_)) => {
                self.flow.out_written(bytes);
                Delivery::Closed
            }
        }
    }

    /// How long the peer has been over its outbound limit without writing anything, once that
    /// exceeds the stall timeout.
    pub fn stalled_for(&mut self) -> Option<u64> {
        if self.flow.outbound() < self.flow.limits().outbound_bytes {
            self.backed_up_since = None;
            return None;
        }
        let now = mono_ms();
        let writes = self.flow.writes();
        let (since, seen) = *self.backed_up_since.get_or_insert((now, writes));
        if writes != seen {
            // It wrote something since the queue was first seen over: still draining.
            self.backed_up_since = Some((now, writes));
            return None;
        }
        let ms = now.saturating_sub(since);
        (ms >= self.stall_timeout_ms).then_some(ms)
    }

    /// Queues `msg` whatever the queue looks like (for the last word to a dropped peer).
    pub fn force(&self, msg: M) {
        self.recipient.do_send(msg);
    }
}
