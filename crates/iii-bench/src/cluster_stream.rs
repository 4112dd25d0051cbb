//! The stream phases of the `cluster` scenario: a fresh writer does `stream::set` of fresh
//! items whose data carries the send time, and a `stream`-trigger subscriber (a [`Sink`])
//! records write → delivery and counts each item's deliveries (lost and doubled ones too).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use iii_client::Client;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::cluster_load::{Meter, Run};
use crate::report::{self, Stats};
use crate::target;

pub const STREAM: &str = "bench";

/// Microseconds on a clock the writers and the subscriber share (one process).
pub fn clock_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    report::us(EPOCH.get_or_init(Instant::now).elapsed())
}

/// What the subscriber saw of the current phase.
#[derive(Default)]
pub struct Seen {
    phase: u64,
    /// Deliveries per item number.
    pub hits: Vec<u32>,
    pub distinct: usize,
    /// Write → delivery of each item's first delivery, µs.
    pub samples: Vec<u64>,
    pub last: Option<Instant>,
    pub probes: usize,
    done: Option<oneshot::Sender<()>>,
}

/// Shared between the subscriber's handler (on its thread) and the phase waiting for it.
#[derive(Default)]
pub struct Sink(Mutex<Seen>);

impl Sink {
    /// Starts counting phase `phase` of `total` items; the receiver fires once each arrived.
    pub fn arm(&self, phase: u64, total: usize) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.0.lock().unwrap() = Seen {
            phase,
            hits: vec![0; total],
            samples: Vec::with_capacity(total),
            done: Some(tx),
            ..Seen::default()
        };
        rx
    }

    /// A `stream` trigger event; its item's data carries `{phase, n, ts}` (or `{probe}`).
    pub fn record(&self, event: &Value) {
        let (now, at) = (Instant::now(), clock_us());
        let data = &event["event"]["data"];
        let mut s = self.0.lock().unwrap();
        if data["probe"].is_u64() {
            s.probes += 1;
            return;
        }
        let (Some(phase), Some(n), Some(ts)) = (
            data["phase"].as_u64(),
            data["n"].as_u64(),
            data["ts"].as_u64(),
        ) else {
            return;
        };
        if phase != s.phase {
            return;
        }
        let Some(h) = s.hits.get_mut(n as usize) else {
            return;
        };
        *h += 1;
        if *h == 1 {
            s.distinct += 1;
            s.samples.push(at.saturating_sub(ts));
            s.last = Some(now);
        }
        if s.distinct == s.hits.len() {
            if let Some(tx) = s.done.take() {
                let _ = tx.send(());
            }
        }
    }

    pub fn probes(&self) -> usize {
        self.0.lock().unwrap().probes
    }

    pub fn take(&self) -> Seen {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A phase of sets and what the subscriber saw of them.
pub struct Fanout {
    pub sets: Run,
    /// Write (the set sent) → the subscriber's handler runs.
    pub delivery: Stats,
    /// First set sent → last delivery (`None`: not every item arrived).
    pub all_delivered: Option<Duration>,
    pub lost: usize,
    pub duplicates: usize,
}

impl Fanout {
    pub fn delivered_per_s(&self) -> f64 {
        self.all_delivered.map_or(0.0, |d| {
            (self.sets.ops - self.lost) as f64 / d.as_secs_f64().max(1e-9)
        })
    }

    pub fn clean(&self) -> bool {
        self.sets.errors == 0 && self.lost == 0 && self.duplicates == 0
    }

    pub fn json(&self) -> Value {
        json!({
            "sets": self.sets.json(),
            "write_to_delivery_latency": self.delivery.json(),
            "all_delivered_ms": self.all_delivered.map(report::ms),
            "delivered_per_s": self.delivered_per_s().round(),
            "lost": self.lost,
            "duplicates": self.duplicates,
        })
    }
}

/// Writes probe items from `writer` until the subscriber has seen one (its engine's Redis
/// listener and the trigger bind asynchronously).
pub async fn wait_delivered(writer: &Client, sink: &Sink) -> Result<(), String> {
    let before = sink.probes();
    for k in 0..200u64 {
        let item = json!({"stream_name": STREAM, "group_id": "g", "item_id": "probe",
                          "data": {"probe": k}});
        writer
            .trigger("stream::set", item)
            .await
            .map_err(|e| format!("probe stream::set: {}: {}", e.code, e.message))?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if sink.probes() > before {
            return Ok(());
        }
    }
    Err("no probe write reached the stream subscriber within 10 s".into())
}

/// `total` `stream::set` of fresh items from a fresh writer on `url` (`in_flight`
/// outstanding), then waits (up to 10 s) until the subscriber has seen each.
pub async fn sets(
    url: &str,
    pids: [u32; 3],
    sink: &Sink,
    phase: u64,
    in_flight: usize,
    total: usize,
    blob: &str,
) -> Result<Fanout, String> {
    let writer = Client::connect(url, target::bench_options("bench-cluster-writer"))
        .await
        .map_err(|e| format!("writer: {e}"))?;
    wait_delivered(&writer, sink).await?;
    let all_arrived = sink.arm(phase, total);
    let meter = Meter::start(pids);
    let started = Instant::now();
    let mut l = report::lanes(in_flight, total, |n| {
        let item = json!({"stream_name": STREAM, "group_id": "g",
                          "item_id": format!("p{phase}-{n}"),
                          "data": {"phase": phase, "n": n, "ts": clock_us(), "blob": blob}});
        let writer = &writer;
        async move {
            let r = writer.trigger("stream::set", item).await;
            r.map(drop)
                .map_err(|e| format!("{}: {}", e.code, e.message))
        }
    })
    .await;
    let elapsed = started.elapsed();
    if total > 0 {
        let _ = tokio::time::timeout(Duration::from_secs(10), all_arrived).await;
    }
    let cpu = meter.stop();
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut seen = sink.take();
    writer.shutdown().await;
    let duplicates: u32 = seen.hits.iter().map(|h| h.saturating_sub(1)).sum();
    Ok(Fanout {
        sets: Run {
            in_flight,
            ops: l.samples.len(),
            elapsed,
            latency: Stats::of(&mut l.samples),
            errors: l.errors,
            first_error: l.first_error,
            cpu,
        },
        delivery: Stats::of(&mut seen.samples),
        all_delivered: seen
            .last
            .filter(|_| seen.distinct == total)
            .map(|t| t - started),
        lost: total - seen.distinct,
        duplicates: duplicates as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_counts_each_item_once_and_ignores_other_phases() {
        let sink = Sink::default();
        let mut rx = sink.arm(3, 2);
        let ts = clock_us();
        let ev = |data: Value| json!({"type": "stream", "event": {"type": "create", "data": data}});
        sink.record(&ev(json!({"probe": 1})));
        sink.record(&ev(json!({"phase": 2, "n": 0, "ts": ts})));
        sink.record(&ev(json!({"phase": 3, "n": 0, "ts": ts})));
        sink.record(&ev(json!({"phase": 3, "n": 0, "ts": ts})));
        assert!(rx.try_recv().is_err());
        sink.record(&ev(json!({"phase": 3, "n": 1, "ts": ts})));
        assert!(rx.try_recv().is_ok());
        assert_eq!(sink.probes(), 1);
        let seen = sink.take();
        assert_eq!(
            (seen.distinct, seen.samples.len(), seen.hits),
            (2, 2, vec![2, 1])
        );
    }
}
