use crate::error::{error_kind, Error};

/// The error of a dead-letter publish.
pub type DeadLetterError = Error<DeadLetterErrorKind>;

error_kind! {
    /// Why a message could not be dead-lettered.
    DeadLetterErrorKind {
        /// The publish failed or was not acknowledged; see the source.
        Publish => "dead-letter publish failed",
        /// The stream answered "duplicate", but the message stored under the dead letter's id
        /// is not this dead letter (or could not be read back): the dead letter is not stored.
        Duplicate => "dead-letter id taken by another message",
        /// The consumer being served would deliver the dead-letter subject back to itself;
        /// the stack refuses to run.
        DeliveredBack => "dead-letter subject would be delivered back to its consumer",
    }
}
