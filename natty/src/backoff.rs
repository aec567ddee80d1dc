//! Retry delays with jitter.
//!
//! After a server restart every client sees the failure at the same moment; with plain
//! exponential backoff they would all retry in lockstep and hit the recovering server
//! together. Each delay is drawn from its upper half instead ("equal jitter"): never shorter
//! than half the nominal delay, so retries still back off, and spread over the other half.

use std::time::Duration;

/// `delay` with jitter: uniformly between half of it and all of it.
pub(crate) fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
