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
//!
//! With the `redis` adapter a publish is `PUBLISH iii:pubsub:<topic> <data>` and is answered
//! once Redis took it (an error if Redis is down — upstream answers success and drops it);
//! every engine sharing the Redis listens to `iii:pubsub:*` and delivers to its own
//! subscriptions, any number per topic (upstream keeps one per engine). Delivery is Redis
//! pub/sub's: at most once, and nothing reaches an engine while its link to Redis is down.

use std::collections::HashMap;

use actix::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinFunction, BuiltinTriggerType, RegisterBuiltins, TriggerBinding,
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

/// A message of a topic that came through Redis.
#[derive(Message)]
#[rtype(result = "()")]
struct FromRedis {
    topic: String,
    data: Payload,
}

/// The Redis channel prefix of topics.
const CHANNEL_PREFIX: &str = "iii:pubsub:";

/// The pub/sub actor. See the module docs.
pub struct PubSubActor {
    registry: Registry,
    /// The `redis` adapter's command connection.
    redis: Option<redis::aio::ConnectionManager>,
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

/// Starts the actor on `arbiter` and announces `publish` and `subscribe`; with `redis` (the
/// adapter's client and connection) messages go through Redis.
pub fn start(
    registry: Registry,
    arbiter: &ArbiterHandle,
    redis: Option<(redis::Client, redis::aio::ConnectionManager)>,
) -> Addr<PubSubActor> {
    let reg = registry.clone();
    let actor = PubSubActor::start_in_arbiter(arbiter, move |ctx| {
        let conn = redis.map(|(client, conn)| {
            let addr = ctx.address();
            crate::redis::listen(
                client,
                format!("{CHANNEL_PREFIX}*"),
                move |channel, payload| {
                    let Some(topic) = channel.strip_prefix(CHANNEL_PREFIX) else {
                        return;
                    };
                    match String::from_utf8(payload).map(Payload::from_raw_text) {
                        Ok(Ok(data)) => addr.do_send(FromRedis {
                            topic: topic.to_string(),
                            data,
                        }),
                        _ => log::warn!("iii-pubsub: a message on {channel} is not JSON; dropped"),
                    }
                },
            );
            conn
        });
        PubSubActor {
            registry: reg,
            redis: conn,
            subscriptions: HashMap::new(),
            topics: HashMap::new(),
        }
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
    /// Checks a publish; `Ok` holds the topic and the message.
    fn parse(data: Payload) -> Result<(String, Payload), ErrorBody> {
        let value = data.to_value();
        check_string_keys("publish", &value, &["topic"])?;
        let input: PublishInput =
            serde_json::from_value(value).map_err(|e| bad_input("publish", e))?;
        if input.topic.is_empty() {
            return Err(ErrorBody::new("topic_not_set", "Topic is not set"));
        }
        Ok((input.topic, Payload::from_value(&input.data)))
    }

    /// Hands a message to this engine's subscriptions of `topic`.
    fn deliver(&self, topic: &str, message: Payload) {
        let Some(ids) = self.topics.get(topic) else {
            return;
        };
        for id in ids {
            if let Some(s) = self.subscriptions.get(id) {
                s.route.send(&self.registry, message.clone());
            }
        }
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
                self.registry.reject_binding(id, message);
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
        let engine_id = call.engine_id;
        let parsed = match call.function_id.as_str() {
            "publish" => Self::parse(call.data),
            other => Err(ErrorBody::new(
                "function_not_found",
                format!("Function {other} not found"),
            )),
        };
        let (topic, message) = match (parsed, &self.redis) {
            (Err(e), _) => {
                return self.registry.do_send(BuiltinDone {
                    engine_id,
                    outcome: Err(e),
                })
            }
            (Ok(p), None) => p,
            (Ok((topic, message)), Some(conn)) => {
                let mut conn = conn.clone();
                let registry = self.registry.clone();
                crate::modules::answer_later(registry, engine_id, async move {
                    let channel = format!("{CHANNEL_PREFIX}{topic}");
                    let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(message.as_bytes().as_ref())
                        .query_async(&mut conn)
                        .await;
                    sent.map(|_| None).map_err(|e| {
                        ErrorBody::new(
                            "publish_failed",
                            format!("Redis did not take the message: {e}"),
                        )
                    })
                });
                return;
            }
        };
        self.deliver(&topic, message);
        self.registry.do_send(BuiltinDone {
            engine_id,
            outcome: Ok(None),
        });
    }
}

impl Handler<FromRedis> for PubSubActor {
    type Result = ();
    fn handle(&mut self, msg: FromRedis, _ctx: &mut Self::Context) {
        self.deliver(&msg.topic, msg.data);
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
