//! Sorting handler errors into what to do with the message: retry later, give up, or ack anyway.
//!
//! A handler error alone does not say whether the message should come back. A database that is
//! down is worth retrying; a payload that does not parse never will be. [`ClassifyError`] makes
//! that call once, and every layer that settles or retries ([`Ack`](crate::ack),
//! [`Retry`](crate::retry), [`DeadLetter`](crate::dead_letter)) asks the same classifier, in the
//! way tower-http's `ClassifyResponse` decides what counts as a failure.
//!
//! [`DefaultClassifier`] looks through an error and its sources for a decision:
//!
//! | found in the chain | decision |
//! | --- | --- |
//! | a [`HandlerError`] | the decision it carries |
//! | a bad JSON payload ([`DecodeError`]) | [`Decision::GiveUp`] |
//! | [`NotLeader`](crate::leader::LeaderErrorKind::NotLeader), a panic, a tower timeout or overload | [`Decision::Retry`] |
//! | anything else | [`Decision::Retry`] |
//!
//! Any `Fn(&E) -> Decision` is a classifier too.
//!
//! # Example
//! ```
//! use natty_tower::classify::{ClassifyError, Decision, DefaultClassifier, HandlerError};
//! use natty_tower::error::BoxError;
//!
//! // A handler decides for itself that a message is hopeless.
//! let err: BoxError = HandlerError::give_up("customer does not exist").into();
//! assert_eq!(DefaultClassifier.classify(&err), Decision::GiveUp);
//!
//! // Anything without a decision is retried.
//! let err: BoxError = "database unavailable".into();
//! assert_eq!(DefaultClassifier.classify(&err), Decision::Retry);
//!
//! // A closure classifies a handler's own error type.
//! #[derive(Debug)]
//! enum OrderError { Invalid, Busy }
//! let classify = |err: &OrderError| match err {
//!     OrderError::Invalid => Decision::GiveUp,
//!     OrderError::Busy => Decision::Retry,
//! };
//! assert_eq!(classify.classify(&OrderError::Invalid), Decision::GiveUp);
//! ```

mod error;

use std::error::Error as StdError;
use std::time::Duration;

use natty::error::ConsumeErrorKind;

pub use self::error::HandlerError;
use crate::error::{BoxError, Error};
use crate::json::DecodeError;
use crate::leader::LeaderError;

/// What to do with a message whose handler failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Try again: in process if a retry layer allows, else redeliver (nak) after a delay that
    /// grows with the delivery count.
    Retry,
    /// Redeliver (nak) after this delay; not retried in process.
    RetryAfter(Duration),
    /// Never redeliver: dead-letter it if a dead-letter layer is installed, then terminate it.
    GiveUp,
    /// Acknowledge it anyway: the failure is not worth another delivery.
    Ack,
}

impl Decision {
    /// Whether the message should be tried again (now or later).
    pub fn is_retry(self) -> bool {
        matches!(self, Decision::Retry | Decision::RetryAfter(_))
    }
}

/// Decides what a handler error means for its message.
pub trait ClassifyError<E> {
    /// The decision for `error`.
    fn classify(&self, error: &E) -> Decision;
}

impl<E, F> ClassifyError<E> for F
where
    F: Fn(&E) -> Decision,
{
    fn classify(&self, error: &E) -> Decision {
        self(error)
    }
}

/// Looks for a decision in an error and its sources; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl DefaultClassifier {
    /// The decision for any error, found by walking its `source` chain.
    pub fn classify_dyn(&self, error: &(dyn StdError + 'static)) -> Decision {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(decision) = decision_of(error) {
                return decision;
            }
            next = error.source();
        }
        Decision::Retry
    }
}

fn decision_of(error: &(dyn StdError + 'static)) -> Option<Decision> {
    if let Some(handler) = error.downcast_ref::<HandlerError>() {
        return Some(handler.decision());
    }
    if error.is::<DecodeError>() {
        return Some(Decision::GiveUp);
    }
    if error.is::<LeaderError>()
        || error.is::<tower::timeout::error::Elapsed>()
        || error.is::<tower::load_shed::error::Overloaded>()
    {
        return Some(Decision::Retry);
    }
    match error.downcast_ref::<Error<ConsumeErrorKind>>() {
        Some(err) if err.kind() == ConsumeErrorKind::Panicked => Some(Decision::Retry),
        _ => None,
    }
}

impl ClassifyError<BoxError> for DefaultClassifier {
    fn classify(&self, error: &BoxError) -> Decision {
        self.classify_dyn(&**error)
    }
}

impl ClassifyError<HandlerError> for DefaultClassifier {
    fn classify(&self, error: &HandlerError) -> Decision {
        error.decision()
    }
}

impl<K> ClassifyError<Error<K>> for DefaultClassifier
where
    K: Clone + std::fmt::Debug + std::fmt::Display + PartialEq + Send + Sync + 'static,
{
    fn classify(&self, error: &Error<K>) -> Decision {
        self.classify_dyn(error)
    }
}

impl ClassifyError<std::convert::Infallible> for DefaultClassifier {
    fn classify(&self, error: &std::convert::Infallible) -> Decision {
        match *error {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::LeaderErrorKind;

    #[test]
    fn handler_error_decision_is_found_below_other_errors() {
        let wrapped: BoxError = Error::with_source(
            ConsumeErrorKind::Handler,
            HandlerError::ack("duplicate order"),
        )
        .into();
        assert_eq!(DefaultClassifier.classify(&wrapped), Decision::Ack);
    }

    #[test]
    fn not_leader_and_timeouts_are_retried() {
        let not_leader: BoxError = LeaderError::new(LeaderErrorKind::NotLeader).into();
        assert_eq!(DefaultClassifier.classify(&not_leader), Decision::Retry);
        let elapsed: BoxError = tower::timeout::error::Elapsed::new().into();
        assert_eq!(DefaultClassifier.classify(&elapsed), Decision::Retry);
    }

    #[test]
    fn retry_after_keeps_its_delay() {
        let err = HandlerError::retry_after(Duration::from_secs(9), "rate limited");
        assert_eq!(
            DefaultClassifier.classify(&err),
            Decision::RetryAfter(Duration::from_secs(9))
        );
        assert!(Decision::RetryAfter(Duration::ZERO).is_retry());
        assert!(!Decision::GiveUp.is_retry());
    }
}
