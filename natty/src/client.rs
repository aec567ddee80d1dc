//! [`Natty`], the client handle every feature hangs off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use bytes::Bytes;

use crate::config::Config;
use crate::connect::{self, ConnectError, ConnectionState};
use crate::header::HeaderMap;
use crate::publish::{PublishAck, PublishError, PublishFailure, PublishPath, Publisher};
use crate::server::ServerInfo;

/// A connected natty client: publish, consume, streams, consumers, key/value and leader
/// election. Cheap to clone; every clone shares one connection and one publisher.
///
/// # Example
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let natty = natty::Natty::connect(natty::Config::new(["nats://127.0.0.1:4222"])).await?;
/// natty.create_stream("EVENTS", ["events.>"]).await?;
/// natty.publish("events.hello", "world").await?;
/// natty.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Natty {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) publisher: Publisher,
    pub(crate) buckets: Mutex<HashMap<String, Arc<jetstream::kv::Store>>>,
}

impl std::fmt::Debug for Natty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Natty")
            .field("state", &self.connection_state())
            .field("queued", &self.inner.publisher.queued())
            .finish_non_exhaustive()
    }
}

impl Natty {
    /// Connect with `config`. Every input (URLs, TLS files, credentials) is checked first,
    /// and the whole call is bounded by the connect timeout unless
    /// [`Config::retry_on_initial_connect`] is set.
    ///
    /// # Errors
    /// A [`ConnectError`] whose kind says what to fix: `InvalidConfig`, `Tls`,
    /// `Authentication`, `Unreachable` or `TimedOut`.
    pub async fn connect(config: Config) -> Result<Self, ConnectError> {
        let client = connect::connect(&config).await?;
        Ok(Self::from_client_with(client, &config))
    }

    /// Escape hatch: wrap an async-nats client you connected yourself, with default tuning.
    /// Takes async-nats' own type, so it may change with async-nats releases.
    pub fn from_client(client: async_nats::Client) -> Self {
        Self::from_client_with(client, &Config::new(Vec::<String>::new()))
    }

    fn from_client_with(client: async_nats::Client, config: &Config) -> Self {
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .ack_timeout(config.request_timeout)
            .build(client.clone());
        let publisher = Publisher::new(jetstream.clone(), client.clone(), config.publish.clone());
        Self {
            inner: Arc::new(Inner {
                client,
                jetstream,
                publisher,
                buckets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Escape hatch: the underlying async-nats client, for anything natty does not wrap. Its
    /// type is async-nats' own, so code using it may change with async-nats releases.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// Escape hatch: the underlying async-nats JetStream context (async-nats' own type, like
    /// [`Natty::client`]).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    /// Whether the client is connected right now (no network call; for health checks).
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.client.connection_state().into()
    }

    /// The version the connected server reports, such as `2.15.1`.
    pub fn server_version(&self) -> String {
        self.inner.client.server_info().version
    }

    /// The connected server's version and limits, and the features natty uses on it.
    pub fn server_info(&self) -> ServerInfo {
        ServerInfo::from_client(&self.inner.client)
    }

    /// The largest payload the connected server accepts, in bytes (0 before the first
    /// connection).
    pub fn max_payload(&self) -> usize {
        self.inner.client.max_payload()
    }

    /// Whether the server supports per-message TTLs (2.11 and later).
    pub fn supports_message_ttl(&self) -> bool {
        self.server_info().supports_message_ttl()
    }

    /// Whether the server has fast-ingest batched publishing (2.14+).
    pub fn supports_fast_ingest(&self) -> bool {
        self.server_info().supports_fast_ingest()
    }

    /// Queue `payload` for `subject` on the subject's batching worker and return once it is
    /// queued; waits while the subject's queue is full. The message gets a `Nats-Msg-Id`.
    ///
    /// # Errors
    /// `InvalidSubject`, `InvalidHeader` or `PayloadTooLarge` (nothing sent), `Closed` after
    /// [`Natty::shutdown`]. Failures after queueing are reported through
    /// [`PublishConfig::failures`](crate::PublishConfig::failures).
    pub async fn publish(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        self.inner.publisher.publish(subject, payload).await
    }

    /// Like [`Natty::publish`], with headers. A `Nats-Msg-Id` header you set is kept (use it
    /// for idempotency keys); otherwise one is generated.
    ///
    /// # Errors
    /// See [`Natty::publish`].
    pub async fn publish_with_headers(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        self.inner
            .publisher
            .publish_with_headers(subject, headers, payload)
            .await
    }

    /// Like [`Natty::publish`], but fails with `Full` instead of waiting when the subject's
    /// queue is full; never waits.
    ///
    /// # Errors
    /// `Full`, and those of [`Natty::publish`].
    pub fn try_publish(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        self.inner.publisher.try_publish(subject, payload)
    }

    /// Publishing as a tower `Service`, on the same batched pipeline as [`Natty::publish`]:
    /// `poll_ready` waits for queue room, the response is the stream's ack. Cheap to clone.
    /// See [`publisher`](crate::publisher).
    pub fn publisher(&self) -> Publisher {
        self.inner.publisher.clone()
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
        self.inner.publisher.publish_acked(subject, payload).await
    }

    /// Like [`Natty::publish_acked`], with headers.
    ///
    /// # Errors
    /// See [`Natty::publish_acked`].
    pub async fn publish_acked_with_headers(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, PublishError> {
        self.inner
            .publisher
            .publish_acked_with_headers(subject, headers, payload)
            .await
    }

    /// Queue a reported failure again under its original headers and `Nats-Msg-Id`, so a
    /// message that did reach the stream after all is not stored twice (within the stream's
    /// duplicate window, two minutes by default).
    ///
    /// # Errors
    /// See [`Natty::publish`].
    pub async fn republish(&self, failure: PublishFailure) -> Result<(), PublishError> {
        self.inner.publisher.republish(failure).await
    }

    /// Messages accepted but not yet acked or reported failed.
    pub fn queued(&self) -> usize {
        self.inner.publisher.queued()
    }

    /// How `subject`'s publish worker gets messages to the stream, while one runs (it starts
    /// with the subject's first publish and stops after its idle timeout): fast-ingest batches
    /// or one publish per message. See [Paths](crate::publish#paths).
    pub fn publish_path(&self, subject: &str) -> Option<PublishPath> {
        self.inner.publisher.path(subject)
    }

    /// How many subjects have a publish worker running.
    pub fn active_publishers(&self) -> usize {
        self.inner.publisher.active_subjects()
    }

    /// Wait until every message accepted so far is acked or reported failed. A report waits
    /// for room in a full failure channel, so read it concurrently (see
    /// [`PublishConfig::failures`](crate::PublishConfig::failures)).
    pub async fn flush(&self) {
        self.inner.publisher.flush().await;
    }

    /// Stop the worker of `subject` once it has published what it holds. Returns whether
    /// there was one.
    pub async fn delete_publisher(&self, subject: &str) -> bool {
        self.inner.publisher.close_subject(subject).await
    }

    /// Refuse new publishes and wait until every accepted message is acked or reported
    /// failed (Go natty's `ServiceShutdownContext`), like [`Natty::flush`]. Then flush the
    /// connection.
    pub async fn shutdown(&self) {
        self.inner.publisher.shutdown().await;
        let _ = self.inner.client.flush().await;
    }
}
