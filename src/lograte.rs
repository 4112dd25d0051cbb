//! Rate-limited log lines, for events an attacker can cause at will (a flood of denied calls
//! must not become a flood of log lines written on the routing thread).
//!
//! A [`LogLimiter`] lets a few lines of one kind through per second; the rest are counted, and
//! the count is reported in one line when the second is over.

use crate::outbox::mono_ms;

/// See the module docs.
#[derive(Debug)]
pub struct LogLimiter {
    what: &'static str,
    per_second: u32,
    window_start: u64,
    in_window: u32,
    suppressed: u64,
    last_used: u64,
}

impl LogLimiter {
    /// At most `per_second` lines about `what` each second.
    pub fn new(what: &'static str, per_second: u32) -> Self {
        LogLimiter {
            what,
            per_second,
            window_start: mono_ms(),
            in_window: 0,
            suppressed: 0,
            last_used: mono_ms(),
        }
    }

    /// May a line be logged now? If not, it is counted.
    pub fn allow(&mut self) -> bool {
        self.allow_at(mono_ms())
    }

    fn allow_at(&mut self, now: u64) -> bool {
        self.roll_at(now);
        self.last_used = now;
        if self.in_window < self.per_second {
            self.in_window += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Was a line allowed or counted in the last two seconds? (Owners of many limiters drop the
    /// quiet ones.)
    pub fn recently_used(&self) -> bool {
        mono_ms().saturating_sub(self.last_used) < 2000 || self.suppressed > 0
    }

    /// Starts a new second when the current one is over, reporting what was suppressed in it.
    /// Also worth calling from a timer, so the last count is not held back.
    pub fn roll(&mut self) {
        self.roll_at(mono_ms());
    }

    fn roll_at(&mut self, now: u64) {
        if now.saturating_sub(self.window_start) < 1000 {
            return;
        }
        if self.suppressed > 0 {
            log::warn!(
                "{} similar lines suppressed ({})",
                self.suppressed,
                self.what
            );
        }
        self.window_start = now;
        self.in_window = 0;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_few_through_per_second() {
        let mut l = LogLimiter::new("test", 3);
        let t = l.window_start;
        let allowed = (0..100).filter(|_| l.allow_at(t + 10)).count();
        assert_eq!(allowed, 3);
        assert_eq!(l.suppressed, 97);
        assert!(!l.allow_at(t + 999));
        assert!(l.allow_at(t + 1000));
        assert_eq!(l.suppressed, 0);
    }
}
