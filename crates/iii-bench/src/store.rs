//! The `store` scenario: `stream::set` throughput and latency through the engine into its
//! file-based store, for each fsync mode, then the compaction check (`compaction.rs`).
//!
//! Each fsync mode gets a fresh engine with the scenario's own config (file-based kv adapter
//! with that `fsync`). A writer (our Rust client, a fresh one per phase) does warm-up sets,
//! then sequential sets, then a fixed number of sets at each concurrency; every key is new.
//! Reported per phase: sets/s, latency, the engine's CPU per set. Target: fsync `always` at
//! 64 in flight ≥ 5,000 sets/s.

use std::time::{Duration, Instant};

use clap::builder::PossibleValuesParser;
use iii_client::Client;
use serde_json::{json, Value};

use crate::args::{parse_count, parse_levels, parse_on_off, parse_secs, parse_size};
use crate::compaction;
use crate::procs::{self, Spawned};
use crate::report::{self, Lanes, Stats, Table};
use crate::target::{self, SpawnOnly};

const ABOUT: &str = "\
stream::set throughput and latency per fsync mode, and a compaction check

For each fsync mode, spawns an engine whose stream module keeps a file-based store with that
mode, then measures stream::set (new keys, the payload in `data`): sequential sets, then a
fixed number of sets at each concurrency. Then, unless --compaction off, a writer keeps
writing new 1 KiB items into a store that compacts past 1 MiB of log while a sequential reader
does stream::get; the reader's latency and the number of compactions are reported.";

const TARGET_SETS_PER_S: f64 = 5000.0;

/// The fsync modes of the store.
const MODES: [&str; 2] = ["every_second", "always"];

/// The `store` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "\
The engine is always spawned (the scenario needs its own store settings), so --url is refused;
its store lives in a scratch directory under $TMPDIR (default /tmp): that disk is measured.
Output: one JSON line, then tables. Exit status 1 if a set or get failed or fsync always at 64
in flight stayed under 5,000 sets/s.")]
pub struct Opts {
    #[command(flatten)]
    pub spawn: SpawnOnly,
    /// fsync modes, comma-separated (default: every_second,always)
    #[arg(long, value_name = "list", value_delimiter = ',', default_values = MODES)]
    #[arg(hide_default_value = true, action = clap::ArgAction::Set)]
    #[arg(value_parser = PossibleValuesParser::new(MODES))]
    pub fsync: Vec<String>,
    /// Size of each item's `data`: 100, 1k, 1MiB
    #[arg(long, value_name = "size", value_parser = parse_size, default_value = "100")]
    pub payload: usize,
    /// Warm-up sets, not measured
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "200")]
    pub warmup: usize,
    /// Sequential sets for latency
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "2000")]
    pub sequential: usize,
    /// Sets in flight per level
    #[arg(long = "concurrency", value_name = "list", value_parser = parse_levels)]
    #[arg(default_value = "1,64")]
    pub levels: ::std::vec::Vec<usize>,
    /// Sets per concurrency level [default: 10000 with every_second, 3000 with always]
    #[arg(long, value_name = "n", value_parser = parse_count)]
    pub sets: Option<usize>,
    /// Run the compaction check
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    #[arg(action = clap::ArgAction::Set, default_value = "on")]
    pub compaction: bool,
    /// How long the compaction check runs, per fsync mode, in seconds
    #[arg(long = "compaction-seconds", value_name = "n", value_parser = parse_secs)]
    #[arg(default_value = "5")]
    pub compaction_time: Duration,
}

/// The engine config: the default trusted listener and a file-based store.
pub fn config(fsync: &str, compact_threshold: Option<u64>) -> String {
    let compact = compact_threshold
        .map(|b| format!(", compact_threshold_bytes: {b}"))
        .unwrap_or_default();
    format!(
        "workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: 0}}\n  \
         - name: iii-stream\n    config:\n      host: 127.0.0.1\n      port: 0\n      \
         adapter: {{name: kv, config: {{store_method: file_based, file_path: ./data/stream_store, \
         fsync: {fsync}{compact}}}}}\n"
    )
}

/// One measured phase (also used by the `state` scenario).
pub(crate) struct Phase {
    pub in_flight: usize,
    pub sets: usize,
    pub elapsed: Duration,
    pub stats: Stats,
    pub errors: usize,
    pub first_error: Option<String>,
    pub engine_cpu: Option<Duration>,
}

impl Phase {
    pub(crate) fn per_s(&self) -> f64 {
        self.sets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn cpu_us(&self) -> Option<f64> {
        self.engine_cpu
            .map(|d| d.as_secs_f64() * 1e6 / self.sets.max(1) as f64)
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "in_flight": self.in_flight,
            "sets": self.sets,
            "elapsed_ms": report::ms(self.elapsed),
            "sets_per_s": self.per_s().round(),
            "latency": self.stats.json(),
            "errors": self.errors,
            "first_error": self.first_error,
            "engine_cpu_us_per_set": self.cpu_us().map(report::r1),
        })
    }
}

/// `total` sets of new keys `{prefix}-{n}` with `in_flight` outstanding, from this thread.
async fn sets(
    writer: &Client,
    prefix: &str,
    in_flight: usize,
    total: usize,
    data: &Value,
    pid: u32,
) -> Phase {
    let call = |n: usize| {
        let item = json!({"stream_name": "bench", "group_id": prefix,
                          "item_id": format!("{prefix}-{n}"), "data": data});
        ("stream::set", item)
    };
    calls(writer, in_flight, total, call, pid).await
}

/// `total` calls `call(n)` (n = 0, 1, …) with `in_flight` outstanding, from this thread.
pub(crate) async fn calls(
    writer: &Client,
    in_flight: usize,
    total: usize,
    call: impl Fn(usize) -> (&'static str, Value),
    pid: u32,
) -> Phase {
    let cpu0 = procs::cpu_time(pid);
    let started = Instant::now();
    let Lanes {
        mut samples,
        errors,
        first_error,
    } = report::lanes(in_flight, total, |n| {
        let (function_id, input) = call(n);
        async move {
            let outcome = writer.trigger(function_id, input).await;
            outcome.map(drop).map_err(|e| e.to_string())
        }
    })
    .await;
    let elapsed = started.elapsed();
    let engine_cpu = cpu0
        .zip(procs::cpu_time(pid))
        .map(|(a, b)| b.saturating_sub(a));
    Phase {
        in_flight,
        sets: samples.len(),
        elapsed,
        stats: Stats::of(&mut samples),
        errors,
        first_error,
        engine_cpu,
    }
}

/// All phases of one fsync mode (warm-up first, not kept).
async fn throughput(o: &Opts, fsync: &str, data: &Value) -> Result<Vec<Phase>, String> {
    let engine = Spawned::engine_with(&config(fsync, None), "warn")?;
    let count = o
        .sets
        .unwrap_or(if fsync == "always" { 3000 } else { 10_000 });
    let mut plan = vec![(1, o.warmup), (1, o.sequential)];
    plan.extend(o.levels.iter().map(|&n| (n, count)));
    let mut phases = Vec::new();
    for (i, (in_flight, total)) in plan.into_iter().enumerate() {
        // A fresh writer per phase, for the reason `invoke` uses a fresh caller per phase.
        let writer = Client::connect(&engine.url, target::bench_options("bench-writer"))
            .await
            .map_err(|e| format!("writer: {e}"))?;
        let phase = sets(
            &writer,
            &format!("p{i}"),
            in_flight,
            total,
            data,
            engine.pid(),
        )
        .await;
        writer.shutdown().await;
        if i > 0 {
            phases.push(phase);
        }
    }
    if phases.iter().any(|p| p.errors > 0) {
        eprintln!(
            "---- engine log ({fsync}) ----\n{}---- end ----",
            engine.log()
        );
    }
    Ok(phases)
}

/// Runs the scenario; `Ok(false)` when a set or get failed or the target was missed.
pub async fn run(o: Opts) -> Result<bool, String> {
    o.spawn.check("store", "it needs its own store settings")?;
    let blob = "x".repeat(o.payload.saturating_sub(r#"{"blob":""}"#.len()));
    let data = json!({ "blob": blob });
    let mut table = Table::new(
        format!(
            "store — stream::set of new keys, data {} B, through the engine into its file \
             store; latency in µs; engine CPU µs per set",
            data.to_string().len()
        ),
        &[
            "fsync",
            "in flight",
            "sets",
            "sets/s",
            "p50",
            "p90",
            "p99",
            "max",
            "errors",
            "engine cpu",
            "verdict",
        ],
    );
    let mut ctable = compaction::table(o.compaction_time);
    let (mut modes, mut ok) = (Vec::new(), true);
    for fsync in &o.fsync {
        let phases = throughput(&o, fsync, &data).await?;
        for (i, p) in phases.iter().enumerate() {
            ok &= p.errors == 0;
            let judged = fsync == "always" && i > 0 && p.in_flight == 64;
            let verdict = if !judged {
                "-".to_string()
            } else if p.per_s() >= TARGET_SETS_PER_S {
                "ok (≥ 5,000/s)".to_string()
            } else {
                ok = false;
                "MISS (< 5,000/s)".to_string()
            };
            let label = if i == 0 {
                "1 (sequential)".into()
            } else {
                p.in_flight.to_string()
            };
            table.row(vec![
                fsync.to_string(),
                label,
                p.sets.to_string(),
                report::thousands(p.per_s()),
                p.stats.p50_us.to_string(),
                p.stats.p90_us.to_string(),
                p.stats.p99_us.to_string(),
                p.stats.max_us.to_string(),
                p.errors.to_string(),
                p.cpu_us().map_or("-".into(), |c| format!("{c:.1}")),
                verdict,
            ]);
        }
        let check = if o.compaction {
            let c = compaction::check(&config(fsync, Some(1 << 20)), o.compaction_time).await?;
            ok &= c.ok();
            c.add_to(&mut ctable, fsync);
            c.json()
        } else {
            Value::Null
        };
        let (sequential, levels) = phases.split_first().ok_or("no phase ran")?;
        modes.push(json!({
            "fsync": fsync,
            "sequential": sequential.json(),
            "levels": levels.iter().map(Phase::json).collect::<Vec<_>>(),
            "compaction": check,
        }));
    }
    table.note("target: fsync always at 64 in flight ≥ 5,000 sets/s");
    let result = json!({
        "scenario": "store",
        "target": {"kind": "engine", "spawned": true, "fresh_engine_per_mode": true},
        "params": {
            "fsync": o.fsync,
            "payload_bytes": o.payload,
            "data_json_bytes": data.to_string().len(),
            "warmup_sets": o.warmup,
            "sequential_sets": o.sequential,
            "concurrency": o.levels,
            "sets_per_level": o.sets.map_or(json!({"every_second": 10_000, "always": 3000}), |n| json!(n)),
            "compaction": o.compaction.then(|| json!({"compact_threshold_bytes": 1 << 20,
                "item_bytes": 1024, "writer_in_flight": 8,
                "seconds": o.compaction_time.as_secs()})),
            "client": "iii_client::Client (a fresh writer per phase on the main thread)",
            "store_under": std::env::temp_dir(),
        },
        "machine": report::machine(),
        "modes": modes,
        "ok": ok,
    });
    let tables = if o.compaction {
        vec![table, ctable]
    } else {
        vec![table]
    };
    report::emit(result, &tables);
    Ok(ok)
}
