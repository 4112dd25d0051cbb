//! Engines that share a real Redis (`redis-server` on a free port): `iii-pubsub` with the
//! `redis` adapter delivers a message published through one engine to the subscribers of every
//! engine, in order, to every subscription of a topic; an `iii-cron` job registered on three
//! engines runs each tick exactly once in all; a publish while Redis is down fails with an
//! error instead of pretending; `iii-state` on Redis is one state for all engines, a write
//! through one fires the `state` triggers of the others once each, and concurrent updates from
//! two engines lose nothing; `iii-stream` on Redis pushes a write made through one engine to
//! the `stream` triggers and consumer sockets of another; an unreachable Redis stops the boot
//! naming the module.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::redis::RedisProc;
use common::{barrier, eventually, recorder, EngineProc, RawWs};
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

fn config(redis: &str) -> String {
    format!(
        "workers:
  - name: iii-worker-manager
    config: {{host: 127.0.0.1, port: 0}}
  - name: iii-pubsub
    config: {{adapter: {{name: redis, config: {{redis_url: '{redis}'}}}}}}
  - name: iii-cron
    config: {{adapter: {{name: redis, config: {{redis_url: '{redis}'}}}}}}
  - name: iii-state
    config: {{adapter: {{name: redis, config: {{redis_url: '{redis}'}}}}}}
  - name: iii-stream
    config: {{host: 127.0.0.1, port: 0, adapter: {{name: redis, config: {{redis_url: '{redis}'}}}}}}
"
    )
}

/// Redis listeners subscribe in the background: calls `f` with `data` every 50 ms until `arrived`
/// says the probe got through (at most 100 times).
async fn until_through(c: &Client, f: &str, data: Value, arrived: impl Fn() -> bool) {
    for _ in 0..100 {
        if arrived() {
            return;
        }
        c.trigger(f, data.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {f} got through Redis");
}

async fn client(engine: &EngineProc, name: &str) -> Client {
    Client::connect(&engine.url(0), ClientOptions::named(name))
        .await
        .expect("connect")
}

#[actix::test]
async fn a_publish_on_one_engine_reaches_the_subscribers_of_every_engine() {
    let mut redis = RedisProc::start();
    let engines: Vec<EngineProc> = (0..3)
        .map(|_| EngineProc::start(&config(&redis.url())))
        .collect();
    let a = client(&engines[0], "a").await;
    let b = client(&engines[1], "b").await;
    let seen_a = recorder(&a, "news::a");
    let seen_b1 = recorder(&b, "news::b1");
    let seen_b2 = recorder(&b, "news::b2");
    a.register_trigger("subscribe", "news::a", json!({"topic": "news"}));
    b.register_trigger("subscribe", "news::b1", json!({"topic": "news"}));
    b.register_trigger("subscribe", "news::b2", json!({"topic": "news"}));
    b.register_trigger("subscribe", "news::b2", json!({"topic": "other"}));
    barrier(&a).await;
    barrier(&b).await;
    let publisher = client(&engines[2], "publisher").await;
    // The subscriptions' pattern listeners may still be connecting: wait until one message
    // arrives everywhere.
    let probed = |s: &Arc<Mutex<Vec<Value>>>| s.lock().unwrap().iter().any(|v| v["probe"] == true);
    let probe = json!({"topic": "news", "data": {"probe": true}});
    until_through(&publisher, "publish", probe, || {
        probed(&seen_a) && probed(&seen_b1)
    })
    .await;
    for s in [&seen_a, &seen_b1, &seen_b2] {
        s.lock().unwrap().clear();
    }
    for n in 0..20 {
        publisher
            .trigger("publish", json!({"topic": "news", "data": {"n": n}}))
            .await
            .unwrap();
    }
    let want: Vec<Value> = (0..20).map(|n| json!({"n": n})).collect();
    for (name, seen) in [("a", &seen_a), ("b1", &seen_b1), ("b2", &seen_b2)] {
        assert!(
            eventually(Duration::from_secs(5), || seen.lock().unwrap().len() >= 20).await,
            "{name}: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got: Vec<Value> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v.get("probe").is_none())
            .cloned()
            .collect();
        assert_eq!(got, want, "{name}: every message once, in order");
    }

    // Redis goes away: a publish says so.
    redis.kill();
    let e = publisher
        .trigger("publish", json!({"topic": "news", "data": {"n": 99}}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "publish_failed", "{e:?}");
}

#[actix::test]
async fn a_cron_tick_runs_exactly_once_across_three_engines() {
    let redis = RedisProc::start();
    let engines: Vec<EngineProc> = (0..3)
        .map(|_| EngineProc::start(&config(&redis.url())))
        .collect();
    let ticks: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for (i, engine) in engines.iter().enumerate() {
        let w = client(engine, &format!("cron-{i}")).await;
        let t = ticks.clone();
        w.register_function("report::hourly", move |v: Value| {
            t.lock()
                .unwrap()
                .push((i, v["scheduled_time"].as_str().unwrap_or("").to_string()));
            async { Ok(json!({})) }
        });
        w.register_trigger(
            "cron",
            "report::hourly",
            json!({"expression": "* * * * * *"}),
        );
        barrier(&w).await;
        workers.push(w);
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let got = ticks.lock().unwrap().clone();
    let mut per_tick: HashMap<String, Vec<usize>> = HashMap::new();
    for (engine, tick) in &got {
        per_tick.entry(tick.clone()).or_default().push(*engine);
    }
    assert!(per_tick.len() >= 3, "{got:?}");
    for (tick, engines) in &per_tick {
        assert_eq!(engines.len(), 1, "tick {tick} ran on engines {engines:?}");
    }
}

#[actix::test]
async fn state_on_redis_is_shared_and_its_triggers_fire_on_every_engine() {
    let redis = RedisProc::start();
    let engines: Vec<EngineProc> = (0..2)
        .map(|_| EngineProc::start(&config(&redis.url())))
        .collect();
    let a = client(&engines[0], "a").await;
    let b = client(&engines[1], "b").await;
    let on_b = recorder(&b, "carts::changed");
    b.register_trigger("state", "carts::changed", json!({"scope": "carts"}));
    barrier(&b).await;
    // The trigger's listener may still be subscribing: write until an event arrives.
    let probe = json!({"scope": "carts", "key": "probe", "value": 0});
    until_through(&a, "state::set", probe, || !on_b.lock().unwrap().is_empty()).await;
    a.trigger("state::delete", json!({"scope": "carts", "key": "probe"}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    on_b.lock().unwrap().clear();

    let r = a
        .trigger(
            "state::set",
            json!({"scope": "carts", "key": "ada", "value": {"items": 1}}),
        )
        .await
        .unwrap();
    assert_eq!(r, json!({"old_value": null, "new_value": {"items": 1}}));
    let got = b
        .trigger("state::get", json!({"scope": "carts", "key": "ada"}))
        .await
        .unwrap();
    assert_eq!(got, json!({"items": 1}), "engine B reads what A wrote");
    assert!(eventually(Duration::from_secs(5), || on_b.lock().unwrap().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = on_b.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "once: {events:?}");
    assert_eq!(
        events[0],
        json!({"type": "state", "event_type": "state:created", "scope": "carts",
                                 "key": "ada", "old_value": null, "new_value": {"items": 1}})
    );

    // 2 engines × 50 concurrent increments of one counter: 100, none lost.
    let inc = json!({"scope": "carts", "key": "count", "ops": [{"type": "increment", "path": "n", "by": 1}]});
    let calls = (0..50).flat_map(|_| {
        [
            a.trigger("state::update", inc.clone()),
            b.trigger("state::update", inc.clone()),
        ]
    });
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }
    let count = b
        .trigger("state::get", json!({"scope": "carts", "key": "count"}))
        .await
        .unwrap();
    assert_eq!(count, json!({"n": 100}));
    let groups = a.trigger("state::list_groups", json!({})).await.unwrap();
    assert_eq!(groups, json!({"groups": ["carts"]}));
    let list = b
        .trigger("state::list", json!({"scope": "carts"}))
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

#[actix::test]
async fn a_stream_write_on_one_engine_reaches_triggers_and_consumers_of_another() {
    let redis = RedisProc::start();
    let engines: Vec<EngineProc> = (0..2)
        .map(|_| EngineProc::start(&config(&redis.url())))
        .collect();
    let a = client(&engines[0], "a").await;
    let b = client(&engines[1], "b").await;
    let on_b = recorder(&b, "todo::changed");
    b.register_trigger("stream", "todo::changed", json!({"stream_name": "todo"}));
    barrier(&b).await;
    let item = |id: &str, title: &str| json!({"stream_name": "todo", "group_id": "todos", "item_id": id, "data": {"id": id, "title": title}});
    // Wait until engine B's listener is subscribed: a probe write shows up in its trigger.
    until_through(&a, "stream::set", item("probe", "probe"), || {
        !on_b.lock().unwrap().is_empty()
    })
    .await;
    a.trigger(
        "stream::delete",
        json!({"stream_name": "todo", "group_id": "todos", "item_id": "probe"}),
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || on_b
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["event"]["type"] == "delete"))
        .await
    );
    on_b.lock().unwrap().clear();

    // A browser tab on engine B joins the group over B's consumer socket.
    let stream_url = engines[1].ready["stream"].as_str().unwrap().to_string();
    let mut tab = RawWs::connect(&stream_url).await;
    tab.text(
        r#"{"type":"join","data":{"subscriptionId":"s1","streamName":"todo","groupId":"todos"}}"#,
    )
    .await;
    let sync = tab.next_json(Duration::from_secs(5)).await;
    assert_eq!(sync["event"], json!({"type": "sync", "data": []}), "{sync}");

    a.trigger("stream::set", item("t1", "milk")).await.unwrap();
    let pushed = tab.next_json(Duration::from_secs(5)).await;
    assert_eq!(
        pushed["event"],
        json!({"type": "create", "data": {"id": "t1", "title": "milk"}}),
        "{pushed}"
    );
    assert_eq!(pushed["id"], "t1");
    assert!(eventually(Duration::from_secs(5), || on_b.lock().unwrap().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(on_b.lock().unwrap().len(), 1, "once");
    assert_eq!(on_b.lock().unwrap()[0]["event"]["type"], "create");

    // B reads and updates what A wrote; A sees it.
    let got = b
        .trigger(
            "stream::get",
            json!({"stream_name": "todo", "group_id": "todos", "item_id": "t1"}),
        )
        .await
        .unwrap();
    assert_eq!(got, json!({"id": "t1", "title": "milk"}));
    let ops = json!([{"type": "set", "path": "done", "value": true}]);
    let r = b
        .trigger(
            "stream::update",
            json!({"stream_name": "todo", "group_id": "todos", "item_id": "t1", "ops": ops}),
        )
        .await
        .unwrap();
    assert_eq!(
        r["new_value"],
        json!({"id": "t1", "title": "milk", "done": true})
    );
    let list = a
        .trigger(
            "stream::list",
            json!({"stream_name": "todo", "group_id": "todos"}),
        )
        .await
        .unwrap();
    assert_eq!(list, json!([{"id": "t1", "title": "milk", "done": true}]));
    let all = a.trigger("stream::list_all", json!({})).await.unwrap();
    assert_eq!(
        all,
        json!({"stream": [{"id": "todo", "groups": ["todos"]}], "count": 1})
    );
    // A join on engine A now syncs what both wrote.
    let stream_a = engines[0].ready["stream"].as_str().unwrap().to_string();
    let mut tab_a = RawWs::connect(&stream_a).await;
    tab_a.text(r#"{"type":"join","data":{"subscriptionId":"s1","streamName":"todo","groupId":"todos"}}"#).await;
    let sync = tab_a.next_json(Duration::from_secs(5)).await;
    assert_eq!(
        sync["event"]["data"],
        json!([{"id": "t1", "title": "milk", "done": true}]),
        "{sync}"
    );
}

#[test]
fn an_unreachable_redis_stops_the_boot_naming_the_module() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg.yaml");
    std::fs::write(&path, config(&format!("redis://127.0.0.1:{port}"))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iii"))
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("iii-pubsub") && err.contains(&format!("redis://127.0.0.1:{port}")),
        "{err}"
    );
}
