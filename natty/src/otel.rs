//! OpenTelemetry trace context in message headers (the `opentelemetry` feature).
//!
//! With the feature on, every publish (through [`Natty::publish`](crate::Natty::publish), the
//! [`Publisher`](crate::Publisher) handle's methods and its tower `Service`) carries the trace context of the `tracing` span it
//! was called in, and a consumer makes that context the parent of its message span
//! (`natty-tower`'s trace layer does, with its own `opentelemetry` feature; [`extract`] does it
//! for code of your own). Spans become OpenTelemetry spans through `tracing-opentelemetry`.
//!
//! Headers are written and read by the propagator set with
//! [`opentelemetry::global::set_text_map_propagator`]: the SDK's `TraceContextPropagator`
//! writes the W3C `traceparent` and `tracestate` headers. Until one is set, OpenTelemetry's
//! default propagator writes nothing and natty adds nothing.
//!
//! - A message that already carries a valid `traceparent` (a header you set, or a message
//!   forwarded with its headers) keeps it: natty injects nothing into it.
//! - Header names are read case-insensitively: Go services write `Traceparent`.
//! - With no OpenTelemetry layer in the subscriber, or outside any span, nothing is written.
//! - natty is built on `opentelemetry` 0.33 and `tracing-opentelemetry` 0.34 (re-exported
//!   here): your SDK and subscriber layer must use the same versions, or natty sees no span.
//!
//! # Example
//! ```no_run
//! use natty::{Config, Natty};
//! use tracing::Instrument;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Once, where the tracer provider is installed:
//! // opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
//! let natty = Natty::connect(Config::from_env()).await?;
//! natty
//!     .publish("orders.created", "order 1")
//!     .instrument(tracing::info_span!("create_order"))
//!     .await?; // the message carries create_order's trace and span
//! # Ok(())
//! # }
//! ```

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::header::{is_traceparent, HeaderMap, TRACEPARENT};

/// The OpenTelemetry API natty is built on: your tracer provider and propagator must come
/// from this version for natty to see your spans (a different version is another crate, and
/// natty would write and parent nothing).
pub use opentelemetry;
/// The `tracing` bridge natty reads spans' OpenTelemetry context through; your subscriber's
/// OpenTelemetry layer must come from this version.
pub use tracing_opentelemetry;

/// Write the current `tracing` span's trace context into `headers`, unless they carry a valid
/// `traceparent` already (matched case-insensitively) or the current span has no
/// OpenTelemetry context.
pub fn inject_current(headers: &mut HeaderMap) {
    if headers.get(TRACEPARENT).is_some_and(is_traceparent) {
        return;
    }
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        // Outside any OpenTelemetry span: skip the propagator's lock on the publish path.
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderWriter(headers));
    });
}

/// The trace context `headers` carry (names matched case-insensitively), read by the global
/// propagator into an empty context: it holds no span when the headers carry none (or none
/// the propagator understands), whatever span is current.
pub fn extract(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&Context::new(), &HeaderReader(headers))
    })
}

/// Make the trace context `headers` carry the OpenTelemetry parent of `span`, as natty-tower's
/// trace layer does for each message. Returns whether it did: not when the headers carry no
/// valid context, the span is disabled or already started (entered, or its context read), or
/// the subscriber has no `tracing-opentelemetry` layer of this version.
pub fn set_parent(span: &tracing::Span, headers: &HeaderMap) -> bool {
    if span.is_disabled() {
        return false;
    }
    let parent = extract(headers);
    if !parent.span().span_context().is_valid() {
        return false;
    }
    match span.set_parent(parent) {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(target: "natty", error = %err, "message span keeps its parent");
            false
        }
    }
}

struct HeaderWriter<'a>(&'a mut HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The W3C propagator writes an empty `tracestate` when there is none: leave it out.
        if !value.is_empty() {
            // In the propagator's spelling, not that of a malformed header it replaces.
            self.0.remove(key);
            self.0.insert(key, value);
        }
    }
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(key, _)| key).collect()
    }
}
