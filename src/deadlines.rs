//! Deadlines of pending calls, kept in buckets of one sweep tick: adding one is O(1) amortised
//! and a call that finishes in time costs nothing more (it is simply skipped when its bucket
//! comes due). At tens of thousands of calls per second an ordered set of deadlines, with an
//! insert and a remove per call, showed up in the engine's profile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// See the module docs.
pub struct Deadlines {
    origin: Instant,
    tick: Duration,
    buckets: BTreeMap<u64, Vec<Uuid>>,
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

    /// Remembers that `id` is due at `at`.
    pub fn add(&mut self, at: Instant, id: Uuid) {
        let b = self.ticks(at, true);
        self.buckets.entry(b).or_default().push(id);
    }

    /// Every id whose bucket is due at `now` (including ids that have finished meanwhile: the
    /// caller skips those).
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
}
