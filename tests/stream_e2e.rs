//! End-to-end tests of the stream module: the `stream::*` shapes and trigger events with the
//! published Node SDK, fan-out order and isolation from slow subscribers, trigger filters and
//! conditions, the consumer socket (port 3112 protocol), and a config without a stream module.
//! The store's durability is in `store_e2e.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sdk::{node_cmd, run_checks, start_worker};
use common::streams::{client, set, stream_config};
use common::{EngineProc, RawEvent, RawWs, BASIC};
use iii_client::Client;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

/// Registers `id` as a subscriber that records every event it gets.
fn recorder(c: &Client, id: &str, config: Value) -> Arc<Mutex<Vec<Value>>> {
    let seen = common::recorder(c, id);
    c.register_trigger("stream", id, config);
    seen
}

/// Waits until the engine has handled every registration these clients sent.
async fn settle(clients: &[&Client]) {
    for c in clients {
        common::barrier(c).await;
    }
}

#[test]
fn node_sdk_shapes_and_group_subscribers() {
    let engine = EngineProc::start(&stream_config(""));
    let url = engine.url(0);
    let sub = |name: &str, group: &str| {
        let mut cmd = node_cmd("node-stream-subscriber.mjs");
        cmd.env("SUBSCRIBER_NAME", name).env("STREAM_GROUP", group);
        start_worker(cmd, name, &url)
    };
    let a = sub("suba", "todos");
    let b = sub("subb", "todos");
    let other = sub("subo", "other");
    run_checks(node_cmd("node-stream-check.mjs"), "node-stream-check", &url);

    let events = |p: &common::sdk::SdkProc| -> Vec<Value> {
        p.drain(Duration::from_millis(1500))
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.get("event").cloned())
            .collect()
    };
    let kinds = |evs: &[Value]| -> Vec<String> {
        evs.iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["event"]["type"].as_str().unwrap_or("?"),
                    e["id"].as_str().unwrap_or("?")
                )
            })
            .collect()
    };
    let (ea, eb, eo) = (events(&a), events(&b), events(&other));
    let expected = [
        "create:t1",
        "update:t1",
        "update:t1",
        "update:t1",
        "delete:t1",
    ];
    assert_eq!(kinds(&ea), expected, "{ea:?}");
    assert_eq!(kinds(&eb), expected, "{eb:?}");
    assert_eq!(kinds(&eo), ["create:o1", "delete:o1"], "{eo:?}");
    let first = &ea[0];
    assert_eq!(first["type"], "stream");
    assert_eq!(first["streamName"], "todo");
    assert_eq!(first["groupId"], "todos");
    assert!(
        first["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000_000),
        "{first}"
    );
    assert_eq!(
        first["event"]["data"],
        json!({"id": "t1", "title": "first", "completed": false})
    );
    assert_eq!(
        ea[4]["event"]["data"]["n"],
        json!(2),
        "delete carries the old value"
    );
}

#[actix::test]
async fn events_arrive_in_write_order_and_a_slow_subscriber_delays_nobody() {
    let engine = EngineProc::start(&stream_config(""));
    let fast = client(&engine, "fast").await;
    let fast_seen = recorder(
        &fast,
        "fast::on",
        json!({"stream_name": "todo", "group_id": "todos"}),
    );
    let slow = client(&engine, "slow").await;
    let slow_started = Arc::new(AtomicUsize::new(0));
    let s = slow_started.clone();
    slow.register_function("slow::on", move |_| {
        let s = s.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(json!({}))
        }
    });
    slow.register_trigger("stream", "slow::on", json!({"stream_name": "todo"}));
    let writer = client(&engine, "writer").await;
    settle(&[&fast, &slow]).await;
    let started = Instant::now();
    for n in 0..200 {
        writer
            .trigger("stream::set", set("same", json!({"n": n})))
            .await
            .expect("acked");
    }
    let write_time = started.elapsed();
    assert!(
        write_time < Duration::from_secs(10),
        "writes were held up: {write_time:?}"
    );
    assert!(
        common::eventually(T, || fast_seen.lock().unwrap().len() == 200).await,
        "fast subscriber saw {}",
        fast_seen.lock().unwrap().len()
    );
    let ns: Vec<i64> = fast_seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["event"]["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ns,
        (0..200).collect::<Vec<_>>(),
        "one item's events arrive in write order"
    );
    assert_eq!(fast_seen.lock().unwrap()[0]["event"]["type"], "create");
    assert_eq!(fast_seen.lock().unwrap()[1]["event"]["type"], "update");
    // The slow subscriber got its events too (each is its own call), it just has not finished.
    assert!(common::eventually(T, || slow_started.load(Ordering::SeqCst) == 200).await);
}

#[actix::test]
async fn item_filter_and_condition_function() {
    let engine = EngineProc::start(&stream_config(""));
    let w = client(&engine, "w").await;
    let only_t2 = recorder(
        &w,
        "f::t2",
        json!({"stream_name": "todo", "group_id": "todos", "item_id": "t2"}),
    );
    w.register_function("f::only-done", |e: Value| async move {
        Ok(json!(e["event"]["data"]["done"] == json!(true)))
    });
    let done = recorder(
        &w,
        "f::done",
        json!({"stream_name": "todo", "condition_function_id": "f::only-done"}),
    );
    let any = recorder(&w, "f::any", json!({"stream_name": "todo", "group_id": ""}));
    settle(&[&w]).await;
    w.trigger("stream::set", set("t1", json!({"done": false})))
        .await
        .unwrap();
    w.trigger("stream::set", set("t2", json!({"done": true})))
        .await
        .unwrap();
    w.trigger("stream::set", set("t3", json!({"done": true})))
        .await
        .unwrap();
    w.trigger(
        "stream::set",
        json!({"stream_name": "todo", "group_id": "elsewhere", "item_id": "t9", "data": {"done": false}}),
    )
    .await
    .unwrap();
    assert!(common::eventually(T, || any.lock().unwrap().len() == 4).await);
    assert!(
        common::eventually(T, || done.lock().unwrap().len() == 2
            && only_t2.lock().unwrap().len() == 1)
        .await
    );
    // Nothing more arrives after a while.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids = |v: &Arc<Mutex<Vec<Value>>>| -> Vec<String> {
        v.lock()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(ids(&only_t2), ["t2"]);
    assert_eq!(ids(&done), ["t2", "t3"]);
}

#[actix::test]
async fn bad_stream_trigger_config_is_reported() {
    let engine = EngineProc::start(&stream_config(""));
    let mut ws = RawWs::connect(&engine.url(0)).await;
    ws.text(r#"{"type":"registerfunction","id":"x::on"}"#).await;
    ws.text(r#"{"type":"registertrigger","id":"bad-1","trigger_type":"stream","function_id":"x::on","config":{"group_id":"todos"}}"#).await;
    let v = ws.next_json(T).await;
    assert_eq!(v["type"], "triggerregistrationresult");
    assert_eq!(v["id"], "bad-1");
    assert_eq!(v["function_id"], "x::on");
    assert_eq!(v["error"]["code"], "trigger_registration_failed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stream_name"),
        "{v}"
    );
    ws.text(r#"{"type":"registertrigger","id":"bad-2","trigger_type":"stream","function_id":"x::on","config":"todo"}"#).await;
    let v = ws.next_json(T).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Failed to deserialize stream trigger"),
        "{v}"
    );
}

#[actix::test]
async fn consumer_socket_join_sync_push_leave() {
    let engine = EngineProc::start(&stream_config(""));
    let w = client(&engine, "w").await;
    w.trigger("stream::set", set("t1", json!({"id": "t1"})))
        .await
        .unwrap();
    let stream_url = engine.ready["stream"].as_str().unwrap().to_string();
    let mut c = RawWs::connect(&stream_url).await;
    c.text(
        r#"{"type":"join","data":{"subscriptionId":"s1","streamName":"todo","groupId":"todos"}}"#,
    )
    .await;
    let sync = c.next_json(T).await;
    assert_eq!(sync["type"], "stream");
    assert_eq!(sync["id"], Value::Null);
    assert_eq!(
        sync["event"],
        json!({"type": "sync", "data": [{"id": "t1"}]})
    );
    c.text(r#"{"type":"join","data":{"subscriptionId":"s2","streamName":"todo","groupId":"todos","id":"t2"}}"#).await;
    let item_sync = c.next_json(T).await;
    assert_eq!(item_sync["id"], "t2");
    assert_eq!(item_sync["event"], json!({"type": "sync", "data": null}));

    w.trigger("stream::set", set("t2", json!({"id": "t2"})))
        .await
        .unwrap();
    // Both subscriptions match t2: the change frame comes twice (as upstream).
    for _ in 0..2 {
        let v = c.next_json(T).await;
        assert_eq!(v["event"], json!({"type": "create", "data": {"id": "t2"}}));
        assert_eq!(v["streamName"], "todo");
    }
    c.text(
        r#"{"type":"leave","data":{"subscriptionId":"s2","streamName":"todo","groupId":"todos"}}"#,
    )
    .await;
    // The socket's frames are handled in order: once a later join is answered, the leave is done.
    c.text(r#"{"type":"join","data":{"subscriptionId":"s3","streamName":"todo","groupId":"elsewhere"}}"#)
        .await;
    assert_eq!(c.next_json(T).await["event"]["type"], "sync");
    w.trigger(
        "stream::delete",
        json!({"stream_name": "todo", "group_id": "todos", "item_id": "t2"}),
    )
    .await
    .unwrap();
    let v = c.next_json(T).await;
    assert_eq!(v["event"], json!({"type": "delete", "data": {"id": "t2"}}));
    assert!(
        c.next(Duration::from_millis(300)).await.is_none(),
        "the left subscription gets nothing"
    );
    w.trigger(
        "stream::send",
        json!({"stream_name": "todo", "group_id": "todos", "type": "typing", "data": {"who": "a"}}),
    )
    .await
    .unwrap();
    let v = c.next_json(T).await;
    assert_eq!(
        v["event"],
        json!({"type": "event", "event": {"type": "typing", "data": {"who": "a"}}})
    );
}

#[actix::test]
async fn stream_join_trigger_can_refuse_a_subscription() {
    let engine = EngineProc::start(&stream_config(""));
    let w = client(&engine, "w").await;
    let joins = Arc::new(Mutex::new(Vec::new()));
    let j = joins.clone();
    w.register_function("guard::join", move |v: Value| {
        let j = j.clone();
        async move {
            let refuse = v["group_id"] == json!("secret");
            j.lock().unwrap().push(v);
            Ok(if refuse {
                json!({"unauthorized": true})
            } else {
                json!({})
            })
        }
    });
    w.register_trigger("stream:join", "guard::join", json!({}));
    settle(&[&w]).await;
    let stream_url = engine.ready["stream"].as_str().unwrap().to_string();
    let mut c = RawWs::connect(&stream_url).await;
    c.text(
        r#"{"type":"join","data":{"subscriptionId":"s1","streamName":"todo","groupId":"secret"}}"#,
    )
    .await;
    let v = c.next_json(T).await;
    assert_eq!(v["event"], json!({"type": "unauthorized"}));
    c.text(
        r#"{"type":"join","data":{"subscriptionId":"s2","streamName":"todo","groupId":"todos"}}"#,
    )
    .await;
    assert_eq!(c.next_json(T).await["event"]["type"], "sync");
    w.trigger(
        "stream::set",
        json!({"stream_name": "todo", "group_id": "secret", "item_id": "x", "data": 1}),
    )
    .await
    .unwrap();
    assert!(
        c.next(Duration::from_millis(300)).await.is_none(),
        "refused subscription gets nothing"
    );
    let first = joins.lock().unwrap()[0].clone();
    assert_eq!(
        first,
        json!({"subscription_id": "s1", "stream_name": "todo", "group_id": "secret", "id": null, "context": null})
    );
}

#[actix::test]
async fn without_a_stream_module_there_are_no_stream_functions() {
    let engine = EngineProc::start(BASIC);
    let w = client(&engine, "w").await;
    let err = w
        .trigger("stream::set", set("t1", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(err.code, "function_not_found");
    assert_eq!(err.message, "Function stream::set not found");
}

#[actix::test]
async fn in_memory_store_works_without_a_directory() {
    let engine = EngineProc::start(
        "workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: 0\n  \
         - name: iii-stream\n    config:\n      host: 127.0.0.1\n      port: 0\n",
    );
    let w = client(&engine, "w").await;
    w.trigger("stream::set", set("t1", json!(1))).await.unwrap();
    assert_eq!(
        w.trigger(
            "stream::get",
            json!({"stream_name": "todo", "group_id": "todos", "item_id": "t1"})
        )
        .await
        .unwrap(),
        json!(1)
    );
    assert!(!engine.path().join("kv_store_data.db").exists());
    let _ = RawEvent::Ended;
}
