//! `RegistryActor`: the single owner of functions, trigger types, triggers, connections and
//! pending invocations.
//!
//! Who sends what: sessions send [`Connect`], [`FromWorker`] (every decoded frame, in order) and
//! [`Disconnect`]; engine-hosted modules send [`RegisterBuiltins`], [`BuiltinDone`],
//! [`FireTrigger`], [`TriggerRejected`] and [`Call`] (an internal call that resolves with the
//! result). The registry answers sessions with [`ToSession`] through a bounded mailbox: a
//! session that stops reading its socket fills it and is disconnected.
//!
//! It never awaits a worker: a call is forwarded to its owner and parked in the pending table
//! (see `invoke.rs`); the result comes back as another message. Because every change goes
//! through this one mailbox, ordering questions have simple answers: frames of one connection
//! are handled in the order they arrived, a reattach cleans the old connection up before the
//! new one's next frame, and cleanup runs exactly once.
//!
//! Files: `mod.rs` (state, messages, handlers), `connections.rs` (connect, auth, frame order,
//! reattach, cleanup), `registration.rs` (function, trigger and trigger-type registration with
//! RBAC rules and registration hooks), `invoke.rs` (routing, middleware, pending calls,
//! deadlines), `triggers.rs` (trigger types and bindings), `engine_fns.rs` (the `engine::*`
//! functions), `builtin.rs` (the contract with engine-hosted modules).

mod builtin;
mod connections;
mod engine_fns;
mod invoke;
mod registration;
mod triggers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::Value;
use uuid::Uuid;

pub use builtin::{BuiltinCall, BuiltinFunction, BuiltinTriggerType, TriggerBinding};
pub use invoke::CallRequest;

use crate::config::ListenerConfig;
use crate::deadlines::Deadlines;
use crate::flow::Flow;
use crate::ids::IdMap;
use crate::lograte::LogLimiter;
use crate::outbox::Delivery;
use crate::payload::Payload;
use crate::protocol::{self, ErrorBody};
use crate::session::ToSession;
use connections::Conn;
pub(crate) use connections::ConnState;
use invoke::{Caller, Outcome, Pending};

/// How often pending calls are checked against their deadlines.
const DEADLINE_SWEEP: Duration = Duration::from_millis(50);
/// Stalled sockets are looked for every this many deadline sweeps (one second).
const STALL_CHECK_TICKS: u64 = 20;
/// Deadline for internal calls that do not name one.
pub const DEFAULT_INTERNAL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the upgrade request told us about a connection (the auth function's input).
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub ip: String,
    pub headers: serde_json::Map<String, Value>,
    pub query_params: serde_json::Map<String, Value>,
}

/// A new connection on a worker listener.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub worker_id: Uuid,
    pub session: Recipient<ToSession>,
    pub listener: Arc<ListenerConfig>,
    pub peer: PeerInfo,
    pub flow: Arc<Flow>,
    /// A telemetry (`/otel`) socket that only needs authenticating.
    pub telemetry: bool,
}

/// One decoded frame from a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromWorker {
    pub worker_id: Uuid,
    pub msg: protocol::Message,
    /// The frame's size, as counted by the connection's flow control.
    pub bytes: usize,
}

/// The connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub worker_id: Uuid,
}

/// An internal call (no caller connection); resolves with the function's result.
#[derive(Message)]
#[rtype(result = "Result<Option<Payload>, ErrorBody>")]
pub struct Call(pub CallRequest);

/// An engine-hosted module announces its functions and trigger types.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterBuiltins {
    pub owner: &'static str,
    pub functions: Vec<BuiltinFunction>,
    pub calls: Recipient<BuiltinCall>,
    pub trigger_types: Vec<BuiltinTriggerType>,
    pub bindings: Recipient<TriggerBinding>,
}

/// An engine-hosted module finished a [`BuiltinCall`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct BuiltinDone {
    pub engine_id: Uuid,
    pub outcome: Result<Option<Payload>, ErrorBody>,
}

/// A trigger provider fires: call `function_id` with `data`; the result is discarded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FireTrigger {
    pub function_id: String,
    pub data: Payload,
    pub metadata: Option<Value>,
}

/// An engine-hosted provider refused a binding.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TriggerRejected {
    pub trigger_id: String,
    pub error: ErrorBody,
}

/// Who serves a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Session(Uuid),
    /// An engine-hosted module (index into `builtins`).
    Builtin(usize),
    /// The registry itself (`engine::*`).
    Engine,
}

pub(crate) struct FunctionEntry {
    pub owner: Owner,
    /// Registered by a trusted party (the engine, or a listener without `rbac`): only then
    /// does its metadata count for `expose_functions` metadata filters.
    pub trusted: bool,
    pub description: Option<String>,
    pub request_format: Option<Value>,
    pub response_format: Option<Value>,
    pub metadata: Option<Value>,
}

/// An engine-hosted module.
pub(crate) struct Builtin {
    pub owner: &'static str,
    pub calls: Recipient<BuiltinCall>,
    pub bindings: Recipient<TriggerBinding>,
}

/// The registry actor. See the module docs.
pub struct RegistryActor {
    pub(crate) conns: IdMap<Conn>,
    pub(crate) functions: HashMap<String, FunctionEntry>,
    pub(crate) builtins: Vec<Builtin>,
    pub(crate) trigger_types: HashMap<String, triggers::TriggerTypeEntry>,
    pub(crate) triggers: HashMap<String, triggers::TriggerEntry>,
    pub(crate) pending: IdMap<Pending>,
    pub(crate) deadlines: Deadlines,
    /// Work that needs the actor context, queued where none is at hand (cleanup, trigger
    /// fan-out); run at the end of the current message.
    pub(crate) deferred: Vec<Deferred>,
    /// The set of function ids changed since `engine::functions-available` last fired.
    functions_dirty: bool,
    ticks: u64,
    /// Every id a trusted worker (or the engine) ever registered: a public session without a
    /// prefix can never take one, not even while its owner is reconnecting.
    pub(crate) trusted_ids: std::collections::HashSet<String>,
    /// Denied calls and registrations: logged a few per second, the rest counted.
    pub(crate) denials: LogLimiter,
}

/// See [`RegistryActor::deferred`].
pub(crate) enum Deferred {
    /// Finish an internal call.
    Then(invoke::Then, Outcome),
    /// Call a function bound to a trigger; the result is discarded.
    Fire {
        function_id: String,
        data: Payload,
        metadata: Option<Value>,
    },
}

impl Default for RegistryActor {
    fn default() -> Self {
        Self::new()
    }
}

impl RegistryActor {
    pub fn new() -> Self {
        let mut r = RegistryActor {
            conns: IdMap::default(),
            functions: HashMap::new(),
            builtins: Vec::new(),
            trigger_types: HashMap::new(),
            triggers: HashMap::new(),
            pending: IdMap::default(),
            deadlines: Deadlines::new(DEADLINE_SWEEP),
            deferred: Vec::new(),
            functions_dirty: false,
            ticks: 0,
            trusted_ids: std::collections::HashSet::new(),
            denials: LogLimiter::new("denied calls and registrations", 20),
        };
        r.install_engine_functions();
        r
    }

    /// Sends to a session; one whose peer stopped reading its socket is dropped (see
    /// [`Outbox`](crate::outbox::Outbox)).
    pub(crate) fn send_to(&mut self, worker_id: Uuid, msg: ToSession) -> bool {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return false;
        };
        let bytes = msg.wire_len();
        match conn.outbox.send(msg, bytes) {
            Delivery::Sent => true,
            Delivery::Stalled { ms } => {
                self.drop_slow(worker_id, &format!("nothing drained for {ms} ms"));
                false
            }
            Delivery::Overflow { queued } => {
                self.drop_slow(worker_id, &format!("{queued} bytes queued for it"));
                false
            }
            Delivery::Closed => {
                self.cleanup(worker_id);
                false
            }
        }
    }

    /// Disconnects a connection that does not read what the engine sends it.
    fn drop_slow(&mut self, worker_id: Uuid, why: &str) {
        log::warn!("worker {worker_id}: not reading its socket ({why}); disconnecting it");
        if let Some(conn) = self.conns.get(&worker_id) {
            conn.outbox
                .force(ToSession::Close("not reading its socket".into()));
        }
        self.cleanup(worker_id);
    }

    /// Drops connections that stopped draining what is queued for them (checked when
    /// something is sent, and here for those nothing is sent to any more).
    fn check_stalls(&mut self) {
        let stalled: Vec<(Uuid, u64)> = self
            .conns
            .iter_mut()
            .filter_map(|(id, c)| c.outbox.stalled_for().map(|ms| (*id, ms)))
            .collect();
        for (id, ms) in stalled {
            self.drop_slow(id, &format!("nothing drained for {ms} ms"));
        }
    }

    /// Sends a frame to a session.
    pub(crate) fn send_frame(&mut self, worker_id: Uuid, frame: protocol::Message) -> bool {
        self.send_to(worker_id, ToSession::Frame(frame))
    }

    /// Runs the work queued in [`RegistryActor::deferred`], in order.
    pub(crate) fn run_deferred(&mut self, ctx: &mut Context<Self>) {
        while !self.deferred.is_empty() {
            let batch = std::mem::take(&mut self.deferred);
            for work in batch {
                match work {
                    Deferred::Then(then, outcome) => then(self, ctx, outcome),
                    Deferred::Fire {
                        function_id,
                        data,
                        metadata,
                    } => {
                        let mut req = CallRequest::new(function_id, data);
                        req.metadata = metadata;
                        self.call(req, Caller::Discard, ctx);
                    }
                }
            }
        }
    }

    /// The periodic tick: deadlines, stalled sockets (once a second), and
    /// `engine::functions-available` when ids changed.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.expire_deadlines(ctx);
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(STALL_CHECK_TICKS) {
            self.check_stalls();
            self.denials.roll();
        }
        if self.functions_dirty {
            self.functions_dirty = false;
            self.fire_functions_available();
        }
        self.run_deferred(ctx);
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(DEADLINE_SWEEP, |act, ctx| act.tick(ctx));
    }
}

impl Handler<Connect> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: Connect, ctx: &mut Self::Context) {
        self.handle_connect(msg, ctx);
        self.run_deferred(ctx);
    }
}

impl Handler<FromWorker> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: FromWorker, ctx: &mut Self::Context) {
        self.handle_frame(msg.worker_id, msg.msg, msg.bytes, ctx);
        self.run_deferred(ctx);
    }
}

impl Handler<Disconnect> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, ctx: &mut Self::Context) {
        self.cleanup(msg.worker_id);
        self.run_deferred(ctx);
    }
}

impl Handler<Call> for RegistryActor {
    type Result = ResponseFuture<Result<Option<Payload>, ErrorBody>>;
    fn handle(&mut self, msg: Call, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let then = move |_: &mut Self, _: &mut Context<Self>, outcome: Outcome| {
            let _ = tx.send(outcome);
        };
        self.call(msg.0, Caller::Then(Box::new(then)), ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ErrorBody::new(
                    "invocation_error",
                    "the engine dropped the call",
                ))
            })
        })
    }
}

impl Handler<RegisterBuiltins> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: RegisterBuiltins, _ctx: &mut Self::Context) {
        self.install_builtins(msg);
    }
}

impl Handler<BuiltinDone> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: BuiltinDone, ctx: &mut Self::Context) {
        self.complete(msg.engine_id, msg.outcome, ctx);
        self.run_deferred(ctx);
    }
}

impl Handler<FireTrigger> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: FireTrigger, ctx: &mut Self::Context) {
        let mut req = CallRequest::new(msg.function_id, msg.data);
        req.metadata = msg.metadata;
        self.call(req, Caller::Discard, ctx);
        self.run_deferred(ctx);
    }
}

impl Handler<TriggerRejected> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerRejected, _ctx: &mut Self::Context) {
        self.reject_trigger(&msg.trigger_id, msg.error);
    }
}
