//! [`AckedPublisher`]: publish to JetStream from a handler, inside the subjects the application
//! allowed, and wait for the stream's acknowledgement.
//!
//! Every publish is checked before anything is sent: the subject must be a valid publish
//! subject (400), not reserved and inside the allowed filters (403), the payload no larger
//! than the server's `max_payload` (413), and the client connected (503). Then natty's
//! publish service ([`natty::Publisher`]) sends it with a `Nats-Msg-Id` (yours, from
//! [`IdempotencyKey`], or a fresh one) on the batched pipeline and
//! retries under that id, so the stream stores it once; the handler waits for queue room and
//! then for the stream's ack.
//!
//! # Atomic batches
//! [`AckedPublisher::publish_batch`] stores several messages from one request all or none
//! (nats-server 2.12.1+, streams with `allow_atomic`), under one `Idempotency-Key` for the
//! whole batch: a repeated request stores nothing again and gets the first batch's
//! sequences, the key with another batch is refused (422). See its docs for the status of
//! each refusal.
//!
//! # Example
//! ```no_run
//! use axum::{extract::Path, routing::post, Router};
//! use natty_axum::{rejection::PublishRejection, subject, NattyState, AckedPublisher};
//!
//! async fn ship(
//!     publisher: AckedPublisher,
//!     Path(id): Path<String>,
//!     body: bytes::Bytes,
//! ) -> Result<String, PublishRejection> {
//!     let subject = format!("orders.{}.shipped", subject::token(&id)?);
//!     let ack = publisher.publish_acked(&subject, body).await?;
//!     Ok(format!("stored as {} #{}", ack.stream, ack.sequence))
//! }
//!
//! # async fn run(state: NattyState) {
//! let app: Router = Router::new().route("/orders/{id}/ship", post(ship)).with_state(state);
//! # let _ = app;
//! # }
//! ```

use std::convert::Infallible;
use std::future::poll_fn;

use axum::extract::{FromRef, FromRequestParts};
use bytes::Bytes;
use http::request::Parts;
use natty::async_nats::jetstream::message::StreamMessage;
use natty::async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use natty::error::{BatchErrorKind, PublishErrorKind, StreamErrorKind};
use natty::header::{HeaderMap, NATS_MESSAGE_ID};
use natty::publish::{Batch, BatchAck, BatchError};
use natty::{ConnectionState, OutgoingMessage, PublishAck, PublishError};
use serde::Serialize;
use tower_service::Service;

use crate::rejection::{
    cause, BatchesUnsupported, IdempotencyKeyInUse, IdempotencyKeyReused, InvalidBatch,
    InvalidHeader, InvalidSubject, NatsFailure, NatsTimeout, NatsUnavailable, PayloadTooLarge,
    PublishRejection, ValueNotSerializable,
};
use crate::{IdempotencyKey, NattyState};

/// The headers a stored message of an atomic batch keeps: its batch's id, its place in the
/// batch (from 1), and on the last, the commit.
const BATCH_ID: &str = "Nats-Batch-Id";
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const BATCH_COMMIT: &str = "Nats-Batch-Commit";
/// What the probe that finds a duplicate batch expects the stream's last `Nats-Msg-Id` to
/// be, after the id it looks for: no stream's (an `Idempotency-Key` has no spaces), so a
/// stream that does not hold the id refuses it and it is never stored. The stream checks a
/// `Nats-Msg-Id` before this header (and after `Nats-Expected-Last-Sequence`, on 2.12+).
const PROBE_GUARD: &str = " (natty-axum probe, never a stored id)";
/// JetStream's "duplicate message id is in process": an earlier write of the id is still
/// being stored.
const ID_IN_PROCESS: u64 = 10158;

/// A publish handle scoped to the subjects the application allowed; an extractor. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct AckedPublisher {
    state: NattyState,
}

impl<S> FromRequestParts<S> for AckedPublisher
where
    NattyState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::new(NattyState::from_ref(state)))
    }
}

impl AckedPublisher {
    pub(crate) fn new(state: NattyState) -> Self {
        Self { state }
    }

    /// Publish `payload` to `subject` and wait for the stream to store it.
    ///
    /// # Errors
    /// See [`AckedPublisher::publish_acked_with_headers`].
    pub async fn publish_acked(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, PublishRejection> {
        self.publish_acked_with_headers(subject, HeaderMap::new(), payload)
            .await
    }

    /// Publish `value` as JSON to `subject` and wait for the stream to store it.
    ///
    /// # Errors
    /// See [`AckedPublisher::publish_json_acked_with_headers`].
    pub async fn publish_json_acked<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        value: &T,
    ) -> Result<PublishAck, PublishRejection> {
        self.publish_json_acked_with_headers(subject, HeaderMap::new(), value)
            .await
    }

    /// Publish `value` as JSON with headers (an [`IdempotencyKey`]'s,
    /// say), as [`AckedPublisher::publish_acked_with_headers`] does. A value that does not
    /// serialize is refused before anything is sent: no message goes out with an empty body.
    ///
    /// # Errors
    /// See [`AckedPublisher::publish_acked_with_headers`]; 500 [`ValueNotSerializable`] when
    /// `value` does not serialize.
    pub async fn publish_json_acked_with_headers<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        headers: HeaderMap,
        value: &T,
    ) -> Result<PublishAck, PublishRejection> {
        let payload = serde_json::to_vec(value).map_err(ValueNotSerializable::with_cause)?;
        self.publish_acked_with_headers(subject, headers, payload)
            .await
    }

    /// Publish with headers; a `Nats-Msg-Id` among them is kept (the stream drops a second
    /// message with the same id inside its duplicate window), otherwise one is generated.
    ///
    /// A kept id is bound to its request: when the stream answers "duplicate", the first
    /// message stored under the id is read back, and a different subject or payload is
    /// refused with 422 [`IdempotencyKeyReused`]; the same request gets the first message's
    /// ack (same sequence, `duplicate: true`). The binding lasts as long as the stream's
    /// duplicate window (2 minutes by default).
    ///
    /// # Errors
    /// 400 [`InvalidSubject`] or [`InvalidHeader`],
    /// 403 [`SubjectOutOfScope`](crate::rejection::SubjectOutOfScope),
    /// 413 [`PayloadTooLarge`], 422 [`IdempotencyKeyReused`], 503 [`NatsUnavailable`] when
    /// disconnected, 504 [`NatsTimeout`] when the stream's ack did not come in time (the
    /// message may be stored: send it again with the same key to store it at most once), and
    /// 500 [`NatsFailure`] for the rest (such as no stream capturing the subject).
    pub async fn publish_acked_with_headers(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, PublishRejection> {
        let payload = payload.into();
        self.state.check_publish(subject)?;
        if let Some(invalid) = headers.invalid() {
            return Err(InvalidHeader::with_detail(invalid).into());
        }
        let max = self.state.max_payload();
        if max > 0 && payload.len() > max {
            return Err(PayloadTooLarge::with_detail(format_args!(
                "{} bytes is more than the server's max_payload of {max} bytes",
                payload.len()
            ))
            .into());
        }
        let natty = self.state.natty();
        if !self.connected() {
            return Err(self.unavailable("not connected", None).into());
        }
        let keyed = headers.get(NATS_MESSAGE_ID).is_some();
        let message = OutgoingMessage::new(subject, payload.clone()).with_headers(headers);
        let mut publisher = natty.publisher();
        poll_fn(|cx| publisher.poll_ready(cx))
            .await
            .map_err(|err| self.rejection(err))?;
        let ack = publisher
            .call(message)
            .await
            .map_err(|err| self.rejection(err))?;
        if ack.duplicate && keyed {
            self.check_same_request(&ack, subject, &payload).await?;
        }
        Ok(ack)
    }

    /// A duplicate ack names the first message stored under the id; the id is bound to that
    /// request, so a different subject or payload is refused (IETF httpapi Idempotency-Key
    /// draft: 422). Costs one request, on duplicates only.
    async fn check_same_request(
        &self,
        ack: &PublishAck,
        subject: &str,
        payload: &Bytes,
    ) -> Result<(), PublishRejection> {
        let first = match ack.stored_message().await {
            Ok(first) => first,
            // Removed since (limits, work queue): nothing left to compare with, the stream
            // still stored the id once.
            Err(err) if err.kind() == StreamErrorKind::NotFound => return Ok(()),
            Err(err) if err.kind() == StreamErrorKind::TimedOut && self.connected() => {
                return Err(NatsTimeout::with_cause(err).into())
            }
            Err(err) => return Err(self.failure(err)),
        };
        if first.subject == subject && first.payload == *payload {
            Ok(())
        } else {
            Err(IdempotencyKeyReused::with_detail(
                "the key was first used with another subject or payload",
            )
            .into())
        }
    }

    /// Publish `batch` as one atomic batch (nats-server 2.12.1+) and wait for the stream to
    /// store it: all of its messages with consecutive sequences, or none of them.
    ///
    /// With `key`, message `i` gets the `Nats-Msg-Id` `<key>:<i>` (replacing the one
    /// [`Batch::push`] gave it, or the caller's), so a repeated request carries the same ids
    /// and the stream refuses it whole as a duplicate within its duplicate window (2 minutes
    /// by default). natty-axum then binds the key to its request, as
    /// [`AckedPublisher::publish_acked_with_headers`] does for one message: it finds the
    /// first batch (one publish of the key's first id that the stream answers "duplicate"
    /// with its sequence and refuses to store, then a read of each of its messages) and
    /// compares them: the same subjects and payloads in the same order, stored as one batch
    /// of exactly this length (its `Nats-Batch-*` headers say so), answer the first batch's
    /// sequences with [`duplicate`](BatchPublished::duplicate) set; anything else is 422
    /// [`IdempotencyKeyReused`]. That is `1 + count` requests, on duplicates only. A message
    /// of the first batch that the stream no longer holds (limits, a work queue) is not
    /// compared.
    /// Without a key the messages keep their ids; ids the caller set are checked the same
    /// way when the stream answers "duplicate".
    ///
    /// Before anything is sent, every subject is checked as for one message (valid, inside
    /// the allowed scope), and so are the headers and the payload sizes: one bad message
    /// refuses the whole request and nothing is stored.
    ///
    /// # Example
    /// ```no_run
    /// use axum::{routing::post, Json, Router};
    /// use natty::{publish::Batch, OutgoingMessage};
    /// use natty_axum::publish::BatchPublished;
    /// use natty_axum::{rejection::PublishRejection, AckedPublisher, IdempotencyKey, NattyState};
    ///
    /// /// One order, its lines: stored together or not at all, once per `Idempotency-Key`.
    /// async fn place(
    ///     publisher: AckedPublisher,
    ///     key: Option<IdempotencyKey>,
    ///     Json(lines): Json<Vec<String>>,
    /// ) -> Result<String, PublishRejection> {
    ///     let batch: Batch = lines
    ///         .into_iter()
    ///         .enumerate()
    ///         .map(|(n, line)| OutgoingMessage::new(format!("orders.lines.{n}"), line))
    ///         .collect();
    ///     let BatchPublished { first_sequence, last_sequence, duplicate, .. } =
    ///         publisher.publish_batch(key.as_ref(), batch).await?;
    ///     Ok(format!("{first_sequence}..={last_sequence} (already stored: {duplicate})"))
    /// }
    ///
    /// # fn app(state: NattyState) -> Router {
    /// Router::new().route("/orders", post(place)).with_state(state)
    /// # }
    /// ```
    ///
    /// # Errors
    /// - 400 [`InvalidSubject`] or [`InvalidHeader`] (including the headers natty refuses in
    ///   a batch: `Nats-Batch-*`, `Nats-Expected-Last-Msg-Id`, one `Nats-Msg-Id` twice),
    /// - 403 [`SubjectOutOfScope`](crate::rejection::SubjectOutOfScope) when any subject is
    ///   reserved or outside the allowed filters,
    /// - 409 [`IdempotencyKeyInUse`] while a batch with the same key is still being stored,
    /// - 413 [`PayloadTooLarge`] when any payload is over the server's `max_payload`,
    /// - 422 [`InvalidBatch`] for an empty batch, more messages than the server takes in one
    ///   batch (1,000 by default), or messages for more than one stream,
    /// - 422 [`IdempotencyKeyReused`] when the key was used for another batch, or for a
    ///   single message stored as the batch's first (`<key>:0`); a key used before by
    ///   [`publish_acked_with_headers`](Self::publish_acked_with_headers) (stored as `<key>`)
    ///   is not seen,
    /// - 501 [`BatchesUnsupported`] when the server has no atomic batches (before 2.12.1);
    ///   nothing was sent,
    /// - 503 [`NatsUnavailable`] when disconnected, when the server dropped the batch before
    ///   its commit (a lost message, its batch timeout, a leader change) or has too many
    ///   batches open; nothing was stored and sending the request again is safe,
    /// - 504 [`NatsTimeout`] when the commit's answer did not come in time: the batch may be
    ///   stored, and sending the request again with the same key stores it at most once,
    /// - 500 [`NatsFailure`] for the rest: no stream captures a subject, the stream does not
    ///   allow atomic publishing, a `Nats-Expected-Last-*Sequence` header did not match.
    pub async fn publish_batch(
        &self,
        key: Option<&IdempotencyKey>,
        batch: Batch,
    ) -> Result<BatchPublished, PublishRejection> {
        if batch.is_empty() {
            return Err(InvalidBatch::with_detail("the batch has no messages").into());
        }
        let batch = match key {
            Some(key) => keyed(key, &batch),
            None => batch,
        };
        let max = self.state.max_payload();
        for (index, message) in batch.messages().iter().enumerate() {
            self.state.check_publish(message.subject())?;
            if let Some(invalid) = message.headers().invalid() {
                return Err(
                    InvalidHeader::with_detail(format_args!("message {index}: {invalid}")).into(),
                );
            }
            let len = message.payload().len();
            if max > 0 && len > max {
                return Err(PayloadTooLarge::with_detail(format_args!(
                    "message {index}: {len} bytes is more than the server's max_payload of \
                     {max} bytes"
                ))
                .into());
            }
        }
        let natty = self.state.natty();
        if !self.connected() {
            return Err(self.unavailable("not connected", None).into());
        }
        match natty.publisher().publish_batch(&batch).await {
            Ok(ack) => Ok(BatchPublished::stored(ack)),
            Err(err) if err.kind() == BatchErrorKind::Duplicate => {
                self.stored_before(&batch, err).await
            }
            Err(err) => Err(self.batch_rejection(err)),
        }
    }

    /// The stream refused `batch` as a duplicate: find the batch stored under its first id
    /// and answer its sequences when it is the same batch, 422 when it is not.
    async fn stored_before(
        &self,
        batch: &Batch,
        err: BatchError,
    ) -> Result<BatchPublished, PublishRejection> {
        let reused = || {
            PublishRejection::from(IdempotencyKeyReused::with_detail(
                "the key was first used with another batch",
            ))
        };
        let first = &batch.messages()[0];
        let Some(id) = first.headers().get(NATS_MESSAGE_ID) else {
            return Err(self.failure(err));
        };
        let (stream, first_sequence) = match self.probe(first.subject(), id).await? {
            Probe::Stored { stream, sequence } => (stream, sequence),
            Probe::InProcess => {
                return Err(IdempotencyKeyInUse::with_detail(
                    "a batch with this key is being stored; try again once it is answered",
                )
                .into())
            }
            // Another of the batch's ids is stored, not its first: not this batch.
            Probe::NotStored => return Err(reused()),
        };
        let count = batch.len() as u64;
        let answer = BatchPublished {
            stream,
            first_sequence,
            last_sequence: first_sequence + count - 1,
            duplicate: true,
        };
        let stream = self
            .state
            .natty()
            .jetstream()
            .get_stream_no_info(&answer.stream)
            .await
            .map_err(|err| self.failure(err))?;
        // The stream keeps each message's `Nats-Batch-Id`, `Nats-Batch-Sequence` and, on the
        // last, `Nats-Batch-Commit` (2.12+): one batch, in order, ending where this one ends.
        let mut batch_id = None;
        let mut committed = None;
        for (index, message) in batch.messages().iter().enumerate() {
            // Removed since (limits, work queue): nothing left to compare with, the stream
            // still stored the ids once.
            let Some(stored) = self.stored(&stream, first_sequence + index as u64).await? else {
                committed = None;
                continue;
            };
            let position = (index + 1).to_string();
            let same = stored.subject.as_str() == message.subject()
                && stored.payload == *message.payload()
                && stored_header(&stored, NATS_MESSAGE_ID)
                    == message.headers().get(NATS_MESSAGE_ID)
                && stored_header(&stored, BATCH_SEQUENCE).is_none_or(|n| n == position);
            let id = stored_header(&stored, BATCH_ID);
            let same_batch = match (&batch_id, id) {
                (Some(first), Some(id)) => first == id,
                (None, _) => {
                    batch_id = id.map(str::to_owned);
                    true
                }
                (Some(_), None) => false,
            };
            if !same || !same_batch {
                return Err(reused());
            }
            committed = id.map(|_| stored_header(&stored, BATCH_COMMIT).is_some());
        }
        match committed {
            Some(true) => {}
            // The first batch goes on past this one's end.
            Some(false) => return Err(reused()),
            // Without batch headers: the first batch was longer when its next message is of
            // the same batch or carries the key's next id.
            None => {
                if let Some(next) = self.stored(&stream, answer.last_sequence + 1).await? {
                    let next_id = stored_header(&next, NATS_MESSAGE_ID);
                    let same_batch =
                        batch_id.is_some() && stored_header(&next, BATCH_ID) == batch_id.as_deref();
                    let next_key_id = next_id.is_some() && next_id == next_key_id(batch).as_deref();
                    if same_batch || next_key_id {
                        return Err(reused());
                    }
                }
            }
        }
        Ok(answer)
    }

    /// Publish an empty message with `id` that the stream cannot store (the last message id
    /// it expects is never one), to learn where `id` is stored: the stream checks the
    /// `Nats-Msg-Id` first and answers a stored one as a duplicate with its sequence. Core
    /// NATS subscribers of the subject (not the stream's consumers) see the probe.
    async fn probe(&self, subject: &str, id: &str) -> Result<Probe, PublishRejection> {
        let mut headers = natty::async_nats::HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, id);
        headers.insert(
            "Nats-Expected-Last-Msg-Id",
            format!("{id}{PROBE_GUARD}").as_str(),
        );
        let answer = self
            .state
            .natty()
            .client()
            .request_with_headers(subject.to_owned(), headers, Bytes::new())
            .await
            .map_err(|err| match err.kind() {
                natty::async_nats::client::RequestErrorKind::TimedOut if self.connected() => {
                    NatsTimeout::with_cause(err).into()
                }
                _ => self.failure(err),
            })?;
        let answer: serde_json::Value = serde_json::from_slice(&answer.payload)
            .map_err(|err| self.failure(format!("unreadable answer to a probe: {err}")))?;
        if answer["duplicate"] == true {
            if let (Some(stream), Some(sequence)) =
                (answer["stream"].as_str(), answer["seq"].as_u64())
            {
                return Ok(Probe::Stored {
                    stream: stream.to_owned(),
                    sequence,
                });
            }
        }
        if answer["error"]["err_code"].as_u64() == Some(ID_IN_PROCESS) {
            return Ok(Probe::InProcess);
        }
        if answer["error"].is_object() {
            return Ok(Probe::NotStored);
        }
        Err(self.failure(format!(
            "a probe that cannot be stored was answered {answer}"
        )))
    }

    /// The message at `sequence`, `None` when the stream no longer holds it.
    async fn stored(
        &self,
        stream: &Stream<()>,
        sequence: u64,
    ) -> Result<Option<StreamMessage>, PublishRejection> {
        match stream.get_raw_message(sequence).await {
            Ok(message) => Ok(Some(message)),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(self.failure(err)),
        }
    }

    /// A batch refusal as the HTTP answer it deserves.
    fn batch_rejection(&self, err: BatchError) -> PublishRejection {
        match err.kind() {
            BatchErrorKind::InvalidSubject => InvalidSubject::with_detail(cause(&err)).into(),
            BatchErrorKind::InvalidHeader => InvalidHeader::with_detail(cause(&err)).into(),
            BatchErrorKind::PayloadTooLarge => PayloadTooLarge::with_detail(cause(&err)).into(),
            // The server's own words name streams: a detail of natty-axum's instead.
            BatchErrorKind::Empty => InvalidBatch::with_detail("the batch has no messages").into(),
            BatchErrorKind::TooManyMessages => {
                InvalidBatch::with_detail("more messages than the server takes in one batch").into()
            }
            BatchErrorKind::MixedStreams => {
                InvalidBatch::with_detail("the messages go to more than one stream").into()
            }
            BatchErrorKind::Unsupported => BatchesUnsupported::with_cause(err).into(),
            BatchErrorKind::Incomplete => self
                .batch_unavailable("the batch did not reach the stream whole", err)
                .into(),
            BatchErrorKind::TooManyInFlight => self
                .batch_unavailable("too many batches in flight", err)
                .into(),
            BatchErrorKind::Closed => self.batch_unavailable("not connected", err).into(),
            BatchErrorKind::TimedOut if self.connected() => NatsTimeout::with_cause(err).into(),
            _ => self.failure(err),
        }
    }

    fn batch_unavailable(&self, reason: &'static str, cause: BatchError) -> NatsUnavailable {
        NatsUnavailable::new(self.state.retry_after_secs(), reason, Some(cause.into()))
    }

    fn unavailable(&self, reason: &'static str, cause: Option<PublishError>) -> NatsUnavailable {
        NatsUnavailable::new(self.state.retry_after_secs(), reason, cause.map(Into::into))
    }

    fn connected(&self) -> bool {
        self.state.natty().connection_state() == ConnectionState::Connected
    }

    /// A NATS error that is not the request's fault: 503 while disconnected, 500 otherwise.
    fn failure(
        &self,
        err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> PublishRejection {
        if !self.connected() {
            NatsUnavailable::new(
                self.state.retry_after_secs(),
                "not connected",
                Some(err.into()),
            )
            .into()
        } else {
            NatsFailure::with_cause(err).into()
        }
    }

    fn rejection(&self, err: PublishError) -> PublishRejection {
        match err.kind() {
            PublishErrorKind::InvalidSubject => InvalidSubject::with_detail(cause(&err)).into(),
            PublishErrorKind::InvalidHeader => InvalidHeader::with_detail(cause(&err)).into(),
            PublishErrorKind::PayloadTooLarge => PayloadTooLarge::with_detail(cause(&err)).into(),
            PublishErrorKind::TimedOut if self.connected() => NatsTimeout::with_cause(err).into(),
            PublishErrorKind::Closed => self.unavailable("not connected", Some(err)).into(),
            _ => self.failure(err),
        }
    }
}

/// Where [`AckedPublisher::publish_batch`] stored a batch: one stream, consecutive
/// sequences.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BatchPublished {
    /// The stream that stored it.
    pub stream: String,
    /// The sequence of its first message.
    pub first_sequence: u64,
    /// The sequence of its last message.
    pub last_sequence: u64,
    /// Whether the batch was stored by an earlier request with the same ids (the same
    /// `Idempotency-Key`): this one stored nothing, and the sequences are the first
    /// request's.
    pub duplicate: bool,
}

impl BatchPublished {
    fn stored(ack: BatchAck) -> Self {
        Self {
            stream: ack.stream,
            first_sequence: ack.first_sequence,
            last_sequence: ack.last_sequence,
            duplicate: false,
        }
    }

    /// Every message's sequence, in batch order.
    pub fn sequences(&self) -> std::ops::RangeInclusive<u64> {
        self.first_sequence..=self.last_sequence
    }

    /// How many messages the batch has.
    pub fn count(&self) -> u64 {
        self.last_sequence + 1 - self.first_sequence
    }
}

/// What the probe of a duplicate batch's first id found.
enum Probe {
    /// The id is stored at `sequence` in `stream`.
    Stored { stream: String, sequence: u64 },
    /// An earlier write of the id is still being stored.
    InProcess,
    /// The stream does not hold the id.
    NotStored,
}

/// `batch` with message `i`'s `Nats-Msg-Id` set to `<key>:<i>`.
fn keyed(key: &IdempotencyKey, batch: &Batch) -> Batch {
    batch
        .messages()
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let mut message = message.clone();
            message
                .headers_mut()
                .insert(NATS_MESSAGE_ID, format!("{}:{index}", key.as_str()));
            message
        })
        .collect()
}

/// The id a longer batch under the same key would give its next message: `<key>:<len>`,
/// when the last message's id is `<key>:<len - 1>`.
fn next_key_id(batch: &Batch) -> Option<String> {
    let last = batch.messages().last()?.headers().get(NATS_MESSAGE_ID)?;
    let suffix = format!(":{}", batch.len() - 1);
    let key = last.strip_suffix(suffix.as_str())?;
    Some(format!("{key}:{}", batch.len()))
}

fn stored_header<'a>(message: &'a StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|value| value.as_str())
}

#[cfg(test)]
mod tests {
    use natty::OutgoingMessage;

    use super::*;

    #[test]
    fn a_key_names_every_message_of_the_batch_by_its_index() {
        let batch: Batch = ["a", "b", "c"]
            .into_iter()
            .map(|n| OutgoingMessage::new(format!("orders.{n}"), n))
            .collect();
        let keyed = keyed(&IdempotencyKey::new("req-1").unwrap(), &batch);
        let ids: Vec<_> = keyed
            .messages()
            .iter()
            .map(|m| m.headers().get(NATS_MESSAGE_ID).unwrap())
            .collect();
        assert_eq!(ids, ["req-1:0", "req-1:1", "req-1:2"]);
        assert_eq!(next_key_id(&keyed).as_deref(), Some("req-1:3"));
        assert_eq!(next_key_id(&batch), None, "fresh ids have no next");
    }
}
