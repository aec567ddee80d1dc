//! The response future of [`Leader`](super::Leader).

use super::LeaderError;

/// The response future of [`Leader`](super::Leader): the inner call, or `NotLeader` for a
/// call refused on a follower.
pub type ResponseFuture<F> = crate::reject::CallOrReject<F, LeaderError>;
