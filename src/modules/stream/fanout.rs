//! The stream module's trigger side: `stream`, `stream:join` and `stream:leave` bindings, and
//! the fan-out of each change to the functions bound to it. Fan-out never waits for a
//! subscriber: each fire is an independent call, and the registry delivers them to each worker
//! in the order they were fired, so one item's events reach every subscriber in write order. A
//! binding with a `condition_function_id` has its own queue so its events stay in order while
//! its condition runs. With the bridge adapter, each `stream` binding also tells the bridge
//! which stream's changes the remote engine must report.

use serde_json::Value;

use super::functions::Change;
use super::StreamActor;
use crate::messages::{FireMany, FireTrigger};
use crate::modules::fire::Route;
use crate::payload::Payload;
use crate::router::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BindingKind {
    Change,
    Join,
    Leave,
}

/// A trigger binding of one of this module's types.
#[derive(Debug, Clone)]
pub(super) struct Binding {
    pub kind: BindingKind,
    pub function_id: String,
    pub stream: String,
    pub group: Option<String>,
    pub item: Option<String>,
    pub condition: Option<String>,
    pub metadata: Option<Value>,
}

impl Binding {
    fn matches(&self, c: &Change) -> bool {
        self.kind == BindingKind::Change
            && self.stream == c.stream
            && self.group.as_ref().is_none_or(|g| *g == c.group)
            && self.item.as_ref().is_none_or(|i| Some(i) == c.id.as_ref())
    }
}

impl StreamActor {
    /// Fires matching triggers and pushes the change to matching subscriptions. A binding
    /// with a condition queues the event on its own route (`fire::Conditioned`), so its events
    /// stay in order while the condition runs; the others' fires of one event are routed
    /// under one acquisition of the registry's lock.
    pub(super) fn announce(&mut self, change: &Change) {
        let payload = Payload::from_value(&change.payload(now_ms()));
        let mut fires: Vec<FireTrigger> = self
            .bindings
            .iter()
            .filter(|(_, b)| b.matches(change))
            .filter_map(|(id, _)| self.routes.get(id)?.fire_or_queue(payload.clone()))
            .collect();
        match fires.len() {
            0 => {}
            1 => self.registry.do_send(fires.pop().expect("one fire")),
            _ => self.registry.do_send(FireMany(fires)),
        }
        if !self.consumers.is_empty() {
            self.push_to_consumers(change, &payload);
        }
    }

    pub(super) fn bind(
        &mut self,
        id: String,
        trigger_type: &str,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
    ) {
        let kind = match trigger_type {
            "stream" => BindingKind::Change,
            "stream:join" => BindingKind::Join,
            _ => BindingKind::Leave,
        };
        let binding = match parse_binding(kind, function_id, &config, metadata) {
            Ok(b) => b,
            Err(message) => {
                self.registry.reject_binding(id, message);
                return;
            }
        };
        log::debug!("trigger {id}: {trigger_type} -> {}", binding.function_id);
        if kind == BindingKind::Change {
            let route = Route::new(
                &self.registry,
                &id,
                binding.function_id.clone(),
                binding.condition.clone(),
                binding.metadata.clone(),
            );
            self.routes.insert(id.clone(), route);
            if let Some(bridge) = &mut self.bridge {
                bridge.want(&binding.stream);
            }
        }
        if let Some(old) = self.bindings.insert(id, binding) {
            self.unwant(&old);
        }
    }

    pub(super) fn unbind(&mut self, id: &str) {
        if let Some(old) = self.bindings.remove(id) {
            self.unwant(&old);
        }
        self.routes.remove(id);
    }

    /// A `stream` binding is gone: the bridge may stop asking for its stream's changes.
    fn unwant(&mut self, old: &Binding) {
        if let (BindingKind::Change, Some(bridge)) = (old.kind, &mut self.bridge) {
            bridge.release(&old.stream);
        }
    }

    pub(super) fn fire_kind(&self, kind: BindingKind, payload: Value) {
        let payload = Payload::from_value(&payload);
        for b in self.bindings.values().filter(|b| b.kind == kind) {
            self.registry.do_send(FireTrigger {
                function_id: b.function_id.clone(),
                data: payload.clone(),
                metadata: b.metadata.clone(),
            });
        }
    }
}

/// Validates a binding's config: `stream` needs `stream_name`; join/leave take no filters.
fn parse_binding(
    kind: BindingKind,
    function_id: String,
    config: &Value,
    metadata: Option<Value>,
) -> Result<Binding, String> {
    let text = |key: &str| -> Result<Option<String>, String> {
        match config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "Failed to deserialize stream trigger: `{key}` must be a string, got {other}"
            )),
        }
    };
    let mut b = Binding {
        kind,
        function_id,
        stream: String::new(),
        group: None,
        item: None,
        condition: None,
        metadata,
    };
    if kind != BindingKind::Change {
        return Ok(b);
    }
    if !config.is_object() {
        return Err("Failed to deserialize stream trigger: the config must be an object".into());
    }
    b.stream = text("stream_name")?
        .ok_or("Failed to deserialize stream trigger: missing field `stream_name`")?;
    b.group = text("group_id")?;
    b.item = text("item_id")?;
    b.condition = text("condition_function_id")?;
    Ok(b)
}
