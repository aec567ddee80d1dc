use natty::Message;
use tracing::field::Empty;
use tracing::{Level, Span};

use natty::header::{is_traceparent, TRACEPARENT};

/// Makes the span a message is handled in; [`TraceLayer::make_span_with`](super::TraceLayer::make_span_with)
/// takes one. Closures `FnMut(&Message) -> Span` are makers too.
///
/// - A failure is recorded as `otel.status_code = "ERROR"` and `error.message` only if the
///   span declares those fields (`tracing::field::Empty`): `tracing` records no field a span
///   did not declare.
/// - With the `opentelemetry` feature the message's trace context becomes the span's parent
///   only if the maker returns it unstarted: a span it entered, or whose OpenTelemetry context
///   it read, keeps its parent.
pub trait MakeSpan {
    /// The span to handle `msg` in.
    fn make_span(&mut self, msg: &Message) -> Span;
}

impl<F> MakeSpan for F
where
    F: FnMut(&Message) -> Span,
{
    fn make_span(&mut self, msg: &Message) -> Span {
        self(msg)
    }
}

/// The default span: named `process`, at `INFO` unless [`DefaultMakeSpan::level`] says
/// otherwise, with the fields the [module docs](super) list.
#[derive(Clone, Copy, Debug)]
pub struct DefaultMakeSpan {
    level: Level,
}

impl DefaultMakeSpan {
    /// Spans at `INFO`.
    pub fn new() -> Self {
        Self { level: Level::INFO }
    }

    /// Spans at `level` instead; a level the subscriber filters out costs one check per message.
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
}

impl Default for DefaultMakeSpan {
    fn default() -> Self {
        Self::new()
    }
}

impl MakeSpan for DefaultMakeSpan {
    fn make_span(&mut self, msg: &Message) -> Span {
        // `span!` needs its level as a constant: one arm per level.
        macro_rules! process_span {
            ($level:expr) => {
                tracing::span!(
                    $level,
                    "process",
                    otel.kind = "consumer",
                    messaging.system = "nats",
                    messaging.operation.type = "process",
                    messaging.operation.name = "process",
                    messaging.destination.name = msg.subject(),
                    messaging.consumer.group.name = &*msg.info().consumer,
                    messaging.message.id = Empty,
                    messaging.message.body.size = msg.payload().len(),
                    messaging.nats.stream = &*msg.info().stream,
                    messaging.nats.stream_sequence = msg.info().stream_sequence,
                    messaging.nats.delivery_count = msg.info().delivered,
                    traceparent = Empty,
                    otel.status_code = Empty,
                    error.message = Empty,
                )
            };
        }
        let span = match self.level {
            Level::ERROR => process_span!(Level::ERROR),
            Level::WARN => process_span!(Level::WARN),
            Level::INFO => process_span!(Level::INFO),
            Level::DEBUG => process_span!(Level::DEBUG),
            Level::TRACE => process_span!(Level::TRACE),
        };
        if span.is_disabled() {
            return span;
        }
        if let Some(id) = msg.message_id() {
            span.record("messaging.message.id", id);
        }
        if let Some(parent) = msg
            .headers()
            .get(TRACEPARENT)
            .filter(|value| is_traceparent(value))
        {
            span.record(TRACEPARENT, parent);
        }
        span
    }
}
