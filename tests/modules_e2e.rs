//! End-to-end tests of the in-engine modules (`iii-state`, `iii-pubsub`, `iii-cron`,
//! `engine::log::*`, custom streams) as an attacker and a busy user meet them: raw frames for
//! every error path of `MODULES.md`, bad trigger configs, public sessions, a custom stream that
//! answers with the wrong shape, bursts and floods, a slow cron job, and the durability of
//! file-based state under SIGKILL. The published SDKs' view is `modules_sdk_e2e.rs`.

mod common;

use std::time::Duration;

use common::{barrier, eventually, recorder, EngineProc, RawWs, MODULES};
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

async fn client(engine: &EngineProc, name: &str) -> Client {
    Client::connect(&engine.url(0), ClientOptions::named(name))
        .await
        .expect("connect")
}

/// Sends `invokefunction` on a raw socket and returns the `error` of its result.
async fn raw_error(ws: &mut RawWs, function_id: &str, data: Value) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    let frame = json!({"type": "invokefunction", "invocation_id": id, "function_id": function_id, "data": data});
    ws.text(frame.to_string()).await;
    loop {
        let v = ws.next_json(T).await;
        if v["type"] == "invocationresult" && v["invocation_id"] == id {
            assert!(
                v.get("result").is_none(),
                "{function_id}: expected an error, got {v}"
            );
            return v["error"].clone();
        }
    }
}

#[actix::test]
async fn every_error_path_answers_with_its_code() {
    let engine = EngineProc::start(MODULES);
    let mut ws = RawWs::connect(&engine.url(0)).await;
    let cases = [
        (
            "state::set",
            json!({"scope": "s", "value": 1}),
            "deserialization_error",
            "key",
        ),
        (
            "state::set",
            json!({"key": "k", "value": 1}),
            "deserialization_error",
            "scope",
        ),
        (
            "state::set",
            json!({"scope": 1, "key": "k", "value": 1}),
            "deserialization_error",
            "scope",
        ),
        (
            "state::set",
            json!({"scope": "s", "key": "k"}),
            "deserialization_error",
            "value",
        ),
        (
            "state::set",
            json!({"scope": "s", "key": "k", "value": "x".repeat(1100)}),
            "VALUE_TOO_LARGE",
            "max_value_bytes",
        ),
        (
            "state::update",
            json!({"scope": "s", "key": "k", "ops": [{"type": "set", "path": "big", "value": "x".repeat(1100)}]}),
            "VALUE_TOO_LARGE",
            "max_value_bytes",
        ),
        (
            "state::get",
            json!({"scope": "s"}),
            "deserialization_error",
            "key",
        ),
        ("state::get", json!("text"), "deserialization_error", ""),
        (
            "state::delete",
            json!({"key": "k"}),
            "deserialization_error",
            "scope",
        ),
        ("state::list", json!({}), "deserialization_error", "scope"),
        (
            "state::update",
            json!({"scope": "s", "key": "k"}),
            "deserialization_error",
            "ops",
        ),
        (
            "state::update",
            json!({"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "n", "by": 1.5}]}),
            "deserialization_error",
            "",
        ),
        (
            "publish",
            json!({"topic": "", "data": 1}),
            "topic_not_set",
            "Topic is not set",
        ),
        (
            "publish",
            json!({"data": 1}),
            "deserialization_error",
            "topic",
        ),
        (
            "publish",
            json!({"topic": 5, "data": 1}),
            "deserialization_error",
            "topic",
        ),
        (
            "engine::log::info",
            json!({}),
            "deserialization_error",
            "message",
        ),
        (
            "engine::log::error",
            json!({"message": 7}),
            "deserialization_error",
            "message",
        ),
        (
            "engine::log::debug",
            json!({"message": "m", "data": [1]}),
            "deserialization_error",
            "data",
        ),
    ];
    for (function_id, data, code, mention) in cases {
        let e = raw_error(&mut ws, function_id, data.clone()).await;
        assert_eq!(e["code"], code, "{function_id} {data}: {e}");
        assert!(
            e["message"].as_str().unwrap_or("").contains(mention),
            "{function_id} {data}: {e}"
        );
    }
}

/// Registers a binding on a raw socket and returns the engine's refusal message.
async fn refused_binding(ws: &mut RawWs, trigger_type: &str, config: Value) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let frame = json!({"type": "registertrigger", "id": id, "trigger_type": trigger_type,
                       "function_id": "raw::handler", "config": config});
    ws.text(frame.to_string()).await;
    loop {
        let v = ws.next_json(T).await;
        if v["type"] == "triggerregistrationresult" && v["id"] == id {
            assert_eq!(v["error"]["code"], "trigger_registration_failed", "{v}");
            return v["error"]["message"].as_str().unwrap().to_string();
        }
    }
}

#[actix::test]
async fn bad_trigger_configs_are_refused_with_a_reason() {
    let engine = EngineProc::start(MODULES);
    let mut ws = RawWs::connect(&engine.url(0)).await;
    let cases = [
        ("state", json!(null), "Failed to parse trigger config"),
        ("state", json!({"scope": 5}), "scope"),
        ("subscribe", json!({}), "topic"),
        ("subscribe", json!({"topic": ""}), "topic"),
        ("cron", json!({}), "Cron expression is required"),
        (
            "cron",
            json!({"expression": ""}),
            "Cron expression is required",
        ),
        (
            "cron",
            json!({"expression": "* * * * *"}),
            "Invalid cron expression '* * * * *'",
        ),
        (
            "cron",
            json!({"expression": "0 0 0 * * 9"}),
            "Invalid cron expression",
        ),
        (
            "cron",
            json!({"expression": "* * * * * *", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
    ];
    for (kind, config, mention) in cases {
        let message = refused_binding(&mut ws, kind, config.clone()).await;
        assert!(message.contains(mention), "{kind} {config}: {message}");
    }
}

#[actix::test]
async fn public_sessions_cannot_serve_or_reach_the_modules() {
    let engine = EngineProc::start(MODULES);
    let public = Client::connect(&engine.url(1), ClientOptions::named("tab"))
        .await
        .unwrap();
    for f in ["state::get", "state::set", "publish", "stream::set"] {
        let e = public.trigger(f, json!({})).await.unwrap_err();
        assert_eq!(e.code, "FORBIDDEN", "{f}: {e:?}");
    }
    // engine::log::* is infrastructure: public sessions may log (rate-limited per connection).
    public
        .trigger("engine::log::info", json!({"message": "from a tab"}))
        .await
        .unwrap();
    assert!(eventually(T, || engine.log().contains("from a tab")).await);
    // A public session may not take over a stream by registering its custom functions.
    let mut ws = RawWs::connect(&engine.url(1)).await;
    let frame = json!({"type": "registerfunction", "id": "stream::set(todo)"});
    ws.text(frame.to_string()).await;
    let e = common::attack::error_frame(&mut ws).await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("trusted workers only"),
        "{e}"
    );
    // …so a trusted write to `todo` still goes to the store.
    let w = client(&engine, "w").await;
    let r = w
        .trigger(
            "stream::set",
            json!({"stream_name": "todo", "group_id": "g", "item_id": "i", "data": 1}),
        )
        .await
        .unwrap();
    assert_eq!(r, json!({"old_value": null, "new_value": 1}));
}

#[actix::test]
async fn a_custom_stream_with_a_wrong_result_shape_is_a_json_error() {
    let engine = EngineProc::start(MODULES);
    let w = client(&engine, "w").await;
    w.register_function("stream::set(odd)", |_| async { Ok(json!(42)) });
    w.register_function("stream::delete(odd)", |_| async {
        Ok(json!({"gone": true}))
    });
    let events = recorder(&w, "w::on-odd");
    w.register_trigger("stream", "w::on-odd", json!({"stream_name": "odd"}));
    barrier(&w).await;
    let item = json!({"stream_name": "odd", "group_id": "g", "item_id": "i"});
    let mut set = item.clone();
    set["data"] = json!(1);
    let e = w.trigger("stream::set", set).await.unwrap_err();
    assert_eq!(e.code, "JSON_ERROR", "{e:?}");
    let e = w.trigger("stream::delete", item.clone()).await.unwrap_err();
    assert_eq!(e.code, "JSON_ERROR", "{e:?}");
    // Missing keys are refused before the worker is asked.
    let e = w
        .trigger("stream::set", json!({"stream_name": "odd"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "deserialization_error", "{e:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events.lock().unwrap().is_empty(), "nothing announced");
    // Once the worker goes, the stream is the store's again.
    w.shutdown().await;
    let w2 = client(&engine, "w2").await;
    let mut set = item.clone();
    set["data"] = json!(2);
    let r = w2.trigger("stream::set", set).await.unwrap();
    assert_eq!(r, json!({"old_value": null, "new_value": 2}));
}

#[actix::test]
async fn acknowledged_state_survives_kill_9() {
    let mut engine = EngineProc::start(MODULES);
    let w = client(&engine, "w").await;
    let mut acked = Vec::new();
    for i in 0..300 {
        let key = format!("k{i}");
        w.trigger(
            "state::set",
            json!({"scope": "orders", "key": key, "value": {"i": i}}),
        )
        .await
        .unwrap();
        acked.push(key);
    }
    w.trigger("state::delete", json!({"scope": "orders", "key": "k5"}))
        .await
        .unwrap();
    w.trigger(
        "state::update",
        json!({"scope": "orders", "key": "k6", "ops": [{"type": "set", "path": "paid", "value": true}]}),
    )
    .await
    .unwrap();
    engine.kill();
    engine.restart();
    let w = client(&engine, "w").await;
    let list = w
        .trigger("state::list", json!({"scope": "orders"}))
        .await
        .unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        299,
        "every acknowledged write, k5 deleted"
    );
    let k6 = w
        .trigger("state::get", json!({"scope": "orders", "key": "k6"}))
        .await
        .unwrap();
    assert_eq!(k6, json!({"i": 6, "paid": true}));
    // State and streams keep separate directories: neither sees the other's data.
    let streams = w.trigger("stream::list_all", json!({})).await.unwrap();
    assert_eq!(streams["count"], 0, "{streams}");
}

#[actix::test]
async fn a_burst_of_state_writes_is_all_acknowledged_and_all_there() {
    let engine = EngineProc::start(MODULES);
    let w = client(&engine, "w").await;
    let seen = recorder(&w, "w::on-burst");
    w.register_trigger("state", "w::on-burst", json!({"scope": "burst"}));
    barrier(&w).await;
    let calls = (0..5000).map(|i| {
        let w = w.clone();
        async move {
            w.trigger(
                "state::set",
                json!({"scope": "burst", "key": format!("k{i}"), "value": i}),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first {:?}",
        failed.len(),
        failed.first()
    );
    let list = w
        .trigger("state::list", json!({"scope": "burst"}))
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 5000);
    assert!(
        eventually(Duration::from_secs(20), || seen.lock().unwrap().len()
            == 5000)
        .await,
        "every change announced once: {}",
        seen.lock().unwrap().len()
    );
}

#[actix::test]
async fn a_log_flood_is_rate_limited_per_connection() {
    let engine = EngineProc::start(MODULES);
    let w = client(&engine, "flooder").await;
    let calls = (0..3000).map(|i| {
        let w = w.clone();
        async move {
            w.trigger(
                "engine::log::info",
                json!({"message": format!("flood {i}")}),
            )
            .await
        }
    });
    let started = std::time::Instant::now();
    let results = futures_util::future::join_all(calls).await;
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!(results.iter().all(|r| r.is_ok()), "log calls are answered");
    let quiet = client(&engine, "quiet").await;
    quiet
        .trigger("engine::log::warn", json!({"message": "still heard"}))
        .await
        .unwrap();
    let written = engine.log_count("flood ");
    // 100 lines a second per connection: at most one second's worth per second started.
    let most = 100 * (seconds + 1);
    assert!(
        written <= most,
        "{written} flood lines written in under {seconds} s"
    );
    assert!(written >= 50, "{written} flood lines written");
    assert!(
        eventually(T, || engine.log().contains("still heard")).await,
        "another connection is not silenced"
    );
}

#[actix::test]
async fn a_slow_cron_run_is_never_overlapped_and_a_failed_run_is_not_retried() {
    let engine = EngineProc::start(MODULES);
    let w = client(&engine, "w").await;
    let runs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let r = runs.clone();
    w.register_function("w::slow", move |_| {
        let r = r.clone();
        async move {
            let start = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            r.lock().unwrap().push((start, std::time::Instant::now()));
            Ok(json!({}))
        }
    });
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f = failing.clone();
    w.register_function("w::fails", move |_| {
        let f = f.clone();
        async move {
            f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(iii::protocol::ErrorBody::new("boom", "this run fails"))
        }
    });
    w.register_trigger("cron", "w::slow", json!({"expression": "* * * * * *"}));
    let started = std::time::Instant::now();
    w.register_trigger("cron", "w::fails", json!({"expression": "* * * * * *"}));
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let runs = runs.lock().unwrap().clone();
    assert!((2..=4).contains(&runs.len()), "{} slow runs", runs.len());
    for pair in runs.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "a run started before the previous one ended"
        );
    }
    let fails = failing.load(std::sync::atomic::Ordering::SeqCst) as f64;
    assert!(
        fails <= elapsed + 1.0 && fails >= elapsed - 2.0,
        "{fails} failing runs in {elapsed:.1} s: one per tick"
    );
    assert!(engine.log_count("this run fails") >= 1, "{}", engine.log());
}
