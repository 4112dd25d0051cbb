//! Invocation routing: RBAC check, lookup, dispatch to the owner, the pending table, deadlines,
//! and delivery of the result to whoever asked (`PROTOCOL.md` §4.2, `RELIABILITY.md` F1–F4).
//!
//! Every call gets a fresh engine id on the callee leg, so callers can never collide with each
//! other and only the connection a call was sent to can answer it. The pending entry is
//! recorded before the frame leaves, so a fast answer is never lost. A call that nobody answers
//! fails at its deadline (`invocation_timeout`); a callee that disconnects fails its calls at
//! once (`invocation_stopped`); a caller that disconnects has its answers discarded.

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{BuiltinCall, Deferred, Owner, RegistryActor, DEFAULT_INTERNAL_TIMEOUT};
use crate::error::EngineError;
use crate::payload::Payload;
use crate::protocol::{self, Action, ErrorBody, InvocationResult, InvokeFunction};
use crate::rbac::{self, Decision};

/// The result of a call as the registry sees it.
pub(crate) type Outcome = Result<Option<Payload>, ErrorBody>;

/// A continuation run on the registry when an internal call finishes.
pub(crate) type Then = Box<dyn FnOnce(&mut RegistryActor, &mut Context<RegistryActor>, Outcome)>;

/// Who is waiting for a call.
pub(crate) enum Caller {
    /// A connection, under its own invocation id and function id.
    Session {
        worker_id: Uuid,
        invocation_id: Uuid,
        function_id: String,
        traceparent: Option<String>,
        baggage: Option<String>,
    },
    /// Nobody (void calls, trigger fires, callers that went away).
    Discard,
    /// The engine itself.
    Then(Then),
}

/// Who serves a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Callee {
    Session(Uuid),
    Builtin,
}

/// A call in flight, keyed by its engine id.
pub(crate) struct Pending {
    pub caller: Caller,
    pub callee: Callee,
    pub function_id: String,
    pub timeout_ms: u64,
    /// The connection whose frame started the call: it holds one of its in-flight slots.
    pub origin: Option<Uuid>,
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
    /// The connection charged for the call while it is in flight (flow control); the caller,
    /// also for its calls that go through middleware.
    pub origin: Option<Uuid>,
    /// Written into an object `data` as `_caller_worker_id` for a worker callee (§4.3).
    pub caller: Option<std::sync::Arc<str>>,
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
        }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl RegistryActor {
    /// An `invokefunction` from a connection: RBAC (§7.3), then the listener's middleware
    /// (§7.6) or the function itself.
    pub(crate) fn handle_invoke(
        &mut self,
        worker_id: Uuid,
        inv: InvokeFunction,
        ctx: &mut Context<Self>,
    ) {
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
            if self.denials.allow() {
                log::warn!(
                    "worker {worker_id}: call to {} denied by rule {rule:?} ({hint})",
                    inv.function_id
                );
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
            self.send_frame(worker_id, protocol::Message::InvocationResult(frame));
            return;
        }
        let mut timeout_ms = inv.timeout_ms.unwrap_or(conn.listener.invocation_timeout_ms);
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
            return self.via_middleware(worker_id, mw, context, inv, timeout, ctx);
        }
        if let Some(Action::Enqueue { queue }) = &inv.action {
            let body = ErrorBody::new(
                "enqueue_error",
                format!(
                    "No queue provider is installed. Cannot enqueue {} on queue {queue:?}.",
                    inv.function_id
                ),
            );
            if let Some(id) = inv.invocation_id {
                self.send_frame(
                    worker_id,
                    protocol::Message::error_result(id, &inv.function_id, body),
                );
            }
            return;
        }
        let void = matches!(inv.action, Some(Action::Void));
        let caller = match inv.invocation_id {
            Some(id) if !void => match self.session_caller(worker_id, id, &inv) {
                Some(c) => c,
                None => return,
            },
            _ => Caller::Discard,
        };
        let req = CallRequest {
            function_id: inv.function_id,
            data: inv.data,
            metadata: inv.metadata,
            traceparent: inv.traceparent,
            baggage: inv.baggage,
            timeout,
            from: Some(worker_id),
            origin: Some(worker_id),
            caller: inv.caller,
        };
        self.call(req, caller, ctx);
    }

    /// The caller record for a call a connection is waiting on; a duplicate id in flight is
    /// refused (`duplicate_invocation_id`) and leaves the original call alone.
    fn session_caller(
        &mut self,
        worker_id: Uuid,
        id: Uuid,
        inv: &InvokeFunction,
    ) -> Option<Caller> {
        let conn = self.conns.get_mut(&worker_id)?;
        if !conn.caller_ids.insert(id) {
            let err = EngineError::DuplicateInvocationId(id.to_string());
            self.send_frame(
                worker_id,
                protocol::Message::error_result(id, &inv.function_id, err.to_body()),
            );
            return None;
        }
        Some(Caller::Session {
            worker_id,
            invocation_id: id,
            function_id: inv.function_id.clone(),
            traceparent: inv.traceparent.clone(),
            baggage: inv.baggage.clone(),
        })
    }

    /// §7.6: the middleware gets `{function_id, payload, action, context}` and answers for the
    /// target, under the caller's id (a fresh one for void calls, which get an answer too).
    fn via_middleware(
        &mut self,
        worker_id: Uuid,
        middleware: String,
        context: Value,
        inv: InvokeFunction,
        timeout: Duration,
        ctx: &mut Context<Self>,
    ) {
        let id = inv.invocation_id.unwrap_or_else(Uuid::new_v4);
        let Some(caller) = self.session_caller(worker_id, id, &inv) else {
            return;
        };
        /// What the middleware receives (§7.6).
        #[derive(Serialize)]
        struct Input<'a> {
            function_id: &'a str,
            payload: &'a Payload,
            action: &'a Option<Action>,
            context: &'a Value,
        }
        let data = Payload::from_serialize(&Input {
            function_id: &inv.function_id,
            payload: &inv.data,
            action: &inv.action,
            context: &context,
        });
        let req = CallRequest {
            function_id: middleware,
            data,
            metadata: inv.metadata,
            traceparent: inv.traceparent,
            baggage: inv.baggage,
            timeout,
            from: None,
            origin: Some(worker_id),
            caller: None,
        };
        self.call(req, caller, ctx);
    }

    /// Routes a call to its owner and parks it until the answer, the deadline or a disconnect.
    pub(crate) fn call(&mut self, req: CallRequest, caller: Caller, ctx: &mut Context<Self>) {
        let Some(entry) = self.functions.get(&req.function_id) else {
            let err = EngineError::FunctionNotFound(req.function_id.clone());
            return self.deliver(caller, Err(err.to_body()), ctx);
        };
        let owner = entry.owner;
        let engine_id = crate::ids::next();
        let caller_conn = match &caller {
            Caller::Session { worker_id, .. } => Some(*worker_id),
            _ => None,
        };
        match owner {
            Owner::Engine => {
                let outcome = self.call_engine_function(&req.function_id, &req.data, req.from);
                self.deliver(caller, outcome, ctx);
            }
            Owner::Builtin(index) => {
                self.park(engine_id, caller, Callee::Builtin, &req, caller_conn);
                let call = BuiltinCall {
                    engine_id,
                    function_id: req.function_id,
                    data: req.data,
                };
                // Unbounded on purpose: what a module has waiting is bounded by its callers'
                // flow control (calls in flight per connection), never by refusing a call.
                self.builtins[index].calls.do_send(call);
            }
            Owner::Session(callee) => {
                self.park(
                    engine_id,
                    caller,
                    Callee::Session(callee),
                    &req,
                    caller_conn,
                );
                if let Some(c) = self.conns.get_mut(&callee) {
                    c.serving.insert(engine_id);
                }
                let function_id = match self.conns.get(&callee) {
                    Some(c) => c.policy.unprefixed(&req.function_id).to_string(),
                    None => req.function_id.clone(),
                };
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
                if !self.send_frame(callee, frame) {
                    // The callee was cleaned up, which already failed this call.
                    self.complete(
                        engine_id,
                        Err(EngineError::InvocationStopped.to_body()),
                        ctx,
                    );
                }
            }
        }
    }

    fn park(
        &mut self,
        engine_id: Uuid,
        caller: Caller,
        callee: Callee,
        req: &CallRequest,
        caller_conn: Option<Uuid>,
    ) {
        let deadline = Instant::now() + req.timeout;
        self.pending.insert(
            engine_id,
            Pending {
                caller,
                callee,
                function_id: req.function_id.clone(),
                timeout_ms: req.timeout.as_millis() as u64,
                origin: req.origin,
            },
        );
        self.deadlines.add(deadline, engine_id);
        if let Some(c) = caller_conn.and_then(|w| self.conns.get_mut(&w)) {
            c.calling.insert(engine_id);
        }
        if let Some(c) = req.origin.and_then(|w| self.conns.get(&w)) {
            c.outbox.flow().call_started();
        }
    }

    /// An `invocationresult` from a connection: accepted only from the callee of that call.
    pub(crate) fn handle_result(
        &mut self,
        worker_id: Uuid,
        res: InvocationResult,
        ctx: &mut Context<Self>,
    ) {
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
        self.complete(engine_id, outcome, ctx);
    }

    /// Finishes a pending call and delivers its outcome.
    pub(crate) fn complete(&mut self, engine_id: Uuid, outcome: Outcome, ctx: &mut Context<Self>) {
        let Some(p) = self.pending.remove(&engine_id) else {
            return;
        };
        self.release_origin(&p);
        if let Callee::Session(callee) = p.callee {
            if let Some(c) = self.conns.get_mut(&callee) {
                c.serving.remove(&engine_id);
            }
        }
        if let Caller::Session { worker_id, .. } = &p.caller {
            if let Some(c) = self.conns.get_mut(worker_id) {
                c.calling.remove(&engine_id);
            }
        }
        self.deliver(p.caller, outcome, ctx);
    }

    /// Fails a call whose callee went away (used from cleanup, which has no context).
    pub(crate) fn complete_stopped(&mut self, engine_id: Uuid) {
        let Some(p) = self.pending.remove(&engine_id) else {
            return;
        };
        self.release_origin(&p);
        let err = EngineError::InvocationStopped.to_body();
        match p.caller {
            Caller::Session { .. } => self.deliver_to_session(p.caller, Err(err)),
            Caller::Discard => {}
            Caller::Then(then) => self.deferred.push(Deferred::Then(then, Err(err))),
        }
    }

    /// Gives the call's in-flight slot back to the connection that started it.
    fn release_origin(&self, p: &Pending) {
        if let Some(c) = p.origin.and_then(|w| self.conns.get(&w)) {
            c.outbox.flow().call_finished();
        }
    }

    fn deliver(&mut self, caller: Caller, outcome: Outcome, ctx: &mut Context<Self>) {
        match caller {
            Caller::Session { .. } => self.deliver_to_session(caller, outcome),
            Caller::Discard => {
                if let Err(e) = outcome {
                    log::debug!("discarded call failed: {}: {}", e.code, e.message);
                }
            }
            Caller::Then(then) => then(self, ctx, outcome),
        }
    }

    fn deliver_to_session(&mut self, caller: Caller, outcome: Outcome) {
        let Caller::Session {
            worker_id,
            invocation_id,
            function_id,
            traceparent,
            baggage,
        } = caller
        else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&worker_id) {
            c.caller_ids.remove(&invocation_id);
        }
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
        self.send_frame(worker_id, frame);
    }

    /// Fails every call past its deadline.
    pub(crate) fn expire_deadlines(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for engine_id in self.deadlines.due(now) {
            let Some(p) = self.pending.get(&engine_id) else {
                continue;
            };
            let err = EngineError::InvocationTimeout {
                function_id: p.function_id.clone(),
                timeout_ms: p.timeout_ms,
            };
            log::warn!("invocation {engine_id}: {err}");
            self.complete(engine_id, Err(err.to_body()), ctx);
        }
    }
}
