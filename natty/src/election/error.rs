//! The election's error type.

pub use crate::error::ElectionErrorKind;

/// The error of an election call: a kind to match on, the cause kept as `source`.
pub type ElectionError = crate::error::Error<ElectionErrorKind>;

pub(crate) fn bucket_error(err: impl std::error::Error + Send + Sync + 'static) -> ElectionError {
    ElectionError::with_source(ElectionErrorKind::Bucket, err)
}
