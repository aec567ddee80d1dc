//! The response future of [`DecodeJson`](super::DecodeJson).

use super::DecodeError;

/// The response future of [`DecodeJson`](super::DecodeJson): the inner call, or the decode
/// error for a payload that is not the expected JSON.
pub type ResponseFuture<F> = crate::reject::CallOrReject<F, DecodeError>;
