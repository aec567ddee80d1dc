//! [`Harness`]: test a message handler, or a whole tower stack, on a real server in a few
//! lines, through natty's own API only.
//!
//! A harness holds a [`Natty`] client for the test's own calls (streams, publishing) and
//! watches the server from the side: every settlement sent to a message's ack subject (acks,
//! naks with their delay, terms, in-progress signals) and, on the subjects it is told to
//! watch, the dead letters natty-tower publishes. [`Harness::serve`] runs a stack on a
//! consumer in a task of its own and hands back a [`Serving`], whose
//! [`outcome`](Serving::outcome) waits for a message's last settlement by its stream
//! sequence. The stream's and the consumer's counts and the last message of a subject are a
//! call away. Every wait has the harness' deadline ([`Harness::with_deadline`]).
//!
//! Outcomes are read on the wire, not through a hook in natty: what a test sees is what the
//! server was told, whichever layer (or natty's driver) settled the message, and natty's
//! per-message path carries nothing for the test's sake.
//!
//! # Example
//! ```no_run
//! use natty::message::Settlement;
//! use natty::{ConsumeConfig, Message};
//! use natty_testkit::{Harness, Server};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::start()?;
//! let harness = Harness::connect(&server).await?;
//! let natty = harness.natty();
//! natty.stream("JOBS")?.create(["jobs.>"]).await?;
//!
//! let handler = tower::service_fn(|_job: Message| async { Ok::<_, natty::BoxError>(()) });
//! let worker = harness.serve(ConsumeConfig::new("JOBS", "worker"), handler).await?;
//! let job = natty.publisher().publish_acked("jobs.1", "work").await?;
//!
//! let outcome = worker.outcome(job.sequence).await?;
//! assert_eq!((outcome.settlement, outcome.delivered), (Settlement::Ack, 1));
//! let counts = harness.wait_for_consumer("JOBS", "worker", |c| c.ack_pending == 0).await?;
//! assert_eq!(counts.redelivered, 0);
//! worker.stop().await?;
//! # Ok(())
//! # }
//! ```

mod counts;
mod observer;
mod serving;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use natty::async_nats::Subscriber;
use natty::message::Message;
use natty::{BoxError, CancellationToken, Config, ConsumeConfig, Natty, StoredMessage};
use tokio::sync::mpsc;
use tower_service::Service;

pub use self::counts::{ConsumerCounts, StreamCounts};
pub use self::observer::{DeadLetter, Delivery};
use self::observer::{Observer, Observing};
pub use self::serving::Serving;
use crate::{Error, Server};

/// How long a harness waits for an outcome or a count by default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// A natty client and a watch on one server's settlements, for tests; see the
/// [module docs](self).
pub struct Harness {
    natty: Natty,
    observer: Arc<Observer>,
    watches: mpsc::UnboundedSender<Subscriber>,
    observing: Arc<Observing>,
    deadline: Duration,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Wraps a failed request's error, for `map_err`.
fn request<E: Into<BoxError>>(action: &'static str) -> impl FnOnce(E) -> Error {
    move |source| Error::Request {
        action,
        source: source.into(),
    }
}

/// Subscribe to `subject`, in place at the server once this returns.
async fn subscribe(
    natty: &Natty,
    subject: &str,
    action: &'static str,
) -> Result<Subscriber, Error> {
    let client = natty.client();
    let subscription = client
        .subscribe(subject.to_owned())
        .await
        .map_err(request(action))?;
    client.flush().await.map_err(request(action))?;
    Ok(subscription)
}

impl Harness {
    /// Connect to `server` (plain `nats://`; for TLS or auth, connect natty yourself and use
    /// [`Harness::new`]).
    ///
    /// # Errors
    /// [`Error::Request`] when connecting or subscribing fails.
    pub async fn connect(server: &Server) -> Result<Self, Error> {
        let natty = Natty::connect(Config::new([server.url()]))
            .await
            .map_err(request("connecting"))?;
        Self::new(natty).await
    }

    /// Watch the server `natty` is connected to, on that connection (which must echo its own
    /// messages back, as async-nats' connections do unless told not to: the stack's acks are
    /// sent on it).
    ///
    /// # Errors
    /// [`Error::Request`] when subscribing to the ack subjects fails.
    pub async fn new(natty: Natty) -> Result<Self, Error> {
        let acks = subscribe(&natty, "$JS.ACK.>", "subscribing to acks").await?;
        let (observer, watches, observing) = Observer::spawn(acks);
        Ok(Self {
            natty,
            observer,
            watches,
            observing,
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// Wait at most `deadline` for each outcome and count (default [`DEFAULT_DEADLINE`]).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The natty client, for the test's own calls: streams, publishing, KV.
    pub fn natty(&self) -> &Natty {
        &self.natty
    }

    /// Read the dead letters published to `subject` (a subject or filter) from now on, so a
    /// terminated message's [`Delivery::dead_letter`] carries its own. Call it before the
    /// messages are published.
    ///
    /// # Errors
    /// [`Error::Request`] when subscribing fails.
    pub async fn watch_dead_letters(&self, subject: &str) -> Result<(), Error> {
        let letters = subscribe(&self.natty, subject, "subscribing to dead letters").await?;
        // The observer ends only with the harness, which holds this sender.
        let _ = self.watches.send(letters);
        Ok(())
    }

    /// Create `config`'s consumer and serve `stack` on it (as
    /// [`Consumer::serve`](natty::Consumer::serve) does) in a task of its own, until the
    /// returned [`Serving`] is stopped or dropped.
    ///
    /// # Errors
    /// [`Error::Consume`] when the consumer cannot be created (a missing stream, a bad name).
    pub async fn serve<S>(&self, config: ConsumeConfig, stack: S) -> Result<Serving, Error>
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let (stream, durable) = (config.stream().to_owned(), config.durable().to_owned());
        let consumer = self.natty.consumer(config).await.map_err(Error::Consume)?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let run = async move { consumer.serve(token, stack).await };
        Ok(Serving::spawn(
            stream,
            durable,
            Arc::clone(&self.observer),
            Arc::clone(&self.observing),
            self.deadline,
            run,
            shutdown,
        ))
    }

    /// The counts of `stream` now: messages, bytes, sequences, consumers.
    ///
    /// # Errors
    /// [`Error::Request`] when the stream is missing or the server does not answer.
    pub async fn stream_counts(&self, stream: &str) -> Result<StreamCounts, Error> {
        let handle = self
            .natty
            .jetstream()
            .get_stream(stream)
            .await
            .map_err(request("stream info"))?;
        Ok(StreamCounts::of(&handle.cached_info().state))
    }

    /// The counts of the durable consumer `consumer` of `stream` now: pending, ack pending,
    /// redelivered, ... The server applies acks asynchronously, so a count read right after
    /// an outcome can still include it: [`Harness::wait_for_consumer`] waits for a count.
    ///
    /// # Errors
    /// [`Error::Request`] when the stream or consumer is missing or the server does not answer.
    pub async fn consumer_counts(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<ConsumerCounts, Error> {
        let handle = self
            .natty
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(request("consumer info"))?;
        let info = handle
            .consumer_info(consumer)
            .await
            .map_err(request("consumer info"))?;
        Ok(ConsumerCounts::of(&info))
    }

    /// Read the consumer's counts until `until` accepts them, and return those.
    ///
    /// # Errors
    /// [`Error::NotSeen`] with the last counts past the deadline; those of
    /// [`Harness::consumer_counts`].
    pub async fn wait_for_consumer(
        &self,
        stream: &str,
        consumer: &str,
        until: impl Fn(&ConsumerCounts) -> bool,
    ) -> Result<ConsumerCounts, Error> {
        let deadline = tokio::time::Instant::now() + self.deadline;
        // The server has no event for a count changing: reading it again is the only way.
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        loop {
            ticks.tick().await;
            let counts = self.consumer_counts(stream, consumer).await?;
            if until(&counts) {
                return Ok(counts);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotSeen {
                    waiting_for: format!("the counts of consumer {consumer} of {stream}"),
                    seen: format!("{counts:?}"),
                });
            }
        }
    }

    /// The last message stored on `subject`, with its headers, from the stream that captures
    /// it; `None` when it has none.
    ///
    /// # Errors
    /// [`Error::Request`] when no stream captures `subject` or the server does not answer.
    pub async fn last_message(&self, subject: &str) -> Result<Option<StoredMessage>, Error> {
        let stream = self
            .natty
            .jetstream()
            .stream_by_subject(subject)
            .await
            .map_err(request("finding the stream of a subject"))?;
        let stream = self
            .natty
            .stream(&stream)
            .map_err(request("last message"))?;
        stream
            .last_message(subject)
            .await
            .map_err(request("last message"))
    }
}
