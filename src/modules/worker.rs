//! The worker listener module (`iii-worker-manager`): one actix-web server per configured
//! listener.
//!
//! Routes: `GET /` upgrades to the worker protocol (a [`WorkerSession`] per socket), `GET /otel`
//! upgrades to a telemetry-only socket that is drained, `GET /ws/channels/{id}` attaches one end
//! of a channel (`crate::channels`), `GET /metrics` answers the Prometheus text on a trusted
//! listener (`crate::metrics`), `/console` serves the operator console on a trusted
//! listener and 404 on an RBAC one (`crate::modules::console`), and — when the listener has a
//! `static_dir` — every other plain GET (and `/` without an upgrade) serves a file from that
//! directory, so one origin carries both the page and its socket. Files are served by
//! actix-files (ETag, Last-Modified, 304, ranges; `Cache-Control: no-cache`, so a reload
//! revalidates instead of downloading everything); a path that resolves outside the directory
//! (through `..`, or a symlink) is not served.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{http::header, web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{Map, Value};

use crate::channels::{AttachError, ChannelSession, Side};
use crate::config::ListenerConfig;
use crate::flow::{Budget, Flow};
use crate::modules::ModuleError;
use crate::registry::Registry;
use crate::router::PeerInfo;
use crate::session::{SessionKind, WorkerSession};
use crate::socket::{self, Shutdown};

/// How stale actix-http's cached clock can be (it refreshes every 500 ms).
const HTTP_CLOCK_SLACK_MS: u64 = 500;

/// Shared state of one listener's HTTP workers.
#[derive(Clone)]
struct ListenerState {
    config: Arc<ListenerConfig>,
    registry: Registry,
    static_dir: Option<PathBuf>,
    /// Bytes held for all of this listener's sockets (`max_inflight_bytes`).
    budget: Arc<Budget>,
    shutdown: Shutdown,
}

/// A started listener.
pub struct Listener {
    pub addr: SocketAddr,
    pub server: actix_web::dev::ServerHandle,
}

/// Binds and starts one listener. Binding errors name the address.
pub fn start(
    config: Arc<ListenerConfig>,
    registry: Registry,
    shutdown: Shutdown,
) -> Result<Listener, ModuleError> {
    let (socket, local) = crate::modules::bind(&config.bind_addr())?;
    // Files are served only from inside the directory as it really is (symlinks resolved).
    let static_dir = match &config.static_dir {
        Some(dir) if dir.is_dir() => {
            Some(dir.canonicalize().map_err(|e| ModuleError::StaticDir {
                path: dir.clone(),
                reason: e.to_string(),
            })?)
        }
        Some(dir) => {
            return Err(ModuleError::StaticDir {
                path: dir.clone(),
                reason: "not a directory".into(),
            })
        }
        None => None,
    };
    let state = ListenerState {
        static_dir,
        budget: Budget::new(config.max_inflight_bytes),
        config: config.clone(),
        registry,
        shutdown,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/", web::get().to(root))
            .route("/otel", web::get().to(otel))
            .route("/ws/channels/{id}", web::get().to(channel))
            .route("/metrics", web::get().to(metrics))
            .configure(crate::modules::console::routes(state.config.rbac.is_none()))
            .default_service(web::to(static_file))
    })
    .workers(config.threads)
    // Frames are small and latency matters: no Nagle delay on replies.
    .tcp_nodelay(true)
    .disable_signals()
    .shutdown_timeout(2)
    // actix-http starts this deadline from a clock it refreshes every 500 ms, so a deadline
    // shorter than that could already be over when a request arrives (an immediate 408 to a
    // client that sent its upgrade at once). The slack makes the configured time a minimum.
    .client_request_timeout(Duration::from_millis(
        config.handshake_timeout_ms + HTTP_CLOCK_SLACK_MS,
    ))
    .client_disconnect_timeout(Duration::from_millis(1_000))
    .listen(socket)
    .map_err(|source| ModuleError::Listen {
        addr: local.to_string(),
        source,
    })?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(Listener {
        addr: local,
        server: handle,
    })
}

fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn root(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ListenerState>,
) -> actix_web::Result<HttpResponse> {
    if !is_upgrade(&req) {
        return static_file(req, state).await;
    }
    upgrade(req, payload, &state, SessionKind::Worker)
}

/// `GET /metrics`: the Prometheus text on a trusted listener; on an RBAC listener the path is
/// an ordinary static path (404 unless the page has such a file).
async fn metrics(
    req: HttpRequest,
    state: web::Data<ListenerState>,
) -> actix_web::Result<HttpResponse> {
    if state.config.rbac.is_some() {
        return static_file(req, state).await;
    }
    let registry = state.registry.clone();
    let text = web::block(move || registry.metrics_text()).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

async fn otel(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ListenerState>,
) -> actix_web::Result<HttpResponse> {
    upgrade(req, payload, &state, SessionKind::Telemetry)
}

fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: &ListenerState,
    kind: SessionKind,
) -> actix_web::Result<HttpResponse> {
    let flow = Flow::new(state.config.flow_limits(), state.budget.clone());
    let session = WorkerSession::new(
        kind,
        state.registry.clone(),
        state.config.clone(),
        peer_info(&req),
    );
    socket::upgrade(
        session,
        WorkerSession::limits(&state.config),
        flow,
        state.budget.clone(),
        state.shutdown.clone(),
        &req,
        payload,
    )
}

/// `GET /ws/channels/{id}?key=<access key>&dir=read|write`: attaches one end of a channel
/// (the key is the capability: no session, no RBAC). Unknown channel or key → 404; a bad
/// query → 400; an end already attached → upgraded and closed at once.
async fn channel(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<ListenerState>,
) -> actix_web::Result<HttpResponse> {
    let query = query_params(req.query_string());
    let text = |k: &str| {
        let raw = query.get(k)?.as_array()?.last()?.as_str()?;
        percent_decode(raw)
    };
    let (Some(key), Some(side)) = (text("key"), text("dir").as_deref().and_then(Side::parse))
    else {
        return Ok(HttpResponse::BadRequest().body("key and dir=read|write are required"));
    };
    let Ok(id) = path.parse::<uuid::Uuid>() else {
        return Ok(HttpResponse::NotFound().body("Channel not found"));
    };
    let end = match state.registry.channels().attach(id, &key, side) {
        Ok(end) => Some(end),
        Err(AttachError::Taken) => None,
        Err(AttachError::NotFound) => return Ok(HttpResponse::NotFound().body("Channel not found")),
    };
    let flow = Flow::new(state.config.flow_limits(), state.budget.clone());
    socket::upgrade(
        ChannelSession::new(id, end),
        WorkerSession::limits(&state.config),
        flow,
        state.budget.clone(),
        state.shutdown.clone(),
        &req,
        payload,
    )
}

/// The auth function's view of the upgrade request (§7.2).
pub fn peer_info(req: &HttpRequest) -> PeerInfo {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        if let Ok(v) = value.to_str() {
            headers.insert(
                name.as_str().to_ascii_lowercase(),
                Value::String(v.to_string()),
            );
        }
    }
    PeerInfo {
        ip: req
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        headers,
        query_params: query_params(req.query_string()),
    }
}

/// Raw query split on `&` and the first `=`, not URL-decoded, repeated keys collected.
pub fn query_params(query: &str) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k.is_empty() {
            continue;
        }
        let entry = out
            .entry(k.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(v.to_string()));
        }
    }
    out
}

async fn static_file(
    req: HttpRequest,
    state: web::Data<ListenerState>,
) -> actix_web::Result<HttpResponse> {
    let Some(dir) = state.static_dir.clone() else {
        return Ok(HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("iii worker listener: connect with a WebSocket on /\n"));
    };
    if req.method() != actix_web::http::Method::GET && req.method() != actix_web::http::Method::HEAD
    {
        return Ok(HttpResponse::MethodNotAllowed().finish());
    }
    let Some(path) = resolve(&dir, req.path()) else {
        return Ok(HttpResponse::NotFound().body("not found\n"));
    };
    let real = web::block(move || {
        let path = if path.is_dir() {
            path.join("index.html")
        } else {
            path
        };
        // A symlink (or anything else) that leads outside the directory is not served.
        let real = path.canonicalize().ok()?;
        if !real.starts_with(&dir) {
            log::warn!(
                "static file {} resolves outside static_dir; refused",
                path.display()
            );
            return None;
        }
        Some(real)
    })
    .await?;
    let Some(file) = real else {
        return Ok(HttpResponse::NotFound().body("not found\n"));
    };
    // actix-files answers with ETag and Last-Modified, 304 to a revalidation, and ranges.
    let mut resp = match actix_files::NamedFile::open_async(&file).await {
        Ok(f) => f.prefer_utf8(true).into_response(&req),
        Err(_) => return Ok(HttpResponse::NotFound().body("not found\n")),
    };
    let headers = resp.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

/// Maps a URL path into `dir`; refuses `..`, hidden files and anything odd.
fn resolve(dir: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(url_path)?;
    let mut out = dir.to_path_buf();
    for part in decoded.split('/').filter(|p| !p.is_empty()) {
        let c = Path::new(part).components().next()?;
        if !matches!(c, Component::Normal(_))
            || part.starts_with('.')
            || part.contains('\\')
            || part.contains('\0')
        {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_params_are_raw_and_collected() {
        let q = query_params("token=abc&a&token=x%20y&=skip&b=1=2");
        assert_eq!(
            Value::Object(q),
            json!({"token": ["abc", "x%20y"], "a": [""], "b": ["1=2"]})
        );
    }

    #[test]
    fn static_paths_stay_inside_the_directory() {
        let dir = Path::new("static");
        assert_eq!(resolve(dir, "/"), Some(PathBuf::from("static")));
        assert_eq!(
            resolve(dir, "/app.js"),
            Some(PathBuf::from("static/app.js"))
        );
        assert_eq!(
            resolve(dir, "/a/b.css"),
            Some(PathBuf::from("static/a/b.css"))
        );
        assert_eq!(resolve(dir, "/../Cargo.toml"), None);
        assert_eq!(resolve(dir, "/%2e%2e/Cargo.toml"), None);
        assert_eq!(resolve(dir, "/.git/config"), None);
        assert_eq!(resolve(dir, "/a%5cb"), None);
        assert_eq!(resolve(dir, "/%zz"), None);
    }
}
