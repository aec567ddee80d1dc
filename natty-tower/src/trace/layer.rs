use tower::Layer;

use super::{DefaultMakeSpan, Trace};

/// Applies [`Trace`] to a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer<M = DefaultMakeSpan> {
    make_span: M,
}

impl TraceLayer {
    /// A `process` span per message, at `INFO`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<M> TraceLayer<M> {
    /// Make each message's span with `make_span` instead (a [`MakeSpan`](super::MakeSpan),
    /// such as a closure, or [`DefaultMakeSpan`] at another level).
    pub fn make_span_with<M2>(self, make_span: M2) -> TraceLayer<M2> {
        TraceLayer { make_span }
    }
}

impl<S, M: Clone> Layer<S> for TraceLayer<M> {
    type Service = Trace<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace::with_make_span(inner, self.make_span.clone())
    }
}
