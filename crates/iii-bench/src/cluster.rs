//! The `cluster` scenario: two engines sharing one Redis (`iii-cluster` for calls across
//! engines, `iii-stream` on Redis), each cross-engine path against its same-engine baseline
//! measured in the same run.
//!
//! Starts `redis-server` (free port, scratch directory, no persistence) and engines A and B,
//! each with a trusted listener, `iii-cluster` (heartbeat 200 ms) and `iii-stream` on the
//! Redis. Then, with the phases of `cluster_load.rs` (calls) and `cluster_stream.rs` (sets):
//!
//! 1. **calls**: a callee on B serves `bench::echo`; a fresh caller on B (same engine), then on
//!    A (forwarded through Redis pub/sub to B and back), keeps N calls in flight per level.
//! 2. **stream**: a worker on B binds a function to the `stream` trigger of stream `bench`; a
//!    writer on B, then on A, does `stream::set` of fresh items whose data carries the send
//!    time; the handler records write → delivery. Every write goes through Redis either way
//!    (the store is Redis; every engine learns of a change from Redis pub/sub).
//! 3. **load, 1 → 2 engines**: K callers with M calls in flight each call an echo on their own
//!    engine: all K on A (one callee), all K on A with half of them calling `bench::echo2` of
//!    a second callee (two callee connections, one engine), then half on A and half on B (a
//!    callee on each). Reported: total calls/s and the cores each process, each engine's
//!    busiest thread and the whole machine kept busy.

use serde_json::{json, Value};

use crate::args::{parse_count, parse_levels, parse_size};
use crate::cluster_load::{self as load, Run, WATCHED};
use crate::cluster_stream::{self as stream, Fanout, Sink};
use crate::procs::{RedisServer, Spawned};
use crate::report::{self, Table};
use crate::target::{self, SpawnOnly, Threads};

const ABOUT: &str = "\
Two engines sharing a Redis: cross-engine calls and stream fan-out vs same-engine, 1 → 2 engines

Starts redis-server and engines A and B (iii-cluster + iii-stream on Redis). Calls: a callee on
B serves bench::echo; a caller on B (same engine), then on A (cross-engine), at each
concurrency. Stream: a stream-trigger subscriber on B; a writer on B, then on A, does
stream::set; the subscriber measures write → delivery. Load: K callers calling a local
bench::echo with M in flight each, all on one engine, then split over both engines.";

/// The `cluster` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "\
The engines are always spawned (the scenario needs its own cluster settings), so --url is
refused. redis-server must be installed (Debian: apt-get install redis-server).
Output: one JSON line, then tables. Exit status 1 if a call or set failed, or an event was lost
or delivered twice.")]
pub struct Opts {
    #[command(flatten)]
    pub spawn: SpawnOnly,
    /// Calls (and sets) in flight per level
    #[arg(long = "concurrency", value_name = "list", value_parser = parse_levels)]
    #[arg(default_value = "1,64")]
    pub levels: ::std::vec::Vec<usize>,
    /// Calls (and sets) per level and side
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "20000")]
    pub calls: usize,
    /// Warm-up calls (and sets) per caller, not measured
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "200")]
    pub warmup: usize,
    /// Size of each call's data and each item's data: 100, 1k, …
    #[arg(long, value_name = "size", value_parser = parse_size, default_value = "100")]
    pub payload: usize,
    /// Callers of the 1 → 2 engines load
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "4")]
    pub load_callers: usize,
    /// Calls in flight per load caller
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "64")]
    pub load_in_flight: usize,
    /// Calls per load caller
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "50000")]
    pub load_calls: usize,
    /// The redis-server executable
    #[arg(long, value_name = "path", default_value = "redis-server")]
    pub redis_server: String,
}

fn config(redis_url: &str) -> String {
    format!(
        "workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: 0}}\n  \
         - name: iii-cluster\n    config: {{redis_url: '{redis_url}', heartbeat_ms: 200, \
         expiry_ms: 2000}}\n  - name: iii-stream\n    config: {{host: 127.0.0.1, port: 0, \
         adapter: {{name: redis, config: {{redis_url: '{redis_url}'}}}}}}\n"
    )
}

/// Cross ÷ same: per-second rate, p50, p99.
fn ratios(cross: (f64, u64, u64), same: (f64, u64, u64)) -> [f64; 3] {
    let div = |a: f64, b: f64| a / b.max(1e-9);
    [
        div(cross.0, same.0),
        div(cross.1 as f64, same.1 as f64),
        div(cross.2 as f64, same.2 as f64),
    ]
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn opt1(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}"))
}

fn opt2(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2}"))
}

/// CPU µs per operation of each watched process, and the cores the machine was busy, as
/// table cells.
fn cpu_cells(r: &Run) -> Vec<String> {
    let mut cells: Vec<String> = (0..WATCHED.len())
        .map(|i| opt1(r.cpu.us_per(i, r.ops)))
        .collect();
    cells.push(opt2(r.cpu.machine_cores()));
    cells
}

/// Everything one run measured.
struct Results {
    visible_on_a: std::time::Duration,
    calls: Vec<(Run, Run)>,
    stream: Vec<(Fanout, Fanout)>,
    one: (Run, Vec<usize>),
    /// One engine, half the callers calling a second callee (`bench::echo2`).
    one_split: (Run, Vec<usize>),
    two: (Run, Vec<usize>),
}

async fn measure(
    o: &Opts,
    a: &Spawned,
    b: &Spawned,
    redis: &RedisServer,
) -> Result<Results, String> {
    let pids = [a.pid(), b.pid(), redis.pid()];
    let data = load::payload(o.payload);
    let workers = Threads::new(2);
    // 1. Calls: bench::echo only on B.
    let callee_b = load::callee(&workers.pick(0), &b.url, load::ECHO).await?;
    let probe = iii_client::Client::connect(&a.url, target::bench_options("bench-cluster-probe"))
        .await
        .map_err(|e| format!("probe: {e}"))?;
    let visible_on_a = load::wait_known(&probe, load::ECHO).await?;
    probe.shutdown().await;
    let mut calls = Vec::new();
    for &n in &o.levels {
        let same = load::calls(&b.url, pids, n, o.calls, o.warmup, &data).await?;
        let cross = load::calls(&a.url, pids, n, o.calls, o.warmup, &data).await?;
        calls.push((same, cross));
    }
    callee_b.shutdown().await;

    // 2. Stream fan-out to a subscriber on B.
    let sink = std::sync::Arc::new(Sink::default());
    let handler_sink = sink.clone();
    let subscriber = target::connect_on(
        &workers.pick(0),
        b.url.clone(),
        target::bench_options("bench-cluster-subscriber"),
        move |c| {
            c.register_function("bench::on_change", move |event: Value| {
                handler_sink.record(&event["event"]["data"]);
                async { Ok(Value::Null) }
            });
            c.register_trigger(
                "stream",
                "bench::on_change",
                json!({"stream_name": stream::STREAM, "group_id": "g"}),
            );
        },
    )
    .await
    .map_err(|e| format!("subscriber: {e}"))?;
    let overhead = json!({"phase": 99, "n": o.calls, "ts": u32::MAX, "blob": ""})
        .to_string()
        .len();
    let blob = "x".repeat(o.payload.saturating_sub(overhead));
    let mut fanouts = Vec::new();
    let mut phase = 0;
    for &n in &o.levels {
        let mut side = |url: String| {
            phase += 2;
            let (sink, blob, warm) = (sink.clone(), blob.clone(), o.warmup);
            async move {
                stream::sets(&url, pids, &sink, phase - 1, n, warm, &blob).await?;
                stream::sets(&url, pids, &sink, phase, n, o.calls, &blob).await
            }
        };
        let same = side(b.url.clone()).await?;
        let cross = side(a.url.clone()).await?;
        fanouts.push((same, cross));
    }
    subscriber.shutdown().await;

    // 3. The same load on one engine (one callee; then two callees under two names, to tell
    // the engine from its one callee connection), then on two engines.
    let callees = [
        load::callee(&workers.pick(1), &a.url, load::ECHO).await?,
        load::callee(&workers.pick(0), &a.url, load::ECHO2).await?,
        load::callee(&workers.pick(0), &b.url, load::ECHO).await?,
    ];
    let callers = Threads::new(2);
    let k = o.load_callers.max(1);
    let (m, per, warm) = (o.load_in_flight.max(1), o.load_calls, o.warmup);
    let layout = |second: (&String, &'static str)| -> Vec<(String, &'static str)> {
        (0..k)
            .map(|i| {
                if i % 2 == 0 {
                    (&a.url, load::ECHO)
                } else {
                    second
                }
            })
            .map(|(u, f)| (u.clone(), f))
            .collect()
    };
    let mut runs = Vec::new();
    for second in [
        (&a.url, load::ECHO),
        (&a.url, load::ECHO2),
        (&b.url, load::ECHO),
    ] {
        let targets = layout(second);
        runs.push(load::load(&callers, &targets, pids, m, per, warm, &data).await?);
    }
    let [one, one_split, two]: [_; 3] = runs.try_into().map_err(|_| "three layouts")?;
    for c in &callees {
        c.shutdown().await;
    }
    drop(callers);
    drop(workers);
    Ok(Results {
        visible_on_a,
        calls,
        stream: fanouts,
        one,
        one_split,
        two,
    })
}

/// Runs the scenario; `Ok(false)` when a call or set failed or an event was lost or doubled.
pub async fn run(o: Opts) -> Result<bool, String> {
    o.spawn.check(
        "cluster",
        "it starts redis-server and two engines sharing it",
    )?;
    let redis = RedisServer::start(&o.redis_server)?;
    let cfg = config(&redis.url());
    let a = Spawned::engine_with(&cfg, "warn")?;
    let b = Spawned::engine_with(&cfg, "warn")?;
    let r = match measure(&o, &a, &b, &redis).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "---- engine A log ----\n{}---- engine B log ----\n{}---- end ----",
                a.log(),
                b.log()
            );
            return Err(e);
        }
    };
    let data_bytes = load::payload(o.payload).to_string().len();
    let cpu_cols = ["cpu A", "cpu B", "cpu redis", "cpu bench", "busy"];
    let mut header = vec![
        "in flight",
        "caller on",
        "calls",
        "calls/s",
        "p50",
        "p90",
        "p99",
    ];
    header.extend(["max", "errors"]);
    header.extend(cpu_cols);
    let mut calls_t = Table::new(
        format!(
            "cluster calls — bench::echo served by a worker on engine B, data {data_bytes} B; \
             latency in µs; CPU µs per call of engine A, engine B, redis-server, the bench; busy: \
             cores the machine was busy"
        ),
        &header,
    );
    let mut header = vec![
        "in flight",
        "writer on",
        "sets",
        "sets/s",
        "set p50",
        "set p99",
    ];
    header.extend(["delivered/s", "write→delivery p50", "p99", "lost", "dup"]);
    header.extend(cpu_cols);
    let mut stream_t = Table::new(
        "cluster stream — stream::set of fresh items, iii-stream on Redis, subscriber (a stream \
         trigger) on engine B; latency in µs; CPU µs per set",
        &header,
    );
    let mut ratio_t = Table::new(
        "cross-engine ÷ same-engine, same run",
        &["what", "in flight", "rate", "p50", "p99"],
    );
    let mut ok = true;
    let (mut calls_json, mut stream_json) = (Vec::new(), Vec::new());
    for (same, cross) in &r.calls {
        for (side, run) in [("B (same)", same), ("A (cross)", cross)] {
            ok &= run.errors == 0;
            let mut row = vec![run.in_flight.to_string(), side.into(), run.ops.to_string()];
            row.push(report::thousands(run.per_s()));
            let l = &run.latency;
            row.extend([l.p50_us, l.p90_us, l.p99_us, l.max_us].map(|v| v.to_string()));
            row.push(run.errors.to_string());
            row.extend(cpu_cells(run));
            calls_t.row(row);
        }
        let k = |r: &Run| (r.per_s(), r.latency.p50_us, r.latency.p99_us);
        let q = ratios(k(cross), k(same));
        let mut row = vec![
            "calls/s, call latency".to_string(),
            same.in_flight.to_string(),
        ];
        row.extend(q.iter().map(|x| format!("{x:.2}")));
        ratio_t.row(row);
        calls_json.push(json!({"in_flight": same.in_flight, "same": same.json(),
            "cross": cross.json(), "cross_over_same": {"calls_per_s": r2(q[0]),
            "p50": r2(q[1]), "p99": r2(q[2])}}));
    }
    for (same, cross) in &r.stream {
        for (side, f) in [("B (same)", same), ("A (cross)", cross)] {
            ok &= f.clean();
            let s = &f.sets;
            let mut row = vec![s.in_flight.to_string(), side.into(), s.ops.to_string()];
            row.push(report::thousands(s.per_s()));
            row.extend([s.latency.p50_us, s.latency.p99_us].map(|v| v.to_string()));
            row.push(report::thousands(f.delivered_per_s()));
            row.extend([f.delivery.p50_us, f.delivery.p99_us].map(|v| v.to_string()));
            row.extend([f.lost, f.duplicates].map(|v| v.to_string()));
            row.extend(cpu_cells(s));
            stream_t.row(row);
        }
        let k = |f: &Fanout| (f.sets.per_s(), f.delivery.p50_us, f.delivery.p99_us);
        let q = ratios(k(cross), k(same));
        let mut row = vec![
            "sets/s, write→delivery".to_string(),
            same.sets.in_flight.to_string(),
        ];
        row.extend(q.iter().map(|x| format!("{x:.2}")));
        ratio_t.row(row);
        stream_json.push(
            json!({"in_flight": same.sets.in_flight, "same": same.json(),
            "cross": cross.json(), "cross_over_same": {"sets_per_s": r2(q[0]),
            "delivery_p50": r2(q[1]), "delivery_p99": r2(q[2])}}),
        );
    }
    let mut header = vec![
        "layout",
        "in flight",
        "calls",
        "calls/s",
        "p50",
        "p99",
        "errors",
    ];
    header.extend([
        "cores A",
        "cores B",
        "cores redis",
        "cores bench",
        "others",
        "busy",
    ]);
    header.extend(["top thread A", "top thread B"]);
    let mut load_t = Table::new(
        format!(
            "cluster load, 1 → 2 engines — {} callers × {} in flight calling an echo on their own \
             engine; latency in µs; cores = CPU seconds ÷ wall seconds ({} cores here)",
            o.load_callers.max(1),
            o.load_in_flight.max(1),
            report::machine()["cores"]
        ),
        &header,
    );
    let layouts = [
        ("1 engine", &r.one),
        ("1 engine, 2 callees", &r.one_split),
        ("2 engines", &r.two),
    ];
    for (label, (run, _)) in layouts {
        ok &= run.errors == 0;
        let mut row = vec![label.to_string(), run.in_flight.to_string()];
        row.push(run.ops.to_string());
        row.push(report::thousands(run.per_s()));
        row.extend([run.latency.p50_us, run.latency.p99_us].map(|v| v.to_string()));
        row.push(run.errors.to_string());
        row.extend((0..WATCHED.len()).map(|i| opt2(run.cpu.cores(i))));
        row.push(opt2(run.cpu.other_cores()));
        row.push(opt2(run.cpu.machine_cores()));
        row.extend([0, 1].map(|i| opt2(run.cpu.busiest_cores(i))));
        load_t.row(row);
    }
    let per_s = |run: &(Run, Vec<usize>)| run.0.per_s().max(1e-9);
    let (scale, split) = (
        per_s(&r.two) / per_s(&r.one),
        per_s(&r.one_split) / per_s(&r.one),
    );
    load_t.note(
        "1 engine, 2 callees: half the callers call bench::echo2, served by a second worker on A; \
         others: busy cores not used by the watched processes; busy: the whole machine; top \
         thread: the cores an engine's busiest thread used (1.00: it never waited)",
    );
    load_t.note(format!(
        "calls/s ÷ 1 engine: 2 engines {scale:.2}, 1 engine with 2 callees {split:.2}; \
         bench::echo visible on A {} ms after its worker registered on B",
        r.visible_on_a.as_millis()
    ));
    let result = json!({
        "scenario": "cluster",
        "target": {"kind": "engines", "spawned": true, "engines": 2, "a": a.url, "b": b.url,
                   "redis": redis.url()},
        "params": {
            "concurrency": o.levels,
            "calls_per_level": o.calls,
            "warmup": o.warmup,
            "data_json_bytes": data_bytes,
            "load": {"callers": o.load_callers.max(1), "in_flight_each": o.load_in_flight.max(1),
                     "calls_each": o.load_calls},
            "cluster": {"heartbeat_ms": 200, "expiry_ms": 2000},
            "client": "iii_client::Client (callee and subscriber on their own thread; calls and \
                       sets from a fresh client per phase on the main thread; load callers on 2 threads)",
        },
        "machine": report::machine(),
        "visible_on_a_ms": report::ms(r.visible_on_a),
        "calls": calls_json,
        "stream": stream_json,
        "load": {
            "one_engine": r.one.0.json(),
            "one_engine_two_callees": r.one_split.0.json(),
            "two_engines": r.two.0.json(),
            "two_engines_calls_per_caller": r.two.1,
            "two_over_one_calls_per_s": r2(scale),
            "one_with_two_callees_over_one_calls_per_s": r2(split),
        },
        "ok": ok,
    });
    report::emit(result, &[calls_t, stream_t, ratio_t, load_t]);
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_both_shared_modules() {
        let c = config("redis://127.0.0.1:1");
        assert!(c.contains("iii-cluster"), "{c}");
        assert!(c.contains("heartbeat_ms: 200, expiry_ms: 2000"), "{c}");
        assert!(c.contains("adapter: {name: redis, config: {redis_url: 'redis://127.0.0.1:1'}}"));
        assert_eq!(ratios((50.0, 200, 900), (100.0, 100, 300)), [0.5, 2.0, 3.0]);
    }
}
