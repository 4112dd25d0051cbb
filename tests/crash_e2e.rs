//! The durability promise under SIGKILL: writers set and delete keys through the engine as
//! fast as they can, the engine is killed at a random moment, restarted on the same directory,
//! and every write acknowledged before the kill must be there with its last acknowledged value
//! (a write that was in flight may or may not have landed; nothing else may appear). Repeated
//! for 25 rounds on one directory, so later rounds also replay everything before them; the log
//! is compacted (on its own thread) often, so kills also land during compactions. The same
//! again with `fsync: always`, where an answer waits for the group commit's fsync.

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use common::EngineProc;
use iii_client::{Client, ClientOptions};
use serde_json::{json, Value};

const ROUNDS: usize = 25;
const WRITERS: usize = 8;
const KEYS_PER_WRITER: usize = 10;

/// Present with a version, or absent.
type State = Option<u64>;

#[derive(Default)]
struct Ledger {
    /// State after the last acknowledged write of each key.
    acked: HashMap<String, State>,
    /// The write in flight for a key when the engine died (at most one per key).
    in_flight: HashMap<String, State>,
    next_version: u64,
}

fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % n as u128) as u64
}

fn stream_config(fsync: &str) -> String {
    format!(
        "workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: 0\n  \
     - name: iii-stream\n    config:\n      host: 127.0.0.1\n      port: 0\n      adapter:\n        \
     name: kv\n        config:\n          store_method: file_based\n          file_path: ./data/stream_store\n          \
     compact_threshold_bytes: 2000000\n          fsync: {fsync}\n"
    )
}

fn key_input(key: &str) -> Value {
    json!({"stream_name": "crash", "group_id": "g", "item_id": key})
}

/// One writer: owns its keys, one write at a time, records every acknowledgement.
async fn writer(client: Client, ledger: Rc<RefCell<Ledger>>, w: usize) {
    for i in 0.. {
        let key = format!("w{w}-k{}", i % KEYS_PER_WRITER);
        let version = {
            let mut l = ledger.borrow_mut();
            l.next_version += 1;
            l.next_version
        };
        let delete = i % 7 == 3;
        let target: State = if delete { None } else { Some(version) };
        ledger.borrow_mut().in_flight.insert(key.clone(), target);
        let result = if delete {
            client.trigger("stream::delete", key_input(&key)).await
        } else {
            let pad = "p".repeat(random_below(16 * 1024) as usize);
            let mut input = key_input(&key);
            input["data"] = json!({"v": version, "pad": pad});
            client.trigger("stream::set", input).await
        };
        if result.is_err() {
            return; // the engine is gone; this write's fate is unknown
        }
        let mut l = ledger.borrow_mut();
        l.in_flight.remove(&key);
        l.acked.insert(key, target);
    }
}

async fn read_state(client: &Client, key: &str) -> State {
    let v = client
        .trigger("stream::get", key_input(key))
        .await
        .expect("get after restart");
    if v.is_null() {
        None
    } else {
        Some(v["v"].as_u64().expect("a value this test wrote"))
    }
}

#[actix::test]
async fn acknowledged_writes_survive_sigkill() {
    kill_rounds("every_second", ROUNDS).await;
}

#[actix::test]
async fn acknowledged_writes_survive_sigkill_with_fsync_always() {
    kill_rounds("always", 10).await;
}

async fn kill_rounds(fsync: &str, rounds: usize) {
    let mut engine = EngineProc::start(&stream_config(fsync));
    let ledger = Rc::new(RefCell::new(Ledger::default()));
    let mut total_acked = 0;
    for round in 0..rounds {
        let mut opts = ClientOptions::named("crash-writer");
        opts.reconnect.initial = Duration::from_secs(3600);
        let client = Client::connect(&engine.url(0), opts)
            .await
            .expect("connect");
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| actix::spawn(writer(client.clone(), ledger.clone(), w)))
            .collect();
        tokio::time::sleep(Duration::from_millis(20 + random_below(400))).await;
        engine.kill();
        // Calls still queued in the client fail now; their writes never left it.
        client.shutdown().await;
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        engine.restart();

        let reader = Client::connect(&engine.url(0), ClientOptions::named("crash-reader"))
            .await
            .unwrap();
        let (acked, in_flight) = {
            let mut l = ledger.borrow_mut();
            let in_flight = std::mem::take(&mut l.in_flight);
            (l.acked.clone(), in_flight)
        };
        for (key, want) in &acked {
            let got = read_state(&reader, key).await;
            let maybe = in_flight.get(key);
            assert!(
                got == *want || Some(&got) == maybe,
                "round {round}: key {key} is {got:?}; last acknowledged {want:?}, in flight {maybe:?}\n{}",
                engine.log()
            );
            // Whatever is there now is the truth the next round builds on.
            ledger.borrow_mut().acked.insert(key.clone(), got);
        }
        for (key, maybe) in in_flight.iter().filter(|(k, _)| !acked.contains_key(*k)) {
            let got = read_state(&reader, key).await;
            assert!(
                got.is_none() || got == *maybe,
                "round {round}: never-acknowledged {key} is {got:?}"
            );
            ledger.borrow_mut().acked.insert(key.clone(), got);
        }
        total_acked = acked.len();
        reader.shutdown().await;
    }
    assert!(
        total_acked >= WRITERS,
        "the writers wrote too little to prove anything"
    );
    assert!(
        engine.log().matches("opened stream store").count() > rounds,
        "{}",
        engine.log()
    );
}
