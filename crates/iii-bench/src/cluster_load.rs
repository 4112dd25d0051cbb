//! The call phases of the `cluster` scenario (`cluster.rs` sets up Redis and the engines;
//! `cluster_report.rs` prints the tables; `cluster_stream.rs` has the stream phases): calls of
//! one function (`bench::echo`, or its `iii-bridge` alias `bridge::bench::echo`) from one
//! caller, each answer of a first call checked against its input, and several callers at once
//! for the 1 → 2 engines comparison; and what every phase reads, the CPU time of both engines,
//! Redis, the bench and the whole machine.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use iii_client::{Client, TriggerRequest};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::procs;
use crate::report::{self, Lanes, Stats};
use crate::target::{self, Threads};

pub const ECHO: &str = "bench::echo";
/// The same function under another name: a second callee connection on one engine.
pub const ECHO2: &str = "bench::echo2";
/// The `iii-bridge` forward alias of [`ECHO`] on engine A: A calls `bench::echo` on B as one of
/// B's workers.
pub const BRIDGED: &str = "bridge::bench::echo";

/// The processes a phase watches, in the order of [`Cpu::secs`].
pub const WATCHED: [&str; 4] = ["engine A", "engine B", "redis", "bench"];

/// CPU used during a phase: seconds per watched process and of its busiest thread, and the
/// whole machine's busy seconds (all cores, from `/proc/stat`).
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub secs: [Option<f64>; 4],
    pub busiest_thread: [Option<f64>; 4],
    pub machine: Option<f64>,
    pub wall: f64,
}

impl Cpu {
    /// Cores process `i` kept busy on average.
    pub fn cores(&self, i: usize) -> Option<f64> {
        self.secs[i].map(|s| s / self.wall.max(1e-9))
    }

    /// Cores the busiest thread of process `i` kept busy (1.0: that thread never waited).
    pub fn busiest_cores(&self, i: usize) -> Option<f64> {
        self.busiest_thread[i].map(|s| s / self.wall.max(1e-9))
    }

    pub fn machine_cores(&self) -> Option<f64> {
        self.machine.map(|s| s / self.wall.max(1e-9))
    }

    /// Cores busy outside the watched processes (other programs, the kernel's own threads).
    pub fn other_cores(&self) -> Option<f64> {
        let watched: Option<f64> = self.secs.iter().copied().sum();
        self.machine_cores()
            .zip(watched)
            .map(|(m, w)| (m - w / self.wall.max(1e-9)).max(0.0))
    }

    /// Microseconds of process `i` per operation.
    pub fn us_per(&self, i: usize, ops: usize) -> Option<f64> {
        self.secs[i].map(|s| s * 1e6 / ops.max(1) as f64)
    }

    pub fn json(&self, ops: usize) -> Value {
        let per = |i: usize| self.us_per(i, ops).map(report::r1);
        let cores = |c: Option<f64>| c.map(|c| (c * 100.0).round() / 100.0);
        json!({
            "us_per_op": {"engine_a": per(0), "engine_b": per(1), "redis": per(2), "bench": per(3)},
            "cores": {"engine_a": cores(self.cores(0)), "engine_b": cores(self.cores(1)),
                      "redis": cores(self.cores(2)), "bench": cores(self.cores(3)),
                      "machine_busy": cores(self.machine_cores()),
                      "others": cores(self.other_cores())},
            "busiest_thread_cores": {"engine_a": cores(self.busiest_cores(0)),
                      "engine_b": cores(self.busiest_cores(1)), "redis": cores(self.busiest_cores(2)),
                      "bench": cores(self.busiest_cores(3))},
        })
    }
}

/// Busy time of all cores so far (user, nice, system, irq, softirq, steal of `/proc/stat`).
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<u64>();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| busy as f64 / hz as f64)
}

/// On-CPU nanoseconds so far of each thread of a process (`/proc/<pid>/task/*/schedstat`).
fn thread_ns(pid: u32) -> HashMap<String, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let text = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let ns = text.split_whitespace().next()?.parse().ok()?;
            Some((t.file_name().to_string_lossy().into_owned(), ns))
        })
        .collect()
}

/// CPU readings at the start of a phase.
pub struct Meter {
    pids: [u32; 4],
    at: [Option<Duration>; 4],
    threads: [HashMap<String, u64>; 4],
    machine: Option<f64>,
    started: Instant,
}

impl Meter {
    /// `pids`: engine A, engine B, redis-server (this process is added).
    pub fn start(pids: [u32; 3]) -> Meter {
        let pids = [pids[0], pids[1], pids[2], std::process::id()];
        Meter {
            at: pids.map(procs::cpu_time),
            threads: pids.map(thread_ns),
            pids,
            machine: machine_busy(),
            started: Instant::now(),
        }
    }

    pub fn stop(&self) -> Cpu {
        let wall = self.started.elapsed().as_secs_f64();
        let mut secs = [None; 4];
        for (i, s) in secs.iter_mut().enumerate() {
            *s = self.at[i]
                .zip(procs::cpu_time(self.pids[i]))
                .map(|(a, b)| b.saturating_sub(a).as_secs_f64());
        }
        let mut busiest_thread = [None; 4];
        for (i, b) in busiest_thread.iter_mut().enumerate() {
            let before = &self.threads[i];
            *b = thread_ns(self.pids[i])
                .iter()
                .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
                .max()
                .map(|ns| ns as f64 / 1e9);
        }
        let machine = self.machine.zip(machine_busy()).map(|(a, b)| b - a);
        Cpu {
            secs,
            busiest_thread,
            machine,
            wall,
        }
    }
}

/// One measured phase of calls or sets.
pub struct Run {
    pub in_flight: usize,
    pub ops: usize,
    pub elapsed: Duration,
    pub latency: Stats,
    pub errors: usize,
    pub first_error: Option<String>,
    pub cpu: Cpu,
}

impl Run {
    pub fn per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn json(&self) -> Value {
        json!({
            "in_flight": self.in_flight,
            "ops": self.ops,
            "elapsed_ms": report::ms(self.elapsed),
            "per_s": self.per_s().round(),
            "latency": self.latency.json(),
            "errors": self.errors,
            "first_error": self.first_error,
            "cpu": self.cpu.json(self.ops),
        })
    }
}

/// `{"blob":"xxx…"}`, `bytes` long once serialized.
pub fn payload(bytes: usize) -> Value {
    json!({ "blob": "x".repeat(bytes.saturating_sub(r#"{"blob":""}"#.len())) })
}

/// Connects a worker serving `function` (an echo: its input minus `_caller_worker_id`) on
/// `arbiter`.
pub async fn callee(
    arbiter: &actix::ArbiterHandle,
    url: &str,
    function: &'static str,
) -> Result<Client, String> {
    target::connect_on(
        arbiter,
        url.to_string(),
        target::bench_options("bench-cluster-callee"),
        |c| {
            c.register_function(function, |mut input: Value| async move {
                if let Some(o) = input.as_object_mut() {
                    o.remove("_caller_worker_id");
                }
                Ok(input)
            });
        },
    )
    .await
    .map_err(|e| format!("callee: {e}"))
}

/// Calls `function` until it answers; `function_not_found` is retried (the cluster directory
/// is refreshed every heartbeat). Returns how long it took.
pub async fn wait_known(caller: &Client, function: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::from("no answer");
    while started.elapsed() < Duration::from_secs(15) {
        let req = TriggerRequest {
            function_id: function.into(),
            payload: json!({"probe": true}),
            timeout: Some(Duration::from_secs(2)),
            metadata: None,
            action: None,
        };
        match caller.trigger_with(req).await {
            Ok(_) => return Ok(started.elapsed()),
            Err(e) => last = format!("{}: {}", e.code, e.message),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("{function} never became callable: {last}"))
}

/// `total` calls of `function` with `in_flight` outstanding, from this thread.
async fn echo_lanes(
    caller: &Client,
    function: &str,
    in_flight: usize,
    total: usize,
    data: &Value,
) -> Lanes {
    report::lanes(in_flight, total, |_| async {
        let outcome = caller.trigger(function, data.clone()).await;
        outcome
            .map(drop)
            .map_err(|e| format!("{}: {}", e.code, e.message))
    })
    .await
}

/// One call of the echo `function`: an error, or an answer other than `data`, is the phase's
/// failure (a path that does not reach the callee is not measured).
async fn check_echo(caller: &Client, function: &str, data: &Value) -> Result<(), String> {
    let answer = caller
        .trigger(function, data.clone())
        .await
        .map_err(|e| format!("{function} failed: {}: {}", e.code, e.message))?;
    if answer != *data {
        return Err(format!("{function} answered {answer}, not its input"));
    }
    Ok(())
}

/// A fresh caller on `url`: waits until the echo `function` answers and checks one answer,
/// warms up, then makes `total` calls with `in_flight` outstanding.
pub async fn calls(
    url: &str,
    function: &str,
    pids: [u32; 3],
    in_flight: usize,
    total: usize,
    warmup: usize,
    data: &Value,
) -> Result<Run, String> {
    let caller = Client::connect(url, target::bench_options("bench-cluster-caller"))
        .await
        .map_err(|e| format!("caller: {e}"))?;
    wait_known(&caller, function).await?;
    check_echo(&caller, function, data).await?;
    echo_lanes(&caller, function, in_flight, warmup, data).await;
    let meter = Meter::start(pids);
    let started = Instant::now();
    let mut l = echo_lanes(&caller, function, in_flight, total, data).await;
    let (elapsed, cpu) = (started.elapsed(), meter.stop());
    caller.shutdown().await;
    Ok(Run {
        in_flight,
        ops: l.samples.len(),
        elapsed,
        latency: Stats::of(&mut l.samples),
        errors: l.errors,
        first_error: l.first_error,
        cpu,
    })
}

/// The 1 → 2 engines load: one caller per (url, function) (each on a thread of `threads`,
/// `in_flight` calls outstanding, `per_caller` calls), all started together once every caller
/// has warmed up. Returns the whole (first call → last answer) and each caller's answers.
pub async fn load(
    threads: &Threads,
    targets: &[(String, &'static str)],
    pids: [u32; 3],
    in_flight: usize,
    per_caller: usize,
    warmup: usize,
    data: &Value,
) -> Result<(Run, Vec<usize>), String> {
    let mut callers = Vec::new();
    for (i, (url, function)) in targets.iter().enumerate() {
        let c = target::connect_on(
            &threads.pick(i),
            url.clone(),
            target::bench_options("bench-cluster-load"),
            |_| {},
        )
        .await
        .map_err(|e| format!("caller {i}: {e}"))?;
        wait_known(&c, function).await?;
        callers.push((c, *function));
    }
    let go = |(c, f): &(Client, &'static str), i: usize, n: usize| {
        let (c, f, data) = (c.clone(), *f, data.clone());
        target::run_on(&threads.pick(i), move || async move {
            echo_lanes(&c, f, in_flight, n, &data).await
        })
    };
    for r in callers
        .iter()
        .enumerate()
        .map(|(i, c)| go(c, i, warmup))
        .collect::<Vec<_>>()
    {
        r.await.map_err(|_| "a caller thread stopped".to_string())?;
    }
    let meter = Meter::start(pids);
    let started = Instant::now();
    let pending: Vec<oneshot::Receiver<Lanes>> = callers
        .iter()
        .enumerate()
        .map(|(i, c)| go(c, i, per_caller))
        .collect();
    let mut all = Lanes {
        samples: Vec::new(),
        errors: 0,
        first_error: None,
    };
    let mut per = Vec::new();
    for r in pending {
        let l = r.await.map_err(|_| "a caller thread stopped".to_string())?;
        per.push(l.samples.len() - l.errors);
        all.samples.extend(l.samples);
        all.errors += l.errors;
        all.first_error = all.first_error.or(l.first_error);
    }
    let (elapsed, cpu) = (started.elapsed(), meter.stop());
    for (c, _) in &callers {
        c.shutdown().await;
    }
    let run = Run {
        in_flight: in_flight * targets.len(),
        ops: all.samples.len(),
        elapsed,
        latency: Stats::of(&mut all.samples),
        errors: all.errors,
        first_error: all.first_error,
        cpu,
    };
    Ok((run, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_size_and_cpu_adds_up() {
        assert_eq!(payload(100).to_string().len(), 100);
        let cpu = Cpu {
            secs: [Some(0.5), Some(0.25), Some(0.0), Some(0.5)],
            busiest_thread: [Some(0.25), None, None, None],
            machine: Some(1.5),
            wall: 1.0,
        };
        assert_eq!(cpu.us_per(0, 1000), Some(500.0));
        assert_eq!(cpu.other_cores(), Some(0.25));
        assert_eq!(cpu.busiest_cores(0), Some(0.25));
        assert!(machine_busy().is_some());
        assert!(!thread_ns(std::process::id()).is_empty());
    }
}
