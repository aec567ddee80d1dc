use std::fmt;
use std::marker::PhantomData;

use tower::Layer;

use super::DecodeJson;

/// Applies [`DecodeJson`] to a service, decoding payloads as `T`.
pub struct DecodeJsonLayer<T> {
    _payload: PhantomData<fn() -> T>,
}

impl<T> DecodeJsonLayer<T> {
    /// Decode payloads as `T`.
    pub fn new() -> Self {
        Self {
            _payload: PhantomData,
        }
    }
}

impl<T> Default for DecodeJsonLayer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for DecodeJsonLayer<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for DecodeJsonLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeJsonLayer")
            .field("payload", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S, T> Layer<S> for DecodeJsonLayer<T> {
    type Service = DecodeJson<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeJson::new(inner)
    }
}
