//! The attack harness of the RBAC tests: a public listener whose auth function answers by the
//! `mode` query parameter of the connecting socket, a trusted worker serving it and the
//! `api::*` functions, and helpers to connect attackers and read what they are told.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iii::protocol::ErrorBody;
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

use super::{EngineProc, RawWs};

pub const T: Duration = Duration::from_secs(5);

pub const CONFIG: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      auth_timeout_ms: 1000
      max_invocation_timeout_ms: 1500
      max_triggers_per_session: 20
      rbac:
        auth_function_id: auth::fn
        expose_functions:
          - match(\"api::*\")
          - metadata:
              public: true
  - name: iii-stream
    config: {host: 127.0.0.1, port: 0}
";

/// The trusted side: the auth function (answer chosen by `?mode=`), `api::*` functions, and a
/// non-exposed `internal::wipe` that counts its calls.
pub struct Trusted {
    pub client: Client,
    pub wipes: Arc<AtomicUsize>,
}

pub async fn trusted(engine: &EngineProc) -> Trusted {
    let client = Client::connect(&engine.url(0), ClientOptions::named("trusted"))
        .await
        .unwrap();
    client.register_function("auth::fn", |input: Value| async move {
        let mode = input["query_params"]["mode"][0].as_str().unwrap_or("prefix").to_string();
        let fresh = format!("s-{}", uuid::Uuid::new_v4());
        Ok(match mode.as_str() {
            "prefix" => json!({"function_registration_prefix": fresh, "allowed_trigger_types": ["stream"],
                               "context": {"session": fresh}}),
            "noprefix" => json!({"allowed_trigger_types": ["stream"]}),
            "lists" => json!({"allowed_functions": ["stream::get", "api::both"],
                              "forbidden_functions": ["api::both", "engine::workers::register"]}),
            "discovery" => json!({"allowed_functions": ["engine::functions::list", "engine::functions::info"],
                                  "function_registration_prefix": fresh}),
            "widen" => json!({"function_registration_prefix": fresh, "is_admin": true, "allowed_functions_all": true}),
            "throw" => return Err(ErrorBody::new("invocation_failed", "no such user")),
            "hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                json!({})
            }
            "junk" => json!("not an object"),
            "nothing" => Value::Null,
            "reserved" => json!({"function_registration_prefix": "engine"}),
            "malformed" => json!({"function_registration_prefix": "a::b"}),
            "fixed" => json!({"function_registration_prefix": "fixed-prefix"}),
            "open" => json!({}),
            other => json!({"function_registration_prefix": format!("{other}-{fresh}")}),
        })
    });
    client.register_function(
        "api::echo",
        |v: Value| async move { Ok(json!({"echo": v})) },
    );
    client.register_function("api::login", |_| async { Ok(json!({"token": "real"})) });
    client.register_function("api::both", |_| async { Ok(json!("both")) });
    client.register_function("api::slow", |_| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(json!("late"))
    });
    client.register_function_with(
        "public::tagged",
        None,
        Some(json!({"public": true})),
        |_| async { Ok(json!("trusted and tagged")) },
    );
    let wipes = Arc::new(AtomicUsize::new(0));
    let w = wipes.clone();
    client.register_function("internal::wipe", move |_| {
        let w = w.clone();
        async move {
            w.fetch_add(1, Ordering::SeqCst);
            Ok(json!("wiped"))
        }
    });
    // Ready when the auth function answers through the engine.
    while client
        .trigger("auth::fn", json!({"query_params": {}}))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Trusted { client, wipes }
}

pub fn public_url(engine: &EngineProc, mode: &str) -> String {
    format!("{}/?mode={mode}", engine.url(1))
}

pub async fn public(engine: &EngineProc, mode: &str) -> Client {
    Client::connect(&public_url(engine, mode), ClientOptions::named(mode))
        .await
        .unwrap()
}

pub async fn forbidden(c: &Client, function_id: &str) -> String {
    let err = c.trigger(function_id, json!({})).await.unwrap_err();
    assert_eq!(err.code, "FORBIDDEN", "{function_id}: {err:?}");
    assert!(err.message.contains(&format!("'{function_id}'")), "{err:?}");
    err.message
}

/// The next `error` frame on a raw socket (skipping anything else).
pub async fn error_frame(ws: &mut RawWs) -> Value {
    loop {
        let v = ws.next_json(T).await;
        if v["type"] == "error" {
            return v["error"].clone();
        }
    }
}
