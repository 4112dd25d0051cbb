//! The `flood` scenario: the engine's memory and a well-behaved caller's latency while one
//! kind of flood runs (the flooders themselves are in `floods.rs`).
//!
//! Each kind gets a fresh engine with the scenario's own config: a trusted listener (64 MiB
//! frames), a public RBAC listener exposing `bench::echo` and `bench::flood::*` whose auth
//! function (`bench::auth`) takes 2 s when the socket's query has `slow=1`, and a file-based
//! stream module. The bench's flood worker serves
//! the auth function and the flooded functions on one thread; an echo worker and the measured
//! caller share a second thread; the flooders run on a third. While the flood runs, the caller
//! calls `bench::echo` every 20 ms and the engine's RSS is read every 100 ms (and its `VmHWM`
//! at the end). Target: RSS above idle < 256 MiB and caller p99 < 50 ms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use iii_client::Client;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::args::{parse_millis, parse_secs};
use crate::floods::{self, Aim, Tally, FLOOD_COUNT, FLOOD_ECHO, KINDS, SECRET};
use crate::procs::{self, Spawned};
use crate::report::{self, Stats, Table};
use crate::target::{self, SpawnOnly, Threads};

const ABOUT: &str = "\
Engine memory and a well-behaved caller's latency under one flood at a time

For each kind, spawns a fresh engine, runs the flood for --seconds while a well-behaved caller
(our Rust client) calls bench::echo every 20 ms, and reports the engine's RSS (idle, peak,
above idle) and the caller's latency. Kinds:
  slow-reader  one raw socket floods 4 KiB echo calls, reads replies slowly (20 ms pause
               every 100 replies)
  forbidden    two raw sockets on the public listener flood calls to a function it does not
               expose (they read the denials); the caller is on the public listener too
  preauth      four raw sockets connect with ?slow=1 (auth takes 2 s) and write 300 calls of
               64 KiB at once, read every answer, reconnect
  joins        one stream consumer joins an 8 MiB group (80 × 100 KiB) 300 times, never reads
  fragments    10 raw sockets on the public listener each send 1 MiB continuation frames of
               one text message, up to 40 MiB, never the last frame
  big          one 60 MiB call of small JSON records; the worker answers with a row count";

/// The `flood` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "\
The engine is always spawned (the scenario needs its own listeners and auth function), so
--url is refused. Output: one JSON line, then a table. Exit status 1 if a kind missed the
target (RSS above idle < 256 MiB, caller p99 < 50 ms, no failed call, engine still running).")]
pub struct Opts {
    #[command(flatten)]
    pub spawn: SpawnOnly,
    /// Kinds to run, comma-separated (default: all, in the order above)
    #[arg(long, value_name = "list", value_delimiter = ',', default_values = KINDS)]
    #[arg(hide_default_value = true, action = clap::ArgAction::Set)]
    #[arg(value_parser = PossibleValuesParser::new(KINDS).map(kind))]
    pub kinds: Vec<&'static str>,
    /// How long each flood runs, in seconds (`big` runs until answered)
    #[arg(long, value_name = "n", default_value = "10")]
    #[arg(value_parser = |s: &str| parse_secs(s).map(|d| d.max(Duration::from_secs(1))))]
    pub seconds: Duration,
    /// The well-behaved caller's call interval
    #[arg(long = "interval-ms", value_name = "n", default_value = "20")]
    #[arg(value_parser = |s: &str| parse_millis(s).map(|d| d.max(Duration::from_millis(1))))]
    pub interval: Duration,
}

/// The engine config of every kind.
const CONFIG: &str = r#"workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0, max_frame_bytes: 67108864}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac:
        auth_function_id: bench::auth
        expose_functions: [match("bench::echo"), match("bench::flood::*")]
  - name: iii-stream
    config:
      host: 127.0.0.1
      port: 0
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/stream_store}}
"#;

const RSS_TARGET_MIB: f64 = 256.0;
const P99_TARGET_MS: f64 = 50.0;

/// The [`KINDS`] entry named `name` (the only names the parser lets through).
fn kind(name: String) -> &'static str {
    KINDS
        .iter()
        .copied()
        .find(|k| *k == name)
        .unwrap_or("unknown")
}

/// One kind's numbers.
struct KindRun {
    kind: &'static str,
    idle_kib: u64,
    peak_kib: u64,
    peak_from_hwm: bool,
    stats: Stats,
    failures: usize,
    first_error: Option<String>,
    flood: Value,
    log_lines: usize,
    engine_alive: bool,
    elapsed: Duration,
}

impl KindRun {
    fn above_idle_mib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.idle_kib) as f64 / 1024.0
    }

    /// What missed the target (nothing: passed).
    fn misses(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.above_idle_mib() >= RSS_TARGET_MIB {
            m.push("RSS");
        }
        if self.stats.p99_us as f64 >= P99_TARGET_MS * 1000.0 {
            m.push("p99");
        }
        if self.failures > 0 || self.stats.count == 0 {
            m.push("failed calls");
        }
        if !self.engine_alive {
            m.push("engine exited");
        }
        m
    }

    fn json(&self) -> Value {
        let mib = |kib: u64| report::r1(kib as f64 / 1024.0);
        json!({
            "kind": self.kind,
            "flood_ms": report::ms(self.elapsed),
            "engine_rss_mib": {
                "idle": mib(self.idle_kib),
                "peak": mib(self.peak_kib),
                "above_idle": report::r1(self.above_idle_mib()),
                "peak_from": if self.peak_from_hwm { "VmHWM" } else { "VmRSS every 100 ms" },
            },
            "caller": {"latency": self.stats.json(), "failures": self.failures,
                       "first_error": self.first_error},
            "flood": self.flood,
            "engine_log_lines": self.log_lines,
            "engine_alive": self.engine_alive,
            "misses": self.misses(),
            "ok": self.misses().is_empty(),
        })
    }

    fn row(&self) -> Vec<String> {
        let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        let f = &self.flood;
        let misses = self.misses();
        vec![
            self.kind.to_string(),
            mib(self.idle_kib),
            mib(self.peak_kib),
            format!("{:.1}", self.above_idle_mib()),
            self.stats.count.to_string(),
            ms(self.stats.p50_us),
            ms(self.stats.p99_us),
            ms(self.stats.max_us),
            self.failures.to_string(),
            f["sent"].to_string(),
            f["answered"].to_string(),
            f["refused"].to_string(),
            format!("{} ({} 1013)", f["closed_by_engine"], f["closed_1013"]),
            self.log_lines.to_string(),
            if misses.is_empty() {
                "ok".into()
            } else {
                format!("MISS: {}", misses.join(", "))
            },
        ]
    }
}

/// The flood worker's functions: the auth function, the flood targets, the forbidden one.
fn flood_worker(c: &Client) {
    c.register_function("bench::auth", |input: Value| async move {
        if input["query_params"]["slow"][0] == "1" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok(json!({}))
    });
    c.register_function(FLOOD_ECHO, |mut input: Value| async move {
        if let Some(o) = input.as_object_mut() {
            o.remove("_caller_worker_id");
        }
        Ok(input)
    });
    c.register_function(FLOOD_COUNT, |input: Value| async move {
        Ok(json!({"rows": input["rows"].as_array().map(Vec::len)}))
    });
    c.register_function(SECRET, |_| async { Ok(json!("secret")) });
}

/// Fills the stream group the `joins` flood joins: 80 items of 100 KiB.
async fn fill_big_group(client: &Client) -> Result<(), String> {
    let big = "z".repeat(100 << 10);
    for i in 0..80 {
        let item = json!({"stream_name": "big", "group_id": "g", "item_id": format!("i{i}"),
                          "data": big});
        client
            .trigger("stream::set", item)
            .await
            .map_err(|e| format!("filling the 8 MiB group: {e}"))?;
    }
    Ok(())
}

async fn run_kind(kind: &'static str, o: &Opts) -> Result<KindRun, String> {
    let engine = Spawned::engine_with(CONFIG, "warn")?;
    let pid = engine.pid();
    let aim = Aim {
        trusted: engine.listener_url(0)?,
        public: engine.listener_url(1)?,
        stream: engine.stream_url()?,
    };
    let fail = |e: String| format!("{kind}: {e}\n---- engine log ----\n{}", engine.log());
    // 0: the flood worker; 1: the echo worker and the caller; 2: the flooders.
    let threads = Threads::new(3);
    let options = target::bench_options;
    let worker = target::connect_on(
        &threads.pick(0),
        aim.trusted.clone(),
        options("bench-flood-worker"),
        flood_worker,
    )
    .await
    .map_err(|e| fail(format!("flood worker: {e}")))?;
    let echo = target::connect_on(
        &threads.pick(1),
        aim.trusted.clone(),
        options("bench-echo"),
        |c| {
            c.register_function("bench::echo", |input: Value| async move { Ok(input) });
        },
    )
    .await
    .map_err(|e| fail(format!("echo worker: {e}")))?;
    let probe = Client::connect(&aim.trusted, options("bench-probe"))
        .await
        .map_err(|e| fail(format!("probe: {e}")))?;
    for f in ["bench::echo", FLOOD_COUNT] {
        target::wait_callable(&probe, f).await.map_err(fail)?;
    }
    if kind == "joins" {
        fill_big_group(&probe).await.map_err(fail)?;
    }
    probe.shutdown().await;
    // The forbidden flood is on the public listener: so is the caller.
    let caller_url = if kind == "forbidden" {
        &aim.public
    } else {
        &aim.trusted
    };
    let caller = target::connect_on(
        &threads.pick(1),
        caller_url.clone(),
        options("bench-caller"),
        |_| {},
    )
    .await
    .map_err(|e| fail(format!("caller: {e}")))?;
    target::wait_callable(&caller, "bench::echo")
        .await
        .map_err(fail)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = procs::rss_kib(pid).ok_or_else(|| fail("no engine RSS".into()))?;
    let hwm_before = procs::hwm_kib(pid).unwrap_or(0);
    let log_before = engine.log().lines().count();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let (stop_flood, flood_stopped) = oneshot::channel::<()>();
    let started = Instant::now();
    let interval = o.interval;
    let calls = target::run_on(&threads.pick(1), {
        let stop = stop.clone();
        move || target::call_every(caller, "bench::echo", interval, stop)
    });
    let flood = target::run_on(&threads.pick(2), {
        let tally = tally.clone();
        move || async move {
            tokio::select! {
                _ = floods::run(kind, &aim, &tally) => tally.finished.store(true, Ordering::Relaxed),
                _ = flood_stopped => {}
            }
        }
    });
    let mut sampled_max = idle_kib;
    // `big` is one call: it runs until answered (at most two minutes more), however long.
    let must_finish = kind == "big";
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(rss) = procs::rss_kib(pid) {
            sampled_max = sampled_max.max(rss);
        }
        let elapsed = started.elapsed();
        let finished = tally.finished.load(Ordering::Relaxed);
        if elapsed >= o.seconds
            && (!must_finish || finished || elapsed > o.seconds + Duration::from_secs(120))
        {
            break;
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = stop_flood.send(());
    let (mut samples, failures, first_error) = calls
        .await
        .map_err(|_| fail("the caller's thread stopped".into()))?;
    let _ = flood.await;
    let hwm_after = procs::hwm_kib(pid).unwrap_or(0);
    let engine_alive = procs::rss_kib(pid).is_some();
    // The engine is fresh, so a new peak is the flood's; otherwise the samples tell.
    let (peak_kib, peak_from_hwm) = if hwm_after > hwm_before {
        (hwm_after, true)
    } else {
        (sampled_max, false)
    };
    let log_lines = engine.log().lines().count().saturating_sub(log_before);
    worker.shutdown().await;
    echo.shutdown().await;
    drop(threads);
    Ok(KindRun {
        kind,
        idle_kib,
        peak_kib,
        peak_from_hwm,
        stats: Stats::of(&mut samples),
        failures,
        first_error,
        flood: tally.json(),
        log_lines,
        engine_alive,
        elapsed,
    })
}

/// Runs the scenario; `Ok(false)` when a kind missed the target.
pub async fn run(o: Opts) -> Result<bool, String> {
    o.spawn
        .check("flood", "it needs its own listeners and auth function")?;
    let mut runs = Vec::new();
    for &kind in &o.kinds {
        runs.push(run_kind(kind, &o).await?);
    }
    let ok = runs.iter().all(|r| r.misses().is_empty());
    let result = json!({
        "scenario": "flood",
        "target": {"kind": "engine", "spawned": true, "fresh_engine_per_kind": true},
        "params": {
            "kinds": o.kinds,
            "seconds": o.seconds.as_secs(),
            "caller_interval_ms": o.interval.as_millis() as u64,
            "config": CONFIG,
            "targets": {"rss_above_idle_mib_below": RSS_TARGET_MIB, "caller_p99_ms_below": P99_TARGET_MS},
            "client": "iii_client::Client (caller and echo worker on one thread, flood worker on \
                       another); flooders are raw awc sockets on a third thread",
        },
        "machine": report::machine(),
        "kinds": runs.iter().map(KindRun::json).collect::<Vec<_>>(),
        "ok": ok,
    });
    let mut table = Table::new(
        format!(
            "flood — fresh engine per kind, {} s each; RSS in MiB; caller latency in ms \
             (one call every {} ms)",
            o.seconds.as_secs(),
            o.interval.as_millis()
        ),
        &[
            "kind", "idle", "peak", "+idle", "calls", "p50", "p99", "max", "failed", "sent",
            "answered", "refused", "closed", "log", "verdict",
        ],
    );
    for r in &runs {
        table.row(r.row());
    }
    table.note(format!(
        "target: +idle < {RSS_TARGET_MIB} MiB and p99 < {P99_TARGET_MS} ms. sent = calls \
         (joins: join frames, fragments: 1 MiB frames); closed = flood sockets the engine \
         closed; log = engine log lines (level warn) written during the flood"
    ));
    for r in &runs {
        let f = &r.flood;
        let notes = [
            ("flood error", f["first_error"].as_str().map(str::to_string)),
            (
                "first refusal",
                f["first_refusal"].as_str().map(str::to_string),
            ),
            (
                "the 60 MiB call took",
                f["call_ms"].as_f64().map(|ms| format!("{ms:.0} ms")),
            ),
            ("first failed call", r.first_error.clone()),
        ];
        for (what, text) in notes {
            if let Some(text) = text {
                table.note(format!("{}: {what}: {text}", r.kind));
            }
        }
    }
    report::emit(result, &[table]);
    Ok(ok)
}
