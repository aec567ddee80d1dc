//! Durable, pull-based consuming: Go natty's blocking `Consume`, and a driver that feeds any
//! tower `Service<Message>`.
//!
//! The driver asks the service for readiness and a free slot *before* it fetches, so it
//! never holds more messages than the handler stack can take; runs up to `concurrency`
//! calls at once; retries fetches across disconnects and server restarts, recreating the
//! durable consumer if it disappeared; and settles every message exactly once: a message the
//! handler left unsettled is acked after `Ok`, nak'd after `Err`, and nak'd when its call
//! panics or is cancelled. On shutdown it stops fetching, reads the open pull request to its
//! end (at most `fetch_timeout`) nak'ing what arrives, gives in-flight calls `shutdown_grace`
//! to finish, and returns a [`ConsumeSummary`]. At most `concurrency` messages are held at
//! once; the server may briefly count one more, because it applies acks asynchronously (use
//! double acks where that matters).
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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use crate::error::{ConsumeErrorKind, Error, StreamErrorKind};
use crate::message::{Acker, Message};
use crate::stream::ConsumerOptions;
use crate::Natty;

/// How long after its expiry a pull request's end is awaited before the batch is abandoned.
const BATCH_GRACE: Duration = Duration::from_millis(500);

/// The error of [`Natty::consume`] and [`Natty::serve`].
pub type ConsumeError = Error<ConsumeErrorKind>;

/// A type-erased handler error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A handler error with the message it happened on (Go natty's `ErrorCh` reports).
#[derive(Debug)]
pub struct HandlerFailure {
    /// The message's subject.
    pub subject: String,
    /// The message's stream sequence.
    pub stream_sequence: u64,
    /// How often it has been delivered.
    pub delivered: u64,
    /// What went wrong (`ConsumeErrorKind::Handler` or `Panicked`, the handler's error as
    /// source).
    pub error: ConsumeError,
}

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
    pub(crate) errors: Option<mpsc::Sender<HandlerFailure>>,
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
            errors: None,
        }
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

    /// Messages per fetch, at most (default 100, as in Go natty).
    pub fn fetch_size(mut self, size: usize) -> Self {
        self.fetch_size = size.max(1);
        self
    }

    /// How long one fetch waits for messages (default 1 s, as in Go natty).
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

    /// Also send each handler error here (never blocking: a full channel drops the report
    /// and counts it in [`ConsumeSummary::dropped_reports`]).
    pub fn errors(mut self, errors: mpsc::Sender<HandlerFailure>) -> Self {
        self.errors = Some(errors);
        self
    }
}

/// What a consume run did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumeSummary {
    /// Calls that returned `Ok`.
    pub handled: u64,
    /// Calls that returned `Err`.
    pub failed: u64,
    /// Calls that panicked.
    pub panicked: u64,
    /// Calls cancelled at the end of the shutdown grace (their messages were nak'd).
    pub cancelled: u64,
    /// Messages fetched but never started because shutdown came first (nak'd).
    pub returned: u64,
    /// Handler error reports dropped because the error channel was full.
    pub dropped_reports: u64,
}

enum Outcome {
    Handled,
    Failed,
}

/// Naks the message if it is still unsettled when dropped: covers panics and cancellation.
struct SettleGuard(Option<Acker>);

impl SettleGuard {
    async fn settle(mut self, ok: bool) {
        if let Some(acker) = self.0.take() {
            if !acker.is_settled() {
                let settled = if ok {
                    acker.ack().await
                } else {
                    acker.nak(None).await
                };
                if let Err(err) = settled {
                    tracing::warn!(target: "natty", error = %err, "could not settle message");
                }
            }
        }
    }
}

impl Drop for SettleGuard {
    fn drop(&mut self) {
        if let Some(acker) = self.0.take() {
            if !acker.is_settled() {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = acker.nak(None).await;
                    });
                }
            }
        }
    }
}

impl Natty {
    /// Consume with an async closure until `shutdown` is cancelled (Go natty's `Consume`).
    /// The handler should settle the message; one it leaves unsettled is acked after `Ok` and
    /// nak'd after `Err`. Handler errors go to `tracing` and to [`ConsumeConfig::errors`].
    ///
    /// # Errors
    /// Only for problems that retrying cannot fix: invalid names, a missing stream.
    pub async fn consume<F, Fut, E>(
        &self,
        config: ConsumeConfig,
        shutdown: CancellationToken,
        handler: F,
    ) -> Result<ConsumeSummary, ConsumeError>
    where
        F: FnMut(Message) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.serve(config, shutdown, tower::service_fn(handler))
            .await
    }

    /// Feed the durable consumer into `service` until `shutdown` is cancelled; see the
    /// module docs for the guarantees.
    ///
    /// # Errors
    /// Only for problems that retrying cannot fix: invalid names, a missing stream, a service
    /// whose `poll_ready` fails.
    pub fn serve<S>(
        &self,
        config: ConsumeConfig,
        shutdown: CancellationToken,
        service: S,
    ) -> impl Future<Output = Result<ConsumeSummary, ConsumeError>> + Send + '_
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        // Proving `Send` here, where `S` is still generic, sidesteps a compiler limitation
        // (higher-ranked `From` bounds on boxed errors) that callers spawning the future hit.
        self.drive(config, shutdown, service)
    }

    async fn drive<S>(
        &self,
        config: ConsumeConfig,
        shutdown: CancellationToken,
        mut service: S,
    ) -> Result<ConsumeSummary, ConsumeError>
    where
        S: Service<Message> + Send,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let mut consumer = self.consumer_for(&config).await?;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let mut tasks: JoinSet<(Outcome, Option<HandlerFailure>)> = JoinSet::new();
        let mut summary = ConsumeSummary::default();
        let mut backoff = Duration::from_millis(50);
        let mut last_check = Instant::now();

        while !shutdown.is_cancelled() {
            // Readiness and a free slot first, so nothing is fetched that cannot be started.
            let ready = tokio::select! {
                () = shutdown.cancelled() => break,
                ready = service.ready() => ready,
            };
            ready.map_err(|err| Error::with_source(ConsumeErrorKind::Handler, err.into()))?;
            let first_slot = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => permit,
            };
            let Ok(first_slot) = first_slot else { break };
            let room = (slots.available_permits() + 1).min(config.fetch_size);

            let batch = consumer
                .batch()
                .max_messages(room)
                .expires(config.fetch_timeout)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(err) => {
                    drop(first_slot);
                    tracing::warn!(target: "natty", stream = %config.stream, durable = %config.durable, error = %err, "fetch failed; retrying");
                    self.pause_then_recreate(&config, &mut consumer, &shutdown, &mut backoff)
                        .await;
                    continue;
                }
            };

            let mut slot = Some(first_slot);
            let mut received = 0usize;
            // The pull request stays open on the server until it is filled or expires, so
            // the batch is read to its end even after shutdown: what arrives then is nak'd
            // at once instead of sitting unacked until the ack wait runs out.
            // A pull request that died with a crashed server never gets its expiry reply, and
            // async-nats would wait `expires + 5 s`; give up on the batch shortly after the
            // server would have expired it, so consuming resumes as soon as it reconnects.
            let batch_deadline = config.fetch_timeout + BATCH_GRACE;
            while let Ok(Some(next)) = tokio::time::timeout(batch_deadline, batch.next()).await {
                let message = match next {
                    Ok(message) => Message::from_jetstream(message),
                    Err(err) => {
                        tracing::warn!(target: "natty", error = %err, "message stream error; refetching");
                        break;
                    }
                };
                received += 1;
                if shutdown.is_cancelled() {
                    let _ = message.nak(None).await;
                    summary.returned += 1;
                    continue;
                }
                let permit = match slot.take() {
                    Some(permit) => permit,
                    None => {
                        let permit = tokio::select! {
                            () = shutdown.cancelled() => None,
                            permit = Arc::clone(&slots).acquire_owned() => permit.ok(),
                        };
                        let ready = match permit {
                            Some(_) => tokio::select! {
                                () = shutdown.cancelled() => None,
                                ready = service.ready() => Some(ready.map(drop).map_err(|err| {
                                    Error::with_source(ConsumeErrorKind::Handler, err.into())
                                })),
                            },
                            None => None,
                        };
                        match (permit, ready) {
                            (Some(permit), Some(Ok(()))) => permit,
                            (_, Some(Err(err))) => {
                                let _ = message.nak(None).await;
                                return Err(err);
                            }
                            _ => {
                                let _ = message.nak(None).await;
                                summary.returned += 1;
                                continue;
                            }
                        }
                    }
                };
                let guard = SettleGuard(Some(message.acker().clone()));
                let meta = (
                    message.subject().to_string(),
                    message.info().stream_sequence,
                    message.info().delivered,
                );
                let call = service.call(message);
                tasks.spawn(async move {
                    let result = call.await.map(drop).map_err(Into::<BoxError>::into);
                    let ok = result.is_ok();
                    guard.settle(ok).await;
                    drop(permit);
                    match result {
                        Ok(()) => (Outcome::Handled, None),
                        Err(err) => (
                            Outcome::Failed,
                            Some(HandlerFailure {
                                subject: meta.0,
                                stream_sequence: meta.1,
                                delivered: meta.2,
                                error: Error::with_source(ConsumeErrorKind::Handler, err),
                            }),
                        ),
                    }
                });
                while let Some(done) = tasks.try_join_next() {
                    record(&config, &mut summary, done);
                }
            }
            backoff = Duration::from_millis(50);
            if received == 0 && last_check.elapsed() > Duration::from_secs(5) {
                // An idle consumer may have been deleted under us; make sure it still exists.
                last_check = Instant::now();
                if consumer.info().await.is_err() {
                    self.pause_then_recreate(&config, &mut consumer, &shutdown, &mut backoff)
                        .await;
                }
            }
        }

        // Shutdown: give in-flight calls their grace, then cancel the rest (guards nak them).
        let deadline = tokio::time::sleep(config.shutdown_grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(done) => record(&config, &mut summary, done),
                    None => break,
                },
                () = &mut deadline => {
                    summary.cancelled += tasks.len() as u64;
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        Ok(summary)
    }

    async fn consumer_for(
        &self,
        config: &ConsumeConfig,
    ) -> Result<async_nats::jetstream::consumer::PullConsumer, ConsumeError> {
        self.pull_consumer(
            &config.stream,
            &config.durable,
            &config.filter_subjects,
            &config.consumer,
        )
        .await
        .map_err(|err| {
            let kind = match err.kind() {
                StreamErrorKind::InvalidName | StreamErrorKind::InvalidSubject => {
                    ConsumeErrorKind::InvalidName
                }
                StreamErrorKind::NotFound => ConsumeErrorKind::StreamNotFound,
                _ => ConsumeErrorKind::Fetch,
            };
            Error::with_source(kind, err)
        })
    }

    async fn pause_then_recreate(
        &self,
        config: &ConsumeConfig,
        consumer: &mut async_nats::jetstream::consumer::PullConsumer,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
    ) {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
        // Create-or-update is idempotent: it brings back a deleted durable and is harmless
        // otherwise. Failures (server still down) are retried on the next round.
        match self.consumer_for(config).await {
            Ok(fresh) => *consumer = fresh,
            Err(err) => {
                tracing::debug!(target: "natty", error = %err, "consumer not reachable yet")
            }
        }
    }
}

fn record(
    config: &ConsumeConfig,
    summary: &mut ConsumeSummary,
    done: Result<(Outcome, Option<HandlerFailure>), tokio::task::JoinError>,
) {
    let failure = match done {
        Ok((Outcome::Handled, _)) => {
            summary.handled += 1;
            None
        }
        Ok((Outcome::Failed, failure)) => {
            summary.failed += 1;
            failure
        }
        Err(err) if err.is_panic() => {
            summary.panicked += 1;
            Some(HandlerFailure {
                subject: String::new(),
                stream_sequence: 0,
                delivered: 0,
                error: Error::new(ConsumeErrorKind::Panicked),
            })
        }
        Err(_) => None,
    };
    if let Some(failure) = failure {
        tracing::warn!(target: "natty", subject = %failure.subject, seq = failure.stream_sequence, delivered = failure.delivered, error = %failure.error, "handler failed");
        if let Some(errors) = &config.errors {
            if errors.try_send(failure).is_err() {
                summary.dropped_reports += 1;
            }
        }
    }
}
