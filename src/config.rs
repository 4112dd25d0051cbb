//! The engine's configuration file: loading, `${VAR:default}` expansion, both entry forms, and
//! strict typed structs (`PROTOCOL.md` §9).
//!
//! [`load`] reads the file, expands variables on the raw text (§9.3), parses YAML and returns an
//! [`EngineConfig`]. Both entry forms are accepted and give the same result: the seed's
//! `modules: - class: modules::worker::WorkerModule` and the newer `workers: - name:
//! iii-worker-manager` (§9.2). Every module's `config` is deserialised into its own struct with
//! unknown keys refused, so every error names the file, the entry, the key, the reason and the
//! line. Nothing here starts anything.

use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::rbac::ExposeFilter;

/// The whole engine configuration, ready to start.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Worker listeners (`iii-worker-manager`), in file order; at least one.
    pub listeners: Vec<ListenerConfig>,
    /// The stream module (`iii-stream`), if configured.
    pub stream: Option<StreamConfig>,
    /// Exec modules (`iii-exec`), in file order.
    pub exec: Vec<ExecConfig>,
}

/// Why a configuration could not be used. The message names the file, entry and key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

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
            max_queued_bytes: 4 << 20,
            max_inflight_calls: 1024,
            max_outbound_bytes: 16 << 20,
            max_inflight_bytes: 256 << 20,
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

/// The stream adapter block, in either form: `{name: kv, config}` or
/// `{class: modules::stream::adapters::KvStore, config}`. Only the kv store exists here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdapterConfig {
    pub kv: KvConfig,
}

impl<'de> Deserialize<'de> for AdapterConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: Option<String>,
            class: Option<String>,
            #[serde(default)]
            config: Option<KvConfig>,
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
            "kv" | "KvStore" => Ok(AdapterConfig {
                kv: raw.config.unwrap_or_default(),
            }),
            other => Err(de::Error::custom(format!(
                "adapter {other:?} is not supported by this engine (only `kv` / KvStore)"
            ))),
        }
    }
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

/// Keys the `iii-observability` module accepts (§9.4); their values are not used here.
const OBSERVABILITY_KEYS: &[&str] = &[
    "enabled",
    "service_name",
    "service_version",
    "service_namespace",
    "exporter",
    "endpoint",
    "sampling_ratio",
    "sampling",
    "memory_max_spans",
    "live_spans",
    "metrics_enabled",
    "metrics_exporter",
    "metrics_retention_seconds",
    "metrics_max_count",
    "logs_enabled",
    "logs_exporter",
    "logs_max_count",
    "logs_retention_seconds",
    "logs_batch_size",
    "logs_flush_interval_ms",
    "logs_sampling_ratio",
    "logs_console_output",
    "alerts",
    "level",
    "format",
    "collapse_spans",
];

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

/// Upstream modules this engine does not implement; naming one stops startup.
const UNSUPPORTED: &[&str] = &[
    "iii-http",
    "iii-state",
    "iii-cron",
    "iii-pubsub",
    "iii-queue",
    "iii-http-functions",
    "iii-bridge",
];

/// A module's parsed config.
#[derive(Debug, Clone, PartialEq)]
enum ModuleConfig {
    Listener(Box<ListenerConfig>),
    Stream(Box<StreamConfig>),
    Exec(ExecConfig),
    /// A module that needs nothing from us (observability, telemetry, engine functions).
    Accepted,
}

/// One entry of `workers:` / `modules:`.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    config: ModuleConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    #[serde(default)]
    workers: Vec<Entry>,
    #[serde(default)]
    modules: Vec<Entry>,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<EngineConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        message: format!("cannot read the config file: {e}"),
    })?;
    parse(&text, &file)
}

/// Parses config text; `file` is only used in messages.
pub fn parse(text: &str, file: &str) -> Result<EngineConfig, ConfigError> {
    let err = |message: String| ConfigError {
        file: file.to_string(),
        message,
    };
    let expanded = expand_env(text, |name| std::env::var(name).ok()).map_err(err)?;
    let raw: RawTop = if expanded.trim().is_empty() {
        RawTop {
            workers: Vec::new(),
            modules: Vec::new(),
        }
    } else {
        serde_yaml::from_str(&expanded).map_err(|e| err(name_entry(&expanded, e.to_string())))?
    };
    let mut cfg = EngineConfig {
        listeners: Vec::new(),
        stream: None,
        exec: Vec::new(),
    };
    let entries = raw.workers.into_iter().chain(raw.modules);
    for entry in entries {
        match entry.config {
            ModuleConfig::Listener(l) => cfg.listeners.push(*l),
            ModuleConfig::Stream(s) => {
                if cfg.stream.is_some() {
                    return Err(err(
                        "iii-stream is configured twice; one stream module is supported".into(),
                    ));
                }
                cfg.stream = Some(*s);
            }
            ModuleConfig::Exec(e) => cfg.exec.push(e),
            ModuleConfig::Accepted => log::debug!("{file}: module {} needs no setup", entry.name),
        }
    }
    if cfg.listeners.is_empty() {
        cfg.listeners.push(ListenerConfig::default());
    }
    validate(&cfg).map_err(err)?;
    Ok(cfg)
}

/// Puts the module's name after the entry index of a message (`workers[1] (iii-stream).config…`).
fn name_entry(text: &str, message: String) -> String {
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return message;
    };
    for list in ["workers", "modules"] {
        let Some(rest) = message.strip_prefix(list).and_then(|r| r.strip_prefix('[')) else {
            continue;
        };
        let Some((index, tail)) = rest.split_once(']') else {
            continue;
        };
        let entry = index
            .parse::<usize>()
            .ok()
            .and_then(|i| doc.get(list)?.get(i));
        let name = entry.and_then(|e| e.get("name").or_else(|| e.get("class"))?.as_str());
        if let Some(name) = name {
            let name = canonical_name("class", name).unwrap_or_else(|_| name.to_string());
            return format!("{list}[{index}] ({name}){tail}");
        }
    }
    message
}

fn validate(cfg: &EngineConfig) -> Result<(), String> {
    let mut seen: Vec<(String, u16)> = Vec::new();
    let stream_port = cfg
        .stream
        .as_ref()
        .map(|s| ("iii-stream", s.host.clone(), s.port));
    let ports = cfg
        .listeners
        .iter()
        .map(|l| ("iii-worker-manager", l.host.clone(), l.port))
        .chain(stream_port);
    for (module, host, port) in ports {
        if port != 0
            && seen
                .iter()
                .any(|(h, p)| *p == port && (h == &host || h == "0.0.0.0" || host == "0.0.0.0"))
        {
            return Err(format!(
                "{module}: config.port: port {port} is used by two modules"
            ));
        }
        seen.push((host, port));
    }
    for (i, l) in cfg.listeners.iter().enumerate() {
        let at = format!("iii-worker-manager (listener {i}, port {})", l.port);
        if l.host.parse::<std::net::IpAddr>().is_err() && l.host != "localhost" {
            return Err(format!(
                "{at}: config.host: {:?} is not an IP address",
                l.host
            ));
        }
        if l.max_frame_bytes == 0 || l.max_message_bytes < l.max_frame_bytes {
            return Err(format!(
                "{at}: config.max_message_bytes must be >= max_frame_bytes > 0"
            ));
        }
        let zero = [
            ("threads", l.threads as u64),
            ("heartbeat_interval_ms", l.heartbeat_interval_ms),
            ("idle_timeout_ms", l.idle_timeout_ms),
            ("max_queued_frames", l.max_queued_frames as u64),
            ("max_queued_bytes", l.max_queued_bytes as u64),
            ("max_inflight_calls", l.max_inflight_calls as u64),
            ("max_outbound_bytes", l.max_outbound_bytes as u64),
            ("max_inflight_bytes", l.max_inflight_bytes as u64),
            ("max_invocation_timeout_ms", l.max_invocation_timeout_ms),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0);
        if let Some((key, _)) = zero {
            return Err(format!("{at}: config.{key} must be > 0"));
        }
    }
    for e in &cfg.exec {
        if !e.watch.is_empty() {
            return Err(
                "iii-exec: config.watch: file watching is not supported by this engine; \
                        use the restart policy of each exec entry instead"
                    .into(),
            );
        }
        if e.exec.is_empty() {
            return Err("iii-exec: config.exec: needs at least one command".into());
        }
        if let Some(bad) = e.exec.iter().find(|x| x.command.trim().is_empty()) {
            return Err(format!(
                "iii-exec: config.exec: empty command {:?}",
                bad.name
            ));
        }
    }
    Ok(())
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

fn canonical_name(key: &str, raw: &str) -> Result<String, String> {
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
        "iii-observability",
        "iii-telemetry",
        "iii-engine-functions",
        "configuration",
    ];
    if known.contains(&raw) {
        Ok(raw.to_string())
    } else if UNSUPPORTED.contains(&raw) {
        Err(format!("module {raw:?} is not supported by this engine"))
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
                ModuleConfig::Accepted
            }
            _ => {
                let _: serde_yaml::Value = serde_yaml::Value::deserialize(d)?;
                ModuleConfig::Accepted
            }
        })
    }
}

/// Expands `${NAME}` and `${NAME:default}` on raw text (§9.3). `lookup` reads a variable.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let (name, default) = match inner.find(':') {
            Some(i) => (&inner[..i], Some(&inner[i + 1..])),
            None => (inner, None),
        };
        if name.is_empty() {
            out.push_str(&rest[start..start + 2 + end + 1]);
        } else {
            let line = text[..text.len() - rest.len() + start]
                .lines()
                .count()
                .max(1);
            let value = match (lookup(name), default) {
                (Some(v), _) => v,
                (None, Some("__III_ENGINE_VERSION__")) => env!("CARGO_PKG_VERSION").to_string(),
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(format!(
                        "line {line}: environment variable {name} is not set and ${{{name}}} has no default (write ${{{name}:default}})"
                    ))
                }
            };
            out.push_str(&value);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
