//! The HTTP module (`iii-http`, `MODULES.md` §5): its own actix-web listener on the engine's
//! runtime, and the `http` trigger type that binds a function to a method and path.
//!
//! Who sends what: the registry sends [`TriggerBinding`] (an `http` binding: the route is added
//! to or removed from the shared [`RouteTable`] at once, or refused with a reason) to the
//! [`HttpActor`]; requests are served by the listener's threads (`pipeline.rs`), which read the
//! route table and call functions through the registry. The `http` trigger type is engine-wide:
//! a public (RBAC) session may bind it only when its `allowed_trigger_types` lists it.
//!
//! Each request: CORS preflight answered here; then at most `concurrency_request_limit`
//! requests are served at once (the rest wait); a request that has no response head after
//! `default_timeout` is answered 504 with the JSON error envelope (upstream: an empty body);
//! every response gets the CORS headers.
//!
//! Files: `routes.rs` (matching, conflicts), `pipeline.rs` (one request), `response.rs`
//! (results, envelopes, CORS).

mod pipeline;
mod response;
mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::sync::Semaphore;

use crate::config::HttpConfig;
use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinTriggerType, RegisterBuiltins, TriggerBinding,
};
use crate::modules::ModuleError;
use crate::protocol::ErrorBody;
use crate::registry::Registry;
use routes::{Route, RouteTable};

/// What every request handler shares.
pub struct HttpState {
    registry: Registry,
    routes: Arc<RwLock<RouteTable>>,
    config: HttpConfig,
    global_middleware: Vec<String>,
    timeout: Duration,
    limit: Semaphore,
}

/// Keeps the route table in step with `http` bindings.
pub struct HttpActor {
    registry: Registry,
    routes: Arc<RwLock<RouteTable>>,
}

/// A started HTTP module.
pub struct HttpModule {
    pub addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
}

/// Binds the listener, starts the actor and announces the `http` trigger type.
pub fn start(
    config: &HttpConfig,
    registry: Registry,
    arbiter: &ArbiterHandle,
) -> Result<HttpModule, ModuleError> {
    let (socket, local) = crate::modules::bind(&config.bind_addr())?;
    let routes = Arc::new(RwLock::new(RouteTable::default()));
    let state = web::Data::new(HttpState {
        registry: registry.clone(),
        routes: routes.clone(),
        config: config.clone(),
        global_middleware: config.pre_handler_middleware(),
        timeout: Duration::from_millis(config.default_timeout.max(1)),
        limit: Semaphore::new(config.concurrency_request_limit.max(1)),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(usize::MAX))
            .default_service(web::to(entry))
    })
    .workers(2)
    .tcp_nodelay(true)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(socket)
    .map_err(|source| ModuleError::Listen {
        addr: local.to_string(),
        source,
    })?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let reg = registry.clone();
    let actor = HttpActor::start_in_arbiter(arbiter, move |_| HttpActor {
        registry: reg,
        routes,
    });
    registry.do_send(RegisterBuiltins {
        owner: "iii-http",
        functions: Vec::new(),
        calls: actor.clone().recipient(),
        trigger_types: vec![BuiltinTriggerType {
            id: "http".into(),
            description: "HTTP API trigger".into(),
            engine_wide: true,
        }],
        bindings: actor.recipient(),
    });
    Ok(HttpModule {
        addr: local,
        server: handle,
    })
}

impl HttpModule {
    /// Stops the listener (requests in progress get a moment to finish).
    pub async fn stop(self) {
        self.server.stop(true).await;
    }
}

/// Every request: preflight, concurrency limit, timeout, CORS headers.
async fn entry(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let cors = state.config.cors.clone();
    if let Some(r) = response::preflight(&req, cors.as_ref()) {
        return r;
    }
    let headers = req.headers().clone();
    let Ok(_permit) = state.limit.acquire().await else {
        return response::envelope(503, "SHUTTING_DOWN", "the HTTP module is stopping");
    };
    let timeout = state.timeout;
    let stage = pipeline::Stage::default();
    let served = pipeline::serve(req, payload, state.clone(), stage.clone());
    let mut resp = match tokio::time::timeout(timeout, served).await {
        Ok(r) => r,
        Err(_) if stage.get() => {
            response::envelope(504, "MIDDLEWARE_TIMEOUT", "Middleware timeout")
        }
        Err(_) => response::envelope(
            504,
            "TIMEOUT",
            &format!(
                "no response within default_timeout ({} ms)",
                timeout.as_millis()
            ),
        ),
    };
    response::decorate(&headers, cors.as_ref(), &mut resp);
    resp
}

impl Actor for HttpActor {
    type Context = Context<Self>;
}

impl Handler<TriggerBinding> for HttpActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerBinding, _ctx: &mut Self::Context) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        match msg {
            TriggerBinding::Bind {
                id,
                function_id,
                config,
                metadata,
                ..
            } => {
                let added = Route::parse(&id, &function_id, &config, metadata)
                    .and_then(|route| routes.add(route));
                if let Err(message) = added {
                    self.registry.reject_binding(id, message);
                }
            }
            TriggerBinding::Unbind { id } => {
                routes.remove(&id);
            }
        }
    }
}

impl Handler<BuiltinCall> for HttpActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, _ctx: &mut Self::Context) {
        self.registry.do_send(BuiltinDone {
            engine_id: call.engine_id,
            outcome: Err(ErrorBody::new(
                "function_not_found",
                format!("Function {} not found", call.function_id),
            )),
        });
    }
}
