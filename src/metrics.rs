//! The engine's metrics and their Prometheus text rendering (`GET /metrics`).
//!
//! Where the numbers live, so that counting costs nothing extra on the call path:
//! * [`RouterStats`] — calls started / completed / failed by function and error code, call
//!   latency histograms, trigger fires, RBAC denials: plain integers inside the router, which
//!   already holds the registry's lock whenever a call starts or ends.
//! * [`Sources`] — what other threads own: each store's size and fsync latency
//!   ([`StoreStats`], atomics written by the store's actor and fsync thread), each queue's
//!   counts (a snapshot its actor refreshes), each exec entry's restarts (an atomic).
//!
//! A scrape takes the registry's lock once to copy the router's numbers, then renders.
//! Label cardinality is bounded: calls of unregistered ids are counted as `_unregistered`, and
//! beyond [`MAX_FUNCTION_SERIES`] function ids the rest share `_other`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Distinct function ids with series of their own.
pub const MAX_FUNCTION_SERIES: usize = 2000;
/// The label of calls to ids that are not registered.
pub const UNREGISTERED: &str = "_unregistered";
const OTHER: &str = "_other";

fn bucket(secs: f64) -> usize {
    BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(BUCKETS.len())
}

/// A latency histogram (not cumulative: one count per bucket, the last is +Inf).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        self.counts[bucket(secs)] += 1;
        self.sum += secs;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A histogram other threads write (fsync latency).
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    pub fn observe(&self, d: Duration) {
        self.counts[bucket(d.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        let mut h = Histogram::default();
        for (i, c) in self.counts.iter().enumerate() {
            h.counts[i] = c.load(Ordering::Relaxed);
        }
        h.sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        h
    }
}

/// One function's calls.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    pub started: u64,
    pub completed: u64,
    /// Error code → failed calls.
    pub failed: BTreeMap<String, u64>,
    pub duration: Histogram,
}

/// The router's counters. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct RouterStats {
    pub calls: HashMap<String, CallStats>,
    pub fires: HashMap<String, u64>,
    /// Reason → denied calls and registrations.
    pub denials: BTreeMap<&'static str, u64>,
    /// Worker connections accepted and ended.
    pub worker_spawns: u64,
    pub worker_deaths: u64,
}

impl RouterStats {
    fn series<'a, T: Default>(map: &'a mut HashMap<String, T>, id: &str) -> &'a mut T {
        if !map.contains_key(id) {
            let key = if map.len() >= MAX_FUNCTION_SERIES {
                OTHER
            } else {
                id
            };
            return map.entry(key.to_string()).or_default();
        }
        map.get_mut(id).expect("present")
    }

    pub fn started(&mut self, function_id: &str) {
        Self::series(&mut self.calls, function_id).started += 1;
    }

    /// A call ended after `took`, failed with `code` or not.
    pub fn finished(&mut self, function_id: &str, took: Duration, code: Option<&str>) {
        let s = Self::series(&mut self.calls, function_id);
        s.completed += 1;
        s.duration.observe(took);
        if let Some(code) = code {
            *s.failed.entry(code.to_string()).or_default() += 1;
        }
    }

    pub fn fired(&mut self, function_id: &str) {
        *Self::series(&mut self.fires, function_id) += 1;
    }

    pub fn denied(&mut self, reason: &'static str) {
        *self.denials.entry(reason).or_default() += 1;
    }
}

/// A store's size and fsync latency, kept by its actor and fsync thread.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub items: AtomicU64,
    pub log_bytes: AtomicU64,
    pub fsync: AtomicHistogram,
}

/// One queue's counts, as its actor last published them.
#[derive(Debug, Clone, Default)]
pub struct QueueGauge {
    pub queue: String,
    pub waiting: u64,
    pub delayed: u64,
    pub parked: u64,
    pub in_flight: u64,
    pub dead: u64,
}

/// What the modules publish for scrapes. Locks here are taken at registration, when a
/// snapshot is published (not per call), and by scrapes.
#[derive(Debug, Default)]
pub struct Sources {
    /// Telemetry items dropped because `iii-observability`'s queue was full.
    telemetry_dropped: Mutex<Option<Arc<AtomicU64>>>,
    stores: Mutex<Vec<(String, Arc<StoreStats>)>>,
    queues: Mutex<Vec<QueueGauge>>,
    exec: Mutex<Vec<(String, Arc<AtomicU64>)>>,
}

impl Sources {
    /// The stats of a store named `name` (`stream`, `state`, `queue`).
    pub fn store(&self, name: &str) -> Arc<StoreStats> {
        let stats = Arc::new(StoreStats::default());
        if let Ok(mut s) = self.stores.lock() {
            s.retain(|(n, _)| n != name);
            s.push((name.to_string(), stats.clone()));
        }
        stats
    }

    pub fn publish_queues(&self, gauges: Vec<QueueGauge>) {
        if let Ok(mut q) = self.queues.lock() {
            *q = gauges;
        }
    }

    pub fn telemetry_dropped(&self, counter: Arc<AtomicU64>) {
        if let Ok(mut t) = self.telemetry_dropped.lock() {
            *t = Some(counter);
        }
    }

    pub fn count_dropped_telemetry(&self) {
        if let Ok(t) = self.telemetry_dropped.lock() {
            if let Some(c) = t.as_ref() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The restart counter of an exec entry.
    pub fn exec_restarts(&self, name: &str) -> Arc<AtomicU64> {
        let counter = Arc::new(AtomicU64::new(0));
        if let Ok(mut e) = self.exec.lock() {
            e.push((name.to_string(), counter.clone()));
        }
        counter
    }
}

/// Connections by listener and kind, and the registry's table sizes.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// (listener, kind) → connections.
    pub connections: BTreeMap<(String, &'static str), u64>,
    pub functions: u64,
    pub triggers: u64,
    pub pending_calls: u64,
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
    }
    cumulative += h.counts[BUCKETS.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// The Prometheus text exposition (format 0.0.4) of everything.
pub fn render(stats: &RouterStats, gauges: &Gauges, sources: &Sources) -> String {
    let mut out = String::with_capacity(4096);
    head(
        &mut out,
        "iii_connections",
        "gauge",
        "Open WebSocket connections by listener and kind.",
    );
    for ((listener, kind), n) in &gauges.connections {
        let _ = writeln!(
            out,
            "iii_connections{{listener=\"{}\",kind=\"{kind}\"}} {n}",
            label(listener)
        );
    }
    head(&mut out, "iii_functions", "gauge", "Registered functions.");
    let _ = writeln!(out, "iii_functions {}", gauges.functions);
    head(&mut out, "iii_triggers", "gauge", "Registered triggers.");
    let _ = writeln!(out, "iii_triggers {}", gauges.triggers);
    head(
        &mut out,
        "iii_calls_in_flight",
        "gauge",
        "Calls waiting for their answer.",
    );
    let _ = writeln!(out, "iii_calls_in_flight {}", gauges.pending_calls);

    let mut calls: Vec<(&String, &CallStats)> = stats.calls.iter().collect();
    calls.sort_by(|a, b| a.0.cmp(b.0));
    head(
        &mut out,
        "iii_calls_started_total",
        "counter",
        "Calls routed, by function.",
    );
    for (f, s) in &calls {
        let _ = writeln!(
            out,
            "iii_calls_started_total{{function_id=\"{}\"}} {}",
            label(f),
            s.started
        );
    }
    head(
        &mut out,
        "iii_calls_completed_total",
        "counter",
        "Calls answered (with a result or an error), by function.",
    );
    for (f, s) in &calls {
        let _ = writeln!(
            out,
            "iii_calls_completed_total{{function_id=\"{}\"}} {}",
            label(f),
            s.completed
        );
    }
    head(
        &mut out,
        "iii_calls_failed_total",
        "counter",
        "Calls answered with an error, by function and error code.",
    );
    for (f, s) in &calls {
        for (code, n) in &s.failed {
            let _ = writeln!(
                out,
                "iii_calls_failed_total{{function_id=\"{}\",code=\"{}\"}} {n}",
                label(f),
                label(code)
            );
        }
    }
    head(
        &mut out,
        "iii_call_duration_seconds",
        "histogram",
        "Time from routing a call to its answer, by function.",
    );
    for (f, s) in &calls {
        histogram(
            &mut out,
            "iii_call_duration_seconds",
            &format!("function_id=\"{}\"", label(f)),
            &s.duration,
        );
    }
    let mut fires: Vec<(&String, &u64)> = stats.fires.iter().collect();
    fires.sort();
    head(
        &mut out,
        "iii_trigger_fires_total",
        "counter",
        "Trigger fires, by the function fired.",
    );
    for (f, n) in fires {
        let _ = writeln!(
            out,
            "iii_trigger_fires_total{{function_id=\"{}\"}} {n}",
            label(f)
        );
    }
    head(
        &mut out,
        "iii_rbac_denials_total",
        "counter",
        "Calls and registrations refused, by reason.",
    );
    for (reason, n) in &stats.denials {
        let _ = writeln!(out, "iii_rbac_denials_total{{reason=\"{reason}\"}} {n}");
    }

    let stores = sources.stores.lock().map(|s| s.clone()).unwrap_or_default();
    head(
        &mut out,
        "iii_store_items",
        "gauge",
        "Items held by each store.",
    );
    for (name, s) in &stores {
        let _ = writeln!(
            out,
            "iii_store_items{{store=\"{name}\"}} {}",
            s.items.load(Ordering::Relaxed)
        );
    }
    head(
        &mut out,
        "iii_store_log_bytes",
        "gauge",
        "Size of each store's current log file.",
    );
    for (name, s) in &stores {
        let _ = writeln!(
            out,
            "iii_store_log_bytes{{store=\"{name}\"}} {}",
            s.log_bytes.load(Ordering::Relaxed)
        );
    }
    head(
        &mut out,
        "iii_store_fsync_duration_seconds",
        "histogram",
        "fsync latency of each store's log.",
    );
    for (name, s) in &stores {
        histogram(
            &mut out,
            "iii_store_fsync_duration_seconds",
            &format!("store=\"{name}\""),
            &s.fsync.snapshot(),
        );
    }

    let queues = sources.queues.lock().map(|q| q.clone()).unwrap_or_default();
    head(
        &mut out,
        "iii_queue_jobs",
        "gauge",
        "Jobs held by each queue, by state.",
    );
    for q in &queues {
        let name = label(&q.queue);
        for (state, n) in [
            ("waiting", q.waiting),
            ("delayed", q.delayed),
            ("parked", q.parked),
            ("in_flight", q.in_flight),
        ] {
            let _ = writeln!(
                out,
                "iii_queue_jobs{{queue=\"{name}\",state=\"{state}\"}} {n}"
            );
        }
    }
    head(
        &mut out,
        "iii_queue_dead_letters",
        "gauge",
        "Dead letters kept by each queue.",
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "iii_queue_dead_letters{{queue=\"{}\"}} {}",
            label(&q.queue),
            q.dead
        );
    }

    let dropped = sources
        .telemetry_dropped
        .lock()
        .ok()
        .and_then(|t| t.as_ref().map(|c| c.load(Ordering::Relaxed)))
        .unwrap_or(0);
    head(
        &mut out,
        "iii_telemetry_dropped_total",
        "counter",
        "Spans, logs and OTLP frames dropped because the observability queue was full.",
    );
    let _ = writeln!(out, "iii_telemetry_dropped_total {dropped}");
    let exec = sources.exec.lock().map(|e| e.clone()).unwrap_or_default();
    head(
        &mut out,
        "iii_exec_restarts_total",
        "counter",
        "Restarts of each process the engine runs.",
    );
    for (name, n) in &exec {
        let _ = writeln!(
            out,
            "iii_exec_restarts_total{{name=\"{}\"}} {}",
            label(name),
            n.load(Ordering::Relaxed)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let mut stats = RouterStats::default();
        stats.started("a\"b");
        stats.finished("a\"b", Duration::from_millis(3), Some("boom"));
        stats.finished("a\"b", Duration::from_secs(60), None);
        let text = render(&stats, &Gauges::default(), &Sources::default());
        assert!(
            text.contains("iii_calls_failed_total{function_id=\"a\\\"b\",code=\"boom\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "iii_call_duration_seconds_bucket{function_id=\"a\\\"b\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("iii_call_duration_seconds_bucket{function_id=\"a\\\"b\",le=\"10\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("iii_call_duration_seconds_bucket{function_id=\"a\\\"b\",le=\"+Inf\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn function_series_are_bounded() {
        let mut stats = RouterStats::default();
        for i in 0..MAX_FUNCTION_SERIES + 50 {
            stats.started(&format!("f{i}"));
        }
        assert_eq!(stats.calls.len(), MAX_FUNCTION_SERIES + 1);
        assert_eq!(stats.calls[OTHER].started, 50);
    }
}
