//! The configuration of the in-engine service modules: `iii-state`, `iii-pubsub` and `iii-cron`
//! (`MODULES.md` §1.1, §3.1, §4.1). Strict like every module block: unknown keys are errors.

use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::modules::AdapterConfig;

/// Where file-based state lives when the config names no directory: not the stream store's
/// default (upstream shares one default directory, and the two stores then load each other's
/// files).
pub const STATE_DEFAULT_DIR: &str = "state_store_data.db";

/// The `iii-state` module.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// The kv adapter: `store_method`, `file_path` (a directory), `fsync`,
    /// `compact_threshold_bytes`.
    pub adapter: AdapterConfig,
    /// `false` suppresses every `state` trigger.
    pub triggers_enabled: bool,
    /// `state::set` and `state::update` refuse values whose compact JSON is longer (0: no
    /// limit, as upstream).
    pub max_value_bytes: Option<usize>,
    /// Accepted for compatibility: writes are logged before they are acknowledged.
    pub save_interval_ms: Option<u64>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            adapter: AdapterConfig::default(),
            triggers_enabled: true,
            max_value_bytes: None,
            save_interval_ms: None,
        }
    }
}

impl StateConfig {
    /// The store's directory: the adapter's `file_path`, unless that is the shared upstream
    /// default, which becomes [`STATE_DEFAULT_DIR`].
    pub fn directory(&self) -> PathBuf {
        let path = &self.adapter.kv.file_path;
        if *path == super::modules::KvConfig::default().file_path {
            PathBuf::from(STATE_DEFAULT_DIR)
        } else {
            path.clone()
        }
    }

    /// `max_value_bytes` with upstream's "0 means unset".
    pub fn value_limit(&self) -> Option<usize> {
        self.max_value_bytes.filter(|n| *n > 0)
    }
}

/// An `adapter: {name, config}` block of a module with named adapters; the old
/// `{class: modules::…::XAdapter}` form is mapped to the name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamedAdapter {
    pub name: String,
    pub config: Option<serde_yaml::Value>,
}

impl NamedAdapter {
    /// `config.redis_url` of a `redis` adapter (default `redis://localhost:6379`).
    pub fn redis_url(&self) -> Option<String> {
        if self.name != "redis" {
            return None;
        }
        let url = self
            .config
            .as_ref()
            .and_then(|c| c.get("redis_url"))
            .and_then(|u| u.as_str())
            .unwrap_or("redis://localhost:6379");
        Some(url.to_string())
    }

    fn parse<'de, D: Deserializer<'de>>(
        d: D,
        module: &str,
        classes: &[(&str, &str)],
        supported: &[&str],
    ) -> Result<NamedAdapter, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: Option<String>,
            class: Option<String>,
            #[serde(default)]
            config: Option<serde_yaml::Value>,
        }
        let raw = Raw::deserialize(d)?;
        let name = match (raw.name, raw.class) {
            (Some(n), None) => n,
            (None, Some(c)) => classes
                .iter()
                .find(|(class, _)| *class == c)
                .map(|(_, n)| n.to_string())
                .ok_or_else(|| {
                    de::Error::custom(format!("{module}: unknown adapter class {c:?}"))
                })?,
            (None, None) => supported[0].to_string(),
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(
                    "adapter: give either `name` or `class`, not both",
                ))
            }
        };
        if !supported.contains(&name.as_str()) {
            return Err(de::Error::custom(format!(
                "{module}: adapter {name:?} is not supported by this engine (available: {})",
                supported.join(", ")
            )));
        }
        Ok(NamedAdapter {
            name,
            config: raw.config,
        })
    }
}

/// The `iii-pubsub` module: `adapter: {name: local}`, or `{name: redis, config: {redis_url}}`
/// (messages reach the subscribers of every engine sharing that Redis).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PubSubConfig {
    pub adapter: NamedAdapter,
}

impl<'de> Deserialize<'de> for PubSubConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default, deserialize_with = "pubsub_adapter")]
            adapter: Option<NamedAdapter>,
        }
        let raw = Raw::deserialize(d)?;
        Ok(PubSubConfig {
            adapter: raw.adapter.unwrap_or(NamedAdapter {
                name: "local".into(),
                config: None,
            }),
        })
    }
}

fn pubsub_adapter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NamedAdapter>, D::Error> {
    let classes = [
        ("modules::pubsub::LocalAdapter", "local"),
        ("modules::pubsub::RedisAdapter", "redis"),
    ];
    NamedAdapter::parse(d, "iii-pubsub", &classes, &["local", "redis"]).map(Some)
}

/// The `iii-cron` module: `adapter: {name: kv, config: {lock_ttl_ms, lock_index}}` (locks per
/// engine) or `{name: redis, config: {redis_url}}` (each tick runs once across every engine
/// sharing that Redis). A cron run never overlaps itself within one engine either way.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CronConfig {
    pub adapter: NamedAdapter,
}

impl<'de> Deserialize<'de> for CronConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default, deserialize_with = "cron_adapter")]
            adapter: Option<NamedAdapter>,
        }
        let raw = Raw::deserialize(d)?;
        Ok(CronConfig {
            adapter: raw.adapter.unwrap_or(NamedAdapter {
                name: "kv".into(),
                config: None,
            }),
        })
    }
}

fn cron_adapter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NamedAdapter>, D::Error> {
    let classes = [
        ("modules::cron::KvCronAdapter", "kv"),
        ("modules::cron::RedisCronAdapter", "redis"),
    ];
    NamedAdapter::parse(d, "iii-cron", &classes, &["kv", "redis"]).map(Some)
}

/// The `iii-cluster` module (this engine's own): engines that share `redis_url` call each
/// other's functions. Each engine announces itself and its workers' functions every
/// `heartbeat_ms`; one silent for `expiry_ms` is gone, with its functions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub redis_url: String,
    pub heartbeat_ms: u64,
    pub expiry_ms: u64,
    /// How calls travel between engines: `link` (a WebSocket from the calling engine to the
    /// other engine's worker listener; the faster, measured in BENCH.md) or `redis` (Redis
    /// pub/sub, for engines that cannot reach each other directly).
    pub transport: ClusterTransport,
    /// `link`: the address other engines reach this engine's first trusted worker listener at
    /// (default, or empty: that listener's address, `127.0.0.1` when it listens on every
    /// interface).
    pub advertise_url: Option<String>,
}

/// See [`ClusterConfig::transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClusterTransport {
    #[default]
    Link,
    Redis,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: "redis://localhost:6379".into(),
            heartbeat_ms: 1000,
            expiry_ms: 5000,
            transport: ClusterTransport::Link,
            advertise_url: None,
        }
    }
}

/// The `iii-bridge` module (`MODULES.md` §7.1): this engine as a worker of another engine.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The remote engine's worker listener (default: `III_URL`, else `ws://0.0.0.0:49134`).
    #[serde(default = "default_bridge_url")]
    pub url: String,
    /// Local functions the remote engine may call.
    #[serde(default)]
    pub expose: Vec<BridgeExpose>,
    /// Local names for remote functions.
    #[serde(default)]
    pub forward: Vec<BridgeForward>,
    /// In upstream's README, refused by its code; accepted and not used.
    #[serde(default)]
    pub service_id: Option<String>,
    #[serde(default)]
    pub service_name: Option<String>,
}

fn default_bridge_url() -> String {
    std::env::var("III_URL").unwrap_or_else(|_| "ws://0.0.0.0:49134".into())
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeExpose {
    pub local_function: String,
    #[serde(default)]
    pub remote_function: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeForward {
    pub local_function: String,
    pub remote_function: String,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}
