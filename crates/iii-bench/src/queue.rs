//! The `queue` scenario: enqueue rate and end-to-end job latency through the engine's
//! `iii-queue` module with its file-based (durable) store — or, mode `redis`, with the `redis`
//! adapter on a `redis-server` with an append-only file fsynced every second — against direct
//! calls of the same function at the same concurrency (the baseline, measured in the same run).
//!
//! Each mode and concurrency N gets a fresh engine whose queue `bench` delivers up to N
//! jobs at once. A worker (our Rust client, own thread) serves `bench::job`; a caller (a fresh
//! client per phase, main thread) keeps N requests in flight: direct calls of `bench::job`,
//! then `enqueue` actions for it. Each payload carries its send time; the handler records send
//! → run. Reported per phase: acks (or calls)/s, jobs done/s (first send → last run), the
//! caller's latency, send → run latency, jobs lost or run twice, the engine's CPU per job
//! (with Redis: the engine's and redis-server's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::PossibleValuesParser;
use iii_client::{Client, TriggerRequest};
use iii_protocol::protocol::Action;
use serde_json::{json, Value};

use crate::args::{parse_count, parse_levels, parse_size};
use crate::procs::{self, Spawned};
use crate::report::{self, Lanes, Stats, Table};
use crate::sink::{clock_us, Sink};
use crate::target::{self, connect_on, SpawnOnly, Threads};

const ABOUT: &str = "\
Enqueue rate and end-to-end job latency through iii-queue, durable, against direct calls

For each fsync mode and concurrency N, spawns an engine whose iii-queue keeps a file-based store
(an acknowledged enqueue is in the log; with `always` also fsynced) — or, mode `redis`, keeps
its jobs in a redis-server (appendfsync everysec) — and a queue `bench` with concurrency N. A worker serves bench::job; a caller with N requests in flight calls it directly
(the baseline), then enqueues the same number of jobs for it. The handler measures send → run.";

const MODES: [&str; 3] = ["every_second", "always", "redis"];
const FUNCTION: &str = "bench::job";
const QUEUE: &str = "bench";

/// The `queue` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "\
The engine is always spawned (the scenario needs its own queue settings), so --url is refused;
its store lives in a scratch directory under $TMPDIR (default /tmp): that disk is measured.
Output: one JSON line, then tables. Exit status 1 if a call or enqueue failed, or a job was
lost, run twice or left in the queue.")]
pub struct Opts {
    #[command(flatten)]
    pub spawn: SpawnOnly,
    /// fsync modes of the queue store, or `redis`, comma-separated (default: all three)
    #[arg(long, value_name = "list", value_delimiter = ',', default_values = MODES)]
    #[arg(hide_default_value = true, action = clap::ArgAction::Set)]
    #[arg(value_parser = PossibleValuesParser::new(MODES))]
    pub fsync: Vec<String>,
    /// Size of each job's data: 100, 1k, …
    #[arg(long, value_name = "size", value_parser = parse_size, default_value = "100")]
    pub payload: usize,
    /// Queue concurrency and caller requests in flight, per level
    #[arg(long = "concurrency", value_name = "list", value_parser = parse_levels)]
    #[arg(default_value = "1,64")]
    pub levels: ::std::vec::Vec<usize>,
    /// Jobs enqueued (and direct calls made) per level
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "10000")]
    pub jobs: usize,
    /// Warm-up calls and jobs per engine, not measured
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "200")]
    pub warmup: usize,
    /// The redis-server executable (mode `redis`)
    #[arg(long, value_name = "path", default_value = "redis-server")]
    pub redis_server: String,
}

/// `redis`: the Redis's URL (mode `redis`).
fn config(fsync: &str, concurrency: usize, redis: Option<&str>) -> String {
    let adapter = match redis {
        Some(url) => format!("{{name: redis, config: {{redis_url: '{url}'}}}}"),
        None => format!(
            "{{name: builtin, config: {{store_method: file_based, file_path: ./data/queue, fsync: {fsync}}}}}"
        ),
    };
    format!(
        "workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: 0}}\n  \
         - name: iii-queue\n    config:\n      adapter: {adapter}\n      queue_configs: \
         {{{QUEUE}: {{concurrency: {concurrency}, max_retries: 3}}}}\n"
    )
}

/// One measured phase: direct calls or enqueues.
struct Phase {
    jobs: usize,
    /// First send → last answer (ack or result).
    sent: Duration,
    /// First send → last job run (`None`: not every job ran).
    done: Option<Duration>,
    /// The caller's latency: send → ack (enqueue) or result (call).
    answer: Stats,
    /// Send → the handler runs.
    e2e: Stats,
    /// Jobs answered but not yet run when the last answer arrived.
    backlog: usize,
    errors: usize,
    first_error: Option<String>,
    lost: usize,
    duplicates: usize,
    /// Jobs still held by the queue after the last one ran (and up to 5 s more).
    left: usize,
    engine_cpu: Option<Duration>,
}

impl Phase {
    fn sent_per_s(&self) -> f64 {
        self.jobs as f64 / self.sent.as_secs_f64().max(1e-9)
    }
    fn done_per_s(&self) -> f64 {
        self.done
            .map_or(0.0, |d| self.jobs as f64 / d.as_secs_f64().max(1e-9))
    }
    fn cpu_us(&self) -> Option<f64> {
        self.engine_cpu
            .map(|d| d.as_secs_f64() * 1e6 / self.jobs.max(1) as f64)
    }
    fn clean(&self) -> bool {
        self.errors == 0 && self.lost == 0 && self.duplicates == 0 && self.left == 0
    }

    fn json(&self) -> Value {
        json!({
            "jobs": self.jobs,
            "sent_ms": report::ms(self.sent),
            "done_ms": self.done.map(report::ms),
            "answers_per_s": self.sent_per_s().round(),
            "completed_per_s": self.done_per_s().round(),
            "answer_latency": self.answer.json(),
            "send_to_run_latency": self.e2e.json(),
            "backlog_at_last_answer": self.backlog,
            "errors": self.errors,
            "first_error": self.first_error,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "left_in_queue": self.left,
            "engine_cpu_us_per_job": self.cpu_us().map(report::r1),
        })
    }
}

/// What one phase sends: direct calls, or enqueues into `bench`.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Direct,
    Queue,
}

/// `total` calls or enqueues of `bench::job` with `in_flight` outstanding, then waits (up to
/// 60 s) until the handler has run every job.
/// `(engine, redis)`: the engine, and redis-server's pid when it keeps the jobs.
async fn phase(
    (engine, redis): (&Spawned, Option<u32>),
    sink: &Sink,
    id: u64,
    via: Via,
    in_flight: usize,
    total: usize,
    blob: &str,
) -> Result<Phase, String> {
    let caller = Client::connect(&engine.url, target::bench_options("bench-queue-caller"))
        .await
        .map_err(|e| format!("caller: {e}"))?;
    let all_ran = sink.arm(id, total);
    let cpu_now = || {
        let e = procs::cpu_time(engine.pid());
        match redis {
            Some(pid) => e.zip(procs::cpu_time(pid)).map(|(a, b)| a + b),
            None => e,
        }
    };
    let cpu0 = cpu_now();
    let started = Instant::now();
    let Lanes {
        mut samples,
        errors,
        first_error,
    } = report::lanes(in_flight, total, |n| {
        let req = TriggerRequest {
            function_id: FUNCTION.into(),
            payload: json!({"phase": id, "n": n, "ts": clock_us(), "blob": blob}),
            timeout: None,
            metadata: None,
            action: (via == Via::Queue).then(|| Action::Enqueue {
                queue: QUEUE.into(),
            }),
        };
        let caller = &caller;
        async move {
            let answer = caller.trigger_with(req).await.map_err(|e| e.to_string())?;
            match (via, answer) {
                (Via::Queue, Some(a)) if a["messageReceiptId"].is_string() => Ok(()),
                (Via::Queue, other) => Err(format!("enqueue answered {other:?}")),
                (Via::Direct, _) => Ok(()),
            }
        }
    })
    .await;
    let sent = started.elapsed();
    let backlog = (total - errors).saturating_sub(sink.ran());
    let _ = tokio::time::timeout(Duration::from_secs(60), all_ran).await;
    let cpu = cpu0.zip(cpu_now()).map(|(a, b)| b.saturating_sub(a));
    let mut seen = sink.take();
    let duplicates: u32 = seen.hits.iter().map(|h| h.saturating_sub(1)).sum();
    let left = if via == Via::Queue {
        drained(&caller).await
    } else {
        0
    };
    caller.shutdown().await;
    Ok(Phase {
        jobs: total,
        sent,
        done: seen
            .last
            .filter(|_| seen.distinct == total)
            .map(|t| t - started),
        answer: Stats::of(&mut samples),
        e2e: Stats::of(&mut seen.samples),
        backlog,
        errors,
        first_error,
        lost: total - seen.distinct,
        duplicates: duplicates as usize,
        left,
        engine_cpu: cpu,
    })
}

/// Jobs the queue `bench` still holds: polled until none (acks follow the last run by a
/// moment), for up to 5 s.
async fn drained(caller: &Client) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held = match caller.trigger("iii::queue::list", json!({})).await {
            Ok(Value::Array(rows)) => rows
                .iter()
                .find(|r| r["queue"] == QUEUE)
                .and_then(|r| r["jobs"].as_u64())
                .unwrap_or(0) as usize,
            _ => usize::MAX,
        };
        if held == 0 || Instant::now() > deadline {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Queue ÷ direct: acks/s and jobs done/s over calls/s, ack over call p50, send → run p50, p99.
fn ratios(q: &Phase, d: &Phase) -> [f64; 5] {
    let div = |a: f64, b: f64| a / b.max(1e-9);
    [
        div(q.sent_per_s(), d.sent_per_s()),
        div(q.done_per_s(), d.sent_per_s()),
        div(q.answer.p50_us as f64, d.answer.p50_us as f64),
        div(q.e2e.p50_us as f64, d.e2e.p50_us as f64),
        div(q.e2e.p99_us as f64, d.e2e.p99_us as f64),
    ]
}

/// One level, on a fresh engine: direct calls, then enqueues, at `in_flight`.
async fn level(
    o: &Opts,
    fsync: &str,
    in_flight: usize,
    blob: &str,
) -> Result<(Phase, Phase), String> {
    let redis = match fsync {
        "redis" => Some(procs::RedisServer::start_with(&o.redis_server, true)?),
        _ => None,
    };
    let url = redis.as_ref().map(|r| r.url());
    let engine = Spawned::engine_with(&config(fsync, in_flight, url.as_deref()), "warn")?;
    let rpid = redis.as_ref().map(|r| r.pid());
    let sink = Arc::new(Sink::default());
    let threads = Threads::new(1);
    let handler_sink = sink.clone();
    let worker = connect_on(
        &threads.pick(0),
        engine.url.clone(),
        target::bench_options("bench-queue-worker"),
        move |c| {
            c.register_function(FUNCTION, move |input: Value| {
                handler_sink.record(&input);
                async { Ok(Value::Null) }
            });
        },
    )
    .await
    .map_err(|e| format!("worker: {e}"))?;
    target::wait_callable(&worker, FUNCTION).await?;
    let t = (&engine, rpid);
    phase(t, &sink, 1, Via::Direct, in_flight, o.warmup, blob).await?;
    phase(t, &sink, 2, Via::Queue, in_flight, o.warmup, blob).await?;
    let direct = phase(t, &sink, 3, Via::Direct, in_flight, o.jobs, blob).await?;
    let queue = phase(t, &sink, 4, Via::Queue, in_flight, o.jobs, blob).await?;
    if !(direct.clean() && queue.clean()) {
        eprintln!(
            "---- engine log ({fsync}, {in_flight}) ----\n{}---- end ----",
            engine.log()
        );
    }
    worker.shutdown().await;
    drop(threads);
    Ok((direct, queue))
}

/// Runs the scenario; `Ok(false)` when a call or job went wrong.
pub async fn run(o: Opts) -> Result<bool, String> {
    o.spawn.check("queue", "it needs its own queue settings")?;
    let overhead = json!({"phase": 4, "n": o.jobs, "ts": u32::MAX, "blob": ""})
        .to_string()
        .len();
    let blob = "x".repeat(o.payload.saturating_sub(overhead));
    let mut table = Table::new(
        format!(
            "queue — bench::job called directly, or enqueued on iii-queue's file store (or on \
             Redis, AOF everysec), data ~{} B; in flight = queue concurrency = caller requests; \
             latency in µs; engine CPU µs per job (redis: engine + redis-server)",
            overhead + blob.len()
        ),
        &[
            "fsync",
            "in flight",
            "via",
            "jobs",
            "answers/s",
            "done/s",
            "answer p50",
            "p99",
            "send→run p50",
            "p99",
            "backlog",
            "lost",
            "dup",
            "engine cpu",
        ],
    );
    table.note(
        "answers/s: enqueue acks/s or direct calls/s; done/s: jobs run per second, first send → \
         last run; backlog: jobs answered but not yet run at the last answer",
    );
    let mut ratio_table = Table::new(
        "queue ÷ direct, same engine and run",
        &[
            "fsync",
            "in flight",
            "acks/s ÷ calls/s",
            "done/s ÷ calls/s",
            "ack p50 ÷ call p50",
            "send→run p50",
            "send→run p99",
        ],
    );
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let (mut modes, mut ok) = (Vec::new(), true);
    for fsync in &o.fsync {
        let mut json_levels = Vec::new();
        for &n in &o.levels {
            let (direct, queue) = level(&o, fsync, n, &blob).await?;
            for (via, p) in [("direct", &direct), ("queue", &queue)] {
                ok &= p.clean();
                table.row(vec![
                    fsync.clone(),
                    n.to_string(),
                    via.into(),
                    p.jobs.to_string(),
                    report::thousands(p.sent_per_s()),
                    report::thousands(p.done_per_s()),
                    p.answer.p50_us.to_string(),
                    p.answer.p99_us.to_string(),
                    p.e2e.p50_us.to_string(),
                    p.e2e.p99_us.to_string(),
                    p.backlog.to_string(),
                    p.lost.to_string(),
                    p.duplicates.to_string(),
                    p.cpu_us().map_or("-".into(), |c| format!("{c:.1}")),
                ]);
            }
            let r = ratios(&queue, &direct);
            let mut row = vec![fsync.clone(), n.to_string()];
            row.extend(r.iter().map(|x| format!("{x:.2}")));
            ratio_table.row(row);
            json_levels.push(json!({
                "in_flight": n,
                "direct": direct.json(),
                "queue": queue.json(),
                "ratios": {
                    "acks_per_s_over_calls_per_s": r2(r[0]),
                    "completed_per_s_over_calls_per_s": r2(r[1]),
                    "ack_p50_over_call_p50": r2(r[2]),
                    "send_to_run_p50": r2(r[3]),
                    "send_to_run_p99": r2(r[4]),
                },
            }));
        }
        modes.push(json!({"fsync": fsync, "levels": json_levels}));
    }
    let result = json!({
        "scenario": "queue",
        "target": {"kind": "engine", "spawned": true, "fresh_engine_per_level": true},
        "params": {
            "fsync": o.fsync,
            "data_json_bytes": overhead + blob.len(),
            "concurrency": o.levels,
            "jobs_per_level": o.jobs,
            "warmup": o.warmup,
            "queue": {"name": QUEUE, "concurrency": "= in flight", "max_retries": 3},
            "client": "iii_client::Client (worker on its own thread; a fresh caller per phase on the main thread)",
        },
        "machine": report::machine(),
        "modes": modes,
        "ok": ok,
    });
    report::emit(result, &[table, ratio_table]);
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_sets_the_queue_concurrency() {
        assert!(config("always", 64, None).contains("bench: {concurrency: 64, max_retries: 3}"));
        assert!(config("redis", 1, Some("redis://h:1"))
            .contains("{name: redis, config: {redis_url: 'redis://h:1'}}"));
    }
}
