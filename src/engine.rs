//! Boot and shutdown: turns an [`EngineConfig`] into running actors and listeners, and stops
//! them in order.
//!
//! Start order: the registry on its own arbiter (thread), then the engine-hosted modules, then
//! the listeners (so a worker never connects before the functions it may call exist), then the
//! exec modules (so the processes they start find their listener, whose address they get as
//! `III_URL`). Stop order is the reverse.
//! Fallible setup (binding ports, opening the data directory) happens here, before anything
//! is announced as ready; an error names the module and the reason.

use std::sync::Arc;

use actix::prelude::*;
use serde_json::{json, Value};

use crate::config::EngineConfig;
use crate::modules::{
    bridge, cluster, cron, exec, http, http_functions, observability, prometheus, pubsub, queue,
    state, stream, worker, worker_log,
};
use crate::registry::Registry;

/// Whether `III_FAULT_INJECTION=1` is set: then the engine also has functions that make it fail
/// on purpose (`engine::fault::panic`, `stream::fault::panic`), for the tests that check it
/// stops cleanly. Never set it in production.
pub fn fault_injection() -> bool {
    std::env::var_os("III_FAULT_INJECTION").is_some_and(|v| v == "1")
}

/// A running engine.
pub struct Engine {
    stream: Option<stream::StreamModule>,
    state: Option<state::StateModule>,
    queue: Option<queue::QueueModule>,
    http: Option<http::HttpModule>,
    metrics: Option<prometheus::MetricsListener>,
    listeners: Vec<(worker::Listener, bool)>,
    exec: Vec<exec::ExecModule>,
    arbiters: Vec<Arbiter>,
    /// Flipped at stop: every socket closes with 1001 so the servers stop at once.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[error("{module}: {source}")]
pub struct StartError {
    pub module: String,
    #[source]
    pub source: crate::modules::ModuleError,
}

/// Connects a module's Redis adapter, or names the module that could not start.
async fn redis_for(
    module: &str,
    url: &str,
) -> Result<(redis::Client, redis::aio::ConnectionManager), StartError> {
    crate::redis::connect(url).await.map_err(|e| StartError {
        module: module.into(),
        source: crate::modules::ModuleError::Redis(e),
    })
}

/// [`redis_for`] when the module has a Redis adapter (`url`).
async fn redis_if(
    module: &str,
    url: Option<&str>,
) -> Result<Option<(redis::Client, redis::aio::ConnectionManager)>, StartError> {
    match url {
        Some(url) => redis_for(module, url).await.map(Some),
        None => Ok(None),
    }
}

impl Engine {
    /// Starts everything the config names. Must run inside an actix system.
    pub async fn start(config: EngineConfig) -> Result<Engine, StartError> {
        let registry_arbiter = Arbiter::new();
        let registry = Registry::start(registry_arbiter.handle());
        // The light service modules (pub/sub, cron, engine::log::*) share one thread.
        let services = Arbiter::new();
        let (_telemetry, observability) =
            observability::start(&config.observability, registry.clone());
        worker_log::start(registry.clone(), &services.handle());
        // Redis adapters connect first: an unreachable Redis stops the boot, naming the module.
        let pubsub_url = config.pubsub.as_ref().and_then(|c| c.adapter.redis_url());
        let pubsub_redis = redis_if("iii-pubsub", pubsub_url.as_deref()).await?;
        let cron_url = config.cron.as_ref().and_then(|c| c.adapter.redis_url());
        let cron_redis = redis_if("iii-cron", cron_url.as_deref())
            .await?
            .map(|r| r.1);
        let stream_redis = redis_if(
            "iii-stream",
            config
                .stream
                .as_ref()
                .and_then(|c| c.adapter.redis_url.as_deref()),
        )
        .await?;
        let state_redis = redis_if(
            "iii-state",
            config
                .state
                .as_ref()
                .and_then(|c| c.adapter.redis_url.as_deref()),
        )
        .await?;
        let queue_redis = redis_if(
            "iii-queue",
            config.queue.as_ref().and_then(|c| c.redis_url.as_deref()),
        )
        .await?;
        if config.pubsub.is_some() {
            pubsub::start(registry.clone(), &services.handle(), pubsub_redis);
        }
        for cfg in &config.bridges {
            bridge::start(cfg, registry.clone(), &services.handle());
        }
        let mut cluster_actor = None;
        if let Some(cfg) = &config.cluster {
            let redis = redis_for("iii-cluster", &cfg.redis_url).await?;
            cluster_actor = Some(cluster::start(
                cfg,
                registry.clone(),
                &services.handle(),
                redis,
            ));
        }
        if config.cron.is_some() {
            cron::start(registry.clone(), &services.handle(), cron_redis);
        }
        if let Some(cfg) = &config.http_functions {
            http_functions::start(cfg.security.clone(), registry.clone(), &services.handle());
            registry.allow_http_functions(cfg.security.clone());
        }
        let mut engine = Engine {
            stream: None,
            state: None,
            queue: None,
            http: None,
            metrics: None,
            listeners: Vec::new(),
            exec: Vec::new(),
            arbiters: vec![registry_arbiter, services, observability],
            shutdown: tokio::sync::watch::channel(false).0,
        };
        if let Some(cfg) = &config.stream {
            let shutdown = engine.shutdown.subscribe();
            match stream::start(cfg, registry.clone(), shutdown, stream_redis) {
                Ok(module) => {
                    log::info!("iii-stream consumer socket on ws://{}", module.addr);
                    engine.stream = Some(module);
                }
                Err(source) => {
                    engine.stop().await;
                    return Err(StartError {
                        module: "iii-stream".into(),
                        source,
                    });
                }
            }
        }
        if let Some(cfg) = &config.state {
            match state::start(cfg, registry.clone(), state_redis) {
                Ok(module) => engine.state = Some(module),
                Err(source) => {
                    engine.stop().await;
                    return Err(StartError {
                        module: "iii-state".into(),
                        source,
                    });
                }
            }
        }
        if let Some(cfg) = &config.queue {
            match queue::start(cfg, registry.clone(), queue_redis) {
                Ok(module) => engine.queue = Some(module),
                Err(source) => {
                    engine.stop().await;
                    return Err(StartError {
                        module: "iii-queue".into(),
                        source,
                    });
                }
            }
        }
        if let Some(cfg) = &config.http {
            match http::start(cfg, registry.clone(), &engine.arbiters[1].handle()) {
                Ok(module) => {
                    log::info!("iii-http on http://{}", module.addr);
                    engine.http = Some(module);
                }
                Err(source) => {
                    engine.stop().await;
                    return Err(StartError {
                        module: "iii-http".into(),
                        source,
                    });
                }
            }
        }
        for (i, l) in config.listeners.iter().enumerate() {
            let rbac = l.rbac.is_some();
            match worker::start(
                Arc::new(l.clone()),
                registry.clone(),
                engine.shutdown.subscribe(),
            ) {
                Ok(listener) => {
                    log::info!(
                        "iii-worker-manager listener {i}{} on ws://{}",
                        if rbac { " (rbac)" } else { "" },
                        listener.addr
                    );
                    engine.listeners.push((listener, rbac));
                }
                Err(source) => {
                    engine.stop().await;
                    return Err(StartError {
                        module: format!("iii-worker-manager listener {i}"),
                        source,
                    });
                }
            }
        }
        if let Some(port) = config.observability.prometheus_port {
            let host = &config.observability.prometheus_host;
            match prometheus::start(host, port, registry.clone()) {
                Ok(m) => {
                    log::info!("/metrics on http://{}/metrics", m.addr);
                    engine.metrics = Some(m);
                }
                Err(source) => {
                    engine.stop().await;
                    return Err(StartError {
                        module: "iii-observability (prometheus_port)".into(),
                        source,
                    });
                }
            }
        }
        let iii_url = engine.trusted_url();
        if let (Some(actor), Some(cfg)) = (&cluster_actor, &config.cluster) {
            // Other engines link to the first trusted listener (none: they use Redis).
            let has_trusted = engine.listeners.iter().any(|(_, rbac)| !rbac);
            let url = (cfg.advertise_url.clone())
                .filter(|u| !u.is_empty())
                .or(has_trusted.then(|| iii_url.clone()));
            if let Some(url) = url {
                actor.do_send(cluster::Advertise(url));
            }
        }
        for (i, cfg) in config.exec.iter().enumerate() {
            let name = cfg
                .exec
                .last()
                .and_then(|e| e.name.clone())
                .unwrap_or_else(|| format!("exec[{i}]"));
            let restarts = registry.metrics().exec_restarts(&name);
            engine
                .exec
                .push(exec::start(i, cfg, iii_url.clone(), restarts));
        }
        Ok(engine)
    }

    /// `ws://127.0.0.1:<port>` of the first listener without `rbac` (else the first one): what
    /// the processes the engine starts receive as `III_URL`.
    fn trusted_url(&self) -> String {
        let pick = self
            .listeners
            .iter()
            .find(|(_, rbac)| !rbac)
            .or(self.listeners.first());
        let Some((l, _)) = pick else {
            return String::new();
        };
        let ip = match l.addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        format!("ws://{ip}:{}", l.addr.port())
    }

    /// What `--ready-file` receives: the bound addresses, for tests and tools.
    pub fn ready_info(&self) -> Value {
        let listeners: Vec<Value> = self
            .listeners
            .iter()
            .map(|(l, rbac)| json!({"url": format!("ws://{}", l.addr), "port": l.addr.port(), "rbac": rbac}))
            .collect();
        let stream = self.stream.as_ref().map(|s| format!("ws://{}", s.addr));
        let http = self.http.as_ref().map(|h| format!("http://{}", h.addr));
        let metrics = self
            .metrics
            .as_ref()
            .map(|m| format!("http://{}/metrics", m.addr));
        json!({"pid": std::process::id(), "listeners": listeners, "stream": stream, "http": http,
               "metrics": metrics})
    }

    /// Stops the processes the engine started, then listeners (closing every connection),
    /// then the store and the actors: reverse start order.
    pub async fn stop(self) {
        for e in self.exec {
            e.stop().await;
        }
        let _ = self.shutdown.send(true);
        if let Some(h) = self.http {
            h.stop().await;
        }
        if let Some(m) = self.metrics {
            m.server.stop(true).await;
        }
        let stops = self.listeners.iter().map(|(l, _)| l.server.stop(true));
        futures_util::future::join_all(stops).await;
        if let Some(s) = self.stream {
            s.stop().await;
        }
        if let Some(s) = self.state {
            s.stop().await;
        }
        if let Some(q) = self.queue {
            q.stop().await;
        }
        for a in self.arbiters {
            a.stop();
        }
        log::info!("engine stopped");
    }
}
