//! `iii-bridge`: engine L connects to engine R as a worker. L's workers call R's functions
//! through `forward` aliases and `bridge.invoke` / `bridge.invoke_async` (R's errors keep their
//! code); R's workers call L's functions that the bridge `expose`s; when R restarts, the bridge
//! reconnects and exposes them again.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{barrier, eventually, EngineProc};
use iii_client::{Client, ClientOptions};
use iii_protocol::protocol::ErrorBody;
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn client(url: &str, name: &str) -> Client {
    Client::connect(url, ClientOptions::named(name))
        .await
        .expect("connect")
}

/// Calls until the function is there (the bridge connects and registers in the background).
async fn call_when_there(
    c: &Client,
    f: &str,
    data: Value,
) -> Result<Value, iii_client::InvocationError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.trigger(f, data.clone()).await {
            Err(e) if e.code == "function_not_found" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

#[actix::test]
async fn two_engines_call_each_other_through_the_bridge() {
    let port = free_port();
    let remote_cfg = format!(
        "workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: {port}}}\n"
    );
    let mut remote = EngineProc::start(&remote_cfg);
    let remote_url = format!("ws://127.0.0.1:{port}");
    let local_cfg = format!(
        "workers:
  - name: iii-worker-manager
    config: {{host: 127.0.0.1, port: 0}}
  - name: iii-bridge
    config:
      url: {remote_url}
      service_id: docs-say-this-works
      expose: [{{local_function: local::hello, remote_function: l::hello}}]
      forward:
        - {{local_function: remote::count, remote_function: inventory::count, timeout_ms: 2000}}
        - {{local_function: remote::fail, remote_function: inventory::fail}}
"
    );
    let local = EngineProc::start(&local_cfg);

    let r = client(&remote_url, "inventory").await;
    let pings: Arc<Mutex<Vec<Value>>> = Arc::default();
    let p = pings.clone();
    r.register_function("inventory::count", |_| async { Ok(json!({"count": 7})) });
    r.register_function("inventory::fail", |_| async {
        Err(ErrorBody::new("OUT_OF_STOCK", "none left"))
    });
    r.register_function("inventory::ping", move |v| {
        p.lock().unwrap().push(v);
        async { Ok(json!({})) }
    });
    barrier(&r).await;
    let l = client(&local.url(0), "shop").await;
    l.register_function("local::hello", |v: Value| async move {
        Ok(json!({"hello": v["name"]}))
    });
    barrier(&l).await;

    assert_eq!(
        call_when_there(&l, "remote::count", json!({}))
            .await
            .unwrap(),
        json!({"count": 7})
    );
    let e = l.trigger("remote::fail", json!({})).await.unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("OUT_OF_STOCK", "none left")
    );
    let got = l
        .trigger("bridge.invoke", json!({"function_id": "inventory::count"}))
        .await
        .unwrap();
    assert_eq!(got, json!({"count": 7}));
    let e = l
        .trigger("bridge.invoke", json!({"data": 1}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "deserialization_error", "{e:?}");
    let r_void = l
        .trigger(
            "bridge.invoke_async",
            json!({"function_id": "inventory::ping", "data": {"n": 1}}),
        )
        .await
        .unwrap();
    assert_eq!(r_void, Value::Null);
    assert!(eventually(Duration::from_secs(5), || pings.lock().unwrap().len() == 1).await);
    assert_eq!(pings.lock().unwrap()[0]["n"], 1);

    // The remote engine calls what the bridge exposes.
    let hello = call_when_there(&r, "l::hello", json!({"name": "Ada"}))
        .await
        .unwrap();
    assert_eq!(hello, json!({"hello": "Ada"}));

    // The remote engine restarts: the bridge reconnects and exposes l::hello again.
    remote.kill();
    let e = l.trigger("remote::count", json!({})).await.unwrap_err();
    assert_eq!(e.code, "bridge_error", "{e:?}");
    remote.restart();
    let r2 = client(&remote_url, "inventory-again").await;
    let hello = call_when_there(&r2, "l::hello", json!({"name": "Grace"}))
        .await
        .unwrap();
    assert_eq!(hello, json!({"hello": "Grace"}));
}

#[actix::test]
async fn state_through_the_bridge_lives_on_the_remote_engine() {
    let remote = EngineProc::start(
        "workers:\n  - name: iii-worker-manager\n    config: {host: 127.0.0.1, port: 0}\n  - name: iii-state\n",
    );
    let local = EngineProc::start(&format!(
        "workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: 0}}\n  \
         - name: iii-state\n    config: {{adapter: {{name: bridge, config: {{bridge_url: '{}'}}}}}}\n",
        remote.url(0)
    ));
    let r = client(&remote.url(0), "on-remote").await;
    let l = client(&local.url(0), "on-local").await;
    let on_r = common::recorder(&r, "carts::remote_saw");
    let on_l = common::recorder(&l, "carts::local_saw");
    r.register_trigger("state", "carts::remote_saw", json!({"scope": "carts"}));
    l.register_trigger("state", "carts::local_saw", json!({"scope": "carts"}));
    barrier(&r).await;
    barrier(&l).await;

    let set = json!({"scope": "carts", "key": "ada", "value": {"items": 2}});
    let first = loop {
        // The bridge connects in the background: the first call may wait for it.
        match l.trigger("state::set", set.clone()).await {
            Ok(v) => break v,
            Err(e) => assert_eq!(e.code, "SET_ERROR", "{e:?}"),
        }
    };
    assert_eq!(first, json!({"old_value": null, "new_value": {"items": 2}}));
    let got = r
        .trigger("state::get", json!({"scope": "carts", "key": "ada"}))
        .await
        .unwrap();
    assert_eq!(
        got,
        json!({"items": 2}),
        "the value lives on the remote engine"
    );
    let groups = l.trigger("state::list_groups", json!({})).await.unwrap();
    assert_eq!(groups, json!({"groups": ["carts"]}));
    let deleted = l
        .trigger("state::delete", json!({"scope": "carts", "key": "ada"}))
        .await
        .unwrap();
    assert_eq!(deleted, json!({"items": 2}));
    assert!(
        eventually(Duration::from_secs(5), || on_l.lock().unwrap().len() == 2
            && on_r.lock().unwrap().len() == 2)
        .await
    );
    let kinds = |v: &Arc<Mutex<Vec<Value>>>| -> Vec<Value> {
        v.lock()
            .unwrap()
            .iter()
            .map(|e| e["event_type"].clone())
            .collect()
    };
    assert_eq!(
        kinds(&on_l),
        [json!("state:created"), json!("state:deleted")]
    );
    assert_eq!(
        kinds(&on_r),
        [json!("state:created"), json!("state:deleted")]
    );
    let e = l
        .trigger("state::get", json!({"key": "ada"}))
        .await
        .unwrap_err();
    assert_eq!(
        e.code, "deserialization_error",
        "checked here, before the bridge: {e:?}"
    );
}
