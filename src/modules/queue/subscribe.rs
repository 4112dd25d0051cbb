//! The `durable:subscriber` trigger (`MODULES.md` §2.5): `{topic, condition_function_id?,
//! queue_config?}` with upstream's camelCase `queue_config` keys (`type`, `maxRetries`,
//! `concurrency`, `backoffDelayMs`, `visibilityTimeout` in seconds, `backoffType`
//! `exponential`|`fixed`, and ours: `messageGroupField`, `backoffMaxMs`). `delaySeconds` and
//! `maxPriority` are accepted and not used.
//!
//! Binding remembers the subscription in the store (a publish while the worker reconnects is
//! kept for it) and hands over the topic's unclaimed messages to the first subscriber. Binding
//! the same trigger id again replaces the binding; several triggers of one function on one
//! topic share its queue as competing consumers (their concurrencies add up).

use actix::prelude::*;
use serde_json::{json, Value};

use super::{topic_key, unclaimed_key, Binding, QueueActor, JOBS, SUBSCRIPTIONS};
use crate::config::QueueSettings;
use crate::modules::fire::config_text;

/// Upstream's defaults for topic queues, overridden by a binding's `queue_config`.
pub(super) fn settings(
    defaults: &QueueSettings,
    qc: Option<&Value>,
) -> Result<QueueSettings, String> {
    let mut s = defaults.clone();
    let Some(qc) = qc.filter(|v| !v.is_null()) else {
        return Ok(s);
    };
    let Some(obj) = qc.as_object() else {
        return Ok(s);
    };
    let uint = |key: &str| -> Result<Option<u64>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                format!("queue_config.{key} must be a non-negative integer, got {v}")
            }),
        }
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(t)) => Ok(Some(t.clone())),
            Some(v) => Err(format!("queue_config.{key} must be a string, got {v}")),
        }
    };
    if let Some(t) = text("type")? {
        if t != "standard" && t != "fifo" {
            return Err(format!(
                "queue_config.type is '{t}'. Must be 'standard' or 'fifo'"
            ));
        }
        s.kind = t;
    }
    if let Some(n) = uint("maxRetries")? {
        s.max_retries = n.min(u32::MAX as u64) as u32;
    }
    if let Some(n) = uint("concurrency")? {
        if n == 0 {
            return Err("queue_config.concurrency is 0; it must be at least 1".into());
        }
        s.concurrency = n.min(10_000) as u32;
    }
    if let Some(n) = uint("backoffDelayMs")? {
        s.backoff_ms = n;
    }
    if let Some(n) = uint("backoffMaxMs")? {
        s.backoff_max_ms = n;
    }
    if let Some(n) = uint("visibilityTimeout")? {
        s.visibility_timeout_ms = n.clamp(1, 86_400) * 1000;
    }
    if let Some(t) = text("backoffType")? {
        s.backoff_exponential = t != "fixed";
    }
    if let Some(f) = text("messageGroupField")? {
        s.message_group_field = Some(f);
    }
    Ok(s)
}

impl QueueActor {
    pub(super) fn bind(
        &mut self,
        ctx: &mut Context<Self>,
        id: String,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
    ) {
        let parsed = parse_binding(&self.config.topic_defaults, &config);
        let (topic, condition, settings) = match parsed {
            Ok(p) => p,
            Err(message) => {
                self.registry.reject_binding(id, message);
                return;
            }
        };
        let key = topic_key(&topic, &function_id);
        self.ensure_topic_queue(&key, &topic, &function_id);
        self.remember_subscription(ctx, &topic, &function_id);
        if let Some(q) = self.queues.get_mut(&key) {
            let rebuild = q.lanes.fifo() != settings.fifo()
                || q.settings.message_group_field != settings.message_group_field;
            if rebuild && q.lanes.in_flight() > 0 {
                log::warn!("trigger {id}: queue {} has deliveries in flight; its type stays {} until they end and the trigger is registered again",
                    q.label(), if q.lanes.fifo() { "fifo" } else { "standard" });
            } else if rebuild {
                let fifo = settings.fifo();
                let field = settings.message_group_field.clone();
                let mut jobs = q.lanes.take_all();
                let now = super::now_ms();
                q.lanes = super::lanes::Lanes::new(fifo);
                for job in jobs.iter_mut() {
                    job.group = fifo.then(|| group_of(field.as_deref(), &job.data));
                }
                for job in jobs {
                    q.lanes.add(job, now);
                }
            }
            let concurrency = settings.concurrency;
            q.settings = settings;
            q.condition = condition;
            q.metadata = metadata;
            self.bindings.insert(
                id,
                Binding {
                    key: key.clone(),
                    concurrency,
                },
            );
        }
        self.recount(&key);
        self.pump(ctx, &key);
        self.rearm(ctx);
    }

    pub(super) fn unbind(&mut self, id: &str) {
        if let Some(b) = self.bindings.remove(id) {
            self.recount(&b.key);
        }
    }

    /// Records `function_id` as a subscriber of `topic`; the first one takes over the topic's
    /// unclaimed messages.
    fn remember_subscription(&mut self, ctx: &mut Context<Self>, topic: &str, function_id: &str) {
        let subs = self.subscriptions.entry(topic.to_string()).or_default();
        if !subs.insert(function_id.to_string()) {
            return;
        }
        let record = json!({"topic": topic, "function_id": function_id});
        if let Err(e) = self.store.set(SUBSCRIPTIONS, topic, function_id, record) {
            log::error!("queue store: cannot record subscription: {e}");
        }
        let Some(mut parked) = self.queues.remove(&unclaimed_key(topic)) else {
            return self.note();
        };
        let from = unclaimed_key(topic);
        let to = topic_key(topic, function_id);
        let now = super::now_ms();
        for mut job in parked.lanes.take_all() {
            job.function_id = function_id.to_string();
            if let Err(e) = self.store.set(&to, JOBS, &job.id, job.to_value()) {
                log::error!("queue store: cannot hand over {}: {e}", job.id);
                continue;
            }
            let _ = self.store.delete(&from, JOBS, &job.id);
            if let Some(q) = self.queues.get_mut(&to) {
                q.lanes.add(job, now);
            }
        }
        self.note();
        self.pump(ctx, &to);
    }
}

/// A `durable:subscriber` binding's config: topic, condition function, queue settings; or why
/// it is refused.
pub(super) fn parse_binding(
    defaults: &QueueSettings,
    config: &Value,
) -> Result<(String, Option<String>, QueueSettings), String> {
    if !config.is_object() {
        return Err(format!(
            "Failed to parse durable:subscriber trigger config: expected an object, got {config}"
        ));
    }
    let topic = config_text(config, "topic", "durable:subscriber")?
        .ok_or_else(|| "durable:subscriber trigger config: `topic` is required".to_string())?;
    let condition = config_text(config, "condition_function_id", "durable:subscriber")?;
    let s = settings(defaults, config.get("queue_config"))?;
    Ok((topic, condition, s))
}

/// A job's FIFO group in a topic queue: the group field's value, or one group for all.
pub(super) fn group_of(field: Option<&str>, data: &Value) -> String {
    match field.and_then(|f| data.get(f)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}
