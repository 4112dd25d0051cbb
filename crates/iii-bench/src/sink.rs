//! What a bench handler saw of a phase (a [`Sink`]): each item's number, how often it arrived
//! (lost and doubled ones too) and how long after its send time, shared between the handler's
//! thread and the phase that waits for every item. Used by the `queue` and `cluster` scenarios.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::oneshot;

use crate::report;

/// Microseconds on a clock the senders and the handler share (one process).
pub fn clock_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    report::us(EPOCH.get_or_init(Instant::now).elapsed())
}

/// What the handler saw of the current phase.
#[derive(Default)]
pub struct Seen {
    phase: u64,
    /// Arrivals per item number.
    pub hits: Vec<u32>,
    pub distinct: usize,
    /// Send → arrival of each item's first arrival, µs.
    pub samples: Vec<u64>,
    pub last: Option<Instant>,
    /// Probes (`{"probe": …}`) seen.
    pub probes: usize,
    done: Option<oneshot::Sender<()>>,
}

/// Shared between the handler and the phase waiting for it.
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

    /// One arrival of `{phase, n, ts}` (or a `{probe}`); other phases' items are ignored.
    pub fn record(&self, data: &Value) {
        let (now, at) = (Instant::now(), clock_us());
        let mut s = self.0.lock().unwrap();
        if data.get("probe").is_some_and(|p| !p.is_null()) {
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

    /// Items of the current phase that arrived so far.
    pub fn ran(&self) -> usize {
        self.0.lock().unwrap().distinct
    }

    pub fn probes(&self) -> usize {
        self.0.lock().unwrap().probes
    }

    pub fn take(&self) -> Seen {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_sink_counts_each_item_once_and_ignores_other_phases() {
        let sink = Sink::default();
        let mut rx = sink.arm(7, 2);
        let ts = clock_us();
        sink.record(&json!({"probe": true}));
        sink.record(&json!({"phase": 6, "n": 0, "ts": ts}));
        sink.record(&json!({"phase": 7, "n": 0, "ts": ts}));
        sink.record(&json!({"phase": 7, "n": 0, "ts": ts}));
        assert!(rx.try_recv().is_err());
        sink.record(&json!({"phase": 7, "n": 1, "ts": ts}));
        assert!(rx.try_recv().is_ok());
        assert_eq!(sink.probes(), 1);
        let seen = sink.take();
        assert_eq!(
            (seen.distinct, seen.samples.len(), seen.hits),
            (2, 2, vec![2, 1])
        );
    }
}
