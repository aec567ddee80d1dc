//! Report every handler error, with the metadata of its message, to `tracing` and optionally to
//! a channel or a callback (what Go natty calls its `ErrorCh`).
//!
//! Each failed call is logged at `WARN` and turned into an [`ErrorReport`]. Reports go to a
//! bounded `tokio::sync::mpsc` channel with `try_send`, so a slow or full receiver never holds
//! up message handling: a report that does not fit (or finds the receiver gone) is dropped and
//! counted in [`DroppedReports`]. A callback is called inline and should be quick.
//!
//! # Example
//! ```
//! use natty::Message;
//! use natty_tower::error::BoxError;
//! use natty_tower::report::ReportErrorsLayer;
//! use tokio::sync::mpsc;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (reports, mut errors) = mpsc::channel(64);
//! let layer = ReportErrorsLayer::new().channel(reports);
//! let dropped = layer.dropped();
//! let service = layer.layer(service_fn(|_: Message| async {
//!     Err::<(), BoxError>("inventory service unavailable".into())
//! }));
//!
//! let (msg, _) = Message::builder("orders.created", "{}").delivered(2).build();
//! let _ = service.oneshot(msg).await;
//! let report = errors.recv().await.unwrap();
//! assert_eq!(report.subject, "orders.created");
//! assert_eq!(report.info.delivered, 2);
//! assert_eq!(report.error, "inventory service unavailable");
//! assert_eq!(dropped.count(), 0);
//! # }
//! ```

mod future;
mod layer;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use natty::message::DeliveryInfo;
use natty::Message;
use tokio::sync::mpsc;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::ReportErrorsLayer;
/// One handler error and the message it happened on.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ErrorReport {
    /// The message's subject.
    pub subject: String,
    /// Stream, consumer, sequences and delivery count.
    pub info: DeliveryInfo,
    /// The `Nats-Msg-Id` header, if the message had one.
    pub message_id: Option<String>,
    /// The error, as displayed.
    pub error: String,
}

impl ErrorReport {
    /// The report of `error` on `msg`.
    fn new(msg: &Message, error: String) -> Self {
        Self {
            subject: msg.subject().to_owned(),
            info: msg.info().clone(),
            message_id: msg.message_id().map(str::to_owned),
            error,
        }
    }
}

/// How many reports were dropped because their channel was full or closed; a cheap handle.
#[derive(Clone, Debug, Default)]
pub struct DroppedReports(Arc<AtomicU64>);

impl DroppedReports {
    /// Reports dropped so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add_one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where reports go besides `tracing`.
#[derive(Clone, Default)]
pub(crate) enum Sink {
    #[default]
    Log,
    Channel(mpsc::Sender<ErrorReport>),
    Callback(Arc<dyn Fn(ErrorReport) + Send + Sync>),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sink::Log => "Log",
            Sink::Channel(_) => "Channel",
            Sink::Callback(_) => "Callback",
        })
    }
}

/// What every call of a [`ReportErrors`] service shares.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) sink: Sink,
    pub(crate) dropped: DroppedReports,
}

impl Shared {
    /// Log the failure (unless a layer below did) and hand the report to the sink.
    fn report(&self, report: ErrorReport, acker: &natty::message::Acker) {
        if acker.claim_failure_log() {
            tracing::warn!(
            subject = %report.subject,
            stream = %report.info.stream,
            consumer = %report.info.consumer,
            stream_sequence = report.info.stream_sequence,
            delivered = report.info.delivered,
            message_id = report.message_id.as_deref(),
            error = %report.error,
            "message handler failed"
            );
        }
        match &self.sink {
            Sink::Log => {}
            Sink::Channel(sender) => {
                if sender.try_send(report).is_err() {
                    self.dropped.add_one();
                }
            }
            Sink::Callback(callback) => callback(report),
        }
    }
}

/// Reports the inner service's errors; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct ReportErrors<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ReportErrors<S> {
    /// Report `inner`'s errors as `layer` says.
    pub fn new(inner: S, layer: &ReportErrorsLayer) -> Self {
        Self {
            inner,
            shared: layer.shared.clone(),
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

impl<S> Service<Message> for ReportErrors<S>
where
    S: Service<Message>,
    S::Error: fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        // Kept for a report, as the message is the handler's once it is called: a clone counts
        // references and copies nothing, and a change the handler makes is copied to its own.
        let original = msg.clone();
        ResponseFuture::new(self.inner.call(msg), original, self.shared.clone())
    }
}

#[cfg(test)]
mod tests;
