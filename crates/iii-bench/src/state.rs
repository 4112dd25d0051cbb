//! The `state` scenario: `state::set` and `state::get` rate and latency through the engine's
//! `iii-state` module with its file-based (durable) store, for each fsync mode.
//!
//! Each fsync mode gets a fresh engine (file-based state with that `fsync`). A client (a fresh
//! one per phase) does warm-up sets, sequential sets of new keys, sets at each concurrency,
//! then sequential gets and gets at each concurrency of keys that exist. Reported per phase:
//! calls/s, latency, the engine's CPU per call. A failed call fails the run.

use serde_json::{json, Value};

use crate::args::{parse_count, parse_levels, parse_size};
use crate::procs::Spawned;
use crate::report::{self, Table};
use crate::store::{calls, Phase};
use crate::target::{self, SpawnOnly};
use clap::builder::PossibleValuesParser;
use iii_client::Client;

const ABOUT: &str = "\
state::set and state::get rate and latency, durable, per fsync mode

For each fsync mode, spawns an engine whose iii-state module keeps a file-based store with that
mode (an acknowledged set is in the log; with `always` also fsynced), then measures state::set
of new keys (sequential, then each concurrency) and state::get of keys that exist.";

const MODES: [&str; 2] = ["every_second", "always"];

/// The `state` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "\
The engine is always spawned (the scenario needs its own state settings), so --url is refused.
Output: one JSON line, then a table. Exit status 1 if a call failed.")]
pub struct Opts {
    #[command(flatten)]
    pub spawn: SpawnOnly,
    /// fsync modes, comma-separated (default: every_second,always)
    #[arg(long, value_name = "list", value_delimiter = ',', default_values = MODES)]
    #[arg(hide_default_value = true, action = clap::ArgAction::Set)]
    #[arg(value_parser = PossibleValuesParser::new(MODES))]
    pub fsync: Vec<String>,
    /// Size of each value: 100, 1k, …
    #[arg(long, value_name = "size", value_parser = parse_size, default_value = "100")]
    pub payload: usize,
    /// Sequential calls for latency (sets, then gets)
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "2000")]
    pub sequential: usize,
    /// Calls in flight per level
    #[arg(long = "concurrency", value_name = "list", value_parser = parse_levels)]
    #[arg(default_value = "1,64")]
    pub levels: ::std::vec::Vec<usize>,
    /// Calls per concurrency level [default: 10000 with every_second, 3000 with always]
    #[arg(long, value_name = "n", value_parser = parse_count)]
    pub calls: Option<usize>,
}

fn config(fsync: &str) -> String {
    format!(
        "workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: 0}}\n  \
         - name: iii-state\n    config:\n      adapter: {{name: kv, config: {{store_method: \
         file_based, file_path: ./data/state, fsync: {fsync}}}}}\n"
    )
}

/// One row: operation, phase label and the phase.
type Row = (&'static str, String, Phase);

async fn phase(
    url: &str,
    pid: u32,
    op: &'static str,
    in_flight: usize,
    total: usize,
    scope: String,
    value: &Value,
) -> Result<Phase, String> {
    let client = Client::connect(url, target::bench_options("bench-state"))
        .await
        .map_err(|e| format!("client: {e}"))?;
    let call = |n: usize| {
        let key = format!("k{n}");
        match op {
            "set" => (
                "state::set",
                json!({"scope": scope, "key": key, "value": value}),
            ),
            _ => ("state::get", json!({"scope": scope, "key": key})),
        }
    };
    let p = calls(&client, in_flight, total, call, pid).await;
    client.shutdown().await;
    Ok(p)
}

async fn mode(o: &Opts, fsync: &str, value: &Value) -> Result<Vec<Row>, String> {
    let engine = Spawned::engine_with(&config(fsync), "warn")?;
    let (url, pid) = (engine.url.clone(), engine.pid());
    let count = o
        .calls
        .unwrap_or(if fsync == "always" { 3000 } else { 10_000 });
    phase(&url, pid, "set", 1, 200, "warmup".into(), value).await?;
    let mut rows = Vec::new();
    let seq = phase(&url, pid, "set", 1, o.sequential, "s0".into(), value).await?;
    rows.push(("set", "1 (sequential)".to_string(), seq));
    for (i, &n) in o.levels.iter().enumerate() {
        let p = phase(&url, pid, "set", n, count, format!("s{}", i + 1), value).await?;
        rows.push(("set", n.to_string(), p));
    }
    // Gets read the keys the sets at the first level wrote (all exist).
    let keys = count;
    let seq = phase(
        &url,
        pid,
        "get",
        1,
        o.sequential.min(keys),
        "s1".into(),
        value,
    )
    .await?;
    rows.push(("get", "1 (sequential)".to_string(), seq));
    for &n in &o.levels {
        let p = phase(&url, pid, "get", n, keys, "s1".into(), value).await?;
        rows.push(("get", n.to_string(), p));
    }
    if rows.iter().any(|(_, _, p)| p.errors > 0) {
        eprintln!(
            "---- engine log ({fsync}) ----\n{}---- end ----",
            engine.log()
        );
    }
    Ok(rows)
}

/// Runs the scenario; `Ok(false)` when a call failed.
pub async fn run(o: Opts) -> Result<bool, String> {
    o.spawn.check("state", "it needs its own state settings")?;
    let blob = "x".repeat(o.payload.saturating_sub(r#"{"blob":""}"#.len()));
    let value = json!({ "blob": blob });
    let mut table = Table::new(
        format!(
            "state — state::set (new keys) and state::get through iii-state's file store, value \
             {} B; latency in µs; engine CPU µs per call",
            value.to_string().len()
        ),
        &[
            "fsync",
            "call",
            "in flight",
            "calls",
            "calls/s",
            "p50",
            "p90",
            "p99",
            "max",
            "errors",
            "engine cpu",
        ],
    );
    let (mut modes, mut ok) = (Vec::new(), true);
    for fsync in &o.fsync {
        let rows = mode(&o, fsync, &value).await?;
        let mut json_rows = Vec::new();
        for (op, label, p) in &rows {
            ok &= p.errors == 0;
            table.row(vec![
                fsync.to_string(),
                op.to_string(),
                label.clone(),
                p.sets.to_string(),
                report::thousands(p.per_s()),
                p.stats.p50_us.to_string(),
                p.stats.p90_us.to_string(),
                p.stats.p99_us.to_string(),
                p.stats.max_us.to_string(),
                p.errors.to_string(),
                p.cpu_us().map_or("-".into(), |c| format!("{c:.1}")),
            ]);
            let mut j = p.json();
            j["call"] = json!(op);
            j["sequential"] = json!(label.contains("sequential"));
            json_rows.push(j);
        }
        modes.push(json!({"fsync": fsync, "phases": json_rows}));
    }
    let result = json!({
        "scenario": "state",
        "target": {"kind": "engine", "spawned": true, "fresh_engine_per_mode": true},
        "params": {
            "fsync": o.fsync,
            "value_json_bytes": value.to_string().len(),
            "sequential_calls": o.sequential,
            "concurrency": o.levels,
            "calls_per_level": o.calls.map_or(json!({"every_second": 10_000, "always": 3000}), |n| json!(n)),
            "client": "iii_client::Client (a fresh client per phase on the main thread)",
        },
        "machine": report::machine(),
        "modes": modes,
        "ok": ok,
    });
    report::emit(result, &[table]);
    Ok(ok)
}
