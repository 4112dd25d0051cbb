//! The engine's limits on what a connection may hold: unfinished fragmented messages capped
//! per listener (1013 past the cap), `/otel` of a public listener authenticated like any
//! connection, and one 60 MiB message going through at a bounded cost. Floods and bursts are
//! //! in `overload_e2e.rs`.
// Each test runs on a thread of its own with its own runtime: holding the lock that makes them
// take turns across awaits blocks nothing but that test.
#![allow(clippy::await_holding_lock)]

mod common;

use std::time::Duration;

use actix_http::ws::Item;
use awc::ws::Message as WsMessage;
use common::{EngineProc, RawEvent, RawWs};
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

/// These floods each want the machine to themselves (they measure memory, and a flood is
/// CPU-bound): the tests of this file run one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
/// What the engine may grow by while a flood runs.
const MEMORY_BOUND_MIB: u64 = 256;

fn stream_config(extra_listener: &str) -> String {
    format!(
        "workers:
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
{extra_listener}  - name: iii-stream
    config:
      host: 127.0.0.1
      port: 0
      adapter: {{name: kv, config: {{store_method: file_based, file_path: ./data}}}}
"
    )
}

async fn client(url: &str, name: &str) -> Client {
    Client::connect(url, ClientOptions::named(name))
        .await
        .expect("connect")
}

fn assert_memory_bounded(engine: &EngineProc, idle_mib: u64, what: &str) {
    let (now, peak) = engine.rss_mib();
    eprintln!("{what}: engine RSS idle {idle_mib} MiB, now {now} MiB, peak {peak} MiB");
    assert!(
        peak < idle_mib + MEMORY_BOUND_MIB,
        "{what}: engine peaked at {peak} MiB (idle {idle_mib} MiB)"
    );
}

const OTEL_CONFIG: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      max_inflight_bytes: 33554432
      rbac:
        auth_function_id: auth::fn
";

/// `/otel` on an RBAC listener runs the auth function like any connection.
#[actix::test]
async fn otel_on_a_public_listener_is_authenticated() {
    let _serial = one_at_a_time();
    let engine = EngineProc::start(OTEL_CONFIG);
    let worker = client(&engine.url(0), "auth").await;
    worker.register_function("auth::fn", |input: Value| async move {
        if input["query_params"]["key"][0] == "good" {
            Ok(json!({}))
        } else {
            Err(iii::protocol::ErrorBody::new("denied", "bad key"))
        }
    });
    common::barrier(&worker).await;
    let mut bad = RawWs::connect(&format!("{}/otel?key=bad", engine.url(1))).await;
    let first = bad.next(Duration::from_secs(5)).await;
    assert!(
        matches!(&first, Some(RawEvent::Json(v)) if v["error"]["code"] == "AUTH_ERROR"),
        "{first:?}"
    );
    let mut good = RawWs::connect(&format!("{}/otel?key=good", engine.url(1))).await;
    good.send(WsMessage::Binary(bytes::Bytes::from_static(b"LOGS{}")))
        .await;
    assert!(
        good.next(Duration::from_millis(500)).await.is_none(),
        "kept open, nothing said"
    );
}

/// Unfinished fragmented messages are capped per listener: past `max_inflight_bytes` the
/// socket that would exceed it is closed with 1013, and memory stays bounded.
#[actix::test]
async fn unfinished_messages_are_capped_per_listener() {
    let _serial = one_at_a_time();
    let engine = EngineProc::start(OTEL_CONFIG);
    let worker = client(&engine.url(0), "auth").await;
    worker.register_function("auth::fn", |_| async { Ok(json!({})) });
    common::barrier(&worker).await;
    let idle = engine.rss_mib().0;
    let chunk = bytes::Bytes::from(vec![b'a'; 1 << 20]);
    let mut closed_busy = 0;
    let mut sockets = Vec::new();
    for path in ["/otel", "/"].iter().cycle().take(10) {
        let mut ws = RawWs::connect(&format!("{}{path}", engine.url(1))).await;
        if *path == "/" {
            ws.next(Duration::from_secs(5)).await; // accepted: workerregistered
        }
        ws.send(WsMessage::Continuation(Item::FirstText(chunk.clone())))
            .await;
        let mut sent = 1;
        while sent < 40 {
            let next = ws.send_timeout(
                WsMessage::Continuation(Item::Continue(chunk.clone())),
                Duration::from_secs(2),
            );
            if !next.await {
                break;
            }
            sent += 1;
        }
        if let Some(RawEvent::Close(Some(r))) = ws.next(Duration::from_secs(2)).await {
            if r.code == awc::ws::CloseCode::Again {
                closed_busy += 1;
            }
        }
        sockets.push(ws);
    }
    assert_memory_bounded(&engine, idle, "10 sockets with 40 MiB unfinished messages");
    assert!(closed_busy >= 5, "{closed_busy} sockets closed with 1013");
}

/// One 60 MiB message goes through, at a bounded cost (kept as text, not parsed: about 3
/// bytes of memory per byte at the peak, where a parsed copy cost over 15).
#[actix::test]
async fn a_sixty_mib_message_goes_through() {
    let _serial = one_at_a_time();
    // Workers send a large answer as one frame, so this listener takes 64 MiB frames.
    let engine = EngineProc::start(&stream_config("      max_frame_bytes: 67108864\n"));
    let worker = client(&engine.url(0), "counter").await;
    worker.register_function("count::fn", |v: Value| async move {
        Ok(json!({"rows": v["rows"].as_array().map(Vec::len)}))
    });
    common::barrier(&worker).await;
    let idle = engine.rss_mib().0;
    // 60 MiB of small records, the shape that costs most once parsed.
    let record = r#"{"id":1234567,"ok":true,"v":"abcdefgh"},"#;
    let rows = (60 << 20) / record.len();
    let mut text = String::with_capacity(rows * record.len() + 200);
    text.push_str(r#"{"type":"invokefunction","invocation_id":"6f2ba3c4-0000-4000-8000-000000000001","function_id":"count::fn","timeout_ms":120000,"data":{"rows":["#);
    for _ in 0..rows {
        text.push_str(record);
    }
    text.pop();
    text.push_str("]}}");
    let mut ws = RawWs::connect(&engine.url(0)).await;
    ws.next(Duration::from_secs(5)).await; // workerregistered
    let bytes = bytes::Bytes::from(text.into_bytes());
    let parts: Vec<bytes::Bytes> = (0..bytes.len())
        .step_by(15 << 20)
        .map(|at| bytes.slice(at..(at + (15 << 20)).min(bytes.len())))
        .collect();
    let last = parts.len() - 1;
    for (i, p) in parts.into_iter().enumerate() {
        let item = match i {
            0 => Item::FirstText(p),
            i if i == last => Item::Last(p),
            _ => Item::Continue(p),
        };
        ws.send(WsMessage::Continuation(item)).await;
    }
    let answer = ws.next_json(Duration::from_secs(60)).await;
    assert_eq!(answer["type"], "invocationresult");
    assert_eq!(answer["result"]["rows"], json!(rows));
    let (_, peak) = engine.rss_mib();
    eprintln!(
        "60 MiB call: engine RSS idle {idle} MiB, peak {peak} MiB ({:.1} bytes of memory per payload byte)",
        (peak - idle) as f64 / 60.0
    );
    assert!(peak < idle + MEMORY_BOUND_MIB, "peak {peak} MiB");
}
