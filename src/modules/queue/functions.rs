//! The queue module's functions (`MODULES.md` §2.3–2.4, plus `iii::queue::list` and
//! `iii::queue::purge` of ours): taking jobs in (`engine::queue::enqueue`,
//! `iii::durable::publish`), looking at queues and dead letters, and operating them.
//!
//! Names in `queue` / `topic` inputs: a queue of `queue_configs`, a subscription as
//! `<topic>::<function>`, or a topic (all of its subscriptions).

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

use super::lanes::Job;
use super::{
    named_key, now_ms, topic_key, unclaimed_key, Kind, Queue, QueueActor, Seen, IDEMPOTENCY, JOBS,
};
use crate::config::{QueueConfig, QueueSettings};
use crate::modules::{bad_input, check_string_keys};
use crate::payload::Payload;
use crate::protocol::ErrorBody;

/// Every function the module serves, with its description.
pub const FUNCTIONS: &[(&str, &str)] = &[
    ("engine::queue::enqueue", "Enqueue a job for a function on a named queue: {queue, function_id, data, messageReceiptId}"),
    ("iii::durable::publish", "Publish a message to every durable subscriber of a topic: {topic, data, idempotency_key?}"),
    ("iii::queue::redrive", "Move every dead letter of a queue back to it: {queue}"),
    ("iii::queue::redrive_message", "Move one dead letter back to its queue: {queue, message_id}"),
    ("iii::queue::discard_message", "Delete one dead letter: {queue, message_id}"),
    ("iii::queue::list", "Every queue with its waiting, delayed, in-flight and dead counts"),
    ("iii::queue::purge", "Drop every job of a queue that is not being delivered: {queue}"),
    ("engine::queue::list_topics", "Topics with subscribers, and named queues"),
    ("engine::queue::topic_stats", "Depth, consumers and dead letters of a topic or queue: {topic}"),
    ("engine::queue::dlq_topics", "Dead-letter counts of every topic and queue"),
    ("engine::queue::dlq_messages", "Dead letters of a topic or queue: {topic, offset?, limit?}"),
];

#[derive(Deserialize)]
struct EnqueueInput {
    queue: String,
    function_id: String,
    #[serde(default)]
    data: Value,
    #[serde(rename = "messageReceiptId", default)]
    receipt: Option<String>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    baggage: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct PublishInput {
    pub topic: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// An `engine::queue::enqueue` input, checked against its queue's settings.
pub(super) struct Enqueue {
    pub queue: String,
    pub settings: QueueSettings,
    pub function_id: String,
    pub data: Value,
    /// The caller's `messageReceiptId`, or a fresh one.
    pub receipt: String,
    /// FIFO queues: the message group.
    pub group: Option<String>,
    /// The `idempotency_field` value, if the queue has one and the data carries it.
    pub idem: Option<String>,
    pub traceparent: Option<String>,
    pub baggage: Option<String>,
}

/// Checks an `engine::queue::enqueue` input (every adapter: same codes and messages).
pub(super) fn parse_enqueue(config: &QueueConfig, input: Value) -> Result<Enqueue, ErrorBody> {
    const F: &str = "engine::queue::enqueue";
    check_string_keys(F, &input, &["queue", "function_id", "messageReceiptId"])?;
    let i: EnqueueInput = serde_json::from_value(input).map_err(|e| bad_input(F, e))?;
    if i.queue.is_empty() {
        return Err(ErrorBody::new("queue_not_set", "Queue name is required"));
    }
    if i.function_id.is_empty() {
        return Err(ErrorBody::new(
            "function_id_not_set",
            "function_id is required",
        ));
    }
    let Some(settings) = config.queues.get(&i.queue).cloned() else {
        return Err(ErrorBody::new(
            "queue_not_found",
            format!("Queue '{}' not found", i.queue),
        ));
    };
    let group = match (&settings.message_group_field, settings.fifo()) {
        (Some(field), true) => Some(match i.data.get(field) {
            None => {
                return Err(ErrorBody::new(
                    "fifo_group_missing",
                    format!("FIFO queue '{}' requires field '{field}' in data, but it was not found", i.queue),
                ))
            }
            Some(Value::Null) => {
                return Err(ErrorBody::new(
                    "fifo_group_missing",
                    format!("FIFO queue '{}' requires field '{field}' in data: field '{field}' must not be null", i.queue),
                ))
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }),
        _ => None,
    };
    let idem = settings
        .idempotency_field
        .as_ref()
        .and_then(|f| i.data.get(f))
        .filter(|v| !v.is_null())
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        });
    let receipt = i
        .receipt
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    Ok(Enqueue {
        queue: i.queue,
        settings,
        function_id: i.function_id,
        data: i.data,
        receipt,
        group,
        idem,
        traceparent: i.traceparent,
        baggage: i.baggage,
    })
}

/// Checks an `iii::durable::publish` input.
pub(super) fn parse_publish(input: Value) -> Result<PublishInput, ErrorBody> {
    const F: &str = "iii::durable::publish";
    check_string_keys(F, &input, &["topic", "idempotency_key"])?;
    let i: PublishInput = serde_json::from_value(input).map_err(|e| bad_input(F, e))?;
    if i.topic.is_empty() {
        return Err(ErrorBody::new("topic_not_set", "Topic is not set"));
    }
    Ok(i)
}

/// `job_too_large` when `data` is over the queue's `max_job_bytes`.
pub(super) fn check_size(
    label: &str,
    settings: &QueueSettings,
    data: &Value,
) -> Result<(), ErrorBody> {
    let size = serde_json::to_string(data).map(|s| s.len()).unwrap_or(0);
    if size > settings.max_job_bytes {
        return Err(ErrorBody::new(
            "job_too_large",
            format!(
                "Queue '{label}': the job's data is {size} bytes; the limit is {} (max_job_bytes)",
                settings.max_job_bytes
            ),
        ));
    }
    Ok(())
}

/// `queue_full` for a queue holding `held` jobs.
pub(super) fn queue_full(label: &str, held: usize) -> ErrorBody {
    ErrorBody::new(
        "queue_full",
        format!("Queue '{label}' is full: {held} jobs are held (max_depth); try again later"),
    )
}

/// A job about to be taken in.
struct NewJob {
    key: String,
    function_id: String,
    data: Value,
    receipt: String,
    group: Option<String>,
    traceparent: Option<String>,
    baggage: Option<String>,
}

/// `queue` (or its alias `topic`), required.
pub(super) fn queue_name(input: &Value, missing: (&str, &str)) -> Result<String, ErrorBody> {
    let name = ["queue", "topic"]
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str))
        .unwrap_or("");
    if name.is_empty() {
        return Err(ErrorBody::new(missing.0, missing.1));
    }
    Ok(name.to_string())
}

pub(super) fn message_id(input: &Value) -> Result<String, ErrorBody> {
    match input.get("message_id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(ErrorBody::new(
            "message_id_not_set",
            "Message ID is required",
        )),
    }
}

impl QueueActor {
    /// Serves one call.
    pub(super) fn call(
        &mut self,
        ctx: &mut Context<Self>,
        function_id: &str,
        data: Payload,
    ) -> Result<Option<Value>, ErrorBody> {
        let input = data.to_value();
        const QUEUE_NOT_SET: (&str, &str) = ("queue_not_set", "Queue name is required");
        const TOPIC_REQUIRED: (&str, &str) = ("topic_required", "topic is required");
        match function_id {
            "engine::queue::enqueue" => self.enqueue(ctx, input).map(Some),
            "iii::durable::publish" => self.publish(ctx, input).map(|()| None),
            "iii::queue::redrive" => {
                let name = queue_name(&input, QUEUE_NOT_SET)?;
                let n = self.redrive(ctx, &name, None);
                Ok(Some(json!({"queue": name, "redriven": n})))
            }
            "iii::queue::redrive_message" | "iii::queue::discard_message" => {
                let name = queue_name(&input, QUEUE_NOT_SET)?;
                let id = message_id(&input)?;
                let n = if function_id.ends_with("redrive_message") {
                    self.redrive(ctx, &name, Some(&id))
                } else {
                    self.discard(&name, &id)
                };
                Ok(Some(
                    json!({"queue": name, "message_id": id, "redriven": n}),
                ))
            }
            "iii::queue::list" => Ok(Some(self.list())),
            "iii::queue::purge" => {
                let name = queue_name(&input, QUEUE_NOT_SET)?;
                let n = self.purge(&name);
                Ok(Some(json!({"queue": name, "purged": n})))
            }
            "engine::queue::list_topics" => Ok(Some(self.list_topics())),
            "engine::queue::topic_stats" => {
                let name = queue_name(&input, TOPIC_REQUIRED)?;
                Ok(Some(self.topic_stats(&name)))
            }
            "engine::queue::dlq_topics" => Ok(Some(self.dlq_topics())),
            "engine::queue::dlq_messages" => {
                let name = queue_name(&input, TOPIC_REQUIRED)?;
                let offset = input.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
                let limit = input.get("limit").and_then(Value::as_u64).unwrap_or(50) as usize;
                Ok(Some(self.dlq_messages(&name, offset, limit)))
            }
            other => Err(ErrorBody::new(
                "function_not_found",
                format!("Function {other} not found"),
            )),
        }
    }

    /// `engine::queue::enqueue` (§2.4): validated against the named queue, kept, answered
    /// `{messageReceiptId}` once durable. A repeated idempotency key within its window is
    /// answered with the first receipt and not enqueued again.
    fn enqueue(&mut self, ctx: &mut Context<Self>, input: Value) -> Result<Value, ErrorBody> {
        let e = parse_enqueue(&self.config, input)?;
        let key = named_key(&e.queue);
        if let Some(seen) = e.idem.as_ref().and_then(|k| self.seen_receipt(&key, k)) {
            return Ok(json!({"messageReceiptId": seen}));
        }
        let receipt = e.receipt.clone();
        self.admit(
            ctx,
            vec![NewJob {
                key: key.clone(),
                function_id: e.function_id,
                data: e.data,
                receipt: receipt.clone(),
                group: e.group,
                traceparent: e.traceparent,
                baggage: e.baggage,
            }],
        )?;
        if let Some(k) = e.idem {
            self.remember(&key, k, &receipt, e.settings.idempotency_window_ms);
        }
        Ok(json!({"messageReceiptId": receipt}))
    }

    /// `iii::durable::publish`: one job per subscribed function of the topic (or parked for
    /// the first subscriber).
    fn publish(&mut self, ctx: &mut Context<Self>, input: Value) -> Result<(), ErrorBody> {
        let i = parse_publish(input)?;
        let idem_scope = format!("topic:{}", i.topic);
        if let Some(k) = &i.idempotency_key {
            if self.seen_receipt(&idem_scope, k).is_some() {
                return Ok(());
            }
        }
        let functions: Vec<String> = self
            .subscriptions
            .get(&i.topic)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let receipt = uuid::Uuid::new_v4().to_string();
        let targets: Vec<(String, String)> = if functions.is_empty() {
            vec![(unclaimed_key(&i.topic), String::new())]
        } else {
            functions
                .into_iter()
                .map(|f| (topic_key(&i.topic, &f), f))
                .collect()
        };
        let jobs = targets
            .into_iter()
            .map(|(key, function_id)| {
                self.ensure_topic_queue(&key, &i.topic, &function_id);
                let group = self.topic_group(&key, &i.data);
                NewJob {
                    key,
                    function_id,
                    data: i.data.clone(),
                    receipt: receipt.clone(),
                    group,
                    traceparent: None,
                    baggage: None,
                }
            })
            .collect();
        self.admit(ctx, jobs)?;
        if let Some(k) = i.idempotency_key {
            let window = self.config.topic_defaults.idempotency_window_ms;
            self.remember(&idem_scope, k, &receipt, window);
        }
        Ok(())
    }

    /// A topic queue's message group for `data`: its `messageGroupField` value, or one group
    /// for the whole queue.
    fn topic_group(&self, key: &str, data: &Value) -> Option<String> {
        let q = self.queues.get(key)?;
        if !q.settings.fifo() {
            return None;
        }
        Some(super::subscribe::group_of(
            q.settings.message_group_field.as_deref(),
            data,
        ))
    }

    /// Creates the queue of a topic's subscription (or its unclaimed messages) if missing.
    pub(super) fn ensure_topic_queue(&mut self, key: &str, topic: &str, function_id: &str) {
        if self.queues.contains_key(key) {
            return;
        }
        let kind = if function_id.is_empty() {
            Kind::Unclaimed(topic.to_string())
        } else {
            Kind::Topic {
                topic: topic.to_string(),
                function_id: function_id.to_string(),
            }
        };
        let settings = self.config.topic_defaults.clone();
        self.queues
            .insert(key.to_string(), Queue::new(kind, settings));
    }

    /// Checks limits for every job first (all or nothing), then stores and queues them.
    fn admit(&mut self, ctx: &mut Context<Self>, jobs: Vec<NewJob>) -> Result<(), ErrorBody> {
        for j in &jobs {
            let Some(q) = self.queues.get(&j.key) else {
                return Err(ErrorBody::new("queue_not_found", "Queue not found"));
            };
            check_size(&q.label(), &q.settings, &j.data)?;
            if q.lanes.len() >= q.settings.max_depth {
                return Err(queue_full(&q.label(), q.lanes.len()));
            }
        }
        let now = now_ms();
        for j in jobs {
            let job = Job {
                id: uuid::Uuid::new_v4().to_string(),
                seq: self.next_seq,
                function_id: j.function_id,
                data: j.data,
                receipt: Some(j.receipt),
                attempts: 0,
                group: j.group,
                created_at: now,
                not_before: 0,
                lease_until: None,
                last_error: None,
                traceparent: j.traceparent,
                baggage: j.baggage,
            };
            self.next_seq += 1;
            self.store
                .set(&j.key, JOBS, &job.id, job.to_value())
                .map_err(|e| {
                    ErrorBody::new(
                        "QUEUE_WRITE_FAILED",
                        format!("the job could not be stored: {e}"),
                    )
                })?;
            if let Some(q) = self.queues.get_mut(&j.key) {
                q.lanes.add(job, now);
            }
            self.pump(ctx, &j.key);
        }
        Ok(())
    }

    fn seen_receipt(&self, scope: &str, key: &str) -> Option<String> {
        let seen = self.seen.get(&(scope.to_string(), key.to_string()))?;
        (seen.expires_at > now_ms()).then(|| seen.receipt.clone())
    }

    fn remember(&mut self, scope: &str, key: String, receipt: &str, window_ms: u64) {
        let expires_at = now_ms() + window_ms;
        let record = json!({"key": key, "receipt": receipt, "expires_at": expires_at});
        if let Err(e) = self.store.set(IDEMPOTENCY, scope, &key, record) {
            log::error!("queue store: cannot record idempotency key: {e}");
        }
        self.seen.insert(
            (scope.to_string(), key),
            Seen {
                receipt: receipt.to_string(),
                expires_at,
            },
        );
    }

    /// The store streams a name means (see the module docs).
    pub(super) fn resolve(&self, name: &str) -> Vec<String> {
        resolve_keys(&self.config, self.queues.keys().cloned(), name)
    }
}

/// The queues (of `keys`) a name means: a named queue, one subscription
/// (`<topic>::<function>`), or every queue of a topic. Sorted.
pub(super) fn resolve_keys(
    config: &QueueConfig,
    keys: impl Iterator<Item = String>,
    name: &str,
) -> Vec<String> {
    let keys: Vec<String> = keys.collect();
    if config.queues.contains_key(name) || keys.contains(&named_key(name)) {
        return vec![named_key(name)];
    }
    let exact = format!("topic:{name}");
    if keys.contains(&exact) {
        return vec![exact];
    }
    let mut found: Vec<String> = keys
        .into_iter()
        .filter(|k| match super::kind_of(k) {
            Some(Kind::Topic { topic, .. }) | Some(Kind::Unclaimed(topic)) => topic == name,
            _ => false,
        })
        .collect();
    found.sort();
    found
}
