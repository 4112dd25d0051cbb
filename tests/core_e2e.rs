//! End-to-end tests of the engine core with our Rust client: registration, calls (sync, void,
//! unknown), a callee that dies mid-call, re-registration after reconnect, 1,000 concurrent
//! calls, a 10 MiB payload, the engine-side deadline and the `engine::*` functions. Every test
//! starts the real `iii` binary on a free port.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, EngineProc, BASIC};
use iii::protocol::ErrorBody;
use iii_client::{Client, ClientOptions, TriggerRequest};
use serde_json::{json, Value};

fn opts(name: &str) -> ClientOptions {
    let mut o = ClientOptions::named(name);
    o.reconnect.initial = Duration::from_millis(50);
    o.reconnect.max = Duration::from_millis(500);
    o
}

async fn client(engine: &EngineProc, name: &str) -> Client {
    Client::connect(&engine.url(0), opts(name))
        .await
        .expect("connect")
}

/// Waits until `function_id` answers (registration is asynchronous).
async fn wait_callable(c: &Client, function_id: &str, payload: Value) -> Value {
    for _ in 0..200 {
        match c.trigger(function_id, payload.clone()).await {
            Err(e) if e.code == "function_not_found" => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => return other.expect("call"),
        }
    }
    panic!("{function_id} never became callable");
}

#[actix::test]
async fn register_call_result() {
    let engine = EngineProc::start(BASIC);
    let callee = client(&engine, "callee").await;
    callee.register_function("math::add", |v: Value| async move {
        Ok(
            json!({"sum": v["a"].as_i64().unwrap_or(0) + v["b"].as_i64().unwrap_or(0),
                  "caller": v["_caller_worker_id"]}),
        )
    });
    let caller = client(&engine, "caller").await;
    let out = wait_callable(&caller, "math::add", json!({"a": 2, "b": 3})).await;
    assert_eq!(out["sum"], json!(5));
    // The engine told the callee who called (§4.3), and it is the caller's worker id.
    assert_eq!(out["caller"], json!(caller.worker_id().unwrap()));

    // A handler error reaches the caller with its code and message.
    callee.register_function("math::fail", |_| async move {
        Err(ErrorBody::new("invocation_failed", "boom"))
    });
    let err = loop {
        match caller.trigger("math::fail", json!({})).await {
            Err(e) if e.code == "function_not_found" => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => break e,
            Ok(v) => panic!("expected an error, got {v}"),
        }
    };
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        ("invocation_failed", "boom")
    );

    // A handler returning null reaches the caller as "no result".
    callee.register_function("math::nothing", |_| async move { Ok(Value::Null) });
    let req = TriggerRequest {
        function_id: "math::nothing".into(),
        payload: json!({}),
        timeout: None,
        metadata: None,
        action: None,
    };
    wait_callable(&caller, "math::nothing", json!({})).await;
    assert_eq!(caller.trigger_with(req).await.unwrap(), None);
}

#[actix::test]
async fn void_call_reaches_the_callee() {
    let engine = EngineProc::start(BASIC);
    let callee = client(&engine, "callee").await;
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    callee.register_function("jobs::run", move |v: Value| {
        let s = s.clone();
        async move {
            assert_eq!(v["n"], json!(7));
            s.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"ok": true}))
        }
    });
    let caller = client(&engine, "caller").await;
    wait_callable(&caller, "jobs::run", json!({"n": 7})).await;
    caller.trigger_void("jobs::run", json!({"n": 7}));
    assert!(eventually(Duration::from_secs(5), || seen.load(Ordering::SeqCst) == 2).await);
}

#[actix::test]
async fn unknown_function_answers_at_once() {
    let engine = EngineProc::start(BASIC);
    let caller = client(&engine, "caller").await;
    let started = std::time::Instant::now();
    let err = caller.trigger("todos::nope", json!({})).await.unwrap_err();
    assert_eq!(err.code, "function_not_found");
    assert_eq!(err.message, "Function todos::nope not found");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[actix::test]
async fn callee_dies_mid_call_gives_invocation_stopped() {
    let engine = EngineProc::start(BASIC);
    let callee = client(&engine, "callee").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    callee.register_function("slow::never", move |_| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(());
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }
    });
    let caller = client(&engine, "caller").await;
    // Registration is asynchronous: probe until the function exists.
    let probe = caller.clone();
    let call = actix::spawn(async move {
        loop {
            match probe.trigger("slow::never", json!({})).await {
                Err(e) if e.code == "function_not_found" => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => return other,
            }
        }
    });
    rx.recv().await.expect("the callee got the call");
    callee.shutdown().await;
    let err = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("answered in time")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, "invocation_stopped");
    assert_eq!(err.message, "Invocation stopped");
    // And its function is gone.
    assert_eq!(
        caller
            .trigger("slow::never", json!({}))
            .await
            .unwrap_err()
            .code,
        "function_not_found"
    );
}

#[actix::test]
async fn callee_re_registers_after_reconnect() {
    let engine = EngineProc::start(BASIC);
    let callee = client(&engine, "callee").await;
    callee.register_function(
        "echo::me",
        |v: Value| async move { Ok(json!({"echo": v["x"]})) },
    );
    let caller = client(&engine, "caller").await;
    assert_eq!(
        wait_callable(&caller, "echo::me", json!({"x": 1})).await["echo"],
        json!(1)
    );
    let first_id = callee.worker_id().unwrap();
    callee.drop_connection();
    let mut state = callee.watch_state();
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| matches!(s, iii_client::ConnectionState::Connected { worker_id } if *worker_id != first_id)),
    )
    .await
    .expect("reconnected")
    .unwrap();
    // Connected is seen when the welcome arrives; the reattach and replay that follow it are
    // still in flight. One round trip on the new connection makes sure they have landed (a call
    // routed earlier would hit the retired connection and get invocation_stopped, correctly).
    common::barrier(&callee).await;
    assert_eq!(
        wait_callable(&caller, "echo::me", json!({"x": 2})).await["echo"],
        json!(2)
    );
}

#[actix::test]
async fn thousand_concurrent_calls_answered_exactly_once() {
    let engine = EngineProc::start(BASIC);
    let callee = client(&engine, "callee").await;
    let served = Arc::new(AtomicUsize::new(0));
    let s = served.clone();
    callee.register_function("echo::n", move |v: Value| {
        let s = s.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"n": v["n"]}))
        }
    });
    let caller = client(&engine, "caller").await;
    wait_callable(&caller, "echo::n", json!({"n": -1})).await;
    served.store(0, Ordering::SeqCst);
    let calls = (0..1000).map(|n| {
        let c = caller.clone();
        async move { c.trigger("echo::n", json!({"n": n})).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut seen = HashSet::new();
    for (n, r) in results.into_iter().enumerate() {
        let v = r.expect("answered");
        assert_eq!(v["n"], json!(n), "each caller got its own answer");
        assert!(seen.insert(n));
    }
    assert_eq!(seen.len(), 1000);
    assert_eq!(
        served.load(Ordering::SeqCst),
        1000,
        "each call served exactly once"
    );
}

#[actix::test]
async fn ten_mib_payload_round_trips() {
    let engine = EngineProc::start(BASIC);
    let callee = client(&engine, "callee").await;
    callee.register_function("blob::echo", |v: Value| async move {
        Ok(json!({"blob": v["blob"]}))
    });
    let caller = client(&engine, "caller").await;
    wait_callable(&caller, "blob::echo", json!({"blob": ""})).await;
    let blob: String = (0..10 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let out = caller
        .trigger("blob::echo", json!({"blob": blob}))
        .await
        .expect("round trip");
    assert_eq!(out["blob"].as_str().map(str::len), Some(blob.len()));
    assert!(out["blob"].as_str() == Some(blob.as_str()));
}

#[actix::test]
async fn engine_deadline_fails_unanswered_calls() {
    let engine = EngineProc::start(BASIC);
    let callee = client(&engine, "callee").await;
    callee.register_function("slow::never", |_| async move {
        std::future::pending::<()>().await;
        Ok(Value::Null)
    });
    let caller = client(&engine, "caller").await;
    let probe = TriggerRequest {
        function_id: "slow::never".into(),
        payload: json!({}),
        timeout: Some(Duration::from_millis(100)),
        metadata: None,
        action: None,
    };
    // Wait until the function exists (a missing one answers function_not_found at once).
    while caller.trigger_with(probe.clone()).await.unwrap_err().code == "function_not_found" {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let req = TriggerRequest {
        function_id: "slow::never".into(),
        payload: json!({}),
        timeout: Some(Duration::from_millis(300)),
        metadata: None,
        action: None,
    };
    // The engine fails the call at the per-call deadline; the client's own timer is later.
    let started = std::time::Instant::now();
    let err = caller.trigger_with(req).await.unwrap_err();
    assert_eq!(err.code, "invocation_timeout", "{err:?}");
    assert!(
        err.message.contains("slow::never") && err.message.contains("300 ms"),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[actix::test]
async fn engine_functions_describe_the_engine() {
    let engine = EngineProc::start(BASIC);
    let worker = client(&engine, "lister").await;
    worker.register_function_with(
        "catalog::a",
        Some("A function".into()),
        Some(json!({"k": 1})),
        |_| async { Ok(Value::Null) },
    );
    let fns = loop {
        let v = worker
            .trigger("engine::functions::list", json!({}))
            .await
            .unwrap();
        if v["functions"].as_array().is_some_and(|a| !a.is_empty()) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        fns["functions"],
        json!([{"function_id": "catalog::a", "worker_name": "lister", "description": "A function", "metadata": {"k": 1}}])
    );
    let workers = worker
        .trigger("engine::workers::list", json!({}))
        .await
        .unwrap();
    let me = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == json!("lister"))
        .expect("the client is listed");
    assert_eq!(me["runtime"], json!("rust"));
    assert_eq!(me["function_count"], json!(1));
    let types = worker
        .trigger("engine::triggers::list", json!({}))
        .await
        .unwrap();
    let ids: Vec<&str> = types["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(ids.contains(&"engine::workers-available"), "{ids:?}");
    let reg = worker
        .trigger(
            "engine::register_trigger",
            json!({"trigger_type": "engine::workers-available", "function_id": "catalog::a"}),
        )
        .await
        .unwrap();
    let id = reg["id"].as_str().unwrap().to_string();
    let removed = worker
        .trigger("engine::unregister_trigger", json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(removed, json!({"removed": true}));
    let removed = worker
        .trigger("engine::unregister_trigger", json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(removed, json!({"removed": false}));
}

#[actix::test]
async fn workers_available_trigger_fires_on_connect_and_disconnect() {
    let engine = EngineProc::start(BASIC);
    let watcher = client(&engine, "watcher").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    watcher.register_function("watch::workers", move |v: Value| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(v);
            Ok(json!({}))
        }
    });
    watcher.register_trigger("engine::workers-available", "watch::workers", json!({}));
    common::barrier(&watcher).await;
    let other = client(&engine, "other").await;
    let other_id = other.worker_id().unwrap();
    other.shutdown().await;
    let mut events = Vec::new();
    while let Ok(Some(v)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        if v["worker_id"] == json!(other_id) {
            events.push(v["event"].as_str().unwrap_or("").to_string());
            if events.last().map(String::as_str) == Some("worker_disconnected") {
                break;
            }
        }
    }
    assert_eq!(
        events.first().map(String::as_str),
        Some("worker_connected"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("worker_disconnected"),
        "{events:?}"
    );
}

#[actix::test]
async fn worker_provided_trigger_types_get_their_bindings() {
    use iii_client::TriggerTypeEvent;
    let engine = EngineProc::start(BASIC);
    let consumer = client(&engine, "consumer").await;
    consumer.register_function("hooks::on-call", |_| async { Ok(json!({})) });
    // Bound before any provider exists: parked, not an error.
    let binding = consumer.register_trigger("webhook", "hooks::on-call", json!({"path": "/x"}));
    common::barrier(&consumer).await;

    let provider = client(&engine, "provider").await;
    let (_ty, mut events) = provider.register_trigger_type("webhook", "HTTP webhook trigger");
    let bound = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    let TriggerTypeEvent::Bind {
        id,
        function_id,
        config,
        ..
    } = bound
    else {
        panic!("expected a bind, got {bound:?}")
    };
    assert_eq!(id, binding.id());
    assert_eq!(function_id, "hooks::on-call");
    assert_eq!(config, json!({"path": "/x"}));

    // The provider leaves and a new one arrives: the binding is handed over again.
    provider.shutdown().await;
    let provider2 = client(&engine, "provider2").await;
    let (_ty2, mut events2) = provider2.register_trigger_type("webhook", "HTTP webhook trigger");
    let again = tokio::time::timeout(Duration::from_secs(5), events2.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(again, TriggerTypeEvent::Bind { ref id, .. } if id == binding.id()),
        "{again:?}"
    );

    // Removing the binding tells the provider.
    binding.unregister();
    let gone = tokio::time::timeout(Duration::from_secs(5), events2.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        gone,
        TriggerTypeEvent::Unbind {
            id: binding.id().to_string()
        }
    );
}

#[actix::test]
async fn provider_rejection_reaches_the_registering_worker() {
    use common::RawWs;
    let engine = EngineProc::start(BASIC);
    let mut provider = RawWs::connect(&engine.url(0)).await;
    provider
        .text(r#"{"type":"registertriggertype","id":"cron","description":"Cron"}"#)
        .await;
    let mut consumer = RawWs::connect(&engine.url(0)).await;
    consumer
        .text(r#"{"type":"registertrigger","id":"t-1","trigger_type":"cron","function_id":"jobs::tick","config":{"expr":"bad"}}"#)
        .await;
    let handed = provider.next_json(Duration::from_secs(5)).await;
    assert_eq!(handed["type"], "registertrigger");
    assert_eq!(handed["id"], "t-1");
    // Someone who is not the provider cannot answer for it.
    consumer
        .text(r#"{"type":"triggerregistrationresult","id":"t-1","trigger_type":"cron","function_id":"jobs::tick","error":{"code":"x","message":"spoofed"}}"#)
        .await;
    provider
        .text(r#"{"type":"triggerregistrationresult","id":"t-1","trigger_type":"cron","function_id":"jobs::tick","error":{"code":"trigger_registration_failed","message":"invalid cron expression"}}"#)
        .await;
    let told = consumer.next_json(Duration::from_secs(5)).await;
    assert_eq!(told["type"], "triggerregistrationresult");
    assert_eq!(told["id"], "t-1");
    assert_eq!(told["error"]["code"], "trigger_registration_failed");
    assert_eq!(told["error"]["message"], "invalid cron expression");
}

#[actix::test]
async fn functions_available_trigger_fires_when_the_set_changes() {
    let engine = EngineProc::start(BASIC);
    let watcher = client(&engine, "watcher").await;
    let seen = common::recorder(&watcher, "watch::functions");
    watcher.register_trigger("engine::functions-available", "watch::functions", json!({}));
    common::barrier(&watcher).await;
    let other = client(&engine, "other").await;
    other.register_function("new::fn", |_| async { Ok(json!(1)) });
    let has_new = |v: &Value| {
        v["event"] == "functions_changed"
            && v["functions"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x["function_id"] == "new::fn"))
    };
    assert!(
        eventually(Duration::from_secs(5), || seen
            .lock()
            .unwrap()
            .iter()
            .any(has_new))
        .await
    );
    other.shutdown().await;
    let gone = |v: &Value| {
        v["functions"]
            .as_array()
            .is_some_and(|f| !f.iter().any(|x| x["function_id"] == "new::fn"))
    };
    assert!(
        eventually(Duration::from_secs(5), || seen
            .lock()
            .unwrap()
            .last()
            .is_some_and(gone))
        .await
    );
}
