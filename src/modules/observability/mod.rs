//! The observability module (`iii-observability`, `MODULES.md` §6): an `ObservabilityActor`
//! that keeps the telemetry workers send on `/otel` (OTLP/JSON traces, logs, metrics), the
//! engine's own span of every call and the `engine::log::*` lines, answers the query functions
//! (`engine::traces::*`, `engine::logs::*`, `engine::metrics::list`, `engine::health::check`,
//! …) and provides the `log` and `trace` trigger types. Always running, like upstream's.
//!
//! Who sends what: sockets and the router put [`Telemetry`] on a bounded channel with
//! `try_send` (at most [`CHANNEL`] items and [`MAX_FRAME_BYTES_QUEUED`] bytes of frames) — a
//! flood of telemetry is dropped and counted, it never backs up into a socket or
//! a call; the registry sends [`BuiltinCall`] and [`TriggerBinding`]. Everything is kept in
//! ring buffers of configured sizes (`store.rs`), so memory stays bounded whatever arrives.
//!
//! Triggers: a `log` binding (`level`: `all` or one severity, exact as upstream) fires for each
//! stored log, at most [`FIRES_PER_SECOND`] a second per binding (a handler that logs cannot
//! feed itself without end); a `trace` binding (`service_name`, `status`) gets
//! `{trace_ids}` of the spans that arrived in each 300 ms window, never counting the spans of
//! its own deliveries.
//!
//! With `exporter: otlp` (or `both`) spans and logs also go to a collector over OTLP/HTTP
//! (`export.rs`).
//!
//! Files: `otlp.rs` (reading OTLP/JSON), `store.rs` (the ring buffers and queries),
//! `functions.rs` (the functions and triggers), `export.rs` (OTLP/HTTP export).

mod export;
mod functions;
pub mod otlp;
mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use serde_json::Value;

use crate::config::ObservabilityConfig;
use crate::lograte::LogLimiter;
use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinFunction, BuiltinTriggerType, RegisterBuiltins, TriggerBinding,
};
use crate::payload::Payload;
use crate::registry::Registry;
use otlp::Span;
use store::Stores;

/// Telemetry items waiting for the actor before new ones are dropped.
pub const CHANNEL: usize = 4096;
/// Bytes of `/otel` frames waiting for the actor, and the most that may wait (beyond it frames
/// are dropped and counted). One process runs one engine, so one counter serves.
pub static FRAME_BYTES_QUEUED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);
pub const MAX_FRAME_BYTES_QUEUED: usize = 16 << 20;

/// Fires per second one `log` binding may cause.
pub const FIRES_PER_SECOND: u32 = 100;
/// The `trace` trigger's coalescing window.
const TRACE_WINDOW: Duration = Duration::from_millis(300);

/// What reaches the module.
#[derive(Debug)]
pub enum Telemetry {
    /// A binary `/otel` frame: `OTLP` / `MTRC` / `LOGS` + OTLP/JSON.
    Frame(Bytes),
    /// The engine's spans of calls that ended, in order.
    EngineSpans(Vec<Span>),
    /// A line of `engine::log::*`, in the stored log shape.
    Log(Value),
}

/// The sending side, cloned by sockets, the router and `engine::log::*`.
pub type Sink = tokio::sync::mpsc::Sender<Telemetry>;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct LogBinding {
    level: String,
    function_id: String,
    metadata: Option<Value>,
    limiter: LogLimiter,
}

struct TraceBinding {
    service: Option<String>,
    status: Option<String>,
    function_id: String,
    metadata: Option<Value>,
}

/// The observability actor. See the module docs.
pub struct ObservabilityActor {
    registry: Registry,
    config: ObservabilityConfig,
    stores: Stores,
    logs: HashMap<String, LogBinding>,
    traces: HashMap<String, TraceBinding>,
    /// (trace id, service, status) of the spans of the current window.
    window: Vec<(String, String, &'static str)>,
    /// Items dropped because the channel was full (shared with every sender).
    dropped: Arc<AtomicU64>,
    /// Worker log lines printed in the engine's log.
    console: LogLimiter,
    received: u64,
    /// OTLP/HTTP export, when configured.
    exporter: Option<export::Exporter>,
    export_errors: LogLimiter,
}

/// Starts the actor on its own thread and returns the sink to hand telemetry to; tells the
/// registry to record a span per call (unless `enabled: false`).
pub fn start(config: &ObservabilityConfig, registry: Registry) -> (Sink, Arbiter) {
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL);
    let dropped = Arc::new(AtomicU64::new(0));
    let arbiter = Arbiter::new();
    let reg = registry.clone();
    let cfg = config.clone();
    let d = dropped.clone();
    let addr =
        ObservabilityActor::start_in_arbiter(&arbiter.handle(), move |ctx| {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|t| (t, rx))
            });
            ctx.add_stream(stream);
            ObservabilityActor {
                registry: reg,
                stores: Stores::new(
                    cfg.memory_max_spans,
                    cfg.logs_max_count,
                    cfg.metrics_max_count,
                ),
                exporter: matches!(cfg.exporter.as_deref(), Some("otlp") | Some("both"))
                    .then(|| export::Exporter::new(&cfg.endpoint)),
                export_errors: LogLimiter::new("OTLP export failures", 1),
                config: cfg,
                logs: HashMap::new(),
                traces: HashMap::new(),
                window: Vec::new(),
                dropped: d,
                console: LogLimiter::new("worker OTLP log lines", 100),
                received: 0,
            }
        });
    registry.do_send(RegisterBuiltins {
        owner: "iii-observability",
        functions: functions::FUNCTIONS
            .iter()
            .map(|(id, d)| BuiltinFunction {
                id: id.to_string(),
                description: d.to_string(),
            })
            .collect(),
        calls: addr.clone().recipient(),
        trigger_types: vec![
            BuiltinTriggerType {
                id: "log".into(),
                description: "Fires for every stored log of a level".into(),
                engine_wide: true,
            },
            BuiltinTriggerType {
                id: "trace".into(),
                description: "Trace ids of recent spans, every 300 ms".into(),
                engine_wide: true,
            },
        ],
        bindings: addr.recipient(),
    });
    if config.enabled {
        registry.trace_calls(crate::router::Tracing {
            pending: Vec::new(),
            max_per_second: config.max_traces_per_second(),
            window: (0, 0),
            sink: tx.clone(),
            ratio: config.sampling_ratio.clamp(0.0, 1.0),
            service: Arc::from(config.service_name.as_str()),
            dropped: dropped.clone(),
        });
    }
    registry.set_telemetry(tx.clone(), dropped);
    (tx, arbiter)
}

impl ObservabilityActor {
    fn frame(&mut self, frame: Bytes) {
        let (prefix, body) = frame.split_at(4.min(frame.len()));
        let doc: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                log::debug!("telemetry frame dropped: not OTLP/JSON ({e})");
                return;
            }
        };
        match prefix {
            b"OTLP" if self.config.enabled => {
                for s in otlp::spans(&doc) {
                    self.span(s);
                }
            }
            b"LOGS" if self.config.logs_enabled => {
                for l in otlp::logs(&doc) {
                    if self.config.logs_console_output && self.console.allow() {
                        log::info!(target: "iii::otel", "{} {}: {}", l["service_name"].as_str().unwrap_or(""),
                            l["severity_text"].as_str().unwrap_or(""), l["body"].as_str().unwrap_or(""));
                    }
                    self.log(l);
                }
            }
            b"MTRC" if self.config.metrics_enabled => {
                for m in otlp::metrics(&doc) {
                    self.stores.add_metric(m);
                }
            }
            _ => {}
        }
    }

    fn span(&mut self, s: Span) {
        self.received += 1;
        if let Some(e) = &mut self.exporter {
            e.add_span(&s);
        }
        let watched = !self.traces.is_empty()
            && !store::internal(&s)
            && !self.traces.values().any(|b| b.function_id == s.name);
        if watched {
            self.window
                .push((s.trace_id.clone(), s.service_name.to_lowercase(), s.status));
        }
        self.stores.add_span(s);
    }

    /// Stores a log and fires the `log` bindings it matches.
    fn log(&mut self, l: Value) {
        if !self.config.logs_enabled {
            return;
        }
        let level = l["severity_text"].as_str().unwrap_or("").to_lowercase();
        let mut payload = None;
        for b in self.logs.values_mut() {
            if (b.level == "all" || b.level == level) && b.limiter.allow() {
                let p = payload
                    .get_or_insert_with(|| Payload::from_value(&l))
                    .clone();
                crate::modules::fire::fire(&self.registry, &b.function_id, p, b.metadata.clone());
            }
        }
        if let Some(e) = &mut self.exporter {
            e.add_log(&l);
        }
        self.stores.add_log(l);
    }

    /// Sends what waits for the collector (one request per signal at a time).
    fn export(&mut self, ctx: &mut Context<Self>) {
        while let Some((url, body, spans)) = self.exporter.as_mut().and_then(|e| e.next()) {
            ctx.spawn(
                export::post(url, body)
                    .into_actor(self)
                    .map(move |result, act, _| {
                        if let Some(e) = &mut act.exporter {
                            if spans {
                                e.sending_spans = false;
                            } else {
                                e.sending_logs = false;
                            }
                        }
                        if let Err(why) = result {
                            if act.export_errors.allow() {
                                log::warn!("OTLP export failed ({why}); that batch is dropped");
                            }
                        }
                    }),
            );
        }
    }

    /// Fires the `trace` bindings for the window that just ended.
    fn flush_window(&mut self) {
        if self.window.is_empty() {
            return;
        }
        let window = std::mem::take(&mut self.window);
        for b in self.traces.values() {
            let mut seen = HashSet::new();
            let ids: Vec<&str> = window
                .iter()
                .filter(|(_, service, status)| {
                    b.service.as_ref().is_none_or(|s| s == service)
                        && b.status.as_ref().is_none_or(|s| s == status)
                })
                .map(|(t, _, _)| t.as_str())
                .filter(|t| seen.insert(*t))
                .collect();
            if !ids.is_empty() {
                let payload = Payload::from_value(&serde_json::json!({ "trace_ids": ids }));
                crate::modules::fire::fire(
                    &self.registry,
                    &b.function_id,
                    payload,
                    b.metadata.clone(),
                );
            }
        }
    }
}

impl Actor for ObservabilityActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TRACE_WINDOW, |act, _| act.flush_window());
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            act.export(ctx);
            act.export_errors.roll();
            for b in act.logs.values_mut() {
                b.limiter.roll();
            }
            act.console.roll();
            let keep_ms = act.config.logs_retention_seconds.saturating_mul(1000);
            act.stores.expire_logs(now_ms().saturating_sub(keep_ms));
        });
    }
}

impl StreamHandler<Telemetry> for ObservabilityActor {
    fn handle(&mut self, item: Telemetry, _ctx: &mut Self::Context) {
        match item {
            Telemetry::Frame(f) => {
                FRAME_BYTES_QUEUED.fetch_sub(f.len(), Ordering::AcqRel);
                self.frame(f)
            }
            Telemetry::EngineSpans(spans) => {
                for s in spans {
                    self.stores.add_duration(s.duration_ms());
                    self.span(s);
                }
            }
            Telemetry::Log(l) => self.log(l),
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<BuiltinCall> for ObservabilityActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, _ctx: &mut Self::Context) {
        let outcome = self.call(&call.function_id, call.data.to_value());
        self.registry.do_send(BuiltinDone {
            engine_id: call.engine_id,
            outcome: outcome.map(|v| v.map(|v| Payload::from_value(&v))),
        });
    }
}

impl Handler<TriggerBinding> for ObservabilityActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerBinding, _ctx: &mut Self::Context) {
        match msg {
            TriggerBinding::Bind {
                id,
                trigger_type,
                function_id,
                config,
                metadata,
            } => self.bind(id, &trigger_type, function_id, config, metadata),
            TriggerBinding::Unbind { id } => {
                self.logs.remove(&id);
                self.traces.remove(&id);
            }
        }
    }
}

impl ObservabilityActor {
    /// Telemetry dropped so far because the channel was full.
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
