//! Turn a panicking handler into an error, so one bad message does not stop the consumer.
//!
//! A panic in `call` or while polling the handler's future becomes an error of natty core's kind
//! [`ConsumeErrorKind::Panicked`](natty::error::ConsumeErrorKind::Panicked), whose source is a
//! [`PanicMessage`] with the panic's text. The [default classifier](crate::classify) retries it; after the consumer's
//! max deliveries a [dead-letter](crate::dead_letter) layer takes the message away.
//!
//! tower-http's `CatchPanic` turns a panic into an HTTP 500 response; a message handler has no
//! response to send, so here it becomes an error for the layers above to settle and report.
//!
//! # Example
//! ```
//! use natty::error::{ConsumeErrorKind, Error};
//! use natty::Message;
//! use natty_tower::catch_panic::CatchPanicLayer;
//! use natty_tower::error::BoxError;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = CatchPanicLayer::new().layer(service_fn(|_: Message| async {
//!     panic!("index out of bounds");
//!     #[allow(unreachable_code)]
//!     Ok::<_, BoxError>(())
//! }));
//! let (msg, _) = Message::builder("orders.created", "{}").build();
//! let err = service.oneshot(msg).await.unwrap_err();
//! let panicked = err.downcast_ref::<Error<ConsumeErrorKind>>().unwrap();
//! assert_eq!(panicked.kind(), ConsumeErrorKind::Panicked);
//! assert_eq!(err.to_string(), "handler panicked");
//! assert_eq!(format!("{err:#}"), "handler panicked: index out of bounds");
//! # }
//! ```

mod future;
mod layer;

use std::task::{Context, Poll};

use natty::consume::CatchUnwind;
use natty::Message;
use tower::Service;

/// The panic text is natty core's type, so a panic caught here and one caught by natty's driver
/// read the same.
pub use natty::consume::PanicMessage;

pub use self::future::ResponseFuture;
pub use self::layer::CatchPanicLayer;
use crate::error::BoxError;

/// Catches panics of the inner service; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> CatchPanic<S> {
    /// Catch the panics of `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Message> for CatchPanic<S>
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        // The message is gone once `call` starts, so nothing observable is left half-done.
        ResponseFuture::new(CatchUnwind::call(|| self.inner.call(msg)))
    }
}

#[cfg(test)]
mod tests;
