//! End-to-end tests of `iii-http`: a Node SDK worker (`tests/sdk/node-http-worker.mjs`)
//! serves routes and a real HTTP client calls them — JSON, query and path parameters, form and
//! binary bodies, a 5 MiB download and upload byte for byte, server-sent events, middleware that
//! continues, responds, fails or hangs, conditions, CORS, 404/405/413/504 — plus routes that
//! follow their bindings, the concurrency limit, and public sessions that may not bind routes.
//! Channels on their own are `channels_e2e.rs`.

mod common;

use std::time::{Duration, Instant};

use common::http::{client, send};
use common::sdk::{node_cmd, start_worker};
use common::{barrier, EngineProc, RawWs};
use futures_util::StreamExt;
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const CONFIG: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac: {expose_functions: ['match(\"public::*\")']}
  - name: iii-http
    config: {host: 127.0.0.1, port: 0, default_timeout: 3000, body_limit_bytes: 8388608}
";

fn http_url(engine: &EngineProc) -> String {
    engine.ready["http"].as_str().expect("http url").to_string()
}

/// The worker's deterministic "PDF" (the same 32-bit LCG).
fn pdf_bytes() -> Vec<u8> {
    let mut x: u32 = 12345;
    (0..5 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ *b as u32).wrapping_mul(0x0100_0193)
    })
}

#[actix::test]
async fn node_sdk_routes_serve_real_http() {
    let engine = EngineProc::start(CONFIG);
    let base = http_url(&engine);
    let mut cmd = node_cmd("node-http-worker.mjs");
    cmd.env("HTTP_URL", &base);
    let _worker = start_worker(cmd, "node-http-worker", &engine.url(0));
    let c = client();

    let r = send(c.get(format!("{base}/hello")), None).await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/json"))
    );
    assert_eq!(r.json(), json!({"hello": "world"}));

    let r = send(
        c.get(format!("{base}/items/a%20b?q=hello&limit=10&q=last")),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"path_params": {"id": "a b"}, "query_params": {"q": "last", "limit": "10"},
               "path": "items/:id", "method": "GET", "has_channels": true,
               "trigger": {"type": "http", "path": "items/:id", "method": "GET"}})
    );
    let r = send(c.head(format!("{base}/items/x")), None).await;
    assert_eq!(
        (r.status, r.header("x-item"), r.body.len()),
        (200, Some("x"), 0)
    );

    let raw = br#"{"z":2, "a":1}"#.to_vec();
    let r = send(
        c.post(format!("{base}/echo")),
        Some(("application/json", raw)),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json(),
        json!({"body": {"z": 2, "a": 1}, "raw": "{\"z\":2, \"a\":1}", "content_type": "application/json"})
    );
    let form = b"a=1&b=two+words".to_vec();
    let r = send(
        c.post(format!("{base}/echo")),
        Some(("application/x-www-form-urlencoded", form)),
    )
    .await;
    assert_eq!(r.json()["body"], Value::Null);
    assert_eq!(r.json()["raw"], "a=1&b=two+words");

    let upload: Vec<u8> = (0..5u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let want = json!({"length": upload.len(), "fnv1a": fnv1a(&upload), "body": null});
    let r = send(
        c.post(format!("{base}/upload")),
        Some(("application/octet-stream", upload)),
    )
    .await;
    assert_eq!(r.json(), want, "upload arrives byte-identical");

    let r = send(c.get(format!("{base}/download")), None).await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/pdf"))
    );
    assert!(
        r.body == pdf_bytes(),
        "download is byte-identical ({} bytes)",
        r.body.len()
    );

    // Server-sent events arrive as they are written, 50 ms apart.
    let started = Instant::now();
    let mut resp = c.get(format!("{base}/events")).send().await.unwrap();
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut text = String::new();
    let mut first_at = None;
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.unwrap();
        first_at.get_or_insert(started.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(
        text,
        "data: event 1\n\ndata: event 2\n\ndata: event 3\n\ndata: event 4\n\n"
    );
    assert!(
        started.elapsed() - first_at.unwrap() >= Duration::from_millis(100),
        "events streamed, not buffered"
    );

    let r = send(c.post(format!("{base}/stream-json")), None).await;
    assert_eq!((r.status, r.json()), (202, json!({"streamed": true})));
    let r = send(c.get(format!("{base}/xml")), None).await;
    assert_eq!(
        (r.header("content-type"), r.body.as_slice()),
        (Some("text/xml"), &b"<a>1</a>"[..])
    );

    let t = Instant::now();
    let r = send(c.get(format!("{base}/nothing")), None).await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "answered without waiting for the timeout (3 s)"
    );

    let r = send(c.get(format!("{base}/fail")), None).await;
    assert_eq!(r.status, 500);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("handler exploded"));
    assert!(r.json()["error"]["error_id"].is_string());
    let r = send(c.get(format!("{base}/slow")), None).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (504, Some("TIMEOUT"))
    );

    let r = send(c.get(format!("{base}/guarded/7")), None).await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": "7"})));
    let r = send(
        c.get(format!("{base}/guarded/7"))
            .insert_header(("x-deny", "1")),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"denied": true, "phase": "preHandler"}))
    );
    let r = send(c.get(format!("{base}/mw-boom")), None).await;
    assert_eq!(r.status, 500);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("middleware exploded"));
    let r = send(c.get(format!("{base}/mw-hang")), None).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (504, Some("MIDDLEWARE_TIMEOUT"))
    );
    let r = send(c.get(format!("{base}/conditional")), None).await;
    assert_eq!(
        (r.status, r.json()),
        (
            422,
            json!({"error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"}, "skipped": true})
        )
    );

    let r = send(c.get(format!("{base}/nope")), None).await;
    assert_eq!(
        (r.status, r.json()),
        (
            404,
            json!({"error": {"code": "NOT_FOUND", "message": "Not Found"}})
        )
    );
    let r = send(c.delete(format!("{base}/hello")), None).await;
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("GET"));
    let big = vec![b'x'; 9 << 20];
    let r = send(
        c.post(format!("{base}/upload")),
        Some(("application/octet-stream", big)),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );

    // CORS (absent config = permissive): preflight and the header on a real response.
    let r = send(
        c.request(awc::http::Method::OPTIONS, format!("{base}/hello"))
            .insert_header(("origin", "https://app.example"))
            .insert_header(("access-control-request-method", "GET")),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = send(
        c.get(format!("{base}/hello"))
            .insert_header(("origin", "https://a.example")),
        None,
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );

    // The same-shape route was refused and the first one keeps serving.
    assert!(
        engine
            .log()
            .contains("conflicts with already-registered route"),
        "{}",
        engine.log()
    );
    let r = send(c.get(format!("{base}/items/q")), None).await;
    assert_eq!(r.json()["path_params"], json!({"id": "q"}));
}

/// GETs `url` until it answers `want` (for up to 3 s); returns the last status.
async fn status_within(c: &awc::Client, url: &str, want: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = send(c.get(url), None).await.status;
        if status == want || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix::test]
async fn routes_follow_their_bindings_and_requests_wait_for_the_limit() {
    let config = CONFIG.replace("body_limit_bytes: 8388608", "concurrency_request_limit: 2");
    let engine = EngineProc::start(&config);
    let base = http_url(&engine);
    let w = Client::connect(&engine.url(0), ClientOptions::named("w"))
        .await
        .unwrap();
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (l, p) = (live.clone(), peak.clone());
    w.register_function("w::slow-ok", move |_| {
        let (l, p) = (l.clone(), p.clone());
        async move {
            use std::sync::atomic::Ordering::SeqCst;
            p.fetch_max(l.fetch_add(1, SeqCst) + 1, SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            l.fetch_sub(1, SeqCst);
            Ok(json!({"status_code": 200, "body": {"ok": true}}))
        }
    });
    let c = client();
    assert_eq!(send(c.get(format!("{base}/late")), None).await.status, 404);
    let binding = w.register_trigger("http", "w::slow-ok", json!({"api_path": "/late"}));
    barrier(&w).await;
    // The route table is updated on the module's thread right after the registration.
    assert_eq!(status_within(&c, &format!("{base}/late"), 200).await, 200);
    let requests = (0..8).map(|_| send(c.get(format!("{base}/late")), None));
    let results = futures_util::future::join_all(requests).await;
    assert!(
        results.iter().all(|r| r.status == 200),
        "requests wait, none refused"
    );
    assert_eq!(
        peak.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "at most 2 at once"
    );
    binding.unregister();
    barrier(&w).await;
    assert_eq!(status_within(&c, &format!("{base}/late"), 404).await, 404);
}

#[actix::test]
async fn public_sessions_bind_routes_only_when_allowed() {
    let engine = EngineProc::start(CONFIG);
    let mut ws = RawWs::connect(&engine.url(1)).await;
    let frame = json!({"type": "registertrigger", "id": "t1", "trigger_type": "http",
                       "function_id": "public::page", "config": {"api_path": "/admin"}});
    ws.text(frame.to_string()).await;
    let e = common::attack::error_frame(&mut ws).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("allowed_trigger_types"),
        "{e}"
    );
    let r = send(client().get(format!("{}/admin", http_url(&engine))), None).await;
    assert_eq!(r.status, 404);
}

#[actix::test]
async fn configured_cors_only_answers_allowed_origins() {
    let config = CONFIG.replace(
        "body_limit_bytes: 8388608}",
        "body_limit_bytes: 8388608, cors: {allowed_origins: ['https://app.example'], allowed_methods: [GET]}}",
    );
    let engine = EngineProc::start(&config);
    let base = http_url(&engine);
    let preflight = |origin: &'static str, method: &'static str| {
        client()
            .request(awc::http::Method::OPTIONS, format!("{base}/x"))
            .insert_header(("origin", origin))
            .insert_header(("access-control-request-method", method))
    };
    let r = send(preflight("https://app.example", "GET"), None).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = send(preflight("https://evil.example", "GET"), None).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = send(preflight("https://app.example", "DELETE"), None).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[actix::test]
async fn python_sdk_routes_serve_real_http() {
    let engine = EngineProc::start(CONFIG);
    let base = http_url(&engine);
    let mut cmd = common::sdk::python_cmd("py_http.py");
    cmd.env("HTTP_URL", &base);
    let _worker = start_worker(cmd, "py_http", &engine.url(0));
    let c = client();
    let r = send(c.get(format!("{base}/py/items/b%2F1?q=x")), None).await;
    assert_eq!((r.status, r.header("x-lang")), (200, Some("python")));
    assert_eq!(
        r.json(),
        json!({"id": "b/1", "q": "x", "path": "/py/items/:id"})
    );
    let r = send(
        c.post(format!("{base}/py/echo")),
        Some(("application/json", br#"{"n":[1,2]}"#.to_vec())),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (201, json!({"got": {"n": [1, 2]}, "method": "POST"}))
    );
    let r = send(c.get(format!("{base}/py/events")), None).await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/event-stream"))
    );
    assert_eq!(r.body, b"data: py 0\n\ndata: py 1\n\ndata: py 2\n\n");
    let r = send(c.get(format!("{base}/py/teapot")), None).await;
    assert_eq!(
        (r.status, r.header("content-type"), r.body.as_slice()),
        (418, Some("text/plain"), &b"short and stout"[..])
    );
}
