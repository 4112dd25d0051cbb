//! `iii-queue` on Redis (`adapter: {name: redis, config: {redis_url}}`): the queue module of
//! engines that share one Redis. Same functions, inputs, answers and error codes as the
//! builtin adapter, same `durable:subscriber` trigger; the jobs live in Redis (layout and
//! scripts in `scripts.rs`), so a job enqueued through any engine is delivered by whichever
//! engine claims it.
//!
//! Delivery: at least once, and never to two deliveries at the same time. Every engine claims
//! jobs with one atomic script that leases the job (visibility timeout + [`LEASE_GRACE`], on
//! Redis's clock); the claiming engine calls the function (visibility timeout as the call's
//! deadline, so the call ends before the lease does) and then acks, retries with backoff, or
//! dead-letters it. An engine that dies holding jobs leaves their leases to run out, and the
//! next claim anywhere puts them back in line. FIFO queues keep one job of a message group out
//! at a time across all engines (the lease is on the group).
//!
//! Who consumes what: every engine claims from the named queues (`concurrency` per engine),
//! and from the subscriptions its own workers bound (`durable:subscriber`, their concurrency).
//! Engines learn of new jobs from the `iii:queue:wake` channel and also look every
//! [`POLL`] (a missed wake, another engine's retries); a claim that finds nothing says when
//! the earliest retry or lease comes due, and the engine looks again then if that is sooner.
//!
//! Files: `scripts.rs` (Redis layout, Lua), `enqueue.rs` (enqueue, publish), `deliver.rs`
//! (claiming, calling, settling), `admin.rs` (counts, dead letters, redrive, purge).

mod admin;
mod deliver;
mod enqueue;
mod scripts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use redis::aio::ConnectionManager;
use serde_json::{json, Value};

use super::lanes::Job;
use super::subscribe::parse_binding;
use super::{named_key, topic_key, unclaimed_key, Binding, Close, Kind};
use crate::config::{QueueConfig, QueueSettings};
use crate::messages::{BuiltinCall, TriggerBinding};
use crate::modules::answer_later;
use crate::protocol::ErrorBody;
use crate::registry::Registry;

/// How often an engine looks for jobs it was not woken for.
const POLL: Duration = Duration::from_millis(200);
/// A lease outlives the delivery's deadline by this much, so a live engine settles its
/// delivery before anyone else may claim the job.
const LEASE_GRACE: u64 = 2_000;
/// Subscribers changing under a publish: how many times it is made again.
const PUBLISH_ATTEMPTS: usize = 8;

/// A queue this engine consumes.
struct Consumer {
    kind: Kind,
    settings: QueueSettings,
    /// Topic queues: the bound triggers' total concurrency here.
    consumers: u32,
    condition: Option<String>,
    metadata: Option<Value>,
    in_flight: usize,
    /// A claim is on its way to Redis.
    claiming: bool,
    /// Jobs that went back for want of their function here since the last look.
    absent: u32,
    /// Too many of them: no claims until the next look.
    resting: bool,
}

impl Consumer {
    fn new(kind: Kind, settings: QueueSettings) -> Consumer {
        Consumer {
            kind,
            settings,
            consumers: 0,
            condition: None,
            metadata: None,
            in_flight: 0,
            claiming: false,
            absent: 0,
            resting: false,
        }
    }

    fn capacity(&self) -> usize {
        match self.kind {
            Kind::Named(_) => self.settings.concurrency as usize,
            Kind::Topic { .. } => self.consumers as usize,
            Kind::Unclaimed(_) => 0,
        }
    }

    /// The function a job of this queue goes to.
    fn function_of(&self, job: &Job) -> String {
        match &self.kind {
            Kind::Topic { function_id, .. } => function_id.clone(),
            _ => job.function_id.clone(),
        }
    }
}

/// The queue actor of the `redis` adapter. See the module docs.
pub struct RedisQueueActor {
    conn: ConnectionManager,
    registry: Registry,
    config: Arc<QueueConfig>,
    /// Queue key → what this engine consumes of it.
    consumers: HashMap<String, Consumer>,
    /// Trigger id → binding.
    bindings: HashMap<String, Binding>,
    /// A claim failed (Redis away): said once until one succeeds.
    outage: bool,
    /// Subscriptions reach Redis one after another, in the order they were bound here (the
    /// topic's first subscriber takes over its unclaimed messages).
    in_order: tokio::sync::mpsc::UnboundedSender<(::redis::ScriptInvocation<'static>, String)>,
}

/// Starts the actor on its own arbiter, listens for wake-ups and announces the functions.
pub fn start(
    config: &QueueConfig,
    registry: Registry,
    client: ::redis::Client,
    conn: ConnectionManager,
) -> (Addr<RedisQueueActor>, Arbiter) {
    let mut consumers = HashMap::new();
    for (name, settings) in &config.queues {
        let kind = Kind::Named(name.clone());
        consumers.insert(named_key(name), Consumer::new(kind, settings.clone()));
    }
    let (in_order, mut queued) =
        tokio::sync::mpsc::unbounded_channel::<(::redis::ScriptInvocation<'static>, String)>();
    let mut ordered_conn = conn.clone();
    let actor = RedisQueueActor {
        in_order,
        conn,
        registry: registry.clone(),
        config: Arc::new(config.clone()),
        consumers,
        bindings: HashMap::new(),
        outage: false,
    };
    let arbiter = Arbiter::new();
    let addr = RedisQueueActor::start_in_arbiter(&arbiter.handle(), move |ctx| {
        actix::spawn(async move {
            scripts::load_all(&mut ordered_conn).await;
            while let Some((inv, what)) = queued.recv().await {
                let r: ::redis::RedisResult<i64> = inv.invoke_async(&mut ordered_conn).await;
                if let Err(e) = r {
                    log::error!("iii-queue: cannot record {what} in Redis: {e}");
                }
            }
        });
        let me = ctx.address();
        crate::redis::listen(client, scripts::WAKE.to_string(), move |_, key| {
            me.do_send(Wake(String::from_utf8_lossy(&key).into_owned()));
        });
        actor
    });
    super::announce(
        &registry,
        addr.clone().recipient(),
        addr.clone().recipient(),
    );
    (addr, arbiter)
}

/// A queue may have a job to claim.
#[derive(Message)]
#[rtype(result = "()")]
struct Wake(String);

impl Actor for RedisQueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(POLL, |act, ctx| {
            for c in act.consumers.values_mut() {
                c.absent = 0;
                c.resting = false;
            }
            let keys: Vec<String> = act.consumers.keys().cloned().collect();
            for key in keys {
                act.pump(ctx, &key);
            }
        });
        ctx.run_interval(Duration::from_secs(1), |act, _| act.publish_gauges());
    }
}

impl Handler<Wake> for RedisQueueActor {
    type Result = ();
    fn handle(&mut self, msg: Wake, ctx: &mut Self::Context) {
        self.pump(ctx, &msg.0);
    }
}

impl Handler<Close> for RedisQueueActor {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The name users see for a queue key.
fn label_of(key: &str) -> String {
    key.split_once(':')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| key.to_string())
}

/// What a subscription keeps in `iii:queue:subs:<topic>`.
fn subscription_record(s: &QueueSettings) -> Value {
    json!({"fifo": s.fifo(), "group_field": s.message_group_field, "max_depth": s.max_depth})
}

impl RedisQueueActor {
    /// A `durable:subscriber` binding: recorded in Redis (publishes through any engine reach
    /// it), consumed here.
    fn bind(&mut self, id: String, function_id: String, config: Value, metadata: Option<Value>) {
        let (topic, condition, settings) = match parse_binding(&self.config.topic_defaults, &config)
        {
            Ok(p) => p,
            Err(message) => {
                self.registry.reject_binding(id, message);
                return;
            }
        };
        let key = topic_key(&topic, &function_id);
        let fifo = settings.fifo();
        let record = subscription_record(&settings);
        self.bindings.insert(
            id,
            Binding {
                key: key.clone(),
                concurrency: settings.concurrency,
            },
        );
        let kind = Kind::Topic {
            topic: topic.clone(),
            function_id: function_id.clone(),
        };
        let c = (self.consumers.entry(key.clone()))
            .or_insert_with(|| Consumer::new(kind, settings.clone()));
        c.settings = settings;
        c.condition = condition;
        c.metadata = metadata;
        self.recount(&key);
        let unclaimed = unclaimed_key(&topic);
        let mut inv = scripts::SUBSCRIBE.prepare_invoke();
        inv.arg(scripts::subs(&topic))
            .arg(&function_id)
            .arg(record.to_string())
            .arg(scripts::prefix(&unclaimed))
            .arg(&unclaimed)
            .arg(scripts::prefix(&key))
            .arg(&key)
            .arg(if fifo { "1" } else { "0" });
        let what = format!("the subscription of {function_id} to {topic}");
        let _ = self.in_order.send((inv, what));
    }

    fn unbind(&mut self, id: &str) {
        if let Some(b) = self.bindings.remove(id) {
            self.recount(&b.key);
        }
    }

    /// Topic queues: the consumers of `key` here, from the bindings.
    fn recount(&mut self, key: &str) {
        let total = super::concurrency_of(&self.bindings, key);
        if let Some(c) = self.consumers.get_mut(key) {
            c.consumers = total;
        }
    }

    fn answer(&self, engine_id: uuid::Uuid, outcome: Result<Option<Value>, ErrorBody>) {
        answer_later(self.registry.clone(), engine_id, async move { outcome });
    }
}

impl Handler<BuiltinCall> for RedisQueueActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, ctx: &mut Self::Context) {
        let input = call.data.to_value();
        match call.function_id.as_str() {
            "engine::queue::enqueue" => self.enqueue(call.engine_id, input),
            "iii::durable::publish" => self.publish(call.engine_id, input),
            other => self.admin(ctx, call.engine_id, other, input),
        }
    }
}

impl Handler<TriggerBinding> for RedisQueueActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerBinding, ctx: &mut Self::Context) {
        match msg {
            TriggerBinding::Bind {
                id,
                function_id,
                config,
                metadata,
                ..
            } => {
                let key = topic_key(
                    config.get("topic").and_then(Value::as_str).unwrap_or(""),
                    &function_id,
                );
                self.bind(id, function_id, config, metadata);
                // The subscription reaches Redis shortly; look for its jobs then.
                ctx.run_later(Duration::from_millis(50), move |act, ctx| {
                    act.pump(ctx, &key)
                });
            }
            TriggerBinding::Unbind { id } => self.unbind(&id),
        }
    }
}
