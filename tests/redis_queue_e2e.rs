//! `iii-queue` with the `redis` adapter: engines sharing one real Redis (`redis-server` on a
//! free port) share their queues. Jobs enqueued through any engine are delivered once each
//! across three engines and never to two deliveries at the same time; a job held by an engine
//! that is SIGKILLed goes out again through another engine once its lease is over, and killing
//! an engine in the middle of a stream of jobs loses none; FIFO groups keep their order
//! across engines through retries; `durable:subscriber` fans out to the functions subscribed
//! on every engine (replicas on two engines compete), and a topic's first subscriber gets what
//! was published before it; dead letters, redrive and counts are the same seen from any
//! engine; a burst far beyond `max_depth` is refused clearly with nothing acknowledged lost;
//! an enqueue while Redis is down fails with an error, and with Redis's `appendfsync always`
//! every acknowledged job outlives a SIGKILL of Redis and of the engine.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::RedisProc;
use common::{barrier, enqueue, eventually, EngineProc};
use iii_client::{Client, ClientOptions};
use iii_protocol::protocol::ErrorBody;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

fn config(redis: &str) -> String {
    format!(
        "workers:
  - name: iii-worker-manager
    config: {{host: 127.0.0.1, port: 0}}
  - name: iii-queue
    config:
      adapter: {{name: redis, config: {{redis_url: '{redis}'}}}}
      queue_configs:
        jobs: {{concurrency: 4, max_retries: 2, backoff_ms: 40, visibility_timeout_ms: 1500}}
        orders: {{type: fifo, message_group_field: customer, concurrency: 4, max_retries: 5, backoff_ms: 30}}
        small: {{max_depth: 50, concurrency: 1}}
"
    )
}

async fn client(engine: &EngineProc, name: &str) -> Client {
    Client::connect(&engine.url(0), ClientOptions::named(name))
        .await
        .expect("connect")
}

/// Every delivery any engine made, shared by the handlers of all engines in this process.
#[derive(Default)]
struct Ledger {
    /// (job key, engine index) per delivery, in order.
    deliveries: Mutex<Vec<(String, usize)>>,
    /// Job keys being delivered right now.
    running: Mutex<HashSet<String>>,
    /// Deliveries that started while another delivery of the same job key ran.
    overlaps: AtomicUsize,
}

impl Ledger {
    fn count(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }
    fn per_key(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (k, _) in self.deliveries.lock().unwrap().iter() {
            *m.entry(k.clone()).or_default() += 1;
        }
        m
    }
    fn engines(&self) -> HashSet<usize> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.1)
            .collect()
    }
}

/// Registers `f` on `c` (a worker of engine `engine`): records each delivery under
/// `key(data)`, takes `work`, fails while `fail(data, earlier deliveries of the key)`.
fn handler(
    c: &Client,
    f: &str,
    engine: usize,
    ledger: &Arc<Ledger>,
    key: fn(&Value) -> String,
    work: Duration,
    fail: fn(&Value, usize) -> bool,
) {
    let l = ledger.clone();
    c.register_function(f, move |v: Value| {
        let l = l.clone();
        async move {
            let k = key(&v);
            let earlier = {
                let mut d = l.deliveries.lock().unwrap();
                let n = d.iter().filter(|(x, _)| *x == k).count();
                d.push((k.clone(), engine));
                n
            };
            if !l.running.lock().unwrap().insert(k.clone()) {
                l.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(work).await;
            l.running.lock().unwrap().remove(&k);
            if fail(&v, earlier) {
                Err(ErrorBody::new("boom", format!("failed {k}")))
            } else {
                Ok(json!({"ok": true}))
            }
        }
    });
}

/// [`handler`] for jobs keyed by `data.n` that never fail.
fn serve(c: &Client, f: &str, engine: usize, ledger: &Arc<Ledger>, work: Duration) {
    handler(c, f, engine, ledger, by_n, work, |_, _| false);
}

fn by_n(v: &Value) -> String {
    v["n"].to_string()
}

#[actix::test]
async fn jobs_from_any_engine_are_delivered_once_across_three_engines() {
    let redis = RedisProc::start();
    let engines: Vec<EngineProc> = (0..3)
        .map(|_| EngineProc::start(&config(&redis.url())))
        .collect();
    let ledger = Arc::new(Ledger::default());
    let mut workers = Vec::new();
    for (i, e) in engines.iter().enumerate() {
        let w = client(e, &format!("worker{i}")).await;
        serve(&w, "work::job", i, &ledger, Duration::from_millis(5));
        barrier(&w).await;
        workers.push(w);
    }
    let mut callers = Vec::new();
    for e in &engines {
        callers.push(client(e, "caller").await);
    }
    let mut sends = Vec::new();
    for n in 0..300 {
        let c = callers[n % 3].clone();
        sends.push(async move { enqueue(&c, "jobs", "work::job", json!({"n": n})).await });
    }
    for r in futures_util::future::join_all(sends).await {
        assert!(r.unwrap()["messageReceiptId"].is_string());
    }
    assert!(
        eventually(T, || ledger.count() >= 300).await,
        "{} of 300 delivered",
        ledger.count()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per = ledger.per_key();
    assert_eq!(per.len(), 300);
    assert!(per.values().all(|n| *n == 1), "each job once: {per:?}");
    assert_eq!(ledger.overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(ledger.engines().len(), 3, "every engine took a share");
    // Every engine sees the same, empty queue (once the last acks are in).
    for c in &callers {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let list = c.trigger("iii::queue::list", json!({})).await.unwrap();
            let jobs = list
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["queue"] == "jobs")
                .cloned()
                .unwrap();
            assert_eq!(jobs["concurrency"], 4, "{list}");
            if jobs["jobs"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{list}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits (up to 3 s) until `jobs` holds no job, waiting or in flight, as `c`'s engine sees it.
async fn until_empty(c: &Client, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stats = c
            .trigger("engine::queue::topic_stats", json!({"topic": queue}))
            .await
            .unwrap();
        if stats["depth"] == 0 && stats["in_flight"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{queue} not empty: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn a_job_held_by_a_killed_engine_goes_out_again_through_another() {
    let redis = RedisProc::start();
    let mut a = EngineProc::start(&config(&redis.url()));
    let b = EngineProc::start(&config(&redis.url()));
    let ledger = Arc::new(Ledger::default());
    // Engine A's worker takes the job and never answers.
    let wa = client(&a, "worker-a").await;
    serve(&wa, "work::slow", 0, &ledger, Duration::from_secs(60));
    barrier(&wa).await;
    let caller = client(&b, "caller").await;
    enqueue(&caller, "jobs", "work::slow", json!({"n": 1}))
        .await
        .unwrap();
    assert!(eventually(T, || ledger.count() == 1).await);
    let held_since = Instant::now();
    a.kill();
    let wb = client(&b, "worker-b").await;
    serve(&wb, "work::slow", 1, &ledger, Duration::ZERO);
    barrier(&wb).await;
    // The lease: visibility 1.5 s + 2 s grace.
    assert!(
        eventually(Duration::from_secs(15), || ledger.count() == 2).await,
        "not redelivered: {:?}",
        ledger.deliveries.lock().unwrap()
    );
    let waited = held_since.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "redelivered after {waited:?}, inside the lease"
    );
    assert_eq!(ledger.deliveries.lock().unwrap()[1], ("1".to_string(), 1));
    // Acked by B: nothing left.
    until_empty(&caller, "jobs").await;
}

#[actix::test]
async fn killing_an_engine_amid_a_stream_of_jobs_loses_none() {
    let redis = RedisProc::start();
    let mut a = EngineProc::start(&config(&redis.url()));
    let b = EngineProc::start(&config(&redis.url()));
    let ledger = Arc::new(Ledger::default());
    let wa = client(&a, "worker-a").await;
    serve(&wa, "work::job", 0, &ledger, Duration::from_millis(20));
    let wb = client(&b, "worker-b").await;
    serve(&wb, "work::job", 1, &ledger, Duration::from_millis(20));
    barrier(&wa).await;
    barrier(&wb).await;
    let ca = client(&a, "caller-a").await;
    let cb = client(&b, "caller-b").await;
    let mut acked = HashSet::new();
    for n in 0..200u32 {
        if n == 120 {
            a.kill();
        }
        // Through A until it dies (its refusals after that are not acknowledged), then B.
        let via = if n < 120 && n.is_multiple_of(2) {
            &ca
        } else {
            &cb
        };
        if enqueue(via, "jobs", "work::job", json!({"n": n}))
            .await
            .is_ok()
        {
            acked.insert(n.to_string());
        }
    }
    assert!(acked.len() >= 140, "{} acknowledged", acked.len());
    let all_there = || {
        let per = ledger.per_key();
        acked.iter().all(|k| per.contains_key(k))
    };
    assert!(
        eventually(Duration::from_secs(20), all_there).await,
        "lost: {:?}",
        acked
            .iter()
            .filter(|k| !ledger.per_key().contains_key(*k))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        ledger.overlaps.load(Ordering::SeqCst),
        0,
        "a job delivered twice at once"
    );
}

#[actix::test]
async fn jobs_nobody_can_run_do_not_hold_up_the_others() {
    let redis = RedisProc::start();
    let a = EngineProc::start(&config(&redis.url()));
    let b = EngineProc::start(&config(&redis.url()));
    let caller = client(&b, "caller").await;
    // 300 jobs for a function no engine has, then 5 that engine A's worker runs.
    for n in 0..300 {
        enqueue(&caller, "jobs", "nobody::home", json!({"n": n}))
            .await
            .unwrap();
    }
    let ledger = Arc::new(Ledger::default());
    let w = client(&a, "worker").await;
    serve(&w, "work::job", 0, &ledger, Duration::ZERO);
    barrier(&w).await;
    for n in 1000..1005 {
        enqueue(&caller, "jobs", "work::job", json!({"n": n}))
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || ledger.count() == 5).await,
        "{} of 5 ran",
        ledger.count()
    );
    // The others wait (an engine may be handing one back right now), none used up by a retry;
    // the 5 leave once their acks (which follow the handler's return) are in.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stats = caller
            .trigger("engine::queue::topic_stats", json!({"topic": "jobs"}))
            .await
            .unwrap();
        let held = stats["depth"].as_u64().unwrap() + stats["in_flight"].as_u64().unwrap();
        assert_eq!(stats["dlq_depth"], 0, "{stats}");
        if held == 300 {
            break;
        }
        assert!(held > 300 && Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn fifo_groups_keep_their_order_across_engines_through_retries() {
    let redis = RedisProc::start();
    let engines: Vec<EngineProc> = (0..2)
        .map(|_| EngineProc::start(&config(&redis.url())))
        .collect();
    let ledger = Arc::new(Ledger::default());
    // Keyed by customer: two deliveries of one group at once count as an overlap.
    let by_customer = |v: &Value| v["customer"].as_str().unwrap_or("").to_string();
    let order = Arc::new(Mutex::new(HashMap::<String, Vec<u64>>::new()));
    let mut workers = Vec::new();
    for (i, e) in engines.iter().enumerate() {
        let w = client(e, &format!("worker{i}")).await;
        let l = ledger.clone();
        let o = order.clone();
        let f1 = Arc::new(Mutex::new(HashSet::<String>::new()));
        w.register_function("work::order", move |v: Value| {
            let (l, o, f1) = (l.clone(), o.clone(), f1.clone());
            async move {
                let k = by_customer(&v);
                if !l.running.lock().unwrap().insert(k.clone()) {
                    l.overlaps.fetch_add(1, Ordering::SeqCst);
                }
                l.deliveries.lock().unwrap().push((k.clone(), i));
                tokio::time::sleep(Duration::from_millis(2)).await;
                l.running.lock().unwrap().remove(&k);
                let n = v["n"].as_u64().unwrap();
                let id = format!("{k}/{n}");
                // Each engine's worker fails job 7 of a customer the first time it sees it.
                if n == 7 && f1.lock().unwrap().insert(id) {
                    return Err(ErrorBody::new("boom", "first attempt of 7 fails"));
                }
                o.lock().unwrap().entry(k).or_default().push(n);
                Ok(json!({}))
            }
        });
        barrier(&w).await;
        workers.push(w);
    }
    let ca = client(&engines[0], "caller-a").await;
    let cb = client(&engines[1], "caller-b").await;
    for n in 0..15u64 {
        for (i, customer) in ["ann", "bob", "cyd", "dee"].iter().enumerate() {
            let via = if (n as usize + i).is_multiple_of(2) {
                &ca
            } else {
                &cb
            };
            enqueue(
                via,
                "orders",
                "work::order",
                json!({"customer": customer, "n": n}),
            )
            .await
            .unwrap();
        }
    }
    let done = || {
        let o = order.lock().unwrap();
        o.len() == 4 && o.values().all(|v| v.len() >= 15)
    };
    assert!(eventually(T, done).await, "{:?}", order.lock().unwrap());
    let want: Vec<u64> = (0..15).collect();
    for (customer, got) in order.lock().unwrap().iter() {
        assert_eq!(got, &want, "{customer}: in order, each once");
    }
    assert_eq!(
        ledger.overlaps.load(Ordering::SeqCst),
        0,
        "a group had two jobs out at once"
    );
    assert_eq!(ledger.engines().len(), 2, "both engines delivered");
}

#[actix::test]
async fn durable_subscribers_on_every_engine_get_every_message() {
    let redis = RedisProc::start();
    let engines: Vec<EngineProc> = (0..3)
        .map(|_| EngineProc::start(&config(&redis.url())))
        .collect();
    // Published before anyone subscribed: kept for the first subscriber.
    let early = client(&engines[0], "early").await;
    for n in 0..3 {
        early
            .trigger(
                "iii::durable::publish",
                json!({"topic": "later", "data": {"n": n}}),
            )
            .await
            .unwrap();
    }
    let a_seen = Arc::new(Ledger::default());
    let b_seen = Arc::new(Ledger::default());
    let late_seen = Arc::new(Ledger::default());
    let wa = client(&engines[0], "sub-a").await;
    serve(&wa, "sub::a", 0, &a_seen, Duration::ZERO);
    wa.register_trigger("durable:subscriber", "sub::a", json!({"topic": "news"}));
    // sub::b is subscribed on two engines: its replicas compete for its messages.
    let wb1 = client(&engines[1], "sub-b1").await;
    serve(&wb1, "sub::b", 1, &b_seen, Duration::from_millis(2));
    wb1.register_trigger("durable:subscriber", "sub::b", json!({"topic": "news"}));
    let wb2 = client(&engines[2], "sub-b2").await;
    serve(&wb2, "sub::b", 2, &b_seen, Duration::from_millis(2));
    wb2.register_trigger("durable:subscriber", "sub::b", json!({"topic": "news"}));
    let wl = client(&engines[1], "sub-late").await;
    serve(&wl, "sub::late", 1, &late_seen, Duration::ZERO);
    wl.register_trigger("durable:subscriber", "sub::late", json!({"topic": "later"}));
    for w in [&wa, &wb1, &wb2, &wl] {
        barrier(w).await;
    }
    assert!(
        eventually(T, || late_seen.count() == 3).await,
        "the first subscriber gets what was published before: {:?}",
        late_seen.deliveries.lock().unwrap()
    );
    // Subscriptions reach Redis in the background: wait until both functions are known.
    let publisher = client(&engines[2], "publisher").await;
    let subscribed = || async {
        let t = publisher
            .trigger("iii::queue::list", json!({}))
            .await
            .unwrap();
        t.as_array()
            .unwrap()
            .iter()
            .filter(|q| q["topic"] == "news")
            .count()
    };
    let deadline = Instant::now() + T;
    while subscribed().await < 2 {
        assert!(
            Instant::now() < deadline,
            "subscriptions never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 0..60 {
        publisher
            .trigger(
                "iii::durable::publish",
                json!({"topic": "news", "data": {"n": n}}),
            )
            .await
            .unwrap();
    }
    assert!(eventually(T, || a_seen.count() >= 60 && b_seen.count() >= 60).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (name, l) in [("sub::a", &a_seen), ("sub::b", &b_seen)] {
        let per = l.per_key();
        assert_eq!(per.len(), 60, "{name}");
        assert!(
            per.values().all(|n| *n == 1),
            "{name}: each message once: {per:?}"
        );
    }
    assert_eq!(
        b_seen.engines(),
        HashSet::from([1, 2]),
        "both replicas of sub::b worked"
    );
    assert_eq!(b_seen.overlaps.load(Ordering::SeqCst), 0);
}

#[actix::test]
async fn dead_letters_redrive_and_counts_are_shared_by_every_engine() {
    let redis = RedisProc::start();
    let a = EngineProc::start(&config(&redis.url()));
    let b = EngineProc::start(&config(&redis.url()));
    let ledger = Arc::new(Ledger::default());
    let wa = client(&a, "worker").await;
    // Fails the first three deliveries of a job (max_retries 2: dead after three).
    handler(
        &wa,
        "work::flaky",
        0,
        &ledger,
        by_n,
        Duration::ZERO,
        |_, earlier| earlier < 3,
    );
    barrier(&wa).await;
    let ca = client(&a, "caller-a").await;
    let cb = client(&b, "caller-b").await;
    enqueue(&ca, "jobs", "work::flaky", json!({"n": 9}))
        .await
        .unwrap();
    let dlq = |c: Client| async move {
        c.trigger("engine::queue::dlq_messages", json!({"topic": "jobs"}))
            .await
            .unwrap()
    };
    let deadline = Instant::now() + T;
    let letters = loop {
        let d = dlq(cb.clone()).await;
        if d.as_array().is_some_and(|a| !a.is_empty()) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter: {:?}",
            ledger.deliveries.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ledger.count(), 3);
    let letter = &letters[0];
    assert_eq!(letter["payload"], json!({"n": 9}), "{letters}");
    assert_eq!(letter["retries"], 3, "{letters}");
    assert_eq!(letter["error"]["code"], "boom", "{letters}");
    let topics = cb
        .trigger("engine::queue::dlq_topics", json!({}))
        .await
        .unwrap();
    assert!(
        topics
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["topic"] == "jobs" && t["message_count"] == 1),
        "{topics}"
    );
    // Redriven through B: delivered again (through A's worker) and done.
    let id = letter["id"].as_str().unwrap();
    let r = cb
        .trigger(
            "iii::queue::redrive_message",
            json!({"queue": "jobs", "message_id": id}),
        )
        .await
        .unwrap();
    assert_eq!(r["redriven"], 1, "{r}");
    assert!(eventually(T, || ledger.count() == 4).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dlq(ca.clone()).await, json!([]));

    // Purge through B drops the jobs no engine can run, also those an engine was handing back
    // at that moment.
    for n in 100..110 {
        enqueue(&cb, "small", "nobody::home", json!({"n": n}))
            .await
            .unwrap();
    }
    let r = cb
        .trigger("iii::queue::purge", json!({"queue": "small"}))
        .await
        .unwrap();
    assert!(r["purged"].as_u64().unwrap() >= 8, "{r}");
    until_empty(&ca, "small").await;
}

#[actix::test]
async fn a_burst_beyond_the_depth_through_three_engines_is_refused_clearly() {
    let redis = RedisProc::start();
    let engines: Vec<EngineProc> = (0..3)
        .map(|_| EngineProc::start(&config(&redis.url())))
        .collect();
    let ledger = Arc::new(Ledger::default());
    let w = client(&engines[0], "worker").await;
    serve(&w, "work::slowish", 0, &ledger, Duration::from_millis(50));
    barrier(&w).await;
    let mut callers = Vec::new();
    for e in &engines {
        callers.push(client(e, "caller").await);
    }
    let mut sends = Vec::new();
    for n in 0..900 {
        let c = callers[n % 3].clone();
        sends.push(async move {
            (
                n,
                enqueue(&c, "small", "work::slowish", json!({"n": n})).await,
            )
        });
    }
    let mut acked = HashSet::new();
    for (n, r) in futures_util::future::join_all(sends).await {
        match r {
            Ok(v) => {
                assert!(v["messageReceiptId"].is_string(), "{v}");
                acked.insert(n.to_string());
            }
            Err(e) => {
                // The enqueue action's code, as upstream; the queue's reason in the message.
                assert_eq!(e.code, "enqueue_error", "{e:?}");
                assert!(e.message.contains("Queue 'small' is full"), "{e:?}");
            }
        }
    }
    assert!(
        acked.len() >= 50 && acked.len() < 900,
        "{} acknowledged",
        acked.len()
    );
    assert!(
        eventually(Duration::from_secs(30), || ledger.count() >= acked.len()).await,
        "{} of {} delivered",
        ledger.count(),
        acked.len()
    );
    let per = ledger.per_key();
    assert_eq!(per.keys().cloned().collect::<HashSet<_>>(), acked);
    assert!(per.values().all(|n| *n == 1));
    assert_eq!(ledger.overlaps.load(Ordering::SeqCst), 0);
}

#[actix::test]
async fn an_enqueue_while_redis_is_down_fails_with_an_error() {
    let mut redis = RedisProc::start();
    let engine = EngineProc::start(&config(&redis.url()));
    let c = client(&engine, "caller").await;
    enqueue(&c, "jobs", "work::x", json!({"n": 1}))
        .await
        .unwrap();
    redis.kill();
    let started = Instant::now();
    let e = enqueue(&c, "jobs", "work::x", json!({"n": 2}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "enqueue_error", "{e:?}");
    assert!(e.message.contains("could not be stored in Redis"), "{e:?}");
    let e = c
        .trigger(
            "engine::queue::enqueue",
            json!({"queue": "jobs", "function_id": "work::x", "data": {"n": 3}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "QUEUE_WRITE_FAILED", "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    // Bad input is still refused before Redis is asked.
    let e = enqueue(&c, "nope", "work::x", json!({})).await.unwrap_err();
    assert!(e.message.contains("Queue 'nope' not found"), "{e:?}");
}

#[actix::test]
async fn with_appendfsync_always_acknowledged_jobs_outlive_a_redis_crash() {
    let mut redis = RedisProc::start_durable();
    let mut engine = EngineProc::start(&config(&redis.url()));
    let c = client(&engine, "caller").await;
    let mut acked = HashSet::new();
    for n in 0..150u32 {
        enqueue(&c, "jobs", "work::job", json!({"n": n}))
            .await
            .unwrap();
        acked.insert(n.to_string());
    }
    redis.kill();
    for n in 150..153u32 {
        let e = enqueue(&c, "jobs", "work::job", json!({"n": n}))
            .await
            .unwrap_err();
        assert!(e.message.contains("Redis"), "{e:?}");
    }
    // The engine goes too; both come back on the same port and data.
    engine.kill();
    redis.restart();
    engine.restart();
    let ledger = Arc::new(Ledger::default());
    let w = client(&engine, "worker").await;
    serve(&w, "work::job", 0, &ledger, Duration::ZERO);
    barrier(&w).await;
    assert!(
        eventually(T, || ledger.count() >= acked.len()).await,
        "{} of {} delivered",
        ledger.count(),
        acked.len()
    );
    let per = ledger.per_key();
    assert_eq!(per.keys().cloned().collect::<HashSet<_>>(), acked);
    assert!(per.values().all(|n| *n == 1));
}

#[actix::test]
async fn a_fifo_subscriptions_dead_letter_redriven_through_another_engine_goes_out_again() {
    let redis = RedisProc::start();
    let a = EngineProc::start(&config(&redis.url()));
    let b = EngineProc::start(&config(&redis.url()));
    let ledger = Arc::new(Ledger::default());
    let wa = client(&a, "subscriber").await;
    // Fails the first delivery of each message: with maxRetries 0 it is a dead letter at once.
    handler(
        &wa,
        "sub::fifo",
        0,
        &ledger,
        by_n,
        Duration::ZERO,
        |_, earlier| earlier == 0,
    );
    let qc = json!({"type": "fifo", "messageGroupField": "g", "maxRetries": 0});
    wa.register_trigger(
        "durable:subscriber",
        "sub::fifo",
        json!({"topic": "shipments", "queue_config": qc}),
    );
    barrier(&wa).await;
    let cb = client(&b, "operator").await;
    let deadline = Instant::now() + T;
    while cb
        .trigger("iii::queue::list", json!({}))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .all(|q| q["topic"] != "shipments")
    {
        assert!(
            Instant::now() < deadline,
            "the subscription never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cb.trigger(
        "iii::durable::publish",
        json!({"topic": "shipments", "data": {"n": 1, "g": "x"}}),
    )
    .await
    .unwrap();
    let dead = || async {
        cb.trigger("engine::queue::dlq_messages", json!({"topic": "shipments"}))
            .await
            .unwrap()
    };
    let deadline = Instant::now() + T;
    let letters = loop {
        let d = dead().await;
        if d.as_array().is_some_and(|l| !l.is_empty()) {
            break d;
        }
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Engine B consumes nothing of this queue; it still knows it is FIFO and redrives it so.
    let list = cb.trigger("iii::queue::list", json!({})).await.unwrap();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["topic"] == "shipments")
        .cloned()
        .unwrap();
    assert_eq!(row["type"], "fifo", "{list}");
    let id = letters[0]["id"].as_str().unwrap();
    let r = cb
        .trigger(
            "iii::queue::redrive_message",
            json!({"queue": "shipments", "message_id": id}),
        )
        .await
        .unwrap();
    assert_eq!(r["redriven"], 1, "{r}");
    assert!(
        eventually(T, || ledger.count() == 2).await,
        "redriven but not delivered: {:?}",
        ledger.deliveries.lock().unwrap()
    );
    until_empty(&cb, "shipments").await;
}
