//! The operator console: a page served by every trusted (non-RBAC) worker listener at
//! `/console`, from files compiled into the binary (`console/` at the repository root, and
//! `static/iii-client.js` as `/console/iii-client.js`), so it works with any config and any
//! working directory.
//!
//! The page is a worker like any other: it opens a WebSocket to `/` on the same listener and polls
//! the engine's own functions (`engine::workers::list`, `engine::functions::list`,
//! `engine::metrics::list`, `engine::traces::*`, `engine::logs::list`, `stream::list_all`,
//! `state::list_groups`, …). Nothing here reads engine state; this file owns only the HTTP side.
//!
//! On a public (RBAC) listener every path under `/console` answers 404, whatever `static_dir`
//! holds: a public port never serves the console. Responses carry `Cache-Control: no-cache` and
//! an `ETag` (a reload after an engine upgrade gets the new files; otherwise a 304), and a
//! Content-Security-Policy that keeps the page to its own origin and out of frames.

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            body: include_str!(concat!("../../", $path)),
            content_type: $type,
        }
    };
}

static INDEX: Asset = asset!("console/index.html", HTML);

/// The page's files by URL path, `/console/` + name (the module scripts import one another by
/// these paths).
static FILES: [(&str, Asset); 8] = [
    ("console.js", asset!("console/console.js", JS)),
    ("engine.js", asset!("console/engine.js", JS)),
    ("dom.js", asset!("console/dom.js", JS)),
    ("views.js", asset!("console/views.js", JS)),
    ("traces.js", asset!("console/traces.js", JS)),
    ("iii-client.js", asset!("static/iii-client.js", JS)),
    ("console.css", asset!("console/console.css", CSS)),
    ("views.css", asset!("console/views.css", CSS)),
];

/// Same origin only (`'self'` covers the page's own `ws://` origin), no inline code, no frames.
const CSP: &str = "default-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file a path under `/console` names, if any.
fn asset(path: &str) -> Option<&'static Asset> {
    match path {
        "/console" | "/console/" | "/console/index.html" => Some(&INDEX),
        _ => {
            let name = path.strip_prefix("/console/")?;
            FILES.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
        }
    }
}

/// A strong validator: the engine version and a 64-bit FNV-1a hash of the body.
fn etag(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("\"{}-{hash:016x}\"", env!("CARGO_PKG_VERSION"))
}

/// Registers `/console` and everything under it: the console on a trusted listener, a 404 on a
/// public one.
pub fn routes(trusted: bool) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        if trusted {
            cfg.route("/console", web::route().to(serve))
                .route("/console/{tail:.*}", web::route().to(serve));
        } else {
            cfg.route("/console", web::route().to(not_found))
                .route("/console/{tail:.*}", web::route().to(not_found));
        }
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("not found\n")
}

async fn serve(req: HttpRequest) -> HttpResponse {
    let Some(asset) = asset(req.path()) else {
        return not_found().await;
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "GET, HEAD"))
            .finish();
    }
    let tag = etag(asset.body);
    let fresh = if_none_match(&req, &tag);
    let mut resp = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if asset.content_type.starts_with("text/html") {
        resp.insert_header((header::CONTENT_SECURITY_POLICY, CSP));
    }
    if fresh {
        return resp.finish();
    }
    resp.content_type(asset.content_type).body(asset.body)
}

/// Whether the request's `If-None-Match` lists `tag` (or is `*`).
fn if_none_match(req: &HttpRequest, tag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_embedded_files() {
        assert!(std::ptr::eq(asset("/console").unwrap(), &INDEX));
        assert!(std::ptr::eq(asset("/console/").unwrap(), &INDEX));
        assert_eq!(
            asset("/console/iii-client.js").unwrap().body,
            include_str!("../../static/iii-client.js")
        );
        assert_eq!(asset("/console/views.css").unwrap().content_type, CSS);
        assert!(asset("/console/app.js").is_none());
        assert!(asset("/console/../Cargo.toml").is_none());
        assert!(asset("/console/console.js/").is_none());
        assert!(asset("/consolex").is_none());
    }

    /// Every `/console/…` path the page's files name is served, and every served file is used.
    #[test]
    fn the_page_and_its_files_agree() {
        let mut named = std::collections::BTreeSet::new();
        for text in std::iter::once(INDEX.body).chain(FILES.iter().map(|(_, a)| a.body)) {
            for part in text.split("/console/").skip(1) {
                let end = part
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
                    .unwrap_or(part.len());
                let name = part[..end].trim_end_matches('.');
                if name.ends_with(".js") || name.ends_with(".css") {
                    named.insert(name.to_string());
                }
            }
        }
        let served: std::collections::BTreeSet<String> =
            FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(named, served);
    }

    #[test]
    fn etags_follow_the_content() {
        assert_eq!(etag(INDEX.body), etag(INDEX.body));
        assert_ne!(etag(INDEX.body), etag(FILES[0].1.body));
        assert!(etag("").starts_with('"') && etag("").ends_with('"'));
    }
}
