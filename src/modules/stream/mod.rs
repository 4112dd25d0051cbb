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
//! Files: `functions.rs` (the functions and their shapes), `ops.rs` (`stream::update` ops),
//! `store.rs` (the durable store), `socket.rs` (the consumer WebSocket).

mod durable;
pub mod functions;
pub mod ops;
mod socket;
pub mod store;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use crate::config::{FsyncMode, StoreMethod, StreamConfig};
use crate::flow::Flow;
use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinFunction, BuiltinTriggerType, Call, FireTrigger,
    RegisterBuiltins, TriggerBinding, TriggerRejected,
};
use crate::outbox::{Delivery, Outbox};
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::registry::RegistryActor;
use crate::router::{now_ms, CallRequest};
use durable::{CompactionDone, Durability, Mode, Synced};
use functions::Change;
use store::{FsyncPolicy, Store, StoreOptions};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindingKind {
    Change,
    Join,
    Leave,
}

/// A trigger binding of one of this module's types.
#[derive(Debug, Clone)]
struct Binding {
    kind: BindingKind,
    function_id: String,
    stream: String,
    group: Option<String>,
    item: Option<String>,
    condition: Option<String>,
    metadata: Option<Value>,
}

impl Binding {
    fn matches(&self, c: &Change) -> bool {
        self.kind == BindingKind::Change
            && self.stream == c.stream
            && self.group.as_ref().is_none_or(|g| *g == c.group)
            && self.item.as_ref().is_none_or(|i| Some(i) == c.id.as_ref())
    }
}

/// Events waiting for a binding's condition function, in order.
#[derive(Default)]
struct ConditionQueue {
    busy: bool,
    events: VecDeque<Payload>,
}

struct ConsumerConn {
    outbox: Outbox<ConsumerFrame>,
    context: Value,
    subs: BTreeMap<String, Subscription>,
}

/// The stream actor. See the module docs.
pub struct StreamActor {
    store: Store,
    registry: Addr<RegistryActor>,
    /// fsyncs off this thread, the answers held until durable, compactions.
    durable: Option<Durability>,
    mode: Mode,
    bindings: HashMap<String, Binding>,
    conditions: HashMap<String, ConditionQueue>,
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
    registry: Addr<RegistryActor>,
    shutdown: crate::socket::Shutdown,
) -> Result<StreamModule, String> {
    let kv = &config.adapter.kv;
    let mode = match kv.fsync {
        FsyncMode::Always => Mode::Always,
        FsyncMode::EverySecond => Mode::EverySecond,
    };
    let store = match kv.store_method {
        StoreMethod::InMemory => {
            log::warn!(
                "iii-stream: store_method is in_memory; stream data will not survive a restart"
            );
            Store::in_memory()
        }
        StoreMethod::FileBased => {
            // The store only writes; when to fsync is the syncer's job (durable.rs).
            let opts = StoreOptions {
                dir: kv.file_path.clone(),
                fsync: FsyncPolicy::Never,
                compact_threshold_bytes: kv.compact_threshold_bytes,
            };
            Store::open(opts).map_err(|e| format!("cannot open the store: {e}"))?
        }
    };
    let arbiter = Arbiter::new();
    let reg = registry.clone();
    let actor = StreamActor::start_in_arbiter(&arbiter.handle(), move |_| StreamActor {
        store,
        registry: reg,
        durable: None,
        mode,
        bindings: HashMap::new(),
        conditions: HashMap::new(),
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
    fn handle_call(&mut self, call: BuiltinCall, ctx: &mut Context<Self>) {
        if call.function_id == FAULT_FUNCTION && crate::engine::fault_injection() {
            panic!("fault injection: {FAULT_FUNCTION} was called");
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
            self.release(held, ctx);
        }
    }

    /// Answers a call and announces its change (once its write is durable).
    fn release(&mut self, held: durable::Held, ctx: &mut Context<Self>) {
        self.registry.do_send(held.done);
        if let Some(change) = held.change {
            self.announce(&change, ctx);
        }
    }

    /// Fires matching triggers and pushes the change to matching subscriptions.
    fn announce(&mut self, change: &Change, ctx: &mut Context<Self>) {
        let payload = Payload::from_value(&change.payload(now_ms()));
        let mut conditioned = Vec::new();
        for (id, b) in self.bindings.iter().filter(|(_, b)| b.matches(change)) {
            if b.condition.is_some() {
                conditioned.push(id.clone());
            } else {
                self.registry.do_send(FireTrigger {
                    function_id: b.function_id.clone(),
                    data: payload.clone(),
                    metadata: b.metadata.clone(),
                });
            }
        }
        for id in conditioned {
            self.conditions
                .entry(id.clone())
                .or_default()
                .events
                .push_back(payload.clone());
            self.next_condition(id, ctx);
        }
        if !self.consumers.is_empty() {
            self.push_to_consumers(change, &payload);
        }
    }

    fn push_to_consumers(&mut self, change: &Change, payload: &Payload) {
        let frame: Arc<str> = Arc::from(payload.as_str());
        let mut dropped = Vec::new();
        for (conn_id, conn) in self.consumers.iter_mut() {
            let hits = conn
                .subs
                .values()
                .filter(|s| {
                    s.stream == change.stream
                        && s.group == change.group
                        && s.item
                            .as_ref()
                            .is_none_or(|i| Some(i) == change.id.as_ref())
                })
                .count();
            for _ in 0..hits {
                if !deliver(*conn_id, conn, ConsumerFrame::Text(frame.clone())) {
                    dropped.push(*conn_id);
                    break;
                }
            }
        }
        for conn in dropped {
            self.consumer_gone(conn);
        }
    }

    /// Sends to one consumer; a slow or gone one is dropped.
    fn send_consumer(&mut self, conn_id: u64, frame: ConsumerFrame) {
        let Some(conn) = self.consumers.get_mut(&conn_id) else {
            return;
        };
        if !deliver(conn_id, conn, frame) {
            self.consumer_gone(conn_id);
        }
    }

    /// Consumers that stopped draining what is queued for them, found once a second.
    fn check_stalled_consumers(&mut self) {
        let stalled: Vec<u64> = self
            .consumers
            .iter_mut()
            .filter_map(|(id, c)| {
                let ms = c.outbox.stalled_for()?;
                log::warn!(
                    "stream consumer {id}: slow consumer (nothing drained for {ms} ms); closing it"
                );
                c.outbox.force(ConsumerFrame::Close("slow consumer"));
                Some(*id)
            })
            .collect();
        for id in stalled {
            self.consumer_gone(id);
        }
    }

    /// Runs the next queued event of a conditioned binding, if it is idle. Only a result that
    /// is literally `false`, or an error, skips the event (§5.3).
    fn next_condition(&mut self, id: String, ctx: &mut Context<Self>) {
        let Some(queue) = self.conditions.get_mut(&id) else {
            return;
        };
        if queue.busy {
            return;
        }
        let Some(payload) = queue.events.pop_front() else {
            return;
        };
        let Some(b) = self.bindings.get(&id) else {
            self.conditions.remove(&id);
            return;
        };
        queue.busy = true;
        let condition = b.condition.clone().unwrap_or_default();
        let fire = FireTrigger {
            function_id: b.function_id.clone(),
            data: payload.clone(),
            metadata: b.metadata.clone(),
        };
        let check = self
            .registry
            .send(Call(CallRequest::new(condition.clone(), payload)));
        ctx.spawn(check.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(Ok(Some(p))) if p.as_str() == "false" => {}
                Ok(Ok(_)) => act.registry.do_send(fire),
                Ok(Err(e)) => log::warn!(
                    "trigger {id}: condition {condition} failed ({}); event skipped",
                    e.message
                ),
                Err(_) => {}
            }
            if let Some(q) = act.conditions.get_mut(&id) {
                q.busy = false;
            }
            act.next_condition(id, ctx);
        }));
    }

    fn bind(
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
                log::warn!("trigger {id}: {message}");
                self.registry.do_send(TriggerRejected {
                    trigger_id: id,
                    error: ErrorBody::new("trigger_registration_failed", message),
                });
                return;
            }
        };
        log::debug!("trigger {id}: {trigger_type} -> {}", binding.function_id);
        self.bindings.insert(id, binding);
    }

    fn unbind(&mut self, id: &str) {
        self.bindings.remove(id);
        self.conditions.remove(id);
    }

    fn handle_consumer(&mut self, event: Consumer, ctx: &mut Context<Self>) {
        match event {
            Consumer::Connected {
                conn,
                frames,
                flow,
                context,
            } => {
                let hard_cap = socket::OUTBOUND_PAUSE * 4;
                let outbox = Outbox::new(frames, flow, CONSUMER_STALL_MS, hard_cap);
                self.consumers.insert(
                    conn,
                    ConsumerConn {
                        outbox,
                        context,
                        subs: BTreeMap::new(),
                    },
                );
            }
            Consumer::Join { conn, sub } => self.join(conn, sub, ctx),
            Consumer::Leave {
                conn,
                subscription_id,
                bytes,
            } => {
                let sub = self.consumers.get_mut(&conn).and_then(|c| {
                    c.outbox.flow().frame_done(bytes);
                    c.subs.remove(&subscription_id)
                });
                if let Some(sub) = sub {
                    self.run_leave(conn, &sub);
                }
            }
            Consumer::Gone { conn } => self.consumer_gone(conn),
        }
    }

    fn consumer_gone(&mut self, conn: u64) {
        if let Some(c) = self.consumers.remove(&conn) {
            for sub in c.subs.values() {
                self.fire_kind(BindingKind::Leave, join_payload(sub, &c.context));
            }
        }
    }

    fn run_leave(&mut self, conn: u64, sub: &Subscription) {
        let context = self
            .consumers
            .get(&conn)
            .map(|c| c.context.clone())
            .unwrap_or(Value::Null);
        self.fire_kind(BindingKind::Leave, join_payload(sub, &context));
    }

    fn fire_kind(&self, kind: BindingKind, payload: Value) {
        let payload = Payload::from_value(&payload);
        for b in self.bindings.values().filter(|b| b.kind == kind) {
            self.registry.do_send(FireTrigger {
                function_id: b.function_id.clone(),
                data: payload.clone(),
                metadata: b.metadata.clone(),
            });
        }
    }

    /// Runs every `stream:join` trigger in turn; any answer `{"unauthorized": true}` refuses.
    fn join(&mut self, conn: u64, sub: Subscription, ctx: &mut Context<Self>) {
        let Some(c) = self.consumers.get(&conn) else {
            return;
        };
        let payload = join_payload(&sub, &c.context);
        let mut hooks: Vec<String> = self
            .bindings
            .values()
            .filter(|b| b.kind == BindingKind::Join)
            .map(|b| b.function_id.clone())
            .collect();
        hooks.sort();
        let registry = self.registry.clone();
        let verdict = async move {
            for function_id in hooks {
                let res = registry
                    .send(Call(CallRequest::new(function_id, payload.clone())))
                    .await;
                if let Ok(Ok(Some(v))) = res {
                    if v.to_value().get("unauthorized") == Some(&Value::Bool(true)) {
                        return false;
                    }
                }
            }
            true
        };
        ctx.spawn(
            verdict
                .into_actor(self)
                .map(move |authorized, act, _| act.finish_join(conn, sub, authorized)),
        );
    }

    fn finish_join(&mut self, conn: u64, sub: Subscription, authorized: bool) {
        let event = if !authorized {
            json!({"type": "unauthorized"})
        } else {
            match &sub.item {
                Some(item) => {
                    json!({"type": "sync", "data": self.store.get(&sub.stream, &sub.group, item)})
                }
                None => json!({"type": "sync", "data": self.store.list(&sub.stream, &sub.group)}),
            }
        };
        let frame = json!({"type": "stream", "timestamp": now_ms(), "streamName": sub.stream,
                           "groupId": sub.group, "id": sub.item, "event": event});
        let Some(c) = self.consumers.get_mut(&conn) else {
            return;
        };
        c.outbox.flow().call_finished();
        if authorized {
            c.subs.insert(sub.id.clone(), sub);
        }
        self.send_consumer(conn, ConsumerFrame::Text(Arc::from(frame.to_string())));
    }

    fn maintenance(&mut self, ctx: &mut Context<Self>) {
        self.check_stalled_consumers();
        if let Some(d) = &mut self.durable {
            d.maybe_compact(&mut self.store, ctx.address().recipient());
        }
    }
}

/// Queues a frame for a consumer; false when the consumer must be dropped (it is told to close).
fn deliver(conn_id: u64, conn: &mut ConsumerConn, frame: ConsumerFrame) -> bool {
    let bytes = frame.wire_len();
    match conn.outbox.send(frame, bytes) {
        Delivery::Sent => true,
        Delivery::Closed => false,
        Delivery::Stalled { ms } => {
            log::warn!("stream consumer {conn_id}: slow consumer (nothing drained for {ms} ms); closing it");
            conn.outbox.force(ConsumerFrame::Close("slow consumer"));
            false
        }
        Delivery::Overflow { queued } => {
            log::warn!("stream consumer {conn_id}: slow consumer ({queued} bytes queued for it); closing it");
            conn.outbox.force(ConsumerFrame::Close("slow consumer"));
            false
        }
    }
}

fn join_payload(sub: &Subscription, context: &Value) -> Value {
    json!({"subscription_id": sub.id, "stream_name": sub.stream, "group_id": sub.group,
           "id": sub.item, "context": context})
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

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.durable = Some(Durability::new(
            &self.store,
            self.mode,
            ctx.address().recipient(),
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

impl Handler<Close> for StreamActor {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        let held = self
            .durable
            .take()
            .map(|mut d| d.close())
            .unwrap_or_default();
        let store = std::mem::replace(&mut self.store, Store::in_memory());
        match store.close() {
            Ok(()) => log::info!("stream store flushed and closed"),
            Err(e) => log::error!("stream store: closing failed: {e}"),
        }
        for h in held {
            self.registry.do_send(h.done);
        }
        ctx.stop();
    }
}

impl Handler<Synced> for StreamActor {
    type Result = ();
    fn handle(&mut self, msg: Synced, ctx: &mut Self::Context) {
        let Some(d) = &mut self.durable else {
            return;
        };
        for held in d.synced(msg.0, &mut self.store) {
            self.release(held, ctx);
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
