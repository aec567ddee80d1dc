//! A handler's failure: its report, [`HandlerFailure`], and the one rule for logging it,
//! [`log_failure`], which natty's engine and natty-tower's report layer both follow.

use std::sync::Arc;

use async_nats::Subject;

use super::ConsumeError;
use crate::error::{BoxError, ConsumeErrorKind, Error};
use crate::header::HeaderMap;
use crate::message::{message_id_in, Acker, Message, Name};
use crate::report::ReportSender;

/// A handler error with the message it happened on (Go natty's `ErrorCh` reports): what
/// natty's engine sends to [`ConsumeConfig::failures`](super::ConsumeConfig::failures) and
/// natty-tower's report layer to its channel.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandlerFailure {
    /// The message's subject.
    pub subject: String,
    /// The stream the message is stored in.
    pub stream: Name,
    /// The durable consumer that delivered it.
    pub consumer: Name,
    /// The message's stream sequence.
    pub stream_sequence: u64,
    /// How often it has been delivered.
    pub delivered: u64,
    /// The `Nats-Msg-Id` header, if the message had one.
    pub message_id: Option<String>,
    /// What went wrong (`ConsumeErrorKind::Handler` with the handler's error as source, or
    /// `Panicked` with the panic's text).
    pub error: ConsumeError,
}

impl HandlerFailure {
    /// The failure of `msg`'s handler with `error` (kind [`ConsumeErrorKind::Handler`], `error`
    /// its source), for a layer that reports failures itself.
    pub fn new(msg: &Message, error: impl Into<BoxError>) -> Self {
        Origin::of(msg).failed(Error::with_source(ConsumeErrorKind::Handler, error))
    }
}

/// What a report needs of a message, kept while its call runs: reference counts, no copies
/// (the message id is read only when the call failed).
pub(crate) struct Origin {
    subject: Subject,
    stream: Name,
    consumer: Name,
    stream_sequence: u64,
    delivered: u64,
    headers: Option<Arc<HeaderMap>>,
}

impl Origin {
    pub(crate) fn of(msg: &Message) -> Self {
        let info = msg.info();
        Self {
            subject: msg.subject_handle().clone(),
            stream: info.stream.clone(),
            consumer: info.consumer.clone(),
            stream_sequence: info.stream_sequence,
            delivered: info.delivered,
            headers: msg.headers_handle(),
        }
    }

    /// The report of the call's failure with `error`.
    pub(crate) fn failed(self, error: ConsumeError) -> HandlerFailure {
        HandlerFailure {
            subject: self.subject.to_string(),
            stream: self.stream,
            consumer: self.consumer,
            stream_sequence: self.stream_sequence,
            delivered: self.delivered,
            message_id: self
                .headers
                .as_deref()
                .and_then(message_id_in)
                .map(str::to_owned),
            error,
        }
    }
}

/// Log `failure`, the failure of the delivery `acker` settles: at `WARN` the first time a
/// failure of that delivery is logged, at `DEBUG` after.
///
/// This is the one rule that keeps a failure to one log line. One failure can pass several
/// reporters: natty-tower's report layer (or a layer of your own), then natty's engine, which
/// sees every failure a stack returns. Each sends it to its own channel, if it has one, and
/// logs it here: the first reporter of the delivery at `WARN`, the ones after it at `DEBUG`.
/// The mark is kept with the delivery's [`Acker`], which every clone of the message shares (so
/// the attempts of an in-process retry share one line too); the message's extensions cannot
/// hold it, since the engine never sees the message again once the handler has it.
pub fn log_failure(acker: &Acker, failure: &HandlerFailure) {
    if acker.first_failure_log() {
        tracing::warn!(
            target: "natty",
            subject = %failure.subject,
            stream = %failure.stream,
            consumer = %failure.consumer,
            stream_sequence = failure.stream_sequence,
            delivered = failure.delivered,
            message_id = failure.message_id.as_deref(),
            error = %format_args!("{:#}", failure.error),
            "message handler failed"
        );
    } else {
        tracing::debug!(
            target: "natty",
            subject = %failure.subject,
            stream_sequence = failure.stream_sequence,
            "message handler failure reported again (logged once per delivery)"
        );
    }
}

/// Log `failure` ([`log_failure`]) and send it to `reports`, as natty's engine does: waiting for
/// room unless the sender is lossy. Returns whether it was delivered: one that was not is
/// logged at `ERROR` and counted in [`ReportSender::dropped`].
///
/// # Example
/// ```
/// use natty::consume::{log_failure, report_failure, HandlerFailure};
/// use natty::{Message, ReportSender};
/// use tokio::sync::mpsc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // What a reporting layer of your own does with a failed call's message.
/// let (sender, mut failures) = mpsc::channel(8);
/// let reports = ReportSender::from(sender);
/// let (msg, _) = Message::builder("orders.created", "{}").delivered(2).build();
/// let failure = HandlerFailure::new(&msg, "inventory service unavailable");
/// assert!(report_failure(msg.acker(), failure, &reports).await, "logged at WARN and sent");
///
/// let failure = failures.recv().await.unwrap();
/// assert_eq!(failure.subject, "orders.created");
/// assert_eq!(failure.delivered, 2);
/// // The engine, reporting the same delivery's failure after the layer, logs it at DEBUG only.
/// log_failure(msg.acker(), &failure);
/// # }
/// ```
pub async fn report_failure(
    acker: &Acker,
    failure: HandlerFailure,
    reports: &ReportSender<HandlerFailure>,
) -> bool {
    log_failure(acker, &failure);
    let Err(undelivered) = reports.send(failure).await else {
        return true;
    };
    let reason = undelivered.reason();
    let failure = undelivered.into_inner();
    tracing::error!(
        target: "natty",
        subject = %failure.subject,
        stream_sequence = failure.stream_sequence,
        error = %format_args!("{:#}", failure.error),
        reason,
        "handler failure report not delivered"
    );
    false
}
