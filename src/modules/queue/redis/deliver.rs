//! Delivering jobs of the `redis` adapter: claiming from Redis while a queue has room here,
//! the call (after the subscription's condition, if any), and settling its outcome in Redis —
//! ack, retry after the backoff (the builtin adapter's), or dead letter after `max_retries`
//! retries. A job whose function is not registered here (nor, with `iii-cluster`, on another
//! engine) goes back behind the others without using an attempt, for an engine that has it;
//! after [`ABSENT_BUDGET`] such jobs this engine leaves that queue alone until its next look
//! ([`super::POLL`]). So engines without a function never keep its jobs from the engine that
//! has it, and jobs nobody can run cost a bounded number of claims.
//!
//! Claims and settlements run as tasks on the actor's arbiter and come back as messages, one
//! claim per queue at a time; an ack while the queue has room also claims the next jobs, in
//! the same script (one round trip per job at concurrency 1, not two).

use std::time::Duration;

use actix::prelude::*;

use super::scripts;
use super::{RedisQueueActor, LEASE_GRACE, POLL};
use crate::modules::fire::passes;
use crate::modules::queue::delivery::{backoff, dead_letter, job_call, Outcome};
use crate::modules::queue::lanes::Job;
use crate::modules::queue::now_ms;
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::router::CallRequest;

/// Most jobs one claim takes.
const MAX_CLAIM: usize = 64;

/// Jobs a queue may hand back for want of their function between two looks.
const ABSENT_BUDGET: u32 = 32;

/// A job claimed by this engine.
struct Claim {
    token: String,
    job: Job,
}

/// What a claim script answered: the jobs it leased ((token, id, job JSON) triples), or, when
/// none, in how many ms the earliest retry or lease comes due.
fn claims(v: Vec<String>) -> Claims {
    if let [ms] = v.as_slice() {
        return Claims {
            jobs: Vec::new(),
            next_due_ms: ms.parse().ok(),
        };
    }
    let jobs = v
        .chunks_exact(3)
        .filter_map(|c| match serde_json::from_str::<Job>(&c[2]) {
            Ok(job) => Some(Claim {
                token: c[0].clone(),
                job,
            }),
            Err(e) => {
                log::error!("iii-queue: unreadable job {} in Redis: {e}", c[1]);
                None
            }
        })
        .collect();
    Claims {
        jobs,
        next_due_ms: None,
    }
}

/// See [`claims`].
struct Claims {
    jobs: Vec<Claim>,
    next_due_ms: Option<u64>,
}

/// A claim's answer from Redis.
#[derive(Message)]
#[rtype(result = "()")]
struct Claimed {
    key: String,
    result: Result<Claims, ::redis::RedisError>,
}

/// A subscription's condition answered.
#[derive(Message)]
#[rtype(result = "()")]
struct Checked {
    key: String,
    claim: Claim,
    condition: String,
    outcome: crate::router::Outcome,
}

/// A delivery's outcome.
#[derive(Message)]
#[rtype(result = "()")]
struct Delivered {
    key: String,
    claim: Claim,
    outcome: Outcome,
}

/// A settlement reached Redis (or failed): the queue may take the next job.
#[derive(Message)]
#[rtype(result = "()")]
struct Settled(String);

impl RedisQueueActor {
    /// Claims as many jobs of queue `key` as it has room for here, if no claim is on its way.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>, key: &str) {
        let Some(c) = self.consumers.get_mut(key) else {
            return;
        };
        if c.claiming || c.resting || c.in_flight >= c.capacity() {
            return;
        }
        c.claiming = true;
        let room = (c.capacity() - c.in_flight).min(MAX_CLAIM);
        let lease = c.settings.visibility_timeout_ms + LEASE_GRACE;
        let fifo = if c.settings.fifo() { "1" } else { "0" };
        let mut conn = self.conn.clone();
        let addr = ctx.address();
        let key = key.to_string();
        actix::spawn(async move {
            let r: Result<Vec<String>, _> = scripts::CLAIM
                .prepare_invoke()
                .arg(scripts::prefix(&key))
                .arg(lease)
                .arg(fifo)
                .arg(room)
                .invoke_async(&mut conn)
                .await;
            let result = r.map(claims);
            addr.do_send(Claimed { key, result });
        });
    }

    /// Calls the function of a claimed job (after its condition).
    fn deliver(&mut self, ctx: &mut Context<Self>, key: &str, claim: Claim) {
        let Some(c) = self.consumers.get(key) else {
            return;
        };
        let timeout = Duration::from_millis(c.settings.visibility_timeout_ms);
        let addr = ctx.address();
        let key = key.to_string();
        if let Some(cond) = c.condition.clone() {
            let req = CallRequest::new(cond.clone(), Payload::from_value(&claim.job.data))
                .timeout(timeout);
            self.registry.call_then(req, move |outcome| {
                addr.do_send(Checked {
                    key,
                    claim,
                    condition: cond,
                    outcome,
                })
            });
            return;
        }
        self.call_job(ctx, &key, claim);
    }

    fn call_job(&mut self, ctx: &mut Context<Self>, key: &str, claim: Claim) {
        let Some(c) = self.consumers.get(key) else {
            return;
        };
        let function_id = c.function_of(&claim.job);
        let req = job_call(&function_id, &claim.job, &c.settings, c.metadata.clone());
        let addr = ctx.address();
        let key = key.to_string();
        self.registry.call_then(req, move |outcome| {
            let outcome = Outcome::of(outcome);
            addr.do_send(Delivered {
                key,
                claim,
                outcome,
            });
        });
    }

    /// Records a delivery's outcome in Redis; the queue goes on once it is there.
    fn settle(&mut self, ctx: &mut Context<Self>, key: &str, claim: Claim, outcome: Outcome) {
        let Some(c) = self.consumers.get_mut(key) else {
            return;
        };
        c.in_flight = c.in_flight.saturating_sub(1);
        let prefix = scripts::prefix(key);
        let fifo = if c.settings.fifo() { "1" } else { "0" };
        let Claim { token, mut job } = claim;
        let room = c.capacity().saturating_sub(c.in_flight).min(MAX_CLAIM);
        if matches!(outcome, Outcome::Done) && !c.claiming && !c.resting && room > 0 {
            // The ack and the next claim in one round trip.
            c.claiming = true;
            let mut inv = scripts::ACK_CLAIM.prepare_invoke();
            inv.arg(&prefix).arg(&token).arg(&job.id).arg(fifo).arg(key);
            inv.arg(c.settings.visibility_timeout_ms + LEASE_GRACE)
                .arg(room);
            let mut conn = self.conn.clone();
            let addr = ctx.address();
            let key = key.to_string();
            actix::spawn(async move {
                let r: Result<Vec<String>, _> = inv.invoke_async(&mut conn).await;
                if let Err(e) = &r {
                    log::warn!("iii-queue: cannot settle job {} of {key} in Redis ({e}); it goes out again when its lease is over", job.id);
                }
                addr.do_send(Claimed {
                    key,
                    result: r.map(claims),
                });
            });
            return;
        }
        let invocation = match outcome {
            Outcome::Done => {
                let mut inv = scripts::ACK.prepare_invoke();
                inv.arg(&prefix).arg(&token).arg(&job.id).arg(fifo).arg(key);
                inv
            }
            Outcome::NoFunction => {
                c.absent += 1;
                c.resting = c.absent >= ABSENT_BUDGET;
                let mut inv = scripts::RELEASE.prepare_invoke();
                inv.arg(&prefix).arg(&token).arg(&job.id).arg(fifo).arg(key);
                inv
            }
            Outcome::Failed(error) => {
                job.attempts += 1;
                job.last_error = Some(ErrorBody::new(&error.code, &error.message));
                let dead = job.attempts > c.settings.max_retries;
                let delay = if dead {
                    0
                } else {
                    backoff(&c.settings, job.attempts)
                };
                let record = if dead {
                    log::warn!(
                        "queue {}: job {} dead-lettered after {} attempts: {}: {}",
                        super::label_of(key),
                        job.id,
                        job.attempts,
                        error.code,
                        error.message
                    );
                    dead_letter(&job, &error, now_ms()).to_string()
                } else {
                    String::new()
                };
                let mut inv = scripts::FAIL.prepare_invoke();
                inv.arg(&prefix)
                    .arg(&token)
                    .arg(&job.id)
                    .arg(fifo)
                    .arg(key)
                    .arg(job.to_value().to_string())
                    .arg(delay)
                    .arg(record);
                inv
            }
        };
        let mut conn = self.conn.clone();
        let addr = ctx.address();
        let key = key.to_string();
        actix::spawn(async move {
            let r: ::redis::RedisResult<i64> = invocation.invoke_async(&mut conn).await;
            match r {
                // The lease ran out before the outcome: the job went back in line (and may be
                // delivered again): at least once.
                Ok(0) => log::debug!("iii-queue: job {} of {key} settled after its lease", job.id),
                Ok(_) => {}
                Err(e) => log::warn!("iii-queue: cannot settle job {} of {key} in Redis ({e}); it goes out again when its lease is over", job.id),
            }
            addr.do_send(Settled(key));
        });
    }
}

impl Handler<Claimed> for RedisQueueActor {
    type Result = ();
    fn handle(&mut self, msg: Claimed, ctx: &mut Context<Self>) {
        let Some(c) = self.consumers.get_mut(&msg.key) else {
            return;
        };
        c.claiming = false;
        match msg.result {
            Ok(Claims { jobs, next_due_ms }) => {
                if self.outage {
                    log::info!("iii-queue: Redis answers again");
                    self.outage = false;
                }
                let more = !jobs.is_empty();
                // Whether a function is registered, asked once per function per batch (each
                // answer takes the registry's lock).
                let mut known: Vec<(String, bool)> = Vec::new();
                for claim in jobs {
                    let Some(c) = self.consumers.get_mut(&msg.key) else {
                        return;
                    };
                    c.in_flight += 1;
                    let function_id = c.function_of(&claim.job);
                    let registered = match known.iter().find(|(f, _)| *f == function_id) {
                        Some((_, r)) => *r,
                        None => {
                            let r = self.registry.has_function(&function_id);
                            known.push((function_id, r));
                            r
                        }
                    };
                    if registered {
                        self.deliver(ctx, &msg.key, claim);
                    } else {
                        self.settle(ctx, &msg.key, claim, Outcome::NoFunction);
                    }
                }
                if more {
                    self.pump(ctx, &msg.key);
                } else if let Some(ms) = next_due_ms.filter(|ms| *ms < POLL.as_millis() as u64) {
                    // A retry (or a lease) comes due before the next look: look then.
                    let key = msg.key.clone();
                    ctx.run_later(Duration::from_millis(ms + 1), move |act, ctx| {
                        act.pump(ctx, &key)
                    });
                }
            }
            Err(e) => {
                if !self.outage {
                    log::warn!("iii-queue: cannot claim jobs from Redis: {e}");
                    self.outage = true;
                }
            }
        }
    }
}

impl Handler<Checked> for RedisQueueActor {
    type Result = ();
    fn handle(&mut self, msg: Checked, ctx: &mut Context<Self>) {
        match passes(&msg.outcome) {
            Ok(true) => self.call_job(ctx, &msg.key, msg.claim),
            Ok(false) => self.settle(ctx, &msg.key, msg.claim, Outcome::Done),
            Err(e) => {
                let error = ErrorBody::new(
                    "condition_failed",
                    format!("condition {} failed: {e}", msg.condition),
                );
                self.settle(ctx, &msg.key, msg.claim, Outcome::Failed(error));
            }
        }
    }
}

impl Handler<Delivered> for RedisQueueActor {
    type Result = ();
    fn handle(&mut self, msg: Delivered, ctx: &mut Context<Self>) {
        self.settle(ctx, &msg.key, msg.claim, msg.outcome);
    }
}

impl Handler<Settled> for RedisQueueActor {
    type Result = ();
    fn handle(&mut self, msg: Settled, ctx: &mut Context<Self>) {
        self.pump(ctx, &msg.0);
    }
}
