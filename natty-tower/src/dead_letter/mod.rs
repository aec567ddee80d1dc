//! Move messages that will never succeed to a dead-letter subject, so nothing is silently lost.
//!
//! A failed message is dead-lettered when the [classifier](crate::classify) gives it up, or
//! when it was to be retried (a panic counts as that) but this was its last delivery. The
//! consumer's `max_deliver` is said once, on the consumer: the layer reads it from the
//! [`ConsumerSettings`](natty::ConsumerSettings) natty's driver attaches to each message;
//! [`DeadLetterLayer::max_deliveries`] overrides it. It is then:
//!
//! 1. published to the dead-letter subject through a publisher, with its payload, its
//!    headers (less the `Nats-*` publish controls such as `Nats-Expected-Stream`, which would
//!    make the publish fail), headers naming where it came from and why
//!    ([`ORIGINAL_SUBJECT`], [`ORIGINAL_STREAM`], [`ORIGINAL_CONSUMER`], [`ORIGINAL_SEQUENCE`],
//!    [`ORIGINAL_MESSAGE_ID`], [`DELIVERY_COUNT`], [`ERROR`]) and a `Nats-Msg-Id` of its own
//!    ([`message_id`]: stream, consumer and sequence of the delivery), so dead-lettering the
//!    same message twice stores one dead letter, and the stream never drops it as a duplicate
//!    of the original;
//! 2. terminated, once the stream acknowledged the dead letter. A "duplicate" answer counts
//!    only when the stored message (read back through the ack,
//!    [`PublishAck::stored_message`](natty::PublishAck::stored_message)) is this dead letter;
//!    otherwise the dead letter was not stored, and the message is nak'd and the failure
//!    logged.
//!
//! If the publish fails the message is nak'd instead (after the nak [`Backoff`](crate::backoff::Backoff)), so it comes back
//! rather than vanish. The handler's result is passed on unchanged; layers above see the message
//! settled. The publish is boxed: it only happens to failing messages.
//!
//! # Layer order
//! The last delivery is dead-lettered wherever this layer sits among the ack and retry layers;
//! where each may go is said once, in the [crate docs](crate#layer-order).
//!
//! The publisher is any tower `Service` of [`natty::OutgoingMessage`] answering with the
//! stream's [`natty::PublishAck`] ([`DeadLetterPublisher`]): [`natty::Natty::publisher`], alone
//! or under tower middleware (a rate limit, a timeout).
//!
//! # Example
//! ```no_run
//! use natty::Message;
//! use natty_tower::dead_letter::DeadLetterLayer;
//! use natty_tower::error::BoxError;
//! use tower::{service_fn, ServiceBuilder};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! let service = ServiceBuilder::new()
//!     // Dead-letters to "dlq.<original subject>", here on the 5th failed delivery at the latest.
//!     .layer(DeadLetterLayer::with_prefix(natty.publisher(), "dlq").max_deliveries(5))
//!     .service(service_fn(|_: Message| async { Ok::<_, BoxError>(()) }));
//! # let _ = service;
//! # Ok(())
//! # }
//! ```

mod error;
mod future;
mod layer;
mod publish;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use natty::message::DeliveryInfo;
use natty::Message;
use tower::Service;

pub use self::error::{DeadLetterError, DeadLetterErrorKind};
use self::future::Original;
pub use self::future::ResponseFuture;
use self::layer::Config;
pub use self::layer::DeadLetterLayer;

/// What a dead-letter layer publishes through: any tower `Service` of
/// [`OutgoingMessage`](natty::OutgoingMessage) answering with the stream's
/// [`PublishAck`](natty::PublishAck), such as [`natty::Natty::publisher`]. Implemented for
/// every such service; there is nothing to implement.
pub trait DeadLetterPublisher:
    Service<
        natty::OutgoingMessage,
        Response = natty::PublishAck,
        Error: Into<crate::error::BoxError>,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<P> DeadLetterPublisher for P
where
    P: Service<natty::OutgoingMessage, Response = natty::PublishAck>
        + Clone
        + Send
        + Sync
        + 'static,
    P::Error: Into<crate::error::BoxError>,
    P::Future: Send,
{
}
use crate::classify::{ClassifyError, Decision, DefaultClassifier};

/// Header: the subject the message was published to.
pub const ORIGINAL_SUBJECT: &str = "Natty-Original-Subject";
/// Header: the stream it was stored in.
pub const ORIGINAL_STREAM: &str = "Natty-Original-Stream";
/// Header: the consumer that gave up on it.
pub const ORIGINAL_CONSUMER: &str = "Natty-Original-Consumer";
/// Header: its sequence in that stream.
pub const ORIGINAL_SEQUENCE: &str = "Natty-Original-Sequence";
/// Header: how many times it had been delivered.
pub const DELIVERY_COUNT: &str = "Natty-Delivery-Count";
/// Header: the last handler error, on one line, cut to 1024 bytes.
pub const ERROR: &str = "Natty-Error";
/// Header: the original's `Nats-Msg-Id`, if it had one.
pub const ORIGINAL_MESSAGE_ID: &str = "Natty-Original-Msg-Id";

/// The `Nats-Msg-Id` of the dead letter of a delivery: derived from its stream, consumer and
/// stream sequence, so dead-lettering the same message twice stores it once, and it never
/// collides with the original's id.
pub fn message_id(info: &DeliveryInfo) -> String {
    format!(
        "natty-dead-letter:{}:{}:{}",
        info.stream, info.consumer, info.stream_sequence
    )
}

/// Dead-letters the messages the inner service fails on for good; see the
/// [module docs](self).
#[derive(Debug)]
pub struct DeadLetter<S, K, C = DefaultClassifier> {
    inner: S,
    config: Arc<Config<K, C>>,
}

impl<S: Clone, K, C> Clone for DeadLetter<S, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S, K, C> DeadLetter<S, K, C> {
    /// Dead-letter `inner`'s failed messages as `layer` says.
    pub fn new(inner: S, layer: &DeadLetterLayer<K, C>) -> Self
    where
        K: Clone,
        C: Clone,
    {
        Self {
            inner,
            config: layer.config(),
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

impl<S, K, C> DeadLetter<S, K, C> {
    /// Why this service refuses to run, if the consumer delivering `msg` would deliver the
    /// dead letters back to itself. Checked on the first message carrying consumer settings
    /// (a tower stack has no start-up hook that reaches through foreign layers; the driver
    /// attaches the settings to every message, so the first one is the earliest point).
    fn check_consumer(&self, msg: &Message) -> Option<&str> {
        if let Some(reason) = self.config.refusal.get() {
            return Some(reason);
        }
        if self.config.checked.load(Ordering::Relaxed) {
            return None;
        }
        let settings = msg.consumer_settings()?;
        self.config.checked.store(true, Ordering::Relaxed);
        let pattern = self.config.target.pattern();
        if !settings.would_deliver(&pattern) {
            return None;
        }
        let filters = match settings.filter_subjects() {
            [] => "all its stream's subjects".to_owned(),
            filters => filters.join(", "),
        };
        let reason = format!(
            "consumer {} of stream {} (subjects {}; delivering {}) would deliver dead letters \
             sent to {} back to itself; dead-letter to a subject of another stream",
            settings.consumer(),
            settings.stream(),
            settings.stream_subjects().join(", "),
            filters,
            pattern,
        );
        Some(self.config.refusal.get_or_init(|| reason))
    }
}

/// The error of a refused stack.
fn refusal(reason: &str) -> DeadLetterError {
    DeadLetterError::with_source(
        DeadLetterErrorKind::DeliveredBack,
        RefusalReason(reason.to_owned()),
    )
}

/// Why a dead-letter layer refuses to run: the source of a `DeliveredBack` error.
#[derive(Debug)]
struct RefusalReason(String);

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusalReason {}

impl<S, K, C> Service<Message> for DeadLetter<S, K, C>
where
    S: Service<Message>,
    S::Error: std::fmt::Display + From<DeadLetterError>,
    K: DeadLetterPublisher,
    C: ClassifyError<S::Error> + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, K, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(reason) = self.config.refusal.get() {
            return Poll::Ready(Err(refusal(reason).into()));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut msg: Message) -> Self::Future {
        if let Some(reason) = self.check_consumer(&msg) {
            // Nothing runs: the message goes back, and `poll_ready` stops the driver.
            return ResponseFuture::refused(
                msg.acker().clone(),
                refusal(reason).into(),
                self.config.clone(),
            );
        }
        let delivered = msg.info().delivered;
        let last_delivery = match self.config.max_deliveries {
            Some(max) => delivered >= max,
            None => msg
                .consumer_settings()
                .is_some_and(|settings| settings.is_last_delivery(delivered)),
        };
        // Tells an ack layer below to leave what this layer takes to it, whatever the order.
        msg.extensions_mut()
            .insert(DeadLetterAbove { last_delivery });
        // Kept after the marker goes in, so the two share one map instead of copying it.
        let original = Original::of(&msg, last_delivery);
        // A panic in the inner `call` is dead-lettered on the last delivery too, then goes on.
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(msg))) {
            Ok(future) => ResponseFuture::new(future, original, self.config.clone()),
            Err(panic) => ResponseFuture::panicked(panic, original, self.config.clone()),
        }
    }
}

/// Marks a message as passing through a dead-letter layer, for the layers below it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeadLetterAbove {
    /// Whether this is the message's last delivery, as the dead-letter layer counts.
    pub(crate) last_delivery: bool,
}

impl DeadLetterAbove {
    /// Whether the dead-letter layer above takes a failure decided as `decision`: a layer
    /// below must then leave the message unsettled for it.
    pub(crate) fn takes(self, decision: Decision) -> bool {
        decision == Decision::GiveUp || (decision.is_retry() && self.last_delivery)
    }
}

#[cfg(test)]
mod tests;
