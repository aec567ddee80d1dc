use tower::Layer;

use super::{Leader, LeaderMode};

/// Applies [`Leader`] to a service: which gate, and what followers do.
#[derive(Clone, Debug)]
pub struct LeaderLayer<G> {
    gate: G,
    mode: LeaderMode,
}

impl<G> LeaderLayer<G> {
    /// Gate on `gate`, acting on followers as `mode` says.
    pub fn new(gate: G, mode: LeaderMode) -> Self {
        Self { gate, mode }
    }
}

impl<S, G: Clone> Layer<S> for LeaderLayer<G> {
    type Service = Leader<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Leader::new(inner, self.gate.clone(), self.mode)
    }
}
