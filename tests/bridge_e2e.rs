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
