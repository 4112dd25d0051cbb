//! Calls: the RBAC check, lookup, dispatch to the owner, the pending table with its
//! [`Waiter`]s, deadlines, and delivery of each outcome to whoever waits for it
//! (`PROTOCOL.md` §4.2, `RELIABILITY.md` F1–F4).
//!
//! Every call gets a fresh engine id on the callee leg, so callers can never collide with each
//! other and only the connection a call was sent to can answer it. The pending entry is
//! recorded before the frame leaves, so a fast answer is never lost. A call that nobody answers
//! fails at its deadline (`invocation_timeout`); a callee that disconnects fails its calls at
//! once (`invocation_stopped`); a caller that disconnects has its answers discarded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use super::detours::enqueued;
use super::tracing::SpanCtx;
use super::{Effect, Effects, Owner, Router, DEFAULT_INTERNAL_TIMEOUT};
use crate::error::EngineError;
use crate::messages::BuiltinCall;
use crate::payload::Payload;
use crate::protocol::{
    self, Action, ErrorBody, InvocationResult, InvokeFunction, RegisterFunction, RegisterTrigger,
    RegisterTriggerType,
};
use crate::rbac::{self, Decision};

/// The result of a call as the router sees it.
pub type Outcome = Result<Option<Payload>, ErrorBody>;

/// A registration waiting for its hook's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum HeldRegistration {
    Function(RegisterFunction),
    Trigger(RegisterTrigger),
    TriggerType(RegisterTriggerType),
}

/// Who gets the outcome of a call in flight.
#[derive(Debug, Clone, PartialEq)]
pub enum Waiter {
    /// A connection, under its own invocation id (also for its calls through middleware).
    Conn {
        conn: Uuid,
        invocation_id: Uuid,
        function_id: String,
        traceparent: Option<String>,
        baggage: Option<String>,
    },
    /// Nobody (void calls, trigger fires, callers that went away).
    Nobody,
    /// An `enqueue` action (§4.4): the queue's answer becomes `{messageReceiptId}` or an
    /// `enqueue_error` for `inner`.
    Enqueued {
        inner: Box<Waiter>,
        queue: String,
        target: String,
        receipt: String,
    },
    /// A module's internal call, answered with [`Effect::Reply`].
    Module { token: u64 },
    /// A connection's auth function; the answer admits or refuses the connection.
    Auth {
        conn: Uuid,
        function_id: String,
        input: Payload,
        deadline: Instant,
    },
    /// A registration hook; the connection is held until it answers.
    Hook {
        conn: Uuid,
        hook: String,
        what: String,
        request: HeldRegistration,
    },
}

impl Waiter {
    /// The connection waiting, if it is one (directly or behind an enqueue).
    fn conn(&self) -> Option<Uuid> {
        match self {
            Waiter::Conn { conn, .. } => Some(*conn),
            Waiter::Enqueued { inner, .. } => inner.conn(),
            _ => None,
        }
    }
}

/// Who serves a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callee {
    Session(Uuid),
    Module,
}

/// A call in flight, keyed by its engine id.
#[derive(Debug)]
pub(crate) struct Pending {
    pub waiter: Waiter,
    pub callee: Callee,
    pub function_id: String,
    pub timeout_ms: u64,
    /// The connection whose frame started the call: it holds one of its in-flight slots.
    pub origin: Option<Uuid>,
    /// The deadline's tick (to forget it when the call finishes first).
    pub tick: u64,
    pub started: Instant,
    /// The engine's span of this call, when it is traced.
    pub span: Option<SpanCtx>,
}

/// A call to route.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub function_id: String,
    pub data: Payload,
    pub metadata: Option<Value>,
    pub traceparent: Option<String>,
    pub baggage: Option<String>,
    pub timeout: Duration,
    /// The connection that made the call (`None` for internal calls).
    pub from: Option<Uuid>,
    /// The connection charged for the call while it is in flight (flow control): the caller,
    /// also for its calls that go through middleware.
    pub origin: Option<Uuid>,
    /// Written into an object `data` as `_caller_worker_id` for a worker callee (§4.3).
    pub caller: Option<Arc<str>>,
    /// Only this engine's functions: a call another engine forwarded here is never forwarded
    /// on (`iii-cluster`).
    pub local_only: bool,
}

impl CallRequest {
    pub fn new(function_id: impl Into<String>, data: impl Into<Payload>) -> Self {
        CallRequest {
            function_id: function_id.into(),
            data: data.into(),
            metadata: None,
            traceparent: None,
            baggage: None,
            timeout: DEFAULT_INTERNAL_TIMEOUT,
            from: None,
            origin: None,
            caller: None,
            local_only: false,
        }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Router {
    /// An `invokefunction` from a connection: RBAC (§7.3), then the listener's middleware
    /// (§7.6) or the function itself.
    pub(crate) fn invoke(&mut self, worker_id: Uuid, inv: InvokeFunction, out: &mut Effects) {
        let Some(conn) = self.conns.get(&worker_id) else {
            return;
        };
        let expose = conn
            .listener
            .rbac
            .as_ref()
            .map(|r| r.expose_functions.as_slice());
        let meta = self.exposure_metadata(&inv.function_id);
        if let Decision::Deny { rule, hint } =
            rbac::decide_invoke(&conn.policy, expose, &inv.function_id, meta)
        {
            self.stats.denied(rule.label());
            if self.denials.allow() {
                log::warn!(
                    "worker {worker_id}: call to {} denied by rule {rule:?} ({hint})",
                    inv.function_id
                );
            }
            if let Some(c) = self.conns.get_mut(&worker_id) {
                c.refused();
            }
            let err = EngineError::Forbidden {
                function_id: inv.function_id.clone(),
                hint: hint.to_string(),
            };
            let frame = InvocationResult {
                invocation_id: inv.invocation_id.unwrap_or_else(Uuid::new_v4),
                function_id: inv.function_id,
                result: None,
                error: Some(err.to_body()),
                traceparent: inv.traceparent,
                baggage: inv.baggage,
            };
            return self.send_frame(worker_id, protocol::Message::InvocationResult(frame), out);
        }
        let mut timeout_ms = inv
            .timeout_ms
            .unwrap_or(conn.listener.invocation_timeout_ms);
        let trusted = !conn.public();
        if conn.public() {
            timeout_ms = timeout_ms.min(conn.listener.max_invocation_timeout_ms);
        }
        let timeout = Duration::from_millis(timeout_ms);
        let middleware = conn
            .listener
            .middleware_function_id
            .clone()
            .filter(|_| !inv.function_id.starts_with("engine::"));
        if let Some(mw) = middleware {
            let context = conn.policy.context.clone();
            return self.via_middleware(worker_id, mw, context, inv, timeout, out);
        }
        if let Some(Action::Enqueue { queue }) = &inv.action {
            let queue = queue.clone();
            return self.enqueue(worker_id, queue, inv, timeout, out);
        }
        let void = matches!(inv.action, Some(Action::Void));
        let waiter = match inv.invocation_id {
            Some(id) if !void => match self.conn_waiter(worker_id, id, &inv, out) {
                Some(w) => w,
                None => return,
            },
            _ => Waiter::Nobody,
        };
        let (caller, metadata, local_only) = match inv.metadata {
            Some(m) if trusted => super::cluster::hop(m, inv.caller),
            m => (inv.caller, m, false),
        };
        let req = CallRequest {
            function_id: inv.function_id,
            data: inv.data,
            metadata,
            traceparent: inv.traceparent,
            baggage: inv.baggage,
            timeout,
            from: Some(worker_id),
            origin: Some(worker_id),
            caller,
            local_only,
        };
        self.call(req, waiter, out);
    }

    /// The waiter for a call a connection makes; a duplicate id in flight is refused
    /// (`duplicate_invocation_id`) and leaves the original call alone.
    pub(super) fn conn_waiter(
        &mut self,
        worker_id: Uuid,
        id: Uuid,
        inv: &InvokeFunction,
        out: &mut Effects,
    ) -> Option<Waiter> {
        let conn = self.conns.get_mut(&worker_id)?;
        if !conn.caller_ids.insert(id) {
            let err = EngineError::DuplicateInvocationId(id.to_string());
            let frame = protocol::Message::error_result(id, &inv.function_id, err.to_body());
            self.send_frame(worker_id, frame, out);
            return None;
        }
        Some(Waiter::Conn {
            conn: worker_id,
            invocation_id: id,
            function_id: inv.function_id.clone(),
            traceparent: inv.traceparent.clone(),
            baggage: inv.baggage.clone(),
        })
    }

    /// A trigger fires: the bound function is called and nobody waits for the result.
    pub(crate) fn fire(
        &mut self,
        function_id: String,
        data: Payload,
        metadata: Option<Value>,
        out: &mut Effects,
    ) {
        self.stats.fired(&function_id);
        let mut req = CallRequest::new(function_id, data);
        req.metadata = metadata;
        self.call(req, Waiter::Nobody, out);
    }

    /// The custom stream function that serves this `stream::<op>` call instead of the store,
    /// if a worker registered one for the call's `stream_name`.
    fn stream_delegate(&self, req: &CallRequest) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Named {
            stream_name: String,
        }
        if self.custom_streams.is_empty() {
            return None;
        }
        let op = req.function_id.strip_prefix("stream::")?;
        if !super::CUSTOM_STREAM_OPS.contains(&op) {
            return None;
        }
        let name = req.data.parse::<Named>().ok()?.stream_name;
        let id = format!("stream::{op}({name})");
        self.custom_streams.contains(&id).then_some(id)
    }

    /// Routes a call to its owner and parks it until the answer, the deadline or a disconnect.
    pub(crate) fn call(&mut self, mut req: CallRequest, waiter: Waiter, out: &mut Effects) {
        let Some(entry) = self.functions.get(&req.function_id) else {
            if let Some(module) = self.remote_route(&req) {
                // Registered on another engine of the cluster: iii-cluster forwards it.
                self.stats.started(&req.function_id);
                let engine_id = crate::ids::next();
                self.park(engine_id, waiter, Callee::Module, &req, None);
                let call = BuiltinCall {
                    engine_id,
                    function_id: req.function_id,
                    data: req.data,
                    caller: req.caller,
                    delegate: None,
                    invocation: None,
                    timeout: req.timeout,
                };
                return out.push(Effect::ModuleCall { module, call });
            }
            let err = EngineError::FunctionNotFound(req.function_id.clone()).to_body();
            let unregistered = crate::metrics::UNREGISTERED;
            self.stats.started(unregistered);
            self.stats
                .finished(unregistered, Duration::ZERO, Some(&err.code));
            return self.deliver(waiter, Err(err), out);
        };
        self.stats.started(&req.function_id);
        let span = self
            .tracing
            .as_mut()
            .and_then(|t| t.start(req.traceparent.as_deref()));
        if let Some(s) = &span {
            req.traceparent = Some(s.traceparent());
        }
        let owner = entry.owner;
        let invocation = entry.invocation.clone();
        let engine_id = crate::ids::next();
        if let Some(invocation) = invocation {
            // An HTTP-invoked function: the request is made by iii-http-functions.
            if let Some(module) = self.modules.iter().position(|m| *m == "iii-http-functions") {
                self.park(engine_id, waiter, Callee::Module, &req, span.clone());
                let call = BuiltinCall {
                    engine_id,
                    function_id: req.function_id,
                    data: req.data,
                    caller: req.caller,
                    delegate: None,
                    invocation: Some(invocation),
                    timeout: req.timeout,
                };
                out.push(Effect::ModuleCall { module, call });
                return;
            }
        }
        match owner {
            Owner::Engine => {
                let started = Instant::now();
                let outcome = self.call_engine_function(&req.function_id, &req.data, req.from, out);
                let code = outcome.as_ref().err().map(|e| e.code.as_str());
                self.stats
                    .finished(&req.function_id, started.elapsed(), code);
                self.deliver(waiter, outcome, out);
            }
            Owner::Module(module) => {
                self.park(engine_id, waiter, Callee::Module, &req, span.clone());
                let delegate = self.stream_delegate(&req);
                let call = BuiltinCall {
                    engine_id,
                    function_id: req.function_id,
                    data: req.data,
                    caller: req.caller,
                    delegate,
                    invocation: None,
                    timeout: req.timeout,
                };
                out.push(Effect::ModuleCall { module, call });
            }
            Owner::Session(callee) => {
                self.park(engine_id, waiter, Callee::Session(callee), &req, span);
                let Some(c) = self.conns.get_mut(&callee) else {
                    return;
                };
                c.serving.insert(engine_id);
                let function_id = c.policy.unprefixed(&req.function_id).to_string();
                let frame = protocol::Message::InvokeFunction(InvokeFunction {
                    invocation_id: Some(engine_id),
                    function_id,
                    data: req.data,
                    traceparent: req.traceparent,
                    baggage: req.baggage,
                    action: None,
                    metadata: req.metadata,
                    timeout_ms: None,
                    caller: req.caller,
                });
                self.send_frame(callee, frame, out);
            }
        }
    }

    fn park(
        &mut self,
        engine_id: Uuid,
        waiter: Waiter,
        callee: Callee,
        req: &CallRequest,
        span: Option<SpanCtx>,
    ) {
        let started = Instant::now();
        let tick = self.deadlines.add(started + req.timeout, engine_id);
        if let Some(conn) = waiter.conn() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.calling.insert(engine_id);
            }
        }
        if let Some(c) = req.origin.and_then(|w| self.conns.get(&w)) {
            c.flow.call_started();
        }
        self.pending.insert(
            engine_id,
            Pending {
                waiter,
                callee,
                function_id: req.function_id.clone(),
                timeout_ms: req.timeout.as_millis() as u64,
                origin: req.origin,
                tick,
                started,
                span,
            },
        );
    }

    /// An `invocationresult` from a connection: accepted only from the callee of that call.
    pub(crate) fn result(&mut self, worker_id: Uuid, res: InvocationResult, out: &mut Effects) {
        let engine_id = res.invocation_id;
        match self.pending.get(&engine_id) {
            Some(p) if p.callee == Callee::Session(worker_id) => {}
            Some(_) => {
                log::warn!("worker {worker_id}: ignored a result for invocation {engine_id}: it was not sent to this worker");
                return;
            }
            None => {
                log::debug!(
                    "worker {worker_id}: late or unknown result for invocation {engine_id} dropped"
                );
                return;
            }
        }
        let outcome = match res.error {
            Some(e) => Err(e),
            None => Ok(res.result),
        };
        self.complete(engine_id, outcome, out);
    }

    /// Finishes a pending call and delivers its outcome.
    pub(crate) fn complete(&mut self, engine_id: Uuid, outcome: Outcome, out: &mut Effects) {
        let Some(p) = self.finish(engine_id) else {
            return;
        };
        let code = outcome.as_ref().err().map(|e| e.code.as_str());
        self.stats
            .finished(&p.function_id, p.started.elapsed(), code);
        if let (Some(t), Some(s)) = (&mut self.tracing, p.span) {
            t.end(s, &p.function_id, outcome.as_ref().err());
        }
        self.deliver(p.waiter, outcome, out);
    }

    /// Fails a call whose callee went away.
    pub(crate) fn complete_stopped(&mut self, engine_id: Uuid, out: &mut Effects) {
        self.complete(
            engine_id,
            Err(EngineError::InvocationStopped.to_body()),
            out,
        );
    }

    /// Takes a call out of every table that knows it.
    fn finish(&mut self, engine_id: Uuid) -> Option<Pending> {
        let p = self.pending.remove(&engine_id)?;
        self.deadlines.remove(p.tick, engine_id);
        if let Some(c) = p.origin.and_then(|w| self.conns.get(&w)) {
            c.flow.call_finished();
        }
        if let Callee::Session(callee) = p.callee {
            if let Some(c) = self.conns.get_mut(&callee) {
                c.serving.remove(&engine_id);
            }
        }
        if let Some(conn) = p.waiter.conn() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.calling.remove(&engine_id);
            }
        }
        Some(p)
    }

    /// Hands an outcome to whoever waits for it.
    fn deliver(&mut self, waiter: Waiter, outcome: Outcome, out: &mut Effects) {
        match waiter {
            Waiter::Conn {
                conn,
                invocation_id,
                function_id,
                traceparent,
                baggage,
            } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                c.caller_ids.remove(&invocation_id);
                let (result, error) = match outcome {
                    Ok(r) => (r.filter(|v| !v.is_null()), None),
                    Err(e) => (None, Some(e)),
                };
                let frame = protocol::Message::InvocationResult(InvocationResult {
                    invocation_id,
                    function_id,
                    result,
                    error,
                    traceparent,
                    baggage,
                });
                self.send_frame(conn, frame, out);
            }
            Waiter::Nobody => {
                if let Err(e) = outcome {
                    log::debug!("discarded call failed: {}: {}", e.code, e.message);
                }
            }
            Waiter::Module { token } => out.push(Effect::Reply { token, outcome }),
            Waiter::Enqueued {
                inner,
                queue,
                target,
                receipt,
            } => {
                let outcome = enqueued(outcome, &queue, &target, receipt);
                self.deliver(*inner, outcome, out);
            }
            Waiter::Auth {
                conn,
                function_id,
                input,
                deadline,
            } => self.auth_answered(conn, function_id, input, deadline, outcome, out),
            Waiter::Hook {
                conn,
                hook,
                what,
                request,
            } => self.hook_answered(conn, &hook, &what, request, outcome, out),
        }
    }

    /// Fails every call past its deadline.
    pub(crate) fn expire_deadlines(&mut self, now: Instant, out: &mut Effects) {
        for engine_id in self.deadlines.due(now) {
            let Some(p) = self.pending.get(&engine_id) else {
                continue;
            };
            let err = EngineError::InvocationTimeout {
                function_id: p.function_id.clone(),
                timeout_ms: p.timeout_ms,
            };
            log::warn!("invocation {engine_id}: {err}");
            self.complete(engine_id, Err(err.to_body()), out);
        }
    }
}
