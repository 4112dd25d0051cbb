//! Each module's configuration, as strict structs: unknown keys are errors naming the key, and
//! every field has its default.

use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use crate::rbac::ExposeFilter;

/// One `iii-worker-manager` listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    pub host: String,
    pub port: u16,
    /// Deadline for reading the HTTP upgrade request.
    pub handshake_timeout_ms: u64,
    pub middleware_function_id: Option<String>,
    pub rbac: Option<RbacConfig>,
    /// Serve this directory over plain HTTP GET on the listener (WebSocket upgrades still go to
    /// the worker protocol). Relative paths are taken from the engine's working directory.
    pub static_dir: Option<PathBuf>,
    /// Engine-side deadline for calls made on this listener (`timeout_ms` on a call overrides).
    pub invocation_timeout_ms: u64,
    /// Deadline for the auth function and registration hooks.
    pub auth_timeout_ms: u64,
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    /// Frames read from one connection and not yet handled; at this many the engine stops
    /// reading the connection's socket until it has caught up (never refuses them).
    pub max_queued_frames: usize,
    /// The same limit in bytes (also bounds what a connection may send while its auth function
    /// or a registration hook runs).
    pub max_queued_bytes: usize,
    /// Calls one connection may have in flight; at this many its socket is not read until
    /// some are answered.
    pub max_inflight_calls: usize,
    /// Bytes queued for one connection and not yet written to it; past this the engine stops
    /// reading the connection (it is not reading its replies), and past 4× it is disconnected.
    pub max_outbound_bytes: usize,
    /// Bytes held for all connections of this listener together: unfinished fragmented
    /// messages and frames not yet handled. A connection that would pass it waits (or, with an
    /// unfinished message that cannot fit, is closed with 1013).
    pub max_inflight_bytes: usize,
    /// A connection over its outbound limit that has not written anything for this long is
    /// not reading its socket: it is closed and its calls fail (`invocation_stopped`).
    pub write_stall_timeout_ms: u64,
    /// Longest `timeout_ms` a session on an RBAC listener may ask for.
    pub max_invocation_timeout_ms: u64,
    /// Triggers one session on an RBAC listener may have registered at once.
    pub max_triggers_per_session: usize,
    /// Functions one session on an RBAC listener may have registered at once.
    pub max_functions_per_session: usize,
    /// The engine pings every connection this often...
    pub heartbeat_interval_ms: u64,
    /// ...and closes one that sent nothing (not even a pong) for this long.
    pub idle_timeout_ms: u64,
    /// HTTP worker threads for this listener.
    pub threads: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            host: "0.0.0.0".into(),
            port: 49134,
            handshake_timeout_ms: 10_000,
            middleware_function_id: None,
            rbac: None,
            static_dir: None,
            invocation_timeout_ms: 30_000,
            auth_timeout_ms: 5_000,
            max_frame_bytes: 16 << 20,
            max_message_bytes: 64 << 20,
            max_queued_frames: 256,
            max_queued_bytes: 1 << 20,
            max_inflight_calls: 1024,
            max_outbound_bytes: 16 << 20,
            max_inflight_bytes: 128 << 20,
            write_stall_timeout_ms: 10_000,
            max_invocation_timeout_ms: 30_000,
            max_triggers_per_session: 100,
            max_functions_per_session: 1000,
            heartbeat_interval_ms: 20_000,
            idle_timeout_ms: 60_000,
            threads: 2,
        }
    }
}

impl ListenerConfig {
    /// The flow-control limits of one connection on this listener.
    pub fn flow_limits(&self) -> crate::flow::Limits {
        crate::flow::Limits {
            queued_frames: self.max_queued_frames.max(1),
            queued_bytes: self.max_queued_bytes.max(1),
            inflight_calls: self.max_inflight_calls.max(1),
            outbound_bytes: self.max_outbound_bytes.max(1),
        }
    }

    /// The address to bind.
    pub fn bind_addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The `rbac:` block of a listener (§7.1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacConfig {
    #[serde(default)]
    pub auth_function_id: Option<String>,
    #[serde(default, deserialize_with = "expose_filters")]
    pub expose_functions: Vec<ExposeFilter>,
    #[serde(default)]
    pub on_function_registration_function_id: Option<String>,
    #[serde(default)]
    pub on_trigger_registration_function_id: Option<String>,
    #[serde(default)]
    pub on_trigger_type_registration_function_id: Option<String>,
}

fn expose_filters<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ExposeFilter>, D::Error> {
    let raw: Vec<Value> = Vec::deserialize(d)?;
    raw.iter()
        .enumerate()
        .map(|(i, v)| {
            ExposeFilter::from_value(v)
                .map_err(|e| de::Error::custom(format!("expose_functions[{i}]: {e}")))
        })
        .collect()
}

/// The `iii-stream` module (§6.3, §9.4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    pub host: String,
    pub port: u16,
    pub auth_function: Option<String>,
    pub adapter: AdapterConfig,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            host: "0.0.0.0".into(),
            port: 3112,
            auth_function: None,
            adapter: AdapterConfig::default(),
        }
    }
}

impl StreamConfig {
    pub fn bind_addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The stream (and state) adapter block, in either form: `{name: kv, config}` or
/// `{class: modules::stream::adapters::KvStore, config}`; `redis` and `bridge` as well.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdapterConfig {
    pub kv: KvConfig,
    /// `{name: redis, config: {redis_url}}`: the data lives in that Redis.
    pub redis_url: Option<String>,
    /// `{name: bridge, config: {bridge_url}}`: calls go to that engine (iii-state, iii-stream).
    pub bridge_url: Option<String>,
}

impl<'de> Deserialize<'de> for AdapterConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: Option<String>,
            class: Option<String>,
            #[serde(default)]
            config: Option<serde_yaml::Value>,
        }
        let raw = Raw::deserialize(d)?;
        let kind = match (raw.name.as_deref(), raw.class.as_deref()) {
            (Some(n), None) => n.to_string(),
            (None, Some(c)) => c.rsplit("::").next().unwrap_or(c).to_string(),
            (None, None) => "kv".to_string(),
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(
                    "adapter: give either `name` or `class`, not both",
                ))
            }
        };
        match kind.as_str() {
            "kv" | "KvStore" => {
                let kv = match raw.config {
                    Some(c) => KvConfig::deserialize(c).map_err(de::Error::custom)?,
                    None => KvConfig::default(),
                };
                Ok(AdapterConfig {
                    kv,
                    redis_url: None,
                    bridge_url: None,
                })
            }
            "redis" | "RedisAdapter" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct RedisRaw {
                    #[serde(default = "default_redis_url")]
                    redis_url: String,
                }
                let r = match raw.config {
                    Some(c) => RedisRaw::deserialize(c).map_err(de::Error::custom)?,
                    None => RedisRaw {
                        redis_url: default_redis_url(),
                    },
                };
                Ok(AdapterConfig {
                    kv: KvConfig::default(),
                    redis_url: Some(r.redis_url),
                    bridge_url: None,
                })
            }
            "bridge" | "Bridge" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct BridgeRaw {
                    #[serde(default = "default_bridge_url")]
                    bridge_url: String,
                }
                let b = match raw.config {
                    Some(c) => BridgeRaw::deserialize(c).map_err(de::Error::custom)?,
                    None => BridgeRaw {
                        bridge_url: default_bridge_url(),
                    },
                };
                Ok(AdapterConfig {
                    kv: KvConfig::default(),
                    redis_url: None,
                    bridge_url: Some(b.bridge_url),
                })
            }
            other => Err(de::Error::custom(format!(
                "adapter {other:?} is not supported by this engine (`kv` / KvStore, `redis` or `bridge`)"
            ))),
        }
    }
}

fn default_bridge_url() -> String {
    "ws://localhost:49134".into()
}

fn default_redis_url() -> String {
    "redis://localhost:6379".into()
}

/// Where and how the kv adapter keeps data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreMethod {
    #[default]
    InMemory,
    FileBased,
}

/// When the store's log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    #[default]
    EverySecond,
    Always,
}

/// The kv adapter's `config`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvConfig {
    pub store_method: StoreMethod,
    /// A directory.
    pub file_path: PathBuf,
    /// Accepted for compatibility; writes are logged before they are acknowledged, so there is
    /// no save interval.
    pub save_interval_ms: Option<u64>,
    /// Accepted for compatibility; subscribers have bounded queues of their own.
    pub channel_size: Option<usize>,
    pub fsync: FsyncMode,
    /// Compact the log into a snapshot once it is bigger than this.
    pub compact_threshold_bytes: u64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            store_method: StoreMethod::InMemory,
            file_path: PathBuf::from("kv_store_data.db"),
            save_interval_ms: None,
            channel_size: None,
            fsync: FsyncMode::EverySecond,
            compact_threshold_bytes: 64 << 20,
        }
    }
}

/// One `iii-exec` module.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    pub exec: Vec<ExecEntry>,
    /// Upstream's file watcher; refused here with a clear message if non-empty.
    #[serde(default)]
    pub watch: Vec<String>,
    /// Grace period between SIGTERM and SIGKILL on shutdown.
    #[serde(default = "default_grace_ms")]
    pub stop_grace_ms: u64,
}

fn default_grace_ms() -> u64 {
    3_000
}

/// One command of an exec module: a plain string, or a map with extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecEntry {
    pub command: String,
    pub name: Option<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub restart: RestartPolicy,
}

/// What happens when a command exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl<'de> Deserialize<'de> for ExecEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Plain(String),
            Full(Full),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            command: String,
            name: Option<String>,
            cwd: Option<PathBuf>,
            #[serde(default)]
            env: std::collections::BTreeMap<String, String>,
            #[serde(default)]
            restart: RestartPolicy,
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            de::Error::custom(
                "an exec entry is a command string or {command, name?, cwd?, env?, restart?: always|on-failure|never}",
            )
        })?;
        Ok(match raw {
            Raw::Plain(command) => ExecEntry {
                command,
                name: None,
                cwd: None,
                env: Vec::new(),
                restart: RestartPolicy::Always,
            },
            Raw::Full(f) => ExecEntry {
                command: f.command,
                name: f.name,
                cwd: f.cwd,
                env: f.env.into_iter().collect(),
                restart: f.restart,
            },
        })
    }
}
