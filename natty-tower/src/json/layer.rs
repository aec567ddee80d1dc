use std::fmt;
use std::marker::PhantomData;

use tower::Layer;

use super::DecodeJson;

/// Applies [`DecodeJson`] to a service, decoding payloads as `T`.
pub struct JsonLayer<T> {
    _payload: PhantomData<fn() -> T>,
}

impl<T> JsonLayer<T> {
    /// Decode payloads as `T`.
    pub fn new() -> Self {
        Self {
            _payload: PhantomData,
        }
    }
}

impl<T> Default for JsonLayer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for JsonLayer<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for JsonLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLayer")
            .field("payload", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S, T> Layer<S> for JsonLayer<T> {
    type Service = DecodeJson<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeJson::new(inner)
    }
}
