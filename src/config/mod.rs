//! The engine's configuration file: loading, `${VAR:default}` expansion, both entry forms, and
//! strict typed structs (`PROTOCOL.md` §9).
//!
//! [`load`] reads the file, expands variables on the raw text (§9.3), parses YAML and returns an
//! [`EngineConfig`]. Both entry forms are accepted and give the same result: the seed's
//! `modules: - class: modules::worker::WorkerModule` and the newer `workers: - name:
//! iii-worker-manager` (§9.2). Every module's `config` is deserialised into its own struct with
//! unknown keys refused, so every error names the file, the entry, the key, the reason and the
//! line. Nothing here starts anything.
//!
//! Files: `mod.rs` (loading, validation), `modules.rs` (the listener, stream and exec config
//! structs), `services.rs` (state, pub/sub, cron), `queue.rs` (iii-queue), `observability.rs` (iii-observability), `http.rs` (iii-http),
//! `entries.rs` (the two entry forms and their dispatch on `name` / `class`), `env.rs`
//! (`${VAR:default}`).

mod entries;
mod env;
mod http;
mod modules;
mod observability;
mod queue;
mod services;

use std::path::Path;

use entries::{canonical_name, ModuleConfig, RawTop};
pub use env::expand_env;
pub use http::{CorsConfig, HttpConfig, HttpFunctionsConfig, MiddlewareEntry, SecurityConfig};
pub use modules::{
    AdapterConfig, ExecConfig, ExecEntry, FsyncMode, KvConfig, ListenerConfig, RbacConfig,
    RestartPolicy, StoreMethod, StreamConfig,
};
pub use observability::ObservabilityConfig;
pub use queue::{QueueConfig, QueueSettings, QUEUE_DEFAULT_DIR};
pub use services::{
    BridgeConfig, BridgeExpose, BridgeForward, ClusterConfig, ClusterTransport, CronConfig,
    NamedAdapter, PubSubConfig, StateConfig, STATE_DEFAULT_DIR,
};

/// The whole engine configuration, ready to start.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Worker listeners (`iii-worker-manager`), in file order; at least one.
    pub listeners: Vec<ListenerConfig>,
    /// The stream module (`iii-stream`), if configured.
    pub stream: Option<StreamConfig>,
    /// Exec modules (`iii-exec`), in file order.
    pub exec: Vec<ExecConfig>,
    /// The state module (`iii-state`), if configured.
    pub state: Option<StateConfig>,
    /// The pub/sub module (`iii-pubsub`), if configured.
    pub pubsub: Option<PubSubConfig>,
    /// The cron module (`iii-cron`), if configured.
    pub cron: Option<CronConfig>,
    /// The HTTP module (`iii-http`), if configured.
    pub http: Option<HttpConfig>,
    /// HTTP-invoked functions (`iii-http-functions`), if configured.
    pub http_functions: Option<HttpFunctionsConfig>,
    /// Durable queues (`iii-queue`), if configured.
    pub queue: Option<QueueConfig>,
    /// Telemetry (`iii-observability`): always running, these are its settings.
    pub observability: ObservabilityConfig,
    /// Calls across engines (`iii-cluster`), if configured.
    pub cluster: Option<ClusterConfig>,
    /// This engine as a worker of other engines (`iii-bridge`), one per entry.
    pub bridges: Vec<BridgeConfig>,
}

/// Why a configuration could not be used. The message names the file, entry and key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
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
        state: None,
        pubsub: None,
        cron: None,
        http: None,
        http_functions: None,
        queue: None,
        observability: ObservabilityConfig::default(),
        cluster: None,
        bridges: Vec::new(),
    };
    let twice = |name: &str| err(format!("{name} is configured twice; give it once"));
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
            ModuleConfig::State(c) => {
                if cfg.state.replace(*c).is_some() {
                    return Err(twice("iii-state"));
                }
            }
            ModuleConfig::PubSub(c) => {
                if cfg.pubsub.replace(c).is_some() {
                    return Err(twice("iii-pubsub"));
                }
            }
            ModuleConfig::Cron(c) => {
                if cfg.cron.replace(c).is_some() {
                    return Err(twice("iii-cron"));
                }
            }
            ModuleConfig::HttpFunctions(c) => {
                if cfg.http_functions.replace(c).is_some() {
                    return Err(twice("iii-http-functions"));
                }
            }
            ModuleConfig::Http(c) => {
                if cfg.http.replace(*c).is_some() {
                    return Err(twice("iii-http"));
                }
            }
            ModuleConfig::Queue(c) => {
                if cfg.queue.replace(*c).is_some() {
                    return Err(twice("iii-queue"));
                }
            }
            ModuleConfig::Observability(c) => cfg.observability = *c,
            ModuleConfig::Bridge(c) => cfg.bridges.push(*c),
            ModuleConfig::Cluster(c) => {
                if cfg.cluster.replace(c).is_some() {
                    return Err(twice("iii-cluster"));
                }
            }
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
    let http_port = cfg
        .http
        .as_ref()
        .map(|h| ("iii-http", h.host.clone(), h.port));
    let ports = cfg
        .listeners
        .iter()
        .map(|l| ("iii-worker-manager", l.host.clone(), l.port))
        .chain(stream_port)
        .chain(http_port);
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

#[cfg(test)]
mod tests;
