//! End-to-end tests of the engine's own defences on the worker socket: the server heartbeat
//! closes silent peers, and a worker that stops reading its socket is disconnected (its calls
//! fail with `invocation_stopped`) without slowing anyone else down.

mod common;

use std::time::{Duration, Instant};

use common::{EngineProc, RawWs};
use iii_client::{Client, ClientOptions, TriggerRequest};
use serde_json::json;

fn config(extra: &str) -> String {
    format!("workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: 0\n{extra}")
}

#[actix::test]
async fn silent_peer_is_closed_by_the_heartbeat() {
    let engine = EngineProc::start(&config(
        "      heartbeat_interval_ms: 100\n      idle_timeout_ms: 400\n",
    ));
    // A raw socket that never answers pings (it does not read at all for a while).
    let mut silent = RawWs::connect(&engine.url(0)).await;
    // A well-behaved client answers pings and stays.
    let mut opts = ClientOptions::named("alive");
    opts.heartbeat = Duration::from_secs(30);
    let alive = Client::connect(&engine.url(0), opts).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        engine.log().contains("nothing received for 400 ms"),
        "{}",
        engine.log()
    );
    let ended = loop {
        match silent.next(Duration::from_secs(3)).await {
            Some(common::RawEvent::Json(_)) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(ended, Some(common::RawEvent::Close(Some(ref r))) if r.code == awc::ws::CloseCode::Away),
        "{ended:?}"
    );
    assert!(alive.worker_id().is_some());
    assert!(alive
        .trigger("engine::workers::list", json!({}))
        .await
        .is_ok());
}

#[actix::test]
async fn worker_that_never_reads_is_disconnected_and_others_keep_going() {
    let engine = EngineProc::start(&config(
        "      max_outbound_bytes: 1048576\n      write_stall_timeout_ms: 500\n",
    ));
    // The stuck worker registers a function, then never reads its socket again.
    let mut stuck = RawWs::connect(&engine.url(0)).await;
    stuck
        .text(r#"{"type":"registerfunction","id":"stuck::fn"}"#)
        .await;
    let healthy = Client::connect(&engine.url(0), ClientOptions::named("healthy"))
        .await
        .unwrap();
    healthy.register_function("ok::fn", |_| async { Ok(json!("ok")) });
    let caller = Client::connect(&engine.url(0), ClientOptions::named("caller"))
        .await
        .unwrap();
    while caller.trigger("ok::fn", json!({})).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Flood the stuck worker: 400 calls of 256 KiB each fill its socket and then its queue.
    let pad = "x".repeat(256 << 10);
    let started = Instant::now();
    let calls = (0..400).map(|_| {
        let c = caller.clone();
        let req = TriggerRequest {
            function_id: "stuck::fn".into(),
            payload: json!({"pad": pad}),
            timeout: Some(Duration::from_secs(20)),
            metadata: None,
            action: None,
        };
        async move { c.trigger_with(req).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut codes = std::collections::BTreeMap::new();
    for r in &results {
        let code = match r {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code.clone(),
        };
        *codes.entry(code).or_insert(0) += 1;
    }
    eprintln!("outcomes: {codes:?} in {:?}", started.elapsed());
    let stopped = codes.get("invocation_stopped").copied().unwrap_or(0);
    let gone = codes.get("function_not_found").copied().unwrap_or(0);
    // Calls in flight when it was dropped stop; later ones find the function gone.
    assert!(stopped > 0 && stopped + gone == results.len(), "{codes:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        engine.log().contains("not reading its socket"),
        "{}",
        engine.log()
    );
    // Everyone else is fine.
    assert_eq!(
        caller.trigger("ok::fn", json!({})).await.unwrap(),
        json!("ok")
    );
    assert_eq!(
        caller
            .trigger("stuck::fn", json!({}))
            .await
            .unwrap_err()
            .code,
        "function_not_found"
    );
    drop(stuck);
}

#[actix::test]
async fn stalled_handshakes_are_closed_at_the_deadline() {
    use std::io::{Read, Write};
    let engine = EngineProc::start(&config("      handshake_timeout_ms: 300\n"));
    let addr = engine.url(0).replace("ws://", "");
    let started = Instant::now();
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    let mut partial = std::net::TcpStream::connect(&addr).unwrap();
    partial.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    for s in [&mut silent, &mut partial] {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 512];
        // The server closes (EOF) or answers 408 and closes; either way well before 3 s.
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => panic!("socket still open after {:?}: {e}", started.elapsed()),
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Real clients still get in.
    let c = Client::connect(&engine.url(0), ClientOptions::named("after"))
        .await
        .unwrap();
    assert!(c.worker_id().is_some());
}

#[actix::test]
async fn reattach_retires_the_previous_connection_before_the_replay() {
    let engine = EngineProc::start(&config(""));
    let mut old = RawWs::connect(&engine.url(0)).await;
    let Some(common::RawEvent::Json(welcome)) = old.next(Duration::from_secs(5)).await else {
        panic!("no welcome")
    };
    assert_eq!(welcome["type"], "workerregistered");
    old.text(r#"{"type":"registerfunction","id":"w::fn"}"#)
        .await;
    // A new connection of the same worker reattaches with the right token, then replays.
    let mut new = RawWs::connect(&engine.url(0)).await;
    let reattach = serde_json::json!({"type": "reattach", "previous_worker_id": welcome["worker_id"],
                                      "reattach_token": welcome["reattach_token"]});
    new.text(reattach.to_string()).await;
    new.text(r#"{"type":"registerfunction","id":"w::fn"}"#)
        .await;
    // The old socket is closed by the engine...
    loop {
        match old.next(Duration::from_secs(5)).await {
            Some(common::RawEvent::Json(_)) => continue,
            Some(common::RawEvent::Close(_)) | Some(common::RawEvent::Ended) => break,
            other => panic!("old connection not retired: {other:?}"),
        }
    }
    // ...and calls reach the new one (the old one's cleanup did not remove the replayed id).
    let caller = Client::connect(&engine.url(0), ClientOptions::named("caller"))
        .await
        .unwrap();
    // The new connection's registration may still be in flight: wait until it is listed.
    loop {
        let list = caller
            .trigger("engine::functions::list", json!({}))
            .await
            .unwrap();
        if list["functions"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["function_id"] == "w::fn"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let call = caller.clone();
    let pending = actix::spawn(async move { call.trigger("w::fn", json!({"n": 1})).await });
    let got = loop {
        let v = new.next_json(Duration::from_secs(5)).await;
        if v["type"] == "invokefunction" {
            break v;
        }
    };
    let answer = json!({"type": "invocationresult", "invocation_id": got["invocation_id"],
                        "function_id": "w::fn", "result": {"from": "new"}});
    new.text(answer.to_string()).await;
    assert_eq!(pending.await.unwrap().unwrap(), json!({"from": "new"}));
    assert!(engine
        .log()
        .contains("reattached; retiring its previous connection"));
}

/// A worker reconnects without reattaching while its old connection is still half-open and
/// replays its registrations: once the old connection is gone, the new one has the binding
/// (the replay wins) and receives every event.
#[actix::test]
async fn a_replayed_binding_wins_once_the_old_connection_is_gone() {
    let engine = EngineProc::start(&format!(
        "{}  - name: iii-stream\n    config: {{host: 127.0.0.1, port: 0}}\n",
        config("")
    ));
    let register = [
        r#"{"type":"registerfunction","id":"w::on-change"}"#,
        r#"{"type":"registertrigger","id":"t-replay","trigger_type":"stream","function_id":"w::on-change","config":{"stream_name":"r"}}"#,
    ];
    let mut old = RawWs::connect(&engine.url(0)).await;
    for f in register {
        old.text(f).await;
    }
    old.barrier().await;
    let mut new = RawWs::connect(&engine.url(0)).await;
    for f in register {
        new.text(f).await;
    }
    new.barrier().await;
    drop(old);
    let writer = Client::connect(&engine.url(0), ClientOptions::named("writer"))
        .await
        .unwrap();
    // Give the old connection's cleanup time to run (it starts when its socket closes).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        writer
            .trigger(
                "stream::set",
                json!({"stream_name": "r", "group_id": "g", "item_id": format!("i{i}"), "data": i}),
            )
            .await
            .unwrap();
    }
    let mut events = 0;
    while let Some(common::RawEvent::Json(v)) = new.next(Duration::from_secs(2)).await {
        if v["type"] == "invokefunction" && v["function_id"] == "w::on-change" {
            events += 1;
            let answer = json!({"type": "invocationresult", "invocation_id": v["invocation_id"],
                                "function_id": "w::on-change", "result": {}});
            new.text(answer.to_string()).await;
        }
        if events == 3 {
            break;
        }
    }
    assert_eq!(events, 3, "{}", engine.log());
}
