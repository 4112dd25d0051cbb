//! Discovery: what `engine::functions::list/info`, `engine::workers::list`,
//! `engine::triggers::list` and `engine::registered-triggers::list` answer (`PROTOCOL.md`
//! §5.7), with upstream's shapes. A session only ever sees the functions it may call, and is
//! told `FORBIDDEN` about a hidden id before its existence is checked.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::engine_fns::{parse, ENGINE_WORKER};
use super::triggers::Provider;
use super::{Owner, Router};
use crate::error::Code;
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::rbac::{self, Decision};

type Outcome = Result<Option<Value>, ErrorBody>;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ListFunctionsInput {
    search: Option<String>,
    prefix: Option<String>,
    worker: Option<String>,
    workers: Option<Vec<String>>,
    include_internal: bool,
}

impl Router {
    /// The name a function's worker is known by (§5.7 `worker_name`).
    pub(super) fn worker_name(&self, function_id: &str, owner: Owner) -> String {
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

    pub(super) fn functions_list(&self, input: &ListFunctionsInput, from: Option<Uuid>) -> Value {
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
    pub(super) fn functions_info(
        &self,
        function_id: &str,
        data: &Payload,
        from: Option<Uuid>,
    ) -> Outcome {
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

    pub(super) fn workers_list(&self) -> Value {
        let mut workers: Vec<Value> = Vec::new();
        let mut in_process: Vec<&str> = vec![ENGINE_WORKER];
        // A module may hand its functions in over several registrations (`iii-observability`:
        // the telemetry actor and `engine::log::*`): one entry per name.
        for m in &self.modules {
            if !in_process.contains(m) {
                in_process.push(m);
            }
        }
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

    pub(super) fn trigger_types_list(&self) -> Value {
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

    pub(super) fn bindings_list(&self) -> Value {
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
}
