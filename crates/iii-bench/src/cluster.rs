//! The `cluster` scenario: two engines sharing one Redis (`iii-cluster` for calls across
//! engines, `iii-stream` on Redis), plus an `iii-bridge` from A to B, each cross-engine path
//! against its same-engine baseline measured in the same run. This file owns the options, the
//! engines' configs and the order of the phases; `cluster_report.rs` prints the results.
//!
//! Starts `redis-server` (free port, scratch directory, no persistence), engine B, then engine
//! A, each with a trusted listener, `iii-cluster` (heartbeat 200 ms) and `iii-stream` on the
//! Redis (`--transport`: iii-cluster's, `link` by default); A also has `iii-bridge` to B's worker listener with one `forward` entry,
//! `bridge::bench::echo` → `bench::echo` (A is a worker of B over one WebSocket). Then, with the
//! phases of `cluster_load.rs` (calls) and `cluster_stream.rs` (sets), those `--phases` asked
//! for (all by default):
//!
//! 1. **calls**: a callee on B serves `bench::echo`; a fresh caller on B (same engine), then on
//!    A calling `bench::echo` (forwarded by iii-cluster to B and back: over its WebSocket link,
//!    or with `--transport redis` through Redis pub/sub), then on A
//!    calling `bridge::bench::echo` (through the bridge's WebSocket to B and back), keeps N
//!    calls in flight per level.
//! 2. **stream**: a worker on B binds a function to the `stream` trigger of stream `bench`; a
//!    writer on B, then on A, does `stream::set` of fresh items whose data carries the send
//!    time; the handler records write → delivery. Every write goes through Redis either way
//!    (the store is Redis; every engine learns of a change from Redis pub/sub).
//! 3. **load, 1 → 2 engines**: K callers with M calls in flight each call an echo on their own
//!    engine: all K on A (one callee), all K on A with half of them calling `bench::echo2` of
//!    a second callee (two callee connections, one engine), then half on A and half on B (a
//!    callee on each). Reported: total calls/s and the cores each process, each engine's
//!    busiest thread and the whole machine kept busy.

use std::time::Duration;

use clap::builder::PossibleValuesParser;
use serde_json::{json, Value};

use crate::args::{parse_count, parse_levels, parse_size};
use crate::cluster_load::{self as load, Run};
use crate::cluster_report;
use crate::cluster_stream::{self as stream, Fanout, Sink};
use crate::procs::{RedisServer, Spawned};
use crate::target::{self, SpawnOnly, Threads};

const ABOUT: &str = "\
Two engines on a Redis: calls across engines (Redis pub/sub or bridge), stream fan-out, 1 → 2 engines

Starts redis-server and engines A and B (iii-cluster + iii-stream on Redis; A also has an
iii-bridge to B). Calls: a callee on B serves bench::echo; a caller on B (same engine), then on
A through iii-cluster (Redis pub/sub), then on A through the bridge alias bridge::bench::echo,
at each concurrency. Stream: a stream-trigger subscriber on B; a writer on B, then on A, does
stream::set; the subscriber measures write → delivery. Load: K callers calling a local
bench::echo with M in flight each, all on one engine, then split over both engines.";

/// The phases, in the order they run.
pub const PHASES: [&str; 3] = ["calls", "stream", "load"];

/// The `cluster` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "\
The engines are always spawned (the scenario needs its own cluster settings), so --url is
refused. redis-server must be installed (Debian: apt-get install redis-server).
Output: one JSON line, then tables. Exit status 1 if a call or set failed, or an event was lost
or delivered twice; the run stops at once if a path's first call fails or does not echo.")]
pub struct Opts {
    #[command(flatten)]
    pub spawn: SpawnOnly,
    /// Phases to run, comma-separated (default: calls,stream,load)
    #[arg(long, value_name = "list", value_delimiter = ',', default_values = PHASES)]
    #[arg(hide_default_value = true, action = clap::ArgAction::Set)]
    #[arg(value_parser = PossibleValuesParser::new(PHASES))]
    pub phases: Vec<String>,
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
    /// How iii-cluster carries calls between the engines: link (a WebSocket) or redis (pub/sub)
    #[arg(long, value_name = "how", default_value = "link")]
    #[arg(value_parser = PossibleValuesParser::new(["link", "redis"]))]
    pub transport: String,
}

impl Opts {
    pub fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

/// An engine's config: listener, `iii-cluster`, `iii-stream` on Redis and, with `bridge_to`,
/// an `iii-bridge` to that worker URL forwarding [`load::BRIDGED`] to [`load::ECHO`].
fn config(redis_url: &str, transport: &str, bridge_to: Option<&str>) -> String {
    let mut c = format!(
        "workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: 0}}\n  \
         - name: iii-cluster\n    config: {{redis_url: '{redis_url}', heartbeat_ms: 200, \
         expiry_ms: 2000, transport: {transport}}}\n  - name: iii-stream\n    config: {{host: 127.0.0.1, port: 0, \
         adapter: {{name: redis, config: {{redis_url: '{redis_url}'}}}}}}\n"
    );
    if let Some(url) = bridge_to {
        c.push_str(&format!(
            "  - name: iii-bridge\n    config: {{url: '{url}', forward: [{{local_function: \
             '{}', remote_function: '{}', timeout_ms: 30000}}]}}\n",
            load::BRIDGED,
            load::ECHO
        ));
    }
    c
}

/// The three calls of one level: caller on B, on A through Redis, on A through the bridge.
pub struct Calls {
    pub same: Run,
    pub cross: Run,
    pub bridge: Run,
}

/// The 1 → 2 engines load: each layout's run and calls per caller.
pub struct Load {
    pub one: (Run, Vec<usize>),
    /// One engine, half the callers calling a second callee (`bench::echo2`).
    pub one_split: (Run, Vec<usize>),
    pub two: (Run, Vec<usize>),
}

/// Everything one run measured (empty or `None` for phases not run).
pub struct Results {
    pub visible_on_a: Option<Duration>,
    pub calls: Vec<Calls>,
    pub stream: Vec<(Fanout, Fanout)>,
    pub load: Option<Load>,
}

async fn measure_calls(
    o: &Opts,
    a: &Spawned,
    b: &Spawned,
    pids: [u32; 3],
    workers: &Threads,
) -> Result<(Duration, Vec<Calls>), String> {
    let data = load::payload(o.payload);
    // bench::echo only on B.
    let callee_b = load::callee(&workers.pick(0), &b.url, load::ECHO).await?;
    let probe = iii_client::Client::connect(&a.url, target::bench_options("bench-cluster-probe"))
        .await
        .map_err(|e| format!("probe: {e}"))?;
    let visible_on_a = load::wait_known(&probe, load::ECHO).await?;
    probe.shutdown().await;
    let mut calls = Vec::new();
    for &n in &o.levels {
        let side = |url: &str, function: &'static str| {
            let url = url.to_string();
            let data = &data;
            async move { load::calls(&url, function, pids, n, o.calls, o.warmup, data).await }
        };
        let same = side(&b.url, load::ECHO).await?;
        let cross = side(&a.url, load::ECHO).await?;
        let bridge = side(&a.url, load::BRIDGED).await?;
        calls.push(Calls {
            same,
            cross,
            bridge,
        });
    }
    callee_b.shutdown().await;
    Ok((visible_on_a, calls))
}

async fn measure_stream(
    o: &Opts,
    a: &Spawned,
    b: &Spawned,
    pids: [u32; 3],
    workers: &Threads,
) -> Result<Vec<(Fanout, Fanout)>, String> {
    // Stream fan-out to a subscriber on B.
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
    Ok(fanouts)
}

/// The same load on one engine (one callee; then two callees under two names, to tell the
/// engine from its one callee connection), then on two engines.
async fn measure_load(
    o: &Opts,
    a: &Spawned,
    b: &Spawned,
    pids: [u32; 3],
    workers: &Threads,
) -> Result<Load, String> {
    let data = load::payload(o.payload);
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
    Ok(Load {
        one,
        one_split,
        two,
    })
}

async fn measure(
    o: &Opts,
    a: &Spawned,
    b: &Spawned,
    redis: &RedisServer,
) -> Result<Results, String> {
    let pids = [a.pid(), b.pid(), redis.pid()];
    let workers = Threads::new(2);
    let mut r = Results {
        visible_on_a: None,
        calls: Vec::new(),
        stream: Vec::new(),
        load: None,
    };
    if o.runs("calls") {
        let (visible, calls) = measure_calls(o, a, b, pids, &workers).await?;
        (r.visible_on_a, r.calls) = (Some(visible), calls);
    }
    if o.runs("stream") {
        r.stream = measure_stream(o, a, b, pids, &workers).await?;
    }
    if o.runs("load") {
        r.load = Some(measure_load(o, a, b, pids, &workers).await?);
    }
    Ok(r)
}

/// Runs the scenario; `Ok(false)` when a call or set failed or an event was lost or doubled.
pub async fn run(o: Opts) -> Result<bool, String> {
    o.spawn.check(
        "cluster",
        "it starts redis-server and two engines sharing it",
    )?;
    let redis = RedisServer::start(&o.redis_server)?;
    let b = Spawned::engine_with(&config(&redis.url(), &o.transport, None), "warn")?;
    let a = Spawned::engine_with(&config(&redis.url(), &o.transport, Some(&b.url)), "warn")?;
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
    let target = json!({"kind": "engines", "spawned": true, "engines": 2, "a": a.url,
                        "b": b.url, "redis": redis.url(),
                        "bridge": {"on": "a", "to": b.url, "forward": {load::BRIDGED: load::ECHO}}});
    Ok(cluster_report::emit(&o, &r, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_both_shared_modules_and_the_bridge_on_a() {
        let c = config("redis://127.0.0.1:1", "link", None);
        assert!(c.contains("iii-cluster"), "{c}");
        assert!(
            c.contains("heartbeat_ms: 200, expiry_ms: 2000, transport: link"),
            "{c}"
        );
        assert!(c.contains("adapter: {name: redis, config: {redis_url: 'redis://127.0.0.1:1'}}"));
        assert!(!c.contains("iii-bridge"), "{c}");
        let c = config("redis://127.0.0.1:1", "redis", Some("ws://127.0.0.1:2"));
        assert!(c.contains(
            "config: {url: 'ws://127.0.0.1:2', forward: [{local_function: \
             'bridge::bench::echo', remote_function: 'bench::echo', timeout_ms: 30000}]}"
        ));
    }
}
