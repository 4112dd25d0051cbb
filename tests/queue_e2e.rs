//! End-to-end tests of the durable queues (`iii-queue`, `MODULES.md` §2) as a busy user and an
//! attacker meet them: the `enqueue` action and its receipt, retries with backoff and dead
//! letters, redrive, the concurrency limit, FIFO order per message group through retries,
//! idempotency keys, `durable:subscriber` fan-out, bad input, public sessions, and a burst far
//! beyond a queue's depth. Every case runs on both adapters — the engine's own store and a
//! real `redis-server` — with the same expectations. The published SDKs' view is
//! `queue_sdk_e2e.rs`; SIGKILLs are in `queue_crash_e2e.rs`; several engines sharing a Redis
//! queue are in `redis_queue_e2e.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::RedisProc;
use common::{barrier, enqueue, eventually, EngineProc, RawWs};
use iii_client::{Client, ClientOptions};
use iii_protocol::protocol::ErrorBody;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

/// A trusted listener, a public one exposing `public::*`, and iii-queue with short backoffs.
const QUEUES: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac: {expose_functions: ['match(\"public::*\")']}
  - name: iii-queue
    config:
      adapter: {name: builtin, config: {store_method: file_based, file_path: ./data/queue}}
      queue_configs:
        jobs: {concurrency: 3, max_retries: 2, backoff_ms: 40}
        orders: {type: fifo, message_group_field: customer, concurrency: 4, max_retries: 5, backoff_ms: 40}
        once: {idempotency_field: order_id}
        small: {max_depth: 50, concurrency: 1}
";

/// Where the jobs are kept: every case runs on both.
#[derive(Clone, Copy)]
enum Adapter {
    /// The engine's own store.
    Builtin,
    /// A `redis-server` of the test's own.
    Redis,
}

impl Adapter {
    /// What `engine::queue::list_topics` calls a topic's broker.
    fn broker(self) -> &'static str {
        match self {
            Adapter::Builtin => "builtin",
            Adapter::Redis => "redis",
        }
    }
}

/// An engine (and its Redis, with the `redis` adapter), stopped when dropped.
struct Engine {
    engine: EngineProc,
    _redis: Option<RedisProc>,
}

impl std::ops::Deref for Engine {
    type Target = EngineProc;
    fn deref(&self) -> &EngineProc {
        &self.engine
    }
}

/// Starts the engine of [`QUEUES`] on `adapter`.
fn start(adapter: Adapter) -> Engine {
    match adapter {
        Adapter::Builtin => Engine {
            engine: EngineProc::start(QUEUES),
            _redis: None,
        },
        Adapter::Redis => {
            let redis = RedisProc::start();
            let adapter = format!("{{name: redis, config: {{redis_url: '{}'}}}}", redis.url());
            let config = QUEUES.replace(
                "{name: builtin, config: {store_method: file_based, file_path: ./data/queue}}",
                &adapter,
            );
            assert!(config.contains("name: redis"));
            Engine {
                engine: EngineProc::start(&config),
                _redis: Some(redis),
            }
        }
    }
}

/// Runs every case on both adapters (`builtin::<case>`, `redis::<case>`).
macro_rules! on_both_adapters {
    ($($case:ident),* $(,)?) => {
        mod builtin {
            $(#[actix::test]
            async fn $case() {
                super::$case(super::Adapter::Builtin).await
            })*
        }
        mod redis {
            $(#[actix::test]
            async fn $case() {
                super::$case(super::Adapter::Redis).await
            })*
        }
    };
}

on_both_adapters!(
    enqueue_answers_a_receipt_and_the_job_is_delivered,
    failures_retry_with_backoff_then_dead_letter_and_redrive_works,
    the_concurrency_limit_is_observed,
    fifo_keeps_each_groups_order_through_retries_and_runs_groups_in_parallel,
    a_repeated_idempotency_key_is_acknowledged_once_and_enqueued_once,
    durable_subscribers_fan_out_per_function_and_replicas_compete,
    bad_input_gets_a_clear_error,
    public_sessions_reach_only_what_is_exposed,
    a_burst_beyond_the_depth_is_refused_clearly_and_nothing_acknowledged_is_lost
);

async fn client(engine: &EngineProc, listener: usize, name: &str) -> Client {
    Client::connect(&engine.url(listener), ClientOptions::named(name))
        .await
        .expect("connect")
}

/// Every call a function received, in order, and how many ran at once at most.
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<Value>>,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Seen {
    fn calls(&self) -> Vec<Value> {
        self.calls.lock().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

/// Registers a function that records each call, takes `work` to run, and fails while
/// `fail(data, attempt)` says so (attempt = how many calls with the same `data.n` came before).
fn worker_fn(
    c: &Client,
    id: &str,
    work: Duration,
    fail: impl Fn(&Value, usize) -> bool + Send + Sync + 'static,
) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let fail = Arc::new(fail);
    c.register_function(id, move |v: Value| {
        let s = s.clone();
        let fail = fail.clone();
        async move {
            let now = s.running.fetch_add(1, Ordering::SeqCst) + 1;
            s.peak.fetch_max(now, Ordering::SeqCst);
            let attempt = {
                let mut calls = s.calls.lock().unwrap();
                let n = calls.iter().filter(|c| c["n"] == v["n"]).count();
                calls.push(v.clone());
                n
            };
            tokio::time::sleep(work).await;
            s.running.fetch_sub(1, Ordering::SeqCst);
            if fail(&v, attempt) {
                Err(ErrorBody::new("boom", format!("failed {}", v["n"])))
            } else {
                Ok(json!({"ok": true}))
            }
        }
    });
    seen
}

async fn enqueue_answers_a_receipt_and_the_job_is_delivered(adapter: Adapter) {
    let engine = start(adapter);
    let w = client(&engine, 0, "worker").await;
    let seen = worker_fn(&w, "work::ok", Duration::ZERO, |_, _| false);
    barrier(&w).await;
    let caller = client(&engine, 0, "caller").await;
    let r = enqueue(
        &caller,
        "jobs",
        "work::ok",
        json!({"n": 1, "text": "hello"}),
    )
    .await
    .unwrap();
    let receipt = r["messageReceiptId"].as_str().expect("receipt");
    assert!(uuid::Uuid::parse_str(receipt).is_ok(), "{r}");
    assert!(eventually(T, || seen.count() == 1).await);
    assert_eq!(seen.calls()[0], json!({"n": 1, "text": "hello"}));

    // The same through a raw frame, as the SDKs send it; a void-less enqueue without an
    // invocation id gets no answer but is still queued.
    let mut ws = RawWs::connect(&engine.url(0)).await;
    let frame = json!({"type": "invokefunction", "invocation_id": uuid::Uuid::new_v4(), "function_id": "work::ok",
                       "data": {"n": 2}, "action": {"type": "enqueue", "queue": "default"}});
    ws.text(frame.to_string()).await;
    let v = ws.next_json(T).await;
    assert!(v["result"]["messageReceiptId"].is_string(), "{v}");
    let frame = json!({"type": "invokefunction", "function_id": "work::ok", "data": {"n": 3},
                       "action": {"type": "enqueue", "queue": "default"}});
    ws.text(frame.to_string()).await;
    assert!(
        eventually(T, || seen.count() == 3).await,
        "{:?}",
        seen.calls()
    );
    let list = caller.trigger("iii::queue::list", json!({})).await.unwrap();
    let jobs = list
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "jobs")
        .cloned()
        .unwrap();
    assert_eq!(jobs["jobs"], 0, "{list}");
    assert_eq!(jobs["concurrency"], 3, "{list}");
}

async fn failures_retry_with_backoff_then_dead_letter_and_redrive_works(adapter: Adapter) {
    let engine = start(adapter);
    let w = client(&engine, 0, "worker").await;
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healed.clone();
    let seen = worker_fn(&w, "work::flaky", Duration::ZERO, move |_, _| {
        !h.load(Ordering::SeqCst)
    });
    barrier(&w).await;
    let started = Instant::now();
    enqueue(&w, "jobs", "work::flaky", json!({"n": 7}))
        .await
        .unwrap();
    // max_retries 2: the first attempt and two retries, then the dead letter.
    let dlq = loop {
        let d = w
            .trigger("engine::queue::dlq_messages", json!({"topic": "jobs"}))
            .await
            .unwrap();
        if d.as_array().is_some_and(|a| !a.is_empty()) {
            break d;
        }
        assert!(started.elapsed() < T, "no dead letter: {:?}", seen.calls());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Backoff 40 ms then ~80 ms (each scaled by 0.5–1.0): at least 60 ms in all.
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen.count(), 3, "{:?}", seen.calls());
    let letter = &dlq[0];
    assert_eq!(letter["payload"], json!({"n": 7}), "{dlq}");
    assert_eq!(letter["retries"], 3, "{dlq}");
    assert_eq!(
        letter["error"],
        json!({"code": "boom", "message": "failed 7"}),
        "{dlq}"
    );
    assert!(
        letter["failed_at"].as_u64().unwrap() > 1_700_000_000,
        "seconds: {dlq}"
    );
    let stats = w
        .trigger("engine::queue::topic_stats", json!({"topic": "jobs"}))
        .await
        .unwrap();
    assert_eq!(stats["dlq_depth"], 1, "{stats}");
    assert_eq!(stats["depth"], 0, "{stats}");
    let topics = w
        .trigger("engine::queue::dlq_topics", json!({}))
        .await
        .unwrap();
    assert!(
        topics.as_array().unwrap().contains(
            &json!({"topic": "jobs", "broker_type": "function_queue", "message_count": 1})
        ),
        "{topics}"
    );

    // Redrive the one letter once the function works: delivered, DLQ empty.
    healed.store(true, Ordering::SeqCst);
    let id = letter["id"].as_str().unwrap();
    let r = w
        .trigger(
            "iii::queue::redrive_message",
            json!({"queue": "jobs", "message_id": id}),
        )
        .await
        .unwrap();
    assert_eq!(r, json!({"queue": "jobs", "message_id": id, "redriven": 1}));
    assert!(eventually(T, || seen.count() == 4).await);
    let stats = w
        .trigger("engine::queue::topic_stats", json!({"topic": "jobs"}))
        .await
        .unwrap();
    assert_eq!(stats["dlq_depth"], 0, "{stats}");
    let r = w
        .trigger(
            "iii::queue::discard_message",
            json!({"queue": "jobs", "message_id": id}),
        )
        .await
        .unwrap();
    assert_eq!(r["redriven"], 0, "already gone: {r}");

    // Two more letters: one discarded, one redriven in bulk.
    healed.store(false, Ordering::SeqCst);
    enqueue(&w, "jobs", "work::flaky", json!({"n": 8}))
        .await
        .unwrap();
    enqueue(&w, "jobs", "work::flaky", json!({"n": 9}))
        .await
        .unwrap();
    let mut dlq = Value::Null;
    assert!(eventually(T, || seen.count() == 10).await);
    for _ in 0..100 {
        dlq = w
            .trigger("engine::queue::dlq_messages", json!({"topic": "jobs"}))
            .await
            .unwrap();
        if dlq.as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = dlq[0]["id"].as_str().unwrap().to_string();
    let r = w
        .trigger(
            "iii::queue::discard_message",
            json!({"queue": "jobs", "message_id": first}),
        )
        .await
        .unwrap();
    assert_eq!(r["redriven"], 1, "{r}");
    healed.store(true, Ordering::SeqCst);
    let r = w
        .trigger("iii::queue::redrive", json!({"queue": "jobs"}))
        .await
        .unwrap();
    assert_eq!(r, json!({"queue": "jobs", "redriven": 1}));
    assert!(eventually(T, || seen.count() == 11).await);
    assert_eq!(seen.calls().last().unwrap()["n"], dlq[1]["payload"]["n"]);
}

async fn the_concurrency_limit_is_observed(adapter: Adapter) {
    let engine = start(adapter);
    let w = client(&engine, 0, "worker").await;
    let seen = worker_fn(&w, "work::slow", Duration::from_millis(100), |_, _| false);
    barrier(&w).await;
    for n in 0..15 {
        enqueue(&w, "jobs", "work::slow", json!({"n": n}))
            .await
            .unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || seen.count() == 15).await);
    assert!(eventually(T, || seen.running.load(Ordering::SeqCst) == 0).await);
    assert_eq!(seen.peak.load(Ordering::SeqCst), 3, "concurrency 3");
    let order: Vec<Value> = seen.calls().iter().map(|c| c["n"].clone()).collect();
    assert_eq!(
        order,
        (0..15).map(|n| json!(n)).collect::<Vec<_>>(),
        "arrival order"
    );
}

async fn fifo_keeps_each_groups_order_through_retries_and_runs_groups_in_parallel(
    adapter: Adapter,
) {
    let engine = start(adapter);
    let w = client(&engine, 0, "worker").await;
    // Job a-1 fails twice before it succeeds; nothing of group a may overtake it.
    let seen = worker_fn(
        &w,
        "work::order",
        Duration::from_millis(20),
        |v, attempt| v["n"] == json!("a-1") && attempt < 2,
    );
    barrier(&w).await;
    for i in 0..5 {
        for g in ["a", "b", "c"] {
            let data = json!({"customer": g, "n": format!("{g}-{i}")});
            enqueue(&w, "orders", "work::order", data).await.unwrap();
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || seen.count() == 17).await,
        "{:?}",
        seen.calls()
    );
    let calls = seen.calls();
    for g in ["a", "b", "c"] {
        let got: Vec<String> = calls
            .iter()
            .filter(|c| c["customer"] == g)
            .map(|c| c["n"].as_str().unwrap().to_string())
            .collect();
        let mut want: Vec<String> = (0..5).map(|i| format!("{g}-{i}")).collect();
        if g == "a" {
            want.insert(1, "a-1".into());
            want.insert(1, "a-1".into());
        }
        assert_eq!(got, want, "group {g}");
    }
    // Groups b and c did not wait for a's retries.
    let first_b4 = calls.iter().position(|c| c["n"] == "b-4").unwrap();
    let last_a1 = calls.iter().rposition(|c| c["n"] == "a-1").unwrap();
    assert!(
        first_b4 < last_a1 || seen.peak.load(Ordering::SeqCst) > 1,
        "{calls:?}"
    );
    assert!(
        seen.peak.load(Ordering::SeqCst) <= 3,
        "one per group at most"
    );
}

async fn a_repeated_idempotency_key_is_acknowledged_once_and_enqueued_once(adapter: Adapter) {
    let engine = start(adapter);
    let w = client(&engine, 0, "worker").await;
    let seen = worker_fn(&w, "work::ok", Duration::ZERO, |_, _| false);
    barrier(&w).await;
    let a = enqueue(&w, "once", "work::ok", json!({"order_id": "o-1", "n": 1}))
        .await
        .unwrap();
    let b = enqueue(&w, "once", "work::ok", json!({"order_id": "o-1", "n": 2}))
        .await
        .unwrap();
    let c = enqueue(&w, "once", "work::ok", json!({"order_id": "o-2", "n": 3}))
        .await
        .unwrap();
    assert_eq!(a, b, "the first receipt again");
    assert_ne!(a, c);
    assert!(eventually(T, || seen.count() == 2).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ns: Vec<Value> = seen.calls().iter().map(|c| c["n"].clone()).collect();
    assert_eq!(ns, [json!(1), json!(3)]);
}

async fn durable_subscribers_fan_out_per_function_and_replicas_compete(adapter: Adapter) {
    let engine = start(adapter);
    let publisher = client(&engine, 0, "publisher").await;
    // Published before anyone subscribed: kept for the first subscriber.
    publisher
        .trigger(
            "iii::durable::publish",
            json!({"topic": "orders.created", "data": {"n": -1}}),
        )
        .await
        .unwrap();
    let a = client(&engine, 0, "a").await;
    let b1 = client(&engine, 0, "b1").await;
    let b2 = client(&engine, 0, "b2").await;
    let seen_a = worker_fn(&a, "sub::audit", Duration::ZERO, |_, _| false);
    let seen_b1 = worker_fn(&b1, "sub::ship", Duration::from_millis(5), |_, _| false);
    let seen_b2 = worker_fn(&b2, "sub::ship", Duration::from_millis(5), |_, _| false);
    a.register_trigger(
        "durable:subscriber",
        "sub::audit",
        json!({"topic": "orders.created"}),
    );
    // The audit subscription is bound first: it is the one the unclaimed message goes to.
    barrier(&a).await;
    for c in [&b1, &b2] {
        c.register_trigger(
            "durable:subscriber",
            "sub::ship",
            json!({"topic": "orders.created", "queue_config": {"concurrency": 2}}),
        );
    }
    for c in [&a, &b1, &b2] {
        barrier(c).await;
    }
    for n in 0..40 {
        publisher
            .trigger(
                "iii::durable::publish",
                json!({"topic": "orders.created", "data": {"n": n}}),
            )
            .await
            .unwrap();
    }
    assert!(eventually(T, || seen_a.count() >= 40).await);
    assert!(eventually(T, || seen_b1.count() + seen_b2.count() >= 40).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ship: Vec<i64> = seen_b1
        .calls()
        .iter()
        .chain(seen_b2.calls().iter())
        .map(|c| c["n"].as_i64().unwrap())
        .collect();
    ship.sort();
    assert_eq!(
        ship,
        (0..40).collect::<Vec<_>>(),
        "each message shipped once"
    );
    let audit: Vec<i64> = seen_a
        .calls()
        .iter()
        .map(|c| c["n"].as_i64().unwrap())
        .collect();
    assert_eq!(audit.len(), 41, "{audit:?}");
    assert_eq!(
        audit[0], -1,
        "the unclaimed message went to the first subscriber"
    );
    let topics = publisher
        .trigger("engine::queue::list_topics", json!({}))
        .await
        .unwrap();
    assert!(
        topics.as_array().unwrap().contains(
            &json!({"name": "orders.created", "broker_type": adapter.broker(), "subscriber_count": 14})
        ),
        "10 + 2 + 2: {topics}"
    );
}

async fn bad_input_gets_a_clear_error(adapter: Adapter) {
    let engine = start(adapter);
    let c = client(&engine, 0, "caller").await;
    let cases = [
        ("nope", json!({"n": 1}), "Queue 'nope' not found"),
        (
            "orders",
            json!({"n": 1}),
            "FIFO queue 'orders' requires field 'customer' in data, but it was not found",
        ),
        ("orders", json!({"customer": null}), "must not be null"),
        ("", json!({}), "Queue name is required"),
    ];
    for (queue, data, message) in cases {
        let e = enqueue(&c, queue, "work::x", data.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code, "enqueue_error", "{queue} {data}: {e:?}");
        assert!(e.message.contains(message), "{queue} {data}: {e:?}");
    }
    let big = "x".repeat((1 << 20) + 10);
    let e = enqueue(&c, "jobs", "work::x", json!({"big": big}))
        .await
        .unwrap_err();
    assert!(e.message.contains("max_job_bytes"), "{e:?}");

    let direct = [
        (
            "engine::queue::enqueue",
            json!({"queue": "jobs", "data": 1}),
            "deserialization_error",
        ),
        (
            "engine::queue::enqueue",
            json!({"queue": 5, "function_id": "f"}),
            "deserialization_error",
        ),
        (
            "iii::durable::publish",
            json!({"topic": "", "data": 1}),
            "topic_not_set",
        ),
        ("iii::queue::redrive", json!({}), "queue_not_set"),
        (
            "iii::queue::redrive_message",
            json!({"queue": "jobs"}),
            "message_id_not_set",
        ),
        ("engine::queue::topic_stats", json!({}), "topic_required"),
        ("engine::queue::dlq_messages", json!({}), "topic_required"),
    ];
    for (f, data, code) in direct {
        let e = c.trigger(f, data.clone()).await.unwrap_err();
        assert_eq!(e.code, code, "{f} {data}: {e:?}");
    }

    let mut ws = RawWs::connect(&engine.url(0)).await;
    for (config, mention) in [
        (json!({}), "topic"),
        (json!({"topic": ""}), "topic"),
        (
            json!({"topic": "t", "queue_config": {"type": "lifo"}}),
            "lifo",
        ),
        (
            json!({"topic": "t", "queue_config": {"concurrency": 0}}),
            "concurrency",
        ),
        (
            json!({"topic": "t", "queue_config": {"maxRetries": "many"}}),
            "maxRetries",
        ),
    ] {
        let id = uuid::Uuid::new_v4().to_string();
        let frame = json!({"type": "registertrigger", "id": id, "trigger_type": "durable:subscriber",
                           "function_id": "raw::handler", "config": config});
        ws.text(frame.to_string()).await;
        loop {
            let v = ws.next_json(T).await;
            if v["type"] == "triggerregistrationresult" && v["id"] == id {
                assert_eq!(v["error"]["code"], "trigger_registration_failed", "{v}");
                assert!(
                    v["error"]["message"].as_str().unwrap().contains(mention),
                    "{v}"
                );
                break;
            }
        }
    }
}

#[test]
fn a_bad_queue_config_stops_startup_with_upstreams_message() {
    let cases = [
        (
            "q: {type: lifo}",
            "Queue 'q' has invalid type 'lifo'. Must be 'standard' or 'fifo'",
        ),
        (
            "q: {type: fifo}",
            "Queue 'q' is of type 'fifo' but 'message_group_field' is not set",
        ),
        (
            "q: {concurrency: 0}",
            "Queue 'q' has 'concurrency' 0; it must be at least 1",
        ),
        ("q: {max_priority: 0}", "must be between 1 and 255"),
        ("q: {max_retrys: 1}", "unknown field `max_retrys`"),
    ];
    for (queue, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        let text = format!(
            "workers:\n  - name: iii-queue\n    config:\n      queue_configs:\n        {queue}\n"
        );
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_iii"))
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{queue}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(message) && err.contains("iii-queue"),
            "{queue}: {err}"
        );
    }
}

async fn public_sessions_reach_only_what_is_exposed(adapter: Adapter) {
    let engine = start(adapter);
    let w = client(&engine, 0, "worker").await;
    let open = worker_fn(&w, "public::signup", Duration::ZERO, |_, _| false);
    let _closed = worker_fn(&w, "admin::wipe", Duration::ZERO, |_, _| false);
    barrier(&w).await;
    let public = client(&engine, 1, "visitor").await;
    let e = enqueue(&public, "jobs", "admin::wipe", json!({"n": 1}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "FORBIDDEN", "{e:?}");
    for f in [
        "engine::queue::enqueue",
        "engine::queue::list_topics",
        "iii::queue::redrive",
        "iii::queue::purge",
        "iii::durable::publish",
    ] {
        let e = public
            .trigger(f, json!({"queue": "jobs", "topic": "t", "data": 1}))
            .await
            .unwrap_err();
        assert_eq!(e.code, "FORBIDDEN", "{f}: {e:?}");
    }
    let r = enqueue(&public, "jobs", "public::signup", json!({"n": 2}))
        .await
        .unwrap();
    assert!(r["messageReceiptId"].is_string());
    assert!(eventually(T, || open.count() == 1).await);
}

async fn a_burst_beyond_the_depth_is_refused_clearly_and_nothing_acknowledged_is_lost(
    adapter: Adapter,
) {
    let engine = start(adapter);
    let w = client(&engine, 0, "worker").await;
    let seen = worker_fn(&w, "work::slowish", Duration::from_millis(2), |_, _| false);
    barrier(&w).await;
    let caller = client(&engine, 0, "burst").await;
    let sends = (0..1000).map(|n| enqueue(&caller, "small", "work::slowish", json!({"n": n})));
    let results = futures_util::future::join_all(sends).await;
    let accepted: Vec<i64> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| n as i64)
        .collect();
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code, "enqueue_error", "{r:?}");
        assert!(r.message.contains("Queue 'small' is full"), "{r:?}");
    }
    assert!(
        accepted.len() >= 50 && accepted.len() < 1000,
        "{}",
        accepted.len()
    );
    assert!(eventually(Duration::from_secs(20), || seen.count() == accepted.len()).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got: Vec<i64> = seen
        .calls()
        .iter()
        .map(|c| c["n"].as_i64().unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got, accepted,
        "every acknowledged job delivered exactly once"
    );
    let (rss, _) = engine.rss_mib();
    assert!(rss < 200, "engine RSS {rss} MiB");
}
