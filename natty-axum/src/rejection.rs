//! Why a natty extractor or handle refused a request, each as a type with an HTTP status.
//!
//! Every rejection has a [`status`](InvalidKey::status), a [`body_text`](InvalidKey::body_text)
//! and an [`IntoResponse`] impl that answers with a JSON body:
//! `{"error": "invalid key", "detail": "key \"a b\": may only contain ..."}`. The enums
//! ([`PublishRejection`], [`KvRejection`], ...) gather the rejections one handle can produce,
//! so a handler can return them with `?`.
//!
//! | rejection | status |
//! |---|---|
//! | [`InvalidSubject`], [`InvalidHeader`], [`InvalidKey`], [`InvalidId`], [`InvalidIdempotencyKey`], [`MissingIdempotencyKey`] | 400 Bad Request |
//! | [`MalformedJson`], [`BodyNotRead`], [`InvalidPathParameter`] | 400 Bad Request |
//! | [`SubjectOutOfScope`], [`BucketOutOfScope`] | 403 Forbidden |
//! | [`KeyNotFound`], [`RouteNotFound`] | 404 Not Found |
//! | [`MethodNotAllowed`] | 405 Method Not Allowed |
//! | [`RequestTimeout`] | 408 Request Timeout |
//! | [`KeyConflict`], [`IdempotencyKeyInUse`] | 409 Conflict |
//! | [`PayloadTooLarge`] | 413 Payload Too Large |
//! | [`UnsupportedContentType`] | 415 Unsupported Media Type |
//! | [`JsonShapeMismatch`], [`IdempotencyKeyReused`], [`InvalidBatch`] | 422 Unprocessable Content |
//! | [`ServiceFailure`] | the service's error code when it is 4xx or 5xx, 502 Bad Gateway otherwise |
//! | [`BatchesUnsupported`] | 501 Not Implemented |
//! | [`NatsUnavailable`] | 503 Service Unavailable, with `Retry-After` |
//! | [`NoResponders`] | 503 Service Unavailable |
//! | [`ServiceTimeout`], [`NatsTimeout`] | 504 Gateway Timeout |
//! | [`NotLeader`] | 503 with `Retry-After`, or 307 to the leader; [`LEADER_HEADER`] once the leader is known |
//! | [`NoElection`], [`InvalidStoredValue`], [`ValueNotSerializable`], [`NatsFailure`], [`PathMismatch`] | 500 Internal Server Error |
//!
//! # Logging
//! As axum does for its own rejections, every rejection is logged at TRACE under
//! [`LOG_TARGET`] (`natty_axum::rejection`) when it becomes a response. A 5xx answers with a
//! generic body (`{"error": "nats request failed"}`) and logs its cause (the error's
//! `source`) at ERROR under the same target, so nothing internal (server addresses, account
//! names, stream state) reaches a client. [`NotLeader`] is routine on a follower and stays at
//! TRACE.
//!
//! # Example
//! ```
//! use axum::http::StatusCode;
//! use axum::response::IntoResponse;
//! use natty_axum::rejection::KvRejection;
//! use natty_axum::subject;
//!
//! // A handler's own checks produce the same rejections as the handles.
//! let rejection = subject::token("a.b").unwrap_err();
//! assert_eq!(rejection.status(), StatusCode::BAD_REQUEST);
//! assert_eq!(rejection.into_response().status(), StatusCode::BAD_REQUEST);
//! # let _: Option<KvRejection> = None;
//! ```

use std::fmt;

use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderName, HeaderValue, StatusCode};

/// The response header naming the current leader on a follower's refusals
/// (`natty-leader: node-2`), present once the follower knows who leads; see
/// [`NotLeader`].
pub const LEADER_HEADER: HeaderName = HeaderName::from_static("natty-leader");

/// The `tracing` target every rejection is logged under (as axum logs its own under
/// `axum::rejection`): `RUST_LOG=natty_axum::rejection=trace` shows each refusal.
pub const LOG_TARGET: &str = "natty_axum::rejection";

/// The error a 5xx rejection keeps as its `source`, logged and never sent.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Log a refusal at TRACE, and the cause of a server-side failure at ERROR.
fn log(status: StatusCode, body_text: &str, type_name: &str, cause: Option<&Cause>) {
    tracing::trace!(
        target: LOG_TARGET,
        status = status.as_u16(),
        body = body_text,
        rejection_type = type_name,
        "rejecting request",
    );
    if let Some(cause) = cause {
        tracing::error!(
            target: LOG_TARGET,
            status = status.as_u16(),
            rejection_type = type_name,
            error = %ErrorChain(&**cause),
            "{body_text}",
        );
    }
}

/// An error and its sources, `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// A JSON error response: `{"error": error, "detail": detail}` plus `extra` fields.
fn json_error(
    status: StatusCode,
    error: &str,
    detail: Option<&str>,
    extra: Option<(&str, serde_json::Value)>,
) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), error.into());
    if let Some(detail) = detail {
        body.insert("detail".into(), detail.into());
    }
    if let Some((name, value)) = extra {
        body.insert(name.into(), value);
    }
    let body = serde_json::Value::Object(body).to_string();
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

/// The cause of `err` (its source when it has one, such as natty's validation message).
pub(crate) fn cause(err: &dyn std::error::Error) -> String {
    match err.source() {
        Some(source) => source.to_string(),
        None => err.to_string(),
    }
}

fn body_text(error: &str, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("{error}: {detail}"),
        None => error.to_owned(),
    }
}

/// A refusal caused by the request: the detail says what is wrong with it and is sent.
macro_rules! rejection {
    ($(#[$meta:meta])* $name:ident, $status:ident, $error:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name {
            detail: Option<String>,
        }

        impl $name {
            #[allow(dead_code)]
            pub(crate) fn new() -> Self {
                Self { detail: None }
            }

            #[allow(dead_code)]
            pub(crate) fn with_detail(detail: impl fmt::Display) -> Self {
                Self { detail: Some(detail.to_string()) }
            }

            /// The HTTP status it answers with.
            pub fn status(&self) -> StatusCode {
                StatusCode::$status
            }

            /// What went wrong, and the detail when there is one.
            pub fn body_text(&self) -> String {
                body_text($error, self.detail.as_deref())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.body_text())
            }
        }

        impl std::error::Error for $name {}

        impl IntoResponse for $name {
            fn into_response(self) -> Response {
                log(self.status(), &self.body_text(), stringify!($name), None);
                json_error(self.status(), $error, self.detail.as_deref(), None)
            }
        }
    };
}

/// A server-side failure: answered with a generic body, its cause kept as `source` and logged
/// at ERROR, never sent (it may name hosts, accounts or internal state).
macro_rules! internal_rejection {
    ($(#[$meta:meta])* $name:ident, $error:literal) => {
        internal_rejection!($(#[$meta])* $name, INTERNAL_SERVER_ERROR, $error);
    };
    ($(#[$meta:meta])* $name:ident, $status:ident, $error:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name {
            cause: Option<Cause>,
        }

        impl $name {
            #[allow(dead_code)]
            pub(crate) fn new() -> Self {
                Self { cause: None }
            }

            #[allow(dead_code)]
            pub(crate) fn with_cause(cause: impl Into<Cause>) -> Self {
                Self { cause: Some(cause.into()) }
            }

            /// The HTTP status it answers with.
            pub fn status(&self) -> StatusCode {
                StatusCode::$status
            }

            /// What the client is told: a generic message; the cause is this error's `source`.
            pub fn body_text(&self) -> String {
                $error.to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($error)
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.cause.as_deref().map(|cause| cause as _)
            }
        }

        impl IntoResponse for $name {
            fn into_response(self) -> Response {
                log(self.status(), $error, stringify!($name), self.cause.as_ref());
                json_error(self.status(), $error, None, None)
            }
        }
    };
}

rejection! {
    /// A subject, or a subject token taken from the request, is not a valid publish subject
    /// (empty token, whitespace, wildcard, a dot inside a token).
    InvalidSubject, BAD_REQUEST, "invalid subject"
}

rejection! {
    /// A header to publish cannot be sent: a name that is empty or has a space, control
    /// character, `:` or non-ASCII character, or a value with CR or LF (see
    /// [`natty::header`]).
    InvalidHeader, BAD_REQUEST, "invalid header"
}

rejection! {
    /// The subject is reserved (`$JS`, `$KV`, `$SYS`, `_INBOX`, ...) or outside the subjects
    /// the application allowed.
    SubjectOutOfScope, FORBIDDEN, "subject out of scope"
}

rejection! {
    /// A key/value key is not valid (`[-/_=.A-Za-z0-9]+`, no leading or trailing dot, no `..`).
    InvalidKey, BAD_REQUEST, "invalid key"
}

rejection! {
    /// The bucket is not one the application allowed.
    BucketOutOfScope, FORBIDDEN, "bucket out of scope"
}

rejection! {
    /// The key has no value.
    KeyNotFound, NOT_FOUND, "key not found"
}

rejection! {
    /// The key already exists (create) or changed since the revision given (update).
    KeyConflict, CONFLICT, "key exists or changed"
}

rejection! {
    /// The payload or value is larger than the server accepts (its `max_payload`).
    PayloadTooLarge, PAYLOAD_TOO_LARGE, "payload too large"
}

internal_rejection! {
    /// The stored value could not be decoded as the type asked for.
    InvalidStoredValue, "stored value cannot be decoded"
}

internal_rejection! {
    /// The value to store could not be serialized (a `Serialize` impl failed, or a map with
    /// non-string keys).
    ValueNotSerializable, "value cannot be serialized"
}

internal_rejection! {
    /// NATS answered with an error that is not the request's fault.
    NatsFailure, "nats request failed"
}

internal_rejection! {
    /// A leadership extractor was used but the [`NattyState`](crate::NattyState) has no
    /// election.
    NoElection, "no leader election configured"
}

internal_rejection! {
    /// A path extractor does not fit its route (no parameters to extract): a bug in the
    /// application, not in the request.
    PathMismatch, "route and path extractor do not match"
}

rejection! {
    /// An id from the request is not one token usable both in a subject and as a KV key
    /// ([`natty::validate::key_token`]: `[-/_=A-Za-z0-9]+`, at most 256 bytes).
    InvalidId, BAD_REQUEST, "invalid id"
}

rejection! {
    /// The `Idempotency-Key` was used before with a different request (another subject or
    /// payload), inside the stream's duplicate window.
    IdempotencyKeyReused, UNPROCESSABLE_ENTITY, "idempotency-key reused with a different request"
}

rejection! {
    /// A request with the same `Idempotency-Key` is being stored right now; try again once it
    /// is answered (IETF httpapi Idempotency-Key draft: 409).
    IdempotencyKeyInUse, CONFLICT, "a request with this idempotency-key is in progress"
}

rejection! {
    /// An atomic batch the stream cannot take as it is: no messages, more messages than the
    /// server takes in one batch, or messages for more than one stream.
    InvalidBatch, UNPROCESSABLE_ENTITY, "invalid batch"
}

internal_rejection! {
    /// The NATS server has no atomic batches (they need nats-server 2.12.1 or later); nothing
    /// was sent.
    BatchesUnsupported, NOT_IMPLEMENTED, "atomic batches unsupported"
}

internal_rejection! {
    /// NATS did not answer in time, though connected: what was asked may have happened or not
    /// (a message or an atomic batch stored, all of it or none; a KV write made). Sending
    /// the request again with the same `Idempotency-Key` stores a publish at most once.
    NatsTimeout, GATEWAY_TIMEOUT, "nats did not answer in time"
}

rejection! {
    /// The body is not syntactically valid JSON.
    MalformedJson, BAD_REQUEST, "malformed json body"
}

rejection! {
    /// The body is JSON but not of the shape the handler expects (a missing field, a wrong
    /// type).
    JsonShapeMismatch, UNPROCESSABLE_ENTITY, "json body does not match the expected shape"
}

rejection! {
    /// The request has no `Content-Type: application/json` (or a `+json` type).
    UnsupportedContentType, UNSUPPORTED_MEDIA_TYPE, "expected content-type application/json"
}

rejection! {
    /// The request body could not be read (the client aborted or sent a broken body).
    BodyNotRead, BAD_REQUEST, "request body could not be read"
}

rejection! {
    /// A path parameter does not parse as the type the handler asks for.
    InvalidPathParameter, BAD_REQUEST, "invalid path parameter"
}

rejection! {
    /// No route matches the request's path.
    RouteNotFound, NOT_FOUND, "no such route"
}

rejection! {
    /// The route exists but not for the request's method.
    MethodNotAllowed, METHOD_NOT_ALLOWED, "method not allowed"
}

rejection! {
    /// The request took longer than the application allows.
    RequestTimeout, REQUEST_TIMEOUT, "request timed out"
}

rejection! {
    /// The `Idempotency-Key` header is missing.
    MissingIdempotencyKey, BAD_REQUEST, "missing idempotency-key header"
}

rejection! {
    /// The `Idempotency-Key` header is not 1 to 128 visible ASCII characters.
    InvalidIdempotencyKey, BAD_REQUEST, "invalid idempotency-key header"
}

internal_rejection! {
    /// No service listens on the subject a handler requested (NATS answered "no responders").
    NoResponders, SERVICE_UNAVAILABLE, "service unavailable"
}

internal_rejection! {
    /// The service a handler requested did not answer within the request's deadline.
    ServiceTimeout, GATEWAY_TIMEOUT, "service did not answer in time"
}

/// The service a handler requested answered with an error
/// ([`natty::service::ServiceError`]). Its code is the HTTP status when it is one of 4xx or
/// 5xx, anything else answers 502. A 4xx is the caller's fault: the service's description is
/// sent as the detail. A 5xx answers a generic body and logs the service's error at ERROR.
#[derive(Debug)]
pub struct ServiceFailure {
    error: natty::service::ServiceError,
}

impl ServiceFailure {
    pub(crate) fn new(error: natty::service::ServiceError) -> Self {
        Self { error }
    }

    /// The service's error answer: its code and description.
    pub fn service_error(&self) -> &natty::service::ServiceError {
        &self.error
    }

    /// The HTTP status it answers with: the service's code when it is 4xx or 5xx, 502
    /// otherwise.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.error.code())
            .ok()
            .filter(|status| status.is_client_error() || status.is_server_error())
            .unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// What the client is told: the service's description for a 4xx, a generic message
    /// otherwise.
    pub fn body_text(&self) -> String {
        match self.detail() {
            Some(detail) => body_text(self.error_text(), Some(detail)),
            None => self.error_text().to_owned(),
        }
    }

    fn error_text(&self) -> &'static str {
        if self.status().is_client_error() {
            "service refused the request"
        } else {
            "service failed"
        }
    }

    fn detail(&self) -> Option<&str> {
        let description = self.error.description();
        (self.status().is_client_error() && !description.is_empty()).then_some(description)
    }
}

impl fmt::Display for ServiceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.body_text())
    }
}

impl std::error::Error for ServiceFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl IntoResponse for ServiceFailure {
    fn into_response(self) -> Response {
        let status = self.status();
        let cause: Option<Cause> = status
            .is_server_error()
            .then(|| Box::new(self.error.clone()) as Cause);
        log(status, &self.body_text(), "ServiceFailure", cause.as_ref());
        json_error(status, self.error_text(), self.detail(), None)
    }
}

/// NATS cannot be reached or take the request right now (disconnected, an atomic batch
/// dropped before its commit, too many batches in flight). Answers 503 with `Retry-After` and a short public reason
/// (`"not connected"`, ...); the underlying error is its `source`, logged at ERROR and never
/// sent. A NATS answer that does not come in time is [`NatsTimeout`] (504) instead.
#[derive(Debug)]
pub struct NatsUnavailable {
    reason: &'static str,
    cause: Option<Cause>,
    retry_after: u64,
}

impl NatsUnavailable {
    pub(crate) fn new(retry_after: u64, reason: &'static str, cause: Option<Cause>) -> Self {
        Self {
            reason,
            cause,
            retry_after,
        }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    /// What the client is told: `nats unavailable` and the short reason.
    pub fn body_text(&self) -> String {
        body_text("nats unavailable", Some(self.reason))
    }

    /// The seconds sent in `Retry-After`.
    pub fn retry_after(&self) -> u64 {
        self.retry_after
    }
}

impl fmt::Display for NatsUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.body_text())
    }
}

impl std::error::Error for NatsUnavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|cause| cause as _)
    }
}

impl IntoResponse for NatsUnavailable {
    fn into_response(self) -> Response {
        let status = self.status();
        let body_text = self.body_text();
        // A disconnect without an error behind it is still a failure worth an ERROR line.
        let cause = self.cause.unwrap_or_else(|| self.reason.into());
        log(status, &body_text, "NatsUnavailable", Some(&cause));
        let mut response = json_error(status, "nats unavailable", Some(self.reason), None);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(self.retry_after));
        response
    }
}

/// This node does not lead. Answers 503 with `Retry-After`, or a 307 redirect to the leader
/// when its base URL is registered. Both name the leader in [`LEADER_HEADER`] and the body's
/// `"leader"` once this node has seen who leads; before that (just after `elect`, right after
/// its own term ended, while NATS cannot be reached) the header is absent and `"leader"` is
/// `null`.
#[derive(Debug)]
pub struct NotLeader {
    leader: Option<String>,
    location: Option<HeaderValue>,
    retry_after: u64,
}

impl NotLeader {
    pub(crate) fn new(
        leader: Option<String>,
        location: Option<HeaderValue>,
        retry_after: u64,
    ) -> Self {
        Self {
            leader,
            location,
            retry_after,
        }
    }

    /// The leader's node name, when one is known.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Where the request is redirected, when the leader's base URL is registered.
    pub fn location(&self) -> Option<&HeaderValue> {
        self.location.as_ref()
    }

    /// The HTTP status it answers with: 307 with a location, 503 without.
    pub fn status(&self) -> StatusCode {
        match self.location {
            Some(_) => StatusCode::TEMPORARY_REDIRECT,
            None => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What went wrong, naming the leader when known.
    pub fn body_text(&self) -> String {
        match &self.leader {
            Some(leader) => format!("not the leader: {leader} leads"),
            None => "not the leader: no leader known".to_owned(),
        }
    }
}

impl fmt::Display for NotLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.body_text())
    }
}

impl std::error::Error for NotLeader {}

impl IntoResponse for NotLeader {
    fn into_response(self) -> Response {
        // Routine on a follower, not a failure: TRACE only, like every other refusal.
        log(self.status(), &self.body_text(), "NotLeader", None);
        let leader = self
            .leader
            .as_deref()
            .map_or(serde_json::Value::Null, Into::into);
        let mut response = json_error(
            self.status(),
            "not the leader",
            None,
            Some(("leader", leader)),
        );
        let headers = response.headers_mut();
        if let Some(value) = self
            .leader
            .as_deref()
            .and_then(|leader| HeaderValue::from_str(leader).ok())
        {
            headers.insert(LEADER_HEADER, value);
        }
        match self.location {
            Some(location) => {
                headers.insert(LOCATION, location);
            }
            None => {
                headers.insert(RETRY_AFTER, HeaderValue::from(self.retry_after));
            }
        }
        response
    }
}

macro_rules! composite_rejection {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant($variant),)*
        }

        impl $name {
            /// The HTTP status it answers with.
            pub fn status(&self) -> StatusCode {
                match self {
                    $(Self::$variant(inner) => inner.status(),)*
                }
            }

            /// What went wrong, and the detail when there is one.
            pub fn body_text(&self) -> String {
                match self {
                    $(Self::$variant(inner) => inner.body_text(),)*
                }
            }
        }

        $(
            impl From<$variant> for $name {
                fn from(inner: $variant) -> Self {
                    Self::$variant(inner)
                }
            }
        )*

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(inner) => fmt::Display::fmt(inner, f),)*
                }
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $(Self::$variant(inner) => Some(inner),)*
                }
            }
        }

        impl IntoResponse for $name {
            fn into_response(self) -> Response {
                match self {
                    $(Self::$variant(inner) => inner.into_response(),)*
                }
            }
        }
    };
}

composite_rejection! {
    /// Why a [`AckedPublisher`](crate::AckedPublisher) refused or failed a publish.
    PublishRejection {
        /// 400: not a valid publish subject.
        InvalidSubject,
        /// 400: a header cannot be sent.
        InvalidHeader,
        /// 400: an id for the subject is not a valid id token.
        InvalidId,
        /// 403: reserved or not allowed.
        SubjectOutOfScope,
        /// 413: over the server's `max_payload`.
        PayloadTooLarge,
        /// 422: the `Nats-Msg-Id` (an `Idempotency-Key`) was used for another request.
        IdempotencyKeyReused,
        /// 409: a batch with the same `Idempotency-Key` is being stored right now.
        IdempotencyKeyInUse,
        /// 422: an atomic batch the stream cannot take (empty, too many messages, several
        /// streams).
        InvalidBatch,
        /// 500: the value to publish as JSON does not serialize.
        ValueNotSerializable,
        /// 501: the server has no atomic batches.
        BatchesUnsupported,
        /// 503: NATS cannot be reached.
        NatsUnavailable,
        /// 504: NATS did not answer in time.
        NatsTimeout,
        /// 500: any other failure (for example no stream captures the subject).
        NatsFailure,
    }
}

composite_rejection! {
    /// Why a [`Requester`](crate::Requester) call was refused or failed.
    RequestRejection {
        /// 400: not a valid subject.
        InvalidSubject,
        /// 400: a header cannot be sent.
        InvalidHeader,
        /// 400: an id for the subject is not a valid id token.
        InvalidId,
        /// 403: reserved or not allowed.
        SubjectOutOfScope,
        /// 413: over the server's `max_payload`.
        PayloadTooLarge,
        /// 4xx or 5xx as the service's code says, 502 for any other code.
        ServiceFailure,
        /// 503: no service listens on the subject.
        NoResponders,
        /// 504: the service did not answer in time.
        ServiceTimeout,
        /// 500: the value to send as JSON does not serialize.
        ValueNotSerializable,
        /// 503: NATS cannot be reached.
        NatsUnavailable,
        /// 500: any other failure.
        NatsFailure,
    }
}

composite_rejection! {
    /// Why a [`Kv`](crate::Kv) or [`Bucket`](crate::kv::Bucket) call was refused or failed.
    KvRejection {
        /// 403: the bucket is not allowed.
        BucketOutOfScope,
        /// 400: not a valid key.
        InvalidKey,
        /// 400: an id for the key is not a valid id token.
        InvalidId,
        /// 404: the key has no value.
        KeyNotFound,
        /// 409: the key exists (create) or changed (update).
        KeyConflict,
        /// 413: over the server's `max_payload`.
        PayloadTooLarge,
        /// 500: the value does not decode as asked.
        InvalidStoredValue,
        /// 500: the value to store does not serialize.
        ValueNotSerializable,
        /// 503: NATS cannot be reached.
        NatsUnavailable,
        /// 504: NATS did not answer in time.
        NatsTimeout,
        /// 500: any other failure.
        NatsFailure,
    }
}

composite_rejection! {
    /// Why the [`IdempotencyKey`](crate::IdempotencyKey) extractor refused a request.
    IdempotencyKeyRejection {
        /// 400: the header is missing (only when the key is required).
        MissingIdempotencyKey,
        /// 400: the header is not 1 to 128 visible ASCII characters.
        InvalidIdempotencyKey,
    }
}

composite_rejection! {
    /// Why the [`RequireLeader`](crate::leader::RequireLeader) extractor or the
    /// [`LeaderOnlyLayer`](crate::leader::LeaderOnlyLayer) refused a request.
    LeaderRejection {
        /// 503 or 307: another node leads, or none does.
        NotLeader,
        /// 500: the state has no election.
        NoElection,
    }
}

composite_rejection! {
    /// Why the [`Json`](crate::extract::Json) extractor refused a request.
    JsonRejection {
        /// 400: not JSON.
        MalformedJson,
        /// 422: JSON of another shape.
        JsonShapeMismatch,
        /// 415: no JSON content type.
        UnsupportedContentType,
        /// 413: over the route's body limit (`DefaultBodyLimit`).
        PayloadTooLarge,
        /// 400: the body could not be read.
        BodyNotRead,
    }
}

composite_rejection! {
    /// Why the [`Bytes`](crate::extract::Bytes) extractor refused a request.
    BytesRejection {
        /// 413: over the route's body limit (`DefaultBodyLimit`).
        PayloadTooLarge,
        /// 400: the body could not be read.
        BodyNotRead,
    }
}

impl From<BytesRejection> for JsonRejection {
    fn from(rejection: BytesRejection) -> Self {
        match rejection {
            BytesRejection::PayloadTooLarge(inner) => inner.into(),
            BytesRejection::BodyNotRead(inner) => inner.into(),
        }
    }
}

composite_rejection! {
    /// Why the [`Path`](crate::extract::Path) extractor refused a request.
    PathRejection {
        /// 400: a parameter does not parse.
        InvalidPathParameter,
        /// 500: the route has no parameters for the extractor.
        PathMismatch,
    }
}
