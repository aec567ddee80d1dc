//! Message metrics through the [`metrics`](https://docs.rs/metrics) facade (cargo feature `metrics`).
//!
//! natty-tower records, into whatever recorder the application installed:
//!
//! | metric | kind | labels | recorded by |
//! | --- | --- | --- | --- |
//! | [`MESSAGES_TOTAL`] | counter | `outcome`: `acked`, `nakd`, `termed`, `dead_lettered` | the [ack](crate::ack) and [dead-letter](crate::dead_letter) layers, when they settle |
//! | [`HANDLER_DURATION`] | histogram, seconds | `result`: `ok`, `error` | [`Metrics`] |
//! | [`IN_FLIGHT`] | gauge | | [`Metrics`] |
//! | [`LEADER`] | gauge, 1 leader / 0 follower | | the [leader](crate::leader) layer, when it checks |
//!
//! Labels are fixed strings, so recording allocates nothing per message.
//!
//! # Example
//! ```
//! use natty::Message;
//! use natty_tower::error::BoxError;
//! use natty_tower::metrics::MetricsLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = MetricsLayer::new().layer(service_fn(|_: Message| async { Ok::<_, BoxError>(()) }));
//! let (msg, _) = Message::builder("orders.created", "{}").build();
//! service.oneshot(msg).await.unwrap();
//! # }
//! ```

mod future;
mod layer;

use std::task::{Context, Poll};

use natty::message::Settlement;
use natty::Message;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::MetricsLayer;

/// Counter of settled messages, by `outcome`.
pub const MESSAGES_TOTAL: &str = "natty_messages_total";
/// Histogram of handler durations in seconds, by `result`.
pub const HANDLER_DURATION: &str = "natty_handler_duration_seconds";
/// Gauge of messages being handled.
pub const IN_FLIGHT: &str = "natty_messages_in_flight";

/// Gauge of this node's leadership as the leader layer last saw it: 1 leader, 0 follower.
pub const LEADER: &str = "natty_leader";

/// Record the leadership the leader layer just checked.
pub(crate) fn record_leadership(is_leader: bool) {
    ::metrics::gauge!(LEADER).set(if is_leader { 1.0 } else { 0.0 });
}

/// Count a final settlement made by a layer.
pub(crate) fn record_settlement(settlement: Settlement) {
    // A literal label per arm: the macro builds a label it is given in a variable on the heap.
    let counter = match settlement {
        Settlement::Ack | Settlement::DoubleAck => {
            ::metrics::counter!(MESSAGES_TOTAL, "outcome" => "acked")
        }
        Settlement::Nak(_) => ::metrics::counter!(MESSAGES_TOTAL, "outcome" => "nakd"),
        Settlement::Term => ::metrics::counter!(MESSAGES_TOTAL, "outcome" => "termed"),
        Settlement::InProgress => return,
        // A settlement natty adds in a later release.
        _ => ::metrics::counter!(MESSAGES_TOTAL, "outcome" => "other"),
    };
    counter.increment(1);
}

/// Count a message dead-lettered (and terminated).
pub(crate) fn record_dead_lettered() {
    ::metrics::counter!(MESSAGES_TOTAL, "outcome" => "dead_lettered").increment(1);
}

/// Records handler latency and in-flight messages; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Metrics<S> {
    inner: S,
}

impl<S> Metrics<S> {
    /// Measure `inner`.
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

impl<S> Service<Message> for Metrics<S>
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
        ResponseFuture::new(self.inner.call(msg))
    }
}

#[cfg(test)]
mod tests;
