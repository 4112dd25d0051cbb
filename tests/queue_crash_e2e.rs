//! The queue's durability promise under SIGKILL: producers enqueue into a standard queue and a FIFO queue (4 message groups, each group's jobs
//! enqueued one after another), slow subscribers work on them (a tenth of jobs fail their
//! first attempt), and the engine is killed at a random moment and restarted on the same
//! directory, 20 times. Producers stay below what the subscribers can take, so the queues
//! drain at the end. Then:
//!
//! * every acknowledged job was delivered and succeeded at least once (none lost);
//! * no job was ever delivered while an earlier delivery of it was still running (the lease
//!   holds a job that was in flight at the kill until its visibility timeout);
//! * within a FIFO group, job k+1 never started before job k had succeeded.
//!
//! The handlers run in this process and outlive the engine, as a real worker does.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::EngineProc;
use iii_client::{Client, ClientOptions};
use iii_protocol::protocol::ErrorBody;
use serde_json::{json, Value};

const ROUNDS: usize = 20;
const GROUPS: usize = 4;

const CONFIG: &str = "workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-queue
    config:
      adapter: {name: builtin, config: {store_method: file_based, file_path: ./data/queue, compact_threshold_bytes: 300000}}
      queue_configs:
        work: {concurrency: 16, max_retries: 1000, backoff_ms: 30, visibility_timeout_ms: 2000}
        ordered: {type: fifo, message_group_field: group, concurrency: 4, max_retries: 1000, backoff_ms: 30, visibility_timeout_ms: 2000}
";

fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % n as u128) as u64
}

/// One delivery as the worker saw it.
#[derive(Debug, Clone)]
struct Delivery {
    start: Instant,
    end: Option<Instant>,
    ok: bool,
}

#[derive(Default)]
struct Ledger {
    /// Job key → its deliveries.
    deliveries: HashMap<String, Vec<Delivery>>,
    /// Keys whose enqueue was acknowledged.
    acked: Vec<String>,
    /// Next job number of each producer.
    next: HashMap<String, u64>,
}

type Shared = Arc<Mutex<Ledger>>;

/// The worker's function: records the delivery, works 5–50 ms (a tenth: 400–900 ms) in a task of its own (so it
/// finishes even when its connection is gone), fails the first attempt of every tenth job.
fn serve(client: &Client, ledger: Shared) {
    client.register_function("crash::work", move |v: Value| {
        let ledger = ledger.clone();
        async move {
            let key = v["key"].as_str().unwrap_or("?").to_string();
            let index = {
                let mut l = ledger.lock().unwrap();
                let list = l.deliveries.entry(key.clone()).or_default();
                list.push(Delivery {
                    start: Instant::now(),
                    end: None,
                    ok: false,
                });
                list.len() - 1
            };
            let n = v["n"].as_u64().unwrap_or(1);
            let fail = index == 0 && n.is_multiple_of(10);
            // A tenth of the jobs outlast an engine restart.
            let work_ms = if n % 10 == 5 {
                400 + random_below(500)
            } else {
                5 + random_below(45)
            };
            let l2 = ledger.clone();
            let work = actix::spawn(async move {
                tokio::time::sleep(Duration::from_millis(work_ms)).await;
                let mut l = l2.lock().unwrap();
                let d = &mut l.deliveries.get_mut(&key).unwrap()[index];
                d.end = Some(Instant::now());
                d.ok = !fail;
            });
            let _ = work.await;
            if fail {
                Err(ErrorBody::new("first_try", "fails once"))
            } else {
                Ok(json!({}))
            }
        }
    });
}

/// One producer: enqueues its jobs one after another (so a FIFO group's order is defined).
async fn produce(client: Client, ledger: Shared, queue: &'static str, group: Option<usize>) {
    let name = match group {
        Some(g) => format!("{queue}-g{g}"),
        None => format!("{queue}-{}", random_below(1 << 40)),
    };
    loop {
        let n = {
            let mut l = ledger.lock().unwrap();
            let n = l.next.entry(name.clone()).or_default();
            *n += 1;
            *n
        };
        let key = format!("{name}-{n}");
        let mut data = json!({"key": key, "n": n, "pad": "x".repeat(random_below(2000) as usize)});
        if let Some(g) = group {
            data["group"] = json!(format!("g{g}"));
        }
        match common::enqueue(&client, queue, "crash::work", data).await {
            Ok(_) => ledger.lock().unwrap().acked.push(key),
            Err(_) => return, // the engine is gone; this job's fate is unknown
        }
        // Below what the subscribers can take, so the queues drain at the end.
        tokio::time::sleep(Duration::from_millis(if group.is_some() {
            100
        } else {
            20
        }))
        .await;
    }
}

async fn connect(engine: &EngineProc, name: &str) -> Client {
    let mut opts = ClientOptions::named(name);
    opts.reconnect.initial = Duration::from_secs(3600);
    Client::connect(&engine.url(0), opts)
        .await
        .expect("connect")
}

#[actix::test]
async fn no_acknowledged_job_is_lost_or_doubled_under_20_sigkills() {
    let mut engine = EngineProc::start(CONFIG);
    let ledger: Shared = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..ROUNDS {
        let worker = connect(&engine, "crash-worker").await;
        serve(&worker, ledger.clone());
        workers.push(worker);
        let producer = connect(&engine, "crash-producer").await;
        let mut tasks = Vec::new();
        for _ in 0..2 {
            tasks.push(actix::spawn(produce(
                producer.clone(),
                ledger.clone(),
                "work",
                None,
            )));
        }
        for g in 0..GROUPS {
            tasks.push(actix::spawn(produce(
                producer.clone(),
                ledger.clone(),
                "ordered",
                Some(g),
            )));
        }
        tokio::time::sleep(Duration::from_millis(300 + random_below(1200))).await;
        engine.kill();
        producer.shutdown().await;
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        engine.restart();
    }
    // The last life: everything acknowledged must come out.
    let worker = connect(&engine, "crash-worker").await;
    serve(&worker, ledger.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let lost = loop {
        let lost: Vec<String> = {
            let l = ledger.lock().unwrap();
            l.acked
                .iter()
                .filter(|k| !l.deliveries.get(*k).is_some_and(|d| d.iter().any(|d| d.ok)))
                .cloned()
                .collect()
        };
        if lost.is_empty() || Instant::now() > deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let list = worker.trigger("iii::queue::list", json!({})).await.unwrap();
    let l = ledger.lock().unwrap();
    let deliveries: usize = l.deliveries.values().map(Vec::len).sum();
    let repeated = l
        .deliveries
        .values()
        .filter(|d| d.iter().filter(|d| d.ok).count() > 1)
        .count();
    eprintln!(
        "queue crash test: {ROUNDS} SIGKILLs, {} jobs acknowledged, {} jobs seen, {deliveries} deliveries, \
         {repeated} jobs succeeded more than once (acks lost in a kill), {} lost",
        l.acked.len(),
        l.deliveries.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged jobs never succeeded: {:?}\n{list}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        l.acked.len() > 200,
        "too little load to mean anything: {}",
        l.acked.len()
    );

    // No delivery while an earlier one of the same job was still running.
    for (key, ds) in &l.deliveries {
        let mut ds = ds.clone();
        ds.sort_by_key(|d| d.start);
        for pair in ds.windows(2) {
            let end = pair[0].end.expect("every handler finished");
            assert!(
                end <= pair[1].start,
                "{key} delivered again while its delivery was running: {ds:?}"
            );
        }
    }
    // FIFO: k+1 starts only after k has succeeded.
    for g in 0..GROUPS {
        let name = format!("ordered-g{g}");
        let last = l.next.get(&name).copied().unwrap_or(0);
        for k in 1..last {
            let (Some(a), Some(b)) = (
                l.deliveries.get(&format!("{name}-{k}")),
                l.deliveries.get(&format!("{name}-{}", k + 1)),
            ) else {
                continue;
            };
            let done = a.iter().filter(|d| d.ok).filter_map(|d| d.end).min();
            let next_start = b.iter().map(|d| d.start).min().unwrap();
            assert!(
                done.is_some_and(|t| t <= next_start),
                "group g{g}: job {} started before job {k} succeeded: {a:?} / {b:?}",
                k + 1
            );
        }
    }
    let jobs: u64 = list
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["jobs"].as_u64().unwrap())
        .sum();
    assert_eq!(jobs, 0, "{list}");
    drop(workers);
}
