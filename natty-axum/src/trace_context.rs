//! W3C trace context from HTTP requests (the `opentelemetry` feature): one trace from the
//! caller's span through the request to every consumer of what the handler publishes.
//!
//! [`TraceContextLayer`] reads each request's trace context (`traceparent` and `tracestate`,
//! through the propagator set with `opentelemetry::global::set_text_map_propagator`) and keeps
//! it as the current OpenTelemetry context while the inner service is called and its future
//! polled. So the request span made inside it (tower-http's `TraceLayer`, an
//! `axum::middleware`, a `#[tracing::instrument]`ed handler) becomes a child of the caller's
//! span; what the handler publishes through [`AckedPublisher`](crate::AckedPublisher) carries
//! that span's context, natty-tower's `Trace` layer parents each message's span on it, and a
//! dead letter carries the context of the span that gave the message up.
//!
//! - Put the layer outside the one that makes the request span (after it in `Router::layer`
//!   calls, before it in a `ServiceBuilder`): a span made before the context is attached
//!   keeps the parent it has.
//! - A `traceparent` that breaks the W3C rules (short or upper-case ids, zero ids, version `ff`,
//!   extra fields on version `00`: natty's one check,
//!   [`is_traceparent`](natty::header::is_traceparent)) is ignored with its `tracestate`, so
//!   the request starts a fresh trace, as a request without one does.
//! - Spans become OpenTelemetry spans through `tracing-opentelemetry`, in the versions natty
//!   re-exports from `natty::otel`.
//!
//! Written here because tower-http propagates no trace context, and HTTP requests must pass the
//! same check as message headers (`natty::otel::extract_with_context` does both).
//!
//! # Example
//! ```
//! use axum::extract::Request;
//! use axum::middleware::{self, Next};
//! use axum::routing::post;
//! use axum::Router;
//! use natty_axum::trace_context::TraceContextLayer;
//! use tracing::Instrument;
//!
//! // Once, where the tracer provider is installed:
//! // opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
//!
//! // A span per request, as tower-http's `TraceLayer::new_for_http()` makes.
//! async fn request_span(request: Request, next: Next) -> axum::response::Response {
//!     let span = tracing::info_span!("request", uri = %request.uri());
//!     next.run(request).instrument(span).await
//! }
//!
//! let app: Router = Router::new()
//!     .route("/orders", post(|| async { "created" }))
//!     .layer(middleware::from_fn(request_span))
//!     // Outside the span: the span is made under the caller's trace context.
//!     .layer(TraceContextLayer::new());
//! # let _ = app;
//! ```

use std::task::{Context, Poll};

use http::header::HeaderName;
use http::{HeaderMap, Request};
use natty::otel::opentelemetry::context::{FutureExt as _, WithContext};
use natty::otel::opentelemetry::propagation::Extractor;
use tower_layer::Layer;
use tower_service::Service;

/// The response future of [`TraceContext`]: the inner future, polled with the request's
/// trace context attached.
pub type ResponseFuture<F> = WithContext<F>;

/// Applies [`TraceContext`] to a service; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer {
    _private: (),
}

impl TraceContextLayer {
    /// Read every request's trace context through the global propagator.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContext::new(inner)
    }
}

/// Calls `inner` in the trace context of each request; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct TraceContext<S> {
    inner: S,
}

impl<S> TraceContext<S> {
    /// Call `inner` in each request's trace context.
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

impl<S, B> Service<Request<B>> for TraceContext<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // On top of the current context, as OpenTelemetry's HTTP instrumentations read: a
        // request without a valid `traceparent` leaves it as it is.
        let context = natty::otel::extract_with_context(
            &natty::otel::opentelemetry::Context::current(),
            &RequestHeaders(request.headers()),
        );
        // Attached for the call too: tower-http's `TraceLayer` makes its span in `call`.
        let future = {
            let _attached = context.clone().attach();
            self.inner.call(request)
        };
        future.with_context(context)
    }
}

/// An HTTP request's headers as the propagator reads them.
struct RequestHeaders<'a>(&'a HeaderMap);

impl Extractor for RequestHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}
