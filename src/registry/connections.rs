//! Connections as the registry sees them: connect, the auth function (§7.2), the order in which
//! a connection's frames are handled, reattach (§2.5) and cleanup (§2.6).
//!
//! A connection's frames are handled strictly in arrival order. Its session keeps them until the
//! auth function accepted it; while a registration hook runs, the connection is *held*: later
//! frames wait in its backlog and are handled when the hold ends (the hook's deadline bounds
//! the wait). Waiting frames stay counted by the connection's flow control, so a connection
//! that keeps sending while held is simply not read any more. Cleanup runs exactly once and
//! only removes what the connection still owns.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

use super::invoke::{Caller, Outcome};
use super::{now_ms, CallRequest, Connect, Owner, RegistryActor};
use crate::config::ListenerConfig;
use crate::ids::IdSet;
use crate::outbox::Outbox;
use crate::protocol::{self, ErrorBody, ErrorFrame};
use crate::rbac::{SessionPolicy, PREFIX_SEPARATOR};
use crate::session::ToSession;

/// How often a connection waiting for its auth function to be registered checks again.
const AUTH_RETRY: Duration = Duration::from_millis(100);
/// Registration prefixes an auth function may not hand out (they would shadow the engine).
const RESERVED_PREFIXES: &[&str] = &["engine", "stream"];

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
    pub peer: super::PeerInfo,
    pub outbox: Outbox<ToSession>,
    pub token: Uuid,
    pub state: ConnState,
    /// A registration hook is running: later frames wait in `backlog`.
    pub held: bool,
    pub policy: SessionPolicy,
    /// Frames waiting while the connection is held, with their sizes.
    pub backlog: VecDeque<(protocol::Message, usize)>,
    /// A telemetry socket: authenticated, never a worker.
    pub telemetry: bool,
    pub connected_at_ms: u64,
    pub meta: WorkerMeta,
    /// Function ids registered by this connection (it may since have lost some to others).
    pub functions: HashSet<String>,
    pub triggers: HashSet<String>,
    pub trigger_types: HashSet<String>,
    /// Engine ids of calls this connection is serving.
    pub serving: IdSet,
    /// Engine ids of calls this connection made, and the caller-side ids in flight.
    pub calling: IdSet,
    pub caller_ids: HashSet<Uuid>,
}

impl Conn {
    /// Is this connection on a listener with an `rbac` block (a public port)?
    pub fn public(&self) -> bool {
        self.listener.rbac.is_some()
    }
}

impl RegistryActor {
    pub(crate) fn handle_connect(&mut self, msg: Connect, ctx: &mut Context<Self>) {
        let Connect {
            worker_id,
            session,
            listener,
            peer,
            flow,
            telemetry,
        } = msg;
        let auth = listener
            .rbac
            .as_ref()
            .and_then(|r| r.auth_function_id.clone());
        let policy = if auth.is_some() {
            SessionPolicy::default()
        } else {
            SessionPolicy::unauthenticated()
        };
        let input = json!({"headers": peer.headers, "query_params": peer.query_params, "ip_address": peer.ip});
        let auth_timeout = Duration::from_millis(listener.auth_timeout_ms);
        let stall_ms = listener.write_stall_timeout_ms;
        let hard_cap = listener.max_outbound_bytes.saturating_mul(4);
        self.conns.insert(
            worker_id,
            Conn {
                listener,
                peer,
                outbox: Outbox::new(session, flow, stall_ms, hard_cap),
                token: Uuid::new_v4(),
                state: ConnState::Authenticating,
                held: false,
                policy,
                backlog: VecDeque::new(),
                telemetry,
                connected_at_ms: now_ms(),
                meta: WorkerMeta::default(),
                functions: HashSet::new(),
                triggers: HashSet::new(),
                trigger_types: HashSet::new(),
                serving: IdSet::default(),
                calling: IdSet::default(),
                caller_ids: HashSet::new(),
            },
        );
        let Some(function_id) = auth else {
            return self.accept(worker_id, None, ctx);
        };
        self.authenticate(
            worker_id,
            function_id,
            input,
            Instant::now() + auth_timeout,
            ctx,
        );
    }

    /// Calls the auth function. While it is not registered yet (the worker serving it may still
    /// be starting, e.g. right after an engine restart), the connection waits for it until the
    /// auth deadline instead of being turned away at once.
    fn authenticate(
        &mut self,
        worker_id: Uuid,
        function_id: String,
        input: Value,
        deadline: Instant,
        ctx: &mut Context<Self>,
    ) {
        if !self.conns.contains_key(&worker_id) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let req = CallRequest::new(function_id.clone(), input.clone()).timeout(left);
        let then = move |act: &mut Self, ctx: &mut Context<Self>, outcome: Outcome| {
            let missing = matches!(&outcome, Err(e) if e.code == "function_not_found");
            if missing && Instant::now() + AUTH_RETRY < deadline {
                log::debug!(
                    "worker {worker_id}: auth function {function_id} not registered yet; waiting"
                );
                ctx.run_later(AUTH_RETRY, move |act, ctx| {
                    act.authenticate(worker_id, function_id, input, deadline, ctx)
                });
                return;
            }
            act.finish_auth(worker_id, &function_id, outcome, ctx)
        };
        self.call(req, Caller::Then(Box::new(then)), ctx);
    }

    fn finish_auth(
        &mut self,
        worker_id: Uuid,
        function_id: &str,
        outcome: Outcome,
        ctx: &mut Context<Self>,
    ) {
        let policy = match outcome {
            Ok(Some(v)) => SessionPolicy::from_auth_result(v.to_value()),
            Ok(None) => Err("auth function returned no result".to_string()),
            Err(e) if e.code == "invocation_timeout" => Err(format!(
                "auth function {function_id} did not answer in time"
            )),
            Err(e) => Err(e.message),
        };
        let policy = policy.and_then(|p| self.check_prefix(worker_id, &p).map(|()| p));
        match policy {
            Ok(policy) => self.accept(worker_id, Some(policy), ctx),
            Err(reason) => {
                log::warn!("worker {worker_id}: connection rejected by auth function {function_id}: {reason}");
                if let Some(conn) = self.conns.remove(&worker_id) {
                    conn.outbox
                        .force(ToSession::Reject(ErrorBody::new("AUTH_ERROR", reason)));
                }
            }
        }
    }

    /// A registration prefix must be well-formed, not reserved, and not another live session's.
    fn check_prefix(&self, worker_id: Uuid, policy: &SessionPolicy) -> Result<(), String> {
        let Some(p) = policy.function_registration_prefix.as_deref() else {
            return Ok(());
        };
        let malformed = p.is_empty()
            || p.contains(PREFIX_SEPARATOR)
            || p.contains('*')
            || p.chars().any(|c| c.is_control() || c.is_whitespace());
        if malformed {
            return Err(format!(
                "function_registration_prefix {p:?} is malformed (empty, '::', '*' or whitespace)"
            ));
        }
        if RESERVED_PREFIXES.contains(&p) {
            return Err(format!(
                "function_registration_prefix {p:?} is reserved for the engine"
            ));
        }
        let taken = self.conns.iter().any(|(id, c)| {
            *id != worker_id && c.policy.function_registration_prefix.as_deref() == Some(p)
        });
        if taken {
            return Err(format!(
                "function_registration_prefix {p:?} is already used by another session"
            ));
        }
        Ok(())
    }

    /// Welcomes the connection and handles the frames it sent while being authenticated.
    fn accept(&mut self, worker_id: Uuid, policy: Option<SessionPolicy>, ctx: &mut Context<Self>) {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        if let Some(p) = policy {
            conn.policy = p;
        }
        conn.state = ConnState::Live;
        let token = conn.token;
        if conn.telemetry {
            self.send_to(
                worker_id,
                ToSession::Accepted {
                    reattach_token: token,
                },
            );
            return;
        }
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
        self.drain_backlog(worker_id, ctx);
    }

    /// Handles one frame now, or keeps it for later while the connection is held.
    pub(crate) fn handle_frame(
        &mut self,
        worker_id: Uuid,
        msg: protocol::Message,
        bytes: usize,
        ctx: &mut Context<Self>,
    ) {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        if conn.state == ConnState::Authenticating || conn.held {
            conn.backlog.push_back((msg, bytes));
        } else if !conn.backlog.is_empty() {
            conn.backlog.push_back((msg, bytes));
            self.drain_backlog(worker_id, ctx);
        } else {
            conn.outbox.flow().frame_done(bytes);
            self.dispatch(worker_id, msg, ctx);
        }
    }

    fn dispatch(&mut self, worker_id: Uuid, msg: protocol::Message, ctx: &mut Context<Self>) {
        use protocol::Message as M;
        match msg {
            M::RegisterFunction(f) => self.handle_register_function(worker_id, f, ctx),
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

    /// Handles waiting frames until the backlog is empty or the connection is held again.
    pub(crate) fn drain_backlog(&mut self, worker_id: Uuid, ctx: &mut Context<Self>) {
        loop {
            let Some(conn) = self.conns.get_mut(&worker_id) else {
                return;
            };
            if conn.held || conn.state != ConnState::Live {
                return;
            }
            let Some((msg, bytes)) = conn.backlog.pop_front() else {
                return;
            };
            conn.outbox.flow().frame_done(bytes);
            self.dispatch(worker_id, msg, ctx);
        }
    }

    /// Tells a connection why something it asked for was refused (and logs it).
    pub(crate) fn refuse(&mut self, worker_id: Uuid, what: &str, reason: &str) {
        self.refuse_with(worker_id, "FORBIDDEN", what, reason);
    }

    /// [`refuse`](Self::refuse) with a specific error code.
    pub(crate) fn refuse_with(&mut self, worker_id: Uuid, code: &str, what: &str, reason: &str) {
        if self.denials.allow() {
            log::warn!("worker {worker_id}: {what} denied: {reason}");
        }
        let body = ErrorBody::new(code, format!("{what} denied: {reason}"));
        self.send_frame(
            worker_id,
            protocol::Message::Error(ErrorFrame { error: body }),
        );
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
        // A token only works on the listener it was issued on: a session of a public listener
        // holding a trusted worker's token must not be able to evict it.
        let same_listener = self
            .conns
            .get(&worker_id)
            .is_some_and(|c| Arc::ptr_eq(&c.listener, &old_conn.listener));
        if token_ok && !same_listener {
            let what = format!("reattach to {old}");
            return self.refuse_with(
                worker_id,
                "reattach_rejected",
                &what,
                "the token was issued on another listener",
            );
        }
        if !token_ok {
            let what = format!("reattach to {old}");
            return self.refuse_with(
                worker_id,
                "reattach_rejected",
                &what,
                "wrong or missing reattach token",
            );
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
        if conn.state == ConnState::Live && !conn.telemetry {
            log::info!("worker {worker_id}: disconnected; its functions, triggers and calls are cleaned up");
            self.fire_engine_trigger(
                "engine::workers-available",
                json!({"event": "worker_disconnected", "worker_id": worker_id.to_string()}),
            );
        }
        true
    }
}
