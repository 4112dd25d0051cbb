//! The engine-hosted `engine::*` functions and trigger types (`PROTOCOL.md` §5.2, §5.5, §5.7),
//! answered from the router's own tables, plus the installation of engine-hosted modules'
//! functions and trigger types.
//!
//! Functions: `engine::workers::register` (worker metadata, called void by every SDK),
//! `engine::functions::list`, `engine::workers::list`, `engine::triggers::list`,
//! `engine::registered-triggers::list`, `engine::register_trigger`, `engine::unregister_trigger`.
//! Trigger types: `engine::functions-available`, `engine::workers-available`.
//! Session rules apply: an RBAC session only sees the functions it may call, and
//! `engine::register_trigger` honours its allowed trigger types and prefix.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::triggers::{Provider, TriggerTypeEntry};
use super::{Effects, FunctionEntry, Owner, Router};
use crate::error::{Code, EngineError};
use crate::messages::{BuiltinFunction, BuiltinTriggerType};
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::rbac::{self, Decision};

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
const ENGINE_WORKER: &str = "iii-engine-functions";

fn bad_input(function_id: &str, e: impl std::fmt::Display) -> ErrorBody {
    EngineError::Deserialization {
        function_id: function_id.to_string(),
        reason: e.to_string(),
    }
    .to_body()
}

fn parse<T: for<'de> Deserialize<'de>>(function_id: &str, data: &Payload) -> Result<T, ErrorBody> {
    let text = if data.is_null() { "{}" } else { data.as_str() };
    serde_json::from_str(text).map_err(|e| bad_input(function_id, e))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListFunctionsInput {
    search: Option<String>,
    prefix: Option<String>,
    worker: Option<String>,
    workers: Option<Vec<String>>,
    include_internal: bool,
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

    /// The name a function's worker is known by (§5.7 `worker_name`).
    fn worker_name(&self, function_id: &str, owner: Owner) -> String {
        match owner {
            Owner::Session(w) => self
                .conns
                .get(&w)
                .and_then(|c| c.meta.name.clone())
                .unwrap_or_else(|| {
                    function_id
                        .split("::")
                        .next()
                        .unwrap_or(function_id)
                        .to_string()
                }),
            Owner::Module(i) => self.modules[i].to_string(),
            Owner::Engine => ENGINE_WORKER.to_string(),
        }
    }

    fn functions_list(&self, input: &ListFunctionsInput, from: Option<Uuid>) -> Value {
        let session = from.and_then(|w| self.conns.get(&w));
        let mut out: Vec<(String, Value)> = Vec::new();
        for (id, f) in &self.functions {
            let internal = (id.starts_with("engine::") && !id.starts_with("engine::queue::"))
                || f.metadata.as_ref().and_then(|m| m.get("internal")) == Some(&Value::Bool(true));
            if internal && !input.include_internal {
                continue;
            }
            if let Some(conn) = session {
                let expose = conn
                    .listener
                    .rbac
                    .as_ref()
                    .map(|r| r.expose_functions.as_slice());
                if !matches!(
                    rbac::decide_invoke(&conn.policy, expose, id, f.metadata.as_ref()),
                    Decision::Allow(_)
                ) {
                    continue;
                }
            }
            if input
                .prefix
                .as_ref()
                .is_some_and(|p| !id.starts_with(p.as_str()))
            {
                continue;
            }
            let worker_name = self.worker_name(id, f.owner);
            let wanted_workers: Vec<&String> = input
                .worker
                .iter()
                .chain(input.workers.iter().flatten())
                .collect();
            if !wanted_workers.is_empty() && !wanted_workers.contains(&&worker_name) {
                continue;
            }
            if let Some(q) = &input.search {
                let q = q.to_lowercase();
                let hay = format!("{id} {}", f.description.as_deref().unwrap_or("")).to_lowercase();
                if !hay.contains(&q) {
                    continue;
                }
            }
            let mut item = Map::new();
            item.insert("function_id".into(), json!(id));
            item.insert("worker_name".into(), json!(worker_name));
            if let Some(d) = &f.description {
                item.insert("description".into(), json!(d));
            }
            if let Some(m) = &f.metadata {
                item.insert("metadata".into(), m.clone());
            }
            out.push((id.clone(), Value::Object(item)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        json!({"functions": out.into_iter().map(|(_, v)| v).collect::<Vec<_>>()})
    }

    /// `{function_id}` → one detail; `{function_ids: [≤32]}` → `{functions: [...]}`. A session
    /// is told `FORBIDDEN` before existence is checked, so hidden ids leak nothing.
    fn functions_info(&self, function_id: &str, data: &Payload, from: Option<Uuid>) -> Outcome {
        #[derive(Deserialize)]
        struct Input {
            function_id: Option<String>,
            function_ids: Option<Vec<String>>,
        }
        let input: Input = parse(function_id, data)?;
        let detail = |id: &str| -> Result<Value, (&'static str, String)> {
            if let Some(conn) = from.and_then(|w| self.conns.get(&w)) {
                let expose = conn
                    .listener
                    .rbac
                    .as_ref()
                    .map(|r| r.expose_functions.as_slice());
                let meta = self.functions.get(id).and_then(|f| f.metadata.as_ref());
                if !matches!(
                    rbac::decide_invoke(&conn.policy, expose, id, meta),
                    Decision::Allow(_)
                ) {
                    return Err((
                        "forbidden",
                        format!("function '{id}' is not visible to this session"),
                    ));
                }
            }
            let f = self
                .functions
                .get(id)
                .ok_or(("not_found", format!("Function {id} not found")))?;
            let triggers: Vec<Value> = self
                .triggers
                .iter()
                .filter(|(_, t)| t.function_id == id)
                .map(|(tid, t)| json!({"id": tid, "trigger_type": t.trigger_type, "config": t.config}))
                .collect();
            let mut out = json!({"function_id": id, "worker_name": self.worker_name(id, f.owner),
                                 "registered_triggers": triggers});
            for (key, value) in [
                ("description", f.description.clone().map(Value::String)),
                ("request_schema", f.request_format.clone()),
                ("response_schema", f.response_format.clone()),
                ("metadata", f.metadata.clone()),
            ] {
                if let Some(v) = value {
                    out[key] = v;
                }
            }
            Ok(out)
        };
        match (input.function_id, input.function_ids) {
            (Some(id), None) => match detail(&id) {
                Ok(v) => Ok(Some(v)),
                Err(("forbidden", m)) => Err(ErrorBody::new(Code::Forbidden, m)),
                Err((_, m)) => Err(ErrorBody::new(Code::NotFound, m)),
            },
            (None, Some(ids)) if ids.len() <= 32 => {
                let list = ids
                    .iter()
                    .map(|id| {
                        detail(id).unwrap_or_else(|(e, _)| json!({"function_id": id, "error": e}))
                    })
                    .collect::<Vec<_>>();
                Ok(Some(json!({ "functions": list })))
            }
            _ => Err(ErrorBody::new(
                Code::InvalidArguments,
                "give either function_id or function_ids (at most 32)",
            )),
        }
    }

    fn workers_list(&self) -> Value {
        let mut workers: Vec<Value> = Vec::new();
        let mut in_process: Vec<&str> = vec![ENGINE_WORKER];
        in_process.extend(self.modules.iter().copied());
        for name in in_process {
            let count = self
                .functions
                .iter()
                .filter(|(id, f)| self.worker_name(id, f.owner) == name)
                .count();
            workers.push(
                json!({"name": name, "description": null, "version": env!("CARGO_PKG_VERSION"),
                "id": name, "runtime": "engine", "os": std::env::consts::OS, "status": "available",
                "function_count": count, "connected_at_ms": null, "active_invocations": 0,
                "isolation": "in-process", "ip_address": null}),
            );
        }
        let mut sessions: Vec<(&Uuid, &super::Conn)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.meta.pid.is_some())
            .collect();
        sessions.sort_by_key(|(_, c)| c.connected_at_ms);
        for (id, c) in sessions {
            let owned = c
                .functions
                .iter()
                .filter(|f| {
                    self.functions
                        .get(*f)
                        .is_some_and(|e| e.owner == Owner::Session(*id))
                })
                .count();
            let status = if c.serving.is_empty() {
                "connected"
            } else {
                "busy"
            };
            workers.push(
                json!({"name": c.meta.name, "description": c.meta.description,
                "version": c.meta.version, "id": id.to_string(),
                "runtime": c.meta.runtime.clone().unwrap_or_else(|| "unknown".into()),
                "os": c.meta.os, "status": status, "function_count": owned,
                "connected_at_ms": c.connected_at_ms, "active_invocations": c.serving.len(),
                "isolation": c.meta.isolation, "ip_address": c.peer.ip, "pid": c.meta.pid}),
            );
        }
        json!({ "workers": workers })
    }

    fn trigger_types_list(&self) -> Value {
        let mut types: Vec<Value> = self
            .trigger_types
            .iter()
            .map(|(id, t)| {
                let worker_name = match t.provider {
                    Provider::Session(w) => self.conns.get(&w).and_then(|c| c.meta.name.clone()),
                    Provider::Module(i) => Some(self.modules[i].to_string()),
                    Provider::Engine => Some(ENGINE_WORKER.to_string()),
                };
                json!({"id": id, "worker_name": worker_name, "description": t.description})
            })
            .collect();
        types.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        json!({ "triggers": types })
    }

    fn bindings_list(&self) -> Value {
        let mut out: Vec<Value> = self
            .triggers
            .iter()
            .map(|(id, t)| {
                let worker_name = self
                    .functions
                    .get(&t.function_id)
                    .map(|f| self.worker_name(&t.function_id, f.owner));
                let compact = t.config.to_string();
                let summary = match compact.char_indices().nth(80) {
                    Some((i, _)) => format!("{}…", &compact[..i]),
                    None => compact,
                };
                json!({"id": id, "trigger_type": t.trigger_type, "function_id": t.function_id,
                       "worker_name": worker_name, "config": t.config, "config_summary": summary,
                       "active": t.active})
            })
            .collect();
        out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        json!({ "registered_triggers": out })
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
