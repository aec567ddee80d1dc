//! Exponential backoff as a function of the attempt number, with optional jitter.
//!
//! A nak delay must follow from the message alone (its delivery count), since the attempts
//! before it happened in other processes; tower's `ExponentialBackoff` keeps its attempt count
//! inside a per-request value instead. [`Backoff`] is that pure function, shared by the
//! [`Ack`](crate::ack) layer (nak delays) and the [`Retry`](crate::retry) policy (in-process
//! waits).
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use natty_tower::backoff::Backoff;
//!
//! let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
//! assert_eq!(backoff.delay(1), Duration::from_secs(1));
//! assert_eq!(backoff.delay(3), Duration::from_secs(4));
//! assert_eq!(backoff.delay(10), Duration::from_secs(30));
//! ```

use std::time::Duration;

/// Doubles a base delay per attempt up to a cap; optionally jittered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// `base` for the first attempt, doubling per attempt, never above `max`; no jitter.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: false,
        }
    }

    /// Spread each delay at random over its upper half, so that messages failing together do
    /// not come back together.
    pub const fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retrying after `attempt` (counted from 1; 0 counts as 1).
    pub fn delay(&self, attempt: u64) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        let factor = 2u32.checked_pow(doublings.min(31)).unwrap_or(u32::MAX);
        let delay = self.base.saturating_mul(factor).min(self.max);
        if !self.jitter {
            return delay;
        }
        let half = delay / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=spread))
    }
}

impl Default for Backoff {
    /// One second, doubling up to two minutes, no jitter.
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(120))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_base_and_stops_at_max() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..=6).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u64::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        let backoff =
            Backoff::new(Duration::from_secs(8), Duration::from_secs(60)).with_jitter(true);
        for _ in 0..100 {
            let delay = backoff.delay(1);
            assert!(delay >= Duration::from_secs(4) && delay <= Duration::from_secs(8));
        }
    }
}
