//! Calls that take a detour before their target: through the listener's middleware
//! (`PROTOCOL.md` §7.6), or into a queue as a job (`enqueue` actions, §4.4).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::calls::{CallRequest, Outcome, Waiter};
use super::{Effects, Router};
use crate::error::Code;
use crate::payload::Payload;
use crate::protocol::{Action, ErrorBody, InvokeFunction};

/// The function an `enqueue` action hands its job to (registered by `iii-queue`).
pub const ENQUEUE_FUNCTION: &str = "engine::queue::enqueue";

impl Router {
    /// §4.4: the call becomes a job: `engine::queue::enqueue` gets `{queue, function_id, data,
    /// messageReceiptId, traceparent, baggage}` and the caller gets `{messageReceiptId}` once
    /// the queue has accepted it (or `enqueue_error`).
    pub(super) fn enqueue(
        &mut self,
        worker_id: Uuid,
        queue: String,
        inv: InvokeFunction,
        timeout: Duration,
        out: &mut Effects,
    ) {
        let inner = match inv.invocation_id {
            Some(id) => match self.conn_waiter(worker_id, id, &inv, out) {
                Some(w) => w,
                None => return,
            },
            None => Waiter::Nobody,
        };
        let receipt = Uuid::new_v4().to_string();
        let input = serde_json::json!({
            "queue": queue,
            "function_id": inv.function_id,
            "data": inv.data.to_value(),
            "messageReceiptId": receipt,
            "traceparent": inv.traceparent,
            "baggage": inv.baggage,
        });
        let mut req =
            CallRequest::new(ENQUEUE_FUNCTION, Payload::from_value(&input)).timeout(timeout);
        req.traceparent = inv.traceparent;
        req.baggage = inv.baggage;
        req.from = Some(worker_id);
        req.origin = Some(worker_id);
        let waiter = Waiter::Enqueued {
            inner: Box::new(inner),
            queue,
            target: inv.function_id,
            receipt,
        };
        self.call(req, waiter, out);
    }

    /// §7.6: the middleware gets `{function_id, payload, action, context}` and answers for the
    /// target, under the caller's id (a fresh one for void calls, which get an answer too).
    pub(super) fn via_middleware(
        &mut self,
        worker_id: Uuid,
        middleware: String,
        context: Value,
        inv: InvokeFunction,
        timeout: Duration,
        out: &mut Effects,
    ) {
        let id = inv.invocation_id.unwrap_or_else(Uuid::new_v4);
        let Some(waiter) = self.conn_waiter(worker_id, id, &inv, out) else {
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
            local_only: false,
        };
        self.call(req, waiter, out);
    }
}

/// What the caller of an `enqueue` action gets for the queue's answer: `{messageReceiptId}`
/// (the queue's, which is the first one for a repeated idempotency key), or `enqueue_error`
/// — naming the missing provider when no queue module is there.
pub(super) fn enqueued(outcome: Outcome, queue: &str, target: &str, receipt: String) -> Outcome {
    match outcome {
        Ok(r) => Ok(Some(r.filter(|p| p.is_object()).unwrap_or_else(|| {
            Payload::from_value(&serde_json::json!({ "messageReceiptId": receipt }))
        }))),
        Err(e) if e.code == Code::FunctionNotFound.as_str() => Err(ErrorBody::new(
            Code::EnqueueError,
            format!("No queue provider is installed. Cannot enqueue {target} on queue {queue:?}."),
        )),
        Err(e) => Err(ErrorBody::new(Code::EnqueueError, e.message)),
    }
}
