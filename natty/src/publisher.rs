//! [`Publisher`]: publishing as a tower [`Service`], so tower's middleware applies to it.
//!
//! [`Natty::publisher`](crate::Natty::publisher) hands out a cheap-to-clone [`Publisher`]
//! that takes an [`OutgoingMessage`] and answers with the stream's [`PublishAck`]. Underneath
//! it is the same batched pipeline as [`Natty::publish`](crate::Natty::publish): the
//! subject's worker, its window of outstanding acks, retries under the same `Nats-Msg-Id`.
//!
//! `poll_ready` reserves a slot of queue room: a natty client's publisher services share
//! `queue_capacity` slots ([`PublishConfig::queue_capacity`](crate::PublishConfig::queue_capacity)),
//! and a slot is given back once its message is acked or has failed. So `poll_ready` is
//! pending while the pipeline holds that many unsettled calls, and tower's `ConcurrencyLimit`,
//! `RateLimit`, `Timeout` and `LoadShed` (which refuses a call at once when `poll_ready` is
//! pending) work on publishing as they do on any service.
//!
//! `call` validates and enqueues at once, so the calls of one task reach a subject's queue in
//! call order. Its future resolves with the ack; dropped before that (a `Timeout`), it does not
//! take the message back: the message is still sent, and a failure it meets is reported like a
//! [`Natty::publish`](crate::Natty::publish) failure
//! ([`PublishConfig::failures`](crate::PublishConfig::failures)). A failure the caller waited
//! for is the caller's and is not reported again.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use natty::{OutgoingMessage, Natty};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let natty = Natty::connect(natty::Config::from_env()).await?;
//! let mut publisher = ServiceBuilder::new()
//!     .load_shed()                                 // refuse at once when the queue is full
//!     .timeout(Duration::from_secs(5))
//!     .service(natty.publisher());
//! let ack = publisher
//!     .ready()
//!     .await?
//!     .call(OutgoingMessage::new("orders.created", "order 1"))
//!     .await?;
//! println!("stored as {} #{}", ack.stream, ack.sequence);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_nats::jetstream;
use bytes::Bytes;
use pin_project_lite::pin_project;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio_util::sync::{PollSemaphore, PollSender};
use tower_service::Service;

use crate::error::{Error, PublishErrorKind, StreamErrorKind};
use crate::header::HeaderMap;
use crate::publish::{Enqueue, Outgoing, Pipeline, Prepared, PublishError, Reply};
use crate::stream::StreamError;

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
            .map_err(crate::error::classify_stream)?;
        let stored = stream
            .get_raw_message(self.sequence)
            .await
            .map_err(crate::error::classify_stream)?;
        Ok(StoredMessage {
            subject: stored.subject.to_string(),
            sequence: stored.sequence,
            headers: HeaderMap::received(stored.headers),
            payload: stored.payload,
        })
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

/// Publishing as a tower [`Service`]; see the [module docs](self).
pub struct Publisher {
    pipeline: Arc<Pipeline>,
    room: PollSemaphore,
    slot: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("room", &self.room.available_permits())
            .field("ready", &self.slot.is_some())
            .finish()
    }
}

impl Clone for Publisher {
    /// A clone reserves its own slot: the one this publisher holds stays with it.
    fn clone(&self) -> Self {
        Self {
            pipeline: Arc::clone(&self.pipeline),
            room: self.room.clone(),
            slot: None,
        }
    }
}

impl Publisher {
    pub(crate) fn new(pipeline: Arc<Pipeline>) -> Self {
        let room = PollSemaphore::new(Arc::clone(pipeline.room()));
        Self {
            pipeline,
            room,
            slot: None,
        }
    }
}

impl Service<OutgoingMessage> for Publisher {
    type Response = PublishAck;
    type Error = PublishError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.slot.is_none() {
            match ready!(self.room.poll_acquire(cx)) {
                Some(slot) => self.slot = Some(slot),
                // Closed by `Natty::shutdown`.
                None => return Poll::Ready(Err(Error::new(PublishErrorKind::Closed))),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: OutgoingMessage) -> Self::Future {
        let slot = self
            .slot
            .take()
            .expect("Publisher::call without a slot: poll_ready must return Ready(Ok) first");
        let (sender, answer) = oneshot::channel();
        let reply = Reply {
            sender,
            _slot: slot,
        };
        let OutgoingMessage {
            subject,
            payload,
            headers,
        } = message;
        let state = match self
            .pipeline
            .prepare(&subject, Some(headers), payload, Some(reply))
        {
            Err(error) => State::Failed { error: Some(error) },
            Ok(prepared) => match self.pipeline.try_enqueue(&subject, prepared) {
                Ok(()) => State::Answer { answer },
                Err(Enqueue::Failed(error)) => State::Failed { error: Some(error) },
                Err(Enqueue::Full(sender, outgoing)) => State::WaitForRoom {
                    pipeline: Arc::clone(&self.pipeline),
                    subject,
                    queue: PollSender::new(sender),
                    outgoing: Some(outgoing),
                    answer: Some(answer),
                },
            },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The future of a [`Publisher`] call: the stream's ack, or why there is none.
    pub struct ResponseFuture {
        state: State,
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Failed { .. } => "failed",
            State::WaitForRoom { .. } => "waiting for room",
            State::Answer { .. } => "waiting for the ack",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

enum State {
    Failed {
        error: Option<PublishError>,
    },
    /// The subject's queue was full (`Natty::publish` callers filled it): wait for room. Nothing
    /// is queued or counted yet, so dropping the future here takes the message back.
    WaitForRoom {
        pipeline: Arc<Pipeline>,
        subject: String,
        queue: PollSender<Outgoing>,
        outgoing: Option<Outgoing>,
        answer: Option<oneshot::Receiver<Result<PublishAck, PublishError>>>,
    },
    Answer {
        answer: oneshot::Receiver<Result<PublishAck, PublishError>>,
    },
}

impl Future for ResponseFuture {
    type Output = Result<PublishAck, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = self.project().state;
        loop {
            match state {
                State::Failed { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| Error::new(PublishErrorKind::Closed))));
                }
                State::WaitForRoom {
                    pipeline,
                    subject,
                    queue,
                    outgoing,
                    answer,
                } => {
                    if ready!(queue.poll_reserve(cx)).is_err() {
                        // The worker went idle meanwhile: enqueue on its successor's queue.
                        let (Some(message), Some(receiver)) = (outgoing.take(), answer.take())
                        else {
                            *state = State::Failed { error: None };
                            continue;
                        };
                        *state = match pipeline.try_enqueue(subject, Prepared::requeued(message)) {
                            Ok(()) => State::Answer { answer: receiver },
                            Err(Enqueue::Failed(error)) => State::Failed { error: Some(error) },
                            Err(Enqueue::Full(sender, message)) => State::WaitForRoom {
                                pipeline: Arc::clone(pipeline),
                                subject: subject.clone(),
                                queue: PollSender::new(sender),
                                outgoing: Some(message),
                                answer: Some(receiver),
                            },
                        };
                        continue;
                    }
                    let (Some(message), Some(receiver)) = (outgoing.take(), answer.take()) else {
                        *state = State::Failed { error: None };
                        continue;
                    };
                    pipeline.count_one();
                    if queue.send_item(message).is_err() {
                        // Unreachable after a reserved slot; if it were not, uncount it.
                        pipeline.settled_one();
                        *state = State::Failed { error: None };
                        continue;
                    }
                    *state = State::Answer { answer: receiver };
                }
                State::Answer { answer } => {
                    return Poll::Ready(match ready!(Pin::new(answer).poll(cx)) {
                        Ok(result) => result,
                        // The worker ended without settling it (its task was aborted).
                        Err(_) => Err(Error::new(PublishErrorKind::Closed)),
                    });
                }
            }
        }
    }
}
