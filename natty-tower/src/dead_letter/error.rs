use crate::error::{error_kind, Error};

/// The error of a [`DeadLetterSink`](super::DeadLetterSink) publish.
pub type DeadLetterError = Error<DeadLetterErrorKind>;

error_kind! {
    /// Why a message could not be dead-lettered.
    DeadLetterErrorKind {
        /// The publish failed or was not acknowledged; see the source.
        Publish => "dead-letter publish failed",
    }
}
