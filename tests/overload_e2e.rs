//! Overload without loss: bursts far beyond any queue inside the engine, floods that read their
//! replies slowly or not at all, frames sent while the auth function runs, consumer join floods
//! — against the real engine over real sockets. Unfinished fragmented messages, `/otel` and one
//! huge message are in `limits_e2e.rs`. The contract under test: no call, binding or unbinding is ever refused or dropped
//! because an internal queue is momentarily full (the engine stops reading the sender instead),
//! and the engine's memory stays bounded while it happens.
// Each test runs on a thread of its own with its own runtime: holding the lock that makes them
// take turns across awaits blocks nothing but that test.
#![allow(clippy::await_holding_lock)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use awc::ws::Message as WsMessage;
use common::{read_json, recorder, EngineProc, RawWs};
use futures_util::SinkExt;
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

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

fn call(id: impl std::fmt::Display, function_id: &str, data: Value) -> String {
    json!({"type": "invokefunction", "invocation_id": id.to_string(), "function_id": function_id,
           "data": data})
    .to_string()
}

fn set(group: &str, item: usize) -> String {
    call(
        uuid::Uuid::new_v4(),
        "stream::set",
        json!({"stream_name": "burst", "group_id": group, "item_id": format!("i{item}"),
               "data": {"n": item}}),
    )
}

/// Writes every frame on one socket while reading replies; returns the `invocationresult`s
/// read (stops early if none arrives for `T`).
async fn blast(url: &str, frames: Vec<String>) -> Vec<Value> {
    let expect = frames.len();
    let (mut sink, mut stream) = RawWs::connect(url).await.split();
    let writer = actix::spawn(async move {
        for f in frames {
            if sink.feed(WsMessage::Text(f.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.flush().await;
        sink
    });
    let mut out = Vec::with_capacity(expect);
    while out.len() < expect {
        match read_json(&mut stream, T).await {
            Some(v) if v["type"] == "invocationresult" => out.push(v),
            Some(_) => {}
            None => break,
        }
    }
    let _ = writer.await;
    out
}

fn errors(results: &[Value]) -> Vec<&Value> {
    results
        .iter()
        .filter(|r| r.get("error").is_some())
        .collect()
}

async fn client(url: &str, name: &str) -> Client {
    Client::connect(url, ClientOptions::named(name))
        .await
        .expect("connect")
}

/// Registers `echo::fn` on a trusted client and waits until it is callable.
async fn echo_worker(engine: &EngineProc) -> Client {
    let worker = client(&engine.url(0), "echo").await;
    worker.register_function("echo::fn", |v: Value| async move { Ok(v) });
    while worker.trigger("echo::fn", json!({})).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker
}

fn assert_memory_bounded(engine: &EngineProc, idle_mib: u64, what: &str) {
    let (now, peak) = engine.rss_mib();
    eprintln!("{what}: engine RSS idle {idle_mib} MiB, now {now} MiB, peak {peak} MiB");
    assert!(
        peak < idle_mib + MEMORY_BOUND_MIB,
        "{what}: engine peaked at {peak} MiB (idle {idle_mib} MiB)"
    );
}

#[actix::test]
async fn twenty_thousand_sets_at_once_over_four_sockets_all_succeed() {
    let _serial = one_at_a_time();
    let engine = EngineProc::start(&stream_config(""));
    let url = engine.url(0);
    let blasts = (0..4).map(|s| {
        let frames = (0..5000).map(|i| set(&format!("g{s}"), i)).collect();
        let url = url.clone();
        async move { blast(&url, frames).await }
    });
    let results = futures_util::future::join_all(blasts).await;
    for (s, r) in results.iter().enumerate() {
        assert_eq!(r.len(), 5000, "socket {s}: {} answers", r.len());
        let failed = errors(r);
        assert!(
            failed.is_empty(),
            "socket {s}: {} failed, e.g. {}",
            failed.len(),
            failed[0]
        );
    }
    let c = client(&url, "check").await;
    for s in 0..4 {
        let list = c
            .trigger(
                "stream::list",
                json!({"stream_name": "burst", "group_id": format!("g{s}")}),
            )
            .await
            .unwrap();
        assert_eq!(list.as_array().map(Vec::len), Some(5000), "group g{s}");
    }
}

/// Trigger bindings and unbindings made while a write burst keeps the stream module busy are
/// all carried out: every binding fires, no unbound one does.
#[actix::test]
async fn bindings_made_during_a_write_burst_all_take_effect() {
    let _serial = one_at_a_time();
    let engine = EngineProc::start(&stream_config(""));
    let url = engine.url(0);
    let sub = client(&url, "sub").await;
    let seen = recorder(&sub, "sub::fire");
    common::barrier(&sub).await;
    let burst = {
        let url = url.clone();
        let frames = (0..20_000).map(|i| set("noise", i)).collect();
        actix::spawn(async move { blast(&url, frames).await })
    };
    let mut registrar = RawWs::connect(&url).await;
    for i in 0..100 {
        let bind = json!({"type": "registertrigger", "id": format!("t{i}"), "trigger_type": "stream",
                          "function_id": "sub::fire",
                          "config": {"stream_name": "watched", "group_id": format!("g{i}")}});
        registrar.text(bind.to_string()).await;
        let ghost = json!({"type": "registertrigger", "id": format!("ghost{i}"), "trigger_type": "stream",
                           "function_id": "sub::fire",
                           "config": {"stream_name": "watched", "group_id": format!("ghost{i}")}});
        registrar.text(ghost.to_string()).await;
        registrar
            .text(json!({"type": "unregistertrigger", "id": format!("ghost{i}")}).to_string())
            .await;
    }
    registrar.barrier().await;
    let noise = burst.await.unwrap();
    assert!(errors(&noise).is_empty() && noise.len() == 20_000);
    let writer = client(&url, "writer").await;
    for i in 0..100 {
        for group in [format!("g{i}"), format!("ghost{i}")] {
            writer
                .trigger(
                    "stream::set",
                    json!({"stream_name": "watched", "group_id": group, "item_id": "x", "data": i}),
                )
                .await
                .unwrap();
        }
    }
    assert!(
        common::eventually(Duration::from_secs(10), || seen.lock().unwrap().len()
            >= 100)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut groups: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["groupId"].as_str().unwrap_or("?").to_string())
        .collect();
    groups.sort();
    let mut want: Vec<String> = (0..100).map(|i| format!("g{i}")).collect();
    want.sort();
    assert_eq!(
        groups, want,
        "each binding fires once, no unbound one fires"
    );
}

/// A client floods calls and reads its replies slowly: the engine stops reading it instead of
/// queueing its replies without bound, and another caller is served meanwhile.
#[actix::test]
async fn a_flood_that_reads_slowly_is_slowed_down_not_buffered() {
    let _serial = one_at_a_time();
    let engine = EngineProc::start(&stream_config(""));
    let _echo = echo_worker(&engine).await;
    let idle = engine.rss_mib().0;
    let (mut sink, mut stream) = RawWs::connect(&engine.url(0)).await.split();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pad = "x".repeat(4096);
    let writer = {
        let stop = stop.clone();
        actix::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let f = call(uuid::Uuid::new_v4(), "echo::fn", json!({ "pad": pad }));
                if sink.feed(WsMessage::Text(f.into())).await.is_err() {
                    break;
                }
                sent += 1;
                if sent.is_multiple_of(64) && sink.flush().await.is_err() {
                    break;
                }
            }
            sent
        })
    };
    let reader = actix::spawn(async move {
        let mut read = 0u64;
        while read_json(&mut stream, Duration::from_secs(5))
            .await
            .is_some()
        {
            read += 1;
            if read.is_multiple_of(100) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        read
    });
    let good = client(&engine.url(0), "good").await;
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        good.trigger("echo::fn", json!({"ping": 1})).await.unwrap();
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_memory_bounded(&engine, idle, "slow-reading flood");
    // Served, not starved (the latency itself is measured by `iii-bench flood`: this test
    // process runs the flood, the worker and the caller on one thread).
    eprintln!("well-behaved caller: worst call {worst:?}");
    assert!(worst < Duration::from_secs(10), "worst call {worst:?}");
    reader.abort();
    writer.abort();
}

/// Two public clients flood calls they may not make: each denial is cheap, the log is not
/// flooded, and another user's calls go through.
#[actix::test]
async fn a_forbidden_flood_is_cheap_and_quiet() {
    let _serial = one_at_a_time();
    let engine = EngineProc::start(
        "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac:
        expose_functions: [match(\"ok::*\")]
",
    );
    let worker = client(&engine.url(0), "ok").await;
    worker.register_function("ok::fn", |_| async { Ok(json!("ok")) });
    common::barrier(&worker).await;
    let idle = engine.rss_mib().0;
    let flood_started = Instant::now();
    let mut flooders = Vec::new();
    for _ in 0..2 {
        let (mut sink, mut stream) = RawWs::connect(&engine.url(1)).await.split();
        flooders.push(actix::spawn(async move {
            for i in 0u64.. {
                let f = call(uuid::Uuid::new_v4(), "secret::fn", json!({}));
                if sink.feed(WsMessage::Text(f.into())).await.is_err() {
                    break;
                }
                if i.is_multiple_of(64) && sink.flush().await.is_err() {
                    break;
                }
            }
        }));
        flooders.push(actix::spawn(async move {
            while read_json(&mut stream, Duration::from_secs(5))
                .await
                .is_some()
            {}
        }));
    }
    let user = client(&engine.url(1), "user").await;
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        assert_eq!(user.trigger("ok::fn", json!({})).await.unwrap(), "ok");
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for f in &flooders {
        f.abort();
    }
    let denials = engine.log_count("denied by rule");
    // At most 20 a second while the flood lasts (the engine may still be working through
    // what the flooders sent before they were stopped).
    let secs = flood_started.elapsed().as_secs() as usize + 1;
    eprintln!("forbidden flood: {denials} denial lines logged in {secs} s, worst call {worst:?}");
    assert!(
        denials <= 20 * secs + 20,
        "{denials} denial lines in {secs} s"
    );
    assert!(
        engine.log().contains("similar lines suppressed"),
        "the suppressed lines are counted"
    );
    assert!(worst < Duration::from_secs(10), "worst call {worst:?}");
    assert_memory_bounded(&engine, idle, "forbidden flood");
}

/// Frames sent while the auth function runs are kept raw and bounded: the engine stops reading
/// the socket, and handles every frame once the connection is accepted.
#[actix::test]
async fn frames_sent_during_a_slow_auth_wait_and_are_all_handled() {
    let _serial = one_at_a_time();
    let engine = EngineProc::start(
        "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      auth_timeout_ms: 10000
      rbac:
        auth_function_id: auth::slow
        expose_functions: [match(\"echo::*\")]
",
    );
    let worker = echo_worker(&engine).await;
    worker.register_function("auth::slow", |_| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(json!({}))
    });
    common::barrier(&worker).await;
    let idle = engine.rss_mib().0;
    let pad = "y".repeat(64 << 10);
    let frames: Vec<String> = (0..1500)
        .map(|i| {
            call(
                uuid::Uuid::new_v4(),
                "echo::fn",
                json!({"i": i, "pad": pad}),
            )
        })
        .collect();
    let results = blast(&engine.url(1), frames).await;
    assert_eq!(results.len(), 1500, "every call answered");
    assert!(
        errors(&results).is_empty(),
        "{:?}",
        errors(&results).first()
    );
    assert_memory_bounded(&engine, idle, "96 MiB sent during auth");
}

/// A consumer that joins an 8 MiB group 300 times and never reads gets at most a few syncs
/// queued, not 300.
#[actix::test]
async fn a_join_flood_that_never_reads_stays_bounded() {
    let _serial = one_at_a_time();
    let engine = EngineProc::start(&stream_config(""));
    let c = client(&engine.url(0), "filler").await;
    let big = "z".repeat(100 << 10);
    for i in 0..80 {
        c.trigger(
            "stream::set",
            json!({"stream_name": "big", "group_id": "g", "item_id": format!("i{i}"), "data": big}),
        )
        .await
        .unwrap();
    }
    let idle = engine.rss_mib().0;
    let stream_url = engine.ready["stream"].as_str().unwrap().to_string();
    let mut consumer = RawWs::connect(&stream_url).await;
    for i in 0..300 {
        let join = json!({"type": "join", "data": {"subscriptionId": format!("s{i}"),
                          "streamName": "big", "groupId": "g"}});
        consumer.text(join.to_string()).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_memory_bounded(&engine, idle, "300 joins of an 8 MiB group, never read");
    // The engine is fine: a reading consumer still gets its sync.
    let mut reader = RawWs::connect(&stream_url).await;
    reader
        .text(
            json!({"type": "join", "data": {"subscriptionId": "r", "streamName": "big", "groupId": "g"}})
                .to_string(),
        )
        .await;
    let sync = reader.next_json(T).await;
    assert_eq!(sync["event"]["type"], "sync");
    assert_eq!(sync["event"]["data"].as_array().map(Vec::len), Some(80));
    drop(consumer);
}
