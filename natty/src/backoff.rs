//! Retry delays: doubling from a base up to a cap, optionally jittered; the one backoff of
//! natty and natty-tower.
//!
//! The delay is a pure function of the attempt number ([`Backoff::delay`]): a nak delay must
//! follow from the message alone (its delivery count), since the attempts before it happened in
//! other processes; tower's `ExponentialBackoff` keeps its attempt count inside a per-request
//! value instead. natty-tower's ack and dead-letter layers (nak delays) and its retry policy (in
//! process waits) use it so. A loop that retries in place (the consume driver and group members
//! reaching their consumer again, publish retries) lets the same value count its attempts:
//! [`Backoff::next_pause`] and [`Backoff::reset`].
//!
//! After a server restart every client sees the failure at the same moment; with plain
//! exponential backoff they would all retry in lockstep and hit the recovering server
//! together. A jittered delay ([`Backoff::with_jitter`]) is drawn from its upper half instead
//! ("equal jitter"): never shorter than half the nominal delay, so retries still back off, and
//! spread over the other half.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use natty::backoff::Backoff;
//!
//! let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
//! assert_eq!(backoff.delay(1), Duration::from_secs(1));
//! assert_eq!(backoff.delay(3), Duration::from_secs(4));
//! assert_eq!(backoff.delay(10), Duration::from_secs(30));
//!
//! // Counting attempts in place: 1 s, 2 s, then from the start again after a success.
//! let mut pauses = backoff;
//! assert_eq!(pauses.next_pause(), Duration::from_secs(1));
//! assert_eq!(pauses.next_pause(), Duration::from_secs(2));
//! pauses.reset();
//! assert_eq!(pauses.next_pause(), Duration::from_secs(1));
//! ```

use std::time::Duration;

/// Doubles a base delay per attempt up to a cap; optionally jittered. See the
/// [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: bool,
    /// Attempts counted by [`Backoff::next_pause`] since the last [`Backoff::reset`].
    attempts: u64,
}

impl Backoff {
    /// `base` for the first attempt, doubling per attempt, never above `max`; no jitter.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: false,
            attempts: 0,
        }
    }

    /// Spread each delay at random over its upper half, so that messages (or clients) failing
    /// together do not come back together.
    pub const fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retrying after `attempt` (counted from 1; 0 counts as 1).
    pub fn delay(&self, attempt: u64) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        let factor = 2u32.checked_pow(doublings.min(31)).unwrap_or(u32::MAX);
        let delay = self.base.saturating_mul(factor).min(self.max);
        if self.jitter {
            jittered(delay)
        } else {
            delay
        }
    }

    /// Count one more failed attempt and return the delay after it: for a loop that retries
    /// in place and keeps its count here.
    pub fn next_pause(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        self.delay(self.attempts)
    }

    /// Count from the first attempt again (the last one worked).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

impl Default for Backoff {
    /// One second, doubling up to two minutes, no jitter.
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(120))
    }
}

/// `delay` with jitter: uniformly between half of it and all of it.
fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    let spread = u64::try_from((delay - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=spread))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

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

    #[test]
    fn pauses_double_up_to_the_longest_and_start_again_after_a_reset() {
        let (first, longest) = (Duration::from_millis(50), Duration::from_millis(400));
        let mut backoff = Backoff::new(first, longest).with_jitter(true);
        let nominal = [50, 100, 200, 400, 400].map(Duration::from_millis);
        for expected in nominal {
            let pause = backoff.next_pause();
            assert!(
                pause >= expected / 2 && pause <= expected,
                "{pause:?} for {expected:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_pause() <= first);
    }

    #[test]
    fn jittered_delays_stay_in_the_upper_half_and_spread() {
        let delay = Duration::from_millis(400);
        let drawn: Vec<Duration> = (0..1000).map(|_| super::jittered(delay)).collect();
        assert!(drawn.iter().all(|d| *d >= delay / 2 && *d <= delay));
        let distinct: std::collections::HashSet<_> = drawn.iter().collect();
        assert!(
            distinct.len() > 100,
            "only {} distinct delays",
            distinct.len()
        );
    }
}
