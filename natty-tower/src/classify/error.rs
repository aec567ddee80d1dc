use std::fmt;
use std::time::Duration;

use super::Decision;
use crate::error::BoxError;

/// A handler error that carries its own [`Decision`].
///
/// It is transparent: it displays as the error it wraps and reports that error's source, so
/// logs read the same with or without it.
///
/// # Example
/// ```
/// use natty_tower::classify::{Decision, HandlerError};
///
/// let err = HandlerError::give_up("unknown product id");
/// assert_eq!(err.decision(), Decision::GiveUp);
/// assert_eq!(err.to_string(), "unknown product id");
/// ```
pub struct HandlerError {
    decision: Decision,
    error: BoxError,
}

impl HandlerError {
    /// An error with an explicit decision.
    pub fn new(decision: Decision, error: impl Into<BoxError>) -> Self {
        Self {
            decision,
            error: error.into(),
        }
    }

    /// Try again ([`Decision::Retry`]).
    pub fn retry(error: impl Into<BoxError>) -> Self {
        Self::new(Decision::Retry, error)
    }

    /// Redeliver after `delay` ([`Decision::RetryAfter`]).
    pub fn retry_after(delay: Duration, error: impl Into<BoxError>) -> Self {
        Self::new(Decision::RetryAfter(delay), error)
    }

    /// Never redeliver ([`Decision::GiveUp`]).
    pub fn give_up(error: impl Into<BoxError>) -> Self {
        Self::new(Decision::GiveUp, error)
    }

    /// Acknowledge the message despite the error ([`Decision::Ack`]).
    pub fn ack(error: impl Into<BoxError>) -> Self {
        Self::new(Decision::Ack, error)
    }

    /// The decision this error carries.
    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// The wrapped error.
    pub fn into_inner(self) -> BoxError {
        self.error
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("decision", &self.decision)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}
