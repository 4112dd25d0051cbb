//! The `invoke` scenario: caller → engine → callee → back, with our Rust client on both ends.
//!
//! The callee registers `bench::echo` (returns its input, minus the engine-injected
//! `_caller_worker_id`, so both directions carry the same bytes) on its own client thread; the
//! caller runs on the main thread. After a warm-up it measures sequential latency, then
//! throughput and latency with N calls in flight. `--direct` runs the same pattern through the
//! `relay` instead of the engine, which gives the limit the engine is compared against.

use std::time::{Duration, Instant};

use iii_client::{Client, InvocationError, TriggerRequest};
use serde_json::{json, Value};

use crate::args::{parse_count, parse_levels, parse_size};
use crate::hop::{Hop, RelayOpts};
use crate::procs;
use crate::report::{self, Lanes, Stats, Table};
use crate::target::{self, Common, Threads};

const ABOUT: &str = "\
Call latency and throughput through the engine (or the relay baseline)

A callee worker registers bench::echo (returns its input); a caller worker calls it through the
engine. Warm-up calls first (not measured), then sequential calls (latency percentiles), then
a fixed number of calls at each concurrency level (calls/s and latency).

Above 16 KiB of payload the defaults of --warmup, --sequential and --calls shrink in
proportion (to 50 / 200 / 1000 at least), so big payloads still finish quickly.";

/// The `invoke` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "Output: one JSON line, then tables. Exit status 1 if any call failed.")]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Request payload size: 100, 10k, 10KiB, 1m, 1MiB
    #[arg(long, value_name = "size", value_parser = parse_size, default_value = "100")]
    pub payload: usize,
    /// Warm-up calls, not measured [default: 500]
    #[arg(long, value_name = "n", value_parser = parse_count)]
    pub warmup: Option<usize>,
    /// Sequential calls for latency [default: 2000]
    #[arg(long, value_name = "n", value_parser = parse_count)]
    pub sequential: Option<usize>,
    /// Calls per concurrency level [default: 10000]
    #[arg(long, value_name = "n", value_parser = parse_count)]
    pub calls: Option<usize>,
    /// Calls in flight per level
    #[arg(long = "concurrency", value_name = "list", value_parser = parse_levels)]
    #[arg(default_value = "1,16,64,256")]
    pub levels: ::std::vec::Vec<usize>,
    #[command(flatten)]
    pub relay: RelayOpts,
}

impl Opts {
    /// Warm-up, sequential and per-level call counts: as given, or scaled to the payload.
    fn counts(&self) -> (usize, usize, usize) {
        let p = self.payload;
        (
            self.warmup.unwrap_or_else(|| scaled(500, 50, p)),
            self.sequential.unwrap_or_else(|| scaled(2000, 200, p)),
            self.calls.unwrap_or_else(|| scaled(10_000, 1000, p)),
        )
    }
}

/// A default count for a payload size: `full` up to 16 KiB, then proportionally fewer (the
/// same bytes per phase), but never fewer than `floor`. Explicit options are not scaled.
fn scaled(full: usize, floor: usize, payload: usize) -> usize {
    const BUDGET_PAYLOAD: usize = 16 << 10;
    if payload <= BUDGET_PAYLOAD {
        return full;
    }
    (full * BUDGET_PAYLOAD / payload).clamp(floor, full)
}

/// The request payload: `{"blob":"xxx…"}`, `bytes` long once serialized (at least the braces).
fn payload(bytes: usize) -> Value {
    let overhead = r#"{"blob":""}"#.len();
    json!({ "blob": "x".repeat(bytes.saturating_sub(overhead)) })
}

/// One measured run: latencies, wall time, failures, CPU used by the hop and by the bench.
struct Run {
    in_flight: usize,
    calls: usize,
    elapsed: Duration,
    stats: Stats,
    errors: usize,
    first_error: Option<String>,
    hop_cpu: Option<Duration>,
    bench_cpu: Option<Duration>,
}

impl Run {
    fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> Value {
        let per_call = |d: Option<Duration>| {
            d.map(|d| report::r1(d.as_secs_f64() * 1e6 / self.calls.max(1) as f64))
        };
        json!({
            "in_flight": self.in_flight,
            "calls": self.calls,
            "elapsed_ms": report::ms(self.elapsed),
            "calls_per_s": self.calls_per_s().round(),
            "latency": self.stats.json(),
            "errors": self.errors,
            "first_error": self.first_error,
            "hop_cpu_us_per_call": per_call(self.hop_cpu),
            "bench_cpu_us_per_call": per_call(self.bench_cpu),
        })
    }

    fn row(&self, label: String) -> Vec<String> {
        let per_call = |d: Option<Duration>| {
            d.map(|d| format!("{:.1}", d.as_secs_f64() * 1e6 / self.calls.max(1) as f64))
                .unwrap_or_else(|| "-".into())
        };
        vec![
            label,
            self.calls.to_string(),
            report::thousands(self.calls_per_s()),
            self.stats.p50_us.to_string(),
            self.stats.p90_us.to_string(),
            self.stats.p99_us.to_string(),
            self.stats.max_us.to_string(),
            self.errors.to_string(),
            per_call(self.hop_cpu),
            per_call(self.bench_cpu),
        ]
    }
}

/// `total` calls with `in_flight` of them outstanding at any time, all from this thread.
async fn measure(
    caller: &Client,
    in_flight: usize,
    total: usize,
    data: &Value,
    hop_pid: Option<u32>,
) -> Run {
    let cpu = |pid: Option<u32>| pid.and_then(procs::cpu_time);
    let (hop0, me0) = (cpu(hop_pid), cpu(Some(std::process::id())));
    let started = Instant::now();
    let Lanes {
        mut samples,
        errors,
        first_error,
    } = report::lanes(in_flight, total, |_| async {
        let outcome = caller.trigger("bench::echo", data.clone()).await;
        outcome.map(drop).map_err(|e| e.to_string())
    })
    .await;
    let elapsed = started.elapsed();
    let (hop1, me1) = (cpu(hop_pid), cpu(Some(std::process::id())));
    Run {
        in_flight,
        calls: samples.len(),
        elapsed,
        stats: Stats::of(&mut samples),
        errors,
        first_error,
        hop_cpu: hop0.zip(hop1).map(|(a, b)| b.saturating_sub(a)),
        bench_cpu: me0.zip(me1).map(|(a, b)| b.saturating_sub(a)),
    }
}

/// Waits until `bench::echo` answers (its registration is asynchronous).
async fn wait_for_echo(caller: &Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last: Option<InvocationError> = None;
    while Instant::now() < deadline {
        let req = TriggerRequest {
            function_id: "bench::echo".into(),
            payload: json!({"probe": true}),
            timeout: None,
            metadata: None,
            action: None,
        };
        let probe = tokio::time::timeout(Duration::from_secs(2), caller.trigger_with(req)).await;
        match probe {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "bench::echo never became callable: {}",
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no answer".into())
    ))
}

/// Runs the scenario; `Ok(false)` when calls failed.
pub async fn run(o: Opts) -> Result<bool, String> {
    let (warmup, sequential_calls, calls) = o.counts();
    let hop = Hop::open(&o.common, &o.relay)?;
    let (caller_url, callee_url) = hop.urls();
    let threads = Threads::new(1);
    let callee = target::connect_on(
        &threads.pick(0),
        callee_url,
        target::bench_options("bench-callee"),
        |c| {
            c.register_function("bench::echo", |mut input: Value| async move {
                if let Some(o) = input.as_object_mut() {
                    o.remove("_caller_worker_id");
                }
                Ok(input)
            });
        },
    )
    .await
    .map_err(|e| format!("callee: {e}"))?;
    let data = payload(o.payload);
    let pid = hop.pid();
    // A fresh caller per measured phase: our client arms one timer per call (its local
    // deadline, 30 s) on the caller's actor, and actix polls every armed timer of an actor on
    // each wake-up, so a caller gets slower with every call made in the last 30 s. A fresh
    // caller keeps one phase's calls from slowing the next phase down.
    let fresh_caller = || async {
        let caller = Client::connect(&caller_url, target::bench_options("bench-caller"))
            .await
            .map_err(|e| format!("caller: {e}"))?;
        wait_for_echo(&caller).await?;
        Ok::<Client, String>(caller)
    };
    let caller = fresh_caller().await?;
    let warm = measure(&caller, 1, warmup, &data, pid).await;
    caller.shutdown().await;
    let caller = fresh_caller().await?;
    let sequential = measure(&caller, 1, sequential_calls, &data, pid).await;
    caller.shutdown().await;
    let mut levels = Vec::new();
    for &n in &o.levels {
        let caller = fresh_caller().await?;
        levels.push(measure(&caller, n, calls, &data, pid).await);
        caller.shutdown().await;
    }
    callee.shutdown().await;
    drop(threads);

    let errors: usize = std::iter::once(&warm)
        .chain(std::iter::once(&sequential))
        .chain(levels.iter())
        .map(|r| r.errors)
        .sum();
    let result = json!({
        "scenario": "invoke",
        "target": hop.json(),
        "params": {
            "payload_bytes": o.payload,
            "request_json_bytes": data.to_string().len(),
            "warmup_calls": warmup,
            "sequential_calls": sequential_calls,
            "calls_per_level": calls,
            "concurrency": o.levels,
            "client": "iii_client::Client (callee on its own thread; a fresh caller per phase on the main thread)",
        },
        "machine": report::machine(),
        "warmup": {"calls": warm.calls, "errors": warm.errors, "elapsed_ms": report::ms(warm.elapsed)},
        "sequential": sequential.json(),
        "levels": levels.iter().map(Run::json).collect::<Vec<_>>(),
        "errors": errors,
        "ok": errors == 0,
    });
    let mut table = Table::new(
        format!(
            "invoke via {} — payload {} B, {} warm-up calls; latency in µs; CPU µs per call",
            hop.label(),
            o.payload,
            warmup
        ),
        &[
            "in flight",
            "calls",
            "calls/s",
            "p50",
            "p90",
            "p99",
            "max",
            "errors",
            "hop cpu",
            "bench cpu",
        ],
    );
    table.row(sequential.row("1 (sequential)".into()));
    for r in &levels {
        table.row(r.row(r.in_flight.to_string()));
    }
    report::emit(result, &[table]);
    if errors > 0 {
        if let Hop::Engine(t) = &hop {
            let log = t.log();
            if !log.is_empty() {
                eprintln!("---- engine log ----\n{log}---- end of engine log ----");
            }
        }
    }
    Ok(errors == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_size_and_counts_scale() {
        assert_eq!(payload(100).to_string().len(), 100);
        assert_eq!(payload(10 << 10).to_string().len(), 10 << 10);
        assert_eq!(scaled(10_000, 1000, 100), 10_000);
        assert_eq!(scaled(10_000, 1000, 16 << 10), 10_000);
        assert_eq!(scaled(10_000, 1000, 64 << 10), 2500);
        assert_eq!(scaled(10_000, 1000, 1 << 20), 1000);
    }
}
