//! `iii-stream` with the `bridge` adapter: engine L keeps no stream data of its own, every
//! `stream::*` call goes to engine R (a plain engine with a file-backed stream store) and keeps
//! R's result shapes; a change made on R — by R's workers or through L — reaches L's `stream`
//! triggers and L's consumer sockets exactly once; bad input is refused by L; while R is down
//! a call through L fails with the operation's error code naming R, and once R is back on the
//! same port the bridge reconnects, binds its triggers on R again and calls work again.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::streams::stream_config;
use common::{barrier, eventually, recorder, EngineProc, RawWs};
use iii_client::{Client, ClientOptions, TriggerRequest};
use serde_json::{json, Value};

type Seen = Arc<Mutex<Vec<Value>>>;

async fn client(url: &str, name: &str) -> Client {
    Client::connect(url, ClientOptions::named(name))
        .await
        .expect("connect")
}

/// Engine L: a trusted listener and the stream module bridged to `remote`.
fn bridged(remote: &str) -> EngineProc {
    EngineProc::start(&format!(
        "workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: 0}}\n  \
         - name: iii-stream\n    config:\n      host: 127.0.0.1\n      port: 0\n      \
         adapter: {{name: bridge, config: {{bridge_url: '{remote}'}}}}\n"
    ))
}

fn item(group: &str, id: &str, data: Value) -> Value {
    json!({"stream_name": "todo", "group_id": group, "item_id": id, "data": data})
}

fn key(id: &str) -> Value {
    json!({"stream_name": "todo", "group_id": "todos", "item_id": id})
}

/// The bridge binds its remote trigger in the background: writes a probe item on R (through
/// `writer`) until L's recorder `seen` hears of it.
async fn until_bridged(writer: &Client, seen: &Seen) {
    for n in 0..200 {
        writer
            .trigger("stream::set", item("probe", "p", json!(n)))
            .await
            .unwrap();
        let heard = || seen.lock().unwrap().iter().any(|e| e["groupId"] == "probe");
        if eventually(Duration::from_millis(50), heard).await {
            return;
        }
    }
    panic!("no change made on R reached L's trigger");
}

/// `(event type, item id)` of every recorded change of group `todos` (`""` for no id).
fn todos(seen: &Seen) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    seen.lock()
        .unwrap()
        .iter()
        .filter(|e| e["groupId"] == "todos")
        .map(|e| (text(&e["event"]["type"]), text(&e["id"])))
        .collect()
}

/// Waits until `seen` holds `want` (and a little longer, to see nothing more arrives).
async fn exactly(seen: &Seen, want: &[(&str, &str)], who: &str) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, i)| (k.to_string(), i.to_string()))
        .collect();
    eventually(Duration::from_secs(5), || todos(seen).len() >= want.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(todos(seen), want, "{who}: each change once, in order");
}

#[actix::test]
async fn streams_through_the_bridge_live_on_the_remote_and_report_each_change_once() {
    let remote = EngineProc::start(&stream_config(""));
    let local = bridged(&remote.url(0));
    let r = client(&remote.url(0), "on-remote").await;
    let l = client(&local.url(0), "on-local").await;
    let on_r = recorder(&r, "todo::remote_saw");
    let on_l = recorder(&l, "todo::local_saw");
    let on_l_todos = recorder(&l, "todo::local_todos_saw");
    r.register_trigger("stream", "todo::remote_saw", json!({"stream_name": "todo"}));
    let bound = [
        l.register_trigger("stream", "todo::local_saw", json!({"stream_name": "todo"})),
        l.register_trigger(
            "stream",
            "todo::local_todos_saw",
            json!({"stream_name": "todo", "group_id": "todos"}),
        ),
    ];
    barrier(&r).await;
    barrier(&l).await;
    until_bridged(&r, &on_l).await;

    // What R already holds is what a consumer joining on L gets as its sync.
    r.trigger("stream::set", item("todos", "t1", json!({"title": "milk"})))
        .await
        .unwrap();
    let mut tab = RawWs::connect(local.ready["stream"].as_str().unwrap()).await;
    tab.text(
        r#"{"type":"join","data":{"subscriptionId":"s1","streamName":"todo","groupId":"todos"}}"#,
    )
    .await;
    let sync = tab.next_json(Duration::from_secs(5)).await;
    assert_eq!(
        sync["event"],
        json!({"type": "sync", "data": [{"title": "milk"}]}),
        "{sync}"
    );

    // Writes through L land on R, with R's result shapes.
    let set = l
        .trigger("stream::set", item("todos", "t2", json!({"title": "eggs"})))
        .await
        .unwrap();
    assert_eq!(
        set,
        json!({"old_value": null, "new_value": {"title": "eggs"}})
    );
    let on_remote = r.trigger("stream::get", key("t2")).await.unwrap();
    assert_eq!(on_remote, json!({"title": "eggs"}), "the item lives on R");
    let ops = json!([{"type": "set", "path": "done", "value": true}]);
    let updated = l
        .trigger(
            "stream::update",
            json!({"stream_name": "todo", "group_id": "todos", "item_id": "t2", "ops": ops}),
        )
        .await
        .unwrap();
    assert_eq!(
        updated,
        json!({"old_value": {"title": "eggs"}, "new_value": {"title": "eggs", "done": true}})
    );
    let req = |function_id: &str, payload: Value| TriggerRequest {
        function_id: function_id.into(),
        payload,
        timeout: None,
        metadata: None,
        action: None,
    };
    let missing = l
        .trigger_with(req("stream::get", key("nope")))
        .await
        .unwrap();
    assert_eq!(missing, None, "a missing item has no result");
    let list = l
        .trigger(
            "stream::list",
            json!({"stream_name": "todo", "group_id": "todos"}),
        )
        .await
        .unwrap();
    assert_eq!(
        list,
        json!([{"title": "milk"}, {"title": "eggs", "done": true}])
    );
    let mut groups: Vec<String> = serde_json::from_value(
        l.trigger("stream::list_groups", json!({"stream_name": "todo"}))
            .await
            .unwrap(),
    )
    .unwrap();
    groups.sort();
    assert_eq!(groups, ["probe", "todos"]);
    let all = l.trigger("stream::list_all", json!({})).await.unwrap();
    assert_eq!(all["count"], 1, "{all}");
    let deleted = l.trigger("stream::delete", key("t1")).await.unwrap();
    assert_eq!(deleted, json!({"old_value": {"title": "milk"}}));
    assert_eq!(
        r.trigger("stream::get", key("t1")).await.unwrap(),
        Value::Null
    );
    let sent = json!({"stream_name": "todo", "group_id": "todos", "type": "ping", "data": 1});
    l.trigger("stream::send", sent).await.unwrap();

    // Bad input is refused by L, with the local module's code.
    let e = l
        .trigger(
            "stream::set",
            json!({"stream_name": "todo", "group_id": "todos"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "deserialization_error", "{e:?}");
    let e = l
        .trigger(
            "stream::update",
            json!({"stream_name": "todo", "group_id": "todos", "item_id": "t2", "ops": 5}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "deserialization_error", "{e:?}");

    // Every change, whoever made it, reached L's trigger once and R's trigger once.
    let want = [
        ("create", "t1"),
        ("create", "t2"),
        ("update", "t2"),
        ("delete", "t1"),
        ("event", ""),
    ];
    exactly(&on_l, &want, "L's trigger").await;
    exactly(&on_l_todos, &want, "L's trigger of group todos").await;
    exactly(&on_r, &want, "R's trigger").await;
    let last = on_l.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last["event"],
        json!({"type": "event", "event": {"type": "ping", "data": 1}})
    );

    // L's consumer socket got the same changes, once each.
    let mut pushed = Vec::new();
    while pushed.len() < 4 {
        let frame = tab.next_json(Duration::from_secs(5)).await;
        pushed.push((frame["event"]["type"].clone(), frame["id"].clone()));
    }
    assert_eq!(
        pushed,
        [
            (json!("create"), json!("t2")),
            (json!("update"), json!("t2")),
            (json!("delete"), json!("t1")),
            (json!("event"), Value::Null),
        ]
    );
    assert!(
        tab.next(Duration::from_millis(300)).await.is_none(),
        "nothing more for the consumer"
    );

    // The bridge holds one trigger on R per stream L cares about, for as long as it does.
    let mut notes = RawWs::connect(local.ready["stream"].as_str().unwrap()).await;
    notes
        .text(
            r#"{"type":"join","data":{"subscriptionId":"n1","streamName":"notes","groupId":"g"}}"#,
        )
        .await;
    let sync = notes.next_json(Duration::from_secs(5)).await;
    assert_eq!(sync["event"], json!({"type": "sync", "data": []}), "{sync}");
    assert_eq!(
        bridge_triggers(&r).await,
        [
            json!({"stream_name": "notes"}),
            json!({"stream_name": "todo"})
        ]
    );
    for b in &bound {
        b.unregister();
    }
    tab.text(
        r#"{"type":"leave","data":{"subscriptionId":"s1","streamName":"todo","groupId":"todos"}}"#,
    )
    .await;
    drop(notes);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !bridge_triggers(&r).await.is_empty() {
        assert!(Instant::now() < deadline, "{:?}", bridge_triggers(&r).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The configs of the `stream` triggers the bridge holds on R, sorted.
async fn bridge_triggers(r: &Client) -> Vec<Value> {
    let list = r
        .trigger("engine::registered-triggers::list", json!({}))
        .await
        .unwrap();
    let mut configs: Vec<Value> = list["registered_triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["function_id"]
                .as_str()
                .is_some_and(|f| f.starts_with("stream::bridge::on_event::"))
        })
        .map(|t| t["config"].clone())
        .collect();
    configs.sort_by_key(|c| c.to_string());
    configs
}

#[actix::test]
async fn a_stream_bridge_names_a_remote_that_is_down_and_recovers_when_it_is_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let remote_cfg = stream_config("").replacen("port: 0", &format!("port: {port}"), 1);
    let mut remote = EngineProc::start(&remote_cfg);
    let remote_url = format!("ws://127.0.0.1:{port}");
    let local = bridged(&remote_url);
    let l = client(&local.url(0), "on-local").await;
    let on_l = recorder(&l, "todo::local_saw");
    l.register_trigger("stream", "todo::local_saw", json!({"stream_name": "todo"}));
    barrier(&l).await;
    let r = client(&remote_url, "on-remote").await;
    until_bridged(&r, &on_l).await;
    l.trigger("stream::set", item("todos", "kept", json!(1)))
        .await
        .unwrap();

    remote.kill();
    let started = Instant::now();
    let e = l
        .trigger("stream::set", item("todos", "lost", json!(2)))
        .await
        .unwrap_err();
    assert_eq!(e.code, "STREAM_SET_ERROR", "{e:?}");
    assert!(e.message.contains(&remote_url), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the failure is prompt"
    );
    let e = l.trigger("stream::get", key("kept")).await.unwrap_err();
    assert_eq!(e.code, "STREAM_GET_ERROR", "{e:?}");

    remote.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        match l.trigger("stream::get", key("kept")).await {
            Ok(v) => break v,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code, "STREAM_GET_ERROR", "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the bridge did not come back: {e:?}"),
        }
    };
    assert_eq!(got, json!(1), "R kept what was written through L");

    // The bridge bound its trigger on R again: a write there reaches L's trigger once.
    let r2 = client(&remote_url, "on-remote-again").await;
    on_l.lock().unwrap().clear();
    until_bridged(&r2, &on_l).await;
    r2.trigger("stream::set", item("todos", "after", json!(3)))
        .await
        .unwrap();
    exactly(
        &on_l,
        &[("create", "after")],
        "L's trigger after R restarted",
    )
    .await;
}
