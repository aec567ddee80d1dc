//! OpenTelemetry trace context in message headers (the `opentelemetry` feature).
//!
//! With the feature on, every publish (through [`Natty::publish`](crate::Natty::publish) and its
//! variants, [`Natty::try_publish`](crate::Natty::try_publish) and the
//! [`Publisher`](crate::Publisher) service) carries the trace context of the `tracing` span it
//! was called in, and a consumer makes that context the parent of its message span
//! (`natty-tower`'s trace layer does, with its own `opentelemetry` feature; [`extract`] does it
//! for code of your own). Spans become OpenTelemetry spans through `tracing-opentelemetry`.
//!
//! Headers are written and read by the propagator set with
//! [`opentelemetry::global::set_text_map_propagator`]: the SDK's `TraceContextPropagator`
//! writes the W3C `traceparent` and `tracestate` headers. Until one is set, OpenTelemetry's
//! default propagator writes nothing and natty adds nothing.
//!
//! - A message that already carries a `traceparent` (a header you set, or a message forwarded
//!   with its headers) keeps it: natty injects nothing into it.
//! - Header names are read case-insensitively: Go services write `Traceparent`.
//! - With no OpenTelemetry layer in the subscriber, or outside any span, nothing is written.
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

use crate::header::HeaderMap;

/// The W3C trace-context header naming the producer's trace and span.
pub const TRACEPARENT: &str = "traceparent";

/// Write the current `tracing` span's trace context into `headers` unless they carry a
/// `traceparent` already (matched case-insensitively).
pub fn inject_current(headers: &mut HeaderMap) {
    if headers.contains_key(TRACEPARENT) {
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

/// The trace context `headers` carry (names matched case-insensitively), to make the parent of
/// a span with `tracing_opentelemetry::OpenTelemetrySpanExt::set_parent`. Empty when they
/// carry none, or none the global propagator understands.
pub fn extract(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderReader(headers))
    })
}

struct HeaderWriter<'a>(&'a mut HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
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
