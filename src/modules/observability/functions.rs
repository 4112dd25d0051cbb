//! The observability functions with upstream's shapes (`MODULES.md` §6.3) and the `log` /
//! `trace` bindings (§6.4). Not here: `engine::traces::group_by`, `engine::rollups::list`,
//! `engine::alerts::*` (no alerting in this engine) — they answer `function_not_found`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{now_ms, LogBinding, ObservabilityActor, TraceBinding, FIRES_PER_SECOND};
use crate::lograte::LogLimiter;
use crate::modules::bad_input;
use crate::modules::fire::config_text;
use crate::protocol::ErrorBody;

pub const FUNCTIONS: &[(&str, &str)] = &[
    (
        "engine::traces::list",
        "Recent traces (root spans), filtered and sorted",
    ),
    (
        "engine::traces::tree",
        "One trace's spans as a tree: {trace_id}",
    ),
    ("engine::traces::clear", "Forget every stored span"),
    ("engine::logs::list", "Recent logs, newest first, filtered"),
    ("engine::logs::clear", "Forget every stored log"),
    (
        "engine::metrics::list",
        "Call counts, workers, latency percentiles and SDK metrics",
    ),
    ("engine::health::check", "The observability module's state"),
    ("engine::sampling::rules", "How traces and logs are sampled"),
    (
        "engine::baggage::get",
        "Diagnostic: a baggage key of the engine's context",
    ),
    (
        "engine::baggage::set",
        "Diagnostic: has no effect on propagation",
    ),
    (
        "engine::baggage::get_all",
        "Diagnostic: the engine's baggage",
    ),
];

const LEVELS: &[&str] = &["all", "trace", "debug", "info", "warn", "error"];

impl ObservabilityActor {
    pub(super) fn call(
        &mut self,
        function_id: &str,
        input: Value,
    ) -> Result<Option<Value>, ErrorBody> {
        let q = if input.is_object() { input } else { json!({}) };
        let out = match function_id {
            "engine::traces::list" => self.stores.traces_list(&q),
            "engine::traces::tree" => {
                let Some(id) = q["trace_id"].as_str() else {
                    return Err(bad_input(function_id, "missing field `trace_id`"));
                };
                self.stores.tree(id)
            }
            "engine::traces::clear" => {
                self.stores.spans.clear();
                json!({"success": true})
            }
            "engine::logs::list" => self.stores.logs_list(&q),
            "engine::logs::clear" => {
                self.stores.logs.clear();
                json!({"success": true})
            }
            "engine::metrics::list" => self.metrics_list(&q),
            "engine::health::check" => self.health(),
            "engine::sampling::rules" => json!({
                "traces": {"default_ratio": self.config.sampling_ratio, "rules": [], "parent_based": true},
                "logs": {"sampling_ratio": 1.0},
                "timestamp": now_ms(),
            }),
            "engine::baggage::get" => json!({"value": null}),
            "engine::baggage::set" => json!({"success": true,
                "note": "the engine's baggage is per call; setting it here changes nothing"}),
            "engine::baggage::get_all" => json!({"baggage": {}}),
            other => {
                return Err(ErrorBody::new(
                    "function_not_found",
                    format!("Function {other} not found"),
                ))
            }
        };
        Ok(Some(out))
    }

    /// `engine::metrics::list`: the router's counts, recent latency, and what SDKs sent.
    fn metrics_list(&self, q: &Value) -> Value {
        let (stats, gauges) = self.registry.call_stats();
        let (mut total, mut failed) = (0u64, 0u64);
        let mut by_function = BTreeMap::new();
        for (f, s) in &stats.calls {
            total += s.started;
            failed += s.failed.values().sum::<u64>();
            by_function.insert(f.clone(), s.started);
        }
        let completed: u64 = stats.calls.values().map(|s| s.completed).sum();
        let active: u64 = gauges
            .connections
            .iter()
            .filter(|((_, kind), _)| *kind == "worker")
            .map(|(_, n)| n)
            .sum();
        let name = q["metric_name"].as_str();
        let sdk: Vec<&Value> = self
            .stores
            .metrics
            .iter()
            .filter(|m| name.is_none_or(|n| m["name"] == n))
            .collect();
        json!({
            "engine_metrics": {
                "invocations": {"total": total, "success": completed - failed.min(completed), "error": failed,
                                "deferred": total.saturating_sub(completed), "by_function": by_function},
                "workers": {"spawns": stats.worker_spawns, "deaths": stats.worker_deaths, "active": active},
                "performance": self.stores.performance(),
            },
            "sdk_metrics": sdk,
            "timestamp": now_ms(),
        })
    }

    fn health(&self) -> Value {
        let on = |enabled: bool, details: Value| {
            if enabled {
                json!({"status": "healthy", "details": details})
            } else {
                json!({"status": "disabled", "details": null})
            }
        };
        json!({
            "status": "healthy",
            "components": {
                "otel": on(self.config.enabled, json!({"spans_received": self.received, "dropped": self.dropped()})),
                "metrics": on(self.config.metrics_enabled, json!({"count": self.stores.metrics.len()})),
                "logs": on(self.config.logs_enabled, json!({"count": self.stores.logs.len(), "max": self.config.logs_max_count})),
                "spans": on(self.config.enabled, json!({"count": self.stores.spans.len(), "max": self.config.memory_max_spans})),
            },
            "timestamp": now_ms(),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    pub(super) fn bind(
        &mut self,
        id: String,
        trigger_type: &str,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
    ) {
        let config = if config.is_null() { json!({}) } else { config };
        let parsed = (|| -> Result<(), String> {
            if !config.is_object() {
                return Err(format!("Failed to parse {trigger_type} trigger config: expected an object, got {config}"));
            }
            if trigger_type == "log" {
                let level = config_text(&config, "level", "log")?
                    .unwrap_or_else(|| "all".into())
                    .to_lowercase();
                if !LEVELS.contains(&level.as_str()) {
                    return Err(format!(
                        "log trigger: unknown level {level:?} (one of {})",
                        LEVELS.join(", ")
                    ));
                }
                self.logs.insert(
                    id.clone(),
                    LogBinding {
                        level,
                        function_id: function_id.clone(),
                        metadata: metadata.clone(),
                        limiter: LogLimiter::new("log trigger fires", FIRES_PER_SECOND),
                    },
                );
            } else {
                let status = config_text(&config, "status", "trace")?.map(|s| s.to_lowercase());
                if status
                    .as_deref()
                    .is_some_and(|s| !["ok", "error", "unset"].contains(&s))
                {
                    return Err("trace trigger: status must be ok, error or unset".into());
                }
                self.traces.insert(
                    id.clone(),
                    TraceBinding {
                        service: config_text(&config, "service_name", "trace")?
                            .map(|s| s.to_lowercase()),
                        status,
                        function_id: function_id.clone(),
                        metadata: metadata.clone(),
                    },
                );
            }
            Ok(())
        })();
        if let Err(message) = parsed {
            self.registry.reject_binding(id, message);
        }
    }
}
