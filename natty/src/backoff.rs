//! Retry delays with jitter.
//!
//! After a server restart every client sees the failure at the same moment; with plain
//! exponential backoff they would all retry in lockstep and hit the recovering server
//! together. Each delay is drawn from its upper half instead ("equal jitter"): never shorter
//! than half the nominal delay, so retries still back off, and spread over the other half.

use std::time::Duration;

/// Pauses before a retry that double from `first` up to `longest`, each jittered: what the
/// consume driver and group members wait between attempts to reach a consumer again.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) const fn new(first: Duration, longest: Duration) -> Self {
        Self {
            first,
            longest,
            next: first,
        }
    }

    /// The pause to take now (jittered); the one after is twice as long, up to the longest.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = jittered(self.next);
        self.next = (self.next * 2).min(self.longest);
        pause
    }

    /// Start again from the first pause (the last attempt worked).
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// `delay` with jitter: uniformly between half of it and all of it.
fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn pauses_double_up_to_the_longest_and_start_again_after_a_reset() {
        let (first, longest) = (Duration::from_millis(50), Duration::from_millis(400));
        let mut backoff = super::Backoff::new(first, longest);
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
