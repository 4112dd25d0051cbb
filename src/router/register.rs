//! Registrations from a connection, with the session rules of `PROTOCOL.md` §7.7 and §7.8:
//! `registerfunction`, `unregisterfunction`, `registertrigger` and `registertriggertype`.
//!
//! Order for each: the session's permission (allow_function_registration, allowed trigger
//! types, allow_trigger_type_registration), then the listener's registration hook if it has one
//! (the connection is held while it runs — a [`Waiter::Hook`] — and its answer may rewrite the
//! request; throwing, no answer, a non-object or its deadline deny), then the session prefix,
//! then the table. On a public listener a session can never take over an id another
//! connection or the engine owns, and a trigger may only target — or name in its config — the
//! session's own functions or functions it may call. Every denial is answered with an `error`
//! frame (and logged, within limits).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::calls::{CallRequest, HeldRegistration, Outcome, Waiter};
use super::{custom_stream_op, Conn, Effects, FunctionEntry, Owner, Router};
use crate::error::Code;
use crate::modules::http_functions;
use crate::protocol::{RegisterFunction, RegisterTrigger, RegisterTriggerType};
use crate::rbac::{self, Decision};

fn text(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_string)
}

impl Router {
    /// Runs the listener's hook (if any) for a registration, holding the connection; without
    /// a hook the registration goes on at once.
    fn with_hook(
        &mut self,
        worker_id: Uuid,
        hook: Option<String>,
        input: Value,
        what: String,
        request: HeldRegistration,
        out: &mut Effects,
    ) {
        let Some(hook) = hook else {
            return self.continue_registration(worker_id, request, Map::new(), out);
        };
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        conn.held = true;
        let deadline = Duration::from_millis(conn.listener.auth_timeout_ms);
        let req = CallRequest::new(hook.clone(), input).timeout(deadline);
        let waiter = Waiter::Hook {
            conn: worker_id,
            hook,
            what,
            request,
        };
        self.call(req, waiter, out);
    }

    /// A registration hook answered: an object lets the registration go on (with its fields
    /// replacing the request's); anything else denies it. Then the connection's frames go on.
    pub(crate) fn hook_answered(
        &mut self,
        worker_id: Uuid,
        hook: &str,
        what: &str,
        request: HeldRegistration,
        outcome: Outcome,
        out: &mut Effects,
    ) {
        match outcome.map(|o| o.map(|p| p.to_value())) {
            Ok(Some(Value::Object(overrides))) => {
                self.continue_registration(worker_id, request, overrides, out)
            }
            Ok(other) => {
                let got = other.map_or("nothing".to_string(), |v| v.to_string());
                let reason = format!("hook {hook} answered {got}, not an object");
                self.refuse(worker_id, what, &reason, out);
            }
            Err(e) => {
                let reason = format!("hook {hook} failed: {}: {}", e.code, e.message);
                self.refuse(worker_id, what, &reason, out);
            }
        }
        if let Some(conn) = self.conns.get_mut(&worker_id) {
            conn.held = false;
        }
        self.drain_backlog(worker_id, out);
    }

    /// The rest of a registration, after its hook (if any), with the hook's replacements.
    fn continue_registration(
        &mut self,
        worker_id: Uuid,
        request: HeldRegistration,
        o: Map<String, Value>,
        out: &mut Effects,
    ) {
        match request {
            HeldRegistration::Function(mut f) => {
                f.id = text(&o, "function_id").unwrap_or(f.id);
                if let Some(d) = o.get("description") {
                    f.description = d.as_str().map(str::to_string);
                }
                if let Some(m) = o.get("metadata") {
                    f.metadata = Some(m.clone()).filter(|m| !m.is_null());
                }
                self.add_function(worker_id, f, out);
            }
            HeldRegistration::Trigger(mut t) => {
                t.id = text(&o, "trigger_id").unwrap_or(t.id);
                t.trigger_type = text(&o, "trigger_type").unwrap_or(t.trigger_type);
                t.function_id = text(&o, "function_id").unwrap_or(t.function_id);
                if let Some(c) = o.get("config") {
                    t.config = c.clone();
                }
                self.check_trigger(worker_id, t, out);
            }
            HeldRegistration::TriggerType(t) => {
                let id = text(&o, "trigger_type_id").unwrap_or(t.id);
                let description = text(&o, "description").unwrap_or(t.description);
                self.add_trigger_type(worker_id, id, description, out);
            }
        }
    }

    pub(crate) fn register_function(
        &mut self,
        worker_id: Uuid,
        f: RegisterFunction,
        out: &mut Effects,
    ) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let what = format!("registration of function '{}'", f.id);
        if let Err(reason) = rbac::check_id(&f.id) {
            return self.refuse_with(worker_id, Code::InvalidId, &what, &reason, out);
        }
        if !conn.policy.allow_function_registration {
            let reason = "allow_function_registration is false for this session";
            return self.refuse(worker_id, &what, reason, out);
        }
        if let Some(invocation) = &f.invocation {
            let Some(security) = &self.http_security else {
                let reason = "HTTP-invoked functions need the iii-http-functions module, which this engine's config does not start";
                return self.refuse(worker_id, &what, reason, out);
            };
            if let Err(reason) = http_functions::prepare(invocation, security) {
                return self.refuse(worker_id, &what, &reason, out);
            }
        }
        let hook = conn
            .listener
            .rbac
            .as_ref()
            .and_then(|r| r.on_function_registration_function_id.clone());
        let input = json!({"function_id": f.id, "description": f.description, "metadata": f.metadata,
                           "context": conn.policy.context});
        let request = HeldRegistration::Function(f);
        self.with_hook(worker_id, hook, input, what, request, out);
    }

    /// Stores a function under the session's prefix, unless someone else owns the id. A
    /// public session without a prefix may not register an id its listener exposes, nor one a
    /// trusted worker ever registered (its owner may be reconnecting right now).
    fn add_function(&mut self, worker_id: Uuid, f: RegisterFunction, out: &mut Effects) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let public = conn.public();
        let id = conn.policy.prefixed(&f.id);
        let what = format!("registration of function '{id}'");
        match self.functions.get(&id).map(|e| e.owner) {
            Some(Owner::Module(_) | Owner::Engine) => {
                return self.refuse(worker_id, &what, "the engine provides this function", out);
            }
            Some(Owner::Session(other)) if other != worker_id && public => {
                return self.refuse(worker_id, &what, "another worker owns this id", out);
            }
            Some(Owner::Session(other)) if other != worker_id => {
                log::warn!("function {id}: registered again by worker {worker_id}; calls now go to it instead of {other}");
            }
            _ => {}
        }
        if public {
            if let Some(reason) = self.public_function_refusal(conn, &id) {
                return self.refuse(worker_id, &what, &reason, out);
            }
        }
        let entry = FunctionEntry {
            owner: Owner::Session(worker_id),
            trusted: !public,
            description: f.description,
            request_format: f.request_format,
            response_format: f.response_format,
            metadata: f.metadata,
            invocation: f
                .invocation
                .as_ref()
                .zip(self.http_security.as_ref())
                .and_then(|(i, s)| http_functions::prepare(i, s).ok())
                .map(Arc::new),
        };
        if !public {
            self.trusted_ids.insert(id.clone());
        }
        if custom_stream_op(&id).is_some() {
            self.custom_streams.insert(id.clone());
        }
        let is_new = self.functions.insert(id.clone(), entry).is_none();
        if let Some(conn) = self.conns.get_mut(&worker_id) {
            conn.functions.insert(id.clone());
        }
        log::debug!("worker {worker_id}: registered function {id}");
        self.functions_dirty |= is_new;
    }

    /// Why a public session may not register `id` (already prefixed), if it may not.
    fn public_function_refusal(&self, conn: &Conn, id: &str) -> Option<String> {
        let max = conn.listener.max_functions_per_session;
        if conn.functions.len() >= max && !conn.functions.contains(id) {
            return Some(format!(
                "this session already has {} functions (max_functions_per_session)",
                conn.functions.len()
            ));
        }
        if custom_stream_op(id).is_some() {
            return Some("custom stream functions (stream::<op>(<stream_name>)) are served by trusted workers only".into());
        }
        if conn.policy.function_registration_prefix.is_some() {
            return None;
        }
        let exposed = conn
            .listener
            .rbac
            .as_ref()
            .is_some_and(|r| r.expose_functions.iter().any(|e| e.matches(id, None)));
        if exposed {
            return Some("the listener exposes this id to every session".into());
        }
        if self.trusted_ids.contains(id) {
            return Some("a trusted worker serves this id".into());
        }
        None
    }

    pub(crate) fn unregister_function(&mut self, worker_id: Uuid, id: &str) {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        let id = conn.policy.prefixed(id);
        conn.functions.remove(&id);
        let owned =
            matches!(self.functions.get(&id), Some(f) if f.owner == Owner::Session(worker_id));
        if owned {
            self.functions.remove(&id);
            self.custom_streams.remove(&id);
            log::debug!("worker {worker_id}: unregistered function {id}");
            self.functions_dirty = true;
        } else {
            log::warn!("worker {worker_id}: unregisterfunction {id} ignored: not its function");
        }
    }

    pub(crate) fn register_trigger(
        &mut self,
        worker_id: Uuid,
        t: RegisterTrigger,
        out: &mut Effects,
    ) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let what = format!("trigger '{}' of type '{}'", t.id, t.trigger_type);
        if let Some(reason) = self.type_refusal(conn, &t.trigger_type) {
            return self.refuse(worker_id, &what, reason, out);
        }
        let hook = conn
            .listener
            .rbac
            .as_ref()
            .and_then(|r| r.on_trigger_registration_function_id.clone());
        let input = json!({"trigger_id": t.id, "trigger_type": t.trigger_type, "function_id": t.function_id,
                           "config": t.config, "metadata": t.metadata, "context": conn.policy.context});
        let request = HeldRegistration::Trigger(t);
        self.with_hook(worker_id, hook, input, what, request, out);
    }

    /// The session rules that apply after the hook: see [`Router::check_binding`]; then the
    /// id, which a public session can never take from another registration, and (on a public
    /// listener) the session's trigger count.
    fn check_trigger(&mut self, worker_id: Uuid, mut t: RegisterTrigger, out: &mut Effects) {
        let what = format!("trigger '{}' of type '{}'", t.id, t.trigger_type);
        if let Err(reason) = self.check_binding(
            worker_id,
            &t.trigger_type,
            &mut t.function_id,
            &mut t.config,
        ) {
            return self.refuse(worker_id, &what, &reason, out);
        }
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let public = conn.public();
        let max = conn.listener.max_triggers_per_session;
        match self.triggers.get(&t.id).map(|e| e.owner) {
            Some(Some(owner)) if owner == worker_id => {}
            Some(owner) if public || owner.is_some_and(|o| self.is_public(o)) => {
                let reason = "the id belongs to another registration";
                return self.refuse(worker_id, &what, reason, out);
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
                return self.refuse(worker_id, &what, &reason, out);
            }
            None => {}
        }
        self.remove_trigger(&t.id, out);
        self.insert_trigger(
            t.id.clone(),
            t.trigger_type,
            t.function_id,
            t.config,
            t.metadata,
            Some(worker_id),
            out,
        );
        if let Some(c) = self.conns.get_mut(&worker_id) {
            c.triggers.insert(t.id);
        }
    }

    fn is_public(&self, worker_id: Uuid) -> bool {
        self.conns.get(&worker_id).is_some_and(|c| c.public())
    }

    /// Why this connection may not bind triggers of this type, if it may not (trusted
    /// connections may bind any).
    pub(crate) fn type_refusal(&self, conn: &Conn, trigger_type: &str) -> Option<&'static str> {
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
        self.check_reference(conn, worker_id, function_id, "its target")?;
        let Value::Object(map) = config else {
            return Ok(());
        };
        for (key, value) in map.iter_mut() {
            let ids: Vec<&mut String> = match value {
                Value::String(id) if key.ends_with("function_id") => vec![id],
                Value::Array(list) if key.ends_with("function_ids") => list
                    .iter_mut()
                    .filter_map(|v| match v {
                        Value::String(id) => Some(id),
                        _ => None,
                    })
                    .collect(),
                _ => continue,
            };
            for id in ids {
                *id = conn.policy.prefixed(id);
                self.check_reference(conn, worker_id, id, &format!("its {key}"))?;
            }
        }
        Ok(())
    }

    /// A function a public session names in a binding must be its own (under its prefix, or
    /// registered by it) or one it may call.
    fn check_reference(
        &self,
        conn: &Conn,
        worker_id: Uuid,
        function_id: &str,
        what: &str,
    ) -> Result<(), String> {
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
    pub(crate) fn may_call(&self, conn: &Conn, function_id: &str) -> bool {
        let expose = conn
            .listener
            .rbac
            .as_ref()
            .map(|r| r.expose_functions.as_slice());
        let meta = self.exposure_metadata(function_id);
        matches!(
            rbac::decide_invoke(&conn.policy, expose, function_id, meta),
            Decision::Allow(_)
        )
    }

    pub(crate) fn register_trigger_type(
        &mut self,
        worker_id: Uuid,
        t: RegisterTriggerType,
        out: &mut Effects,
    ) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let what = format!("trigger type '{}'", t.id);
        if !conn.policy.allow_trigger_type_registration {
            let reason = "allow_trigger_type_registration is false for this session";
            return self.refuse(worker_id, &what, reason, out);
        }
        let hook = conn
            .listener
            .rbac
            .as_ref()
            .and_then(|r| r.on_trigger_type_registration_function_id.clone());
        let input = json!({"trigger_type_id": t.id, "description": t.description, "context": conn.policy.context});
        let request = HeldRegistration::TriggerType(t);
        self.with_hook(worker_id, hook, input, what, request, out);
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
