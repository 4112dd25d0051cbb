//! Connections as the router sees them: connect, the auth function (§7.2), the order in which
//! a connection's frames are handled, reattach (§2.5) and cleanup (§2.6).
//!
//! A connection's frames are handled strictly in arrival order. Its socket keeps them until the
//! auth function accepted it; while a registration hook runs, the connection is *held*: later
//! frames wait in its backlog and are handled when the hold ends (the hook's deadline bounds
//! the wait). Waiting frames stay counted by the connection's flow control, so a connection
//! that keeps sending while held is simply not read any more. Cleanup runs exactly once and
//! only removes what the connection still owns.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use super::calls::{CallRequest, Outcome, Waiter};
use super::{now_ms, Effect, Effects, Owner, Router};
use crate::config::ListenerConfig;
use crate::error::Code;
use crate::flow::Flow;
use crate::ids::IdSet;
use crate::messages::ToSession;
use crate::payload::Payload;
use crate::protocol::{self, ErrorBody, ErrorFrame};
use crate::rbac::{SessionPolicy, PREFIX_SEPARATOR};

/// Refusals (denied calls, refused registrations) one connection may earn per second; past
/// that it is not read for [`THROTTLE_MS`]: a flood of work the engine refuses must not take
/// the engine's time from everyone else.
const REFUSALS_PER_SECOND: u32 = 200;
const THROTTLE_MS: u64 = 500;
/// How often a connection waiting for its auth function to be registered asks again.
const AUTH_RETRY: Duration = Duration::from_millis(100);
/// Registration prefixes an auth function may not hand out (they would shadow the engine).
const RESERVED_PREFIXES: &[&str] = &["engine", "stream"];

/// What the upgrade request told us about a connection (the auth function's input).
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub ip: String,
    pub headers: serde_json::Map<String, Value>,
    pub query_params: serde_json::Map<String, Value>,
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
pub enum ConnState {
    Authenticating,
    Live,
}

/// One connected worker, as the router sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub listener: Arc<ListenerConfig>,
    pub peer: PeerInfo,
    pub flow: Arc<Flow>,
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
    /// Engine ids of calls this connection is waiting for, and the caller-side ids in flight.
    pub calling: IdSet,
    pub caller_ids: HashSet<Uuid>,
    /// Refusals in the current second: (second, count).
    pub refusals: (u64, u32),
}

impl Conn {
    /// Counts a refusal; past [`REFUSALS_PER_SECOND`] the connection is throttled.
    pub fn refused(&mut self) {
        let second = crate::outbox::mono_ms() / 1000;
        if self.refusals.0 != second {
            self.refusals = (second, 0);
        }
        self.refusals.1 += 1;
        if self.refusals.1 == REFUSALS_PER_SECOND {
            log::warn!(
                "a connection earned {REFUSALS_PER_SECOND} refusals within a second; not reading it for {THROTTLE_MS} ms"
            );
            self.flow.throttle(THROTTLE_MS);
        } else if self.refusals.1 > REFUSALS_PER_SECOND {
            self.flow.throttle(THROTTLE_MS);
        }
    }

    /// Is this connection on a listener with an `rbac` block (a public port)?
    pub fn public(&self) -> bool {
        self.listener.rbac.is_some()
    }
}

impl Router {
    pub(crate) fn connect(
        &mut self,
        worker_id: Uuid,
        listener: Arc<ListenerConfig>,
        peer: PeerInfo,
        flow: Arc<Flow>,
        telemetry: bool,
        out: &mut Effects,
    ) {
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
        let deadline = Instant::now() + Duration::from_millis(listener.auth_timeout_ms);
        self.conns.insert(
            worker_id,
            Conn {
                listener,
                peer,
                flow,
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
                refusals: (0, 0),
            },
        );
        match auth {
            None => self.accept(worker_id, None, out),
            Some(function_id) => {
                self.authenticate(worker_id, function_id, input.into(), deadline, out)
            }
        }
    }

    /// Calls the auth function; its answer arrives as a [`Waiter::Auth`] outcome.
    pub(crate) fn authenticate(
        &mut self,
        worker_id: Uuid,
        function_id: String,
        input: Payload,
        deadline: Instant,
        out: &mut Effects,
    ) {
        if !self.conns.contains_key(&worker_id) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let req = CallRequest::new(function_id.clone(), input.clone()).timeout(left);
        let waiter = Waiter::Auth {
            conn: worker_id,
            function_id,
            input,
            deadline,
        };
        self.call(req, waiter, out);
    }

    /// The auth function answered. While it is not registered yet (the worker serving it may
    /// still be starting, e.g. right after an engine restart), the connection waits for it
    /// until the auth deadline instead of being turned away at once.
    pub(crate) fn auth_answered(
        &mut self,
        worker_id: Uuid,
        function_id: String,
        input: Payload,
        deadline: Instant,
        outcome: Outcome,
        out: &mut Effects,
    ) {
        let missing = matches!(&outcome, Err(e) if Code::FunctionNotFound.is(e));
        if missing && Instant::now() + AUTH_RETRY < deadline {
            log::debug!(
                "worker {worker_id}: auth function {function_id} not registered yet; waiting"
            );
            let event = super::Event::AuthRetry {
                worker_id,
                function_id,
                input,
                deadline,
            };
            out.push(Effect::Later {
                after: AUTH_RETRY,
                event,
            });
            return;
        }
        let policy = match outcome {
            Ok(Some(v)) => SessionPolicy::from_auth_result(v.to_value()),
            Ok(None) => Err("auth function returned no result".to_string()),
            Err(e) if Code::InvocationTimeout.is(&e) => Err(format!(
                "auth function {function_id} did not answer in time"
            )),
            Err(e) => Err(e.message),
        };
        let policy = policy.and_then(|p| self.check_prefix(worker_id, &p).map(|()| p));
        match policy {
            Ok(policy) => self.accept(worker_id, Some(policy), out),
            Err(reason) => {
                log::warn!("worker {worker_id}: connection rejected by auth function {function_id}: {reason}");
                if self.conns.remove(&worker_id).is_some() {
                    out.push(Effect::Force {
                        to: worker_id,
                        msg: ToSession::Reject(ErrorBody::new(Code::AuthError, reason)),
                    });
                    out.push(Effect::Forget { conn: worker_id });
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

    /// Welcomes the connection and handles the frames it sent meanwhile.
    fn accept(&mut self, worker_id: Uuid, policy: Option<SessionPolicy>, out: &mut Effects) {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        if let Some(p) = policy {
            conn.policy = p;
        }
        conn.state = ConnState::Live;
        if !conn.telemetry {
            self.stats.worker_spawns += 1;
        }
        let msg = ToSession::Accepted {
            reattach_token: conn.token,
        };
        out.push(Effect::Send { to: worker_id, msg });
        if conn.telemetry {
            return;
        }
        log::info!("worker {worker_id}: connected");
        self.fire_workers_available("worker_connected", worker_id, out);
        self.drain_backlog(worker_id, out);
    }

    /// Handles one frame now, or keeps it for later while the connection is held.
    pub(crate) fn frame(
        &mut self,
        worker_id: Uuid,
        msg: protocol::Message,
        bytes: usize,
        out: &mut Effects,
    ) {
        let Some(conn) = self.conns.get_mut(&worker_id) else {
            return;
        };
        if conn.state == ConnState::Authenticating || conn.held {
            conn.backlog.push_back((msg, bytes));
        } else if !conn.backlog.is_empty() {
            conn.backlog.push_back((msg, bytes));
            self.drain_backlog(worker_id, out);
        } else {
            conn.flow.frame_done(bytes);
            self.dispatch(worker_id, msg, out);
        }
    }

    fn dispatch(&mut self, worker_id: Uuid, msg: protocol::Message, out: &mut Effects) {
        use protocol::Message as M;
        match msg {
            M::RegisterFunction(f) => self.register_function(worker_id, f, out),
            M::UnregisterFunction(f) => self.unregister_function(worker_id, &f.id),
            M::InvokeFunction(inv) => self.invoke(worker_id, inv, out),
            M::InvocationResult(res) => self.result(worker_id, res, out),
            M::RegisterTriggerType(t) => self.register_trigger_type(worker_id, t, out),
            M::RegisterTrigger(t) => self.register_trigger(worker_id, t, out),
            M::UnregisterTrigger(t) => self.unregister_trigger(worker_id, &t.id, out),
            M::TriggerRegistrationResult(r) => self.trigger_result(worker_id, r, out),
            M::RegisterService(s) => log::debug!("worker {worker_id}: service {} registered", s.id),
            M::Reattach(r) => self.reattach(worker_id, r, out),
            M::Ping | M::Pong | M::WorkerRegistered(_) | M::Error(_) => {}
        }
    }

    /// Handles waiting frames until the backlog is empty or the connection is held again.
    pub(crate) fn drain_backlog(&mut self, worker_id: Uuid, out: &mut Effects) {
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
            conn.flow.frame_done(bytes);
            self.dispatch(worker_id, msg, out);
        }
    }

    /// Tells a connection why something it asked for was refused (and logs it, within limits).
    pub(crate) fn refuse(&mut self, worker_id: Uuid, what: &str, reason: &str, out: &mut Effects) {
        self.refuse_with(worker_id, Code::Forbidden, what, reason, out);
    }

    /// [`Router::refuse`] with a specific error code.
    pub(crate) fn refuse_with(
        &mut self,
        worker_id: Uuid,
        code: Code,
        what: &str,
        reason: &str,
        out: &mut Effects,
    ) {
        self.stats.denied("registration");
        if self.denials.allow() {
            log::warn!("worker {worker_id}: {what} denied: {reason}");
        }
        if let Some(c) = self.conns.get_mut(&worker_id) {
            c.refused();
        }
        let error = ErrorBody::new(code, format!("{what} denied: {reason}"));
        self.send_frame(
            worker_id,
            protocol::Message::Error(ErrorFrame { error }),
            out,
        );
    }

    /// §2.5: a reconnecting worker retires its previous connection before replaying. The token
    /// only works on the listener that issued it: a session of a public listener holding a
    /// trusted worker's token must not be able to evict it.
    fn reattach(&mut self, worker_id: Uuid, r: protocol::Reattach, out: &mut Effects) {
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
        let what = format!("reattach to {old}");
        let token_ok = r.reattach_token.as_deref() == Some(old_conn.token.to_string().as_str());
        if !token_ok {
            let reason = "wrong or missing reattach token";
            return self.refuse_with(worker_id, Code::ReattachRejected, &what, reason, out);
        }
        let same_listener = self
            .conns
            .get(&worker_id)
            .is_some_and(|c| Arc::ptr_eq(&c.listener, &old_conn.listener));
        if !same_listener {
            let reason = "the token was issued on another listener";
            return self.refuse_with(worker_id, Code::ReattachRejected, &what, reason, out);
        }
        log::info!("worker {worker_id}: reattached; retiring its previous connection {old}");
        out.push(Effect::Force {
            to: old,
            msg: ToSession::Close("replaced by a reattaching connection".into()),
        });
        self.cleanup(old, out);
    }

    /// Removes a connection and everything it owns (§2.6). Idempotent.
    pub(crate) fn cleanup(&mut self, worker_id: Uuid, out: &mut Effects) -> bool {
        let Some(conn) = self.conns.remove(&worker_id) else {
            return false;
        };
        out.push(Effect::Forget { conn: worker_id });
        for id in &conn.functions {
            if matches!(self.functions.get(id), Some(f) if f.owner == Owner::Session(worker_id)) {
                self.functions.remove(id);
                self.custom_streams.remove(id);
            }
        }
        for engine_id in &conn.serving {
            self.complete_stopped(*engine_id, out);
        }
        for engine_id in &conn.calling {
            if let Some(p) = self.pending.get_mut(engine_id) {
                p.waiter = Waiter::Nobody;
                p.origin = None;
            }
        }
        self.cleanup_triggers(worker_id, &conn, out);
        self.functions_dirty |= !conn.functions.is_empty();
        if conn.state == ConnState::Live && !conn.telemetry {
            self.stats.worker_deaths += 1;
            log::info!("worker {worker_id}: disconnected; its functions, triggers and calls are cleaned up");
            let payload =
                json!({"event": "worker_disconnected", "worker_id": worker_id.to_string()});
            self.fire_engine_trigger("engine::workers-available", payload, out);
        }
        true
    }
}
