//! The `node` scenario: what a Node user sees. The published `iii-sdk` (installed in
//! `tests/sdk/` by `npm ci`) runs as the callee and as the caller, in two `node` processes
//! running `tests/sdk/node-bench.mjs`; the caller measures each `trigger` and prints its
//! results as one JSON line, which this scenario reads, tabulates and re-emits with the
//! engine's (or relay's) CPU time. `--direct` puts the relay in the engine's place.
//!
//! The SDK exports its OpenTelemetry spans, logs and metrics to the engine's `/otel` socket
//! by default, as a Node user's workers do; `--otel off` sets `OTEL_ENABLED=false` in both
//! processes. The relay has no `/otel`, so compare engine and relay with `--otel off`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::args::{parse_count, parse_levels, parse_on_off, parse_size};
use crate::hop::{Hop, RelayOpts};
use crate::procs;
use crate::report::{self, Table};
use crate::target::Common;

const ABOUT: &str = "\
A Node SDK caller and callee through the engine (or the relay baseline)

Two node processes run tests/sdk/node-bench.mjs with the published iii-sdk: a callee that
registers bench::echo and a caller that calls it: warm-up calls, then sequential calls, then a
fixed number of calls at each in-flight level. Latency is measured around `trigger` in the
caller, so it includes the SDK's own work on both ends. Needs node and `npm ci` in tests/sdk
(scripts/setup-test-deps does both).";

/// The `node` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "Output: one JSON line, then a table. Exit status 1 if a call failed.")]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub relay: RelayOpts,
    /// Request payload size: 100, 10k, 10KiB
    #[arg(long, value_name = "size", value_parser = parse_size, default_value = "100")]
    pub payload: usize,
    /// Warm-up calls, not measured (Node's JIT needs a few thousand)
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "3000")]
    pub warmup: usize,
    /// Sequential calls for latency
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "3000")]
    pub sequential: usize,
    /// Calls per in-flight level
    #[arg(long, value_name = "n", value_parser = parse_count, default_value = "5000")]
    pub calls: usize,
    /// Calls in flight per level
    #[arg(long = "concurrency", value_name = "list", value_parser = parse_levels)]
    #[arg(default_value = "16,64")]
    pub levels: ::std::vec::Vec<usize>,
    /// The SDK's OpenTelemetry export to the engine (off: OTEL_ENABLED=false)
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    #[arg(action = clap::ArgAction::Set, default_value = "on")]
    pub otel: bool,
    /// The load script [default: tests/sdk/node-bench.mjs, looked for upwards from the current
    /// directory and from this executable]
    #[arg(long, value_name = "file")]
    pub script: Option<PathBuf>,
}

/// A `node` child whose stdout is read line by line on a thread of its own.
struct NodeProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl NodeProc {
    fn spawn(script: &Path, args: &[String], url: &str, otel: bool) -> Result<NodeProc, String> {
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .args(args)
            .current_dir(script.parent().unwrap_or(Path::new(".")))
            .env("III_URL", url)
            .env("SDK_TEST_TIMEOUT_MS", "600000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if !otel {
            cmd.env("OTEL_ENABLED", "false");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start node (is Node.js installed?): {e}"))?;
        let stdout: ChildStdout = child.stdout.take().ok_or("node: no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(NodeProc { child, lines })
    }

    /// The next JSON line on stdout, or why there is none within `within`.
    fn next_json(&mut self, what: &str, within: Duration) -> Result<Value, String> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        return Ok(v);
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    return Err(format!(
                        "{what}: no result within {within:?} (exit status {status:?}; run the \
                         script by hand to see its stderr)"
                    ));
                }
            }
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // SIGTERM lets the SDK close its socket; kill if it lingers.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/sdk/node-bench.mjs` above the current directory or this executable, with the SDK
/// installed next to it.
fn find_script(given: &Option<PathBuf>) -> Result<PathBuf, String> {
    let rel = Path::new("tests/sdk/node-bench.mjs");
    let found = match given {
        Some(p) => Some(p.clone()),
        None => {
            let starts = [
                std::env::current_dir().ok(),
                std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(Path::to_path_buf)),
            ];
            starts
                .into_iter()
                .flatten()
                .flat_map(|s| s.ancestors().map(|a| a.join(rel)).collect::<Vec<_>>())
                .find(|p| p.is_file())
        }
    };
    let script = found.ok_or(
        "cannot find tests/sdk/node-bench.mjs (run from the repository, or pass --script)",
    )?;
    let sdk = script.with_file_name("node_modules").join("iii-sdk");
    if !sdk.is_dir() {
        return Err(format!(
            "{} is missing: run scripts/setup-test-deps (npm ci in tests/sdk)",
            sdk.display()
        ));
    }
    Ok(script)
}

/// Runs the scenario; `Ok(false)` when the caller reported a failure.
pub async fn run(o: Opts) -> Result<bool, String> {
    let script = find_script(&o.script)?;
    let hop = Hop::open(&o.common, &o.relay)?;
    let (caller_url, callee_url) = hop.urls();
    let direct = matches!(hop, Hop::Relay { .. });
    let callee_args = if direct {
        vec!["callee".into(), "direct".into()]
    } else {
        vec!["callee".into()]
    };
    let mut callee = NodeProc::spawn(&script, &callee_args, &callee_url, o.otel)?;
    let ready = callee.next_json("node callee", Duration::from_secs(30))?;
    if ready["ready"] != json!(true) {
        return Err(format!("node callee: unexpected first line {ready}"));
    }
    let levels: Vec<String> = o.levels.iter().map(usize::to_string).collect();
    let caller_args = vec![
        "caller".to_string(),
        o.sequential.to_string(),
        levels.join(","),
        o.calls.to_string(),
        o.warmup.to_string(),
        o.payload.to_string(),
    ];
    let cpu_before = hop.pid().and_then(procs::cpu_time);
    let mut caller = NodeProc::spawn(&script, &caller_args, &caller_url, o.otel)?;
    let results = caller.next_json("node caller", Duration::from_secs(600))?;
    let cpu_after = hop.pid().and_then(procs::cpu_time);
    let total_calls = o.warmup + o.sequential + o.calls * o.levels.len();
    let hop_cpu_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(report::r1(
            b.saturating_sub(a).as_secs_f64() * 1e6 / total_calls as f64,
        )),
        _ => None,
    };
    let phases: Vec<Value> = std::iter::once(results["sequential"].clone())
        .chain(results["levels"].as_array().cloned().unwrap_or_default())
        .collect();
    let ok = phases
        .iter()
        .all(|p| p["calls"].as_u64().is_some_and(|n| n > 0));

    let mut table = Table::new(
        format!(
            "node SDK via {} — payload {} B, otel {}, {} warm-up calls; latency in µs",
            hop.label(),
            o.payload,
            if o.otel { "on" } else { "off" },
            o.warmup
        ),
        &["in flight", "calls", "calls/s", "p50", "p90", "p99", "max"],
    );
    for (i, p) in phases.iter().enumerate() {
        let label = if i == 0 {
            "1 (sequential)".to_string()
        } else {
            p["in_flight"].to_string()
        };
        let num = |k: &str| p[k].as_f64().unwrap_or(0.0);
        table.row(vec![
            label,
            p["calls"].to_string(),
            report::thousands(num("calls_per_s")),
            format!("{:.0}", num("p50_us")),
            format!("{:.0}", num("p90_us")),
            format!("{:.0}", num("p99_us")),
            format!("{:.0}", num("max_us")),
        ]);
    }
    if let Some(cpu) = hop_cpu_us {
        table.note(format!(
            "{} CPU per call over the caller's whole run (warm-up included): {cpu} µs",
            hop.label()
        ));
    }
    let result = json!({
        "scenario": "node",
        "ok": ok,
        "target": hop.json(),
        "params": {
            "payload_bytes": o.payload, "warmup_calls": o.warmup,
            "sequential_calls": o.sequential, "calls_per_level": o.calls,
            "concurrency": o.levels, "otel": o.otel,
            "client": "iii-sdk (npm) 0.22.1 in two node processes",
        },
        "sequential": results["sequential"],
        "levels": results["levels"],
        "hop_cpu_us_per_call": hop_cpu_us,
        "machine": report::machine(),
    });
    report::emit(result, &[table]);
    drop(caller);
    drop(callee);
    Ok(ok)
}
