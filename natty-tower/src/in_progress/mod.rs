//! Keep a long-running message from being redelivered while its handler still works on it.
//!
//! JetStream redelivers a message that is not settled within the consumer's ack wait. For a
//! handler that can run longer, [`InProgress`] sends "in progress" (which restarts the ack-wait
//! timer) each time half the ack wait passes, and stops as soon as the handler ends or the
//! message is settled. Nothing is sent for handlers that finish within half the ack wait.
//!
//! The ack wait is said once, on the consumer: [`InProgressLayer::from_consumer`] (what
//! `ServiceBuilderExt::in_progress` adds) reads it from the
//! [`ConsumerSettings`](natty::ConsumerSettings) natty's driver attaches to each message (the
//! consumer's backoff entry for a redelivery, if it has one), and falls back to JetStream's
//! default of 30 s for messages without them. [`InProgressLayer::new`] overrides it.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use natty::message::{Message, Settlement};
//! use natty_tower::error::BoxError;
//! use natty_tower::in_progress::InProgressLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // The consumer's ack wait is 30 s; this handler takes 40 s.
//! let service = InProgressLayer::new(Duration::from_secs(30)).layer(service_fn(|_: Message| async {
//!     tokio::time::sleep(Duration::from_secs(40)).await;
//!     Ok::<_, BoxError>(())
//! }));
//! let (msg, recorder) = Message::builder("reports.build", "").build();
//! service.oneshot(msg).await.unwrap();
//! assert_eq!(recorder.settlements(), vec![Settlement::InProgress, Settlement::InProgress]);
//! # }
//! ```

mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use natty::consume::DEFAULT_ACK_WAIT;
use natty::Message;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::InProgressLayer;

/// Sends "in progress" while the inner service works; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct InProgress<S> {
    inner: S,
    ack_wait: Option<Duration>,
}

impl<S> InProgress<S> {
    /// Send "in progress" for `inner`'s messages every half `ack_wait`.
    pub fn new(inner: S, ack_wait: Duration) -> Self {
        Self {
            inner,
            ack_wait: Some(ack_wait),
        }
    }

    /// Send "in progress" for `inner`'s messages every half the ack wait their consumer
    /// settings give.
    pub fn from_consumer(inner: S) -> Self {
        Self {
            inner,
            ack_wait: None,
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

impl<S> Service<Message> for InProgress<S>
where
    S: Service<Message>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let acker = msg.acker().clone();
        let ack_wait = self
            .ack_wait
            .unwrap_or_else(|| match msg.consumer_settings() {
                Some(settings) => settings.ack_wait_for(msg.info().delivered),
                None => DEFAULT_ACK_WAIT,
            });
        ResponseFuture::new(self.inner.call(msg), acker, ack_wait / 2)
    }
}

#[cfg(test)]
mod tests;
