//! The console's files over plain HTTP: `/console` and its assets on a trusted listener (types,
//! no-cache, validators; from the binary, whatever the working directory holds), and nothing
//! under `/console` on an RBAC listener, even when its `static_dir` has a `console/` folder.
//! The page itself is driven in Chromium by `tests/browser/console.test.mjs`.

mod common;

use common::http::{client, send, Got};
use common::EngineProc;

async fn get(url: String) -> Got {
    send(client().get(url), None).await
}

/// `ws://127.0.0.1:PORT` of listener `i`, as `http://…`.
fn base(engine: &EngineProc, i: usize) -> String {
    engine.url(i).replace("ws://", "http://")
}

#[actix::test]
async fn the_trusted_listener_serves_the_console() {
    let engine = EngineProc::start(common::BASIC);
    let base = base(&engine, 0);
    for (path, content_type, needle) in [
        (
            "/console",
            "text/html; charset=utf-8",
            "<title>iii console</title>",
        ),
        (
            "/console/",
            "text/html; charset=utf-8",
            "<title>iii console</title>",
        ),
        (
            "/console/console.js",
            "text/javascript; charset=utf-8",
            "from '/console/engine.js'",
        ),
        (
            "/console/engine.js",
            "text/javascript; charset=utf-8",
            "from '/console/iii-client.js'",
        ),
        (
            "/console/views.css",
            "text/css; charset=utf-8",
            ".span-tree",
        ),
        ("/console/console.css", "text/css; charset=utf-8", ".panel"),
        (
            "/console/iii-client.js",
            "text/javascript; charset=utf-8",
            "export function registerWorker",
        ),
    ] {
        let got = get(format!("{base}{path}")).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.header("content-type"), Some(content_type), "{path}");
        assert_eq!(got.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
        let body = String::from_utf8_lossy(&got.body);
        assert!(body.contains(needle), "{path} holds {needle:?}");
    }

    // The client module is the todo page's own, byte for byte.
    let client_js = get(format!("{base}/console/iii-client.js")).await;
    assert_eq!(
        client_js.body,
        include_bytes!("../static/iii-client.js").to_vec()
    );

    // The page is kept to its own origin and out of frames.
    let page = get(format!("{base}/console")).await;
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");

    // A reload revalidates: the same ETag answers 304 with no body.
    let etag = page.header("etag").expect("an ETag").to_string();
    let again = send(
        client()
            .get(format!("{base}/console"))
            .insert_header(("if-none-match", etag.as_str())),
        None,
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // Anything else under /console is not found; other methods are not allowed.
    assert_eq!(get(format!("{base}/console/app.js")).await.status, 404);
    assert_eq!(
        get(format!("{base}/console/../Cargo.toml")).await.status,
        404
    );
    let post = send(client().post(format!("{base}/console")), None).await;
    assert_eq!(post.status, 405);
}

#[actix::test]
async fn an_rbac_listener_never_serves_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("console")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>public</h1>").unwrap();
    std::fs::write(site.join("console").join("index.html"), "not the console").unwrap();
    let config = format!(
        "workers:
  - name: iii-worker-manager
    config: {{host: 127.0.0.1, port: 0}}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      static_dir: {}
      rbac: {{expose_functions: ['match(\"public::*\")']}}
",
        site.display()
    );
    let engine = EngineProc::start_in(dir, &config);
    let public = base(&engine, 1);
    for path in [
        "/console",
        "/console/",
        "/console/index.html",
        "/console/console.js",
        "/console/engine.js",
        "/console/console.css",
        "/console/iii-client.js",
    ] {
        let got = get(format!("{public}{path}")).await;
        assert_eq!(got.status, 404, "{path} on the RBAC listener");
        let body = String::from_utf8_lossy(&got.body);
        assert!(
            !body.contains("console"),
            "{path} on the RBAC listener: {body}"
        );
    }
    // The listener's own site is still served, and the trusted listener has the console.
    assert_eq!(get(format!("{public}/")).await.status, 200);
    assert_eq!(
        get(format!("{}/console", base(&engine, 0))).await.status,
        200
    );
}
