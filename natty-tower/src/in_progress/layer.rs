use std::time::Duration;

use tower::Layer;

use super::InProgress;

/// Applies [`InProgress`] to a service, for a consumer with the given ack wait.
#[derive(Clone, Copy, Debug)]
pub struct InProgressLayer {
    ack_wait: Duration,
}

impl InProgressLayer {
    /// For a consumer whose ack wait is `ack_wait` (JetStream's default is 30 seconds).
    pub fn new(ack_wait: Duration) -> Self {
        Self { ack_wait }
    }
}

impl<S> Layer<S> for InProgressLayer {
    type Service = InProgress<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InProgress::new(inner, self.ack_wait)
    }
}
