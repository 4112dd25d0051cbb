//! Looking at queues and operating them: counts per queue, topics, dead letters, redrive,
//! discard and purge. Upstream's shapes where upstream has the function (`MODULES.md` §2.3),
//! with a few counts added (`in_flight`, `delayed`, `parked`).

use actix::prelude::*;
use serde_json::{json, Value};

use super::delivery::dead_letter_view;
use super::lanes::Job;
use super::{now_ms, Kind, QueueActor, DEAD, JOBS};

impl QueueActor {
    /// `iii::queue::list`: every queue with its counts and settings.
    pub(super) fn list(&self) -> Value {
        let mut rows: Vec<(String, Value)> = self
            .queues
            .values()
            .map(|q| {
                let (kind, topic, function_id) = match &q.kind {
                    Kind::Named(_) => ("named", None, None),
                    Kind::Topic { topic, function_id } => (
                        "subscription",
                        Some(topic.clone()),
                        Some(function_id.clone()),
                    ),
                    Kind::Unclaimed(t) => ("unclaimed", Some(t.clone()), None),
                };
                let label = q.label();
                let row = json!({
                    "queue": label,
                    "kind": kind,
                    "topic": topic,
                    "function_id": function_id,
                    "type": if q.lanes.fifo() { "fifo" } else { "standard" },
                    "concurrency": q.capacity(),
                    "max_retries": q.settings.max_retries,
                    "jobs": q.lanes.len(),
                    "waiting": q.lanes.depth() - q.lanes.delayed() - q.lanes.parked(),
                    "delayed": q.lanes.delayed(),
                    "parked": q.lanes.parked(),
                    "in_flight": q.lanes.in_flight(),
                    "dead": q.dead,
                });
                (label, row)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Array(rows.into_iter().map(|(_, r)| r).collect())
    }

    /// `engine::queue::list_topics`: topics with their bound consumers, then named queues.
    pub(super) fn list_topics(&self) -> Value {
        let mut topics: std::collections::BTreeMap<String, u32> = Default::default();
        for q in self.queues.values() {
            if let Kind::Topic { topic, .. } = &q.kind {
                *topics.entry(topic.clone()).or_default() += q.consumers;
            }
        }
        let mut out: Vec<Value> = topics
            .into_iter()
            .map(|(name, n)| json!({"name": name, "broker_type": "builtin", "subscriber_count": n}))
            .collect();
        for (name, s) in &self.config.queues {
            out.push(json!({"name": name, "broker_type": "function_queue", "subscriber_count": s.concurrency}));
        }
        Value::Array(out)
    }

    /// `engine::queue::topic_stats`.
    pub(super) fn topic_stats(&self, name: &str) -> Value {
        let (mut depth, mut consumers, mut dead, mut in_flight) = (0, 0, 0, 0);
        for key in self.resolve(name) {
            if let Some(q) = self.queues.get(&key) {
                depth += q.lanes.depth();
                in_flight += q.lanes.in_flight();
                consumers += q.capacity();
                dead += q.dead;
            }
        }
        json!({"depth": depth, "consumer_count": consumers, "dlq_depth": dead,
               "in_flight": in_flight, "config": null})
    }

    /// `engine::queue::dlq_topics`: every topic, then every named queue, with its dead letters.
    pub(super) fn dlq_topics(&self) -> Value {
        let mut topics: std::collections::BTreeMap<String, usize> = Default::default();
        let mut named = Vec::new();
        for q in self.queues.values() {
            match &q.kind {
                Kind::Topic { topic, .. } | Kind::Unclaimed(topic) => {
                    *topics.entry(topic.clone()).or_default() += q.dead
                }
                Kind::Named(n) => named.push((n.clone(), q.dead)),
            }
        }
        named.sort();
        let topics = topics
            .into_iter()
            .map(|(t, n)| json!({"topic": t, "broker_type": "builtin", "message_count": n}));
        let named = named
            .into_iter()
            .map(|(t, n)| json!({"topic": t, "broker_type": "function_queue", "message_count": n}));
        Value::Array(topics.chain(named).collect())
    }

    /// `engine::queue::dlq_messages`, oldest first.
    pub(super) fn dlq_messages(&self, name: &str, offset: usize, limit: usize) -> Value {
        let mut all: Vec<Value> = self
            .resolve(name)
            .iter()
            .flat_map(|key| self.store.list(key, DEAD))
            .collect();
        all.sort_by_key(|r| r["failed_at"].as_u64().unwrap_or(0));
        Value::Array(
            all.iter()
                .skip(offset)
                .take(limit)
                .map(dead_letter_view)
                .collect(),
        )
    }

    /// Moves dead letters (all, or the one with job id `only`) back behind the waiting jobs,
    /// with their attempts reset. Returns how many.
    pub(super) fn redrive(
        &mut self,
        ctx: &mut Context<Self>,
        name: &str,
        only: Option<&str>,
    ) -> usize {
        let now = now_ms();
        let mut moved = 0;
        for key in self.resolve(name) {
            let records = match only {
                Some(id) => self
                    .store
                    .get(&key, DEAD, id)
                    .cloned()
                    .into_iter()
                    .collect(),
                None => self.store.list(&key, DEAD),
            };
            for record in records {
                let Ok(mut job) = serde_json::from_value::<Job>(record["job"].clone()) else {
                    continue;
                };
                job.attempts = 0;
                job.not_before = 0;
                job.lease_until = None;
                job.seq = self.next_seq;
                self.next_seq += 1;
                if let Err(e) = self.store.set(&key, JOBS, &job.id, job.to_value()) {
                    log::error!("queue store: cannot redrive {}: {e}", job.id);
                    continue;
                }
                if let Err(e) = self.store.delete(&key, DEAD, &job.id) {
                    log::error!("queue store: cannot drop dead letter {}: {e}", job.id);
                }
                if let Some(q) = self.queues.get_mut(&key) {
                    q.dead = q.dead.saturating_sub(1);
                    q.lanes.add(job, now);
                }
                moved += 1;
            }
            self.pump(ctx, &key);
        }
        self.rearm(ctx);
        moved
    }

    /// Deletes one dead letter. Returns 0 or 1.
    pub(super) fn discard(&mut self, name: &str, id: &str) -> usize {
        for key in self.resolve(name) {
            match self.store.delete(&key, DEAD, id) {
                Ok(Some(_)) => {
                    if let Some(q) = self.queues.get_mut(&key) {
                        q.dead = q.dead.saturating_sub(1);
                    }
                    return 1;
                }
                Ok(None) => {}
                Err(e) => log::error!("queue store: cannot discard {id}: {e}"),
            }
        }
        0
    }

    /// Drops every job not being delivered. Returns how many.
    pub(super) fn purge(&mut self, name: &str) -> usize {
        let mut n = 0;
        for key in self.resolve(name) {
            let gone = match self.queues.get_mut(&key) {
                Some(q) => q.lanes.purge(),
                None => continue,
            };
            for job in &gone {
                if let Err(e) = self.store.delete(&key, JOBS, &job.id) {
                    log::error!("queue store: cannot purge {}: {e}", job.id);
                }
            }
            n += gone.len();
        }
        n
    }
}
