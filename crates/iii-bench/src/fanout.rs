//! The `fanout` scenario: one writer, S subscribers of the `stream` trigger.
//!
//! For each S, S workers each register a function bound by a `stream` trigger
//! (`{"stream_name":"bench","group_id":"g"}`) that records which item's event it got. Once a
//! probe write has reached all of them, a writer does a fixed number of `stream::set` of fresh
//! items (sequentially, then with several in flight). Reported per phase: sets/s, set latency,
//! the time from the first set until every subscriber has seen every event, and the lost and
//! duplicated deliveries (any is a failure: exit status 1).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iii_client::Client;
use serde_json::{json, Value};

use crate::args::{parse_count, parse_list, parse_secs};
use crate::report::{self, Stats, Table};
use crate::target::{self, Common, Threads};

const ABOUT: &str = "\
stream::set fan-out to S stream-trigger subscribers

S subscriber workers each bind a function to the `stream` trigger
{\"stream_name\":\"bench\",\"group_id\":\"g\"}; a writer does N stream::set of fresh items, first
sequentially, then with several in flight. Every subscriber must see every event exactly once.
With --url the engine needs a stream module; items are written under stream \"bench\", group
\"g\".";

/// The `fanout` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(
    after_help = "Output: one JSON line, then a table. Exit status 1 if any event was lost or \
                  duplicated."
)]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Subscriber counts
    #[arg(long, value_name = "list", value_parser = parse_list, default_value = "1,10,100")]
    pub subscribers: ::std::vec::Vec<usize>,
    /// stream::set calls per phase
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "2000")]
    pub sets: usize,
    /// Sets in flight in the second phase (0 skips the phase)
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "16")]
    pub in_flight: usize,
    /// Threads the subscriber clients are spread over
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "2")]
    pub client_threads: usize,
    /// Give up waiting for deliveries after this many seconds without one
    #[arg(long, value_name = "s", value_parser = parse_secs, default_value = "10")]
    pub quiet_timeout: Duration,
}

const PHASES: usize = 2;

/// What one subscriber saw, by phase and item number.
struct Seen {
    counts: Vec<AtomicU32>,
    foreign: AtomicU64,
    probes: AtomicU64,
}

/// Shared by all subscribers of one level.
struct Board {
    nonce: String,
    sets: usize,
    epoch: Instant,
    /// Deliveries per phase, and the time (ns since `epoch`) of the latest one.
    delivered: [AtomicU64; PHASES],
    last_ns: [AtomicU64; PHASES],
}

impl Board {
    fn item_id(&self, phase: usize, n: usize) -> String {
        format!("{}:{phase}:{n}", self.nonce)
    }

    /// Files one event under its subscriber.
    fn record(&self, seen: &Seen, event: &Value) {
        let id = event["id"].as_str().unwrap_or("");
        let mut parts = id.split(':');
        let (nonce, phase, n) = (parts.next(), parts.next(), parts.next());
        if nonce != Some(self.nonce.as_str()) {
            seen.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if phase == Some("probe") {
            seen.probes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let phase: Option<usize> = phase.and_then(|p| p.parse().ok()).filter(|p| *p < PHASES);
        let n: Option<usize> = n.and_then(|n| n.parse().ok()).filter(|n| *n < self.sets);
        match phase.zip(n) {
            Some((p, n)) => {
                seen.counts[p * self.sets + n].fetch_add(1, Ordering::Relaxed);
                self.delivered[p].fetch_add(1, Ordering::Relaxed);
                self.last_ns[p]
                    .fetch_max(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            None => {
                seen.foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One phase's numbers.
struct Phase {
    in_flight: usize,
    sets: usize,
    write: Duration,
    set_latency: Stats,
    set_errors: usize,
    first_error: Option<String>,
    /// From the first set until the last expected delivery (None if never complete).
    all_delivered: Option<Duration>,
    delivered: u64,
    lost: u64,
    duplicated: u64,
}

impl Phase {
    fn json(&self, subscribers: usize) -> Value {
        let expected = (self.sets * subscribers) as f64;
        json!({
            "in_flight": self.in_flight,
            "sets": self.sets,
            "write_ms": report::ms(self.write),
            "sets_per_s": (self.sets as f64 / self.write.as_secs_f64().max(1e-9)).round(),
            "set_latency": self.set_latency.json(),
            "set_errors": self.set_errors,
            "first_error": self.first_error,
            "all_delivered_ms": self.all_delivered.map(report::ms),
            "deliveries_per_s": self.all_delivered.map(|d| (expected / d.as_secs_f64().max(1e-9)).round()),
            "expected_deliveries": expected as u64,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicated": self.duplicated,
        })
    }

    fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.set_errors == 0
    }
}

async fn write_phase(
    writer: &Client,
    board: &Board,
    phase: usize,
    in_flight: usize,
) -> (Duration, Stats, usize, Option<String>, Instant) {
    let next = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let started = Instant::now();
    let lanes = (0..in_flight.max(1)).map(|_| {
        let next = next.clone();
        async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            let mut first: Option<String> = None;
            while next.get() < board.sets {
                let n = next.get();
                next.set(n + 1);
                let input = json!({
                    "stream_name": "bench", "group_id": "g",
                    "item_id": board.item_id(phase, n), "data": {"n": n},
                });
                let t = Instant::now();
                let r = writer.trigger("stream::set", input).await;
                samples.push(report::us(t.elapsed()));
                if let Err(e) = r {
                    errors += 1;
                    first.get_or_insert_with(|| e.to_string());
                }
            }
            (samples, errors, first)
        }
    });
    let results = futures_util::future::join_all(lanes).await;
    let write = started.elapsed();
    let mut samples = Vec::new();
    let mut errors = 0;
    let mut first = None;
    for (s, e, f) in results {
        samples.extend(s);
        errors += e;
        first = first.or(f);
    }
    (write, Stats::of(&mut samples), errors, first, started)
}

/// Writes probes until every subscriber has seen one (triggers bind asynchronously).
async fn wait_bound(writer: &Client, board: &Board, seen: &[Arc<Seen>]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut k = 0;
    while Instant::now() < deadline {
        let input = json!({
            "stream_name": "bench", "group_id": "g",
            "item_id": format!("{}:probe:{k}", board.nonce), "data": {"probe": k},
        });
        if let Err(e) = writer.trigger("stream::set", input).await {
            return Err(format!(
                "stream::set failed (does the engine have a stream module?): {e}"
            ));
        }
        k += 1;
        let wait_until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < wait_until {
            if seen.iter().all(|s| s.probes.load(Ordering::Relaxed) > 0) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let ready = seen
        .iter()
        .filter(|s| s.probes.load(Ordering::Relaxed) > 0)
        .count();
    Err(format!(
        "only {ready} of {} subscribers received the probe event within 20 s",
        seen.len()
    ))
}

async fn run_level(o: &Opts, url: &str, s: usize) -> Result<(Vec<Phase>, Value), String> {
    let threads = Threads::new(o.client_threads);
    let nonce = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let board = Arc::new(Board {
        nonce,
        sets: o.sets,
        epoch: Instant::now(),
        delivered: Default::default(),
        last_ns: Default::default(),
    });
    let mut seen = Vec::with_capacity(s);
    let mut subs = Vec::with_capacity(s);
    let connect_started = Instant::now();
    for i in 0..s {
        let me = Arc::new(Seen {
            counts: (0..PHASES * o.sets).map(|_| AtomicU32::new(0)).collect(),
            foreign: AtomicU64::new(0),
            probes: AtomicU64::new(0),
        });
        seen.push(me.clone());
        let board = board.clone();
        let function_id = format!("bench::sub::{}::{i}", board.nonce);
        let c = target::connect_on(
            &threads.pick(i),
            url.to_string(),
            target::bench_options(&format!("bench-sub-{i}")),
            move |c| {
                c.register_function(&function_id, move |event: Value| {
                    board.record(&me, &event);
                    async { Ok(Value::Null) }
                });
                c.register_trigger(
                    "stream",
                    &function_id,
                    json!({"stream_name": "bench", "group_id": "g"}),
                );
            },
        )
        .await
        .map_err(|e| format!("subscriber {i}: {e}"))?;
        subs.push(c);
    }
    let connect_time = connect_started.elapsed();
    let writer = Client::connect(url, target::bench_options("bench-writer"))
        .await
        .map_err(|e| format!("writer: {e}"))?;
    wait_bound(&writer, &board, &seen).await?;

    let mut phases = Vec::new();
    let plan: Vec<usize> = if o.in_flight > 0 {
        vec![1, o.in_flight]
    } else {
        vec![1]
    };
    writer.shutdown().await;
    for (p, &in_flight) in plan.iter().enumerate() {
        // A fresh writer per phase, for the reason `invoke` uses a fresh caller per phase.
        let writer = Client::connect(url, target::bench_options("bench-writer"))
            .await
            .map_err(|e| format!("writer: {e}"))?;
        let (write, set_latency, set_errors, first_error, started) =
            write_phase(&writer, &board, p, in_flight).await;
        writer.shutdown().await;
        let expected = (o.sets * s) as u64;
        let mut last_seen = board.delivered[p].load(Ordering::Relaxed);
        let mut last_progress = Instant::now();
        while board.delivered[p].load(Ordering::Relaxed) < expected
            && last_progress.elapsed() < o.quiet_timeout
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let now = board.delivered[p].load(Ordering::Relaxed);
            if now != last_seen {
                last_seen = now;
                last_progress = Instant::now();
            }
        }
        let complete = board.delivered[p].load(Ordering::Relaxed) >= expected;
        // Late duplicates would show up now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let last = board.epoch + Duration::from_nanos(board.last_ns[p].load(Ordering::Relaxed));
        let (mut lost, mut duplicated) = (0u64, 0u64);
        for sub in &seen {
            for c in &sub.counts[p * o.sets..(p + 1) * o.sets] {
                match c.load(Ordering::Relaxed) {
                    0 => lost += 1,
                    1 => {}
                    n => duplicated += (n - 1) as u64,
                }
            }
        }
        phases.push(Phase {
            in_flight,
            sets: o.sets,
            write,
            set_latency,
            set_errors,
            first_error,
            all_delivered: complete.then(|| last.saturating_duration_since(started)),
            delivered: board.delivered[p].load(Ordering::Relaxed),
            lost,
            duplicated,
        });
    }
    let foreign: u64 = seen.iter().map(|s| s.foreign.load(Ordering::Relaxed)).sum();
    for c in &subs {
        c.shutdown().await;
    }
    drop(threads);
    let extra = json!({
        "subscribers": s,
        "connect_ms": report::ms(connect_time),
        "foreign_events": foreign,
    });
    Ok((phases, extra))
}

/// Runs the scenario; `Ok(false)` when an event was lost or duplicated or a set failed.
pub async fn run(o: Opts) -> Result<bool, String> {
    let target = o.common.target()?;
    let url = target.url().to_string();
    let mut levels = Vec::new();
    let mut table = Table::new(
        format!(
            "fanout via engine — {} stream::set per phase; times in ms; set latency in µs",
            o.sets
        ),
        &[
            "subscribers",
            "in flight",
            "sets/s",
            "set p50",
            "set p99",
            "all delivered",
            "deliveries/s",
            "lost",
            "dup",
        ],
    );
    let mut ok = true;
    for &s in &o.subscribers {
        let (phases, mut extra) = match run_level(&o, &url, s).await {
            Ok(r) => r,
            Err(e) => {
                let log = target.log();
                if !log.is_empty() {
                    eprintln!("---- engine log ----\n{log}---- end of engine log ----");
                }
                return Err(e);
            }
        };
        for ph in &phases {
            ok &= ph.ok();
            let expected = (ph.sets * s) as f64;
            table.row(vec![
                s.to_string(),
                ph.in_flight.to_string(),
                report::thousands(ph.sets as f64 / ph.write.as_secs_f64().max(1e-9)),
                ph.set_latency.p50_us.to_string(),
                ph.set_latency.p99_us.to_string(),
                ph.all_delivered
                    .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
                    .unwrap_or_else(|| "incomplete".into()),
                ph.all_delivered
                    .map(|d| report::thousands(expected / d.as_secs_f64().max(1e-9)))
                    .unwrap_or_else(|| "-".into()),
                ph.lost.to_string(),
                ph.duplicated.to_string(),
            ]);
        }
        if let Some(obj) = extra.as_object_mut() {
            obj.insert(
                "phases".into(),
                phases.iter().map(|p| p.json(s)).collect::<Vec<_>>().into(),
            );
        }
        levels.push(extra);
    }
    let result = json!({
        "scenario": "fanout",
        "target": target.json(),
        "params": {
            "subscribers": o.subscribers,
            "sets_per_phase": o.sets,
            "phases_in_flight": if o.in_flight > 0 { vec![1, o.in_flight] } else { vec![1] },
            "trigger_config": {"stream_name": "bench", "group_id": "g"},
            "client_threads": o.client_threads,
        },
        "machine": report::machine(),
        "levels": levels,
        "ok": ok,
    });
    report::emit(result, &[table]);
    Ok(ok)
}
