//! `iii-observability` end to end: OTLP/JSON traces, logs and metrics sent on `/otel` as the
//! SDKs send them, stored and answered by the query functions with upstream's shapes; the
//! engine's own span per call, joined to the caller's trace and parent of the callee's; the
//! `log` and `trace` triggers; bounded memory under a flood of spans; and what a public session
//! may not read. The published SDKs' telemetry is checked in `observability_sdk_e2e.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{barrier, eventually, recorder, EngineProc, RawWs};
use iii_client::{Client, ClientOptions, TriggerRequest};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

const CONFIG: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac: {expose_functions: ['match(\"public::*\")']}
  - name: iii-observability
    config: {memory_max_spans: 1000, logs_max_count: 200, service_name: iii-test}
";

async fn client(engine: &EngineProc, name: &str) -> Client {
    Client::connect(&engine.url(0), ClientOptions::named(name))
        .await
        .expect("connect")
}

/// An OTLP/JSON trace export with `n` spans of one trace (the first is the root).
fn spans_frame(trace: &str, n: usize, service: &str) -> Vec<u8> {
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "traceId": trace, "spanId": format!("{:016x}", i + 1),
                "parentSpanId": if i == 0 { String::new() } else { format!("{:016x}", 1) },
                "name": format!("op-{i}"), "kind": 1,
                "startTimeUnixNano": format!("{}", 1_700_000_000_000_000_000u64 + i as u64 * 1000),
                "endTimeUnixNano": 1_700_000_000_000_500_000u64 + i as u64 * 1000,
                "status": {"code": if i == 1 { 2 } else { 1 }, "message": if i == 1 { "bad" } else { "" }},
                "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}},
                               {"key": "n", "value": {"intValue": "7"}}],
                "events": [{"name": "ev", "timeUnixNano": "1700000000000000100", "attributes": []}],
            })
        })
        .collect();
    let doc = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "test-scope", "version": "1.0"}, "spans": spans}],
    }]});
    let mut frame = b"OTLP".to_vec();
    frame.extend(serde_json::to_vec(&doc).unwrap());
    frame
}

async fn otel_socket(engine: &EngineProc) -> RawWs {
    RawWs::connect(&format!("{}/otel", engine.url(0))).await
}

#[actix::test]
async fn otlp_frames_are_stored_and_queryable_with_upstreams_shapes() {
    let engine = EngineProc::start(CONFIG);
    let mut otel = otel_socket(&engine).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    otel.send(awc::ws::Message::Binary(
        spans_frame(trace, 3, "checkout").into(),
    ))
    .await;
    let logs = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
        "scopeLogs": [{"scope": {"name": "app"}, "logRecords": [
            {"timeUnixNano": "1700000000000000000", "observedTimeUnixNano": "1700000000000000001",
             "severityNumber": 17, "severityText": "ERROR", "body": {"stringValue": "card declined"},
             "attributes": [{"key": "order", "value": {"intValue": 42}}], "traceId": trace, "spanId": "0000000000000001"}]}]}]});
    let mut frame = b"LOGS".to_vec();
    frame.extend(serde_json::to_vec(&logs).unwrap());
    otel.send(awc::ws::Message::Binary(frame.into())).await;
    let metrics = json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
        "scopeMetrics": [{"metrics": [{"name": "orders", "unit": "1", "sum": {"dataPoints": [{"asInt": "5"}]}}]}]}]});
    let mut frame = b"MTRC".to_vec();
    frame.extend(serde_json::to_vec(&metrics).unwrap());
    otel.send(awc::ws::Message::Binary(frame.into())).await;
    // Garbage after a known prefix is dropped; the socket stays up.
    otel.send(awc::ws::Message::Binary(b"OTLP{not json".to_vec().into()))
        .await;

    let c = client(&engine, "reader").await;
    let mut list = Value::Null;
    for _ in 0..100 {
        list = c
            .trigger("engine::traces::list", json!({"service_name": "checkout"}))
            .await
            .unwrap();
        if list["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(list["total"], 1, "{list}");
    let root = &list["spans"][0];
    assert_eq!(root["trace_id"], trace);
    assert_eq!(root["span_id"], "0000000000000001");
    assert_eq!(root["parent_span_id"], Value::Null);
    assert_eq!(root["name"], "op-0");
    assert_eq!(root["status"], "ok");
    assert_eq!(root["service_name"], "checkout");
    assert_eq!(root["start_time_unix_nano"], 1_700_000_000_000_000_000u64);
    assert_eq!(
        root["attributes"],
        json!([["http.method", "GET"], ["n", "7"]])
    );
    assert_eq!(root["events"][0]["name"], "ev");
    assert_eq!(root["instrumentation_scope_name"], "test-scope");
    assert_eq!(root["instrumentation_scope_version"], "1.0");

    let all = c
        .trigger(
            "engine::traces::list",
            json!({"trace_id": trace, "search_all_spans": true, "status": "ERR"}),
        )
        .await
        .unwrap();
    assert_eq!(all["total"], 1, "{all}");
    assert_eq!(all["spans"][0]["status_description"], "bad");
    let tree = c
        .trigger("engine::traces::tree", json!({"trace_id": trace}))
        .await
        .unwrap();
    assert_eq!(tree["roots"].as_array().unwrap().len(), 1, "{tree}");
    let kids: Vec<&str> = tree["roots"][0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["op-1", "op-2"]);
    let none = c
        .trigger("engine::traces::tree", json!({"trace_id": "ffff"}))
        .await
        .unwrap();
    assert_eq!(none, json!({"roots": []}));

    // The log and metric frames came after the spans: wait until the last one is in.
    for _ in 0..200 {
        let h = c.trigger("engine::health::check", json!({})).await.unwrap();
        if h["components"]["metrics"]["details"]["count"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = c
        .trigger("engine::logs::list", json!({"severity_min": 17}))
        .await
        .unwrap();
    assert_eq!(logs["total"], 1, "{logs}");
    let log = &logs["logs"][0];
    assert_eq!(log["body"], "card declined");
    assert_eq!(log["severity_text"], "ERROR");
    assert_eq!(log["attributes"], json!({"order": 42}));
    assert_eq!(log["trace_id"], trace);
    assert_eq!(log["service_name"], "checkout");
    assert_eq!(log["resource"], json!({"service.name": "checkout"}));

    let m = c
        .trigger("engine::metrics::list", json!({"metric_name": "orders"}))
        .await
        .unwrap();
    assert_eq!(m["sdk_metrics"][0]["name"], "orders", "{m}");
    assert_eq!(m["sdk_metrics"][0]["type"], "sum", "{m}");
    assert!(
        m["engine_metrics"]["invocations"]["total"]
            .as_u64()
            .unwrap()
            >= 3,
        "{m}"
    );
    assert_eq!(m["engine_metrics"]["workers"]["active"], 1, "{m}");
    let health = c.trigger("engine::health::check", json!({})).await.unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["components"]["spans"]["status"], "healthy");
    assert_eq!(
        c.trigger("engine::traces::clear", json!({})).await.unwrap(),
        json!({"success": true})
    );
    let after = c
        .trigger(
            "engine::traces::list",
            json!({"search_all_spans": true, "service_name": "checkout"}),
        )
        .await
        .unwrap();
    assert_eq!(after["total"], 0);
}

#[actix::test]
async fn each_call_gets_an_engine_span_in_its_callers_trace_and_parent_of_the_callees() {
    let engine = EngineProc::start(CONFIG);
    let w = client(&engine, "callee").await;
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let s = seen.clone();
    // iii-client hands no traceparent to handlers; a raw socket sees the frame itself.
    let mut raw = RawWs::connect(&engine.url(0)).await;
    raw.text(json!({"type": "registerfunction", "id": "obs::raw"}).to_string())
        .await;
    raw.barrier().await;
    w.register_function("obs::ok", move |v| {
        s.lock().unwrap().push(v);
        async { Ok(json!({"ok": true})) }
    });
    barrier(&w).await;
    let mut caller = RawWs::connect(&engine.url(0)).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let call = json!({"type": "invokefunction", "invocation_id": uuid::Uuid::new_v4(), "function_id": "obs::raw",
                      "data": {}, "traceparent": format!("00-{trace}-00f067aa0ba902b7-01")});
    caller.text(call.to_string()).await;
    let invoke = loop {
        let v = raw.next_json(T).await;
        if v["type"] == "invokefunction" {
            break v;
        }
    };
    let tp = invoke["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts[1], trace, "the callee joins the caller's trace: {tp}");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "its parent is the engine's span: {tp}"
    );
    raw.text(json!({"type": "invocationresult", "invocation_id": invoke["invocation_id"], "function_id": "obs::raw", "result": 1}).to_string()).await;
    let _ = caller.next_json(T).await;

    let c = client(&engine, "reader").await;
    let mut spans = Value::Null;
    for _ in 0..100 {
        spans = c
            .trigger(
                "engine::traces::list",
                json!({"trace_id": trace, "search_all_spans": true}),
            )
            .await
            .unwrap();
        if spans["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let span = &spans["spans"][0];
    assert_eq!(span["name"], "obs::raw", "{spans}");
    assert_eq!(span["span_id"], parts[2]);
    assert_eq!(span["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(span["service_name"], "iii-test");
    assert_eq!(span["status"], "ok");

    // A failing call's span says why; engine::* spans are hidden unless asked for.
    w.register_function("obs::fail", |_| async {
        Err(iii_protocol::protocol::ErrorBody::new("nope", "declined"))
    });
    barrier(&w).await;
    assert!(w.trigger("obs::fail", json!({})).await.is_err());
    let mut failed = Value::Null;
    for _ in 0..100 {
        failed = c
            .trigger(
                "engine::traces::list",
                json!({"name": "obs::fail", "status": "error"}),
            )
            .await
            .unwrap();
        if failed["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        failed["spans"][0]["status_description"], "nope: declined",
        "{failed}"
    );
    let internal = c
        .trigger(
            "engine::traces::list",
            json!({"name": "engine::", "limit": 1000}),
        )
        .await
        .unwrap();
    assert_eq!(internal["total"], 0, "{internal}");
    let shown = c
        .trigger(
            "engine::traces::list",
            json!({"name": "engine::", "include_internal": true}),
        )
        .await
        .unwrap();
    assert!(shown["total"].as_u64().unwrap() > 0, "{shown}");
    w.trigger("obs::ok", json!({"n": 1})).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    let m = c.trigger("engine::metrics::list", json!({})).await.unwrap();
    assert!(
        m["engine_metrics"]["performance"]["p99_duration_ms"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{m}"
    );
    assert_eq!(
        m["engine_metrics"]["invocations"]["by_function"]["obs::ok"], 1,
        "{m}"
    );
}

#[actix::test]
async fn log_and_trace_triggers_fire_and_engine_log_lines_are_stored() {
    let engine = EngineProc::start(CONFIG);
    let w = client(&engine, "watcher").await;
    let warns = recorder(&w, "obs::on-warn");
    let traces = recorder(&w, "obs::on-trace");
    w.register_function("obs::work", |_| async { Ok(json!({})) });
    w.register_trigger("log", "obs::on-warn", json!({"level": "warn"}));
    w.register_trigger("trace", "obs::on-trace", json!({"status": "ok"}));
    barrier(&w).await;
    w.trigger("engine::log::info", json!({"message": "just info"}))
        .await
        .unwrap();
    w.trigger(
        "engine::log::warn",
        json!({"message": "disk almost full", "data": {"free_mb": 12}, "service_name": "disk"}),
    )
    .await
    .unwrap();
    assert!(eventually(T, || warns.lock().unwrap().len() == 1).await);
    let got = warns.lock().unwrap()[0].clone();
    assert_eq!(got["body"], "disk almost full");
    assert_eq!(got["severity_number"], 13);
    assert_eq!(got["attributes"], json!({"free_mb": 12}));
    assert_eq!(got["service_name"], "disk");
    let logs = w.trigger("engine::logs::list", json!({})).await.unwrap();
    assert_eq!(logs["total"], 2, "{logs}");
    assert_eq!(logs["logs"][0]["body"], "disk almost full", "newest first");

    w.trigger("obs::work", json!({})).await.unwrap();
    assert!(eventually(T, || !traces.lock().unwrap().is_empty()).await);
    let ids = traces.lock().unwrap()[0]["trace_ids"].clone();
    assert!(ids.as_array().is_some_and(|a| !a.is_empty()), "{ids}");
    // The trigger's own deliveries do not feed it: it goes quiet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let n = traces.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        traces.lock().unwrap().len(),
        n,
        "trace trigger keeps firing on its own spans"
    );

    let mut ws = RawWs::connect(&engine.url(0)).await;
    let id = uuid::Uuid::new_v4().to_string();
    ws.text(json!({"type": "registertrigger", "id": id, "trigger_type": "log", "function_id": "x", "config": {"level": "loud"}}).to_string()).await;
    loop {
        let v = ws.next_json(T).await;
        if v["type"] == "triggerregistrationresult" && v["id"] == id {
            assert_eq!(v["error"]["code"], "trigger_registration_failed", "{v}");
            break;
        }
    }
}

#[actix::test]
async fn a_flood_of_spans_keeps_memory_bounded_and_calls_answered() {
    let engine = EngineProc::start(CONFIG);
    let w = client(&engine, "worker").await;
    w.register_function("obs::ping", |_| async { Ok(json!({"pong": true})) });
    barrier(&w).await;
    let (_, base_peak) = engine.rss_mib();
    let mut otel = otel_socket(&engine).await;
    let frame = spans_frame("11111111111111111111111111111111", 500, "flood");
    let started = Instant::now();
    for _ in 0..400 {
        otel.send(awc::ws::Message::Binary(frame.clone().into()))
            .await;
    }
    // Calls still go through promptly during and after the flood.
    let t0 = Instant::now();
    let req = TriggerRequest {
        function_id: "obs::ping".into(),
        payload: json!({}),
        timeout: Some(T),
        metadata: None,
        action: None,
    };
    w.trigger_with(req).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let c = client(&engine, "reader").await;
    let health = c.trigger("engine::health::check", json!({})).await.unwrap();
    let count = health["components"]["spans"]["details"]["count"]
        .as_u64()
        .unwrap();
    assert!(count <= 1000, "{health}");
    let (_, peak) = engine.rss_mib();
    eprintln!(
        "200,000 spans in {:?}: {count} kept, peak RSS {base_peak} → {peak} MiB",
        started.elapsed()
    );
    assert!(
        peak < base_peak + 80,
        "peak RSS grew from {base_peak} to {peak} MiB"
    );

    // A public session may not read telemetry.
    let public = Client::connect(&engine.url(1), ClientOptions::named("visitor"))
        .await
        .unwrap();
    for f in [
        "engine::traces::list",
        "engine::logs::list",
        "engine::metrics::list",
    ] {
        let e = public.trigger(f, json!({})).await.unwrap_err();
        assert_eq!(e.code, "FORBIDDEN", "{f}");
    }
}
