//! The `iii-observability` module's config (`MODULES.md` §6.1): what telemetry the engine keeps
//! and how much of it, plus this engine's own Prometheus listener. Upstream's other keys
//! (alerts, OTLP batching, sampling rules, …) are accepted and not used.

use serde::Deserialize;

/// Keys upstream's module accepts, and this engine's own (`prometheus_host`, `prometheus_port`).
pub(super) const KEYS: &[&str] = &[
    "enabled",
    "service_name",
    "service_version",
    "service_namespace",
    "exporter",
    "endpoint",
    "sampling_ratio",
    "sampling",
    "memory_max_spans",
    "live_spans",
    "metrics_enabled",
    "metrics_exporter",
    "metrics_retention_seconds",
    "metrics_max_count",
    "logs_enabled",
    "logs_exporter",
    "logs_max_count",
    "logs_retention_seconds",
    "logs_batch_size",
    "logs_flush_interval_ms",
    "logs_sampling_ratio",
    "logs_console_output",
    "alerts",
    "level",
    "format",
    "collapse_spans",
    "prometheus_host",
    "prometheus_port",
];

/// The `iii-observability` module. It always runs; a config block only changes these.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ObservabilityConfig {
    /// `false`: no engine spans, and worker spans are dropped.
    pub enabled: bool,
    pub service_name: String,
    /// Fraction of new traces the engine records a span for (a caller's sampled flag wins).
    pub sampling_ratio: f64,
    /// Spans kept (the oldest go first).
    pub memory_max_spans: usize,
    pub metrics_enabled: bool,
    pub metrics_max_count: usize,
    pub logs_enabled: bool,
    pub logs_max_count: usize,
    pub logs_retention_seconds: u64,
    /// Print the logs workers send over OTLP in the engine's log.
    pub logs_console_output: bool,
    /// Serve `/metrics` on a listener of its own too.
    pub prometheus_host: String,
    pub prometheus_port: Option<u16>,
    /// Upstream's sampling block; `rate_limit.max_traces_per_second` (1000 here) bounds the
    /// engine's spans per second, the rest is accepted and not used.
    pub sampling: Option<Sampling>,
    /// `otlp` or `both`: spans and logs also go to `endpoint` over OTLP/HTTP (protobuf). They
    /// are kept in memory (and queryable) whatever this says.
    pub exporter: Option<String>,
    /// The collector's OTLP/HTTP base URL (`/v1/traces`, `/v1/logs` are appended).
    pub endpoint: String,
}

/// `sampling` (only `rate_limit` is used).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default)]
pub struct Sampling {
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RateLimit {
    pub max_traces_per_second: u32,
}

impl ObservabilityConfig {
    /// Engine spans a second at most.
    pub fn max_traces_per_second(&self) -> u32 {
        self.sampling
            .as_ref()
            .and_then(|s| s.rate_limit.as_ref())
            .map_or(1000, |r| r.max_traces_per_second.max(1))
    }
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        ObservabilityConfig {
            enabled: true,
            service_name: "iii".into(),
            sampling_ratio: 1.0,
            memory_max_spans: 10_000,
            metrics_enabled: true,
            metrics_max_count: 10_000,
            logs_enabled: true,
            logs_max_count: 1000,
            logs_retention_seconds: 3600,
            logs_console_output: true,
            prometheus_host: "127.0.0.1".into(),
            prometheus_port: None,
            exporter: None,
            sampling: None,
            endpoint: "http://localhost:4318".into(),
        }
    }
}
