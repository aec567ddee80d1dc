use crate::error::{error_kind, Error};

/// The error of a call that a [`Leader`](super::Leader) service refused.
pub type LeaderError = Error<LeaderErrorKind>;

error_kind! {
    /// Why a [`Leader`](super::Leader) service refused a call.
    LeaderErrorKind {
        /// This node does not lead.
        NotLeader => "not the leader",
    }
}
