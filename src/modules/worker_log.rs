//! `engine::log::{info,warn,error,debug,trace}` (`MODULES.md` §6.3): workers write to the
//! engine's log. Always present (upstream's observability module that provides them is
//! mandatory), and callable by public sessions (RBAC lists them as infrastructure).
//!
//! Input `{"message": R string, "data"?: object, "trace_id"?, "span_id"?, "service_name"?}`;
//! no result. The line carries the caller's worker id, the service name and the structured
//! fields (target `iii::worker_log`, so `RUST_LOG=iii::worker_log=warn` filters them). Each
//! connection may write [`LINES_PER_SECOND`] lines a second; the rest are counted and the count
//! is logged once the second is over, so no worker can flood the engine's log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::lograte::LogLimiter;
use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinFunction, RegisterBuiltins, TriggerBinding,
};
use crate::modules::{bad_input, check_string_keys};
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::registry::Registry;

/// Lines one connection may write each second.
pub const LINES_PER_SECOND: u32 = 100;

const LEVELS: &[(&str, log::Level)] = &[
    ("engine::log::info", log::Level::Info),
    ("engine::log::warn", log::Level::Warn),
    ("engine::log::error", log::Level::Error),
    ("engine::log::debug", log::Level::Debug),
    ("engine::log::trace", log::Level::Trace),
];

#[derive(Deserialize)]
struct LogInput {
    message: String,
    #[serde(default)]
    data: Option<Map<String, Value>>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    span_id: Option<String>,
    #[serde(default)]
    service_name: Option<String>,
}

/// The actor behind `engine::log::*`.
pub struct WorkerLogActor {
    registry: Registry,
    /// Per caller (worker id; `engine` for internal calls).
    limits: HashMap<Arc<str>, LogLimiter>,
}

/// Starts the actor on `arbiter` and announces the five functions.
pub fn start(registry: Registry, arbiter: &ArbiterHandle) -> Addr<WorkerLogActor> {
    let reg = registry.clone();
    let actor = WorkerLogActor::start_in_arbiter(arbiter, move |_| WorkerLogActor {
        registry: reg,
        limits: HashMap::new(),
    });
    registry.do_send(RegisterBuiltins {
        owner: "iii-observability",
        functions: LEVELS
            .iter()
            .map(|(id, level)| BuiltinFunction {
                id: id.to_string(),
                description: format!("Write a {level} line to the engine log: {{message, data?}}"),
            })
            .collect(),
        calls: actor.clone().recipient(),
        trigger_types: Vec::new(),
        bindings: actor.clone().recipient(),
    });
    actor
}

impl WorkerLogActor {
    fn write(&mut self, call: &BuiltinCall) -> Result<(), ErrorBody> {
        let Some(&(_, level)) = LEVELS.iter().find(|(id, _)| *id == call.function_id) else {
            return Err(ErrorBody::new(
                "function_not_found",
                format!("Function {} not found", call.function_id),
            ));
        };
        let f = call.function_id.as_str();
        let value = call.data.to_value();
        check_string_keys(
            f,
            &value,
            &["message", "trace_id", "span_id", "service_name"],
        )?;
        if value
            .get("data")
            .is_some_and(|d| !d.is_object() && !d.is_null())
        {
            return Err(bad_input(f, "`data` must be an object"));
        }
        let input: LogInput = serde_json::from_value(value).map_err(|e| bad_input(f, e))?;
        self.store(level, &input);
        if !log::log_enabled!(target: "iii::worker_log", level) {
            return Ok(());
        }
        let caller: Arc<str> = call.caller.clone().unwrap_or_else(|| Arc::from("engine"));
        let limiter = self
            .limits
            .entry(caller.clone())
            .or_insert_with(|| LogLimiter::new("log lines from one worker", LINES_PER_SECOND));
        if !limiter.allow() {
            return Ok(());
        }
        let who = match &call.caller {
            Some(id) => format!("worker {id}"),
            None => "engine".to_string(),
        };
        let mut line = match &input.service_name {
            Some(service) => format!("{who} ({service}): {}", input.message),
            None => format!("{who}: {}", input.message),
        };
        if let Some(data) = input.data.filter(|d| !d.is_empty()) {
            line.push(' ');
            line.push_str(&Value::Object(data).to_string());
        }
        for (key, value) in [("trace_id", &input.trace_id), ("span_id", &input.span_id)] {
            if let Some(v) = value {
                line.push_str(&format!(" {key}={v}"));
            }
        }
        log::log!(target: "iii::worker_log", level, "{line}");
        Ok(())
    }

    /// Hands the line to `iii-observability` in upstream's stored log shape (severity
    /// 9/13/17/5/1, `attributes` = `data`, service `unknown` unless given, scope `iii`).
    fn store(&self, level: log::Level, input: &LogInput) {
        let (number, text) = match level {
            log::Level::Info => (9, "INFO"),
            log::Level::Warn => (13, "WARN"),
            log::Level::Error => (17, "ERROR"),
            log::Level::Debug => (5, "DEBUG"),
            log::Level::Trace => (1, "TRACE"),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let service = input
            .service_name
            .clone()
            .unwrap_or_else(|| "unknown".into());
        let record = serde_json::json!({
            "timestamp_unix_nano": now,
            "observed_timestamp_unix_nano": now,
            "severity_number": number,
            "severity_text": text,
            "body": input.message,
            "attributes": input.data.clone().unwrap_or_default(),
            "trace_id": input.trace_id,
            "span_id": input.span_id,
            "resource": {"service.name": service},
            "service_name": service,
            "instrumentation_scope_name": "iii",
        });
        self.registry
            .telemetry(crate::modules::observability::Telemetry::Log(record));
    }

    /// Reports suppressed counts and forgets callers that have been quiet.
    fn roll(&mut self) {
        for limiter in self.limits.values_mut() {
            limiter.roll();
        }
        self.limits.retain(|_, l| l.recently_used());
    }
}

impl Actor for WorkerLogActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(1), |act, _| act.roll());
    }
}

impl Handler<BuiltinCall> for WorkerLogActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, _ctx: &mut Self::Context) {
        let outcome = self.write(&call).map(|()| None::<Payload>);
        self.registry.do_send(BuiltinDone {
            engine_id: call.engine_id,
            outcome,
        });
    }
}

impl Handler<TriggerBinding> for WorkerLogActor {
    type Result = ();
    fn handle(&mut self, _msg: TriggerBinding, _ctx: &mut Self::Context) {}
}
