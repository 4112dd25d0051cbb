//! The stream phases of the `cluster` scenario: a fresh writer does `stream::set` of fresh
//! items whose data carries the send time, and a `stream`-trigger subscriber (a [`Sink`])
//! records write → delivery and counts each item's deliveries (lost and doubled ones too).

use std::time::{Duration, Instant};

use iii_client::Client;
use serde_json::{json, Value};

use crate::cluster_load::{Meter, Run};
use crate::report::{self, Stats};
pub use crate::sink::{clock_us, Sink};
use crate::target;

pub const STREAM: &str = "bench";

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
