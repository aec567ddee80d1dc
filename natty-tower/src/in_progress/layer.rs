use std::time::Duration;

use tower::Layer;

use super::InProgress;

/// Applies [`InProgress`] to a service, with the consumer's ack wait or a given one.
#[derive(Clone, Copy, Debug, Default)]
pub struct InProgressLayer {
    ack_wait: Option<Duration>,
}

impl InProgressLayer {
    /// For a consumer whose ack wait is `ack_wait`, overriding what messages carry.
    pub fn new(ack_wait: Duration) -> Self {
        Self {
            ack_wait: Some(ack_wait),
        }
    }

    /// With the ack wait each message's [`ConsumerSettings`](natty::ConsumerSettings) give
    /// (JetStream's default of 30 s for a message without them).
    pub fn from_consumer() -> Self {
        Self { ack_wait: None }
    }
}

impl<S> Layer<S> for InProgressLayer {
    type Service = InProgress<S>;

    fn layer(&self, inner: S) -> Self::Service {
        match self.ack_wait {
            Some(ack_wait) => InProgress::new(inner, ack_wait),
            None => InProgress::from_consumer(inner),
        }
    }
}
