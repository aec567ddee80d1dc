use tower::Layer;

use super::Ack;
use crate::backoff::Backoff;
use crate::classify::DefaultClassifier;

/// Applies [`Ack`] to a service: how to settle after a handler.
#[derive(Clone, Debug)]
pub struct AckLayer<C = DefaultClassifier> {
    pub(super) classifier: C,
    pub(super) nak_backoff: Backoff,
    pub(super) double_ack: bool,
}

impl AckLayer {
    /// Plain acks, the [`DefaultClassifier`] and the default [`Backoff`] for nak delays.
    pub fn new() -> Self {
        Self {
            classifier: DefaultClassifier,
            nak_backoff: Backoff::default(),
            double_ack: false,
        }
    }
}

impl Default for AckLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> AckLayer<C> {
    /// Decide about handler errors with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> AckLayer<C2> {
        AckLayer {
            classifier,
            nak_backoff: self.nak_backoff,
            double_ack: self.double_ack,
        }
    }

    /// Delay the nak of a retried message by `backoff` at its delivery count.
    pub fn nak_backoff(mut self, backoff: Backoff) -> Self {
        self.nak_backoff = backoff;
        self
    }

    /// Wait for the server to confirm each ack (slower; for handlers that must not be run twice).
    pub fn double_ack(mut self, double_ack: bool) -> Self {
        self.double_ack = double_ack;
        self
    }
}

impl<S, C: Clone> Layer<S> for AckLayer<C> {
    type Service = Ack<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Ack::new(inner, self.clone())
    }
}
