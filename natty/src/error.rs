//! natty's errors: [`Error<Kind>`](Error) with one small kind enum per area.
//!
//! Every error carries a [`Copy`] kind to `match` on and keeps the underlying cause (an
//! async-nats error, a [`ValidationError`], an I/O error) as its [`source`](std::error::Error::source).
//! The type is natty's own, so an async-nats release cannot change natty's API, and its
//! `Display` is the kind alone: a reporter that walks `source()` (anyhow, eyre, tracing's
//! error fields) prints each cause once. Kinds that depend on the server's answer come from
//! its error codes and async-nats' kinds, never from an error's text.
//!
//! # Example
//! ```no_run
//! use natty::error::KvErrorKind;
//!
//! # async fn run(natty: natty::Natty) -> Result<(), natty::KvError> {
//! let bucket = natty.bucket("bucket")?;
//! match bucket.create("key", "value").await {
//!     Ok(revision) => println!("created at revision {revision}"),
//!     Err(err) if err.kind() == KvErrorKind::AlreadyExists => println!("taken"),
//!     Err(err) => eprintln!("{err}"),
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;

/// A type-erased error: a handler's or a tower service's, as tower's own layers return it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error of a stream or consumer call.
pub type StreamError = Error<StreamErrorKind>;

/// An error with a kind to match on and the cause kept as `source`.
///
/// `Display` shows the kind only; the cause is [`source`](std::error::Error::source). The
/// alternate form (`{:#}`, as in anyhow) adds the causes, each once: `kind: cause: ...`.
pub struct Error<K> {
    kind: K,
    source: Option<BoxError>,
}

impl<K: Copy> Error<K> {
    /// An error of `kind` without a cause.
    pub fn new(kind: K) -> Self {
        Self { kind, source: None }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(kind: K, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// What went wrong, to `match` on.
    pub fn kind(&self) -> K {
        self.kind
    }
}

impl<K: fmt::Debug> fmt::Debug for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl<K: fmt::Display> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)?;
        match &self.source {
            // The source's own alternate form goes on down the chain.
            Some(source) if f.alternate() => write!(f, ": {source:#}"),
            _ => Ok(()),
        }
    }
}

impl<K: fmt::Debug + fmt::Display> std::error::Error for Error<K> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl<K: PartialEq> PartialEq<K> for Error<K> {
    /// Whether this error is of `kind`: `err == KvErrorKind::Conflict`.
    fn eq(&self, kind: &K) -> bool {
        self.kind == *kind
    }
}

/// Declares a kind enum for [`Error`]: `Clone + Copy + Debug + PartialEq + Eq + Hash`,
/// `#[non_exhaustive]`, with a lowercase `Display` per variant. natty-tower's and your own
/// middleware's kinds use it too.
///
/// # Example
/// ```
/// natty::error_kind! {
///     /// Why an order could not be billed.
///     BillingErrorKind {
///         /// The card was refused.
///         Refused => "card refused",
///     }
/// }
/// let err = natty::Error::new(BillingErrorKind::Refused);
/// assert_eq!(err.to_string(), "card refused");
/// ```
#[macro_export]
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

/// Whether `err` or one of its causes is an async-nats timeout, told by its kind.
pub(crate) fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::{consumer, context, kv, stream};
    macro_rules! timed_out_kind {
        ($err:expr, $($type:ty => $kind:pat),* $(,)?) => {
            $(if let Some(err) = $err.downcast_ref::<$type>() {
                return matches!(err.kind(), $kind);
            })*
        };
    }
    let mut next = Some(err);
    while let Some(err) = next {
        timed_out_kind!(err,
            context::RequestError => context::RequestErrorKind::TimedOut,
            context::PublishError => context::PublishErrorKind::TimedOut,
            context::CreateStreamError => context::CreateStreamErrorKind::TimedOut,
            context::CreateKeyValueError => context::CreateKeyValueErrorKind::TimedOut,
            context::ConsumerInfoError => context::ConsumerInfoErrorKind::TimedOut,
            stream::ConsumerError => stream::ConsumerErrorKind::TimedOut,
            consumer::StreamError => consumer::StreamErrorKind::TimedOut,
            kv::EntryError => kv::EntryErrorKind::TimedOut,
            kv::UpdateError => kv::UpdateErrorKind::TimedOut,
            kv::WatchError => kv::WatchErrorKind::TimedOut,
            kv::StatusError => kv::StatusErrorKind::TimedOut,
        );
        if let Some(err) = err.downcast_ref::<std::io::Error>() {
            return err.kind() == std::io::ErrorKind::TimedOut;
        }
        next = err.source();
    }
    false
}

/// The JetStream API error code of `err` or of its first cause that carries one.
pub(crate) fn api_error_code(
    err: &(dyn std::error::Error + 'static),
) -> Option<async_nats::jetstream::ErrorCode> {
    use async_nats::jetstream::{context, kv, stream};
    let mut next = Some(err);
    while let Some(err) = next {
        macro_rules! code_of {
            ($($type:ty),*) => {$(
                if let Some(code) = err.downcast_ref::<$type>().and_then(|e| e.kind().api_error_code()) {
                    return Some(code);
                }
            )*};
        }
        code_of!(
            context::GetStreamError,
            context::CreateStreamError,
            stream::ConsumerError,
            stream::RawMessageError,
            kv::StatusError
        );
        if let Some(err) = err.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(err.error_code());
        }
        next = err.source();
    }
    None
}

/// The JetStream API error code an async-nats error kind carries, if it came from the server.
trait ApiErrorCode {
    fn api_error_code(&self) -> Option<async_nats::jetstream::ErrorCode>;
}

macro_rules! api_error_code {
    ($($kind:ty),*) => {$(
        impl ApiErrorCode for $kind {
            fn api_error_code(&self) -> Option<async_nats::jetstream::ErrorCode> {
                match self {
                    Self::JetStream(err) => Some(err.error_code()),
                    _ => None,
                }
            }
        }
    )*};
}

// `DeleteStreamErrorKind` is `GetStreamErrorKind` under another name.
api_error_code!(
    async_nats::jetstream::context::GetStreamErrorKind,
    async_nats::jetstream::context::CreateStreamErrorKind,
    async_nats::jetstream::stream::ConsumerErrorKind,
    async_nats::jetstream::kv::StatusErrorKind
);

impl ApiErrorCode for async_nats::jetstream::stream::RawMessageErrorKind {
    fn api_error_code(&self) -> Option<async_nats::jetstream::ErrorCode> {
        match self {
            Self::NoMessageFound => Some(async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND),
            Self::JetStream(err) => Some(err.error_code()),
            _ => None,
        }
    }
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
        /// A header cannot be sent (a name that is empty or has a space, control character,
        /// `:` or non-ASCII character; a value with CR or LF); nothing was sent. See
        /// [`HeaderMap::invalid`](crate::header::HeaderMap::invalid).
        InvalidHeader => "invalid header",
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
    /// Why an atomic batch was not stored; see [`Publisher::publish_batch`](crate::Publisher::publish_batch).
    /// Every kind but `TimedOut` and `Failed` means the server stored **none** of the batch.
    BatchErrorKind {
        /// The batch has no messages; nothing was sent.
        Empty => "empty batch",
        /// A subject is invalid for publishing; nothing was sent.
        InvalidSubject => "invalid subject",
        /// A header cannot be sent, or cannot be in an atomic batch (`Nats-Batch-*`, which
        /// natty sets; `Nats-Expected-Last-Msg-Id`; `Nats-Expected-Last-Sequence` after the
        /// first message; one `Nats-Msg-Id` twice; an expected subject sequence for a subject
        /// written earlier in the batch); nothing was sent.
        InvalidHeader => "invalid header",
        /// A payload is larger than the server's max payload; nothing was sent.
        PayloadTooLarge => "payload too large",
        /// The server has no atomic batches (they need nats-server 2.12.1 or later); nothing
        /// was sent.
        Unsupported => "atomic batches unsupported by the server",
        /// No stream captures a subject of the batch.
        NoStream => "no stream for subject",
        /// The stream does not allow atomic publishing (`allow_atomic`, which
        /// [`Stream::create`](crate::Stream::create) sets on servers that have it).
        AtomicDisabled => "atomic publish disabled on the stream",
        /// The messages go to more than one stream (a batch is stored by one).
        MixedStreams => "batch spans streams",
        /// More messages than the server takes in one batch (1,000 unless its
        /// `jetstream.limits.batch.max_msgs` says otherwise).
        TooManyMessages => "too many messages in the batch",
        /// The server dropped the batch before its commit: a message was lost on the way (a
        /// reconnect), the batch took longer than the server's batch timeout (10 s), or the
        /// stream's leader changed. Publishing it again is safe.
        Incomplete => "batch incomplete",
        /// A `Nats-Msg-Id` of the batch is already stored (within the stream's duplicate
        /// window): the batch, or one using its ids, was stored before, and this one stored
        /// nothing.
        Duplicate => "batch has a stored message id",
        /// A `Nats-Expected-Last-Sequence` or `Nats-Expected-Last-Subject-Sequence` header
        /// did not match the stream.
        WrongLastSequence => "wrong last sequence",
        /// Too many batches are open on the stream or the server, the stream is overloaded,
        /// or a message id of the batch is still being stored by an earlier write; nothing
        /// was stored, try again later.
        TooManyInFlight => "too many batches in flight",
        /// The commit's answer did not arrive in time: the batch may be stored (all of it) or
        /// not (none of it). Publish the same [`Batch`](crate::publish::Batch) again: its
        /// `Nats-Msg-Id`s make a stored one answer `Duplicate`.
        TimedOut => "timed out waiting for the batch commit",
        /// The client is shutting down and accepts nothing more; nothing was sent.
        Closed => "publisher closed",
        /// The batch could not be sent (the connection is closed); see the source. If the
        /// commit went out, the batch may be stored, as for `TimedOut`.
        Failed => "batch could not be sent",
        /// The server refused the batch for another reason; see the source.
        Rejected => "rejected by the server",
    }
}

error_kind! {
    /// Why a request to a service failed; see [`requester`](crate::requester).
    RequestErrorKind {
        /// The subject is invalid for publishing (empty token, whitespace, wildcard, longer
        /// than 3072 bytes); nothing was sent.
        InvalidSubject => "invalid subject",
        /// A header cannot be sent (see
        /// [`HeaderMap::invalid`](crate::header::HeaderMap::invalid)); nothing was sent.
        InvalidHeader => "invalid header",
        /// The payload (with its headers) is larger than the server's max payload; nothing
        /// was sent.
        PayloadTooLarge => "payload too large",
        /// Nobody listens on the subject: the server said so at once.
        NoResponders => "no responders",
        /// No answer arrived before the request's deadline.
        TimedOut => "timed out waiting for a response",
        /// The service answered with an error (the `Nats-Service-Error` headers); its code
        /// and description are the error's `service_error()` (see
        /// [`RequestError`](crate::requester::RequestError)).
        Service => "service error",
        /// The request could not be sent or its answer not received (the client is closed);
        /// see the source.
        Failed => "request failed",
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
    /// Why starting a service or adding an endpoint failed.
    ServeErrorKind {
        /// A service, endpoint or queue group name, the version or a subject is invalid;
        /// nothing was sent.
        InvalidConfig => "invalid service configuration",
        /// The service's or an endpoint's subscriptions could not be made.
        Subscribe => "could not subscribe",
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

/// Sort an async-nats stream or consumer error into natty's kinds by its API error code or
/// async-nats kind, keeping it as the source.
pub(crate) fn classify_stream(err: impl std::error::Error + Send + Sync + 'static) -> StreamError {
    let kind = match api_error_code(&err) {
        Some(
            async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            | async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND
            | async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND
            | async_nats::jetstream::ErrorCode::SEQUENCE_NOT_FOUND,
        ) => StreamErrorKind::NotFound,
        _ if timed_out(&err) => StreamErrorKind::TimedOut,
        _ => StreamErrorKind::JetStream,
    };
    Error::with_source(kind, err)
}
