//! The `http` scenario: requests/s and latency of HTTP requests through an `iii-http` route to
//! a worker function, and — with `--direct` — the same requests to a plain actix-web handler
//! that answers the same JSON (the limit, as `invoke --direct` is for calls).
//!
//! The engine is spawned with a trusted listener and `iii-http` on free ports; a worker (our
//! Rust client, on its own thread) serves `bench::http`, bound to `GET /bench/:id`, returning
//! `{status_code: 200, body: {id, ok: true}}`. The load is awc on the main thread: warm-up
//! requests, sequential requests, then a fixed number at each concurrency. Reported: requests/s,
//! latency percentiles, and the CPU the engine (or the direct server) used per request.

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::args::{parse_count, parse_levels};
use crate::procs::{self, Spawned};
use crate::report::{self, Lanes, Stats, Table};
use crate::target::{self, connect_on, SpawnOnly, Threads};

const ABOUT: &str = "\
HTTP requests through an iii-http route to a worker, or (--direct) to a plain actix-web handler

Spawns an engine with iii-http; a worker binds bench::http to GET /bench/:id. An awc client
sends GET requests: warm-up, sequential, then a fixed number at each concurrency.";

/// The `http` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "Output: one JSON line, then a table. Exit status 1 if a request failed.")]
pub struct Opts {
    #[command(flatten)]
    pub spawn: SpawnOnly,
    /// Requests in flight per level
    #[arg(long = "concurrency", value_name = "list", value_parser = parse_levels)]
    #[arg(default_value = "1,16,64")]
    pub levels: ::std::vec::Vec<usize>,
    /// Requests per level
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "10000")]
    pub requests: usize,
    /// Sequential requests for latency
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "2000")]
    pub sequential: usize,
    /// Warm-up requests, not measured
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "500")]
    pub warmup: usize,
    /// Measure a plain actix-web handler (in a child process) instead of the engine
    #[arg(long)]
    pub direct: bool,
}

fn config() -> String {
    "workers:\n  - name: iii-worker-manager\n    config: {host: 127.0.0.1, port: 0}\n  \
     - name: iii-http\n    config: {host: 127.0.0.1, port: 0}\n"
        .to_string()
}

struct Phase {
    in_flight: usize,
    requests: usize,
    elapsed: Duration,
    stats: Stats,
    errors: usize,
    first_error: Option<String>,
    cpu: Option<Duration>,
}

impl Phase {
    fn per_s(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn cpu_us(&self) -> Option<f64> {
        self.cpu
            .map(|d| d.as_secs_f64() * 1e6 / self.requests.max(1) as f64)
    }
}

async fn phase(base: &str, in_flight: usize, total: usize, pid: u32) -> Phase {
    let connector = awc::Connector::new().limit(in_flight.max(1));
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .connector(connector)
        .finish();
    let cpu0 = procs::cpu_time(pid);
    let started = Instant::now();
    let Lanes {
        mut samples,
        errors,
        first_error,
    } = report::lanes(in_flight, total, |n| {
        let request = client.get(format!("{base}/bench/{n}")).send();
        async move {
            match request.await {
                Ok(mut r) if r.status().is_success() => {
                    r.body().await.map(drop).map_err(|e| e.to_string())
                }
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    let cpu = cpu0
        .zip(procs::cpu_time(pid))
        .map(|(a, b)| b.saturating_sub(a));
    Phase {
        in_flight,
        requests: samples.len(),
        elapsed,
        stats: Stats::of(&mut samples),
        errors,
        first_error,
        cpu,
    }
}

/// `iii-bench http-direct --ready-file <path>`: the plain server `http --direct` measures.
#[derive(clap::Args, Debug, Clone)]
pub struct DirectOpts {
    /// Where to write `{"url": …}` once listening
    #[arg(long, value_name = "path")]
    pub ready_file: std::path::PathBuf,
}

/// Runs the direct target: a plain actix-web server (2 threads, as iii-http) answering what
/// the route answers, until killed.
pub fn serve_direct(o: DirectOpts) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new().route(
                "/bench/{id}",
                web::get().to(|id: web::Path<String>| async move {
                    HttpResponse::Ok().json(json!({"id": id.into_inner(), "ok": true}))
                }),
            )
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .map_err(|e| e.to_string())?;
        let ready = json!({"url": format!("http://{}", server.addrs()[0])});
        std::fs::write(&o.ready_file, ready.to_string()).map_err(|e| e.to_string())?;
        server.run().await.map_err(|e| e.to_string())
    })
}

/// Runs the scenario; `Ok(false)` when a request failed.
pub async fn run(o: Opts) -> Result<bool, String> {
    o.spawn.check("http", "it needs iii-http on its own port")?;
    let threads = Threads::new(1);
    let (base, pid, _target, _callee) = if o.direct {
        let direct = Spawned::http_direct()?;
        (direct.url.clone(), direct.pid(), direct, None)
    } else {
        let engine = Spawned::engine_with(&config(), "warn")?;
        let base = engine.ready["http"]
            .as_str()
            .ok_or("the engine has no http url")?
            .to_string();
        let callee = connect_on(&threads.pick(0), engine.url.clone(), target::bench_options("bench-http"), |c| {
            c.register_function("bench::http", |input: Value| async move {
                Ok(json!({"status_code": 200, "body": {"id": input["path_params"]["id"], "ok": true}}))
            });
            c.register_trigger("http", "bench::http", json!({"api_path": "/bench/:id"}));
        })
        .await?;
        let pid = engine.pid();
        (base, pid, engine, Some(callee))
    };
    // The route binds asynchronously: wait until it answers.
    let probe = awc::Client::default();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !matches!(probe.get(format!("{base}/bench/probe")).send().await, Ok(r) if r.status().is_success())
    {
        if Instant::now() > deadline {
            return Err("the route never answered".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    phase(&base, 1, o.warmup, pid).await;
    let mut phases = vec![phase(&base, 1, o.sequential, pid).await];
    for &n in &o.levels {
        phases.push(phase(&base, n, o.requests, pid).await);
    }
    let target_name = if o.direct {
        "direct (plain actix-web)"
    } else {
        "engine (iii-http → worker)"
    };
    let mut table = Table::new(
        format!("http via {target_name} — GET /bench/:id; latency in µs; CPU µs per request"),
        &[
            "in flight",
            "requests",
            "req/s",
            "p50",
            "p90",
            "p99",
            "max",
            "errors",
            "hop cpu",
        ],
    );
    let mut ok = true;
    let mut levels = Vec::new();
    for (i, p) in phases.iter().enumerate() {
        ok &= p.errors == 0;
        let label = if i == 0 {
            "1 (sequential)".to_string()
        } else {
            p.in_flight.to_string()
        };
        table.row(vec![
            label,
            p.requests.to_string(),
            report::thousands(p.per_s()),
            p.stats.p50_us.to_string(),
            p.stats.p90_us.to_string(),
            p.stats.p99_us.to_string(),
            p.stats.max_us.to_string(),
            p.errors.to_string(),
            p.cpu_us().map_or("-".into(), |c| format!("{c:.1}")),
        ]);
        levels.push(
            json!({"in_flight": if i == 0 { json!("seq") } else { json!(p.in_flight) },
            "calls": p.requests, "calls_per_s": p.per_s().round(), "latency": p.stats.json(),
            "errors": p.errors, "first_error": p.first_error,
            "hop_cpu_us_per_call": p.cpu_us().map(report::r1)}),
        );
    }
    let result = json!({
        "scenario": "http",
        "target": {"kind": if o.direct { "direct" } else { "engine" }, "spawned": true},
        "params": {"concurrency": o.levels, "requests_per_level": o.requests,
                   "sequential": o.sequential, "warmup": o.warmup,
                   "client": "awc on the bench's main thread; the worker on its own thread"},
        "machine": report::machine(),
        "levels": levels,
        "ok": ok,
    });
    report::emit(result, &[table]);
    Ok(ok)
}
