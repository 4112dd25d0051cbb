//! The `iii-queue` module's config (`MODULES.md` §2.2): the adapter — `builtin` (where the
//! jobs are kept, and the defaults of `durable:subscriber` queues) or `redis` (`{redis_url}`:
//! jobs kept in a Redis that several engines share) — and the named queues of
//! `queue_configs`, validated at load with upstream's messages.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::modules::{FsyncMode, KvConfig, StoreMethod};

/// Where the queue store lives unless `adapter.config.file_path` says otherwise.
pub const QUEUE_DEFAULT_DIR: &str = "queue_store_data.db";

/// The `iii-queue` module.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// The store: file based by default (an acknowledged enqueue is on disk).
    pub store: KvConfig,
    /// `redis` adapter: the Redis that holds the jobs (instead of the store).
    pub redis_url: Option<String>,
    /// Settings of `durable:subscriber` queues that their trigger's `queue_config` leaves out.
    pub topic_defaults: QueueSettings,
    /// Named queues (`enqueue` targets); `default` is always there.
    pub queues: BTreeMap<String, QueueSettings>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let mut queues = BTreeMap::new();
        queues.insert("default".to_string(), QueueSettings::default());
        QueueConfig {
            store: KvConfig {
                store_method: StoreMethod::FileBased,
                file_path: PathBuf::from(QUEUE_DEFAULT_DIR),
                ..KvConfig::default()
            },
            redis_url: None,
            topic_defaults: QueueSettings::default(),
            queues,
        }
    }
}

/// How one queue delivers. `max_retries` counts retries after the first attempt: a job is
/// tried at most `max_retries + 1` times, then dead-lettered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    pub max_retries: u32,
    pub concurrency: u32,
    #[serde(rename = "type")]
    pub kind: String,
    /// FIFO queues: the `data` field whose value names a job's message group.
    pub message_group_field: Option<String>,
    /// First retry delay; doubles per retry, up to `backoff_max_ms`, with jitter.
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    /// `false`: every retry waits `backoff_ms` (no doubling).
    pub backoff_exponential: bool,
    /// Accepted for compatibility: delivery here is event driven, nothing polls.
    pub poll_interval_ms: u64,
    /// A delivery that has not answered after this long failed (and, after an engine crash,
    /// a job that was being delivered waits this long before it is delivered again).
    pub visibility_timeout_ms: u64,
    /// An `enqueue` whose `data[idempotency_field]` repeats one seen within
    /// `idempotency_window_ms` is acknowledged with the first receipt and not enqueued again.
    pub idempotency_field: Option<String>,
    pub idempotency_window_ms: u64,
    /// Jobs held (waiting, delayed, in flight) beyond which enqueues are refused.
    pub max_depth: usize,
    /// Largest `data` (compact JSON bytes) a job may carry.
    pub max_job_bytes: usize,
    /// RabbitMQ-only keys upstream; accepted and validated, not used.
    pub priority_field: Option<String>,
    pub max_priority: Option<u32>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            max_retries: 3,
            concurrency: 10,
            kind: "standard".into(),
            message_group_field: None,
            backoff_ms: 1000,
            backoff_max_ms: 60_000,
            backoff_exponential: true,
            poll_interval_ms: 100,
            visibility_timeout_ms: 30_000,
            idempotency_field: None,
            idempotency_window_ms: 600_000,
            max_depth: 100_000,
            max_job_bytes: 1 << 20,
            priority_field: None,
            max_priority: None,
        }
    }
}

impl QueueSettings {
    pub fn fifo(&self) -> bool {
        self.kind == "fifo"
    }

    /// Upstream's validation messages (§2.2), plus ours for the keys upstream lacks.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        if self.kind != "standard" && self.kind != "fifo" {
            return Err(format!(
                "Queue '{name}' has invalid type '{}'. Must be 'standard' or 'fifo'",
                self.kind
            ));
        }
        if self.fifo() && self.message_group_field.as_deref().unwrap_or("").is_empty() {
            return Err(format!(
                "Queue '{name}' is of type 'fifo' but 'message_group_field' is not set"
            ));
        }
        if self.concurrency == 0 {
            return Err(format!(
                "Queue '{name}' has 'concurrency' 0; it must be at least 1"
            ));
        }
        if let Some(p) = self.max_priority {
            if !(1..=255).contains(&p) {
                return Err(format!(
                    "Queue '{name}' has 'max_priority' {p}; it must be between 1 and 255"
                ));
            }
        }
        let zero = [
            ("visibility_timeout_ms", self.visibility_timeout_ms),
            ("max_depth", self.max_depth as u64),
            ("max_job_bytes", self.max_job_bytes as u64),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return Err(format!(
                "Queue '{name}' has '{key}' 0; it must be at least 1"
            ));
        }
        if name.contains("::") {
            return Err(format!(
                "Queue '{name}': a queue name must not contain '::' (it separates topic and function)"
            ));
        }
        Ok(())
    }
}

/// The builtin adapter's `config`: the kv store's keys, plus upstream's lenient defaults for
/// topic queues (`max_attempts` counts every attempt, as upstream).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuiltinAdapter {
    store_method: Option<StoreMethod>,
    file_path: Option<PathBuf>,
    save_interval_ms: Option<u64>,
    fsync: Option<FsyncMode>,
    compact_threshold_bytes: Option<u64>,
    max_attempts: Option<u32>,
    backoff_ms: Option<u64>,
    concurrency: Option<u32>,
    poll_interval_ms: Option<u64>,
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    name: Option<String>,
    class: Option<String>,
    #[serde(default)]
    config: Option<serde_yaml::Value>,
}

/// The redis adapter's `config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisAdapter {
    #[serde(default = "default_redis_url")]
    redis_url: String,
}

fn default_redis_url() -> String {
    "redis://localhost:6379".into()
}

impl<'de> Deserialize<'de> for QueueConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            adapter: Option<RawAdapter>,
            #[serde(default)]
            queue_configs: BTreeMap<String, QueueSettings>,
        }
        let raw = Raw::deserialize(d)?;
        let mut cfg = QueueConfig::default();
        if let Some(a) = raw.adapter {
            let name = match (a.name.as_deref(), a.class.as_deref()) {
                (Some(n), None) => n,
                (None, Some("modules::queue::BuiltinQueueAdapter")) | (None, None) => "builtin",
                (None, Some("modules::queue::RedisAdapter")) => "redis",
                (None, Some(c)) => c,
                (Some(_), Some(_)) => {
                    return Err(de::Error::custom(
                        "adapter: give either `name` or `class`, not both",
                    ))
                }
            };
            if name == "redis" {
                let r: RedisAdapter = match a.config.clone() {
                    Some(c) => RedisAdapter::deserialize(c).map_err(de::Error::custom)?,
                    None => RedisAdapter {
                        redis_url: default_redis_url(),
                    },
                };
                cfg.redis_url = Some(r.redis_url);
            } else if name != "builtin" {
                return Err(de::Error::custom(format!(
                    "iii-queue: adapter {name:?} is not supported by this engine (available: builtin, redis)"
                )));
            }
            let b: BuiltinAdapter = match a.config {
                Some(c) if name == "builtin" => {
                    BuiltinAdapter::deserialize(c).map_err(de::Error::custom)?
                }
                _ => BuiltinAdapter::default(),
            };
            let kv = &mut cfg.store;
            kv.store_method = b.store_method.unwrap_or(kv.store_method);
            kv.file_path = b.file_path.unwrap_or(kv.file_path.clone());
            kv.save_interval_ms = b.save_interval_ms;
            kv.fsync = b.fsync.unwrap_or(kv.fsync);
            kv.compact_threshold_bytes = b
                .compact_threshold_bytes
                .unwrap_or(kv.compact_threshold_bytes);
            let t = &mut cfg.topic_defaults;
            if let Some(n) = b.max_attempts {
                t.max_retries = n.saturating_sub(1);
            }
            t.backoff_ms = b.backoff_ms.unwrap_or(t.backoff_ms);
            t.concurrency = b.concurrency.unwrap_or(t.concurrency).max(1);
            t.poll_interval_ms = b.poll_interval_ms.unwrap_or(t.poll_interval_ms);
            if b.mode.as_deref() == Some("fifo") {
                t.kind = "fifo".into();
            }
        }
        for (name, settings) in raw.queue_configs {
            settings.validate(&name).map_err(de::Error::custom)?;
            cfg.queues.insert(name, settings);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<QueueConfig, String> {
        serde_yaml::from_str::<QueueConfig>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn the_redis_adapter_takes_a_url_and_nothing_else() {
        let c = parse("adapter: {name: redis, config: {redis_url: 'redis://r:7000'}}").unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://r:7000"));
        let c = parse("adapter: {name: redis}").unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://localhost:6379"));
        let c = parse("adapter: {class: modules::queue::RedisAdapter}").unwrap();
        assert!(c.redis_url.is_some());
        let e = parse("adapter: {name: redis, config: {file_path: x}}").unwrap_err();
        assert!(e.contains("unknown field `file_path`"), "{e}");
        let e = parse("adapter: {name: rabbitmq}").unwrap_err();
        assert!(e.contains("available: builtin, redis"), "{e}");
        let c = parse("adapter: {name: builtin, config: {max_attempts: 4}}").unwrap();
        assert_eq!((c.redis_url, c.topic_defaults.max_retries), (None, 3));
    }
}
