//! The optional listener of its own for `GET /metrics` (`iii-observability`
//! `prometheus_port`, `prometheus_host`), for a scraper that should not reach the worker port.
//! Every trusted worker listener serves the same text at `/metrics` anyway.

use std::net::SocketAddr;

use actix_web::{web, App, HttpResponse, HttpServer};

use super::{bind, ModuleError};
use crate::registry::Registry;

/// A running metrics listener.
pub struct MetricsListener {
    pub addr: SocketAddr,
    pub server: actix_web::dev::ServerHandle,
}

/// Binds `host:port` and serves `/metrics` there (anything else is a 404).
pub fn start(host: &str, port: u16, registry: Registry) -> Result<MetricsListener, ModuleError> {
    let (socket, addr) = bind(&format!("{host}:{port}"))?;
    let server = HttpServer::new(move || {
        let registry = registry.clone();
        App::new().route(
            "/metrics",
            web::get().to(move || {
                let registry = registry.clone();
                async move {
                    let text = web::block(move || registry.metrics_text()).await?;
                    Ok::<_, actix_web::Error>(
                        HttpResponse::Ok()
                            .content_type("text/plain; version=0.0.4; charset=utf-8")
                            .body(text),
                    )
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(socket)
    .map_err(|source| ModuleError::Listen {
        addr: addr.to_string(),
        source,
    })?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(MetricsListener {
        addr,
        server: handle,
    })
}
