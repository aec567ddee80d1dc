//! What a publish sends and what comes back: [`OutgoingMessage`], the stream's
//! [`PublishAck`] and the [`StoredMessage`] it reads back, and the [`PublishFailure`]
//! reported for a message that could not be confirmed.

use std::fmt;
use std::sync::Arc;

use async_nats::jetstream;
use bytes::Bytes;

use crate::error::{classify_stream, StreamError};
use crate::error::{Error, PublishErrorKind, StreamErrorKind};
use crate::header::HeaderMap;

/// The error of a publish.
pub type PublishError = Error<PublishErrorKind>;

/// A message to publish: subject, payload and headers. Headers may carry a `Nats-Msg-Id`
/// (an idempotency key, kept); natty adds one otherwise.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    subject: String,
    payload: Bytes,
    headers: HeaderMap,
}

impl OutgoingMessage {
    /// A message of `payload` for `subject`, without headers.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.into(),
            payload: payload.into(),
            headers: HeaderMap::new(),
        }
    }

    /// This message with `headers` instead of its own.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// This message with the header `name` set to `value` (see [`HeaderMap::insert`]: an
    /// invalid header makes the publish fail with `InvalidHeader`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, to change (for example by a layer that adds trace context).
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// Subject, payload and headers, moved out.
    pub(super) fn into_parts(self) -> (String, Bytes, HeaderMap) {
        (self.subject, self.payload, self.headers)
    }
}

/// The stream's confirmation that it stored a message.
#[derive(Clone)]
#[non_exhaustive]
pub struct PublishAck {
    /// The stream that stored the message.
    pub stream: String,
    /// Its sequence in the stream.
    pub sequence: u64,
    /// Whether the stream had already stored a message with the same `Nats-Msg-Id` within its
    /// duplicate window; [`PublishAck::stored_message`] reads that message back.
    pub duplicate: bool,
    jetstream: Option<Arc<jetstream::Context>>,
}

impl fmt::Debug for PublishAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishAck")
            .field("stream", &self.stream)
            .field("sequence", &self.sequence)
            .field("duplicate", &self.duplicate)
            .finish()
    }
}

impl PublishAck {
    /// A hand-built ack (for tests and services that store messages elsewhere);
    /// [`PublishAck::stored_message`] on it fails with `NotFound`.
    pub fn new(stream: impl Into<String>, sequence: u64, duplicate: bool) -> Self {
        Self {
            stream: stream.into(),
            sequence,
            duplicate,
            jetstream: None,
        }
    }

    pub(crate) fn new_stored(
        ack: jetstream::publish::PublishAck,
        jetstream: &Arc<jetstream::Context>,
    ) -> Self {
        Self {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
            jetstream: Some(Arc::clone(jetstream)),
        }
    }

    /// Read back the message stored at this ack's sequence: for a duplicate, the first
    /// message stored under the `Nats-Msg-Id`, to check it is the same one (one request).
    ///
    /// # Errors
    /// `NotFound` when the stream no longer holds it (limits, a work queue) or the ack was
    /// hand-built; `TimedOut` or `JetStream` from the server.
    pub async fn stored_message(&self) -> Result<StoredMessage, StreamError> {
        let Some(jetstream) = &self.jetstream else {
            return Err(Error::new(StreamErrorKind::NotFound));
        };
        let stream = jetstream
            .get_stream_no_info(&self.stream)
            .await
            .map_err(classify_stream)?;
        let stored = stream
            .get_raw_message(self.sequence)
            .await
            .map_err(classify_stream)?;
        Ok(StoredMessage::read(stored))
    }
}

/// A message as a stream stores it, read back by [`PublishAck::stored_message`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoredMessage {
    /// The subject it was published to.
    pub subject: String,
    /// Its sequence in the stream.
    pub sequence: u64,
    /// Its headers, `Nats-Msg-Id` included.
    pub headers: HeaderMap,
    /// Its payload.
    pub payload: Bytes,
}

impl StoredMessage {
    /// A message the stream answered a get with.
    pub(crate) fn read(stored: jetstream::message::StreamMessage) -> Self {
        Self {
            subject: stored.subject.to_string(),
            sequence: stored.sequence,
            headers: HeaderMap::received(stored.headers),
            payload: stored.payload,
        }
    }
}

/// A message whose publish natty could not confirm after every attempt.
///
/// "Unconfirmed" is not "not stored": a publish sent while the connection was dropping can
/// still reach the stream once the client reconnects, after natty gave up waiting for its ack.
/// Resend it with [`Publisher::republish`](crate::Publisher::republish), which keeps its
/// `Nats-Msg-Id`, so the stream stores it at most once within its duplicate window.
#[derive(Debug)]
#[non_exhaustive]
pub struct PublishFailure {
    /// The subject it was published to.
    pub subject: String,
    /// Its `Nats-Msg-Id`.
    pub message_id: String,
    /// The payload, so the caller can store or resend it.
    pub payload: Bytes,
    /// The headers it was sent with, `Nats-Msg-Id` included.
    pub headers: HeaderMap,
    /// Why the last attempt failed.
    pub error: PublishError,
}
