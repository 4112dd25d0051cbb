//! An enqueue flood that does not read its replies, on both queue adapters (the engine's own
//! store, and a real `redis-server`): the engine's memory stays bounded (its replies wait in
//! bounded buffers; past them it stops reading the flooder), another user's enqueues are
//! answered meanwhile, every enqueue is answered once the flooder reads, and every job it was
//! told was accepted is delivered.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use awc::ws::Message as WsMessage;
use common::redis::RedisProc;
use common::{barrier, enqueue, eventually, read_json, EngineProc, RawWs};
use futures_util::SinkExt;
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

/// What the engine may grow by while the flood runs.
const MEMORY_BOUND_MIB: u64 = 256;

fn config(adapter: &str) -> String {
    format!(
        "workers:
  - name: iii-worker-manager
    config: {{host: 127.0.0.1, port: 0}}
  - name: iii-queue
    config:
      adapter: {adapter}
      queue_configs:
        flood: {{concurrency: 16, max_depth: 20000}}
"
    )
}

#[actix::test]
async fn an_enqueue_flood_that_never_reads_on_the_builtin_store() {
    let engine = EngineProc::start(&config(
        "{name: builtin, config: {store_method: file_based, file_path: ./data/queue}}",
    ));
    flood(&engine).await;
}

#[actix::test]
async fn an_enqueue_flood_that_never_reads_on_redis() {
    let redis = RedisProc::start();
    let engine = EngineProc::start(&config(&format!(
        "{{name: redis, config: {{redis_url: '{}'}}}}",
        redis.url()
    )));
    flood(&engine).await;
}

async fn flood(engine: &EngineProc) {
    let worker = Client::connect(&engine.url(0), ClientOptions::named("worker"))
        .await
        .unwrap();
    let done: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let d = done.clone();
    worker.register_function("work::job", move |v: Value| {
        let d = d.clone();
        async move {
            if let Some(n) = v["n"].as_u64() {
                *d.lock().unwrap().entry(n).or_default() += 1;
            }
            Ok(json!({}))
        }
    });
    barrier(&worker).await;
    let idle = engine.rss_mib().0;

    // The flooder writes enqueues (1 KiB each) for 4 s and reads nothing meanwhile.
    let (mut sink, mut stream) = RawWs::connect(&engine.url(0)).await.split();
    let pad = "x".repeat(1024);
    let ids: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let writer = {
        let ids = ids.clone();
        actix::spawn(async move {
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(4) {
                let id = uuid::Uuid::new_v4().to_string();
                ids.lock().unwrap().insert(id.clone(), n);
                let frame = json!({"type": "invokefunction", "invocation_id": id,
                    "function_id": "work::job", "data": {"n": n, "pad": pad},
                    "action": {"type": "enqueue", "queue": "flood"}});
                let send = sink.feed(WsMessage::Text(frame.to_string().into()));
                // A write the engine does not take within a second: it stopped reading us.
                match tokio::time::timeout(Duration::from_secs(1), send).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
                n += 1;
                if n.is_multiple_of(64) {
                    match tokio::time::timeout(Duration::from_secs(1), sink.flush()).await {
                        Ok(Ok(())) => {}
                        _ => break,
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.flush()).await;
            (n, sink)
        })
    };

    // Another user enqueues meanwhile and is answered.
    let good = Client::connect(&engine.url(0), ClientOptions::named("good"))
        .await
        .unwrap();
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut good_ns = Vec::new();
    let mut k = 1_000_000_000u64;
    while started.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        let r = enqueue(&good, "flood", "work::job", json!({"n": k}))
            .await
            .unwrap();
        assert!(r["messageReceiptId"].is_string(), "{r}");
        good_ns.push(k);
        k += 1;
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (sent, _sink) = writer.await.unwrap();
    let (now, peak) = engine.rss_mib();
    eprintln!("flood: {sent} enqueues written; engine RSS idle {idle} MiB, now {now}, peak {peak}; good caller's worst enqueue {worst:?}");
    assert!(
        peak < idle + MEMORY_BOUND_MIB,
        "engine peaked at {peak} MiB (idle {idle} MiB)"
    );
    assert!(worst < Duration::from_secs(10), "worst enqueue {worst:?}");

    // Now the flooder reads: every enqueue is answered, and each one acknowledged is delivered.
    let mut acked = Vec::new();
    let mut refused = 0usize;
    while let Some(v) = read_json(&mut stream, Duration::from_secs(5)).await {
        let Some(id) = v["invocation_id"].as_str() else {
            continue;
        };
        let n = ids
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .expect("an answer to a frame we sent");
        if v["result"]["messageReceiptId"].is_string() {
            acked.push(n);
        } else {
            // Only a full queue may refuse, and it says so.
            assert_eq!(v["error"]["code"], "enqueue_error", "{v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains("is full"),
                "{v}"
            );
            refused += 1;
        }
    }
    eprintln!(
        "flood: {} acknowledged, {refused} refused (full)",
        acked.len()
    );
    assert!(!acked.is_empty());
    let all_done = || {
        let d = done.lock().unwrap();
        acked
            .iter()
            .chain(good_ns.iter())
            .all(|n| d.contains_key(n))
    };
    assert!(
        eventually(Duration::from_secs(60), all_done).await,
        "{} of {} acknowledged jobs delivered",
        acked
            .iter()
            .filter(|n| done.lock().unwrap().contains_key(n))
            .count(),
        acked.len()
    );
}
