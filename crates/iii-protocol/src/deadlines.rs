//! Deadlines of pending calls, kept in buckets of one tick: adding one is O(1), and a call that
//! finishes in time is taken out of its bucket at once, so the buckets hold only the calls
//! still in flight (not every call of the last `timeout` seconds). At tens of thousands of
//! calls per second an ordered set of deadlines showed up in the engine's profile; keeping
//! finished ids until their bucket came due held millions of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::ids::IdSet;

/// See the module docs.
#[derive(Debug)]
pub struct Deadlines {
    origin: Instant,
    tick: Duration,
    buckets: BTreeMap<u64, IdSet>,
}

impl Deadlines {
    /// Deadlines resolved to `tick` (rounded up: a call never expires early).
    pub fn new(tick: Duration) -> Self {
        Deadlines {
            origin: Instant::now(),
            tick,
            buckets: BTreeMap::new(),
        }
    }

    /// The tick counts since `origin`, rounded up (`ceil`) or down.
    fn ticks(&self, at: Instant, ceil: bool) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        let tick = self.tick.as_nanos().max(1);
        (if ceil {
            since.div_ceil(tick)
        } else {
            since / tick
        }) as u64
    }

    /// Remembers that `id` is due at `at`; returns the bucket, for [`Deadlines::remove`].
    pub fn add(&mut self, at: Instant, id: Uuid) -> u64 {
        let b = self.ticks(at, true);
        self.buckets.entry(b).or_default().insert(id);
        b
    }

    /// Forgets `id` (added in bucket `tick`).
    pub fn remove(&mut self, tick: u64, id: Uuid) {
        if let Some(bucket) = self.buckets.get_mut(&tick) {
            bucket.remove(&id);
            if bucket.is_empty() {
                self.buckets.remove(&tick);
            }
        }
    }

    /// Every id whose bucket is due at `now`, taken out.
    pub fn due(&mut self, now: Instant) -> Vec<Uuid> {
        let current = self.ticks(now, false);
        let later = self.buckets.split_off(&(current + 1));
        let due = std::mem::replace(&mut self.buckets, later);
        due.into_values().flatten().collect()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.buckets.clear();
    }

    /// How many ids are waiting.
    pub fn len(&self) -> usize {
        self.buckets.values().map(|b| b.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_due_in_their_tick_and_never_early() {
        let mut d = Deadlines::new(Duration::from_millis(10));
        let now = Instant::now();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        d.add(now + Duration::from_millis(5), a);
        d.add(now + Duration::from_millis(50), b);
        assert!(d.due(now).is_empty());
        assert_eq!(d.due(now + Duration::from_millis(20)), vec![a]);
        assert!(d.due(now + Duration::from_millis(45)).is_empty());
        assert_eq!(d.due(now + Duration::from_millis(60)), vec![b]);
        assert!(d.due(now + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn finished_calls_are_forgotten_at_once() {
        let mut d = Deadlines::new(Duration::from_millis(10));
        let now = Instant::now();
        let ticks: Vec<(u64, Uuid)> = (0..1000u128)
            .map(|i| {
                let id = Uuid::from_u128(i);
                (d.add(now + Duration::from_secs(30), id), id)
            })
            .collect();
        assert_eq!(d.len(), 1000);
        for (t, id) in &ticks[..999] {
            d.remove(*t, *id);
        }
        assert_eq!(d.len(), 1);
        assert_eq!(d.due(now + Duration::from_secs(31)), vec![ticks[999].1]);
        assert!(d.is_empty());
    }
}
