//! End-to-end tests of bad input on the worker socket: malformed JSON, unknown types, broken
//! calls, binary garbage, invalid UTF-8, oversized frames, deep nesting, spoofed results. Each
//! gets a precise answer or a logged close, and the engine keeps serving everyone else.

mod common;

use std::time::Duration;

use awc::ws::{CloseCode, Message};
use common::{EngineProc, RawEvent, RawWs, BASIC};
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

/// A second, well-behaved worker that must keep working whatever the raw socket did.
async fn healthy_pair(engine: &EngineProc) -> (Client, Client) {
    let callee = Client::connect(&engine.url(0), ClientOptions::named("healthy"))
        .await
        .unwrap();
    callee.register_function("ok::ping", |_| async { Ok(json!({"pong": true})) });
    let caller = Client::connect(&engine.url(0), ClientOptions::named("caller"))
        .await
        .unwrap();
    (callee, caller)
}

async fn still_serving(caller: &Client) {
    for _ in 0..200 {
        match caller.trigger("ok::ping", json!({})).await {
            Ok(v) => return assert_eq!(v, json!({"pong": true})),
            Err(e) if e.code == "function_not_found" => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("engine stopped serving: {e}"),
        }
    }
    panic!("ok::ping never became callable");
}

async fn expect_close(ws: &mut RawWs, code: CloseCode) {
    loop {
        match ws.next(T).await {
            Some(RawEvent::Json(v)) if v["type"] == "workerregistered" => continue,
            Some(RawEvent::Close(Some(r))) => return assert_eq!(r.code, code, "{r:?}"),
            other => panic!("expected a close with {code:?}, got {other:?}"),
        }
    }
}

#[actix::test]
async fn malformed_frames_get_error_frames_and_the_connection_stays() {
    let engine = EngineProc::start(BASIC);
    let (_callee, caller) = healthy_pair(&engine).await;
    let mut ws = RawWs::connect(&engine.url(0)).await;

    ws.text("{not json").await;
    let v = ws.next_json(T).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["code"], "invalid_message");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{v}"
    );

    ws.text(r#"{"type":"frobnicate","x":1}"#).await;
    let v = ws.next_json(T).await;
    assert_eq!(v["error"]["code"], "unknown_message_type");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("frobnicate"));

    ws.text(r#"{"type":"registertrigger","id":"x"}"#).await;
    let v = ws.next_json(T).await;
    assert_eq!(v["error"]["code"], "invalid_message");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("trigger_type"),
        "{v}"
    );

    // A call whose id is not a UUID: answered under that id instead of silence.
    ws.text(r#"{"type":"invokefunction","invocation_id":"not-a-uuid","function_id":"ok::ping","data":{}}"#)
        .await;
    let v = ws.next_json(T).await;
    assert_eq!(v["type"], "invocationresult");
    assert_eq!(v["invocation_id"], "not-a-uuid");
    assert_eq!(v["function_id"], "ok::ping");
    assert_eq!(v["error"]["code"], "invalid_message");

    // Deep nesting fails decoding cleanly.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    ws.text(deep).await;
    assert_eq!(ws.next_json(T).await["error"]["code"], "invalid_message");

    // Binary garbage that is neither telemetry nor UTF-8 JSON.
    ws.send(Message::Binary(vec![0xff, 0xfe, 0x00, 0x81].into()))
        .await;
    assert_eq!(ws.next_json(T).await["error"]["code"], "invalid_message");

    // Telemetry frames and empty frames are drained silently; the socket still answers.
    ws.send(Message::Binary(
        b"OTLP{\"resourceSpans\":[]}".to_vec().into(),
    ))
    .await;
    ws.text("   ").await;
    ws.text(r#"{"type":"unregistertriggertype","id":"x","description":"d"}"#)
        .await;
    ws.text(r#"{"type":"ping"}"#).await;
    assert_eq!(ws.next_json(T).await, json!({"type": "pong"}));

    // The socket still works as a worker.
    ws.text(r#"{"type":"invokefunction","invocation_id":"5b0d8a0e-5d2c-4a39-9f73-0f2b5a8c1d11","function_id":"ok::nope","data":{}}"#).await;
    let v = ws.next_json(T).await;
    assert_eq!(v["error"]["code"], "function_not_found");
    still_serving(&caller).await;
}

#[actix::test]
async fn too_many_invalid_frames_close_the_connection() {
    let engine = EngineProc::start(BASIC);
    let mut ws = RawWs::connect(&engine.url(0)).await;
    for _ in 0..20 {
        ws.text("garbage").await;
    }
    loop {
        match ws.next(T).await {
            Some(RawEvent::Json(_)) => continue,
            Some(RawEvent::Close(Some(r))) => {
                assert_eq!(r.code, CloseCode::Policy);
                break;
            }
            other => panic!("expected a policy close, got {other:?}"),
        }
    }
}

#[actix::test]
async fn oversized_frame_is_closed_and_others_keep_working() {
    let engine = EngineProc::start(BASIC);
    let (_callee, caller) = healthy_pair(&engine).await;
    let mut ws = RawWs::connect(&engine.url(0)).await;
    let big = "x".repeat(20 << 20);
    ws.text(format!(r#"{{"type":"ping","pad":"{big}"}}"#)).await;
    loop {
        match ws.next(T).await {
            Some(RawEvent::Json(v)) if v["type"] == "workerregistered" => continue,
            Some(RawEvent::Close(Some(r))) => {
                assert_eq!(r.code, CloseCode::Size, "{r:?}");
                break;
            }
            Some(RawEvent::Ended) => break,
            other => panic!("expected a close for the 20 MiB frame, got {other:?}"),
        }
    }
    assert!(
        engine.log().contains("frame over 16777216 bytes"),
        "{}",
        engine.log()
    );
    still_serving(&caller).await;
}

#[actix::test]
async fn fragmented_message_is_reassembled_and_capped() {
    let engine = EngineProc::start(BASIC);
    let mut ws = RawWs::connect(&engine.url(0)).await;
    // A JSON ping split over three continuation frames.
    use actix_http::ws::Item;
    ws.send(Message::Continuation(Item::FirstText(
        br#"{"type""#.to_vec().into(),
    )))
    .await;
    ws.send(Message::Continuation(Item::Continue(
        br#":"pi"#.to_vec().into(),
    )))
    .await;
    ws.send(Message::Continuation(Item::Last(
        br#"ng"}"#.to_vec().into(),
    )))
    .await;
    assert_eq!(ws.next_json(T).await, json!({"type": "pong"}));

    // 5 × 15 MiB continuation frames pass the 64 MiB message cap: closed with 1009.
    let chunk: bytes::Bytes = vec![b' '; 15 << 20].into();
    ws.send(Message::Continuation(Item::FirstText(chunk.clone())))
        .await;
    for _ in 0..4 {
        ws.send(Message::Continuation(Item::Continue(chunk.clone())))
            .await;
    }
    expect_close(&mut ws, CloseCode::Size).await;
}

#[actix::test]
async fn invalid_utf8_text_closes_with_1007() {
    let engine = EngineProc::start(BASIC);
    let (_callee, caller) = healthy_pair(&engine).await;
    let mut ws = RawWs::connect(&engine.url(0)).await;
    // awc checks nothing on send: write a text frame with invalid UTF-8 by hand.
    ws.send(Message::Continuation(actix_http::ws::Item::FirstText(
        vec![0xc3, 0x28].into(),
    )))
    .await;
    ws.send(Message::Continuation(actix_http::ws::Item::Last(
        Vec::new().into(),
    )))
    .await;
    expect_close(&mut ws, CloseCode::Invalid).await;
    still_serving(&caller).await;
}

#[actix::test]
async fn results_for_calls_not_sent_to_you_are_ignored() {
    let engine = EngineProc::start(BASIC);
    let (_callee, caller) = healthy_pair(&engine).await;
    let mut spoofer = RawWs::connect(&engine.url(0)).await;
    // The spoofer cannot know the engine's id of a call in flight; a random one changes nothing.
    spoofer
        .text(r#"{"type":"invocationresult","invocation_id":"5b0d8a0e-5d2c-4a39-9f73-0f2b5a8c1d11","function_id":"ok::ping","result":{"pong":false}}"#)
        .await;
    still_serving(&caller).await;
    // Engine-only frames from a worker are ignored too.
    spoofer
        .text(r#"{"type":"workerregistered","worker_id":"5b0d8a0e-5d2c-4a39-9f73-0f2b5a8c1d11","reattach_token":"5b0d8a0e-5d2c-4a39-9f73-0f2b5a8c1d11"}"#)
        .await;
    spoofer.text(r#"{"type":"ping"}"#).await;
    assert_eq!(spoofer.next_json(T).await, json!({"type": "pong"}));
}

#[actix::test]
async fn reattach_needs_the_right_token() {
    let engine = EngineProc::start(BASIC);
    let victim = Client::connect(&engine.url(0), ClientOptions::named("victim"))
        .await
        .unwrap();
    victim.register_function("victim::fn", |_| async { Ok(json!(1)) });
    let victim_id = victim.worker_id().unwrap();
    let caller = Client::connect(&engine.url(0), ClientOptions::named("caller"))
        .await
        .unwrap();
    let mut attacker = RawWs::connect(&engine.url(0)).await;
    for token in [
        Value::Null,
        json!("5b0d8a0e-5d2c-4a39-9f73-0f2b5a8c1d11"),
        json!("garbage"),
    ] {
        let frame =
            json!({"type": "reattach", "previous_worker_id": victim_id, "reattach_token": token});
        attacker.text(frame.to_string()).await;
    }
    for _ in 0..3 {
        let v = attacker.next_json(T).await;
        assert_eq!(v["error"]["code"], "reattach_rejected", "{v}");
    }
    for _ in 0..200 {
        match caller.trigger("victim::fn", json!({})).await {
            Ok(v) => return assert_eq!(v, json!(1)),
            Err(e) if e.code == "function_not_found" => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("victim::fn vanished");
}

#[actix::test]
async fn malformed_function_ids_are_refused() {
    let engine = EngineProc::start(BASIC);
    let mut ws = RawWs::connect(&engine.url(0)).await;
    for id in [
        "",
        "a::::b",
        "::lead",
        "trail::",
        "star*",
        "has space",
        &"x".repeat(300),
    ] {
        ws.text(json!({"type": "registerfunction", "id": id}).to_string())
            .await;
        let v = ws.next_json(T).await;
        assert_eq!(v["type"], "error", "{id}");
        assert_eq!(v["error"]["code"], "invalid_id", "{id}: {v}");
    }
    ws.text(r#"{"type":"registerfunction","id":"fine::id"}"#)
        .await;
    ws.barrier().await;
    let c = Client::connect(&engine.url(0), ClientOptions::named("lister"))
        .await
        .unwrap();
    let list = c
        .trigger("engine::functions::list", json!({}))
        .await
        .unwrap();
    let ids: Vec<&str> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function_id"].as_str())
        .collect();
    assert_eq!(ids, ["fine::id"]);
}
