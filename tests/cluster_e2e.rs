//! Calls across engines (`iii-cluster`) on a real Redis, over both transports (a WebSocket link
//! between the engines, and Redis pub/sub): a worker on engine A calls functions registered
//! only on engine B and gets the same results and errors; the caller's deadline holds;
//! `invocation_stopped` when B's worker goes away mid-call, and when engine B itself is killed
//! (its functions disappear within a few seconds); RBAC stays with A's listener.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisProc;
use common::{barrier, EngineProc};
use iii_client::{Client, ClientOptions, InvocationError, TriggerRequest};
use iii_protocol::protocol::ErrorBody;
use serde_json::{json, Value};

/// `advertise_url: ''`, as the cluster example leaves it: each engine advertises its own
/// listener.
fn config(redis: &str, transport: &str) -> String {
    format!(
        "workers:
  - name: iii-worker-manager
    config: {{host: 127.0.0.1, port: 0}}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac: {{expose_functions: ['match(\"public::*\")']}}
  - name: iii-cluster
    config: {{redis_url: '{redis}', heartbeat_ms: 200, expiry_ms: 1000, transport: {transport}, advertise_url: ''}}
"
    )
}

async fn client(engine: &EngineProc, listener: usize, name: &str) -> Client {
    Client::connect(&engine.url(listener), ClientOptions::named(name))
        .await
        .expect("connect")
}

async fn call(
    c: &Client,
    f: &str,
    data: Value,
    timeout: Option<Duration>,
) -> Result<Value, InvocationError> {
    let req = TriggerRequest {
        function_id: f.into(),
        payload: data,
        timeout,
        metadata: None,
        action: None,
    };
    c.trigger_with(req).await.map(|r| r.unwrap_or(Value::Null))
}

/// Calls until the function is known on the caller's engine (the directory is refreshed every
/// heartbeat).
async fn call_when_known(c: &Client, f: &str, data: Value) -> Result<Value, InvocationError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call(c, f, data.clone(), None).await {
            Err(e) if e.code == "function_not_found" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

#[actix::test]
async fn a_worker_calls_a_function_on_another_engine_over_a_link() {
    calls_across_engines("link").await
}

#[actix::test]
async fn a_worker_calls_a_function_on_another_engine_through_redis() {
    calls_across_engines("redis").await
}

async fn calls_across_engines(transport: &str) {
    let redis = RedisProc::start();
    let a = EngineProc::start(&config(&redis.url(), transport));
    let mut b = EngineProc::start(&config(&redis.url(), transport));
    let wb = client(&b, 0, "math-on-b").await;
    wb.register_function("math::add", |v: Value| async move {
        Ok(json!({"sum": v["a"].as_i64().unwrap_or(0) + v["b"].as_i64().unwrap_or(0), "caller": v["_caller_worker_id"]}))
    });
    wb.register_function("math::fail", |_| async {
        Err(ErrorBody::new("boom", "no sums today"))
    });
    wb.register_function("math::slow", |_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(json!({}))
    });
    barrier(&wb).await;
    let wa = client(&a, 0, "caller-on-a").await;

    let r = call_when_known(&wa, "math::add", json!({"a": 2, "b": 40}))
        .await
        .unwrap();
    assert_eq!(r["sum"], 42, "{r}");
    assert_eq!(
        a.log().contains("linking to engine"),
        transport == "link",
        "the {transport} transport carried the call"
    );
    assert_eq!(
        r["caller"],
        json!(wa.worker_id().unwrap()),
        "the caller's worker id, as for a local call"
    );
    let e = call(&wa, "math::fail", json!({}), None).await.unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("boom", "no sums today")
    );
    let e = call(&wa, "nowhere::at_all", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, "function_not_found");
    // The caller's deadline holds across engines.
    let started = Instant::now();
    let e = call(
        &wa,
        "math::slow",
        json!({}),
        Some(Duration::from_millis(400)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, "invocation_timeout", "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // 50 calls in flight at once all come back right.
    let calls = (0..50).map(|i| call(&wa, "math::add", json!({"a": i, "b": 1}), None));
    for (i, r) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.unwrap()["sum"], i as i64 + 1);
    }

    // RBAC stays with the caller's engine: a public session on A may not call it.
    let visitor = client(&a, 1, "visitor").await;
    let e = call(&visitor, "math::add", json!({"a": 1, "b": 1}), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, "FORBIDDEN", "{e:?}");
    // Nor may it pose as a call another engine forwarded (to pick its _caller_worker_id).
    let wa2 = client(&a, 0, "public-on-a").await;
    wa2.register_function("public::whoami", |v: Value| async move {
        Ok(json!({"caller": v["_caller_worker_id"]}))
    });
    barrier(&wa2).await;
    let req = TriggerRequest {
        function_id: "public::whoami".into(),
        payload: json!({}),
        timeout: None,
        metadata: Some(json!({"__iii_cluster_hop": {"caller": "someone-else"}})),
        action: None,
    };
    let r = visitor.trigger_with(req).await.unwrap().unwrap();
    assert_eq!(r["caller"], json!(visitor.worker_id().unwrap()), "{r}");

    // B's worker goes away mid-call: the caller on A hears invocation_stopped.
    let slow = tokio::spawn({
        let wa = wa.clone();
        async move { call(&wa, "math::slow", json!({}), None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    wb.shutdown().await;
    let e = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("answered")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, "invocation_stopped", "{e:?}");

    // Engine B itself is killed mid-call: invocation_stopped within a few seconds, and its
    // functions disappear.
    let wb2 = client(&b, 0, "math-on-b-again").await;
    wb2.register_function("math::slow", |_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(json!({}))
    });
    barrier(&wb2).await;
    let slow = tokio::spawn({
        let wa = wa.clone();
        async move { call_when_known(&wa, "math::slow", json!({})).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = Instant::now();
    b.kill();
    let e = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("answered")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, "invocation_stopped", "{e:?}");
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let e = call(&wa, "math::add", json!({"a": 1, "b": 1}), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, "function_not_found", "{e:?}");
}
