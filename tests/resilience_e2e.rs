//! End-to-end tests of the engine's own defences on the worker socket: the server heartbeat
//! closes silent peers, and a worker that stops reading its socket is disconnected (its calls
//! fail with `invocation_stopped`) without slowing anyone else down.

mod common;

use std::time::{Duration, Instant};

use common::{EngineProc, RawWs};
use iii::client::{Client, ClientOptions, TriggerRequest};
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
        "      max_queued_frames: 64\n      write_stall_timeout_ms: 500\n",
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
