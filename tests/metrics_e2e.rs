//! `GET /metrics` read as Prometheus reads it: the text is parsed by the official Python client
//! library's parser (`tests/sdk/python/prom_parse.py`) after known traffic — calls that succeed,
//! fail and miss, denied calls from a public session, state writes, a queued job, a process
//! that keeps exiting — and every count is checked. Public listeners do not serve it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{client, send};
use common::{barrier, repo_path, EngineProc};
use iii_client::{Client, ClientOptions};
use iii_protocol::protocol::ErrorBody;
use serde_json::{json, Value};

const CONFIG: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac: {expose_functions: ['match(\"public::*\")']}
  - name: iii-state
    config:
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state}}
  - name: iii-queue
    config:
      adapter: {name: builtin, config: {file_path: ./data/queue}}
  - name: iii-exec
    config:
      exec: [{command: 'exit 3', name: flaky, restart: always}]
  - name: iii-observability
    config: {prometheus_host: 127.0.0.1, prometheus_port: 0}
";

fn http_base(engine: &EngineProc, i: usize) -> String {
    engine.url(i).replace("ws://", "http://")
}

/// Every sample of the engine's `/metrics`, parsed by prometheus_client.
async fn scrape(engine: &EngineProc) -> Vec<Value> {
    let got = send(
        client().get(format!("{}/metrics", http_base(engine, 0))),
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let py = repo_path("target/sdk-venv/bin/python");
    assert!(
        py.exists(),
        "the Python venv with prometheus-client is missing: run scripts/setup-test-deps"
    );
    let mut child = Command::new(py)
        .arg(repo_path("tests/sdk/python/prom_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the parser");
    child.stdin.take().unwrap().write_all(&got.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&got.body)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Value], name: &str, labels: Value) -> Option<f64> {
    let want = labels.as_object().unwrap();
    samples
        .iter()
        .find(|s| s["name"] == name && want.iter().all(|(k, v)| &s["labels"][k] == v))
        .and_then(|s| s["value"].as_f64())
}

#[actix::test]
async fn metrics_count_known_traffic_and_parse_as_prometheus() {
    let engine = EngineProc::start(CONFIG);
    let w = Client::connect(&engine.url(0), ClientOptions::named("metrics-worker"))
        .await
        .unwrap();
    w.register_function("m::ok", |_| async { Ok(json!({"ok": true})) });
    w.register_function("m::fail", |_| async { Err(ErrorBody::new("boom", "no")) });
    w.register_function("m::job", |_| async { Ok(json!({})) });
    barrier(&w).await;
    for _ in 0..10 {
        w.trigger("m::ok", json!({})).await.unwrap();
    }
    for _ in 0..3 {
        assert!(w.trigger("m::fail", json!({})).await.is_err());
    }
    for _ in 0..2 {
        assert!(w.trigger("m::missing", json!({})).await.is_err());
    }
    for i in 0..5 {
        w.trigger(
            "state::set",
            json!({"scope": "s", "key": format!("k{i}"), "value": i}),
        )
        .await
        .unwrap();
    }
    common::enqueue(&w, "default", "m::job", json!({}))
        .await
        .unwrap();
    let public = Client::connect(&engine.url(1), ClientOptions::named("visitor"))
        .await
        .unwrap();
    for _ in 0..2 {
        let e = public.trigger("m::ok", json!({})).await.unwrap_err();
        assert_eq!(e.code, "FORBIDDEN");
    }

    // Store sizes, queue counts and exec restarts are published once a second or so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let s = scrape(&engine).await;
        let ready = value(&s, "iii_store_items", json!({"store": "state"})) == Some(5.0)
            && value(&s, "iii_exec_restarts_total", json!({"name": "flaky"})).unwrap_or(0.0) >= 1.0
            && value(
                &s,
                "iii_calls_completed_total",
                json!({"function_id": "m::job"}),
            ) == Some(1.0)
            && value(
                &s,
                "iii_store_fsync_duration_seconds_count",
                json!({"store": "state"}),
            )
            .unwrap_or(0.0)
                >= 1.0;
        if ready || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let v = |name: &str, labels: Value| {
        value(&samples, name, labels.clone()).unwrap_or_else(|| panic!("no {name} {labels}"))
    };
    assert_eq!(
        v("iii_calls_started_total", json!({"function_id": "m::ok"})),
        10.0
    );
    assert_eq!(
        v("iii_calls_completed_total", json!({"function_id": "m::ok"})),
        10.0
    );
    assert_eq!(
        v(
            "iii_call_duration_seconds_count",
            json!({"function_id": "m::ok"})
        ),
        10.0
    );
    assert_eq!(
        v(
            "iii_call_duration_seconds_bucket",
            json!({"function_id": "m::ok", "le": "+Inf"})
        ),
        10.0
    );
    assert!(
        v(
            "iii_call_duration_seconds_sum",
            json!({"function_id": "m::ok"})
        ) > 0.0
    );
    assert_eq!(
        v(
            "iii_calls_failed_total",
            json!({"function_id": "m::fail", "code": "boom"})
        ),
        3.0
    );
    // Two calls of m::missing, and the barrier's engine::barrier.
    assert_eq!(
        v(
            "iii_calls_failed_total",
            json!({"function_id": "_unregistered", "code": "function_not_found"})
        ),
        3.0
    );
    assert_eq!(
        v(
            "iii_calls_completed_total",
            json!({"function_id": "state::set"})
        ),
        5.0
    );
    assert_eq!(
        v(
            "iii_calls_completed_total",
            json!({"function_id": "m::job"})
        ),
        1.0
    );
    assert_eq!(
        v("iii_rbac_denials_total", json!({"reason": "not_exposed"})),
        2.0
    );
    assert_eq!(v("iii_store_items", json!({"store": "state"})), 5.0);
    assert!(v("iii_store_log_bytes", json!({"store": "state"})) > 0.0);
    assert!(
        v(
            "iii_store_fsync_duration_seconds_count",
            json!({"store": "state"})
        ) >= 1.0
    );
    assert_eq!(
        v(
            "iii_queue_jobs",
            json!({"queue": "default", "state": "waiting"})
        ),
        0.0
    );
    assert!(v("iii_exec_restarts_total", json!({"name": "flaky"})) >= 1.0);
    let workers: f64 = samples
        .iter()
        .filter(|s| s["name"] == "iii_connections" && s["labels"]["kind"] == "worker")
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert_eq!(workers, 2.0, "the worker and the visitor");
    assert!(v("iii_functions", json!({})) >= 3.0);
    let histogram = samples
        .iter()
        .find(|s| s["name"] == "iii_call_duration_seconds_bucket")
        .unwrap();
    assert_eq!(histogram["type"], "histogram");

    // The listener of its own serves the same text.
    let own = engine.ready["metrics"]
        .as_str()
        .expect("metrics url in the ready file");
    let got = send(client().get(own), None).await;
    assert_eq!(got.status, 200);
    assert!(String::from_utf8_lossy(&got.body)
        .contains("iii_calls_started_total{function_id=\"m::ok\"} 10"));

    // A public listener does not serve it.
    let got = send(
        client().get(format!("{}/metrics", http_base(&engine, 1))),
        None,
    )
    .await;
    assert_eq!(got.status, 404);
}
