//! Trigger types and trigger bindings (`PROTOCOL.md` §5): who provides each type, which
//! bindings exist, and which are parked waiting for their type's provider.
//!
//! A binding of a known type is handed to its provider at once (a worker gets a
//! `registertrigger` frame, an engine-hosted module a [`TriggerBinding`]); a binding of an
//! unknown type is parked and handed over when a provider registers the type. A provider that
//! goes away parks the other connections' bindings of its types again. Bindings are owned by the
//! connection that registered them: nobody else can replace or remove them (trusted workers
//! excepted, see `register.rs`).

use serde_json::{json, Value};
use uuid::Uuid;

use super::{Conn, ConnState, Effect, Effects, Router};
use crate::error::Code;
use crate::messages::TriggerBinding;
use crate::payload::Payload;
use crate::protocol::{self, ErrorBody, RegisterTrigger, TriggerRegistrationResult};

/// Who provides a trigger type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Session(Uuid),
    Module(usize),
    Engine,
}

#[derive(Debug, Clone)]
pub(crate) struct TriggerTypeEntry {
    pub provider: Provider,
    pub description: String,
    /// Its events concern every connection or function, not one stream or topic a session
    /// chose: public sessions may bind it only when `allowed_trigger_types` lists it.
    pub engine_wide: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TriggerEntry {
    pub trigger_type: String,
    pub function_id: String,
    pub config: Value,
    pub metadata: Option<Value>,
    /// `None` for bindings a trusted caller made through `engine::register_trigger`.
    pub owner: Option<Uuid>,
    /// Handed to a provider (false = parked).
    pub active: bool,
}

impl Router {
    /// Makes `worker_id` the provider of a trigger type and hands it the type's bindings. A
    /// public session cannot take a type over from another provider.
    pub(crate) fn add_trigger_type(
        &mut self,
        worker_id: Uuid,
        id: String,
        description: String,
        out: &mut Effects,
    ) {
        let public = self.conns.get(&worker_id).is_some_and(|c| c.public());
        let what = format!("trigger type '{id}'");
        match self.trigger_types.get(&id).map(|e| e.provider) {
            Some(Provider::Session(p)) if p == worker_id => {}
            Some(Provider::Session(_)) if public => {
                return self.refuse(worker_id, &what, "another worker provides this type", out);
            }
            Some(Provider::Session(p)) => {
                log::warn!("trigger type {id}: worker {worker_id} replaces worker {p} as provider")
            }
            Some(_) => return self.refuse(worker_id, &what, "the engine provides this type", out),
            None => {}
        }
        self.trigger_types.insert(
            id.clone(),
            TriggerTypeEntry {
                provider: Provider::Session(worker_id),
                description,
                engine_wide: false,
            },
        );
        if let Some(c) = self.conns.get_mut(&worker_id) {
            c.trigger_types.insert(id.clone());
        }
        log::debug!("worker {worker_id}: provides trigger type {id}");
        self.activate_types(&[id], out);
    }

    /// Hands every binding of these (newly provided) types to their provider.
    pub(crate) fn activate_types(&mut self, types: &[String], out: &mut Effects) {
        let ids: Vec<String> = self
            .triggers
            .iter()
            .filter(|(_, t)| types.contains(&t.trigger_type))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.activate(&id, out);
        }
    }

    /// Stores a binding and hands it to its provider (or parks it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_trigger(
        &mut self,
        id: String,
        trigger_type: String,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
        owner: Option<Uuid>,
        out: &mut Effects,
    ) {
        let entry = TriggerEntry {
            trigger_type,
            function_id,
            config,
            metadata,
            owner,
            active: false,
        };
        self.triggers.insert(id.clone(), entry);
        self.activate(&id, out);
    }

    /// Hands a binding to the provider of its type; parks it if there is none.
    fn activate(&mut self, id: &str, out: &mut Effects) {
        let Some(t) = self.triggers.get(id) else {
            return;
        };
        let Some(provider) = self.trigger_types.get(&t.trigger_type).map(|e| e.provider) else {
            log::info!(
                "trigger {id}: type {} has no provider yet; parked until one registers it",
                t.trigger_type
            );
            return;
        };
        match provider {
            Provider::Engine => {}
            Provider::Module(module) => {
                let binding = TriggerBinding::Bind {
                    id: id.to_string(),
                    trigger_type: t.trigger_type.clone(),
                    function_id: t.function_id.clone(),
                    config: t.config.clone(),
                    metadata: t.metadata.clone(),
                };
                out.push(Effect::ModuleBinding { module, binding });
            }
            Provider::Session(p) => {
                let frame = protocol::Message::RegisterTrigger(RegisterTrigger {
                    id: id.to_string(),
                    trigger_type: t.trigger_type.clone(),
                    function_id: t.function_id.clone(),
                    config: t.config.clone(),
                    metadata: t.metadata.clone(),
                });
                self.send_frame(p, frame, out);
            }
        }
        if let Some(t) = self.triggers.get_mut(id) {
            t.active = true;
        }
    }

    /// Tells the provider a binding is gone (the entry itself stays).
    fn deactivate(&mut self, id: &str, out: &mut Effects) {
        let Some(t) = self.triggers.get_mut(id) else {
            return;
        };
        if !t.active {
            return;
        }
        t.active = false;
        let trigger_type = t.trigger_type.clone();
        match self.trigger_types.get(&trigger_type).map(|e| e.provider) {
            Some(Provider::Module(module)) => {
                let binding = TriggerBinding::Unbind { id: id.to_string() };
                out.push(Effect::ModuleBinding { module, binding });
            }
            Some(Provider::Session(p)) => {
                let frame = protocol::Message::UnregisterTrigger(protocol::UnregisterTrigger {
                    id: id.to_string(),
                    trigger_type: Some(trigger_type),
                });
                self.send_frame(p, frame, out);
            }
            Some(Provider::Engine) | None => {}
        }
    }

    pub(crate) fn unregister_trigger(&mut self, worker_id: Uuid, id: &str, out: &mut Effects) {
        let Some(t) = self.triggers.get(id) else {
            log::debug!("worker {worker_id}: unregistertrigger {id}: no such trigger");
            return;
        };
        let trusted = self
            .conns
            .get(&worker_id)
            .is_some_and(|c| c.listener.rbac.is_none());
        let allowed = t.owner == Some(worker_id) || (t.owner.is_none() && trusted);
        if !allowed {
            let what = format!("unregistering trigger '{id}'");
            return self.refuse(worker_id, &what, "not its trigger", out);
        }
        self.remove_trigger(id, out);
        if let Some(c) = self.conns.get_mut(&worker_id) {
            c.triggers.remove(id);
        }
    }

    /// Removes a binding and tells its provider. Returns whether it existed.
    pub(crate) fn remove_trigger(&mut self, id: &str, out: &mut Effects) -> bool {
        self.deactivate(id, out);
        self.triggers.remove(id).is_some()
    }

    /// A provider's answer to a `registertrigger`; only its failures matter.
    pub(crate) fn trigger_result(
        &mut self,
        worker_id: Uuid,
        r: TriggerRegistrationResult,
        out: &mut Effects,
    ) {
        let provider = self.trigger_types.get(&r.trigger_type).map(|e| e.provider);
        if provider != Some(Provider::Session(worker_id)) {
            log::warn!(
                "worker {worker_id}: ignored triggerregistrationresult for {}: it does not provide type {}",
                r.id,
                r.trigger_type
            );
            return;
        }
        if let Some(error) = r.error {
            self.reject_trigger(&r.id, error, out);
        }
    }

    /// A provider refused a binding: park it and tell the worker that registered it.
    pub(crate) fn reject_trigger(&mut self, id: &str, error: ErrorBody, out: &mut Effects) {
        let Some(t) = self.triggers.get_mut(id) else {
            return;
        };
        t.active = false;
        log::warn!(
            "trigger {id} ({}) refused by its provider: {}",
            t.trigger_type,
            error.message
        );
        let Some(owner) = t.owner else {
            return;
        };
        // The registering worker knows its function by the id it sent (prefix stripped).
        let Some(c) = self.conns.get(&owner) else {
            return;
        };
        let frame = protocol::Message::TriggerRegistrationResult(TriggerRegistrationResult {
            id: id.to_string(),
            trigger_type: t.trigger_type.clone(),
            function_id: c.policy.unprefixed(&t.function_id).to_string(),
            error: Some(ErrorBody::new(
                Code::TriggerRegistrationFailed,
                error.message,
            )),
        });
        self.send_frame(owner, frame, out);
    }

    /// Drops a departed connection's bindings and the trigger types it provided.
    pub(crate) fn cleanup_triggers(&mut self, worker_id: Uuid, conn: &Conn, out: &mut Effects) {
        for id in &conn.triggers {
            if self
                .triggers
                .get(id)
                .is_some_and(|t| t.owner == Some(worker_id))
            {
                self.remove_trigger(id, out);
            }
        }
        for ty in &conn.trigger_types {
            if self.trigger_types.get(ty).map(|e| e.provider) != Some(Provider::Session(worker_id))
            {
                continue;
            }
            self.trigger_types.remove(ty);
            for t in self.triggers.values_mut().filter(|t| &t.trigger_type == ty) {
                t.active = false;
            }
            log::info!("trigger type {ty}: provider {worker_id} left; its bindings are parked");
        }
    }

    /// Calls every function bound to an engine-provided trigger type.
    pub(crate) fn fire_engine_trigger(
        &mut self,
        trigger_type: &str,
        payload: Value,
        out: &mut Effects,
    ) {
        let targets: Vec<(String, Option<Value>)> = self
            .triggers
            .values()
            .filter(|t| t.active && t.trigger_type == trigger_type)
            .map(|t| (t.function_id.clone(), t.metadata.clone()))
            .collect();
        if targets.is_empty() {
            return;
        }
        let payload = Payload::from_value(&payload);
        for (function_id, metadata) in targets {
            self.fire(function_id, payload.clone(), metadata, out);
        }
    }

    /// `engine::workers-available` (§5.2).
    pub(crate) fn fire_workers_available(
        &mut self,
        event: &str,
        worker_id: Uuid,
        out: &mut Effects,
    ) {
        let live = self
            .conns
            .get(&worker_id)
            .map(|c| c.state == ConnState::Live);
        if live == Some(false) {
            return;
        }
        let payload = json!({"event": event, "worker_id": worker_id.to_string()});
        self.fire_engine_trigger("engine::workers-available", payload, out);
    }
}
