//! [`LeaderOnlyLayer`], the layer of [`LeaderOnly`].

use tower_layer::Layer;

use super::LeaderOnly;
use crate::NattyState;

/// Lets requests through only while this node leads; see the [module docs](super). Use it
/// with `Router::route_layer`, so that unmatched paths stay 404 on followers.
#[derive(Clone, Debug)]
pub struct LeaderOnlyLayer {
    state: NattyState,
}

impl LeaderOnlyLayer {
    /// Gate on the election in `state` (a state without one refuses every request with 500).
    pub fn new(state: NattyState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for LeaderOnlyLayer {
    type Service = LeaderOnly<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LeaderOnly::new(inner, self.state.clone())
    }
}
