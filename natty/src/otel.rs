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
//! - A `traceparent` that breaks the W3C rules ([`is_traceparent`]: short or upper-case ids,
//!   zero ids, version `ff`, extra fields on version `00`) is never a parent: [`extract`] and
//!   [`set_parent`] read no context from it, so the consumer's span starts a fresh trace, and a
//!   publish in a span replaces it.
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

use crate::header::{is_traceparent, HeaderMap, TRACEPARENT, TRACESTATE};

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
/// propagator into an empty context: it holds no span when the headers carry none, or none
/// the propagator understands, or a `traceparent` that breaks the W3C rules (see
/// [`extract_with_context`]), whatever span is current.
pub fn extract(headers: &HeaderMap) -> Context {
    extract_with_context(&Context::new(), &HeaderReader(headers))
}

/// The trace context `carrier` holds (any header map: an HTTP request's, say), read by the
/// global propagator on top of `context`, as
/// [`TextMapPropagator::extract_with_context`](opentelemetry::propagation::TextMapPropagator::extract_with_context)
/// does.
///
/// A `traceparent` that breaks the W3C rules ([`is_traceparent`]) is hidden from the
/// propagator, and its `tracestate` with it: OpenTelemetry's W3C propagator would take
/// `00-abc-def-01` as trace `abc`. Such a carrier leaves `context`'s span in place, so a span
/// made under an empty context starts a fresh trace. natty-axum reads HTTP requests with it.
///
/// # Example
/// ```
/// use std::collections::HashMap;
///
/// use natty::otel::opentelemetry::trace::TraceContextExt;
/// use natty::otel::opentelemetry::{global, Context};
/// use opentelemetry_sdk::propagation::TraceContextPropagator;
///
/// global::set_text_map_propagator(TraceContextPropagator::new());
/// let read = |traceparent: &str| {
///     let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
///     let context = natty::otel::extract_with_context(&Context::new(), &carrier);
///     let span = context.span();
///     span.span_context().is_valid().then(|| span.span_context().trace_id().to_string())
/// };
/// assert_eq!(
///     read("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
///     Some("4bf92f3577b34da6a3ce929d0e0e4736")
/// );
/// assert_eq!(read("00-abc-def-01"), None, "short ids start a fresh trace");
/// ```
pub fn extract_with_context(context: &Context, carrier: &dyn Extractor) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(context, &W3cChecked::new(carrier))
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

/// A carrier whose `traceparent` (and `tracestate`) the propagator sees only if it keeps the
/// W3C rules: the one place every extraction checks them.
struct W3cChecked<'a> {
    carrier: &'a dyn Extractor,
    valid: bool,
}

impl<'a> W3cChecked<'a> {
    fn new(carrier: &'a dyn Extractor) -> Self {
        let valid = carrier.get(TRACEPARENT).is_some_and(is_traceparent);
        Self { carrier, valid }
    }

    /// Whether `key` names a header hidden from the propagator.
    fn hides(&self, key: &str) -> bool {
        !self.valid
            && (key.eq_ignore_ascii_case(TRACEPARENT) || key.eq_ignore_ascii_case(TRACESTATE))
    }
}

impl Extractor for W3cChecked<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if self.hides(key) {
            return None;
        }
        self.carrier.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = self.carrier.keys();
        keys.retain(|key| !self.hides(key));
        keys
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(traceparent: &str) -> HeaderMap {
        [("Traceparent", traceparent), ("tracestate", "vendor=1")]
            .into_iter()
            .collect()
    }

    #[test]
    fn a_valid_traceparent_is_extracted_with_its_tracestate() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let context = extract(&headers(PARENT));
        let span = context.span();
        let parent = span.span_context();
        assert_eq!(
            parent.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            parent.span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert!(parent.is_remote());
        assert_eq!(parent.trace_state().header(), "vendor=1");
    }

    #[test]
    fn a_traceparent_the_w3c_propagator_would_misread_is_hidden_from_it() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let trailing_dash = format!("{PARENT}-");
        let long_trace_id = format!("00-0{}", &PARENT[3..]);
        let signed = format!("00-+{}", &PARENT[4..]);
        for bad in ["00-abc-def-01", &trailing_dash, &long_trace_id, &signed] {
            let carrier = HashMap::from([(TRACEPARENT.to_owned(), bad.to_owned())]);
            let raw = TraceContextPropagator::new().extract(&carrier);
            assert!(
                raw.span().span_context().is_valid(),
                "{bad}: the propagator alone takes it"
            );
            assert!(
                !extract(&headers(bad)).span().span_context().is_valid(),
                "{bad}"
            );
            let checked = extract_with_context(&Context::new(), &carrier);
            assert!(!checked.span().span_context().is_valid(), "{bad}");
        }
    }

    #[test]
    fn a_malformed_traceparent_leaves_the_base_contexts_span_and_hides_its_tracestate() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let base = extract(&headers(PARENT));
        let upper = PARENT.to_ascii_uppercase();
        let malformed = headers(&upper);
        let reader = HeaderReader(&malformed);
        let checked = W3cChecked::new(&reader);
        assert_eq!(checked.get("TraceState"), None);
        assert_eq!(checked.keys(), Vec::<&str>::new());
        let context = extract_with_context(&base, &reader);
        assert_eq!(
            context.span().span_context(),
            base.span().span_context(),
            "the base's span stays"
        );
    }
}
