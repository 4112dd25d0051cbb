//! The engine-hosted `engine::*` functions and trigger types (`PROTOCOL.md` §5.2, §5.5, §5.7),
//! answered from the router's own tables, plus the installation of engine-hosted modules'
//! functions and trigger types.
//!
//! Functions: `engine::workers::register` (worker metadata, called void by every SDK),
//! `engine::functions::list`, `engine::workers::list`, `engine::triggers::list`,
//! `engine::registered-triggers::list`, `engine::register_trigger`, `engine::unregister_trigger`,
//! `engine::channels::create` (`MODULES.md` §8; the table is `crate::channels`).
//! Trigger types: `engine::functions-available`, `engine::workers-available`.
//! Session rules apply: an RBAC session only sees the functions it may call, and
//! `engine::register_trigger` honours its allowed trigger types and prefix.

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::discovery::ListFunctionsInput;
use super::triggers::{Provider, TriggerTypeEntry};
use super::{Effects, FunctionEntry, Owner, Router};
use crate::error::{Code, EngineError};
use crate::messages::{BuiltinFunction, BuiltinTriggerType};
use crate::payload::Payload;
use crate::protocol::ErrorBody;

type Outcome = Result<Option<Value>, ErrorBody>;

const FUNCTIONS: &[(&str, &str)] = &[
    (
        "engine::workers::register",
        "Record the calling worker's metadata",
    ),
    ("engine::functions::list", "List the registered functions"),
    (
        "engine::functions::info",
        "Describe one function, or up to 32",
    ),
    ("engine::workers::list", "List the connected workers"),
    ("engine::triggers::list", "List the trigger types"),
    (
        "engine::registered-triggers::list",
        "List the trigger bindings",
    ),
    ("engine::register_trigger", "Bind a function to a trigger"),
    ("engine::unregister_trigger", "Remove a trigger binding"),
    (
        "engine::channels::create",
        "Create a channel: {buffer_size?} -> {writer, reader} refs for /ws/channels/{id}",
    ),
];

/// Only with [`crate::engine::fault_injection`]: panics on the registry thread.
const FAULT_FUNCTION: (&str, &str) = (
    "engine::fault::panic",
    "Test aid: panic on the registry thread",
);

const TRIGGER_TYPES: &[(&str, &str)] = &[
    (
        "engine::functions-available",
        "Fires when the set of registered functions changes",
    ),
    (
        "engine::workers-available",
        "Fires when a worker connects, disconnects or updates its metadata",
    ),
];

/// The name in-process functions report as their worker.
pub(super) const ENGINE_WORKER: &str = "iii-engine-functions";

fn bad_input(function_id: &str, e: impl std::fmt::Display) -> ErrorBody {
    EngineError::Deserialization {
        function_id: function_id.to_string(),
        reason: e.to_string(),
    }
    .to_body()
}

pub(super) fn parse<T: for<'de> Deserialize<'de>>(
    function_id: &str,
    data: &Payload,
) -> Result<T, ErrorBody> {
    let text = if data.is_null() { "{}" } else { data.as_str() };
    serde_json::from_str(text).map_err(|e| bad_input(function_id, e))
}

#[derive(Deserialize)]
struct RegisterTriggerInput {
    trigger_type: String,
    function_id: String,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
struct UnregisterTriggerInput {
    id: String,
}

impl Router {
    pub(crate) fn install_engine_functions(&mut self) {
        let faults = crate::engine::fault_injection().then_some(&FAULT_FUNCTION);
        for (id, description) in FUNCTIONS.iter().chain(faults) {
            self.functions.insert(
                id.to_string(),
                FunctionEntry {
                    owner: Owner::Engine,
                    trusted: true,
                    description: Some(description.to_string()),
                    request_format: None,
                    response_format: None,
                    metadata: None,
                    invocation: None,
                },
            );
        }
        for (id, description) in TRIGGER_TYPES {
            self.trigger_types.insert(
                id.to_string(),
                TriggerTypeEntry {
                    provider: Provider::Engine,
                    description: description.to_string(),
                    engine_wide: true,
                },
            );
        }
    }

    /// Installs module number `self.modules.len()`: its functions and trigger types, and the
    /// bindings already waiting for those types.
    pub(crate) fn install_module(
        &mut self,
        owner: &'static str,
        functions: Vec<BuiltinFunction>,
        trigger_types: Vec<BuiltinTriggerType>,
        out: &mut Effects,
    ) {
        let index = self.modules.len();
        self.modules.push(owner);
        for f in functions {
            self.functions.insert(
                f.id,
                FunctionEntry {
                    owner: Owner::Module(index),
                    trusted: true,
                    description: Some(f.description),
                    request_format: None,
                    response_format: None,
                    metadata: None,
                    invocation: None,
                },
            );
        }
        let types: Vec<String> = trigger_types.iter().map(|t| t.id.clone()).collect();
        for t in trigger_types {
            self.trigger_types.insert(
                t.id,
                TriggerTypeEntry {
                    provider: Provider::Module(index),
                    description: t.description,
                    engine_wide: t.engine_wide,
                },
            );
        }
        self.activate_types(&types, out);
        self.functions_dirty = true;
        log::info!("{owner}: functions and trigger types installed");
    }

    /// Runs an `engine::*` function for the connection `from` (if any).
    pub(crate) fn call_engine_function(
        &mut self,
        function_id: &str,
        data: &Payload,
        from: Option<Uuid>,
        out: &mut Effects,
    ) -> Result<Option<Payload>, ErrorBody> {
        self.engine_function(function_id, data, from, out)
            .map(|v| v.map(|v| Payload::from_value(&v)))
    }

    fn engine_function(
        &mut self,
        function_id: &str,
        data: &Payload,
        from: Option<Uuid>,
        out: &mut Effects,
    ) -> Outcome {
        match function_id {
            "engine::workers::register" => self.workers_register(data.to_value(), from, out),
            "engine::functions::list" => {
                let input: ListFunctionsInput = parse(function_id, data)?;
                Ok(Some(self.functions_list(&input, from)))
            }
            "engine::functions::info" => self.functions_info(function_id, data, from),
            "engine::workers::list" => Ok(Some(self.workers_list())),
            "engine::triggers::list" => Ok(Some(self.trigger_types_list())),
            "engine::registered-triggers::list" => Ok(Some(self.bindings_list())),
            "engine::register_trigger" => {
                let input: RegisterTriggerInput = parse(function_id, data)?;
                self.register_trigger_fn(input, from, out)
            }
            "engine::unregister_trigger" => {
                let input: UnregisterTriggerInput = parse(function_id, data)?;
                let removed = self.remove_trigger(&input.id, out);
                Ok(Some(json!({ "removed": removed })))
            }
            "engine::channels::create" => {
                #[derive(Deserialize)]
                struct Input {
                    #[serde(default)]
                    buffer_size: Option<usize>,
                }
                let input: Input = parse(function_id, data)?;
                let size = input.buffer_size.unwrap_or(crate::channels::DEFAULT_BUFFER);
                let (id, key) = self.channels.create(size);
                use crate::channels::{channel_ref, Side};
                Ok(Some(json!({"writer": channel_ref(id, key, Side::Write),
                               "reader": channel_ref(id, key, Side::Read)})))
            }
            "engine::fault::panic" if crate::engine::fault_injection() => {
                panic!("fault injection: engine::fault::panic was called")
            }
            other => Err(EngineError::FunctionNotFound(other.to_string()).to_body()),
        }
    }

    fn workers_register(&mut self, data: Value, from: Option<Uuid>, out: &mut Effects) -> Outcome {
        let Some(worker_id) = from else {
            return Err(ErrorBody::new(
                Code::InvalidArguments,
                "engine::workers::register must be called by a worker",
            ));
        };
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return Ok(Some(json!({"success": true})));
        };
        let text = |k: &str| data.get(k).and_then(Value::as_str).and_then(sanitize);
        let m = &mut conn.meta;
        m.name = text("name");
        m.description = text("description");
        m.runtime = data
            .get("runtime")
            .and_then(Value::as_str)
            .map(str::to_string);
        m.version = data
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_string);
        m.os = data.get("os").and_then(Value::as_str).map(str::to_string);
        m.pid = data.get("pid").and_then(Value::as_u64);
        m.isolation = data.get("isolation").cloned().filter(|v| !v.is_null());
        m.telemetry = data.get("telemetry").cloned();
        self.fire_workers_available("worker_metadata_updated", worker_id, out);
        Ok(Some(json!({"success": true})))
    }

    /// `engine::register_trigger`: the same session rules as a `registertrigger` frame. A
    /// public session's binding is its own (counted, and removed when it disconnects); a
    /// trusted caller's binding belongs to nobody and stays until unregistered.
    fn register_trigger_fn(
        &mut self,
        input: RegisterTriggerInput,
        from: Option<Uuid>,
        out: &mut Effects,
    ) -> Outcome {
        let RegisterTriggerInput {
            trigger_type,
            mut function_id,
            mut config,
            metadata,
        } = input;
        let mut owner = None;
        if let Some(worker_id) = from.filter(|w| self.conns.contains_key(w)) {
            let forbidden = |reason: String| {
                ErrorBody::new(
                    Code::Forbidden,
                    format!("Trigger type '{trigger_type}' binding denied: {reason}"),
                )
            };
            self.check_binding(worker_id, &trigger_type, &mut function_id, &mut config)
                .map_err(forbidden)?;
            if let Some(conn) = self.conns.get(&worker_id).filter(|c| c.public()) {
                let max = conn.listener.max_triggers_per_session;
                if conn.triggers.len() >= max {
                    return Err(forbidden(format!(
                        "this session already has {max} triggers (max_triggers_per_session)"
                    )));
                }
                owner = Some(worker_id);
            }
        }
        let id = Uuid::new_v4().to_string();
        self.insert_trigger(
            id.clone(),
            trigger_type,
            function_id,
            config,
            metadata,
            owner,
            out,
        );
        if let Some(c) = owner.and_then(|w| self.conns.get_mut(&w)) {
            c.triggers.insert(id.clone());
        }
        Ok(Some(json!({ "id": id })))
    }

    fn fire_functions_available_payload(&self) -> Value {
        let list = self.functions_list(&ListFunctionsInput::default(), None);
        json!({"event": "functions_changed", "functions": list["functions"]})
    }

    /// `engine::functions-available` (§5.2).
    pub(crate) fn fire_functions_available(&mut self, out: &mut Effects) {
        let has_subscribers = self
            .triggers
            .values()
            .any(|t| t.active && t.trigger_type == "engine::functions-available");
        if has_subscribers {
            let payload = self.fire_functions_available_payload();
            self.fire_engine_trigger("engine::functions-available", payload, out);
        }
    }
}

/// Worker names and descriptions: control and bidi characters removed, trimmed, ≤ 280 chars.
fn sanitize(s: &str) -> Option<String> {
    let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
    let cleaned: String = s
        .chars()
        .filter(|c| !c.is_control() && !bidi(*c))
        .take(280)
        .collect();
    let trimmed = cleaned.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn sanitizes_worker_text() {
        assert_eq!(
            sanitize("  api\u{0007}-worker\u{202E} "),
            Some("api-worker".into())
        );
        assert_eq!(sanitize(" \n "), None);
        assert_eq!(sanitize(&"x".repeat(500)).map(|s| s.len()), Some(280));
    }
}
