//! The `connections` scenario: C idle connected workers per level.
//!
//! Each level opens C lean connections (`rawws`: connect, wait for `workerregistered`, answer
//! pings, stay idle) with a bounded number of handshakes in flight, reports the time to get
//! them all welcomed, then — after a short settle — the engine's RSS growth per connection
//! (`VmRSS` from `/proc/<pid>/status`; the pid is known with `--spawn`, or given with
//! `--engine-pid`). The connections are closed before the next level. A level the open-file
//! limit cannot hold (ours, or the engine's) is skipped and the reason reported.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::args::{parse_count, parse_list, parse_millis};
use crate::procs;
use crate::rawws::{self, Ended};
use crate::report::{self, Stats, Table};
use crate::target::Common;

const ABOUT: &str = "\
Idle worker connections: connect time and engine memory per connection

For each level, opens C idle WebSocket worker connections (each waits for the engine's
workerregistered frame, then only answers pings), measures the time to get all of them
connected, and the engine's RSS growth per connection; closes them before the next level.";

/// The `connections` options.
#[derive(clap::Args, Debug, Clone)]
#[command(about = ABOUT.lines().next(), long_about = ABOUT, args_override_self = true)]
#[command(after_help = "\
The soft open-file limit is raised to the hard limit first; a level that does not fit under
it (here, or in the engine) is skipped and the reason reported.")]
pub struct Opts {
    #[command(flatten)]
    pub common: Common,
    /// Connection counts
    #[arg(long, value_name = "list", value_parser = parse_list)]
    #[arg(default_value = "100,1000,10000")]
    pub levels: ::std::vec::Vec<usize>,
    /// Handshakes in flight while connecting
    #[arg(long, value_name = "n", default_value = "64")]
    #[arg(value_parser = |s: &str| parse_count(s).map(|n| n.max(1)))]
    pub parallel: usize,
    /// Wait after connecting before reading RSS, in ms
    #[arg(long = "settle-ms", value_name = "n", value_parser = parse_millis)]
    #[arg(default_value = "1000")]
    pub settle: Duration,
}

/// File descriptors kept free for everything else.
const FD_MARGIN: u64 = 256;

/// Why a level cannot run, if it cannot.
fn fd_problem(c: usize, own_limit: u64, engine_pid: Option<u32>) -> Option<String> {
    let own_used = procs::open_fds(std::process::id()).unwrap_or(0);
    if own_used + c as u64 + FD_MARGIN > own_limit {
        return Some(format!(
            "the bench's open-file limit is {own_limit} ({own_used} in use); {c} connections \
             need about {} (raise the hard limit: ulimit -Hn)",
            own_used + c as u64 + FD_MARGIN
        ));
    }
    let pid = engine_pid?;
    let limit = procs::nofile_of(pid)?;
    let used = procs::open_fds(pid).unwrap_or(0);
    if used + c as u64 + FD_MARGIN > limit {
        return Some(format!(
            "the engine's open-file limit is {limit} ({used} in use); {c} connections need \
             about {}",
            used + c as u64 + FD_MARGIN
        ));
    }
    None
}

struct Level {
    c: usize,
    connected: usize,
    failed: usize,
    first_error: Option<String>,
    connect_time: Duration,
    handshake: Stats,
    rss_before: Option<u64>,
    rss_connected: Option<u64>,
    rss_after_close: Option<u64>,
    bench_rss_growth: Option<u64>,
    dropped_while_idle: usize,
}

impl Level {
    fn rss_per_conn_kib(&self) -> Option<f64> {
        let (a, b) = (self.rss_before?, self.rss_connected?);
        (self.connected > 0).then(|| (b as f64 - a as f64) / self.connected as f64)
    }

    fn json(&self) -> Value {
        json!({
            "connections": self.c,
            "connected": self.connected,
            "failed": self.failed,
            "first_error": self.first_error,
            "connect_all_ms": report::ms(self.connect_time),
            "connections_per_s": (self.connected as f64 / self.connect_time.as_secs_f64().max(1e-9)).round(),
            "handshake_latency": self.handshake.json(),
            "engine_rss_kib": {
                "before": self.rss_before,
                "connected": self.rss_connected,
                "after_close": self.rss_after_close,
            },
            "engine_rss_per_connection_kib": self.rss_per_conn_kib().map(|x| (x * 100.0).round() / 100.0),
            "bench_rss_per_connection_kib": self.bench_rss_growth.map(|g| report::r1(g as f64 / self.connected.max(1) as f64)),
            "dropped_while_idle": self.dropped_while_idle,
        })
    }
}

async fn run_level(o: &Opts, url: &str, pid: Option<u32>, c: usize) -> Level {
    let client = rawws::client(Duration::from_secs(15));
    let rss_before = pid.and_then(procs::rss_kib);
    let bench_before = procs::rss_kib(std::process::id());
    let (stop_tx, stop_rx) = watch::channel(false);
    let next = Rc::new(Cell::new(0usize));
    let dropped = Rc::new(Cell::new(0usize));
    let mut holders = Vec::with_capacity(c);
    let started = Instant::now();
    let lanes = (0..o.parallel.min(c.max(1))).map(|_| {
        let next = next.clone();
        let client = client.clone();
        let stop_rx = stop_rx.clone();
        let dropped = dropped.clone();
        async move {
            let mut samples = Vec::new();
            let mut handles = Vec::new();
            let mut failed = 0usize;
            let mut first: Option<String> = None;
            while next.get() < c {
                next.set(next.get() + 1);
                let t = Instant::now();
                match rawws::connect_welcomed(&client, url, Duration::from_secs(15)).await {
                    Ok(socket) => {
                        samples.push(report::us(t.elapsed()));
                        let stop = stop_rx.clone();
                        let dropped = dropped.clone();
                        handles.push(actix::spawn(async move {
                            if rawws::hold(socket, stop).await == Ended::Dropped {
                                dropped.set(dropped.get() + 1);
                            }
                        }));
                    }
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            (samples, handles, failed, first)
        }
    });
    let results = futures_util::future::join_all(lanes).await;
    let connect_time = started.elapsed();
    let mut samples = Vec::with_capacity(c);
    let mut failed = 0;
    let mut first_error = None;
    for (s, h, f, e) in results {
        samples.extend(s);
        holders.extend(h);
        failed += f;
        first_error = first_error.or(e);
    }
    let connected = samples.len();
    tokio::time::sleep(o.settle).await;
    let rss_connected = pid.and_then(procs::rss_kib);
    let bench_connected = procs::rss_kib(std::process::id());
    let dropped_while_idle = dropped.get();
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    // Give the engine time to clean up before reading RSS again / starting the next level.
    tokio::time::sleep(o.settle).await;
    let rss_after_close = pid.and_then(procs::rss_kib);
    Level {
        c,
        connected,
        failed,
        first_error,
        connect_time,
        handshake: Stats::of(&mut samples),
        rss_before,
        rss_connected,
        rss_after_close,
        bench_rss_growth: bench_before
            .zip(bench_connected)
            .map(|(a, b)| b.saturating_sub(a)),
        dropped_while_idle,
    }
}

/// Runs the scenario; `Ok(false)` when connections failed or dropped.
pub async fn run(o: Opts) -> Result<bool, String> {
    let (own_limit, hard) = procs::raise_nofile();
    let target = o.common.target()?;
    let pid = target.pid();
    let url = target.url().to_string();
    let mut levels = Vec::new();
    let mut skipped = Vec::new();
    let mut table = Table::new(
        format!(
            "connections to the engine — {} handshakes in flight; open-file limit {own_limit} \
             (hard {hard})",
            o.parallel
        ),
        &[
            "connections",
            "connected",
            "connect all ms",
            "conn/s",
            "handshake p50 µs",
            "p99 µs",
            "engine RSS KiB",
            "KiB/conn",
            "RSS after close",
            "failed",
        ],
    );
    let mut ok = true;
    for &c in &o.levels {
        if let Some(reason) = fd_problem(c, own_limit, pid) {
            eprintln!("connections: skipping {c}: {reason}");
            table.row(vec![c.to_string(), "skipped".into()]);
            table.note(format!("{c} connections skipped: {reason}"));
            skipped.push(json!({"connections": c, "reason": reason}));
            continue;
        }
        let l = run_level(&o, &url, pid, c).await;
        ok &= l.failed == 0 && l.dropped_while_idle == 0;
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        table.row(vec![
            c.to_string(),
            l.connected.to_string(),
            format!("{:.1}", l.connect_time.as_secs_f64() * 1e3),
            report::thousands(l.connected as f64 / l.connect_time.as_secs_f64().max(1e-9)),
            l.handshake.p50_us.to_string(),
            l.handshake.p99_us.to_string(),
            format!("{} → {}", opt(l.rss_before), opt(l.rss_connected)),
            l.rss_per_conn_kib()
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "-".into()),
            opt(l.rss_after_close),
            l.failed.to_string(),
        ]);
        levels.push(l.json());
    }
    let result = json!({
        "scenario": "connections",
        "target": target.json(),
        "params": {
            "levels": o.levels,
            "parallel_handshakes": o.parallel,
            "settle_ms": o.settle.as_millis() as u64,
            "connection": "bare awc WebSocket: waits for workerregistered, answers pings, registers nothing",
            "nofile_soft": own_limit,
            "nofile_hard": hard,
            "engine_nofile": pid.and_then(procs::nofile_of),
            "rss_source": if pid.is_some() { "VmRSS of the engine pid" } else { "unknown pid: pass --engine-pid with --url" },
        },
        "machine": report::machine(),
        "levels": levels,
        "skipped": skipped,
        "ok": ok,
    });
    report::emit(result, &[table]);
    Ok(ok)
}
