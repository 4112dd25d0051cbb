//! The compaction check of the `store` scenario: on an engine whose store compacts past
//! 1 MiB of log, a writer on its own thread keeps writing new 1 KiB items (8 in flight) while a
//! sequential reader on this thread does `stream::get` of one item; reported: the reader's
//! latency and failures, the writer's sets, and the compactions the engine logged
//! ("compacted stream store", an info line of the store module: the engine runs with
//! `RUST_LOG=warn,iii::kv::store=info`).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iii_client::Client;
use serde_json::{json, Value};

use crate::procs::Spawned;
use crate::report::{self, Stats, Table};
use crate::target::{self, Threads};

/// What the compaction check saw.
pub struct Check {
    reads: Stats,
    read_failures: usize,
    first_error: Option<String>,
    writes: usize,
    write_failures: usize,
    elapsed: Duration,
    compactions: usize,
}

/// The table the checks of every fsync mode are rows of.
pub fn table(seconds: Duration) -> Table {
    Table::new(
        format!(
            "store compaction — compact_threshold_bytes 1048576; a writer writes new 1 KiB items \
             (8 in flight) while a reader does stream::get for {} s; latency in µs",
            seconds.as_secs()
        ),
        &[
            "fsync",
            "gets",
            "get p50",
            "get p99",
            "get max",
            "get failed",
            "sets",
            "sets/s",
            "set failed",
            "compactions",
        ],
    )
}

impl Check {
    pub fn ok(&self) -> bool {
        self.read_failures == 0 && self.write_failures == 0 && self.reads.count > 0
    }

    fn sets_per_s(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn add_to(&self, table: &mut Table, fsync: &str) {
        table.row(vec![
            fsync.to_string(),
            self.reads.count.to_string(),
            self.reads.p50_us.to_string(),
            self.reads.p99_us.to_string(),
            self.reads.max_us.to_string(),
            self.read_failures.to_string(),
            self.writes.to_string(),
            report::thousands(self.sets_per_s()),
            self.write_failures.to_string(),
            self.compactions.to_string(),
        ]);
        if let Some(e) = &self.first_error {
            table.note(format!("{fsync}: first failed get: {e}"));
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "reads": self.reads.json(),
            "read_failures": self.read_failures,
            "first_error": self.first_error,
            "sets": self.writes,
            "sets_per_s": self.sets_per_s().round(),
            "set_failures": self.write_failures,
            "elapsed_ms": report::ms(self.elapsed),
            "compactions": self.compactions,
        })
    }
}

/// Writes new 1 KiB items with 8 in flight until `stop`; returns (sets, failed sets).
async fn write_until(writer: Client, stop: Arc<AtomicBool>) -> (usize, usize) {
    let blob = "w".repeat(1024);
    let next = Rc::new(Cell::new(0usize));
    let lanes = (0..8).map(|_| async {
        let mut failures = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let n = next.get();
            next.set(n + 1);
            let item = json!({"stream_name": "bench", "group_id": "w",
                              "item_id": format!("w-{n}"), "data": blob});
            failures += writer.trigger("stream::set", item).await.is_err() as usize;
        }
        failures
    });
    let failures = futures_util::future::join_all(lanes).await.iter().sum();
    writer.shutdown().await;
    (next.get(), failures)
}

/// Runs the check for `seconds` on a fresh engine started with `config`.
pub async fn check(config: &str, seconds: Duration) -> Result<Check, String> {
    let engine = Spawned::engine_with(config, "warn,iii::kv::store=info")?;
    let reader = Client::connect(&engine.url, target::bench_options("bench-reader"))
        .await
        .map_err(|e| format!("reader: {e}"))?;
    let key = json!({"stream_name": "bench", "group_id": "c", "item_id": "probe"});
    let mut probe = key.clone();
    probe["data"] = json!({"probe": true});
    reader
        .trigger("stream::set", probe)
        .await
        .map_err(|e| format!("stream::set: {e}"))?;
    let threads = Threads::new(1);
    let writer = target::connect_on(
        &threads.pick(0),
        engine.url.clone(),
        target::bench_options("bench-writer"),
        |_| {},
    )
    .await
    .map_err(|e| format!("writer: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let written = target::run_on(&threads.pick(0), {
        let stop = stop.clone();
        move || write_until(writer, stop)
    });
    let started = Instant::now();
    let (mut samples, mut read_failures, mut first_error) = (Vec::new(), 0, None);
    while started.elapsed() < seconds {
        let t = Instant::now();
        let r = reader.trigger("stream::get", key.clone()).await;
        samples.push(report::us(t.elapsed()));
        let failed = match r {
            Ok(v) if v["probe"] == true => None,
            Ok(v) => Some(format!("stream::get answered {v}")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            read_failures += 1;
            first_error.get_or_insert(e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (writes, write_failures) = written
        .await
        .map_err(|_| "the writer's thread stopped".to_string())?;
    let elapsed = started.elapsed();
    reader.shutdown().await;
    drop(threads);
    // A compaction still running logs its line when it finishes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = engine.log();
    let compactions = log
        .lines()
        .filter(|l| l.contains("compacted stream store"))
        .count();
    if read_failures > 0 || write_failures > 0 {
        eprintln!("---- engine log (compaction check) ----\n{log}---- end ----");
    }
    Ok(Check {
        reads: Stats::of(&mut samples),
        read_failures,
        first_error,
        writes,
        write_failures,
        elapsed,
        compactions,
    })
}
