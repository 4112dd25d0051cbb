//! Registrations from a connection, with the session rules of `PROTOCOL.md` §7.7 and §7.8:
//! `registerfunction`, `unregisterfunction`, `registertrigger` and `registertriggertype`.
//!
//! Order for each: the session's permission (allow_function_registration, allowed trigger
//! types, allow_trigger_type_registration), then the listener's registration hook if it has one
//! (the connection is held while it runs; its answer may rewrite the request; throwing, no
//! answer, a non-object or its deadline deny), then the session prefix, then the table. On a
//! public listener a session can never take over an id another connection or the engine owns,
//! and a trigger may only target the session's own functions or functions it may call. Every
//! denial is logged with the session, the id and the rule, and answered with an `error` frame.

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::invoke::{Caller, Outcome};
use super::{CallRequest, FunctionEntry, Owner, RegistryActor};
use crate::protocol::{RegisterFunction, RegisterTrigger, RegisterTriggerType};
use crate::rbac::{self, Decision};

/// What a hook answered: replacement fields, or `None` when it denied.
type Overrides = Option<Map<String, Value>>;
type AfterHook = Box<dyn FnOnce(&mut RegistryActor, &mut Context<RegistryActor>, Overrides)>;

fn text(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_string)
}

impl RegistryActor {
    /// Runs `hook` (if any) with `input`, holding the connection; then `next` with its answer.
    fn with_hook(
        &mut self,
        worker_id: Uuid,
        hook: Option<String>,
        input: Value,
        what: String,
        next: AfterHook,
        ctx: &mut Context<Self>,
    ) {
        let Some(hook) = hook else {
            return next(self, ctx, Some(Map::new()));
        };
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        conn.held = true;
        let deadline = Duration::from_millis(conn.listener.auth_timeout_ms);
        let req = CallRequest::new(hook.clone(), input).timeout(deadline);
        let then = move |act: &mut Self, ctx: &mut Context<Self>, outcome: Outcome| {
            let overrides = match outcome.map(|o| o.map(|p| p.to_value())) {
                Ok(Some(Value::Object(map))) => Some(map),
                Ok(other) => {
                    let got = other.map_or("nothing".to_string(), |v| v.to_string());
                    act.refuse(
                        worker_id,
                        &what,
                        &format!("hook {hook} answered {got}, not an object"),
                    );
                    None
                }
                Err(e) => {
                    act.refuse(
                        worker_id,
                        &what,
                        &format!("hook {hook} failed: {}: {}", e.code, e.message),
                    );
                    None
                }
            };
            next(act, ctx, overrides);
            if let Some(conn) = act.conns.get_mut(&worker_id) {
                conn.held = false;
            }
            act.drain_backlog(worker_id, ctx);
        };
        self.call(req, Caller::Then(Box::new(then)), ctx);
    }

    pub(crate) fn handle_register_function(
        &mut self,
        worker_id: Uuid,
        f: RegisterFunction,
        ctx: &mut Context<Self>,
    ) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let what = format!("registration of function '{}'", f.id);
        if let Err(reason) = rbac::check_id(&f.id) {
            return self.refuse_with(worker_id, "invalid_id", &what, &reason);
        }
        if !conn.policy.allow_function_registration {
            return self.refuse(
                worker_id,
                &what,
                "allow_function_registration is false for this session",
            );
        }
        if f.invocation.is_some() {
            return self.refuse(worker_id, &what, "HTTP-invoked functions need an HTTP function provider, which this engine does not have");
        }
        let hook = conn
            .listener
            .rbac
            .as_ref()
            .and_then(|r| r.on_function_registration_function_id.clone());
        let input = json!({"function_id": f.id, "description": f.description, "metadata": f.metadata,
                           "context": conn.policy.context});
        let next = move |act: &mut Self, _: &mut Context<Self>, overrides: Overrides| {
            let Some(o) = overrides else { return };
            let mut f = f;
            f.id = text(&o, "function_id").unwrap_or(f.id);
            if let Some(d) = o.get("description") {
                f.description = d.as_str().map(str::to_string);
            }
            if let Some(m) = o.get("metadata") {
                f.metadata = Some(m.clone()).filter(|m| !m.is_null());
            }
            act.add_function(worker_id, f);
        };
        self.with_hook(worker_id, hook, input, what, Box::new(next), ctx);
    }

    /// Stores a function under the session's prefix, unless someone else owns the id. A
    /// public session without a prefix may not register an id its listener exposes, nor one a
    /// trusted worker ever registered (its owner may be reconnecting right now).
    fn add_function(&mut self, worker_id: Uuid, f: RegisterFunction) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let public = conn.public();
        let id = conn.policy.prefixed(&f.id);
        let what = format!("registration of function '{id}'");
        match self.functions.get(&id).map(|e| e.owner) {
            Some(Owner::Builtin(_) | Owner::Engine) => {
                return self.refuse(worker_id, &what, "the engine provides this function");
            }
            Some(Owner::Session(other)) if other != worker_id && public => {
                return self.refuse(worker_id, &what, "another worker owns this id");
            }
            Some(Owner::Session(other)) if other != worker_id => {
                log::warn!("function {id}: registered again by worker {worker_id}; calls now go to it instead of {other}");
            }
            _ => {}
        }
        if let Some(conn) = self.conns.get(&worker_id).filter(|c| c.public()) {
            let max = conn.listener.max_functions_per_session;
            if conn.functions.len() >= max && !conn.functions.contains(&id) {
                let reason = format!(
                    "this session already has {} functions (max_functions_per_session)",
                    conn.functions.len()
                );
                return self.refuse(worker_id, &what, &reason);
            }
            if conn.policy.function_registration_prefix.is_none() {
                let exposed = conn.listener.rbac.as_ref().is_some_and(|r| {
                    r.expose_functions.iter().any(|e| e.matches(&id, None))
                });
                if exposed {
                    return self.refuse(worker_id, &what, "the listener exposes this id to every session");
                }
                if self.trusted_ids.contains(&id) {
                    return self.refuse(worker_id, &what, "a trusted worker serves this id");
                }
            }
        }
        let entry = FunctionEntry {
            owner: Owner::Session(worker_id),
            trusted: !public,
            description: f.description,
            request_format: f.request_format,
            response_format: f.response_format,
            metadata: f.metadata,
        };
        if !public {
            self.trusted_ids.insert(id.clone());
        }
        let is_new = self.functions.insert(id.clone(), entry).is_none();
        if let Some(conn) = self.conns.get_mut(&worker_id) {
            conn.functions.insert(id.clone());
        }
        log::debug!("worker {worker_id}: registered function {id}");
        self.functions_dirty |= is_new;
    }

    pub(crate) fn handle_unregister_function(&mut self, worker_id: Uuid, id: &str) {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        let id = conn.policy.prefixed(id);
        conn.functions.remove(&id);
        let owned =
            matches!(self.functions.get(&id), Some(f) if f.owner == Owner::Session(worker_id));
        if owned {
            self.functions.remove(&id);
            log::debug!("worker {worker_id}: unregistered function {id}");
            self.functions_dirty = true;
        } else {
            log::warn!("worker {worker_id}: unregisterfunction {id} ignored: not its function");
        }
    }

    pub(crate) fn handle_register_trigger(
        &mut self,
        worker_id: Uuid,
        t: RegisterTrigger,
        ctx: &mut Context<Self>,
    ) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let what = format!("trigger '{}' of type '{}'", t.id, t.trigger_type);
        if let Some(reason) = self.type_refusal(conn, &t.trigger_type) {
            return self.refuse(worker_id, &what, reason);
        }
        let hook = conn
            .listener
            .rbac
            .as_ref()
            .and_then(|r| r.on_trigger_registration_function_id.clone());
        let input = json!({"trigger_id": t.id, "trigger_type": t.trigger_type, "function_id": t.function_id,
                           "config": t.config, "metadata": t.metadata, "context": conn.policy.context});
        let next = move |act: &mut Self, _: &mut Context<Self>, overrides: Overrides| {
            let Some(o) = overrides else { return };
            let mut t = t;
            t.id = text(&o, "trigger_id").unwrap_or(t.id);
            t.trigger_type = text(&o, "trigger_type").unwrap_or(t.trigger_type);
            t.function_id = text(&o, "function_id").unwrap_or(t.function_id);
            if let Some(c) = o.get("config") {
                t.config = c.clone();
            }
            act.check_trigger(worker_id, t);
        };
        self.with_hook(worker_id, hook, input, what, Box::new(next), ctx);
    }

    /// The session rules that apply after the hook: see [`RegistryActor::check_binding`];
    /// then the id, which a public session can never take from another registration, and
    /// (on a public listener) the session's trigger count.
    fn check_trigger(&mut self, worker_id: Uuid, mut t: RegisterTrigger) {
        let what = format!("trigger '{}' of type '{}'", t.id, t.trigger_type);
        if let Err(reason) =
            self.check_binding(worker_id, &t.trigger_type, &mut t.function_id, &mut t.config)
        {
            return self.refuse(worker_id, &what, &reason);
        }
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let public = conn.public();
        let max = conn.listener.max_triggers_per_session;
        match self.triggers.get(&t.id).map(|e| e.owner) {
            Some(Some(owner)) if owner == worker_id => {}
            Some(owner) if public || owner.is_some_and(|o| self.is_public(o)) => {
                return self.refuse(worker_id, &what, "the id belongs to another registration");
            }
            Some(owner) => {
                // Trusted workers replace each other's bindings, as with functions: a worker
                // that reconnected without reattaching takes its binding back from its own
                // half-open old connection.
                log::warn!("trigger {}: registered again by worker {worker_id}; it replaces the binding of {owner:?}", t.id);
            }
            None if public && conn.triggers.len() >= max => {
                let reason = format!(
                    "this session already has {} triggers (max_triggers_per_session)",
                    conn.triggers.len()
                );
                return self.refuse(worker_id, &what, &reason);
            }
            None => {}
        }
        self.remove_trigger(&t.id);
        self.insert_trigger(
            t.id.clone(),
            t.trigger_type,
            t.function_id,
            t.config,
            t.metadata,
            Some(worker_id),
        );
        if let Some(c) = self.conns.get_mut(&worker_id) {
            c.triggers.insert(t.id);
        }
    }

    /// Why this connection may not bind triggers of this type, if it may not (trusted
    /// connections may bind any).
    fn type_refusal(&self, conn: &super::Conn, trigger_type: &str) -> Option<&'static str> {
        let engine_wide = self
            .trigger_types
            .get(trigger_type)
            .is_some_and(|t| t.engine_wide);
        if !conn.public() || conn.policy.allows_trigger_type(trigger_type, engine_wide) {
            None
        } else if engine_wide {
            Some("the type is engine-wide and not listed in allowed_trigger_types")
        } else {
            Some("the type is not in allowed_trigger_types")
        }
    }

    fn is_public(&self, worker_id: Uuid) -> bool {
        self.conns.get(&worker_id).is_some_and(|c| c.public())
    }

    /// The session rules for a trigger binding, however it is made (`registertrigger` or
    /// `engine::register_trigger`): the type must be allowed (an engine-wide type such as
    /// `engine::functions-available` or `stream:join` only when `allowed_trigger_types` lists
    /// it); the target and every function the config names (`condition_function_id`, any
    /// `*_function_id` / `*_function_ids` key) are resolved under the session prefix, and on a
    /// public listener must be the session's own or functions it may call — the engine calls
    /// them on the session's behalf. Rewrites the ids in place.
    pub(crate) fn check_binding(
        &self,
        worker_id: Uuid,
        trigger_type: &str,
        function_id: &mut String,
        config: &mut Value,
    ) -> Result<(), String> {
        let Some(conn) = self.conns.get(&worker_id) else {
            return Err("the connection is gone".into());
        };
        if let Some(reason) = self.type_refusal(conn, trigger_type) {
            return Err(reason.into());
        }
        *function_id = conn.policy.prefixed(function_id);
        self.check_reference(worker_id, function_id, "its target")?;
        if let Value::Object(map) = config {
            for (key, value) in map.iter_mut() {
                if key.ends_with("function_id") {
                    if let Value::String(id) = value {
                        *id = conn.policy.prefixed(id);
                        self.check_reference(worker_id, id, &format!("its {key}"))?;
                    }
                } else if key.ends_with("function_ids") {
                    if let Value::Array(ids) = value {
                        for id in ids.iter_mut() {
                            if let Value::String(id) = id {
                                *id = conn.policy.prefixed(id);
                                self.check_reference(worker_id, id, &format!("its {key}"))?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A function a public session names in a binding must be its own (under its prefix, or
    /// registered by it) or one it may call.
    fn check_reference(&self, worker_id: Uuid, function_id: &str, what: &str) -> Result<(), String> {
        let Some(conn) = self.conns.get(&worker_id) else {
            return Ok(());
        };
        if !conn.public() || conn.policy.function_registration_prefix.is_some() {
            return Ok(());
        }
        let own = matches!(self.functions.get(function_id), Some(f) if f.owner == Owner::Session(worker_id));
        if own || self.may_call(conn, function_id) {
            return Ok(());
        }
        Err(format!(
            "{what} {function_id} is neither this session's function nor one it may call"
        ))
    }

    /// Would RBAC let this connection call `function_id`?
    pub(crate) fn may_call(&self, conn: &super::Conn, function_id: &str) -> bool {
        let expose = conn
            .listener
            .rbac
            .as_ref()
            .map(|r| r.expose_functions.as_slice());
        matches!(
            rbac::decide_invoke(
                &conn.policy,
                expose,
                function_id,
                self.exposure_metadata(function_id)
            ),
            Decision::Allow(_)
        )
    }

    pub(crate) fn handle_register_trigger_type(
        &mut self,
        worker_id: Uuid,
        t: RegisterTriggerType,
        ctx: &mut Context<Self>,
    ) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let what = format!("trigger type '{}'", t.id);
        if !conn.policy.allow_trigger_type_registration {
            return self.refuse(
                worker_id,
                &what,
                "allow_trigger_type_registration is false for this session",
            );
        }
        let hook = conn
            .listener
            .rbac
            .as_ref()
            .and_then(|r| r.on_trigger_type_registration_function_id.clone());
        let input = json!({"trigger_type_id": t.id, "description": t.description, "context": conn.policy.context});
        let next = move |act: &mut Self, _: &mut Context<Self>, overrides: Overrides| {
            let Some(o) = overrides else { return };
            let id = text(&o, "trigger_type_id").unwrap_or(t.id);
            let description = text(&o, "description").unwrap_or(t.description);
            act.add_trigger_type(worker_id, id, description);
        };
        self.with_hook(worker_id, hook, input, what, Box::new(next), ctx);
    }

    /// The metadata that may satisfy `expose_functions` metadata filters: only what a trusted
    /// party registered (a public session could otherwise expose itself).
    pub(crate) fn exposure_metadata(&self, function_id: &str) -> Option<&Value> {
        self.functions
            .get(function_id)
            .filter(|f| f.trusted)
            .and_then(|f| f.metadata.as_ref())
    }
}
