//! The error types shared by natty-tower's middleware.
//!
//! Like natty core, every error is async-nats' [`Error<Kind>`](Error): a small [`Copy`] kind to
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

/// An error with a kind to match on and the cause kept as `source` (async-nats' own type).
pub use natty::error::Error;

/// A type-erased error, as returned by tower's layers (natty's own).
pub use natty::error::BoxError;

/// Declares a `#[non_exhaustive]` `Copy` kind enum with a lowercase `Display`.
macro_rules! error_kind {
    ($(#[$meta:meta])* $name:ident {
        $($(#[doc = $doc:literal])* $variant:ident => $text:literal,)*
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(match self {
                    $(Self::$variant => $text,)*
                })
            }
        }
    };
}

pub(crate) use error_kind;
