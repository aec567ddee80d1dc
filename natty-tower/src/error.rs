//! The error types shared by natty-tower's middleware.
//!
//! Like natty core, every error is natty's [`Error<Kind>`](Error): a small [`Copy`] kind to
//! `match` on, with the cause kept as `source`. Each middleware that can fail names its own
//! kind (for example [`LeaderErrorKind`](crate::leader::LeaderErrorKind)); layers that wrap
//! errors of the service below them return a [`BoxError`], as tower's own layers do.
//!
//! # Example
//! ```
//! use natty_tower::error::BoxError;
//! use natty_tower::leader::{LeaderError, LeaderErrorKind};
//!
//! let err: BoxError = LeaderError::new(LeaderErrorKind::NotLeader).into();
//! let leader = err.downcast_ref::<LeaderError>().map(|err| err.kind());
//! assert_eq!(leader, Some(LeaderErrorKind::NotLeader));
//! assert_eq!(err.to_string(), "not the leader");
//! ```

/// An error with a kind to match on and the cause kept as `source` (natty's own type).
pub use natty::error::Error;

/// A type-erased error, as returned by tower's layers (natty's own).
pub use natty::error::BoxError;

pub(crate) use natty::error_kind;
