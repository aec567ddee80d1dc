//! The member's decisions about its pin: which pin a pulled message carries, when a delivery
//! went missing, and when the gate shut after a pin change, a stall or a lost delivery opens
//! again. Pure functions of what the server said, so the run loop only does the I/O.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Waiting, after a pin change or a stall, until the messages of an earlier pin are settled
/// or back with this instance.
pub(super) struct Gate {
    pub(super) until: Instant,
    pub(super) check_at: Instant,
}

impl Gate {
    /// A gate shut at `now`, checked at once and open at the latest after `takeover`.
    pub(super) fn shut(now: Instant, takeover: Duration) -> Self {
        Self {
            until: now + takeover,
            check_at: now,
        }
    }
}

/// What the consumer's info says about a shut gate.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum GateCheck {
    /// Another instance holds the pin: what this one holds is its.
    PinLost,
    /// The earlier pin's messages are all settled or held here, or the takeover wait is over
    /// (`late`: some were still pending then).
    Open { late: bool },
    /// Still waiting for the earlier pin's messages.
    Wait,
}

/// Decide a gate check from the consumer's pinned client, this instance's `pin`, the
/// consumer's pending acks and the messages this instance holds; `until` is the gate's
/// takeover deadline.
pub(super) fn check_gate(
    pinned: Option<&str>,
    pin: Option<&str>,
    pending: usize,
    held: usize,
    until: Instant,
    now: Instant,
) -> GateCheck {
    if pinned.is_some() && pinned != pin {
        GateCheck::PinLost
    } else if pending <= held || now >= until {
        GateCheck::Open {
            late: pending > held,
        }
    } else {
        GateCheck::Wait
    }
}

/// Which pin a pulled message carries, against this instance's current one.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PinSeen<'a> {
    /// No pin header.
    Unpinned,
    /// A pin this instance lost: the message is stale.
    Revoked,
    /// The current pin.
    Current,
    /// A pin new to this instance: it was (re)pinned.
    New(&'a str),
}

/// Sort the pin header `value` of a pulled message.
pub(super) fn seen_pin<'a>(
    value: Option<&'a str>,
    pin: Option<&str>,
    revoked: &HashSet<Arc<str>>,
) -> PinSeen<'a> {
    match value {
        None => PinSeen::Unpinned,
        Some(value) if revoked.contains(value) => PinSeen::Revoked,
        Some(value) if pin == Some(value) => PinSeen::Current,
        Some(value) => PinSeen::New(value),
    }
}

/// The highest consumer (delivery) sequence seen: a jump past it means a delivery never
/// arrived (lost with a dying server), so the lanes wait for its redelivery.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    last: Option<u64>,
}

impl Deliveries {
    /// Note delivery sequence `delivery`; whether one before it went missing.
    pub(super) fn saw(&mut self, delivery: u64) -> bool {
        let gap = self.last.is_some_and(|last| delivery > last + 1);
        self.last = Some(self.last.map_or(delivery, |last| last.max(delivery)));
        gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_opens_when_pending_acks_are_all_held() {
        let now = Instant::now();
        let until = now + Duration::from_secs(5);
        assert_eq!(
            check_gate(Some("p"), Some("p"), 3, 3, until, now),
            GateCheck::Open { late: false }
        );
        assert_eq!(
            check_gate(None, Some("p"), 4, 3, until, now),
            GateCheck::Wait
        );
    }

    #[test]
    fn gate_opens_late_at_the_takeover_deadline() {
        let now = Instant::now();
        assert_eq!(
            check_gate(Some("p"), Some("p"), 4, 3, now, now),
            GateCheck::Open { late: true }
        );
    }

    #[test]
    fn another_pin_means_the_pin_is_lost() {
        let now = Instant::now();
        let until = now + Duration::from_secs(5);
        assert_eq!(
            check_gate(Some("q"), Some("p"), 0, 0, until, now),
            GateCheck::PinLost
        );
        assert_eq!(
            check_gate(Some("q"), None, 0, 0, until, now),
            GateCheck::PinLost
        );
    }

    #[test]
    fn a_revoked_pin_wins_over_the_current_one() {
        let revoked: HashSet<Arc<str>> = [Arc::from("old")].into_iter().collect();
        assert_eq!(seen_pin(None, Some("p"), &revoked), PinSeen::Unpinned);
        assert_eq!(
            seen_pin(Some("old"), Some("old"), &revoked),
            PinSeen::Revoked
        );
        assert_eq!(seen_pin(Some("p"), Some("p"), &revoked), PinSeen::Current);
        assert_eq!(seen_pin(Some("q"), Some("p"), &revoked), PinSeen::New("q"));
        assert_eq!(seen_pin(Some("q"), None, &revoked), PinSeen::New("q"));
    }

    #[test]
    fn a_jump_in_delivery_sequence_is_a_gap() {
        let mut deliveries = Deliveries::default();
        assert!(!deliveries.saw(5), "the first delivery is no gap");
        assert!(!deliveries.saw(6));
        assert!(deliveries.saw(8), "7 went missing");
        assert!(!deliveries.saw(7), "a late one is no gap");
        assert!(!deliveries.saw(9), "the highest seen stays 8");
    }
}
