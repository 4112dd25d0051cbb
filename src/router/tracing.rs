//! The engine's own span per invocation: started when a call is routed, ended with its
//! outcome, handed to `iii-observability` without waiting (a full channel drops the span,
//! counted, rather than slowing the call). The span joins the caller's trace when the call
//! carries a W3C `traceparent` (and follows its sampled flag), and the callee gets the engine's
//! span as its parent, so a trace reads caller → engine → callee.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::modules::observability::{otlp::Span, Sink, Telemetry};
use crate::protocol::ErrorBody;

/// Where the router sends spans, and how many it records.
#[derive(Debug, Clone)]
pub struct Tracing {
    pub sink: Sink,
    /// Fraction of new traces recorded.
    pub ratio: f64,
    pub service: Arc<str>,
    /// Spans dropped because the channel was full.
    pub dropped: Arc<AtomicU64>,
}

/// A span in flight.
#[derive(Debug, Clone)]
pub struct SpanCtx {
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    start_ns: u64,
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
    pub fn start(&self, traceparent: Option<&str>) -> Option<SpanCtx> {
        let random = uuid::Uuid::new_v4().as_u128();
        let span_id = format!("{:016x}", random as u64);
        let (trace_id, parent) = match traceparent.and_then(parse_traceparent) {
            Some((_, _, false)) => return None,
            Some((trace, span, true)) => (trace.to_string(), Some(span.to_string())),
            None => {
                if self.ratio < 1.0
                    && ((random >> 64) as u64 as f64 / u64::MAX as f64) >= self.ratio
                {
                    return None;
                }
                (format!("{:032x}", uuid::Uuid::new_v4().as_u128()), None)
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
    pub fn end(&self, ctx: SpanCtx, function_id: &str, error: Option<&ErrorBody>) {
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
        if self
            .sink
            .try_send(Telemetry::EngineSpan(Box::new(span)))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl SpanCtx {
    /// The `traceparent` the callee gets: this span as its parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}
