//! End-to-end tests of channels (`engine::channels::create` and `/ws/channels/{id}`): the
//! published Node SDK's createChannel with messages, bytes and refs inside payloads; raw
//! sockets for the key, attaching once, ordering, and a slow reader holding a writer back.

mod common;

use std::time::{Duration, Instant};

use common::http::{client, send};
use common::sdk::node_cmd;
use common::{EngineProc, RawWs, BASIC};
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const CONFIG: &str = BASIC;

#[test]
fn node_sdk_channels_carry_messages_and_bytes() {
    let engine = EngineProc::start(CONFIG);
    let out = common::sdk::run_checks(
        node_cmd("node-channels-check.mjs"),
        "node-channels-check",
        &engine.url(0),
    );
    let checks: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("check").is_some())
        .collect();
    assert_eq!(checks.len(), 3, "{out}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{out}");
}

#[actix::test]
async fn channel_sockets_need_the_key_and_attach_once() {
    let engine = EngineProc::start(CONFIG);
    let w = Client::connect(&engine.url(0), ClientOptions::named("w"))
        .await
        .unwrap();
    let refs = w
        .trigger("engine::channels::create", json!({"buffer_size": 2}))
        .await
        .unwrap();
    let id = refs["writer"]["channel_id"].as_str().unwrap().to_string();
    let key = refs["writer"]["access_key"].as_str().unwrap().to_string();
    assert_eq!(refs["reader"]["direction"], "read");
    let http = engine.url(0).replace("ws://", "http://");
    let r = send(
        client().get(format!("{http}/ws/channels/{id}?key=wrong&dir=read")),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (404, &b"Channel not found"[..])
    );
    let r = send(
        client().get(format!("{http}/ws/channels/{id}?dir=read")),
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    let url = |dir: &str| format!("{}/ws/channels/{id}?key={key}&dir={dir}", engine.url(0));
    let mut writer = RawWs::connect(&url("write")).await;
    let mut second = RawWs::connect(&url("write")).await;
    match second.next(Duration::from_secs(5)).await {
        Some(common::RawEvent::Close(_)) => {}
        other => panic!("a second writer is closed at once, got {other:?}"),
    }
    // Items written before the reader comes are kept (up to the buffer), in order.
    writer.text("one").await;
    writer
        .send(awc::ws::Message::Binary(bytes::Bytes::from_static(
            b"\x01\x02",
        )))
        .await;
    let mut reader = RawWs::connect(&url("read")).await;
    let t = Duration::from_secs(5);
    assert!(matches!(reader.next(t).await, Some(common::RawEvent::Text(s)) if s == "one"));
    assert!(
        matches!(reader.next(t).await, Some(common::RawEvent::Text(s)) if s.as_bytes() == b"\x01\x02")
    );
    // The writer closes: the reader gets a Close once everything was sent.
    writer.send(awc::ws::Message::Close(None)).await;
    assert!(matches!(
        reader.next(t).await,
        Some(common::RawEvent::Close(_))
    ));
    // Both ends were attached: the channel is gone from the table.
    let r = send(
        client().get(format!("{http}/ws/channels/{id}?key={key}&dir=read")),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
}

#[actix::test]
async fn a_slow_reader_holds_the_writer_back_and_loses_nothing() {
    use futures_util::{SinkExt, StreamExt};
    let engine = EngineProc::start(CONFIG);
    let w = Client::connect(&engine.url(0), ClientOptions::named("w"))
        .await
        .unwrap();
    let refs = w
        .trigger("engine::channels::create", json!({"buffer_size": 1}))
        .await
        .unwrap();
    let (id, key) = (
        refs["writer"]["channel_id"].as_str().unwrap().to_string(),
        refs["writer"]["access_key"].as_str().unwrap().to_string(),
    );
    let url = |dir: &str| format!("{}/ws/channels/{id}?key={key}&dir={dir}", engine.url(0));
    let data: Vec<u8> = (0..2u32 << 20).map(|i| (i * 31 + (i >> 8)) as u8).collect();
    let (mut sink, _) = RawWs::connect(&url("write")).await.split();
    let chunks: Vec<Vec<u8>> = data.chunks(16 << 10).map(<[u8]>::to_vec).collect();
    let writer = actix::spawn(async move {
        for c in chunks {
            sink.send(awc::ws::Message::Binary(c.into())).await.unwrap();
        }
        sink.send(awc::ws::Message::Close(None)).await.unwrap();
        // Keep the connection open until the engine has read the close.
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let (_, mut stream) = RawWs::connect(&url("read")).await.split();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
        match frame.unwrap() {
            awc::ws::Frame::Binary(b) => {
                got.extend_from_slice(&b);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            awc::ws::Frame::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "every byte, in order");
    writer.await.unwrap();
}
