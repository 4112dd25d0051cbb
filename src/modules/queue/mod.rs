//! The durable queue module (`iii-queue`, `MODULES.md` §2): a `QueueActor` that owns the
//! queue store, serves `engine::queue::enqueue` (the SDKs' `enqueue` action),
//! `iii::durable::publish` and the functions that inspect and operate queues, provides the
//! `durable:subscriber` trigger type, and delivers every job until it succeeds or is
//! dead-lettered.
//!
//! Who sends what: the registry sends [`BuiltinCall`] and [`TriggerBinding`]; the engine sends
//! [`Close`] at shutdown; delivery outcomes come back to the actor from the calls it spawns.
//!
//! Queues: a named queue of `queue_configs` (stream `named:<q>` of the store) holds jobs for any
//! function; a `durable:subscriber` subscription of function `f` to topic `t` has its own queue
//! (`topic:<t>::<f>`), so every subscribed function gets every message, and several triggers
//! of one function on one topic are competing consumers. Subscriptions are remembered in the
//! store: a publish while the subscriber's worker is reconnecting is kept for it. A publish to
//! a topic nobody ever subscribed to is parked (`unclaimed:<t>`) and handed to its first
//! subscriber.
//!
//! Durability: an enqueue or publish is answered once its job is in the store's log (and, with
//! `fsync: always`, fsynced). Each delivery first records a lease (`lease_until` = now +
//! visibility timeout); an ack deletes the job; a failure records the attempt and its backoff;
//! a job is dead-lettered (group `dead`) after `max_retries` retries. After a restart every
//! job is there again, those that were in flight once their lease is over.
//!
//! Files: `lanes.rs` (a queue's jobs and their order), `delivery.rs` (delivering, acks,
//! retries, timers), `functions.rs` (enqueue, publish), `admin.rs` (inspect and operate),
//! `subscribe.rs` (the `durable:subscriber` trigger). `redis/` is the `redis` adapter: the
//! same functions and trigger, with the jobs in a Redis that several engines share.

mod admin;
mod delivery;
mod functions;
mod lanes;
mod redis;
mod subscribe;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::Value;

use crate::config::{QueueConfig, QueueSettings};
use crate::kv::durable::{self, CompactionDone, Durability, Mode, Synced};
use crate::kv::store::Store;
use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinFunction, BuiltinTriggerType, RegisterBuiltins, TriggerBinding,
};
use crate::modules::ModuleError;
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::registry::Registry;
use lanes::{Job, Lanes};

/// How often compaction is considered and parked jobs look for their function.
const MAINTENANCE: Duration = Duration::from_millis(250);
/// How often expired idempotency keys are forgotten.
const IDEMPOTENCY_SWEEP: Duration = Duration::from_secs(60);

/// Store streams that are not queues.
const SUBSCRIPTIONS: &str = "__subscriptions";
const IDEMPOTENCY: &str = "__idempotency";
/// Groups of a queue's stream.
const JOBS: &str = "jobs";
const DEAD: &str = "dead";

/// Stop: flush and close the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a queue is for.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A queue of `queue_configs`: jobs name their function.
    Named(String),
    /// One function's subscription to a topic.
    Topic { topic: String, function_id: String },
    /// Messages of a topic nobody subscribed to yet.
    Unclaimed(String),
}

/// One queue.
struct Queue {
    kind: Kind,
    settings: QueueSettings,
    lanes: Lanes,
    /// Dead letters kept (group `dead`).
    dead: usize,
    /// Topic queues: the bound triggers' total concurrency (0: nobody consumes now), and the
    /// latest binding's condition and metadata.
    consumers: u32,
    condition: Option<String>,
    metadata: Option<Value>,
}

impl Queue {
    fn new(kind: Kind, settings: QueueSettings) -> Queue {
        Queue {
            lanes: Lanes::new(settings.fifo()),
            kind,
            settings,
            dead: 0,
            consumers: 0,
            condition: None,
            metadata: None,
        }
    }

    /// The name users see: the queue's name, `<topic>::<function>`, or the topic.
    fn label(&self) -> String {
        match &self.kind {
            Kind::Named(n) => n.clone(),
            Kind::Topic { topic, function_id } => format!("{topic}::{function_id}"),
            Kind::Unclaimed(t) => t.clone(),
        }
    }

    /// How many jobs may be in flight at once.
    fn capacity(&self) -> usize {
        match self.kind {
            Kind::Named(_) => self.settings.concurrency as usize,
            Kind::Topic { .. } => self.consumers as usize,
            Kind::Unclaimed(_) => 0,
        }
    }
}

/// The store stream of a named queue / a subscription / a topic's unclaimed messages.
fn named_key(name: &str) -> String {
    format!("named:{name}")
}
fn topic_key(topic: &str, function_id: &str) -> String {
    format!("topic:{topic}::{function_id}")
}
fn unclaimed_key(topic: &str) -> String {
    format!("unclaimed:{topic}")
}

/// A remembered idempotency key.
struct Seen {
    receipt: String,
    expires_at: u64,
}

/// A bound `durable:subscriber` trigger (both adapters).
struct Binding {
    key: String,
    concurrency: u32,
}

/// The total concurrency of the bindings of queue `key`: its consumers on this engine.
fn concurrency_of(bindings: &HashMap<String, Binding>, key: &str) -> u32 {
    bindings
        .values()
        .filter(|b| b.key == key)
        .map(|b| b.concurrency)
        .sum()
}

/// Announces the module's functions and the `durable:subscriber` trigger type (both
/// adapters).
fn announce(
    registry: &Registry,
    calls: Recipient<BuiltinCall>,
    bindings: Recipient<TriggerBinding>,
) {
    registry.do_send(RegisterBuiltins {
        owner: "iii-queue",
        functions: functions::FUNCTIONS
            .iter()
            .map(|(id, d)| BuiltinFunction {
                id: id.to_string(),
                description: d.to_string(),
            })
            .collect(),
        calls,
        trigger_types: vec![BuiltinTriggerType {
            id: "durable:subscriber".into(),
            description: "Queue core module".into(),
            engine_wide: false,
        }],
        bindings,
    });
}

/// The queue actor. See the module docs.
pub struct QueueActor {
    store: Store,
    registry: Registry,
    config: Arc<QueueConfig>,
    durable: Option<Durability<()>>,
    mode: Mode,
    /// Store stream → queue.
    queues: HashMap<String, Queue>,
    /// Topic → subscribed functions (remembered in the store).
    subscriptions: BTreeMap<String, BTreeSet<String>>,
    /// Trigger id → binding.
    bindings: HashMap<String, Binding>,
    /// (queue key, idempotency key) → first receipt.
    seen: HashMap<(String, String), Seen>,
    next_seq: u64,
    /// The armed wake-up for the earliest delayed job.
    wake: Option<(u64, SpawnHandle)>,
}

/// A started queue module.
pub struct QueueModule {
    actor: Recipient<Close>,
    arbiter: Arbiter,
}

impl QueueModule {
    /// Flushes and closes the store.
    pub async fn stop(self) {
        let _ = self.actor.send(Close).await;
        self.arbiter.stop();
    }
}

/// Opens the store (or, with the `redis` adapter, takes the Redis connection), rebuilds the
/// queues from it, starts the actor and announces its functions and trigger type.
pub fn start(
    config: &QueueConfig,
    registry: Registry,
    shared: Option<(::redis::Client, ::redis::aio::ConnectionManager)>,
) -> Result<QueueModule, ModuleError> {
    if let Some((client, conn)) = shared {
        let (addr, arbiter) = redis::start(config, registry, client, conn);
        return Ok(QueueModule {
            actor: addr.recipient(),
            arbiter,
        });
    }
    let dir = config.store.file_path.clone();
    let (store, mode) = crate::kv::open(&config.store, &dir, "queue")?;
    let mut actor = QueueActor {
        store,
        registry: registry.clone(),
        config: Arc::new(config.clone()),
        durable: None,
        mode,
        queues: HashMap::new(),
        subscriptions: BTreeMap::new(),
        bindings: HashMap::new(),
        seen: HashMap::new(),
        next_seq: 1,
        wake: None,
    };
    actor.load();
    let arbiter = Arbiter::new();
    let addr = QueueActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
    announce(
        &registry,
        addr.clone().recipient(),
        addr.clone().recipient(),
    );
    Ok(QueueModule {
        actor: addr.recipient(),
        arbiter,
    })
}

impl QueueActor {
    /// Rebuilds queues, subscriptions and idempotency keys from the store.
    fn load(&mut self) {
        let now = now_ms();
        for (name, _) in self.config.queues.iter() {
            let key = named_key(name);
            let settings = self.config.queues[name].clone();
            self.queues
                .insert(key, Queue::new(Kind::Named(name.clone()), settings));
        }
        let mut jobs: Vec<(String, Job)> = Vec::new();
        let mut loaded = 0usize;
        for (stream, groups) in self.store.list_all() {
            if stream == SUBSCRIPTIONS {
                for topic in groups {
                    for v in self.store.list(SUBSCRIPTIONS, &topic) {
                        if let Some(f) = v.get("function_id").and_then(Value::as_str) {
                            self.subscriptions
                                .entry(topic.clone())
                                .or_default()
                                .insert(f.to_string());
                        }
                    }
                }
                continue;
            }
            if stream == IDEMPOTENCY {
                for queue in groups {
                    for v in self.store.list(IDEMPOTENCY, &queue) {
                        let (Some(k), Some(r), Some(e)) = (
                            v.get("key").and_then(Value::as_str),
                            v.get("receipt").and_then(Value::as_str),
                            v.get("expires_at").and_then(Value::as_u64),
                        ) else {
                            continue;
                        };
                        self.seen.insert(
                            (queue.clone(), k.to_string()),
                            Seen {
                                receipt: r.to_string(),
                                expires_at: e,
                            },
                        );
                    }
                }
                continue;
            }
            let Some(kind) = kind_of(&stream) else {
                log::warn!("queue store: unknown stream {stream:?} ignored");
                continue;
            };
            let settings = match &kind {
                Kind::Named(n) => self.config.queues.get(n).cloned().unwrap_or_else(|| {
                    log::warn!("iii-queue: queue {n:?} has stored jobs but is no longer configured; they are delivered with the `default` queue's settings");
                    self.config.queues["default"].clone()
                }),
                _ => self.config.topic_defaults.clone(),
            };
            let queue = self
                .queues
                .entry(stream.clone())
                .or_insert_with(|| Queue::new(kind, settings));
            queue.dead = self.store.list(&stream, DEAD).len();
            for v in self.store.list(&stream, JOBS) {
                match serde_json::from_value::<Job>(v) {
                    Ok(job) => jobs.push((stream.clone(), job)),
                    Err(e) => log::error!("queue store: unreadable job in {stream}: {e}"),
                }
            }
        }
        jobs.sort_by_key(|(_, j)| j.seq);
        for (stream, job) in jobs {
            self.next_seq = self.next_seq.max(job.seq + 1);
            if let Some(q) = self.queues.get_mut(&stream) {
                q.lanes.add(job, now);
                loaded += 1;
            }
        }
        if loaded > 0 {
            log::info!("iii-queue: {loaded} jobs restored from the store");
        }
    }

    /// Writes a job record (`jobs` group) or deletes it; failures are logged (the job lives on
    /// in memory, and the next write of it tries again).
    fn persist(&mut self, key: &str, job: &Job) {
        if let Err(e) = self.store.set(key, JOBS, &job.id, job.to_value()) {
            log::error!("queue store: cannot record job {} of {key}: {e}", job.id);
        }
        self.note();
    }

    fn unpersist(&mut self, key: &str, id: &str) {
        if let Err(e) = self.store.delete(key, JOBS, id) {
            log::error!("queue store: cannot delete job {id} of {key}: {e}");
        }
        self.note();
    }

    /// Tells the syncer about writes no answer waits for.
    fn note(&mut self) {
        let seq = self.store.last_seq();
        if let Some(d) = &mut self.durable {
            d.note(seq);
        }
    }

    /// Answers a call once the store's writes so far are durable.
    fn answer(&mut self, engine_id: uuid::Uuid, outcome: Result<Option<Value>, ErrorBody>) {
        let done = BuiltinDone {
            engine_id,
            outcome: outcome.map(|v| v.map(|v| Payload::from_value(&v))),
        };
        let seq = self.store.last_seq();
        let ready = match &mut self.durable {
            Some(d) => d.admit(seq, done, None),
            None => Some(durable::Held::now(done, None)),
        };
        if let Some(held) = ready {
            self.registry.do_send(held.done);
        }
    }

    /// Each queue's counts, for `/metrics`.
    fn publish_gauges(&self) {
        let gauges = self
            .queues
            .values()
            .map(|q| {
                let (delayed, parked, in_flight) =
                    (q.lanes.delayed(), q.lanes.parked(), q.lanes.in_flight());
                crate::metrics::QueueGauge {
                    queue: q.label(),
                    waiting: (q.lanes.depth() - delayed - parked) as u64,
                    delayed: delayed as u64,
                    parked: parked as u64,
                    in_flight: in_flight as u64,
                    dead: q.dead as u64,
                }
            })
            .collect();
        self.registry.metrics().publish_queues(gauges);
    }

    /// Forgets idempotency keys past their window.
    fn sweep_idempotency(&mut self) {
        let now = now_ms();
        let expired: Vec<(String, String)> = self
            .seen
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (queue, key) in expired {
            self.seen.remove(&(queue.clone(), key.clone()));
            if let Err(e) = self.store.delete(IDEMPOTENCY, &queue, &key) {
                log::error!("queue store: cannot forget idempotency key: {e}");
            }
        }
        self.note();
    }
}

/// The queue a store stream holds.
fn kind_of(stream: &str) -> Option<Kind> {
    if let Some(n) = stream.strip_prefix("named:") {
        return Some(Kind::Named(n.to_string()));
    }
    if let Some(rest) = stream.strip_prefix("topic:") {
        let (topic, function_id) = rest.split_once("::")?;
        return Some(Kind::Topic {
            topic: topic.to_string(),
            function_id: function_id.to_string(),
        });
    }
    stream
        .strip_prefix("unclaimed:")
        .map(|t| Kind::Unclaimed(t.to_string()))
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.durable = Some(Durability::new(
            "queue",
            &self.store,
            self.mode,
            ctx.address().recipient(),
            self.registry.metrics().store("queue"),
        ));
        ctx.run_interval(MAINTENANCE, |act, ctx| {
            if let Some(d) = &mut act.durable {
                d.maintain(&mut act.store, ctx.address().recipient());
            }
            act.unpark_all(ctx);
            act.publish_gauges();
        });
        ctx.run_interval(IDEMPOTENCY_SWEEP, |act, _| act.sweep_idempotency());
        let keys: Vec<String> = self.queues.keys().cloned().collect();
        for key in keys {
            self.pump(ctx, &key);
        }
        self.rearm(ctx);
    }
}

impl Handler<BuiltinCall> for QueueActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, ctx: &mut Self::Context) {
        let outcome = self.call(ctx, &call.function_id, call.data);
        if let Err(e) = &outcome {
            log::debug!("{}: {}: {}", call.function_id, e.code, e.message);
        }
        self.answer(call.engine_id, outcome);
    }
}

impl Handler<TriggerBinding> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerBinding, ctx: &mut Self::Context) {
        match msg {
            TriggerBinding::Bind {
                id,
                function_id,
                config,
                metadata,
                ..
            } => self.bind(ctx, id, function_id, config, metadata),
            TriggerBinding::Unbind { id } => self.unbind(&id),
        }
    }
}

impl Handler<Close> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        for h in durable::shut_down("queue", &mut self.durable, &mut self.store) {
            self.registry.do_send(h.done);
        }
        ctx.stop();
    }
}

impl Handler<Synced> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Synced, _ctx: &mut Self::Context) {
        let Some(d) = &mut self.durable else {
            return;
        };
        for held in d.synced(msg.0, &mut self.store) {
            self.registry.do_send(held.done);
        }
    }
}

impl Handler<CompactionDone> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: CompactionDone, _ctx: &mut Self::Context) {
        if let Some(d) = &mut self.durable {
            d.compaction_done(msg.0, &mut self.store);
        }
    }
}
