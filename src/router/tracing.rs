//! The engine's own span per invocation: started when a call is routed, ended with its
//! outcome, handed to `iii-observability` in batches (every [`BATCH`] spans and at every router
//! tick) without waiting — a full channel drops the batch, counted, rather than slowing calls.
//! Ids come from a per-thread xorshift generator seeded once from the OS: a span costs no
//! system call. At most `max_per_second` calls a second are traced (`sampling.rate_limit.
//! max_traces_per_second`, 1,000 by default): every call of a quiet engine has its span, and a
//! busy one pays for a thousand a second, not for each call (measured in BENCH.md). The span joins the caller's trace when the call
//! carries a W3C `traceparent` (and follows its sampled flag), and the callee gets the engine's
//! span as its parent, so a trace reads caller → engine → callee.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::modules::observability::{otlp::Span, Sink, Telemetry};
use crate::protocol::ErrorBody;

/// Spans handed over at once.
pub const BATCH: usize = 256;

/// Where the router sends spans, and how many it records.
#[derive(Debug, Clone)]
pub struct Tracing {
    /// Ended spans not handed over yet.
    pub pending: Vec<Span>,
    pub sink: Sink,
    /// Fraction of new traces recorded.
    pub ratio: f64,
    pub service: Arc<str>,
    /// Spans dropped because the channel was full.
    pub dropped: Arc<AtomicU64>,
    /// At most this many spans a second are recorded; calls beyond it are not traced.
    pub max_per_second: u32,
    /// (second, spans started in it).
    pub window: (u64, u32),
}

/// A span in flight.
#[derive(Debug, Clone)]
pub struct SpanCtx {
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    start_ns: u64,
}

thread_local! {
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new(seed());
}

fn seed() -> u64 {
    (uuid::Uuid::new_v4().as_u128() as u64) | 1
}

/// A random u64 (xorshift64*): ids that need to be unique, not secret.
fn random() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `00-<trace>-<span>-<flags>` → (trace, parent span, sampled).
fn parse_traceparent(tp: &str) -> Option<(&str, &str, bool)> {
    let mut parts = tp.split('-');
    let (_version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(trace, 32) || !hex(span, 16) || trace.bytes().all(|b| b == b'0') {
        return None;
    }
    let sampled = u8::from_str_radix(flags, 16)
        .map(|f| f & 1 == 1)
        .unwrap_or(true);
    Some((trace, span, sampled))
}

impl Tracing {
    /// Starts the span of a call (or not, when its trace is not sampled).
    pub fn start(&mut self, traceparent: Option<&str>) -> Option<SpanCtx> {
        let second = crate::outbox::mono_ms() / 1000;
        if self.window.0 != second {
            self.window = (second, 0);
        }
        if self.window.1 >= self.max_per_second {
            return None;
        }
        self.window.1 += 1;
        let bits = random();
        let span_id = format!("{bits:016x}");
        let (trace_id, parent) = match traceparent.and_then(parse_traceparent) {
            Some((_, _, false)) => return None,
            Some((trace, span, true)) => (trace.to_string(), Some(span.to_string())),
            None => {
                if self.ratio < 1.0 && (bits as f64 / u64::MAX as f64) >= self.ratio {
                    return None;
                }
                (format!("{:016x}{:016x}", random(), random()), None)
            }
        };
        Some(SpanCtx {
            trace_id,
            span_id,
            parent,
            start_ns: now_ns(),
        })
    }

    /// Ends a span with the call's outcome and hands it over.
    pub fn end(&mut self, ctx: SpanCtx, function_id: &str, error: Option<&ErrorBody>) {
        let kind = if function_id.starts_with("engine::") {
            "internal"
        } else {
            "function"
        };
        let span = Span {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: ctx.parent,
            name: function_id.to_string(),
            start_ns: ctx.start_ns,
            end_ns: now_ns(),
            status: if error.is_some() { "error" } else { "ok" },
            status_description: error.map(|e| format!("{}: {}", e.code, e.message)),
            attributes: vec![
                ("iii.function.id".into(), function_id.to_string()),
                ("iii.function.kind".into(), kind.into()),
            ],
            service_name: self.service.to_string(),
            events: Vec::new(),
            links: Vec::new(),
            scope: Some(("iii".into(), None)),
        };
        self.pending.push(span);
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    /// Hands the ended spans over.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let n = batch.len() as u64;
        if self.sink.try_send(Telemetry::EngineSpans(batch)).is_err() {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl SpanCtx {
    /// The `traceparent` the callee gets: this span as its parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}
