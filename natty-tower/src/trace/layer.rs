use tower::Layer;

use super::Trace;

/// Applies [`Trace`] to a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer {
    _priv: (),
}

impl TraceLayer {
    /// A span per message.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace::new(inner)
    }
}
