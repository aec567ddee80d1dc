//! A `tracing` span per message, with OpenTelemetry's messaging fields.
//!
//! [`Trace`] runs each call inside a span, by default an `INFO` span named `process` whose
//! fields follow the OpenTelemetry semantic conventions for messaging, so an OpenTelemetry
//! subscriber layer (`tracing-opentelemetry`) turns it into a consumer span:
//!
//! | field | value |
//! | --- | --- |
//! | `otel.kind` | `consumer` |
//! | `messaging.system` | `nats` |
//! | `messaging.operation.type`, `messaging.operation.name` | `process` |
//! | `messaging.destination.name` | the subject |
//! | `messaging.consumer.group.name` | the durable consumer |
//! | `messaging.message.id` | the `Nats-Msg-Id` header, if any |
//! | `messaging.message.body.size` | the payload's length in bytes |
//! | `messaging.nats.stream`, `messaging.nats.stream_sequence` | where it is stored |
//! | `messaging.nats.delivery_count` | how many times it was delivered |
//! | `traceparent` | the W3C `traceparent` header, if present and well-formed |
//! | `otel.status_code`, `error.message` | `ERROR` and the error, when the handler fails |
//!
//! The span is made by a [`MakeSpan`], as in tower-http: [`DefaultMakeSpan`] (whose
//! [`level`](DefaultMakeSpan::level) can change) or a closure given to
//! [`TraceLayer::make_span_with`]. A failure is recorded on the span it made, in the fields
//! that span declares (see [`MakeSpan`]).
//!
//! # Parent spans across services (the `opentelemetry` feature)
//! With the feature on, the span gets the publisher's span as its OpenTelemetry parent: the
//! trace context the message's headers carry (read by the propagator set with
//! `opentelemetry::global::set_text_map_propagator`, header names matched case-insensitively,
//! so a Go service's `Traceparent` counts) is set as the parent of the span, whichever
//! [`MakeSpan`] made it (unstarted). natty's publishes write that context with the same
//! feature (see `natty::otel`). A message without trace context keeps the span's usual parent,
//! and so does one whose `traceparent` breaks the W3C rules (short or upper-case ids, zero ids,
//! version `ff`: [`natty::header::is_traceparent`]): it starts no trace of its own.
//! natty-tower's dead letters carry the context of the span that gave the message up.
//!
//! # Example
//! ```
//! use natty::Message;
//! use natty_tower::error::BoxError;
//! use natty_tower::trace::{DefaultMakeSpan, TraceLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tracing::Level;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = TraceLayer::new()
//!     .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
//!     .layer(service_fn(|_: Message| async {
//!         tracing::info!("inside the message's span");
//!         Ok::<_, BoxError>(())
//!     }));
//! let (msg, _) = Message::builder("orders.created", "{}")
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .build();
//! service.oneshot(msg).await.unwrap();
//! # }
//! ```

mod future;
mod layer;
mod make_span;

use std::task::{Context, Poll};

use natty::Message;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::TraceLayer;
pub use self::make_span::{DefaultMakeSpan, MakeSpan};

pub use natty::header::TRACEPARENT;

/// Runs each call in a span with messaging fields; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Trace<S, M = DefaultMakeSpan> {
    inner: S,
    make_span: M,
}

impl<S> Trace<S> {
    /// Trace `inner`'s calls in [`DefaultMakeSpan`]'s spans.
    pub fn new(inner: S) -> Self {
        Self::with_make_span(inner, DefaultMakeSpan::new())
    }
}

impl<S, M> Trace<S, M> {
    /// Trace `inner`'s calls in spans made by `make_span`.
    pub fn with_make_span(inner: S, make_span: M) -> Self {
        Self { inner, make_span }
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

impl<S, M> Service<Message> for Trace<S, M>
where
    S: Service<Message>,
    S::Error: std::fmt::Display,
    M: MakeSpan,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let span = self.make_span.make_span(&msg);
        #[cfg(feature = "opentelemetry")]
        natty::otel::set_parent(&span, msg.headers());
        let future = span.in_scope(|| self.inner.call(msg));
        ResponseFuture::new(future, span)
    }
}

#[cfg(test)]
mod tests;
