//! Settle every message from its handler's result: ack on success, and on failure do what the
//! [classifier](crate::classify) decides.
//!
//! | handler result | decision | settlement |
//! | --- | --- | --- |
//! | `Ok` | | ack (or double ack, see [`AckLayer::double_ack`]) |
//! | `Err` | [`Retry`](Decision::Retry) | nak, delayed by the [`Backoff`] for the delivery count |
//! | `Err` | [`RetryAfter(d)`](Decision::RetryAfter) | nak, delayed by `d` |
//! | `Err` | [`GiveUp`](Decision::GiveUp) | term |
//! | `Err` | [`Ack`](Decision::Ack) | ack |
//!
//! A message the handler (or a layer below, such as [dead letter](crate::dead_letter)) already
//! settled is left alone. Under a dead-letter or retry layer (one *above* this layer), a failure
//! that layer takes (given up or retryable on the last delivery, for dead letters; retryable
//! with attempts left, for [`RetryMessagesLayer`](crate::retry::RetryMessagesLayer)) is left
//! unsettled for it (see the [layer order](crate#layer-order)). The handler's result is passed
//! on unchanged, so layers above still see the error. A settlement that cannot be sent is logged; the server redelivers the message
//! after its ack wait.
//!
//! natty core's consumer driver acks or naks whatever is still unsettled after a call; this
//! layer replaces those defaults with decisions.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use natty::message::{Message, Settlement};
//! use natty_tower::ack::AckLayer;
//! use natty_tower::backoff::Backoff;
//! use natty_tower::classify::HandlerError;
//! use natty_tower::error::BoxError;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = AckLayer::new()
//!     .nak_backoff(Backoff::new(Duration::from_secs(2), Duration::from_secs(60)));
//! let service = layer.layer(service_fn(|msg: Message| async move {
//!     if msg.payload().is_empty() {
//!         return Err(BoxError::from(HandlerError::give_up("empty order")));
//!     }
//!     Ok(())
//! }));
//!
//! let (msg, recorder) = Message::builder("orders.created", "").build();
//! let _ = service.clone().oneshot(msg).await;
//! assert_eq!(recorder.outcome(), Some(Settlement::Term));
//!
//! let (msg, recorder) = Message::builder("orders.created", "{}").delivered(3).build();
//! service.oneshot(msg).await.unwrap();
//! assert_eq!(recorder.outcome(), Some(Settlement::Ack));
//! # }
//! ```

mod future;
mod layer;

use std::task::{Context, Poll};

use natty::message::Settlement;
use natty::Message;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::AckLayer;
use crate::backoff::Backoff;
use crate::classify::{ClassifyError, Decision, DefaultClassifier};
use crate::dead_letter::DeadLetterAbove;
use crate::retry::RetryAbove;

/// The settling layers above this one, which a failure may be left to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayersAbove {
    dead_letter: Option<DeadLetterAbove>,
    retry: Option<RetryAbove>,
}

impl LayersAbove {
    fn of(msg: &Message) -> Self {
        Self {
            dead_letter: msg.extensions().get::<DeadLetterAbove>().copied(),
            retry: msg.extensions().get::<RetryAbove>().copied(),
        }
    }

    /// Whether a layer above takes a failure decided as `decision`: a retry that calls again,
    /// or a dead-letter layer that dead-letters it.
    pub(crate) fn take(self, decision: Decision) -> bool {
        self.retry.is_some_and(|retry| retry.retries(decision))
            || self.dead_letter.is_some_and(|dead| dead.takes(decision))
    }
}

/// Settles each message from its handler's result; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Ack<S, C = DefaultClassifier> {
    inner: S,
    layer: AckLayer<C>,
}

impl<S, C> Ack<S, C> {
    /// Wrap `inner`, settling as `layer` says.
    pub fn new(inner: S, layer: AckLayer<C>) -> Self {
        Self { inner, layer }
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

impl<S, C, R> Service<Message> for Ack<S, C>
where
    S: Service<Message, Response = R>,
    C: ClassifyError<S::Error> + Clone,
{
    type Response = R;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let acker = msg.acker().clone();
        let delivered = msg.info().delivered;
        let above = LayersAbove::of(&msg);
        ResponseFuture::new(
            self.inner.call(msg),
            acker,
            delivered,
            above,
            self.layer.clone(),
        )
    }
}

/// The settlement for a failed delivery number `delivered` under `decision`.
pub(crate) fn settlement_for(decision: Decision, delivered: u64, backoff: &Backoff) -> Settlement {
    match decision {
        Decision::Retry => Settlement::Nak(Some(backoff.delay(delivered))),
        Decision::RetryAfter(delay) => Settlement::Nak(Some(delay)),
        Decision::GiveUp => Settlement::Term,
        Decision::Ack => Settlement::Ack,
    }
}

#[cfg(test)]
mod tests;
