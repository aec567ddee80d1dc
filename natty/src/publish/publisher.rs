//! [`Publisher`]: the publishing handle, its methods and its tower [`Service`].

use std::fmt;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

use super::batch::{Answers as BatchAnswers, Batch, BatchAck, BatchError};
use super::config::PublishConfig;
use super::future::ResponseFuture;
use super::message::{OutgoingMessage, PublishAck, PublishError, PublishFailure};
use super::pipeline::{Enqueue, Pipeline, PublishPath};
use super::queued::Reply;
use crate::error::{Error, PublishErrorKind};
use crate::header::HeaderMap;

/// The publishing handle of a natty client: batched, bounded, de-duplicated publishing to
/// JetStream, and a tower [`Service`] of [`OutgoingMessage`]s answering with the stream's
/// [`PublishAck`]. [`Natty::publisher`](crate::Natty::publisher) hands it out; it is cheap to
/// clone, and every clone shares the client's queues and workers. See the
/// [module docs](crate::publish) for what happens to a message.
///
/// # Example
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let natty = natty::Natty::connect(natty::Config::from_env()).await?;
/// let publisher = natty.publisher();
/// publisher.publish("orders.created", "order 1").await?;
/// let ack = publisher.publish_acked("orders.created", "order 2").await?;
/// println!("order 2 stored as {} #{}", ack.stream, ack.sequence);
/// publisher.flush().await; // order 1 is acked or reported failed too
/// # Ok(())
/// # }
/// ```
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
    /// The publisher of a client: its pipeline, whose workers start with each subject's
    /// first message; its atomic batches' answers arrive through `batch_answers`, which the
    /// client's multi-key writes share.
    pub(crate) fn new(
        jetstream: async_nats::jetstream::Context,
        client: async_nats::Client,
        config: PublishConfig,
        batch_answers: Arc<tokio::sync::OnceCell<BatchAnswers>>,
    ) -> Self {
        let pipeline = Arc::new(Pipeline::new(jetstream, client, config, batch_answers));
        let room = PollSemaphore::new(Arc::clone(pipeline.room()));
        Self {
            pipeline,
            room,
            slot: None,
        }
    }

    /// Queue `payload` for `subject` on the subject's batching worker and return once it is
    /// queued; waits while the subject's queue is full. The message gets a `Nats-Msg-Id`.
    ///
    /// # Errors
    /// `InvalidSubject`, `InvalidHeader` or `PayloadTooLarge` (nothing sent), `Closed` after
    /// [`Natty::shutdown`](crate::Natty::shutdown). Failures after queueing are reported
    /// through [`PublishConfig::failures`].
    pub async fn publish(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        self.pipeline
            .publish(subject, None, payload.into(), true)
            .await
    }

    /// Like [`Publisher::publish`], with headers. A `Nats-Msg-Id` header you set is kept (use
    /// it for idempotency keys); otherwise one is generated.
    ///
    /// # Errors
    /// See [`Publisher::publish`].
    pub async fn publish_with_headers(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        self.pipeline
            .publish(subject, Some(headers), payload.into(), true)
            .await
    }

    /// Like [`Publisher::publish`], but fails with `Full` instead of waiting when the
    /// subject's queue is full; never waits.
    ///
    /// # Errors
    /// `Full`, and those of [`Publisher::publish`].
    pub fn try_publish(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        let message = self.pipeline.prepare(subject, None, payload.into(), None)?;
        match self.pipeline.try_enqueue(subject, message) {
            Ok(()) => Ok(()),
            Err(Enqueue::Full(..)) => Err(Error::new(PublishErrorKind::Full)),
            Err(Enqueue::Failed(error)) => Err(error),
        }
    }

    /// Publish one message and wait for the stream to confirm it, retrying under the same
    /// `Nats-Msg-Id` like the batching workers do.
    ///
    /// # Errors
    /// Validation errors before sending; `TimedOut`, `NoStream` or `Rejected` after the last
    /// attempt.
    pub async fn publish_acked(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, PublishError> {
        self.pipeline
            .publish_acked(subject, None, payload.into())
            .await
    }

    /// Like [`Publisher::publish_acked`], with headers.
    ///
    /// # Errors
    /// See [`Publisher::publish_acked`].
    pub async fn publish_acked_with_headers(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, PublishError> {
        self.pipeline
            .publish_acked(subject, Some(headers), payload.into())
            .await
    }

    /// Publish `batch` atomically (nats-server 2.12.1+): its stream stores all of its
    /// messages, with consecutive sequences, or none of them. Not queued: the messages go
    /// out at once, one after another, and the call waits for the commit's answer (up to
    /// the client's request timeout). See [`Batch`] for the limits.
    ///
    /// Dropping the future before it ends leaves the outcome open, as `TimedOut` does. What
    /// was handed to the client still goes out; with async-nats' default client queue that
    /// is usually the whole batch, its commit too, and then it is stored whole. A batch whose
    /// commit was not handed over is stored not at all: the server drops what it staged once
    /// its batch timeout passes. Either way the same batch published again, even at once, is
    /// stored at most once (or answers `Duplicate`).
    ///
    /// # Errors
    /// `Empty`, `InvalidSubject`, `InvalidHeader`, `PayloadTooLarge`, `Unsupported` and
    /// `Closed` before anything is sent; after, a [`BatchErrorKind`] saying why the stream
    /// stored none of it (`AtomicDisabled`, `NoStream`, `MixedStreams`, `TooManyMessages`,
    /// `Incomplete`, `Duplicate`, `WrongLastSequence`, `TooManyInFlight`, `Rejected`), or
    /// `TimedOut`/`Failed`, after which it may be stored whole: publish the same batch
    /// again, and a stored one answers `Duplicate`.
    ///
    /// # Example
    /// ```no_run
    /// use natty::error::BatchErrorKind;
    /// use natty::{Batch, OutgoingMessage};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let natty = natty::Natty::connect(natty::Config::from_env()).await?;
    /// natty.stream("ORDERS")?.create(["orders.>"]).await?; // allow_atomic on 2.12+
    /// let batch = Batch::new()
    ///     .with(OutgoingMessage::new("orders.7.created", "order 7"))
    ///     .with(OutgoingMessage::new("orders.7.paid", "paid"));
    /// match natty.publisher().publish_batch(&batch).await {
    ///     Ok(ack) => println!("stored as {} #{:?}", ack.stream, ack.sequences()),
    ///     Err(err) if err.kind() == BatchErrorKind::Duplicate => println!("stored before"),
    ///     Err(err) => return Err(err.into()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`BatchErrorKind`]: crate::error::BatchErrorKind
    pub async fn publish_batch(&self, batch: &Batch) -> Result<BatchAck, BatchError> {
        self.pipeline.publish_batch(batch).await
    }

    /// Queue a reported failure again under its original headers and `Nats-Msg-Id`, so a
    /// message that did reach the stream after all is not stored twice (within the stream's
    /// duplicate window, two minutes by default).
    ///
    /// # Errors
    /// See [`Publisher::publish`].
    pub async fn republish(&self, failure: PublishFailure) -> Result<(), PublishError> {
        self.pipeline
            .publish(
                &failure.subject,
                Some(failure.headers),
                failure.payload,
                true,
            )
            .await
    }

    /// Messages accepted but not yet acked or reported failed.
    pub fn queued(&self) -> usize {
        self.pipeline.queued()
    }

    /// How `subject`'s publish worker gets messages to the stream, while one runs (it starts
    /// with the subject's first publish and stops after its idle timeout): fast-ingest batches
    /// or one publish per message. See [Paths](crate::publish#paths).
    pub fn path(&self, subject: &str) -> Option<PublishPath> {
        self.pipeline.path(subject)
    }

    /// How many subjects have a publish worker running.
    pub fn active_subjects(&self) -> usize {
        self.pipeline.active_subjects()
    }

    /// Wait until every message accepted so far is acked or reported failed. A report waits
    /// for room in a full failure channel, so read it concurrently (see
    /// [`PublishConfig::failures`]).
    pub async fn flush(&self) {
        self.pipeline.flush().await;
    }

    /// Stop the worker of `subject` once it has published what it holds. Returns whether
    /// there was one.
    pub async fn close_subject(&self, subject: &str) -> bool {
        self.pipeline.close_subject(subject).await
    }

    /// Refuse new publishes and wait until every accepted message is acked or reported
    /// failed.
    pub(crate) async fn shutdown(&self) {
        self.pipeline.shutdown().await;
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
        let (subject, payload, headers) = message.into_parts();
        match self
            .pipeline
            .prepare(&subject, Some(headers), payload, Some(reply))
        {
            Err(error) => ResponseFuture::failed(error),
            Ok(prepared) => {
                let enqueued = self.pipeline.try_enqueue(&subject, prepared);
                ResponseFuture::enqueued(enqueued, &self.pipeline, subject, answer)
            }
        }
    }
}
