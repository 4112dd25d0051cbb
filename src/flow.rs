//! Flow control for one socket: what a connection has inside the engine, and whether the engine
//! reads its socket.
//!
//! The engine never refuses work because one of its queues is momentarily full. Instead each
//! socket's reader is gated: while a connection has too much in the engine — frames read but
//! not yet handled, calls started but not yet answered, replies queued but not yet written — the
//! engine stops reading its socket, TCP's window fills and the sender slows down. Reading resumes
//! once every count is back under half its limit (so a busy connection is not woken for every
//! single frame).
//!
//! A [`Flow`] is shared by the socket actor (which reads frames and writes replies) and the
//! actor that owns the connection's work (the registry for worker sockets, the stream actor for
//! consumer sockets); the counters are atomics, so neither side waits for the other.
//! [`Gated`] wraps the socket's byte stream and stops pulling bytes while the flow is paused.
//!
//! A listener-wide [`Budget`] bounds the bytes of frames held in the engine by all of a
//! listener's sockets together (unfinished fragmented messages and frames not yet handled): a
//! socket that would push it past its limit is paused (or, for an unfinished message that cannot
//! fit, closed).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::Stream;

use crate::outbox::mono_ms;

/// Bytes of whole frames a socket may have read ahead of the codec. A frame that is still
/// arriving never counts against it (the codec needs all of it, up to the frame limit).
const READ_AHEAD: usize = 256 << 10;

/// Frames at least this big are charged to the listener's [`Budget`] while they wait (small
/// ones are bounded by each connection's limits; charging them all would make one counter
/// every socket of the listener fights over).
const BIG_FRAME: usize = 64 << 10;

/// How often a socket paused only by its listener's [`Budget`] looks again (the budget has no
/// list of waiters to wake).
const BUDGET_RECHECK: Duration = Duration::from_millis(5);

/// The limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames read and not yet handled.
    pub queued_frames: usize,
    /// Bytes of frames read and not yet handled.
    pub queued_bytes: usize,
    /// Calls started by this connection and not yet answered.
    pub inflight_calls: usize,
    /// Bytes queued for this connection and not yet written to its socket.
    pub outbound_bytes: usize,
}

/// Bytes held by all sockets of one listener.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes `bytes` if they fit (or if nothing is held, so one message larger than the whole
    /// budget can still pass alone).
    pub fn try_take(&self, bytes: usize) -> bool {
        let mut used = self.used.load(SeqCst);
        loop {
            if used > 0 && used + bytes > self.max {
                return false;
            }
            match self
                .used
                .compare_exchange_weak(used, used + bytes, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Takes `bytes` whatever the budget says (frames already read must be accounted).
    pub fn take(&self, bytes: usize) {
        self.used.fetch_add(bytes, SeqCst);
    }

    pub fn give(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(SeqCst, SeqCst, |u| Some(u.saturating_sub(bytes)));
    }

    pub fn used(&self) -> usize {
        self.used.load(SeqCst)
    }

    fn over(&self) -> bool {
        self.used.load(SeqCst) > self.max
    }
}

/// The counters of one connection. See the module docs.
#[derive(Debug)]
pub struct Flow {
    limits: Limits,
    budget: Arc<Budget>,
    queued_frames: AtomicUsize,
    queued_bytes: AtomicUsize,
    inflight: AtomicUsize,
    outbound: AtomicUsize,
    /// The reader was stopped and waits for a wake-up.
    paused: AtomicBool,
    /// Held closed regardless of the counts (a telemetry socket before its auth finished).
    held: AtomicBool,
    /// Not read before this `mono_ms` (a connection slowed down for abuse), 0 for none.
    throttled_until: AtomicU64,
    waker: AtomicWaker,
    /// How many times the socket actor wrote something out (progress, for stall checks).
    writes: AtomicU64,
}

impl Flow {
    pub fn new(limits: Limits, budget: Arc<Budget>) -> Arc<Flow> {
        Arc::new(Flow {
            limits,
            budget,
            queued_frames: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            outbound: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            held: AtomicBool::new(false),
            throttled_until: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            writes: AtomicU64::new(0),
        })
    }

    /// A flow with no limits worth the name, for sockets the engine does not gate.
    pub fn unlimited() -> Arc<Flow> {
        let max = usize::MAX / 4;
        Flow::new(
            Limits {
                queued_frames: max,
                queued_bytes: max,
                inflight_calls: max,
                outbound_bytes: max,
            },
            Budget::new(max),
        )
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn throttled(&self) -> Option<u64> {
        let until = self.throttled_until.load(SeqCst);
        (until > mono_ms()).then_some(until)
    }

    fn over(&self) -> bool {
        let l = &self.limits;
        self.held.load(SeqCst)
            || self.throttled().is_some()
            || self.queued_frames.load(SeqCst) >= l.queued_frames
            || self.queued_bytes.load(SeqCst) >= l.queued_bytes
            || self.inflight.load(SeqCst) >= l.inflight_calls
            || self.outbound.load(SeqCst) >= l.outbound_bytes
            || self.budget.over()
    }

    /// Every count at or under half its limit (and the budget not exhausted).
    fn relieved(&self) -> bool {
        let l = &self.limits;
        !self.held.load(SeqCst)
            && self.throttled().is_none()
            && self.queued_frames.load(SeqCst) <= l.queued_frames / 2
            && self.queued_bytes.load(SeqCst) <= l.queued_bytes / 2
            && self.inflight.load(SeqCst) <= l.inflight_calls / 2
            && self.outbound.load(SeqCst) <= l.outbound_bytes / 2
            && !self.budget.over()
    }

    /// Is reading paused right now?
    pub fn is_paused(&self) -> bool {
        self.paused.load(SeqCst)
    }

    /// Called by the reader before it pulls more bytes.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.paused.load(SeqCst) {
            if !self.over() {
                return Poll::Ready(());
            }
            self.paused.store(true, SeqCst);
        }
        self.waker.register(cx.waker());
        if self.relieved() {
            self.paused.store(false, SeqCst);
            return Poll::Ready(());
        }
        // Nobody wakes a socket for the listener's budget or at the end of a throttle: look
        // again then.
        let again = match self.throttled() {
            Some(until) => Some(Duration::from_millis(until.saturating_sub(mono_ms()) + 1)),
            None => self.budget.over().then_some(BUDGET_RECHECK),
        };
        if let Some(after) = again {
            let waker = cx.waker().clone();
            actix::spawn(async move {
                tokio::time::sleep(after).await;
                waker.wake();
            });
        }
        Poll::Pending
    }

    /// Stops reading the connection for `for_ms` (it is flooding the engine with work it
    /// refuses).
    pub fn throttle(&self, for_ms: u64) {
        self.throttled_until.store(mono_ms() + for_ms, SeqCst);
    }

    /// Wakes the reader if it is paused and may go on.
    fn recheck(&self) {
        if self.paused.load(SeqCst) && self.relieved() {
            self.waker.wake();
        }
    }

    /// Holds the reader closed (or lets it go).
    pub fn hold(&self, held: bool) {
        self.held.store(held, SeqCst);
        if !held {
            self.recheck();
        }
    }

    /// The socket read a frame of `bytes` that the engine now holds.
    pub fn frame_in(&self, bytes: usize) {
        self.queued_frames.fetch_add(1, SeqCst);
        self.queued_bytes.fetch_add(bytes, SeqCst);
        if bytes >= BIG_FRAME {
            self.budget.take(bytes);
        }
    }

    /// The engine handled a frame counted by [`Flow::frame_in`].
    pub fn frame_done(&self, bytes: usize) {
        sub(&self.queued_frames, 1);
        sub(&self.queued_bytes, bytes);
        if bytes >= BIG_FRAME {
            self.budget.give(bytes);
        }
        self.recheck();
    }

    /// A call made by this connection is now in flight.
    pub fn call_started(&self) {
        self.inflight.fetch_add(1, SeqCst);
    }

    /// A call counted by [`Flow::call_started`] finished.
    pub fn call_finished(&self) {
        sub(&self.inflight, 1);
        self.recheck();
    }

    /// Calls in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.load(SeqCst)
    }

    /// `bytes` were queued for the socket; returns the new total queued.
    pub fn out_queued(&self, bytes: usize) -> usize {
        self.outbound.fetch_add(bytes, SeqCst) + bytes
    }

    /// The socket actor took `bytes` off its queue and wrote them out.
    pub fn out_written(&self, bytes: usize) {
        self.writes.fetch_add(1, SeqCst);
        sub(&self.outbound, bytes);
        self.recheck();
    }

    /// Bytes queued for the socket.
    pub fn outbound(&self) -> usize {
        self.outbound.load(SeqCst)
    }

    /// How many times the socket actor wrote something out so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(SeqCst)
    }

    /// Frames read and not yet handled.
    pub fn queued_frames(&self) -> usize {
        self.queued_frames.load(SeqCst)
    }
}

fn sub(counter: &AtomicUsize, n: usize) {
    let _ = counter.fetch_update(SeqCst, SeqCst, |c| Some(c.saturating_sub(n)));
}

/// What a socket has read ahead of its WebSocket codec. Kept on the socket's own thread (the
/// reader counts what it reads, the socket what the codec hands over), so it costs no atomics.
#[derive(Debug, Default)]
pub struct ReadAhead {
    /// Bytes read that the codec has not turned into frames yet.
    unparsed: Cell<usize>,
    /// Whole frames read, and frames the codec handed over: when they are equal, what is
    /// unparsed is one frame still arriving.
    frames_read: Cell<u64>,
    frames_parsed: Cell<u64>,
}

impl ReadAhead {
    fn read(&self, bytes: usize, frames: u64) {
        self.unparsed.set(self.unparsed.get() + bytes);
        self.frames_read.set(self.frames_read.get() + frames);
    }

    /// The codec handed over a frame of `bytes` (its header included).
    pub fn parsed(&self, bytes: usize) {
        self.unparsed.set(self.unparsed.get().saturating_sub(bytes));
        self.frames_parsed.set(self.frames_parsed.get() + 1);
    }

    /// Too much of what was read is whole frames still waiting for the codec?
    fn over(&self, limit: usize) -> bool {
        self.frames_read.get() > self.frames_parsed.get() && self.unparsed.get() >= limit
    }
}

/// A byte stream that is not read while its [`Flow`] is paused, nor while it has read too far
/// ahead of the codec. It follows the WebSocket frame boundaries of what it reads (headers
/// only), so it knows how much of it is whole frames waiting.
pub struct Gated<S> {
    inner: S,
    flow: Arc<Flow>,
    frames: FrameScan,
    ahead: Rc<ReadAhead>,
}

impl<S> Gated<S> {
    pub fn new(inner: S, flow: Arc<Flow>, ahead: Rc<ReadAhead>) -> Self {
        Gated {
            inner,
            flow,
            frames: FrameScan::default(),
            ahead,
        }
    }
}

/// Where in the WebSocket frame sequence a byte stream is.
#[derive(Debug, Default)]
struct FrameScan {
    /// Header bytes of the frame being read, until the header is whole.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come (after its header).
    payload_left: u64,
    in_payload: bool,
}

impl FrameScan {
    /// Reads `bytes`; returns how many frames they completed.
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut done = 0;
        while !bytes.is_empty() {
            if self.in_payload {
                let take = (self.payload_left.min(bytes.len() as u64)) as usize;
                self.payload_left -= take as u64;
                bytes = &bytes[take..];
                if self.payload_left == 0 {
                    self.in_payload = false;
                    done += 1;
                }
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some(payload) = header_complete(&self.header) {
                self.header.clear();
                if payload == 0 {
                    done += 1;
                } else {
                    self.payload_left = payload;
                    self.in_payload = true;
                }
            }
        }
        done
    }
}

/// The payload length, once `header` holds a whole frame header.
fn header_complete(header: &[u8]) -> Option<u64> {
    let &[_, b1, ..] = header else {
        return None;
    };
    let masked = b1 & 0x80 != 0;
    let (ext, len7) = match b1 & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let need = 2 + ext + if masked { 4 } else { 0 };
    if header.len() < need {
        return None;
    }
    Some(len7.unwrap_or_else(|| {
        header[2..2 + ext]
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b))
    }))
}

impl<S, B, E> Stream for Gated<S>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self
            .ahead
            .over(READ_AHEAD.min(self.flow.limits.queued_bytes))
        {
            // The codec has whole frames to hand over first; look again once it has.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.flow.poll_ready(cx).is_pending() {
            return Poll::Pending;
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            let bytes = chunk.as_ref();
            let frames = self.frames.feed(bytes);
            self.ahead.read(bytes.len(), frames);
        }
        next
    }
}

/// The size on the wire of a frame from a client whose payload is `payload` bytes: the
/// header (2 bytes, plus 2 or 8 for the length, plus the 4-byte mask every client frame
/// carries) and the payload.
pub fn client_frame_len(payload: usize) -> usize {
    let length = match payload {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    2 + length + 4 + payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    fn flow() -> Arc<Flow> {
        Flow::new(
            Limits {
                queued_frames: 4,
                queued_bytes: 1000,
                inflight_calls: 2,
                outbound_bytes: 100,
            },
            Budget::new(10_000),
        )
    }

    fn ready(f: &Flow) -> bool {
        let waker = noop_waker();
        f.poll_ready(&mut Context::from_waker(&waker)).is_ready()
    }

    #[test]
    fn pauses_at_a_limit_and_resumes_at_half() {
        let f = flow();
        for _ in 0..3 {
            f.frame_in(10);
        }
        assert!(ready(&f));
        f.frame_in(10);
        assert!(!ready(&f) && f.is_paused());
        f.frame_done(10);
        assert!(!ready(&f), "3 of 4 queued: still over half");
        f.frame_done(10);
        assert!(ready(&f) && !f.is_paused());
    }

    #[test]
    fn every_count_can_pause() {
        let f = flow();
        f.call_started();
        f.call_started();
        assert!(!ready(&f));
        f.call_finished();
        assert!(ready(&f));
        assert_eq!(f.out_queued(150), 150);
        assert!(!ready(&f));
        f.out_written(100);
        assert!(ready(&f));
        f.hold(true);
        assert!(!ready(&f));
        f.hold(false);
        f.out_written(50);
        assert!(ready(&f));
        f.frame_in(2000);
        assert!(!ready(&f));
    }

    #[test]
    fn whole_frames_read_ahead_can_pause_a_frame_still_arriving_cannot() {
        let ahead = ReadAhead::default();
        ahead.read(5000, 0);
        assert!(
            !ahead.over(1000),
            "one big frame still arriving: keep reading"
        );
        ahead.read(100, 2);
        assert!(ahead.over(1000), "whole frames wait for the codec");
        ahead.parsed(client_frame_len(4500));
        ahead.parsed(client_frame_len(500));
        assert!(!ahead.over(1000));
        let mut scan = FrameScan::default();
        let small = [0x81, 0x80 | 3, 1, 2, 3, 4, b'a', b'b', b'c'];
        let mut big = vec![0x82, 0x80 | 126, 0x01, 0x00, 9, 9, 9, 9];
        big.extend(std::iter::repeat_n(0u8, 256));
        let stream: Vec<u8> = [&small[..], &big, &small, &[0x89, 0x80, 1, 2, 3, 4]].concat();
        let total: u64 = stream.chunks(7).map(|c| scan.feed(c)).sum();
        assert_eq!(total, 4);
        assert!(!scan.in_payload && scan.header.is_empty());
        assert_eq!(client_frame_len(0), 6);
        assert_eq!(client_frame_len(126), 8 + 126);
        assert_eq!(client_frame_len(70_000), 14 + 70_000);
    }

    #[test]
    fn the_budget_is_shared_and_lets_one_big_message_through() {
        let b = Budget::new(100);
        assert!(
            b.try_take(500),
            "nothing held: one oversized message may pass"
        );
        assert!(!b.try_take(1));
        b.give(500);
        assert!(b.try_take(60) && b.try_take(40) && !b.try_take(1));
        let f = Flow::new(
            Limits {
                queued_frames: 100,
                queued_bytes: 1 << 20,
                inflight_calls: 100,
                outbound_bytes: 1 << 20,
            },
            b.clone(),
        );
        f.frame_in(10);
        assert!(!b.over(), "small frames are not charged to the listener");
        f.frame_in(BIG_FRAME);
        assert!(b.over());
        f.frame_done(BIG_FRAME);
        f.frame_done(10);
        b.give(100);
        assert_eq!(b.used(), 0);
    }
}
