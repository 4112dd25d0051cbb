//! The entries of `workers:` and `modules:`: both forms (`name` / `class`), which module each
//! one is, and the dispatch of its `config` to the right struct so that errors keep their path
//! and line.

use super::http::{HttpConfig, HttpFunctionsConfig};
use super::modules::{ExecConfig, ListenerConfig, StreamConfig};
use super::observability::{ObservabilityConfig, KEYS as OBSERVABILITY_KEYS};
use super::queue::QueueConfig;
use super::services::{BridgeConfig, ClusterConfig, CronConfig, PubSubConfig, StateConfig};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Old `class` names → new `name`s (§9.2).
const CLASS_NAMES: &[(&str, &str)] = &[
    ("modules::worker::WorkerModule", "iii-worker-manager"),
    ("modules::stream::StreamModule", "iii-stream"),
    ("modules::shell::ExecModule", "iii-exec"),
    ("modules::observability::OtelModule", "iii-observability"),
    ("modules::api::RestApiModule", "iii-http"),
    ("modules::state::StateModule", "iii-state"),
    ("modules::cron::CronModule", "iii-cron"),
    ("modules::pubsub::PubSubModule", "iii-pubsub"),
    ("modules::queue::QueueModule", "iii-queue"),
    (
        "modules::http_functions::HttpFunctionsModule",
        "iii-http-functions",
    ),
    ("modules::bridge_client::BridgeClientModule", "iii-bridge"),
    (
        "modules::engine_fn::EngineFunctionsModule",
        "iii-engine-functions",
    ),
    ("modules::telemetry::TelemetryModule", "iii-telemetry"),
];

/// A module's parsed config.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ModuleConfig {
    Listener(Box<ListenerConfig>),
    Stream(Box<StreamConfig>),
    Exec(ExecConfig),
    State(Box<StateConfig>),
    PubSub(PubSubConfig),
    Cron(CronConfig),
    Http(Box<HttpConfig>),
    HttpFunctions(HttpFunctionsConfig),
    Queue(Box<QueueConfig>),
    Observability(Box<ObservabilityConfig>),
    Cluster(ClusterConfig),
    Bridge(Box<BridgeConfig>),
    /// A module that needs nothing from us (observability, telemetry, engine functions).
    Accepted,
}

/// One entry of `workers:` / `modules:`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub name: String,
    pub config: ModuleConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTop {
    #[serde(default)]
    pub workers: Vec<Entry>,
    #[serde(default)]
    pub modules: Vec<Entry>,
}

// ---- entry deserialisation: dispatch on `name` / `class` so errors keep their path and line ----

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = Entry;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a module entry {name: <module>, config: {...}} or {class: <module class>, config: {...}}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        let mut name: Option<String> = None;
        let mut config: Option<ModuleConfig> = None;
        let mut buffered: Option<serde_yaml::Value> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" | "class" => {
                    if name.is_some() {
                        return Err(de::Error::custom("give either `name` or `class`, once"));
                    }
                    let raw: String = map.next_value()?;
                    name = Some(canonical_name(&key, &raw).map_err(de::Error::custom)?);
                }
                "config" => match &name {
                    Some(n) => config = Some(map.next_value_seed(ConfigSeed(n))?),
                    None => buffered = Some(map.next_value()?),
                },
                "image" => {
                    let _: serde_yaml::Value = map.next_value()?;
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{other}` in a module entry (expected name/class, config)"
                    )))
                }
            }
        }
        let name =
            name.ok_or_else(|| de::Error::custom("a module entry needs `name` (or `class`)"))?;
        let config = match (config, buffered) {
            (Some(c), _) => c,
            (None, Some(v)) => ConfigSeed(&name)
                .deserialize(v)
                .map_err(de::Error::custom)?,
            (None, None) => ConfigSeed(&name)
                .deserialize(serde_yaml::Value::Null)
                .map_err(de::Error::custom)?,
        };
        Ok(Entry { name, config })
    }
}

pub(super) fn canonical_name(key: &str, raw: &str) -> Result<String, String> {
    if key == "class" {
        return CLASS_NAMES
            .iter()
            .find(|(c, _)| *c == raw)
            .map(|(_, n)| n.to_string())
            .ok_or_else(|| format!("unknown module class {raw:?}"));
    }
    let known = [
        "iii-worker-manager",
        "iii-stream",
        "iii-exec",
        "iii-state",
        "iii-pubsub",
        "iii-http",
        "iii-http-functions",
        "iii-cron",
        "iii-queue",
        "iii-cluster",
        "iii-bridge",
        "iii-observability",
        "iii-telemetry",
        "iii-engine-functions",
        "configuration",
    ];
    if known.contains(&raw) {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "unknown module {raw:?} (known: {})",
            known.join(", ")
        ))
    }
}

/// Deserialises a module's `config` into the struct its module name calls for.
struct ConfigSeed<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for ConfigSeed<'_> {
    type Value = ModuleConfig;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ModuleConfig, D::Error> {
        Ok(match self.0 {
            "iii-worker-manager" => {
                let c: Option<ListenerConfig> = Option::deserialize(d)?;
                ModuleConfig::Listener(Box::new(c.unwrap_or_default()))
            }
            "iii-stream" => {
                let c: Option<StreamConfig> = Option::deserialize(d)?;
                ModuleConfig::Stream(Box::new(c.unwrap_or_default()))
            }
            "iii-exec" => {
                let c: Option<ExecConfig> = Option::deserialize(d)?;
                ModuleConfig::Exec(c.ok_or_else(|| {
                    de::Error::custom("iii-exec needs a config with an `exec` list")
                })?)
            }
            "iii-state" => {
                let c: Option<StateConfig> = Option::deserialize(d)?;
                ModuleConfig::State(Box::new(c.unwrap_or_default()))
            }
            "iii-bridge" => {
                let c: Option<BridgeConfig> = Option::deserialize(d)?;
                let c = c.unwrap_or_else(|| BridgeConfig {
                    url: std::env::var("III_URL").unwrap_or_else(|_| "ws://0.0.0.0:49134".into()),
                    expose: Vec::new(),
                    forward: Vec::new(),
                    service_id: None,
                    service_name: None,
                });
                ModuleConfig::Bridge(Box::new(c))
            }
            "iii-cluster" => {
                let c: Option<ClusterConfig> = Option::deserialize(d)?;
                ModuleConfig::Cluster(c.unwrap_or_default())
            }
            "iii-queue" => {
                let c: Option<QueueConfig> = Option::deserialize(d)?;
                ModuleConfig::Queue(Box::new(c.unwrap_or_default()))
            }
            "iii-http-functions" => {
                let c: Option<HttpFunctionsConfig> = Option::deserialize(d)?;
                ModuleConfig::HttpFunctions(c.unwrap_or_default())
            }
            "iii-http" => {
                let c: Option<HttpConfig> = Option::deserialize(d)?;
                ModuleConfig::Http(Box::new(c.unwrap_or_default()))
            }
            "iii-pubsub" => {
                let c: Option<PubSubConfig> = Option::deserialize(d)?;
                ModuleConfig::PubSub(c.unwrap_or_else(|| PubSubConfig {
                    adapter: super::services::NamedAdapter {
                        name: "local".into(),
                        config: None,
                    },
                }))
            }
            "iii-cron" => {
                let c: Option<CronConfig> = Option::deserialize(d)?;
                ModuleConfig::Cron(c.unwrap_or_else(|| CronConfig {
                    adapter: super::services::NamedAdapter {
                        name: "kv".into(),
                        config: None,
                    },
                }))
            }
            "iii-observability" => {
                let c: Option<serde_yaml::Mapping> = Option::deserialize(d)?;
                for key in c.iter().flat_map(|m| m.keys()) {
                    let k = key.as_str().unwrap_or("");
                    if !OBSERVABILITY_KEYS.contains(&k) {
                        return Err(de::Error::custom(format!(
                            "unknown key `{k}` for iii-observability"
                        )));
                    }
                }
                let parsed: ObservabilityConfig = match c {
                    Some(m) => serde_yaml::from_value(serde_yaml::Value::Mapping(m))
                        .map_err(|e| de::Error::custom(format!("iii-observability: {e}")))?,
                    None => ObservabilityConfig::default(),
                };
                ModuleConfig::Observability(Box::new(parsed))
            }
            _ => {
                let _: serde_yaml::Value = serde_yaml::Value::deserialize(d)?;
                ModuleConfig::Accepted
            }
        })
    }
}
