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
//! Files: `mod.rs` (state, messages, connection lifecycle), `invoke.rs` (routing, pending
//! calls, deadlines), `triggers.rs` (trigger types and bindings), `engine_fns.rs` (the
//! `engine::*` functions), `builtin.rs` (the contract with engine-hosted modules).

mod builtin;
mod engine_fns;
mod invoke;
mod triggers;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

pub use builtin::{BuiltinCall, BuiltinFunction, TriggerBinding};
pub use invoke::CallRequest;

use crate::config::ListenerConfig;
use crate::outbox::{Delivery, Outbox, Progress};
use crate::protocol::{self, ErrorBody};
use crate::rbac::SessionPolicy;
use crate::session::ToSession;
use invoke::{Caller, Outcome, Pending};

/// How often pending calls are checked against their deadlines.
const DEADLINE_SWEEP: Duration = Duration::from_millis(50);
/// Frames a connection may send while its auth function runs; more and it is closed.
const MAX_AUTH_BACKLOG: usize = 1024;
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
    pub progress: Progress,
}

/// One decoded frame from a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromWorker {
    pub worker_id: Uuid,
    pub msg: protocol::Message,
}

/// The connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub worker_id: Uuid,
}

/// An internal call (no caller connection); resolves with the function's result.
#[derive(Message)]
#[rtype(result = "Result<Option<Value>, ErrorBody>")]
pub struct Call(pub CallRequest);

/// An engine-hosted module announces its functions and trigger types.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterBuiltins {
    pub owner: &'static str,
    pub functions: Vec<BuiltinFunction>,
    pub calls: Recipient<BuiltinCall>,
    pub trigger_types: Vec<BuiltinFunction>,
    pub bindings: Recipient<TriggerBinding>,
}

/// An engine-hosted module finished a [`BuiltinCall`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct BuiltinDone {
    pub engine_id: Uuid,
    pub outcome: Result<Option<Value>, ErrorBody>,
}

/// A trigger provider fires: call `function_id` with `data`; the result is discarded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FireTrigger {
    pub function_id: String,
    pub data: Value,
    pub metadata: Option<Value>,
}

/// An engine-hosted provider refused a binding.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TriggerRejected {
    pub trigger_id: String,
    pub error: ErrorBody,
}

/// Counters for tests and diagnostics.
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

/// See [`GetStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections: usize,
    pub functions: usize,
    pub triggers: usize,
    pub pending_invocations: usize,
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
    pub description: Option<String>,
    pub request_format: Option<Value>,
    pub response_format: Option<Value>,
    pub metadata: Option<Value>,
}

/// Worker metadata from `engine::workers::register` (§2.3).
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerMeta {
    pub name: Option<String>,
    pub description: Option<String>,
    pub runtime: Option<String>,
    pub version: Option<String>,
    pub os: Option<String>,
    pub pid: Option<u64>,
    pub isolation: Option<Value>,
    pub telemetry: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    Authenticating,
    Live,
}

/// One connected worker, as the registry sees it.
pub(crate) struct Conn {
    pub listener: Arc<ListenerConfig>,
    pub peer: PeerInfo,
    pub outbox: Outbox<ToSession>,
    pub token: Uuid,
    pub state: ConnState,
    pub policy: SessionPolicy,
    pub backlog: Vec<protocol::Message>,
    pub connected_at_ms: u64,
    pub meta: WorkerMeta,
    /// Function ids registered by this connection (it may since have lost some to others).
    pub functions: HashSet<String>,
    pub triggers: HashSet<String>,
    pub trigger_types: HashSet<String>,
    /// Engine ids of calls this connection is serving.
    pub serving: HashSet<Uuid>,
    /// Engine ids of calls this connection made, and the caller-side ids in flight.
    pub calling: HashSet<Uuid>,
    pub caller_ids: HashSet<Uuid>,
}

/// An engine-hosted module.
pub(crate) struct Builtin {
    pub owner: &'static str,
    pub calls: Recipient<BuiltinCall>,
    pub bindings: Recipient<TriggerBinding>,
}

/// The registry actor. See the module docs.
pub struct RegistryActor {
    pub(crate) conns: HashMap<Uuid, Conn>,
    pub(crate) functions: HashMap<String, FunctionEntry>,
    pub(crate) builtins: Vec<Builtin>,
    pub(crate) trigger_types: HashMap<String, triggers::TriggerTypeEntry>,
    pub(crate) triggers: HashMap<String, triggers::TriggerEntry>,
    pub(crate) pending: HashMap<Uuid, Pending>,
    pub(crate) deadlines: BTreeSet<(Instant, Uuid)>,
    /// Work that needs the actor context, queued where none is at hand (cleanup, trigger
    /// fan-out); run at the end of the current message.
    pub(crate) deferred: Vec<Deferred>,
    /// The set of function ids changed since `engine::functions-available` last fired.
    functions_dirty: bool,
}

/// See [`RegistryActor::deferred`].
pub(crate) enum Deferred {
    /// Finish an internal call.
    Then(invoke::Then, Outcome),
    /// Call a function bound to a trigger; the result is discarded.
    Fire {
        function_id: String,
        data: Value,
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
            conns: HashMap::new(),
            functions: HashMap::new(),
            builtins: Vec::new(),
            trigger_types: HashMap::new(),
            triggers: HashMap::new(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            deferred: Vec::new(),
            functions_dirty: false,
        };
        r.install_engine_functions();
        r
    }

    /// Sends to a session; one whose peer stopped reading its socket is dropped (see
    /// [`Outbox`]).
    pub(crate) fn send_to(&mut self, worker_id: Uuid, msg: ToSession) -> bool {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return false;
        };
        match conn.outbox.send(msg) {
            Delivery::Sent => true,
            Delivery::Stalled { ms } => {
                log::warn!(
                    "worker {worker_id}: not reading its socket (queue full, nothing drained for {ms} ms); disconnecting it"
                );
                conn.outbox
                    .force(ToSession::Close("not reading its socket".into()));
                self.cleanup(worker_id);
                false
            }
            Delivery::Closed => {
                self.cleanup(worker_id);
                false
            }
        }
    }

    /// Sends a frame to a session.
    pub(crate) fn send_frame(&mut self, worker_id: Uuid, frame: protocol::Message) -> bool {
        self.send_to(worker_id, ToSession::Frame(frame))
    }

    fn handle_connect(&mut self, msg: Connect, ctx: &mut Context<Self>) {
        let Connect {
            worker_id,
            session,
            listener,
            peer,
            progress,
        } = msg;
        let auth = listener
            .rbac
            .as_ref()
            .and_then(|r| r.auth_function_id.clone());
        let policy = if listener.rbac.is_some() && auth.is_some() {
            SessionPolicy::default()
        } else {
            SessionPolicy::unauthenticated()
        };
        let auth_input = json!({"headers": peer.headers, "query_params": peer.query_params, "ip_address": peer.ip});
        let auth_timeout = Duration::from_millis(listener.auth_timeout_ms);
        let stall_ms = listener.write_stall_timeout_ms;
        self.conns.insert(
            worker_id,
            Conn {
                listener,
                peer,
                outbox: Outbox::new(session, progress, stall_ms),
                token: Uuid::new_v4(),
                state: ConnState::Authenticating,
                policy,
                backlog: Vec::new(),
                connected_at_ms: now_ms(),
                meta: WorkerMeta::default(),
                functions: HashSet::new(),
                triggers: HashSet::new(),
                trigger_types: HashSet::new(),
                serving: HashSet::new(),
                calling: HashSet::new(),
                caller_ids: HashSet::new(),
            },
        );
        match auth {
            None => self.accept(worker_id, None, ctx),
            Some(function_id) => {
                let req = CallRequest::new(function_id.clone(), auth_input).timeout(auth_timeout);
                let then = move |act: &mut Self, ctx: &mut Context<Self>, outcome: Outcome| {
                    act.finish_auth(worker_id, &function_id, outcome, ctx)
                };
                self.call(req, Caller::Then(Box::new(then)), ctx);
            }
        }
    }

    fn finish_auth(
        &mut self,
        worker_id: Uuid,
        function_id: &str,
        outcome: Outcome,
        ctx: &mut Context<Self>,
    ) {
        let policy = match outcome {
            Ok(Some(v)) => SessionPolicy::from_auth_result(v),
            Ok(None) => Err("auth function returned no result".to_string()),
            Err(e) => Err(e.message),
        };
        match policy {
            Ok(policy) => self.accept(worker_id, Some(policy), ctx),
            Err(reason) => {
                log::warn!("worker {worker_id}: auth function {function_id} rejected the connection: {reason}");
                if let Some(conn) = self.conns.remove(&worker_id) {
                    conn.outbox
                        .force(ToSession::Reject(ErrorBody::new("AUTH_ERROR", reason)));
                }
            }
        }
    }

    /// Welcomes the connection and replays the frames it sent while being authenticated.
    fn accept(&mut self, worker_id: Uuid, policy: Option<SessionPolicy>, ctx: &mut Context<Self>) {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        if let Some(p) = policy {
            conn.policy = p;
        }
        conn.state = ConnState::Live;
        let token = conn.token;
        let backlog = std::mem::take(&mut conn.backlog);
        if !self.send_to(
            worker_id,
            ToSession::Accepted {
                reattach_token: token,
            },
        ) {
            return;
        }
        log::info!("worker {worker_id}: connected");
        self.fire_workers_available("worker_connected", worker_id);
        for msg in backlog {
            self.handle_frame(worker_id, msg, ctx);
        }
    }

    fn handle_frame(&mut self, worker_id: Uuid, msg: protocol::Message, ctx: &mut Context<Self>) {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        if conn.state == ConnState::Authenticating {
            if conn.backlog.len() >= MAX_AUTH_BACKLOG {
                log::warn!("worker {worker_id}: more than {MAX_AUTH_BACKLOG} frames before auth finished; closing");
                conn.outbox.force(ToSession::Close(
                    "too many frames before auth finished".into(),
                ));
                self.conns.remove(&worker_id);
            } else {
                conn.backlog.push(msg);
            }
            return;
        }
        use protocol::Message as M;
        match msg {
            M::RegisterFunction(f) => self.handle_register_function(worker_id, f),
            M::UnregisterFunction(f) => self.handle_unregister_function(worker_id, &f.id),
            M::InvokeFunction(inv) => self.handle_invoke(worker_id, inv, ctx),
            M::InvocationResult(res) => self.handle_result(worker_id, res, ctx),
            M::RegisterTriggerType(t) => self.handle_register_trigger_type(worker_id, t, ctx),
            M::RegisterTrigger(t) => self.handle_register_trigger(worker_id, t, ctx),
            M::UnregisterTrigger(t) => self.handle_unregister_trigger(worker_id, &t.id),
            M::TriggerRegistrationResult(r) => self.handle_trigger_result(worker_id, r),
            M::RegisterService(s) => log::debug!("worker {worker_id}: service {} registered", s.id),
            M::Reattach(r) => self.handle_reattach(worker_id, r),
            M::Ping | M::Pong | M::WorkerRegistered(_) | M::Error(_) => {}
        }
    }

    fn handle_register_function(&mut self, worker_id: Uuid, f: protocol::RegisterFunction) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        if !conn.policy.allow_function_registration {
            log::warn!("worker {worker_id}: registration of {} denied (allow_function_registration is false)", f.id);
            return;
        }
        if f.invocation.is_some() {
            log::warn!("worker {worker_id}: {} is an HTTP-invoked function; this engine has no HTTP function provider, ignored", f.id);
            return;
        }
        let id = conn.policy.prefixed(&f.id);
        if let Some(existing) = self.functions.get(&id) {
            match existing.owner {
                Owner::Session(other) if other == worker_id => {}
                Owner::Session(other) => {
                    log::warn!("function {id}: registered again by worker {worker_id}; calls now go to it instead of {other}")
                }
                Owner::Builtin(_) | Owner::Engine => {
                    log::warn!(
                        "worker {worker_id}: cannot register {id}: it is provided by the engine"
                    );
                    return;
                }
            }
        }
        let entry = FunctionEntry {
            owner: Owner::Session(worker_id),
            description: f.description,
            request_format: f.request_format,
            response_format: f.response_format,
            metadata: f.metadata,
        };
        let is_new = self.functions.insert(id.clone(), entry).is_none();
        if let Some(conn) = self.conns.get_mut(&worker_id) {
            conn.functions.insert(id.clone());
        }
        log::debug!("worker {worker_id}: registered function {id}");
        if is_new {
            self.functions_dirty = true;
        }
    }

    fn handle_unregister_function(&mut self, worker_id: Uuid, id: &str) {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        let id = conn.policy.prefixed(id);
        conn.functions.remove(&id);
        let owned =
            matches!(self.functions.get(&id), Some(f) if f.owner == Owner::Session(worker_id));
        if owned {
            self.functions.remove(&id);
            log::debug!("worker {worker_id}: unregistered function {id}");
            self.functions_dirty = true;
        } else {
            log::debug!("worker {worker_id}: unregisterfunction {id} ignored: not its function");
        }
    }

    /// §2.5: a reconnecting worker retires its previous connection before replaying.
    fn handle_reattach(&mut self, worker_id: Uuid, r: protocol::Reattach) {
        let Ok(old) = Uuid::parse_str(&r.previous_worker_id) else {
            log::warn!("worker {worker_id}: reattach ignored: previous_worker_id is not a UUID");
            return;
        };
        if old == worker_id {
            return;
        }
        let Some(old_conn) = self.conns.get(&old) else {
            log::debug!("worker {worker_id}: reattach to {old}: already gone");
            return;
        };
        let token_ok = r.reattach_token.as_deref() == Some(old_conn.token.to_string().as_str());
        if !token_ok {
            log::warn!(
                "worker {worker_id}: reattach to {old} ignored: wrong or missing reattach token"
            );
            return;
        }
        log::info!("worker {worker_id}: reattached; retiring its previous connection {old}");
        old_conn.outbox.force(ToSession::Close(
            "replaced by a reattaching connection".into(),
        ));
        self.cleanup(old);
    }

    /// Removes a connection and everything it owns (§2.6). Idempotent.
    pub(crate) fn cleanup(&mut self, worker_id: Uuid) -> bool {
        let Some(conn) = self.conns.remove(&worker_id) else {
            return false;
        };
        for id in &conn.functions {
            if matches!(self.functions.get(id), Some(f) if f.owner == Owner::Session(worker_id)) {
                self.functions.remove(id);
            }
        }
        for engine_id in &conn.serving {
            self.complete_stopped(*engine_id);
        }
        for engine_id in &conn.calling {
            if let Some(p) = self.pending.get_mut(engine_id) {
                p.caller = Caller::Discard;
            }
        }
        self.cleanup_triggers(worker_id, &conn);
        self.functions_dirty |= !conn.functions.is_empty();
        if conn.state == ConnState::Live {
            log::info!("worker {worker_id}: disconnected; its functions, triggers and calls are cleaned up");
            self.fire_engine_trigger(
                "engine::workers-available",
                json!({"event": "worker_disconnected", "worker_id": worker_id.to_string()}),
            );
        }
        true
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

    /// The periodic tick: deadlines, and `engine::functions-available` when ids changed.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.expire_deadlines(ctx);
        if self.functions_dirty {
            self.functions_dirty = false;
            self.fire_functions_available();
        }
        self.run_deferred(ctx);
    }

    fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.len(),
            functions: self.functions.len(),
            triggers: self.triggers.len(),
            pending_invocations: self.pending.len(),
        }
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
        self.handle_frame(msg.worker_id, msg.msg, ctx);
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
    type Result = ResponseFuture<Result<Option<Value>, ErrorBody>>;
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

impl Handler<GetStats> for RegistryActor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats())
    }
}
