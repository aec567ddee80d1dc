use tower::Layer;

use super::Metrics;

/// Applies [`Metrics`] to a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer {
    _priv: (),
}

impl MetricsLayer {
    /// Record latency and in-flight messages.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::new(inner)
    }
}
