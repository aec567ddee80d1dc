//! natty's errors: async-nats' `Error<Kind>` with one small kind enum per area.
//!
//! Every error carries a [`Copy`] kind to `match` on and keeps the underlying cause (an
//! async-nats error, a [`ValidationError`], an I/O error) as its `source`.
//!
//! # Example
//! ```no_run
//! use natty::error::KvErrorKind;
//!
//! # async fn run(natty: natty::Natty) {
//! match natty.create("bucket", "key", "value".into()).await {
//!     Ok(revision) => println!("created at revision {revision}"),
//!     Err(err) if err.kind() == KvErrorKind::AlreadyExists => println!("taken"),
//!     Err(err) => eprintln!("{err}"),
//! }
//! # }
//! ```

use std::fmt;

/// A type-erased error: a handler's or a tower service's, as tower's own layers return it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error with a kind to match on and the cause kept as `source` (async-nats' own type).
pub use async_nats::error::Error;

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

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $(Self::$variant => $text,)*
                })
            }
        }
    };
}

error_kind! {
    /// Why [`Natty::connect`](crate::Natty::connect) failed.
    ConnectErrorKind {
        /// The configuration is unusable (no URL, a malformed URL, conflicting options).
        InvalidConfig => "invalid connection configuration",
        /// A TLS file is missing or unreadable, or the TLS handshake failed.
        Tls => "tls error",
        /// The server refused the credentials, or a credentials file is unusable.
        Authentication => "authentication failed",
        /// No server could be reached.
        Unreachable => "no server reachable",
        /// Connecting took longer than the connect timeout.
        TimedOut => "timed out connecting",
    }
}

error_kind! {
    /// Why a stream or consumer call failed.
    StreamErrorKind {
        /// A stream or consumer name is invalid; nothing was sent.
        InvalidName => "invalid stream or consumer name",
        /// A subject or filter is invalid; nothing was sent.
        InvalidSubject => "invalid subject",
        /// The configuration is unusable (for example no subjects).
        InvalidConfig => "invalid configuration",
        /// The stream or consumer does not exist.
        NotFound => "not found",
        /// It exists with a different configuration (for a stream: other subjects).
        Mismatch => "exists with a different configuration",
        /// The server did not answer in time.
        TimedOut => "timed out",
        /// The server rejected the call; see the source.
        JetStream => "jetstream error",
    }
}

error_kind! {
    /// Why a publish failed.
    PublishErrorKind {
        /// The subject is invalid for publishing (empty token, whitespace, wildcard, longer
        /// than 3072 bytes); nothing was sent.
        InvalidSubject => "invalid subject",
        /// The payload is larger than the server's max payload; nothing was sent.
        PayloadTooLarge => "payload too large",
        /// The subject's queue is full (`try_publish` only).
        Full => "publish queue full",
        /// The client is shutting down and accepts nothing more.
        Closed => "publisher closed",
        /// No acknowledgement arrived in time, after every retry.
        TimedOut => "timed out waiting for publish ack",
        /// No stream captures the subject.
        NoStream => "no stream for subject",
        /// The server rejected the message; see the source.
        Rejected => "rejected by the server",
    }
}

error_kind! {
    /// Why a consume call or a handler failed.
    ConsumeErrorKind {
        /// A stream, durable or filter name is invalid; nothing was sent.
        InvalidName => "invalid stream, consumer or filter name",
        /// The consume configuration is unusable.
        InvalidConfig => "invalid consume configuration",
        /// The stream does not exist.
        StreamNotFound => "stream not found",
        /// Fetching from the consumer failed (it will be retried).
        Fetch => "fetch failed",
        /// A handler returned an error.
        Handler => "handler failed",
        /// A handler panicked.
        Panicked => "handler panicked",
        /// The service's `poll_ready` failed, so the run stopped after draining as on
        /// shutdown; the source is a [`NotReadyError`](crate::consume::NotReadyError) with
        /// the run's summary.
        NotReady => "service not ready",
    }
}

error_kind! {
    /// Why a key/value call failed.
    KvErrorKind {
        /// The bucket name is invalid (`[A-Za-z0-9_-]+`); nothing was sent.
        InvalidBucket => "invalid bucket name",
        /// The key is invalid (`[-/_=.A-Za-z0-9]+`, no leading or trailing dot, no `..`, at
        /// most 2048 bytes); nothing was sent.
        InvalidKey => "invalid key",
        /// The value is larger than the server's max payload; nothing was sent.
        PayloadTooLarge => "value too large",
        /// The bucket does not exist.
        BucketNotFound => "bucket not found",
        /// The key does not exist.
        KeyNotFound => "key not found",
        /// The key (for `create`) or the bucket (for `create_bucket`) already exists.
        AlreadyExists => "already exists",
        /// The key changed since the revision given (compare-and-set lost).
        Conflict => "revision conflict",
        /// The connected server is too old for this feature.
        Unsupported => "unsupported by the server",
        /// The server did not answer in time.
        TimedOut => "timed out",
        /// The server rejected the call; see the source.
        JetStream => "jetstream error",
    }
}

error_kind! {
    /// Why starting, watching or querying a leader election failed.
    ElectionErrorKind {
        /// The election configuration is unusable (bad bucket, key or node name, a TTL under
        /// one second, a safety margin too large for the TTL); nothing was sent.
        InvalidConfig => "invalid election configuration",
        /// The bucket exists with another TTL than the one configured (Go natty's
        /// `ErrBucketTTLMismatch`).
        TtlMismatch => "bucket ttl mismatch",
        /// The election bucket could not be created, read or written.
        Bucket => "election bucket unavailable",
        /// The election has stopped (shut down, or every handle dropped).
        Stopped => "election stopped",
    }
}

error_kind! {
    /// Why settling a message failed.
    SettleErrorKind {
        /// The message was already acked, nak'd or termed.
        AlreadySettled => "message already settled",
        /// The settlement could not be sent.
        Failed => "settlement failed",
    }
}

/// What was wrong with a name, subject, key or payload; the `source` of `Invalid*` errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    what: &'static str,
    value: String,
    reason: &'static str,
}

impl ValidationError {
    pub(crate) fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        // Long inputs (a 10 kB key) are cut so logs stay readable.
        let value = match value.char_indices().nth(64) {
            Some((cut, _)) => format!("{}...", &value[..cut]),
            None => value.to_owned(),
        };
        Self {
            what,
            value,
            reason,
        }
    }

    /// What was checked: `"subject"`, `"stream name"`, `"key"`, ...
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Why it was refused.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.what, self.value, self.reason)
    }
}

impl std::error::Error for ValidationError {}
