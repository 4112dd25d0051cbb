//! The pub/sub module (`iii-pubsub`, `MODULES.md` §4) with its `local` adapter: a
//! `PubSubActor` that serves `publish` and provides the `subscribe` trigger type.
//!
//! Who sends what: the registry sends [`BuiltinCall`] (`publish`) and [`TriggerBinding`]
//! (`subscribe` bindings). Each subscription gets every message published to its topic (exact
//! match), as the call's `data`, in publish order; `publish` returns (no result) once the
//! deliveries are handed to the registry. Nothing is stored: a message to a topic without
//! subscribers is gone, as upstream.
//!
//! Better than upstream: unsubscribing removes that one subscription (upstream removes every
//! subscription of the topic), `condition_function_id` is honoured, the trigger's `metadata` is
//! passed on, and a subscription without a topic is refused instead of silently doing nothing.

use std::collections::HashMap;

use actix::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinFunction, BuiltinTriggerType, RegisterBuiltins,
    TriggerBinding, TriggerRejected,
};
use crate::modules::fire::{config_text, Route};
use crate::modules::{bad_input, check_string_keys};
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::registry::Registry;

/// One subscription.
struct Subscription {
    topic: String,
    route: Route,
}

/// The pub/sub actor. See the module docs.
pub struct PubSubActor {
    registry: Registry,
    /// Trigger id → subscription.
    subscriptions: HashMap<String, Subscription>,
    /// Topic → trigger ids, in subscription order.
    topics: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct PublishInput {
    topic: String,
    data: Value,
}

/// Starts the actor on `arbiter` and announces `publish` and `subscribe`.
pub fn start(registry: Registry, arbiter: &ArbiterHandle) -> Addr<PubSubActor> {
    let reg = registry.clone();
    let actor = PubSubActor::start_in_arbiter(arbiter, move |_| PubSubActor {
        registry: reg,
        subscriptions: HashMap::new(),
        topics: HashMap::new(),
    });
    registry.do_send(RegisterBuiltins {
        owner: "iii-pubsub",
        functions: vec![BuiltinFunction {
            id: "publish".into(),
            description: "Publish a message to a topic: {topic, data}".into(),
        }],
        calls: actor.clone().recipient(),
        trigger_types: vec![BuiltinTriggerType {
            id: "subscribe".into(),
            description: "Subscribe to a topic".into(),
            engine_wide: false,
        }],
        bindings: actor.clone().recipient(),
    });
    actor
}

impl PubSubActor {
    fn publish(&self, data: Payload) -> Result<(), ErrorBody> {
        let value = data.to_value();
        check_string_keys("publish", &value, &["topic"])?;
        let input: PublishInput =
            serde_json::from_value(value).map_err(|e| bad_input("publish", e))?;
        if input.topic.is_empty() {
            return Err(ErrorBody::new("topic_not_set", "Topic is not set"));
        }
        let Some(ids) = self.topics.get(&input.topic) else {
            return Ok(());
        };
        let message = Payload::from_value(&input.data);
        for id in ids {
            if let Some(s) = self.subscriptions.get(id) {
                s.route.send(&self.registry, message.clone());
            }
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        id: String,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
    ) {
        let topic = config_text(&config, "topic", "subscribe").and_then(|t| {
            t.ok_or_else(|| "Failed to parse subscribe trigger config: `topic` is required".into())
        });
        let condition = config_text(&config, "condition_function_id", "subscribe");
        let (topic, condition) = match (topic, condition) {
            (Ok(t), Ok(c)) => (t, c),
            (Err(message), _) | (_, Err(message)) => {
                log::warn!("trigger {id}: {message}");
                self.registry.do_send(TriggerRejected {
                    trigger_id: id,
                    error: ErrorBody::new("trigger_registration_failed", message),
                });
                return;
            }
        };
        self.unsubscribe(&id);
        let route = Route::new(&self.registry, &id, function_id, condition, metadata);
        self.topics
            .entry(topic.clone())
            .or_default()
            .push(id.clone());
        self.subscriptions.insert(id, Subscription { topic, route });
    }

    fn unsubscribe(&mut self, id: &str) {
        let Some(s) = self.subscriptions.remove(id) else {
            return;
        };
        if let Some(ids) = self.topics.get_mut(&s.topic) {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.topics.remove(&s.topic);
            }
        }
    }
}

impl Actor for PubSubActor {
    type Context = Context<Self>;
}

impl Handler<BuiltinCall> for PubSubActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, _ctx: &mut Self::Context) {
        let outcome = match call.function_id.as_str() {
            "publish" => self.publish(call.data).map(|()| None),
            other => Err(ErrorBody::new(
                "function_not_found",
                format!("Function {other} not found"),
            )),
        };
        self.registry.do_send(BuiltinDone {
            engine_id: call.engine_id,
            outcome,
        });
    }
}

impl Handler<TriggerBinding> for PubSubActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerBinding, _ctx: &mut Self::Context) {
        match msg {
            TriggerBinding::Bind {
                id,
                function_id,
                config,
                metadata,
                ..
            } => self.subscribe(id, function_id, config, metadata),
            TriggerBinding::Unbind { id } => self.unsubscribe(&id),
        }
    }
}
