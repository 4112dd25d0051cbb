//! What a Rust worker does with the published `iii-sdk` crate, checked against the engine at
//! `III_URL`: it registers a function and calls it through the engine, uses `state::*`, binds a
//! `stream` trigger and receives the event of a `stream::set`. Every observation is printed as
//! one JSON line on stdout (the e2e test compares them); any failure exits non-zero with a
//! message on stderr.

use std::time::{Duration, Instant};

use iii_sdk::protocol::{RegisterTriggerInput, TriggerRequest};
use iii_sdk::{register_worker, Error, IIIClient, InitOptions, RegisterFunction};
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn emit(label: &str, value: Value) {
    println!("{}", json!({ label: value }));
}

fn fail(message: String) -> ! {
    eprintln!("iii-sdk-rust-check: FAIL: {message}");
    std::process::exit(1);
}

/// Calls `function_id`; remote errors come back as `{"error": {"code", "message"}}`.
async fn call(iii: &IIIClient, function_id: &str, payload: Value) -> Value {
    let request = TriggerRequest {
        function_id: function_id.to_string(),
        payload,
        action: None,
        timeout_ms: Some(10_000),
    };
    match iii.trigger(request).await {
        Ok(v) => v,
        Err(Error::Remote { code, message, .. }) => json!({"error": {"code": code, "message": message}}),
        Err(e) => fail(format!("{function_id}: {e}")),
    }
}

/// Calls a function of our own until the engine has its registration (the SDK registers in
/// the background).
async fn call_when_registered(iii: &IIIClient, function_id: &str, payload: Value) -> Value {
    let start = Instant::now();
    loop {
        let v = call(iii, function_id, payload.clone()).await;
        let missing = v["error"]["code"] == "function_not_found";
        if !missing || start.elapsed() > Duration::from_secs(10) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("III_URL").unwrap_or_else(|_| "ws://127.0.0.1:49134".into());
    let iii = register_worker(&url, InitOptions::default());

    iii.register_function(
        "rust::double",
        RegisterFunction::new(|input: Value| -> Result<Value, Error> {
            let n = input["n"].as_i64().ok_or("n must be an integer")?;
            Ok(json!({ "doubled": n * 2 }))
        }),
    );
    let (events_tx, mut events) = mpsc::unbounded_channel::<Value>();
    iii.register_function(
        "rust::on-stream",
        RegisterFunction::new(move |event: Value| -> Result<Value, Error> {
            let _ = events_tx.send(event);
            Ok(json!({}))
        }),
    );
    iii.register_trigger(RegisterTriggerInput {
        trigger_type: "stream".into(),
        function_id: "rust::on-stream".into(),
        config: json!({"stream_name": "rust-stream", "group_id": "g"}),
        metadata: None,
    })
    .unwrap_or_else(|e| fail(format!("register_trigger: {e}")));

    emit("double", call_when_registered(&iii, "rust::double", json!({"n": 21})).await);
    emit("handler_error", call(&iii, "rust::double", json!({"n": "x"})).await);

    let item = json!({"scope": "rust", "key": "k1", "value": {"count": 1}});
    emit("state_set", call(&iii, "state::set", item).await);
    emit("state_get", call(&iii, "state::get", json!({"scope": "rust", "key": "k1"})).await);
    emit("state_list", call(&iii, "state::list", json!({"scope": "rust"})).await);
    emit("state_delete", call(&iii, "state::delete", json!({"scope": "rust", "key": "k1"})).await);
    emit("state_missing", call(&iii, "state::get", json!({"scope": "rust", "key": "k1"})).await);
    emit("state_bad", call(&iii, "state::get", json!({"scope": "rust"})).await);

    // The trigger is registered once the engine answers the stream write after it: writes go
    // out on the same socket, in order. Retry a few times in case the binding lands late.
    // A fresh item each time, so the event is always a `create`.
    let start = Instant::now();
    let mut attempt = 0;
    let event = loop {
        attempt += 1;
        let set = json!({"stream_name": "rust-stream", "group_id": "g", "item_id": format!("i{attempt}"), "data": {"n": attempt}});
        call(&iii, "stream::set", set).await;
        match tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
            Ok(Some(e)) => break e,
            _ if start.elapsed() > Duration::from_secs(10) => fail("no stream event within 10 s".into()),
            _ => continue,
        }
    };
    emit(
        "stream_event",
        json!({"type": event["type"], "streamName": event["streamName"], "groupId": event["groupId"],
               "event_type": event["event"]["type"]}),
    );
    iii.shutdown_async().await;
    emit("done", json!(true));
}
