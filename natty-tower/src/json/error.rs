use crate::error::{error_kind, Error};

/// The error of a payload that could not be decoded; its source is the `serde_json` error.
pub type DecodeError = Error<DecodeErrorKind>;

error_kind! {
    /// Why a payload could not be decoded.
    DecodeErrorKind {
        /// The payload is not JSON of the expected shape.
        InvalidJson => "invalid json payload",
    }
}
