//! What every scenario reports: machine facts (cores, kernel, CPU, load), latency statistics
//! from raw samples, and the output format — one JSON line first (machine readable), then a
//! plain-text table for people.

use std::time::Duration;

use serde_json::{json, Value};

/// Cores, kernel, CPU model, memory and the load average right now.
pub fn machine() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
    });
    let mem_total_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib / 1024)
    });
    json!({
        "cores": cores,
        "kernel": kernel,
        "cpu": cpu,
        "mem_total_mib": mem_total_mib,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "load_at_start": loadavg(),
        "bench_version": env!("CARGO_PKG_VERSION"),
    })
}

/// The 1/5/15-minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let t = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = t.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Percentiles of a set of latency samples, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub min_us: u64,
}

impl Stats {
    /// Nearest-rank percentiles; sorts the samples.
    pub fn of(samples: &mut [u64]) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |p: f64| samples[(((p / 100.0) * n as f64).ceil() as usize).clamp(1, n) - 1];
        Stats {
            count: n,
            mean_us: samples.iter().sum::<u64>() as f64 / n as f64,
            p50_us: at(50.0),
            p90_us: at(90.0),
            p99_us: at(99.0),
            max_us: samples[n - 1],
            min_us: samples[0],
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "min_us": self.min_us,
            "mean_us": (self.mean_us * 10.0).round() / 10.0,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
        })
    }
}

/// Microseconds of a duration, for samples.
pub fn us(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Rounds to one decimal.
pub fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A plain-text table: a header row and rows of cells, columns right-aligned.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A line printed under the table.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0; cols];
        for r in std::iter::once(&self.header).chain(self.rows.iter()) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |r: &Vec<String>| {
            let cells: Vec<String> = (0..cols)
                .map(|i| {
                    let c = r.get(i).map(String::as_str).unwrap_or("");
                    if i == 0 {
                        format!("{c:<w$}", w = width[i])
                    } else {
                        format!("{c:>w$}", w = width[i])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        };
        let mut out = format!("{}\n", self.title);
        out.push_str(&line(&self.header));
        out.push('\n');
        out.push_str(
            &width
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  "),
        );
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str(n);
            out.push('\n');
        }
        out
    }
}

/// Prints the result: the JSON line (with the load average at the end added), then the tables.
pub fn emit(mut result: Value, tables: &[Table]) {
    if let Some(obj) = result.as_object_mut() {
        obj.insert("load_at_end".into(), json!(loadavg()));
    }
    println!("{result}");
    for t in tables {
        println!();
        print!("{}", t.render());
    }
    println!();
}

/// A number with thousands separators, for tables.
pub fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// What [`lanes`] measured: every latency (µs), the failures, the first error.
pub struct Lanes {
    pub samples: Vec<u64>,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Runs `op(0)`, `op(1)`, … `op(total - 1)` from this thread with `in_flight` of them
/// outstanding at any time, timing each.
pub async fn lanes<F, Fut>(in_flight: usize, total: usize, op: F) -> Lanes
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let next = std::cell::Cell::new(0usize);
    let (next, op) = (&next, &op);
    let lane = || async move {
        let mut out = Lanes {
            samples: Vec::new(),
            errors: 0,
            first_error: None,
        };
        while next.get() < total {
            let n = next.get();
            next.set(n + 1);
            let t = std::time::Instant::now();
            let outcome = op(n).await;
            out.samples.push(us(t.elapsed()));
            if let Err(e) = outcome {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
        out
    };
    let results =
        futures_util::future::join_all((0..in_flight.min(total.max(1))).map(|_| lane())).await;
    let mut all = Lanes {
        samples: Vec::with_capacity(total),
        errors: 0,
        first_error: None,
    };
    for r in results {
        all.samples.extend(r.samples);
        all.errors += r.errors;
        all.first_error = all.first_error.or(r.first_error);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = Stats::of(&mut v);
        assert_eq!((s.p50_us, s.p90_us, s.p99_us, s.max_us), (50, 90, 99, 100));
        assert_eq!(Stats::of(&mut []).count, 0);
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(12.0), "12");
    }
}
