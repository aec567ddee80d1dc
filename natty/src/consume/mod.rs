//! Durable, pull-based consuming: Go natty's blocking `Consume`, and a driver that feeds any
//! tower `Service<Message>`.
//!
//! The driver keeps one long-lived pull per consumer: one inbox subscription, pull requests
//! sent as room frees up and sized by it, idle heartbeats watched. It asks the service for
//! readiness *before* it pulls, so it never holds more than `concurrency` messages (requested
//! and not yet delivered, plus delivered and not finished), and a stack that is not ready (a
//! follower, a saturated limit) pulls nothing. It runs up to `concurrency` calls at once,
//! polled inside its own task rather than spawned; recovers from disconnects, server restarts
//! and a deleted durable (missed heartbeats, a refused or unanswered request) by recreating the
//! durable consumer; and settles every message exactly once: a message the handler left
//! unsettled is acked after `Ok`, nak'd after `Err`, and nak'd when its call panics (in `call`
//! itself or in its future; the panic is reported with the message's subject, sequence and
//! delivery count) or is cancelled. These per-message rules live in one engine that group
//! members use too ([`crate::group`]), so every way of consuming behaves the same.
//!
//! The calls of one run share its task, as the futures of `buffer_unordered` do: a handler
//! that awaits I/O costs nothing while it waits, but one that computes for long between two
//! awaits holds the other calls back. Move such work to `tokio::task::spawn_blocking` (or a
//! task of its own) inside the handler; to use several cores for one consumer, run several
//! `serve`s on it.
//!
//! On shutdown it stops pulling, reads the open pull requests to their end (at most
//! `fetch_timeout`), gives in-flight calls `shutdown_grace` to finish, naks what it never
//! started (what waited for the service and what still arrived) once those requests have
//! ended, so each message goes back once, to another consumer or the next run rather than
//! into this run's open requests, and returns a [`ConsumeSummary`]. A service whose
//! `poll_ready` fails ends the run the same way, then returns [`ConsumeErrorKind::NotReady`]
//! carrying the summary ([`ConsumeSummary::from_error`]). The server may briefly count one more
//! message than `concurrency` as pending, because it applies acks asynchronously (use double
//! acks where that matters). Every message carries the consumer's [`ConsumerSettings`]
//! ([`Message::consumer_settings`]), read once from the consumer's info and again whenever the
//! driver recreates the consumer, so middleware never asks for them twice.
//!
//! # Example
//! ```no_run
//! use natty::{ConsumeConfig, Message};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run(natty: natty::Natty) -> Result<(), Box<dyn std::error::Error>> {
//! let shutdown = CancellationToken::new();
//! let summary = natty
//!     .consume(
//!         ConsumeConfig::new("ORDERS", "billing").filter_subjects(["orders.created"]),
//!         shutdown.clone(),
//!         |msg: Message| async move {
//!             println!("order {}", String::from_utf8_lossy(msg.payload()));
//!             Ok::<_, std::io::Error>(()) // unsettled + Ok = ack
//!         },
//!     )
//!     .await?;
//! println!("handled {}", summary.handled);
//! # Ok(())
//! # }
//! ```

mod ack_subject;
mod consumer;
mod driver;
pub(crate) mod engine;
mod failure;
pub mod message;
pub(crate) mod options;
mod panic;
mod pull;
mod settings;

pub use consumer::Consumer;
pub(crate) use driver::sleep_until_opt;
pub(crate) use failure::Origin;
pub use failure::{log_failure, report_failure, HandlerFailure};
pub use message::Message;
pub use options::{ConsumerOptions, DeliverPolicy};
pub use panic::{CatchUnwind, PanicMessage};
pub use settings::{ConsumerSettings, DEFAULT_ACK_WAIT};

use std::fmt;
use std::time::Duration;

use crate::error::{BoxError, ConsumeErrorKind, Error};
use crate::report::ReportSender;

/// The source of a [`ConsumeErrorKind::NotReady`] error: what the run did before it stopped,
/// and why the service was not ready.
#[derive(Debug)]
pub struct NotReadyError {
    summary: ConsumeSummary,
    error: BoxError,
}

impl NotReadyError {
    /// What the run did, drain included.
    pub fn summary(&self) -> &ConsumeSummary {
        &self.summary
    }

    /// The error the service's `poll_ready` returned.
    pub fn service_error(&self) -> &BoxError {
        &self.error
    }
}

impl fmt::Display for NotReadyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for NotReadyError {
    // Display already shows the service's error, so the chain goes on from its cause.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// The error of [`Natty::consume`](crate::Natty::consume) and [`Natty::serve`](crate::Natty::serve).
pub type ConsumeError = Error<ConsumeErrorKind>;

/// What to consume and how.
#[derive(Clone, Debug)]
pub struct ConsumeConfig {
    pub(crate) stream: String,
    pub(crate) durable: String,
    pub(crate) filter_subjects: Vec<String>,
    pub(crate) consumer: ConsumerOptions,
    pub(crate) fetch_size: usize,
    pub(crate) fetch_timeout: Duration,
    pub(crate) concurrency: usize,
    pub(crate) shutdown_grace: Duration,
    pub(crate) failures: Option<ReportSender<HandlerFailure>>,
}

impl ConsumeConfig {
    /// Consume `stream` through the durable consumer `durable` (created if missing).
    pub fn new(stream: impl Into<String>, durable: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            durable: durable.into(),
            filter_subjects: Vec::new(),
            consumer: ConsumerOptions::default(),
            fetch_size: 100,
            fetch_timeout: Duration::from_secs(1),
            concurrency: 1,
            shutdown_grace: Duration::from_secs(10),
            failures: None,
        }
    }

    /// The stream consumed.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The durable consumer's name.
    pub fn durable(&self) -> &str {
        &self.durable
    }

    /// Only these subjects (default: all of the stream's).
    pub fn filter_subjects<I, S>(mut self, subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.filter_subjects = subjects.into_iter().map(Into::into).collect();
        self
    }

    /// The consumer's settings, used when it is created or recreated.
    pub fn consumer_options(mut self, options: ConsumerOptions) -> Self {
        self.consumer = options;
        self
    }

    /// Messages per pull request, at most (default 100, as Go natty fetches). The driver asks
    /// for no more than `concurrency` leaves room for, so this matters when it is lower.
    pub fn fetch_size(mut self, size: usize) -> Self {
        self.fetch_size = size.max(1);
        self
    }

    /// How long one pull request waits for messages (default 1 s, as Go natty's fetch). It
    /// also bounds how long shutdown reads the open requests, and sets the idle heartbeat
    /// (just under half of it) by which a lost connection or server is noticed.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Messages handled at once (default 1).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How long in-flight handlers may run after shutdown before they are cancelled and
    /// their messages nak'd (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Also send each handler error here (Go natty's `ErrorCh`): a tokio `mpsc::Sender`
    /// delivers every report, and the consume loop waits (pulls and starts nothing) while the channel
    /// is full; a [`ReportSender::lossy`] never waits and counts what it dropped, also in
    /// [`ConsumeSummary::dropped_reports`]. Every handler error is logged once at `WARN` either
    /// way ([`log_failure`]).
    pub fn failures(mut self, failures: impl Into<ReportSender<HandlerFailure>>) -> Self {
        self.failures = Some(failures.into());
        self
    }
}

/// What a consume run did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumeSummary {
    /// Calls that returned `Ok`.
    pub handled: u64,
    /// Calls that returned `Err` (a message that failed three times counts three).
    pub failed: u64,
    /// Calls that panicked.
    pub panicked: u64,
    /// Calls cancelled at the end of the shutdown grace (their messages were nak'd).
    pub cancelled: u64,
    /// Deliveries nak'd without a call: pulled but not started when shutdown (or a failing
    /// `poll_ready`) came, or delivered by a pull request still open at shutdown (such as the
    /// redelivery of a message whose call failed during the drain). Each is nak'd once, after
    /// the open requests have ended, so it is counted once and does not come back to this run.
    pub returned: u64,
    /// Handler error reports not delivered: dropped by a full [lossy](ReportSender::lossy)
    /// error channel, or sent after its receiver was dropped (each logged at `ERROR`).
    pub dropped_reports: u64,
}

impl ConsumeSummary {
    /// The summary a [`ConsumeErrorKind::NotReady`] error carries: a run stopped by its
    /// service still drains, and what it did is not lost.
    pub fn from_error(err: &ConsumeError) -> Option<&ConsumeSummary> {
        std::error::Error::source(err)?
            .downcast_ref::<NotReadyError>()
            .map(NotReadyError::summary)
    }
}
