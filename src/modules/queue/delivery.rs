//! Delivering jobs: taking them out of a queue up to its concurrency, the lease recorded
//! before each delivery, the call (after the subscription's condition, if any), and what its
//! outcome does — ack, retry after an exponential backoff with jitter, or dead letter after
//! `max_retries` retries — plus the one timer that wakes the actor for the earliest delayed
//! job.
//!
//! A job whose function is not registered is parked (no attempt used) and goes out when the
//! function is back: after an engine restart, workers reconnect a moment later, and their jobs
//! must not burn retries meanwhile. A delivery that fails because the function went away in
//! between is parked the same way.

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::lanes::Job;
use super::{now_ms, Kind, QueueActor, DEAD};
use crate::config::QueueSettings;
use crate::modules::fire::passes;
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::router::CallRequest;

/// A delivery's outcome, back at the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Delivered {
    key: String,
    id: String,
    outcome: Outcome,
}

impl Handler<Delivered> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Delivered, ctx: &mut Context<Self>) {
        self.finished(ctx, &msg.key, &msg.id, msg.outcome);
    }
}

/// A subscription's condition answered for a job in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Checked {
    key: String,
    id: String,
    condition: String,
    outcome: crate::router::Outcome,
}

impl Handler<Checked> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Checked, ctx: &mut Context<Self>) {
        match passes(&msg.outcome) {
            Ok(true) => self.call_job(ctx, &msg.key, msg.id),
            Ok(false) => self.finished(ctx, &msg.key, &msg.id, Outcome::Done),
            Err(e) => {
                let error = ErrorBody::new(
                    "condition_failed",
                    format!("condition {} failed: {e}", msg.condition),
                );
                self.finished(ctx, &msg.key, &msg.id, Outcome::Failed(error));
            }
        }
    }
}

/// What a delivery came to.
pub(super) enum Outcome {
    Done,
    Failed(ErrorBody),
    /// The function is not registered (now): wait for it.
    NoFunction,
}

impl Outcome {
    /// What a job's call came to.
    pub(super) fn of(outcome: crate::router::Outcome) -> Outcome {
        match outcome {
            Ok(_) => Outcome::Done,
            Err(e) if e.code == "function_not_found" => Outcome::NoFunction,
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// The call that delivers `job` to `function_id` (both adapters): the visibility timeout as
/// its deadline, the binding's metadata, the trace context the job was enqueued with.
pub(super) fn job_call(
    function_id: &str,
    job: &Job,
    settings: &QueueSettings,
    metadata: Option<Value>,
) -> CallRequest {
    let mut req = CallRequest::new(function_id, Payload::from_value(&job.data))
        .timeout(Duration::from_millis(settings.visibility_timeout_ms));
    req.metadata = metadata;
    req.traceparent = job.traceparent.clone();
    req.baggage = job.baggage.clone();
    req
}

/// A dead letter as kept (both adapters): the job, the last error, when.
pub(super) fn dead_letter(job: &Job, error: &ErrorBody, now: u64) -> Value {
    json!({
        "job": job.to_value(),
        "error": {"code": error.code, "message": error.message},
        "failed_at": now,
    })
}

/// The delay before retry number `attempts` (1 = the first retry): `backoff_ms` doubling per
/// retry up to `backoff_max_ms` (or constant when not exponential), then scaled by a random
/// factor in [0.5, 1.0] so that jobs that failed together do not come back together.
pub(super) fn backoff(settings: &QueueSettings, attempts: u32) -> u64 {
    let base = if settings.backoff_exponential {
        let doubling = 1u64 << attempts.saturating_sub(1).min(32);
        settings.backoff_ms.saturating_mul(doubling)
    } else {
        settings.backoff_ms
    };
    let capped = base.min(settings.backoff_max_ms.max(settings.backoff_ms));
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1001) as u64; // 0..=1000
    capped / 2 + capped * jitter / 2000
}

impl QueueActor {
    /// Sends out jobs of queue `key` while it has room.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>, key: &str) {
        // Whether a function is registered, asked once per function per pump (each answer
        // takes the registry's lock).
        let mut known: Vec<(String, bool)> = Vec::new();
        loop {
            let Some(q) = self.queues.get_mut(key) else {
                return;
            };
            if q.lanes.in_flight() >= q.capacity() {
                return;
            }
            let Some(job) = q.lanes.next() else {
                return;
            };
            let id = job.id.clone();
            let registered = match known.iter().find(|(f, _)| *f == job.function_id) {
                Some((_, r)) => *r,
                None => {
                    let r = self.registry.has_function(&job.function_id);
                    known.push((job.function_id.clone(), r));
                    r
                }
            };
            if !registered {
                q.lanes.park(&id);
                continue;
            }
            self.deliver(ctx, key, id);
        }
    }

    /// Records the lease, then checks the subscription's condition (if any) and calls the
    /// job's function; outcomes come back as messages ([`Checked`], [`Delivered`]), so they
    /// queue with the enqueues and a busy mailbox never holds deliveries back.
    fn deliver(&mut self, ctx: &mut Context<Self>, key: &str, id: String) {
        let Some(q) = self.queues.get_mut(key) else {
            return;
        };
        let timeout = q.settings.visibility_timeout_ms;
        let condition = q.condition.clone();
        let Some(job) = q.lanes.get_mut(&id) else {
            return;
        };
        job.lease_until = Some(now_ms() + timeout);
        let record = job.to_value();
        let data = condition.as_ref().map(|_| Payload::from_value(&job.data));
        if let Err(e) = self.store.set(key, super::JOBS, &id, record) {
            log::error!("queue store: cannot record the lease of job {id} of {key}: {e}");
        }
        self.note();
        let (Some(c), Some(data)) = (condition, data) else {
            return self.call_job(ctx, key, id);
        };
        let addr = ctx.address();
        let key = key.to_string();
        let req = CallRequest::new(c.clone(), data).timeout(Duration::from_millis(timeout));
        self.registry.call_then(req, move |outcome| {
            addr.do_send(Checked {
                key,
                id,
                condition: c,
                outcome,
            })
        });
    }

    /// Calls the function of a job in flight.
    fn call_job(&mut self, ctx: &mut Context<Self>, key: &str, id: String) {
        let Some(q) = self.queues.get(key) else {
            return;
        };
        let Some(job) = q.lanes.get(&id) else {
            return;
        };
        let req = job_call(&job.function_id, job, &q.settings, q.metadata.clone());
        let addr = ctx.address();
        let key = key.to_string();
        self.registry.call_then(req, move |outcome| {
            let outcome = Outcome::of(outcome);
            addr.do_send(Delivered { key, id, outcome });
        });
    }

    /// A delivery's outcome: ack, retry, dead letter or park; then the queue goes on.
    pub(super) fn finished(
        &mut self,
        ctx: &mut Context<Self>,
        key: &str,
        id: &str,
        outcome: Outcome,
    ) {
        let now = now_ms();
        let Some(q) = self.queues.get_mut(key) else {
            return;
        };
        match outcome {
            Outcome::Done => {
                q.lanes.remove(id, now);
                self.unpersist(key, id);
            }
            Outcome::NoFunction => {
                q.lanes.park(id);
                if let Some(job) = q.lanes.get(id).cloned() {
                    self.persist(key, &job);
                }
            }
            Outcome::Failed(error) => {
                let retries = q.settings.max_retries;
                let label = q.label();
                let Some(job) = q.lanes.get_mut(id) else {
                    return;
                };
                job.attempts += 1;
                job.last_error = Some(ErrorBody::new(&error.code, &error.message));
                if job.attempts > retries {
                    log::warn!(
                        "queue {label}: job {id} dead-lettered after {} attempts: {}: {}",
                        job.attempts,
                        error.code,
                        error.message
                    );
                    if let Some(job) = q.lanes.remove(id, now) {
                        q.dead += 1;
                        self.bury(key, job, error, now);
                    }
                } else {
                    let due = now + backoff(&q.settings, job.attempts);
                    log::debug!(
                        "queue {label}: job {id} attempt {} failed ({}); retry in {} ms",
                        job.attempts,
                        error.code,
                        due - now
                    );
                    q.lanes.retry(id, due);
                    if let Some(job) = q.lanes.get(id).cloned() {
                        self.persist(key, &job);
                    }
                }
            }
        }
        self.pump(ctx, key);
        self.rearm(ctx);
    }

    /// Moves a job to its queue's dead letters: the dead record first, then the job goes.
    fn bury(&mut self, key: &str, job: Job, error: ErrorBody, now: u64) {
        let record = dead_letter(&job, &error, now);
        if let Err(e) = self.store.set(key, DEAD, &job.id, record) {
            log::error!("queue store: cannot record dead letter {}: {e}", job.id);
        }
        self.unpersist(key, &job.id);
    }

    /// Arms the wake-up for the earliest delayed job, if it is earlier than the armed one.
    pub(super) fn rearm(&mut self, ctx: &mut Context<Self>) {
        let Some(earliest) = self
            .queues
            .values()
            .filter_map(|q| q.lanes.next_due())
            .min()
        else {
            return;
        };
        if let Some((at, handle)) = self.wake {
            if at <= earliest {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis(earliest.saturating_sub(now_ms()));
        let handle = ctx.run_later(wait, |act, ctx| {
            act.wake = None;
            act.tick(ctx);
        });
        self.wake = Some((earliest, handle));
    }

    /// Delayed jobs that are due go out.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        let due: Vec<String> = self
            .queues
            .iter_mut()
            .filter_map(|(k, q)| q.lanes.due(now).then(|| k.clone()))
            .collect();
        for key in due {
            self.pump(ctx, &key);
        }
        self.rearm(ctx);
    }

    /// Parked jobs whose function is registered again go out.
    pub(super) fn unpark_all(&mut self, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        let back: Vec<String> = self
            .queues
            .iter_mut()
            .filter(|(_, q)| q.lanes.parked() > 0)
            .filter_map(|(k, q)| {
                q.lanes
                    .unpark(|f| registry.has_function(f))
                    .then(|| k.clone())
            })
            .collect();
        for key in back {
            self.pump(ctx, &key);
        }
    }

    /// Topic queues: recounts the consumers of `key` from the bindings.
    pub(super) fn recount(&mut self, key: &str) {
        let total = super::concurrency_of(&self.bindings, key);
        if let Some(q) = self.queues.get_mut(key) {
            if matches!(q.kind, Kind::Topic { .. }) {
                q.consumers = total;
            }
        }
    }
}

/// A dead letter as `engine::queue::dlq_messages` shows it.
pub(super) fn dead_letter_view(record: &Value) -> Value {
    let job = &record["job"];
    let size = serde_json::to_string(record).map(|s| s.len()).unwrap_or(0);
    json!({
        "id": job["id"],
        "payload": job["data"],
        "function_id": job["function_id"],
        "error": record["error"],
        "failed_at": record["failed_at"].as_u64().unwrap_or(0) / 1000,
        "retries": job["attempts"],
        "size_bytes": size,
    })
}
