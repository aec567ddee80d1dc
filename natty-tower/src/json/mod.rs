//! Decode each message's JSON payload before the handler sees it.
//!
//! [`DecodeJson`] turns a service of [`JsonMessage<T>`] into a service of [`Message`]: the payload is
//! parsed with `serde_json` and handed over together with the message. A payload that does not
//! parse as `T` fails the call with [`DecodeErrorKind::InvalidJson`] without calling the
//! handler; the [default classifier](crate::classify) gives such a message up (dead letter or
//! term), since redelivering the same bytes could only fail the same way.
//!
//! # Example
//! ```
//! use natty::message::{Message, Settlement};
//! use natty_tower::ack::AckLayer;
//! use natty_tower::error::BoxError;
//! use natty_tower::json::{DecodeJsonLayer, JsonMessage};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! #[derive(serde::Deserialize)]
//! struct OrderCreated {
//!     id: u64,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(AckLayer::new())
//!     .layer(DecodeJsonLayer::<OrderCreated>::new())
//!     .service(service_fn(|order: JsonMessage<OrderCreated>| async move {
//!         assert_eq!(order.payload.id, 42);
//!         Ok::<_, BoxError>(())
//!     }));
//!
//! let (msg, recorder) = Message::builder("orders.created", r#"{"id":42}"#).build();
//! service.clone().oneshot(msg).await.unwrap();
//! assert_eq!(recorder.outcome(), Some(Settlement::Ack));
//!
//! let (msg, recorder) = Message::builder("orders.created", "not json").build();
//! assert!(service.oneshot(msg).await.is_err());
//! assert_eq!(recorder.outcome(), Some(Settlement::Term), "bad input is never redelivered");
//! # }
//! ```

mod error;
mod future;
mod layer;

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use natty::Message;
use serde::de::DeserializeOwned;
use tower::Service;

pub use self::error::{DecodeError, DecodeErrorKind};
pub use self::future::ResponseFuture;
pub use self::layer::DecodeJsonLayer;
use crate::error::BoxError;

/// A message with its payload decoded as `T`.
#[derive(Debug)]
#[non_exhaustive]
pub struct JsonMessage<T> {
    /// The decoded payload.
    pub payload: T,
    /// The message it came in (to read headers, extensions or settle it).
    pub message: Message,
}

impl<T> JsonMessage<T> {
    /// The decoded payload and its message.
    pub fn into_parts(self) -> (T, Message) {
        (self.payload, self.message)
    }
}

/// Decodes each message's payload as JSON `T` for the inner service; see the
/// [module docs](self).
pub struct DecodeJson<S, T> {
    inner: S,
    // `fn() -> T`: the service neither owns nor drops a `T`, so it is Send + Sync whatever T is.
    _payload: PhantomData<fn() -> T>,
}

impl<S, T> DecodeJson<S, T> {
    /// Decode for `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            _payload: PhantomData,
        }
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

impl<S: Clone, T> Clone for DecodeJson<S, T> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<S: fmt::Debug, T> fmt::Debug for DecodeJson<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeJson")
            .field("inner", &self.inner)
            .field("payload", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S, T> Service<Message> for DecodeJson<S, T>
where
    S: Service<JsonMessage<T>>,
    S::Error: Into<BoxError>,
    T: DeserializeOwned,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, message: Message) -> Self::Future {
        match serde_json::from_slice::<T>(message.payload()) {
            Ok(payload) => {
                ResponseFuture::called(self.inner.call(JsonMessage { payload, message }))
            }
            Err(err) => ResponseFuture::rejected(DecodeError::with_source(
                DecodeErrorKind::InvalidJson,
                err,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use natty::message::Settlement;
    use tower::{service_fn, Layer, ServiceExt};

    use super::*;
    use crate::classify::{ClassifyError, Decision, DefaultClassifier};

    #[derive(serde::Deserialize)]
    struct Order {
        id: u64,
    }

    #[tokio::test]
    async fn bad_json_is_classified_give_up_and_skips_the_handler() {
        let service =
            DecodeJsonLayer::<Order>::new().layer(service_fn(|_: JsonMessage<Order>| async {
                panic!("the handler must not see undecodable input");
                #[allow(unreachable_code)]
                Ok::<_, BoxError>(())
            }));
        let (msg, recorder) = Message::builder("orders", r#"{"id":"seven"}"#).build();
        let err = service.oneshot(msg).await.unwrap_err();
        assert_eq!(DefaultClassifier.classify(&err), Decision::GiveUp);
        let kind = err.downcast_ref::<DecodeError>().map(|err| err.kind());
        assert_eq!(kind, Some(DecodeErrorKind::InvalidJson));
        assert_eq!(recorder.settlements(), Vec::<Settlement>::new());
    }

    #[tokio::test]
    async fn good_json_reaches_the_handler_with_its_message() {
        let service = DecodeJsonLayer::<Order>::new().layer(service_fn(
            |order: JsonMessage<Order>| async move {
                Ok::<_, BoxError>((order.payload.id, order.message.subject().to_string()))
            },
        ));
        let (msg, _) = Message::builder("orders", r#"{"id":7}"#).build();
        let (id, subject) = service.oneshot(msg).await.unwrap();
        assert_eq!((id, subject.as_str()), (7, "orders"));
    }
}
