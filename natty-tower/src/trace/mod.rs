//! A `tracing` span per message, with OpenTelemetry's messaging fields.
//!
//! [`Trace`] runs each call inside an `INFO` span named `process` whose fields follow the
//! OpenTelemetry semantic conventions for messaging, so an OpenTelemetry subscriber layer turns
//! it into a consumer span without natty depending on OpenTelemetry:
//!
//! | field | value |
//! | --- | --- |
//! | `otel.kind` | `consumer` |
//! | `messaging.system` | `nats` |
//! | `messaging.operation.type`, `messaging.operation.name` | `process` |
//! | `messaging.destination.name` | the subject |
//! | `messaging.consumer.group.name` | the durable consumer |
//! | `messaging.message.id` | the `Nats-Msg-Id` header, if any |
//! | `messaging.nats.stream`, `messaging.nats.stream_sequence` | where it is stored |
//! | `messaging.nats.delivery_count` | how many times it was delivered |
//! | `traceparent` | the W3C `traceparent` header, if present and well-formed |
//! | `otel.status_code`, `error.message` | `ERROR` and the error, when the handler fails |
//!
//! # Example
//! ```
//! use natty::Message;
//! use natty_tower::error::BoxError;
//! use natty_tower::trace::TraceLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = TraceLayer::new().layer(service_fn(|_: Message| async {
//!     tracing::info!("inside the message's span");
//!     Ok::<_, BoxError>(())
//! }));
//! let (msg, _) = Message::builder("orders.created", "{}")
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .build();
//! service.oneshot(msg).await.unwrap();
//! # }
//! ```

mod future;
mod layer;

use std::task::{Context, Poll};

use natty::Message;
use tower::Service;
use tracing::field::Empty;

pub use self::future::ResponseFuture;
pub use self::layer::TraceLayer;

/// The W3C trace-context header carrying the producer's trace and span.
pub const TRACEPARENT: &str = "traceparent";

/// Runs each call in a span with messaging fields; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
}

impl<S> Trace<S> {
    /// Trace `inner`'s calls.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Message> for Trace<S>
where
    S: Service<Message>,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let span = make_span(&msg);
        let future = span.in_scope(|| self.inner.call(msg));
        ResponseFuture::new(future, span)
    }
}

fn make_span(msg: &Message) -> tracing::Span {
    let info = msg.info();
    let span = tracing::info_span!(
        "process",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = msg.subject(),
        messaging.consumer.group.name = info.consumer.as_str(),
        messaging.message.id = Empty,
        messaging.nats.stream = info.stream.as_str(),
        messaging.nats.stream_sequence = info.stream_sequence,
        messaging.nats.delivery_count = info.delivered,
        traceparent = Empty,
        otel.status_code = Empty,
        error.message = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(id) = msg.message_id() {
        span.record("messaging.message.id", id);
    }
    if let Some(parent) = msg.headers().get(TRACEPARENT) {
        if is_traceparent(parent) {
            span.record(TRACEPARENT, parent);
        }
    }
    span
}

/// Whether `value` is a W3C `traceparent`: `version-traceid-parentid-flags` in lowercase hex,
/// with non-zero ids; later versions may append fields.
fn is_traceparent(value: &str) -> bool {
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    let mut parts = value.splitn(5, '-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let rest = parts.next();
    hex(version, 2)
        && version != "ff"
        && (version != "00" || rest.is_none())
        && hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(parent_id, 16)
        && nonzero(parent_id)
        && hex(flags, 2)
}

#[cfg(test)]
mod tests;
