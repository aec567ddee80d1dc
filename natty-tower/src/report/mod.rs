//! Report every handler error, with the metadata of its message, to `tracing` and optionally to
//! a channel or a callback (what Go natty calls its `ErrorCh`).
//!
//! Each failed call becomes a [`HandlerFailure`], the report natty's engine sends to
//! [`ConsumeConfig::failures`](natty::ConsumeConfig::failures), and goes the engine's way:
//!
//! - it is logged at `WARN` once per delivery, by [`natty::consume::log_failure`]'s rule: by the
//!   first reporter to see it (this layer, another one below it, or natty's engine, which then
//!   logs it at `DEBUG` only);
//! - a channel is a [`ReportSender`], with the same never-drop default: the failed call's
//!   response future waits for room before it ends (other messages' calls go on; with a
//!   concurrency limit, a reader that stays behind eventually holds the stack up), and
//!   [`ReportSender::lossy`] is the opt-in to drop, log at `ERROR` and count instead
//!   ([`ReportSender::dropped`], read on a clone you keep);
//! - a callback is called inline and should be quick.
//!
//! # Example
//! ```
//! use natty::{Message, ReportSender};
//! use natty_tower::error::BoxError;
//! use natty_tower::report::ReportErrorsLayer;
//! use tokio::sync::mpsc;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (sender, mut failures) = mpsc::channel(64);
//! let reports = ReportSender::lossy(sender); // or the sender itself, to never drop one
//! let layer = ReportErrorsLayer::new().channel(reports.clone());
//! let service = layer.layer(service_fn(|_: Message| async {
//!     Err::<(), BoxError>("inventory service unavailable".into())
//! }));
//!
//! let (msg, _) = Message::builder("orders.created", "{}").delivered(2).build();
//! let _ = service.oneshot(msg).await;
//! let failure = failures.recv().await.unwrap();
//! assert_eq!(failure.subject, "orders.created");
//! assert_eq!(failure.delivered, 2);
//! let handler_error = std::error::Error::source(&failure.error).unwrap();
//! assert_eq!(handler_error.to_string(), "inventory service unavailable");
//! assert_eq!(reports.dropped(), 0);
//! # }
//! ```

mod future;
mod layer;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use natty::consume::{log_failure, report_failure, HandlerFailure};
use natty::message::Acker;
use natty::{Message, ReportSender};
use tower::Service;

pub use self::future::ResponseFuture;
use self::future::Sending;
pub use self::layer::ReportErrorsLayer;

/// Where reports go besides `tracing`.
#[derive(Clone, Default)]
pub(crate) enum Sink {
    #[default]
    Log,
    Channel(ReportSender<HandlerFailure>),
    Callback(Arc<dyn Fn(HandlerFailure) + Send + Sync>),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Log => f.write_str("Log"),
            Sink::Channel(reports) => f.debug_tuple("Channel").field(reports).finish(),
            Sink::Callback(_) => f.write_str("Callback"),
        }
    }
}

/// What every call of a [`ReportErrors`] service shares.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) sink: Sink,
}

impl Shared {
    /// Log `failure` (once per delivery) and hand it to the sink; a channel's send is returned
    /// for the response future to wait on.
    fn report(&self, acker: &Acker, failure: HandlerFailure) -> Option<Sending> {
        match &self.sink {
            Sink::Log => log_failure(acker, &failure),
            Sink::Callback(callback) => {
                log_failure(acker, &failure);
                callback(failure);
            }
            Sink::Channel(reports) => {
                let (acker, reports) = (acker.clone(), reports.clone());
                return Some(Box::pin(async move {
                    report_failure(&acker, failure, &reports).await;
                }));
            }
        }
        None
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
