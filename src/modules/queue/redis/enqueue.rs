//! Taking jobs in on Redis: `engine::queue::enqueue` and `iii::durable::publish` of the
//! `redis` adapter, checked with the builtin adapter's code and stored by one `ENQUEUE` script
//! (all targets or none, idempotency key and depth limit inside the same step). A publish
//! reads the topic's subscriptions, makes one job per subscribed function (FIFO group from
//! that subscription's settings) and has the script check the subscribers did not change
//! meanwhile; if they did, it is made again.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use serde_json::{json, Value};

use super::{label_of, scripts, RedisQueueActor, PUBLISH_ATTEMPTS};
use crate::modules::answer_later;
use crate::modules::queue::functions::{check_size, parse_enqueue, parse_publish, queue_full};
use crate::modules::queue::lanes::Job;
use crate::modules::queue::subscribe::group_of;
use crate::modules::queue::{named_key, now_ms, topic_key, unclaimed_key};
use crate::protocol::ErrorBody;

fn redis_failed(e: ::redis::RedisError) -> ErrorBody {
    ErrorBody::new(
        "QUEUE_WRITE_FAILED",
        format!("the job could not be stored in Redis: {e}"),
    )
}

/// One job of an `ENQUEUE` script: prefix, queue key, id, JSON, fifo, group, max_depth.
fn job_args(key: &str, job: &Job, fifo: bool, max_depth: usize) -> [String; 7] {
    [
        scripts::prefix(key),
        key.to_string(),
        job.id.clone(),
        job.to_value().to_string(),
        if fifo { "1" } else { "0" }.to_string(),
        job.group.clone().unwrap_or_default(),
        max_depth.to_string(),
    ]
}

/// A new job.
fn new_job(function_id: String, data: Value, receipt: &str, group: Option<String>) -> Job {
    Job {
        id: uuid::Uuid::new_v4().to_string(),
        seq: 0,
        function_id,
        data,
        receipt: Some(receipt.to_string()),
        attempts: 0,
        group,
        created_at: now_ms(),
        not_before: 0,
        lease_until: None,
        last_error: None,
        traceparent: None,
        baggage: None,
    }
}

/// Runs `ENQUEUE`. `Ok(None)`: the subscribers changed meanwhile.
async fn run_enqueue(
    conn: &mut ConnectionManager,
    head: [String; 5],
    jobs: &[[String; 7]],
) -> Result<Option<String>, ErrorBody> {
    let mut inv = scripts::ENQUEUE.prepare_invoke();
    inv.arg(&head[..]).arg(jobs.len());
    for j in jobs {
        inv.arg(&j[..]);
    }
    let answer: Vec<String> = inv.invoke_async(conn).await.map_err(redis_failed)?;
    match answer.first().map(String::as_str) {
        Some("ok") | Some("seen") => Ok(answer.get(1).cloned()),
        Some("full") => {
            let label = answer.get(1).map(|k| label_of(k)).unwrap_or_default();
            let held = answer.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
            Err(queue_full(&label, held))
        }
        _ => Ok(None),
    }
}

impl RedisQueueActor {
    /// `engine::queue::enqueue`: answered once Redis has the job.
    pub(super) fn enqueue(&mut self, engine_id: uuid::Uuid, input: Value) {
        let e = match parse_enqueue(&self.config, input) {
            Ok(e) => e,
            Err(err) => return self.answer(engine_id, Err(err)),
        };
        if let Err(err) = check_size(&e.queue, &e.settings, &e.data) {
            return self.answer(engine_id, Err(err));
        }
        let key = named_key(&e.queue);
        let mut job = new_job(e.function_id, e.data, &e.receipt, e.group);
        job.traceparent = e.traceparent;
        job.baggage = e.baggage;
        let args = job_args(&key, &job, e.settings.fifo(), e.settings.max_depth);
        let idem_key = e.idem.map(|k| scripts::idem(&key, &k)).unwrap_or_default();
        let head = [
            idem_key,
            e.settings.idempotency_window_ms.max(1).to_string(),
            e.receipt,
            String::new(),
            String::new(),
        ];
        let mut conn = self.conn.clone();
        answer_later(self.registry.clone(), engine_id, async move {
            let receipt = run_enqueue(&mut conn, head, &[args]).await?;
            Ok(Some(json!({"messageReceiptId": receipt})))
        });
    }

    /// `iii::durable::publish`: one job per subscribed function (each subscription's FIFO
    /// group from its own settings), or kept for the topic's first subscriber; all or none.
    pub(super) fn publish(&mut self, engine_id: uuid::Uuid, input: Value) {
        let i = match parse_publish(input) {
            Ok(i) => i,
            Err(err) => return self.answer(engine_id, Err(err)),
        };
        let defaults = self.config.topic_defaults.clone();
        if let Err(err) = check_size(&i.topic, &defaults, &i.data) {
            return self.answer(engine_id, Err(err));
        }
        let mut conn = self.conn.clone();
        answer_later(self.registry.clone(), engine_id, async move {
            let scope = format!("topic:{}", i.topic);
            let idem_key = i
                .idempotency_key
                .map(|k| scripts::idem(&scope, &k))
                .unwrap_or_default();
            let receipt = uuid::Uuid::new_v4().to_string();
            for _ in 0..PUBLISH_ATTEMPTS {
                let subs: HashMap<String, String> = ::redis::cmd("HGETALL")
                    .arg(scripts::subs(&i.topic))
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_failed)?;
                let mut names: Vec<&String> = subs.keys().collect();
                names.sort();
                let mut jobs = Vec::new();
                for f in &names {
                    let rec: Value = serde_json::from_str(&subs[*f]).unwrap_or(Value::Null);
                    let fifo = rec["fifo"].as_bool().unwrap_or(false);
                    let group = fifo.then(|| group_of(rec["group_field"].as_str(), &i.data));
                    let depth = rec["max_depth"]
                        .as_u64()
                        .unwrap_or(defaults.max_depth as u64);
                    let job = new_job((*f).clone(), i.data.clone(), &receipt, group);
                    jobs.push(job_args(
                        &topic_key(&i.topic, f),
                        &job,
                        fifo,
                        depth as usize,
                    ));
                }
                if jobs.is_empty() {
                    let job = new_job(String::new(), i.data.clone(), &receipt, None);
                    let key = unclaimed_key(&i.topic);
                    jobs.push(job_args(&key, &job, false, defaults.max_depth));
                }
                let fingerprint = names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                let head = [
                    idem_key.clone(),
                    defaults.idempotency_window_ms.max(1).to_string(),
                    receipt.clone(),
                    scripts::subs(&i.topic),
                    fingerprint,
                ];
                if run_enqueue(&mut conn, head, &jobs).await?.is_some() {
                    return Ok(None);
                }
            }
            Err(ErrorBody::new(
                "QUEUE_WRITE_FAILED",
                format!(
                    "the subscribers of topic '{}' kept changing during the publish; try again",
                    i.topic
                ),
            ))
        });
    }
}
