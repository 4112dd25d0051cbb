//! The `startup` scenario: how long from spawning the engine process until it accepts a
//! worker (a WebSocket connection welcomed with `workerregistered`), retried in a tight loop
//! (every millisecond), repeated; also when the ready file appeared and how long a SIGTERM
//! stop took. Needs to spawn the engine, so it does not run against `--url`.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::args::parse_count;
use crate::procs::{self, ScratchDir};
use crate::rawws;
use crate::report::{self, Stats, Table};

const ABOUT: &str = "\
Time from spawning the engine to its first accepted worker connection

Spawns the engine (the `iii` binary next to iii-bench) on a free port with the bench config
(trusted listener + file-based stream module in a fresh temp dir), connects in a tight loop
(retry every 1 ms) until a worker connection is welcomed, then stops it with SIGTERM. Repeated.";

/// The `startup` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
pub struct Opts {
    /// How many starts
    #[arg(long, value_name = "n", default_value = "10")]
    #[arg(value_parser = |s: &str| parse_count(s).map(|n| n.max(1)))]
    pub repeat: usize,
    /// Accepted for symmetry (this scenario always spawns)
    #[arg(long)]
    pub spawn: bool,
    /// Refused when given: the scenario cannot run against a running engine.
    #[arg(long, hide = true)]
    pub url: Option<String>,
}

/// Kills the child if a start goes wrong half-way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

struct Start {
    first_connection: Duration,
    ready_file: Option<Duration>,
    stop: Duration,
    attempts: usize,
}

async fn one_start(exe: &std::path::Path) -> Result<Start, String> {
    let port = procs::free_port()?;
    let dir = ScratchDir::new("startup")?;
    let url = format!("ws://127.0.0.1:{port}");
    let client = rawws::client(Duration::from_secs(2));
    let t0 = Instant::now();
    let (child, ready_path) = procs::start_engine(exe, &dir, port)?;
    let mut guard = Guard(child);
    let mut ready_file = None;
    let mut attempts = 0usize;
    let first_connection = loop {
        attempts += 1;
        if ready_file.is_none() && ready_path.exists() {
            ready_file = Some(t0.elapsed());
        }
        match rawws::connect_welcomed(&client, &url, Duration::from_secs(2)).await {
            Ok(socket) => {
                let at = t0.elapsed();
                drop(socket);
                break at;
            }
            Err(_) => {
                if let Ok(Some(status)) = guard.0.try_wait() {
                    let log =
                        std::fs::read_to_string(dir.path().join("process.log")).unwrap_or_default();
                    return Err(format!(
                        "the engine exited during startup ({status}):\n{log}"
                    ));
                }
                if t0.elapsed() > Duration::from_secs(20) {
                    return Err("the engine accepted no connection within 20 s".into());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    if ready_file.is_none() {
        // The listener took connections before the ready file was written; note when it is.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ready_path.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if ready_path.exists() {
            ready_file = Some(t0.elapsed());
        }
    }
    let stop_started = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(guard.0.id() as libc::pid_t, libc::SIGTERM) };
    loop {
        if let Ok(Some(_)) = guard.0.try_wait() {
            break;
        }
        if stop_started.elapsed() > Duration::from_secs(10) {
            return Err("the engine did not stop within 10 s of SIGTERM".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(Start {
        first_connection,
        ready_file,
        stop: stop_started.elapsed(),
        attempts,
    })
}

/// Runs the scenario; `Err` when it cannot (e.g. `--url`).
pub async fn run(o: Opts) -> Result<bool, String> {
    if o.url.is_some() {
        return Err("startup spawns the engine itself; it does not run against --url".into());
    }
    let exe = procs::engine_exe()?;
    let mut starts = Vec::with_capacity(o.repeat);
    for _ in 0..o.repeat {
        starts.push(one_start(&exe).await?);
    }
    let mut first: Vec<u64> = starts
        .iter()
        .map(|s| report::us(s.first_connection))
        .collect();
    let mut ready: Vec<u64> = starts
        .iter()
        .filter_map(|s| s.ready_file.map(report::us))
        .collect();
    let mut stop: Vec<u64> = starts.iter().map(|s| report::us(s.stop)).collect();
    let raw: Vec<u64> = first.clone();
    let (f, r, s) = (
        Stats::of(&mut first),
        Stats::of(&mut ready),
        Stats::of(&mut stop),
    );
    let summary = |st: &Stats| json!({"min_ms": st.min_us as f64 / 1e3, "median_ms": st.p50_us as f64 / 1e3, "max_ms": st.max_us as f64 / 1e3});
    let result = json!({
        "scenario": "startup",
        "target": {"kind": "engine", "spawned": true},
        "params": {
            "repeat": o.repeat,
            "retry_interval_ms": 1,
            "config": "trusted listener on 127.0.0.1 + file-based stream module, fresh temp dir",
            "log_level": "warn",
        },
        "machine": report::machine(),
        "first_connection": summary(&f),
        "ready_file": summary(&r),
        "sigterm_stop": summary(&s),
        "first_connection_ms_each": raw.iter().map(|u| *u as f64 / 1e3).collect::<Vec<_>>(),
        "connect_attempts_each": starts.iter().map(|s| s.attempts).collect::<Vec<_>>(),
        "ok": true,
    });
    let mut table = Table::new(
        format!("startup — {} spawns of the engine; ms", o.repeat),
        &["measure", "min", "median", "max"],
    );
    for (name, st) in [
        ("spawn → first welcomed connection", &f),
        ("spawn → ready file seen", &r),
        ("SIGTERM → exit", &s),
    ] {
        table.row(vec![
            name.into(),
            format!("{:.1}", st.min_us as f64 / 1e3),
            format!("{:.1}", st.p50_us as f64 / 1e3),
            format!("{:.1}", st.max_us as f64 / 1e3),
        ]);
    }
    report::emit(result, &[table]);
    Ok(true)
}
