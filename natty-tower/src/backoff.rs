//! Exponential backoff as a function of the attempt number, with optional jitter: natty's
//! [`Backoff`], re-exported where natty-tower's layers take it.
//!
//! A nak delay must follow from the message alone (its delivery count), since the attempts
//! before it happened in other processes; tower's `ExponentialBackoff` keeps its attempt count
//! inside a per-request value instead. [`Backoff`] is that pure function, shared by the
//! [`Ack`](crate::ack) and [`DeadLetter`](crate::dead_letter) layers (nak delays), the
//! [`Retry`](crate::retry) policy (in-process waits) and natty itself (reconnects, publish
//! retries); see [`natty::backoff`].
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

pub use natty::backoff::Backoff;
