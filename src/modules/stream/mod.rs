//! The stream module (`iii-stream`): a `StreamActor` that owns the key/value store, serves the
//! `stream::*` functions for the registry like any function owner, provides the `stream`,
//! `stream:join` and `stream:leave` trigger types, and pushes changes to consumer sockets.
//!
//! Who sends what: the registry sends [`BuiltinCall`] (a call of a `stream::*` function) and
//! [`TriggerBinding`] (a binding of one of its trigger types); consumer sockets (`socket.rs`,
//! port 3112) send [`Consumer`] events; the engine sends [`Close`] at shutdown.
//!
//! A write is in the store's log (see `store.rs`) before anything else happens; then the call
//! is answered, then every matching `stream` trigger is fired through the registry and every
//! matching consumer subscription gets the change frame. Fan-out never waits for a subscriber:
//! each fire is an independent call, and the registry delivers them to each worker in the order
//! they were fired, so one item's events reach every subscriber in write order. A binding with
//! a `condition_function_id` has its own queue so its events stay in order while its condition
//! runs. The actor runs on its own arbiter: file I/O never blocks the socket-serving threads.
//!
//! With the `redis` adapter the data lives in Redis (`redis.rs`): calls run there, every
//! engine publishes its changes, and this actor announces each change any engine made.
//!
//! With the `bridge` adapter the data lives in another engine (`bridge.rs`): calls go there,
//! and this actor announces the changes that engine's `stream` triggers report back (for the
//! streams its bindings and consumer subscriptions name), including the writes made through
//! this engine, which are announced from that report only.
//!
//! Files: `functions.rs` (the functions and their shapes), `redis.rs` (the Redis backend),
//! `bridge.rs` (another engine as the backend), `custom.rs` (streams served by a worker's own
//! functions), `fanout.rs` (trigger bindings and fan-out), `consumers.rs` (consumer
//! subscriptions), `socket.rs` (the consumer WebSocket). The store and its fsync and compaction
//! threads are `crate::kv`, shared with the state module.

mod bridge;
mod consumers;
mod custom;
mod fanout;
pub mod functions;
mod redis;

mod socket;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;

use crate::config::StreamConfig;
use crate::flow::Flow;
use crate::kv::durable::{self, CompactionDone, Durability, Mode, Synced};
use crate::kv::store::Store;
use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinFunction, BuiltinTriggerType, RegisterBuiltins, TriggerBinding,
};
use crate::modules::fire::Route;
use crate::modules::ModuleError;
use crate::payload::Payload;
use crate::registry::Registry;
use consumers::ConsumerConn;
use fanout::Binding;
use functions::Change;

pub use socket::ConsumerFrame;

/// How often the log is fsynced (`fsync: every_second`) and compaction is considered.
const MAINTENANCE: Duration = Duration::from_secs(1);
/// A consumer socket that drains nothing for this long while over its limit is dropped.
const CONSUMER_STALL_MS: u64 = 10_000;

/// The trigger types this module provides: (id, description, engine-wide). `stream:join` and
/// `stream:leave` see every consumer socket of the engine (and a join hook can refuse them).
const TRIGGER_TYPES: &[(&str, &str, bool)] = &[
    (
        "stream",
        "Fires on every change of a stream item (stream::set, update, delete, send)",
        false,
    ),
    (
        "stream:join",
        "Runs when a consumer socket joins a subscription; may refuse it",
        true,
    ),
    (
        "stream:leave",
        "Runs when a consumer socket leaves a subscription",
        true,
    ),
];

/// Only with [`crate::engine::fault_injection`]: panics on the stream thread.
const FAULT_FUNCTION: &str = "stream::fault::panic";

/// Stop: flush and close the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// Events from consumer sockets (port 3112).
#[derive(Message)]
#[rtype(result = "()")]
pub enum Consumer {
    Connected {
        conn: u64,
        frames: Recipient<ConsumerFrame>,
        flow: Arc<Flow>,
        context: Value,
    },
    Join {
        conn: u64,
        sub: Subscription,
    },
    Leave {
        conn: u64,
        subscription_id: String,
        /// The frame's size, counted by the socket's flow control until handled here.
        bytes: usize,
    },
    Gone {
        conn: u64,
    },
}

/// One consumer subscription: a group, or one item of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub stream: String,
    pub group: String,
    pub item: Option<String>,
}

/// The stream actor. See the module docs.
pub struct StreamActor {
    store: Store,
    /// The `redis` adapter: client (for the change listener) and command connection.
    redis: Option<(::redis::Client, ::redis::aio::ConnectionManager)>,
    /// The `bridge` adapter: the remote engine and the remote triggers held there.
    bridge: Option<bridge::Bridge>,
    registry: Registry,
    /// fsyncs off this thread, the answers held until durable, compactions.
    durable: Option<Durability<Change>>,
    mode: Mode,
    bindings: HashMap<String, Binding>,
    /// How each `stream` binding's events reach its function (with its condition's queue).
    routes: HashMap<String, Route>,
    consumers: HashMap<u64, ConsumerConn>,
}

/// A started stream module.
pub struct StreamModule {
    pub addr: std::net::SocketAddr,
    actor: Addr<StreamActor>,
    server: actix_web::dev::ServerHandle,
    arbiter: Arbiter,
}

/// Opens the store, starts the actor, announces its functions to the registry and opens the
/// consumer socket.
pub fn start(
    config: &StreamConfig,
    registry: Registry,
    shutdown: crate::socket::Shutdown,
    redis: Option<(::redis::Client, ::redis::aio::ConnectionManager)>,
) -> Result<StreamModule, ModuleError> {
    let kv = &config.adapter.kv;
    let bridge = config.adapter.bridge_url.clone().map(bridge::Bridge::new);
    let (store, mode) = match redis.is_some() || bridge.is_some() {
        true => (Store::in_memory(), Mode::EverySecond),
        false => crate::kv::open(kv, &kv.file_path, "stream")?,
    };
    let arbiter = Arbiter::new();
    let reg = registry.clone();
    let actor = StreamActor::start_in_arbiter(&arbiter.handle(), move |_| StreamActor {
        store,
        redis,
        bridge,
        registry: reg,
        durable: None,
        mode,
        bindings: HashMap::new(),
        routes: HashMap::new(),
        consumers: HashMap::new(),
    });
    let described = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(id, d)| BuiltinFunction {
                id: id.to_string(),
                description: d.to_string(),
            })
            .collect::<Vec<_>>()
    };
    registry.do_send(RegisterBuiltins {
        owner: "iii-stream",
        functions: {
            let mut f = described(functions::FUNCTIONS);
            if crate::engine::fault_injection() {
                f.extend(described(&[(
                    FAULT_FUNCTION,
                    "Test aid: panic on the stream thread",
                )]));
            }
            f
        },
        calls: actor.clone().recipient(),
        trigger_types: TRIGGER_TYPES
            .iter()
            .map(|(id, d, engine_wide)| BuiltinTriggerType {
                id: id.to_string(),
                description: d.to_string(),
                engine_wide: *engine_wide,
            })
            .collect(),
        bindings: actor.clone().recipient(),
    });
    let (addr, server) = socket::start(config, actor.clone(), registry, shutdown)?;
    Ok(StreamModule {
        addr,
        actor,
        server,
        arbiter,
    })
}

impl StreamModule {
    /// Closes the consumer socket, then flushes and closes the store.
    pub async fn stop(self) {
        self.server.stop(true).await;
        let _ = self.actor.send(Close).await;
        self.arbiter.stop();
    }
}

impl StreamActor {
    pub(super) fn handle_call(&mut self, mut call: BuiltinCall, ctx: &mut Context<Self>) {
        if let Some(delegate) = call.delegate.take() {
            return self.call_custom(call, delegate, ctx);
        }
        if call.function_id == FAULT_FUNCTION && crate::engine::fault_injection() {
            panic!("fault injection: {FAULT_FUNCTION} was called");
        }
        if let Some(link) = self.bridge.as_ref().and_then(bridge::Bridge::link) {
            // Checked here, run there; the change comes back as the remote's trigger event.
            let (engine_id, input) = (call.engine_id, call.data.to_value());
            let checked = functions::plan(&call.function_id, input.clone()).map(|_| ());
            let function_id = call.function_id;
            crate::modules::answer_later(self.registry.clone(), engine_id, async move {
                checked?;
                link.exec(function_id, input).await
            });
            return;
        }
        if let Some((_, conn)) = &self.redis {
            let engine_id = call.engine_id;
            let op = functions::plan(&call.function_id, call.data.to_value());
            let (conn, registry) = (conn.clone(), self.registry.clone());
            crate::modules::answer_later(registry, engine_id, async move {
                Ok(redis::exec(conn, op?).await?.0)
            });
            return;
        }
        let (outcome, change) =
            functions::call(&mut self.store, &call.function_id, call.data.to_value());
        let outcome = outcome.map(|v| v.map(|v| Payload::from_value(&v)));
        if let Err(e) = &outcome {
            if e.code.starts_with("STREAM_") {
                log::error!("{}: {}", call.function_id, e.message);
            }
        }
        let done = BuiltinDone {
            engine_id: call.engine_id,
            outcome,
        };
        let seq = self.store.last_seq();
        let ready = match &mut self.durable {
            Some(d) => d.admit(seq, done, change),
            None => Some(durable::Held::now(done, change)),
        };
        if let Some(held) = ready {
            self.release(held);
        }
    }

    /// Answers a call and announces its change (once its write is durable).
    fn release(&mut self, held: durable::Held<Change>) {
        self.registry.do_send(held.done);
        if let Some(change) = held.change {
            self.announce(&change);
        }
    }

    fn maintenance(&mut self, ctx: &mut Context<Self>) {
        self.check_stalled_consumers();
        if let Some(d) = &mut self.durable {
            d.maintain(&mut self.store, ctx.address().recipient());
        }
    }
}

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(bridge) = &mut self.bridge {
            bridge.connect(ctx.address());
        }
        if let Some((client, _)) = &self.redis {
            let addr = ctx.address();
            crate::redis::listen(client.clone(), redis::EVENTS.into(), move |_, payload| {
                match serde_json::from_slice::<Value>(&payload)
                    .ok()
                    .as_ref()
                    .and_then(redis::change_of)
                {
                    Some(change) => addr.do_send(Changed(change)),
                    None => log::warn!("iii-stream: an unreadable change event was dropped"),
                }
            });
        }
        self.durable = Some(Durability::new(
            "stream",
            &self.store,
            self.mode,
            ctx.address().recipient(),
            self.registry.metrics().store("stream"),
        ));
        ctx.run_interval(MAINTENANCE, |act, ctx| act.maintenance(ctx));
    }
}

impl Handler<BuiltinCall> for StreamActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, ctx: &mut Self::Context) {
        self.handle_call(call, ctx);
    }
}

impl Handler<TriggerBinding> for StreamActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerBinding, _ctx: &mut Self::Context) {
        match msg {
            TriggerBinding::Bind {
                id,
                trigger_type,
                function_id,
                config,
                metadata,
            } => self.bind(id, &trigger_type, function_id, config, metadata),
            TriggerBinding::Unbind { id } => self.unbind(&id),
        }
    }
}

impl Handler<Consumer> for StreamActor {
    type Result = ();
    fn handle(&mut self, msg: Consumer, ctx: &mut Self::Context) {
        self.handle_consumer(msg, ctx);
    }
}

/// A change some engine made through Redis, or one the bridge's remote engine reported: this
/// engine's triggers and consumers get it.
#[derive(Message)]
#[rtype(result = "()")]
struct Changed(Change);

impl Handler<Changed> for StreamActor {
    type Result = ();
    fn handle(&mut self, msg: Changed, _ctx: &mut Self::Context) {
        self.announce(&msg.0);
    }
}

impl Handler<Close> for StreamActor {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        for h in durable::shut_down("stream", &mut self.durable, &mut self.store) {
            self.registry.do_send(h.done);
        }
        ctx.stop();
    }
}

impl Handler<Synced> for StreamActor {
    type Result = ();
    fn handle(&mut self, msg: Synced, _ctx: &mut Self::Context) {
        let Some(d) = &mut self.durable else {
            return;
        };
        for held in d.synced(msg.0, &mut self.store) {
            self.release(held);
        }
    }
}

impl Handler<CompactionDone> for StreamActor {
    type Result = ();
    fn handle(&mut self, msg: CompactionDone, _ctx: &mut Self::Context) {
        if let Some(d) = &mut self.durable {
            d.compaction_done(msg.0, &mut self.store);
        }
    }
}
