//! End-to-end tests of `iii-http-functions`: functions registered with an HTTP `invocation` by
//! the published Node SDK are called by the engine over real HTTP against a test server in this
//! process — method, headers, HMAC signature, body, result and error mapping, timeouts — and the
//! URL rules keep functions away from private addresses unless the config allows them (SSRF).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::sdk::{node_cmd, run_checks};
use common::{EngineProc, RawWs};
use serde_json::{json, Value};

/// What the test server saw: method, path, headers (lower-case), body.
type Seen = Arc<Mutex<Vec<(String, String, Vec<(String, String)>, String)>>>;

async fn hook(req: HttpRequest, body: web::Bytes, seen: web::Data<Seen>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = String::from_utf8_lossy(&body).to_string();
    seen.lock().unwrap().push((
        req.method().to_string(),
        req.path().to_string(),
        headers,
        text.clone(),
    ));
    match req.path() {
        "/webhook" => HttpResponse::Ok()
            .json(json!({"ok": true, "got": serde_json::from_str::<Value>(&text).ok()})),
        "/fail" => {
            HttpResponse::BadRequest().json(json!({"error": {"code": "E_BAD", "message": "nope"}}))
        }
        "/plain-fail" => HttpResponse::ServiceUnavailable().body("down"),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            HttpResponse::Ok().json(json!({}))
        }
        _ => HttpResponse::NoContent().finish(),
    }
}

fn test_server(seen: Seen) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(seen.clone()))
                    .default_service(web::to(hook))
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await.unwrap();
        })
    });
    format!("http://{}", rx.recv().unwrap())
}

const OPEN: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-http-functions
    config:
      security: {url_allowlist: ['127.0.0.1'], block_private_ips: false, require_https: false}
";

#[test]
fn node_sdk_http_functions_are_called_over_http() {
    let seen: Seen = Arc::default();
    let base = test_server(seen.clone());
    let engine = EngineProc::start_with_env(
        tempfile::tempdir().unwrap(),
        OPEN,
        &[("III_TEST_SECRET", "s3cret")],
    );
    let mut cmd = node_cmd("node-http-functions.mjs");
    cmd.env("HOOK_BASE", &base);
    let out = run_checks(cmd, "node-http-functions", &engine.url(0));
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["function_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id}: {out}"))
    };
    let hook = by_id("ext::hook");
    assert_eq!(
        (
            hook["result"]["ok"].clone(),
            hook["result"]["got"]["order"].clone()
        ),
        (json!(true), json!(7)),
        "{out}"
    );
    assert_eq!(by_id("ext::put")["result"]["ok"], true);
    let message = |id: &str| {
        by_id(id)["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(by_id("ext::fail")["error"]["code"], "E_BAD");
    assert!(message("ext::fail").ends_with("nope"), "{out}");
    assert_eq!(by_id("ext::plain-fail")["error"]["code"], "http_error");
    assert!(
        message("ext::plain-fail").ends_with("HTTP 503 Service Unavailable"),
        "{out}"
    );
    assert_eq!(
        by_id("ext::slow")["error"]["code"],
        "http_request_failed",
        "{out}"
    );
    assert!(
        message("ext::slow").contains("timed out after 300 ms"),
        "{out}"
    );
    assert_eq!(by_id("ext::empty")["result"], Value::Null);
    let after = lines
        .iter()
        .find(|l| l.get("after_unregister").is_some())
        .unwrap();
    assert_eq!(
        after["after_unregister"]["error"]["code"],
        "function_not_found"
    );

    let seen = seen.lock().unwrap();
    let (method, path, headers, body) = seen
        .iter()
        .find(|s| s.1 == "/webhook" && s.0 == "POST")
        .unwrap();
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/webhook"));
    let h = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} header: {headers:?}"))
    };
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("x-custom-header"), "test-value");
    assert_eq!(h("x-iii-function-path"), "ext::hook");
    let body_json: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body_json["order"], 7);
    assert!(body_json["_caller_worker_id"].is_string(), "{body}");
    let ts: u64 = h("x-iii-timestamp").parse().unwrap();
    let want = iii::modules::http_functions::sign("s3cret", ts, body.as_bytes());
    assert_eq!(
        h("x-iii-signature"),
        want,
        "the signature covers the exact body"
    );
    assert!(seen.iter().any(|s| s.0 == "PUT"), "PUT honoured");
}

#[actix::test]
async fn private_addresses_are_refused_by_default_and_say_why() {
    let config = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-http-functions
";
    let engine = EngineProc::start(config);
    let mut ws = RawWs::connect(&engine.url(0)).await;
    for (url, reason) in [
        ("http://127.0.0.1:9/x", "HTTPS is required"),
        ("https://127.0.0.1:9/x", "Private IP blocked"),
        (
            "https://169.254.169.254/latest/meta-data",
            "Private IP blocked",
        ),
        ("https://[::ffff:10.0.0.1]/x", "Private IP blocked"),
        ("https://localhost/x", "Private IP blocked"),
    ] {
        let frame = json!({"type": "registerfunction", "id": "ext::x", "invocation": {"url": url}});
        ws.text(frame.to_string()).await;
        let e = common::attack::error_frame(&mut ws).await;
        assert!(
            e["message"].as_str().unwrap().contains(reason),
            "{url}: {e}"
        );
    }
    // Without the module, HTTP-invoked functions are refused with a reason too.
    let engine = EngineProc::start(common::BASIC);
    let mut ws = RawWs::connect(&engine.url(0)).await;
    let frame = json!({"type": "registerfunction", "id": "ext::x", "invocation": {"url": "https://api.example.com/"}});
    ws.text(frame.to_string()).await;
    let e = common::attack::error_frame(&mut ws).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("iii-http-functions"),
        "{e}"
    );
}
