//! Looking at and operating the queues of the `redis` adapter: the same functions, inputs and
//! shapes as the builtin adapter's (`../admin.rs`), counted from Redis, so every engine sees
//! every queue (consumer counts are this engine's). Dead letters, redrive, discard and purge
//! act on Redis for all engines at once.

use std::collections::{BTreeMap, HashMap};

use actix::prelude::*;
use redis::aio::ConnectionManager;
use serde_json::{json, Value};

use super::{scripts, RedisQueueActor};
use crate::config::QueueConfig;
use crate::modules::answer_later;
use crate::modules::queue::delivery::dead_letter_view;
use crate::modules::queue::functions::{message_id, queue_name, resolve_keys};
use crate::modules::queue::lanes::Job;
use crate::modules::queue::{kind_of, named_key, Kind};
use crate::protocol::ErrorBody;

/// A queue's counts in Redis.
#[derive(Default, Clone, Copy)]
struct Counts {
    jobs: u64,
    delayed: u64,
    leased: u64,
    dead: u64,
}

/// What this engine knows of a queue: its consumers here, its retries.
#[derive(Clone)]
struct Local {
    capacity: usize,
    max_retries: u32,
}

fn failed(e: ::redis::RedisError) -> ErrorBody {
    ErrorBody::new("QUEUE_READ_FAILED", format!("Redis: {e}"))
}

/// Every queue key: those that ever held a job, and the configured named queues.
async fn all_keys(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
) -> Result<Vec<String>, ErrorBody> {
    let mut keys: Vec<String> = ::redis::cmd("SMEMBERS")
        .arg(scripts::QUEUES)
        .query_async(conn)
        .await
        .map_err(failed)?;
    for name in config.queues.keys() {
        let k = named_key(name);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.sort();
    Ok(keys)
}

async fn counts(conn: &mut ConnectionManager, keys: &[String]) -> Result<Vec<Counts>, ErrorBody> {
    let mut pipe = ::redis::pipe();
    for k in keys {
        let p = scripts::prefix(k);
        pipe.cmd("HLEN").arg(format!("{p}:jobs"));
        pipe.cmd("ZCARD").arg(format!("{p}:delayed"));
        pipe.cmd("ZCARD").arg(format!("{p}:leases"));
        pipe.cmd("HLEN").arg(format!("{p}:dead"));
    }
    let n: Vec<u64> = pipe.query_async(conn).await.map_err(failed)?;
    Ok(n.chunks(4)
        .map(|c| Counts {
            jobs: c[0],
            delayed: c[1],
            leased: c[2],
            dead: c[3],
        })
        .collect())
}

/// A queue's row of `iii::queue::list`.
/// `fifo`: see [`is_fifo`].
fn row(key: &str, c: Counts, fifo: bool, local: Option<&Local>, config: &QueueConfig) -> Value {
    let (kind, topic, function_id) = match kind_of(key) {
        Some(Kind::Topic { topic, function_id }) => {
            ("subscription", Some(topic), Some(function_id))
        }
        Some(Kind::Unclaimed(t)) => ("unclaimed", Some(t), None),
        _ => ("named", None, None),
    };
    let named = key
        .strip_prefix("named:")
        .and_then(|n| config.queues.get(n));
    let retries = local
        .map(|l| l.max_retries)
        .or(named.map(|s| s.max_retries))
        .unwrap_or(config.topic_defaults.max_retries);
    json!({
        "queue": super::label_of(key),
        "kind": kind,
        "topic": topic,
        "function_id": function_id,
        "type": if fifo { "fifo" } else { "standard" },
        "concurrency": local.map(|l| l.capacity).unwrap_or(0),
        "max_retries": retries,
        "jobs": c.jobs,
        "waiting": c.jobs.saturating_sub(c.delayed + c.leased),
        "delayed": c.delayed,
        "parked": 0,
        "in_flight": c.leased,
        "dead": c.dead,
    })
}

/// Dead letters of `keys`, oldest first.
async fn dead_letters(
    conn: &mut ConnectionManager,
    keys: &[String],
) -> Result<Vec<(String, Value)>, ErrorBody> {
    let mut all = Vec::new();
    for k in keys {
        let records: Vec<String> = ::redis::cmd("HVALS")
            .arg(format!("{}:dead", scripts::prefix(k)))
            .query_async(conn)
            .await
            .map_err(failed)?;
        all.extend(
            records
                .iter()
                .filter_map(|r| serde_json::from_str::<Value>(r).ok())
                .map(|r| (k.clone(), r)),
        );
    }
    all.sort_by_key(|(_, r)| r["failed_at"].as_u64().unwrap_or(0));
    Ok(all)
}

/// Whether queue `key` is FIFO, for every engine alike: a named queue's config, a
/// subscription's record in Redis (this engine may not consume it).
async fn is_fifo(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
    key: &str,
) -> Result<bool, ErrorBody> {
    Ok(match kind_of(key) {
        Some(Kind::Named(n)) => config.queues.get(&n).is_some_and(|s| s.fifo()),
        Some(Kind::Topic { topic, function_id }) => {
            let record: Option<String> = ::redis::cmd("HGET")
                .arg(scripts::subs(&topic))
                .arg(&function_id)
                .query_async(conn)
                .await
                .map_err(failed)?;
            record
                .and_then(|r| serde_json::from_str::<Value>(&r).ok())
                .and_then(|r| r["fifo"].as_bool())
                .unwrap_or(false)
        }
        _ => false,
    })
}

/// Moves dead letters (all, or job `only`) of `keys` back, attempts reset. → how many.
async fn redrive(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
    keys: &[String],
    only: Option<&str>,
) -> Result<usize, ErrorBody> {
    let records = match only {
        None => dead_letters(conn, keys).await?,
        Some(id) => {
            let mut found = Vec::new();
            for key in keys {
                let record: Option<String> = ::redis::cmd("HGET")
                    .arg(format!("{}:dead", scripts::prefix(key)))
                    .arg(id)
                    .query_async(conn)
                    .await
                    .map_err(failed)?;
                if let Some(r) = record.and_then(|r| serde_json::from_str(&r).ok()) {
                    found.push((key.clone(), r));
                }
            }
            found
        }
    };
    let mut moved = 0;
    for (key, record) in records {
        let Ok(mut job) = serde_json::from_value::<Job>(record["job"].clone()) else {
            continue;
        };
        job.attempts = 0;
        job.not_before = 0;
        job.lease_until = None;
        let fifo = is_fifo(conn, config, &key).await?;
        let n: i64 = scripts::REQUEUE
            .prepare_invoke()
            .arg(scripts::prefix(&key))
            .arg(&job.id)
            .arg(job.to_value().to_string())
            .arg(if fifo { "1" } else { "0" })
            .arg(job.group.clone().unwrap_or_default())
            .arg(&key)
            .invoke_async(conn)
            .await
            .map_err(failed)?;
        moved += n as usize;
    }
    Ok(moved)
}

impl RedisQueueActor {
    fn locals(&self) -> HashMap<String, Local> {
        self.consumers
            .iter()
            .map(|(k, c)| {
                let local = Local {
                    capacity: c.capacity(),
                    max_retries: c.settings.max_retries,
                };
                (k.clone(), local)
            })
            .collect()
    }

    /// Serves every function but enqueue and publish.
    pub(super) fn admin(
        &mut self,
        _ctx: &mut Context<Self>,
        engine_id: uuid::Uuid,
        function_id: &str,
        input: Value,
    ) {
        const QUEUE_NOT_SET: (&str, &str) = ("queue_not_set", "Queue name is required");
        const TOPIC_REQUIRED: (&str, &str) = ("topic_required", "topic is required");
        let mut conn = self.conn.clone();
        let config = self.config.clone();
        let locals = self.locals();
        let f = function_id.to_string();
        answer_later(self.registry.clone(), engine_id, async move {
            let keys = all_keys(&mut conn, &config).await?;
            let named = |missing| queue_name(&input, missing);
            let resolved = |name: &str| resolve_keys(&config, keys.iter().cloned(), name);
            match f.as_str() {
                "iii::queue::list" => {
                    let c = counts(&mut conn, &keys).await?;
                    let mut rows = Vec::new();
                    for (k, c) in keys.iter().zip(c) {
                        let fifo = is_fifo(&mut conn, &config, k).await?;
                        rows.push(row(k, c, fifo, locals.get(k), &config));
                    }
                    Ok(Some(Value::Array(rows)))
                }
                "iii::queue::purge" => {
                    let name = named(QUEUE_NOT_SET)?;
                    let mut n = 0i64;
                    for key in resolved(&name) {
                        let fifo = is_fifo(&mut conn, &config, &key).await?;
                        let purged: i64 = scripts::PURGE
                            .prepare_invoke()
                            .arg(scripts::prefix(&key))
                            .arg(if fifo { "1" } else { "0" })
                            .invoke_async(&mut conn)
                            .await
                            .map_err(failed)?;
                        n += purged;
                    }
                    Ok(Some(json!({"queue": name, "purged": n})))
                }
                "iii::queue::redrive" => {
                    let name = named(QUEUE_NOT_SET)?;
                    let n = redrive(&mut conn, &config, &resolved(&name), None).await?;
                    Ok(Some(json!({"queue": name, "redriven": n})))
                }
                "iii::queue::redrive_message" | "iii::queue::discard_message" => {
                    let name = named(QUEUE_NOT_SET)?;
                    let id = message_id(&input)?;
                    let targets = resolved(&name);
                    let n = if f.ends_with("redrive_message") {
                        redrive(&mut conn, &config, &targets, Some(&id)).await?
                    } else {
                        let mut n = 0;
                        for key in targets {
                            let gone: i64 = ::redis::cmd("HDEL")
                                .arg(format!("{}:dead", scripts::prefix(&key)))
                                .arg(&id)
                                .query_async(&mut conn)
                                .await
                                .map_err(failed)?;
                            n += gone as usize;
                        }
                        n
                    };
                    Ok(Some(
                        json!({"queue": name, "message_id": id, "redriven": n}),
                    ))
                }
                "engine::queue::list_topics" => {
                    let mut topics: BTreeMap<String, usize> = BTreeMap::new();
                    for k in &keys {
                        if let Some(Kind::Topic { topic, .. }) = kind_of(k) {
                            *topics.entry(topic).or_default() +=
                                locals.get(k).map(|l| l.capacity).unwrap_or(0);
                        }
                    }
                    let mut out: Vec<Value> = topics
                        .into_iter()
                        .map(|(name, n)| json!({"name": name, "broker_type": "redis", "subscriber_count": n}))
                        .collect();
                    for (name, s) in &config.queues {
                        out.push(json!({"name": name, "broker_type": "function_queue", "subscriber_count": s.concurrency}));
                    }
                    Ok(Some(Value::Array(out)))
                }
                "engine::queue::topic_stats" => {
                    let name = named(TOPIC_REQUIRED)?;
                    let targets = resolved(&name);
                    let c = counts(&mut conn, &targets).await?;
                    let (mut depth, mut in_flight, mut dead, mut consumers) = (0, 0, 0, 0);
                    for (k, c) in targets.iter().zip(c) {
                        depth += c.jobs - c.leased.min(c.jobs);
                        in_flight += c.leased;
                        dead += c.dead;
                        consumers += locals.get(k).map(|l| l.capacity).unwrap_or(0);
                    }
                    Ok(Some(
                        json!({"depth": depth, "consumer_count": consumers, "dlq_depth": dead,
                                   "in_flight": in_flight, "config": null}),
                    ))
                }
                "engine::queue::dlq_topics" => {
                    let c = counts(&mut conn, &keys).await?;
                    let mut topics: BTreeMap<String, u64> = BTreeMap::new();
                    let mut named_rows = Vec::new();
                    for (k, c) in keys.iter().zip(c) {
                        match kind_of(k) {
                            Some(Kind::Topic { topic, .. }) | Some(Kind::Unclaimed(topic)) => {
                                *topics.entry(topic).or_default() += c.dead
                            }
                            Some(Kind::Named(n)) => named_rows.push(json!({"topic": n, "broker_type": "function_queue", "message_count": c.dead})),
                            None => {}
                        }
                    }
                    let rows = topics
                        .into_iter()
                        .map(|(t, n)| json!({"topic": t, "broker_type": "redis", "message_count": n}))
                        .chain(named_rows)
                        .collect();
                    Ok(Some(Value::Array(rows)))
                }
                "engine::queue::dlq_messages" => {
                    let name = named(TOPIC_REQUIRED)?;
                    let offset = input.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let limit = input.get("limit").and_then(Value::as_u64).unwrap_or(50) as usize;
                    let all = dead_letters(&mut conn, &resolved(&name)).await?;
                    let page = all
                        .iter()
                        .skip(offset)
                        .take(limit)
                        .map(|(_, r)| dead_letter_view(r))
                        .collect();
                    Ok(Some(Value::Array(page)))
                }
                other => Err(ErrorBody::new(
                    "function_not_found",
                    format!("Function {other} not found"),
                )),
            }
        });
    }

    /// Publishes the counts of the queues this engine consumes, for `/metrics`.
    pub(super) fn publish_gauges(&self) {
        let keys: Vec<String> = self.consumers.keys().cloned().collect();
        let mut conn = self.conn.clone();
        let registry = self.registry.clone();
        actix::spawn(async move {
            let Ok(c) = counts(&mut conn, &keys).await else {
                return;
            };
            let gauges = keys
                .iter()
                .zip(c)
                .map(|(k, c)| crate::metrics::QueueGauge {
                    queue: super::label_of(k),
                    waiting: c.jobs.saturating_sub(c.delayed + c.leased),
                    delayed: c.delayed,
                    parked: 0,
                    in_flight: c.leased,
                    dead: c.dead,
                })
                .collect();
            registry.metrics().publish_queues(gauges);
        });
    }
}
