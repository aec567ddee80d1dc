//! [`Natty`], the client: it connects, and hands out one handle per feature.

use std::future::Future;
use std::sync::Arc;

use async_nats::jetstream;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::config::Config;
use crate::connect::{self, ConnectError, ConnectionState};
use crate::connection::Connection;
use crate::consume::{ConsumeConfig, ConsumeError, ConsumeSummary, Consumer, Message};
use crate::election::{ElectionConfig, ElectionError, Leadership};
use crate::error::{BoxError, StreamError};
use crate::group::{ElasticGroup, GroupError, StaticGroup};
use crate::kv::{Bucket, KvError};
use crate::publish::{PublishError, Publisher};
use crate::requester::Requester;
use crate::server::ServerInfo;
use crate::service::{ServeError, ServiceConfig, ServiceInstance};
use crate::stream::Stream;

/// A connected natty client. Cheap to clone; every clone shares one connection and one
/// publisher. What acts on one stream, consumer, bucket, election or group is a method of
/// the handle `Natty` hands out for it ([`Natty::stream`], [`Natty::consumer`],
/// [`Natty::bucket`], [`Natty::elect`], [`Natty::static_group`], [`Natty::elastic_group`],
/// [`Natty::service`], [`Natty::publisher`], [`Natty::requester`]); Go natty's flat names are on
/// [`GoNatty`](crate::compat::GoNatty).
///
/// # Example
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let natty = natty::Natty::connect(natty::Config::new(["nats://127.0.0.1:4222"])).await?;
/// natty.stream("EVENTS")?.create(["events.>"]).await?;
/// natty.publish("events.hello", "world").await?;
/// natty.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Natty {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Arc<Connection>,
    publisher: Publisher,
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
        let connection = Arc::new(Connection::new(client.clone(), jetstream.clone()));
        let answers = Arc::clone(&connection.batch_answers);
        let publisher = Publisher::new(jetstream, client, config.publish.clone(), answers);
        Self {
            inner: Arc::new(Inner {
                connection,
                publisher,
            }),
        }
    }

    /// Escape hatch: the underlying async-nats client, for anything natty does not wrap. Its
    /// type is async-nats' own, so code using it may change with async-nats releases.
    pub fn client(&self) -> &async_nats::Client {
        self.inner.connection.client()
    }

    /// Escape hatch: the underlying async-nats JetStream context (async-nats' own type, like
    /// [`Natty::client`]).
    pub fn jetstream(&self) -> &jetstream::Context {
        self.inner.connection.jetstream()
    }

    /// Whether the client is connected right now (no network call; for health checks).
    pub fn connection_state(&self) -> ConnectionState {
        self.client().connection_state().into()
    }

    /// What the connected server told about itself: its version, the largest payload it
    /// accepts and the features natty uses when it has them.
    pub fn server_info(&self) -> ServerInfo<'_> {
        ServerInfo::of(self.client())
    }

    /// Queue `payload` for `subject` on the subject's batching worker and return once it is
    /// queued; waits while the subject's queue is full. The message gets a `Nats-Msg-Id`.
    /// The other ways to publish (with headers, waiting for the ack, as a tower `Service`)
    /// are on [`Natty::publisher`].
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

    /// The publishing handle, on the same batched pipeline as [`Natty::publish`]: publish
    /// with headers, wait for the stream's ack, republish a reported failure, and publish as
    /// a tower `Service`. Cheap to clone. See [`publish`](crate::publish).
    pub fn publisher(&self) -> Publisher {
        self.inner.publisher.clone()
    }

    /// The requesting handle: calls request-reply services with a deadline, as a method and
    /// as a tower `Service`, with typed errors for no responders, timeouts and a service's
    /// error answer. Cheap to clone. See [`requester`](crate::requester).
    pub fn requester(&self) -> Requester {
        Requester::new(&self.inner.connection)
    }

    /// Wait until every message accepted so far is acked or reported failed. A report waits
    /// for room in a full failure channel, so read it concurrently (see
    /// [`PublishConfig::failures`](crate::PublishConfig::failures)).
    pub async fn flush(&self) {
        self.inner.publisher.flush().await;
    }

    /// Refuse new publishes and wait until every accepted message is acked or reported
    /// failed (Go natty's `ServiceShutdownContext`), like [`Natty::flush`]. Then flush the
    /// connection.
    pub async fn shutdown(&self) {
        self.inner.publisher.shutdown().await;
        let _ = self.client().flush().await;
    }

    /// The stream `name`, checked now; nothing is sent until a call on the handle. See
    /// [`stream`](crate::stream).
    ///
    /// # Errors
    /// `InvalidName`.
    pub fn stream(&self, name: &str) -> Result<Stream, StreamError> {
        Stream::open(&self.inner.connection, name)
    }

    /// Resolve the durable consumer `config` describes (checking its names, creating or
    /// updating it on the server) and return its handle, to serve or consume as often as
    /// needed.
    ///
    /// # Errors
    /// `InvalidName` for a bad stream, consumer or filter name; `StreamNotFound` when the
    /// stream does not exist; `Fetch` when the server cannot be asked.
    pub async fn consumer(&self, config: ConsumeConfig) -> Result<Consumer, ConsumeError> {
        Consumer::create(&self.inner.connection, config).await
    }

    /// Feed the durable consumer `config` describes (created or updated first) into
    /// `service` until `shutdown` is cancelled; see [`consume`](crate::consume) for the
    /// guarantees.
    ///
    /// # Errors
    /// Only for problems that retrying cannot fix: invalid names, a missing stream
    /// (returned at once); a service whose `poll_ready` fails (`NotReady`, returned after
    /// draining as on shutdown, with the [`ConsumeSummary`] in its source).
    ///
    /// The future borrows nothing from `self`: spawn it (`tokio::spawn(natty.serve(..))`).
    pub fn serve<S>(
        &self,
        config: ConsumeConfig,
        shutdown: CancellationToken,
        service: S,
    ) -> impl Future<Output = Result<ConsumeSummary, ConsumeError>> + Send + 'static
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        // Proving `Send` here, where `S` is still generic, sidesteps a compiler limitation
        // (higher-ranked `From` bounds on boxed errors) that callers spawning the future hit.
        Arc::clone(&self.inner.connection).drive(config, None, shutdown, service)
    }

    /// Consume with an async closure until `shutdown` is cancelled (Go natty's `Consume`).
    /// The handler should settle the message; one it leaves unsettled is acked after `Ok` and
    /// nak'd after `Err`. Handler errors go to `tracing` and to
    /// [`ConsumeConfig::failures`].
    ///
    /// Like [`Natty::serve`]'s, the future borrows nothing from `self`, so it can be spawned.
    ///
    /// # Errors
    /// Only for problems that retrying cannot fix: invalid names, a missing stream.
    pub fn consume<F, Fut, E>(
        &self,
        config: ConsumeConfig,
        shutdown: CancellationToken,
        handler: F,
    ) -> impl Future<Output = Result<ConsumeSummary, ConsumeError>> + Send + 'static
    where
        F: FnMut(Message) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.serve(config, shutdown, tower::service_fn(handler))
    }

    /// The key/value bucket `name`, checked now (`[A-Za-z0-9_-]+`); nothing is sent until
    /// its first call, which finds the bucket (or, for a write, creates it) once for every
    /// clone. See [`kv`](crate::kv).
    ///
    /// # Errors
    /// `InvalidBucket`.
    pub fn bucket(&self, name: &str) -> Result<Bucket, KvError> {
        Bucket::open(&self.inner.connection, name)
    }

    /// Start campaigning for `config`'s key in the background and return the handle; see
    /// [`election`](crate::election).
    ///
    /// Creates the bucket (with the configured TTL, replicas and description) when it is
    /// missing. The returned handle starts in
    /// [`LeaderState::Unknown`](crate::LeaderState::Unknown).
    ///
    /// # Errors
    /// `InvalidConfig` before anything is sent; `TtlMismatch` when the bucket exists with
    /// another TTL; `Bucket` when it cannot be read or created.
    pub async fn elect(&self, config: ElectionConfig) -> Result<Leadership, ElectionError> {
        self.inner.connection.elect(config).await
    }

    /// Start an instance of the request-reply service `config` describes, on the NATS
    /// service API: it answers PING, INFO and STATS when this returns; add its endpoints,
    /// each a tower `Service`, then run it. See [`service`](crate::service).
    ///
    /// # Errors
    /// `InvalidConfig` for a bad name, version or queue group (nothing sent); `Subscribe`
    /// when its subscriptions cannot be made.
    pub async fn service(&self, config: ServiceConfig) -> Result<ServiceInstance, ServeError> {
        ServiceInstance::start(&self.inner.connection, config).await
    }

    /// The static group `group` on `stream`, its names checked now; see
    /// [`group`](crate::group).
    ///
    /// # Errors
    /// `InvalidConfig` for a bad stream or group name.
    pub fn static_group(&self, stream: &str, group: &str) -> Result<StaticGroup, GroupError> {
        StaticGroup::open(&self.inner.connection, stream, group)
    }

    /// The elastic group `group` on `stream`, its names checked now; see
    /// [`group`](crate::group).
    ///
    /// # Errors
    /// `InvalidConfig` for a bad stream or group name.
    pub fn elastic_group(&self, stream: &str, group: &str) -> Result<ElasticGroup, GroupError> {
        ElasticGroup::open(&self.inner.connection, stream, group)
    }
}
