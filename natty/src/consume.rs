//! Durable, pull-based consuming: Go natty's blocking `Consume`, and a driver that feeds any
//! tower `Service<Message>`.
//!
//! The driver asks the service for readiness and a free slot *before* it fetches, so it
//! never holds more messages than the handler stack can take; runs up to `concurrency`
//! calls at once; retries fetches across disconnects and server restarts, recreating the
//! durable consumer if it disappeared; and settles every message exactly once: a message the
//! handler left unsettled is acked after `Ok`, nak'd after `Err`, and nak'd when its call
//! panics (in `call` itself or in its future; the panic is reported with the message's
//! subject, sequence and delivery count) or is cancelled. On shutdown it stops fetching, reads
//! the open pull request to its end (at most `fetch_timeout`) nak'ing what arrives, gives
//! in-flight calls `shutdown_grace` to finish, and returns a [`ConsumeSummary`]. A service
//! whose `poll_ready` fails ends the run the same way, then returns
//! [`ConsumeErrorKind::NotReady`] carrying the summary ([`ConsumeSummary::from_error`]). At
//! most `concurrency` messages are held at once; the server may briefly count one more,
//! because it applies acks asynchronously (use double acks where that matters). Every message carries the consumer's
//! [`ConsumerSettings`] in its extensions, read once from the consumer's info and again
//! whenever the driver recreates the consumer, so middleware never asks for them twice.
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

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::Batch;
use futures_util::stream::SelectAll;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use crate::backoff::jittered;
use crate::consumer::ConsumerSettings;
use crate::error::{BoxError, ConsumeErrorKind, Error, StreamErrorKind};
use crate::message::{Acker, Message};
use crate::report::ReportSender;
use crate::stream::ConsumerOptions;
use crate::Natty;

/// How long after its expiry a pull request's end is awaited before the batch is abandoned: a
/// pull request that died with a crashed server never gets its expiry reply, and async-nats
/// alone would wait `expires + 5 s` before consuming resumed.
const BATCH_GRACE: Duration = Duration::from_millis(500);

/// Pull requests kept open at once: one being read while the next is on its way, so handlers
/// do not wait a round trip for work.
const OPEN_PULLS: usize = 2;

/// Free slots needed before another pull request is opened. With none open, one will do;
/// with one open, wait for half a batch, since every pull costs a round trip and a
/// subscription, and many tiny pulls cost more than they save.
fn pull_threshold(config: &ConsumeConfig, open_pulls: usize) -> u32 {
    let half_batch = config.concurrency.min(config.fetch_size) / 2;
    let threshold = if open_pulls == 0 {
        1
    } else {
        half_batch.max(1)
    };
    u32::try_from(threshold).unwrap_or(u32::MAX)
}

/// A message from an open pull request, with the slot reserved for it.
type Delivery = (
    Result<async_nats::jetstream::Message, async_nats::Error>,
    OwnedSemaphorePermit,
);

/// The messages of one pull request, each with one of the slots reserved for the request,
/// then `None` when the request is over (so the driver can open the next one at once).
/// Slots it was not filled with return to the pool when it ends; it ends at the latest
/// `deadline` after it was opened.
fn deliveries(
    batch: Batch,
    reserved: OwnedSemaphorePermit,
    deadline: Duration,
) -> impl Stream<Item = Option<Delivery>> + Send {
    let give_up_at = tokio::time::Instant::now() + deadline;
    futures_util::stream::unfold(
        (batch, reserved),
        move |(mut batch, mut reserved)| async move {
            let next = tokio::time::timeout_at(give_up_at, batch.next())
                .await
                .ok()??;
            let slot = reserved.split(1)?;
            Some((Some((next, slot)), (batch, reserved)))
        },
    )
    .chain(futures_util::stream::once(std::future::ready(None)))
}

/// Start one call on its own task; the task settles what the handler left unsettled and
/// frees the message's slot when done.
fn spawn_call<S>(
    tasks: &mut JoinSet<(Outcome, Option<HandlerFailure>)>,
    service: &mut S,
    message: Message,
    slot: OwnedSemaphorePermit,
) where
    S: Service<Message>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let guard = SettleGuard(Some(message.acker().clone()));
    // A cheap handle on the subject; it becomes a `String` only for a failure report.
    let subject = message.subject_handle().clone();
    let (stream_sequence, delivered) = (message.info().stream_sequence, message.info().delivered);
    // A panic in `call` itself (a closure parsing before its `async` block) would otherwise
    // unwind through the driver and stop consuming with messages left ack-pending.
    let call = catch_unwind(AssertUnwindSafe(|| service.call(message)));
    tasks.spawn(async move {
        let result = match call {
            Ok(call) => AssertUnwindSafe(call)
                .catch_unwind()
                .await
                .map(|result| result.map(drop).map_err(Into::<BoxError>::into)),
            Err(panic) => Err(panic),
        };
        let (outcome, error) = match result {
            Ok(Ok(())) => (Outcome::Handled, None),
            Ok(Err(err)) => (
                Outcome::Failed,
                Some(Error::with_source(ConsumeErrorKind::Handler, err)),
            ),
            Err(panic) => (
                Outcome::Panicked,
                Some(PanicMessage::from_payload(panic.as_ref()).into()),
            ),
        };
        // A layer that logged the failure already claimed its log line.
        let logged = error.is_some()
            && guard
                .0
                .as_ref()
                .is_some_and(|acker| !acker.claim_failure_log());
        guard.settle(matches!(outcome, Outcome::Handled)).await;
        drop(slot);
        let failure = error.map(|error| HandlerFailure {
            subject: subject.to_string(),
            stream_sequence,
            delivered,
            error,
            logged,
        });
        (outcome, failure)
    });
}

/// The text a handler panicked with: the `source` of a
/// [`Panicked`](ConsumeErrorKind::Panicked) error, from natty's driver or natty-tower's
/// catch-panic layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicMessage(String);

impl PanicMessage {
    /// The text of a caught panic's payload (`panic!` with a string or a format).
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let text = if let Some(text) = payload.downcast_ref::<&'static str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a non-string panic payload".to_owned()
        };
        Self(text)
    }

    /// The panic's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PanicMessage {}

impl From<PanicMessage> for ConsumeError {
    fn from(message: PanicMessage) -> Self {
        Error::with_source(ConsumeErrorKind::Panicked, message)
    }
}

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

/// The error of [`Natty::consume`] and [`Natty::serve`].
pub type ConsumeError = Error<ConsumeErrorKind>;

/// A handler error with the message it happened on (Go natty's `ErrorCh` reports).
#[derive(Debug)]
#[non_exhaustive]
pub struct HandlerFailure {
    /// The message's subject.
    pub subject: String,
    /// The message's stream sequence.
    pub stream_sequence: u64,
    /// How often it has been delivered.
    pub delivered: u64,
    /// What went wrong (`ConsumeErrorKind::Handler` with the handler's error as source, or
    /// `Panicked` with the panic's text).
    pub error: ConsumeError,
    /// Whether a layer already logged it (see [`Acker::claim_failure_log`]).
    pub(crate) logged: bool,
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
    pub(crate) errors: Option<ReportSender<HandlerFailure>>,
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

    /// Also send each handler error here (Go natty's `ErrorCh`): a tokio `mpsc::Sender`
    /// delivers every report, and the consume loop waits (fetches nothing) while the channel
    /// is full; a [`ReportSender::lossy`] never waits and counts what it dropped, also in
    /// [`ConsumeSummary::dropped_reports`]. Every handler error is logged at `WARN` either way.
    pub fn errors(mut self, errors: impl Into<ReportSender<HandlerFailure>>) -> Self {
        self.errors = Some(errors.into());
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

enum Outcome {
    Handled,
    Failed,
    Panicked,
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
                    tracing::warn!(target: "natty", error = %format_args!("{err:#}"), "could not settle message");
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
    /// Only for problems that retrying cannot fix: invalid names, a missing stream
    /// (returned at once); a service whose `poll_ready` fails (`NotReady`, returned after
    /// draining as on shutdown, with the [`ConsumeSummary`] in its source).
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
        self.drive(config, None, shutdown, service)
    }

    /// Serve `config`'s durable consumer; `resolved` is the consumer when a
    /// [`Consumer`](crate::Consumer) handle created it already.
    pub(crate) async fn drive<S>(
        &self,
        config: ConsumeConfig,
        resolved: Option<async_nats::jetstream::consumer::PullConsumer>,
        shutdown: CancellationToken,
        mut service: S,
    ) -> Result<ConsumeSummary, ConsumeError>
    where
        S: Service<Message> + Send,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let mut consumer = match resolved {
            Some(consumer) => consumer,
            None => self.consumer_for(&config).await?,
        };
        let mut settings = self.settings_of(&consumer).await?;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let mut pulls = SelectAll::new();
        // Pull requests not yet over (a finished one leaves `pulls` only when next polled).
        let mut open_pulls = 0usize;
        let mut tasks: JoinSet<(Outcome, Option<HandlerFailure>)> = JoinSet::new();
        let mut summary = ConsumeSummary::default();
        let mut backoff = Duration::from_millis(50);
        let mut last_message = Instant::now();
        let mut last_check = Instant::now();
        let batch_deadline = config.fetch_timeout + BATCH_GRACE;
        // Set when the service's `poll_ready` fails: the run then drains as on shutdown.
        let mut not_ready: Option<BoxError> = None;

        loop {
            while let Some(done) = tasks.try_join_next() {
                record(&config, &mut summary, done).await;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(delivery) = pulls.next(), if open_pulls > 0 => {
                    // `None`: a pull request ended; loop to open the next one.
                    let Some((next, slot)) = delivery else {
                        open_pulls -= 1;
                        continue;
                    };
                    let message = match next {
                        Ok(message) => {
                            let mut message = Message::from_jetstream(message);
                            message.extensions_mut().insert(settings.clone());
                            message
                        }
                        Err(err) => {
                            tracing::warn!(target: "natty", error = %format_args!("{err:#}"), "message stream error; refetching");
                            self.pause_then_recreate(&config, &mut consumer, &shutdown, &mut backoff).await;
                            settings = refreshed(&settings, &consumer);
                            continue;
                        }
                    };
                    last_message = Instant::now();
                    let ready = tokio::select! {
                        () = shutdown.cancelled() => None,
                        ready = service.ready() => Some(ready.map(drop).map_err(Into::<BoxError>::into)),
                    };
                    match ready {
                        Some(Ok(())) => {}
                        Some(Err(err)) => {
                            let _ = message.nak(None).await;
                            summary.returned += 1;
                            not_ready = Some(err);
                            break;
                        }
                        None => {
                            let _ = message.nak(None).await;
                            summary.returned += 1;
                            continue;
                        }
                    }
                    spawn_call(&mut tasks, &mut service, message, slot);
                }
                reserved = Arc::clone(&slots).acquire_many_owned(pull_threshold(&config, open_pulls)), if open_pulls < OPEN_PULLS => {
                    let Ok(mut reserved) = reserved else { break };
                    // Reserve a slot for everything this pull may deliver: at most
                    // `concurrency` messages are ever held, however many pulls are open.
                    let more = slots.available_permits().min(config.fetch_size - 1);
                    if let Ok(extra) = Arc::clone(&slots).try_acquire_many_owned(u32::try_from(more).unwrap_or(0)) {
                        reserved.merge(extra);
                    }
                    // A stack that is not ready (a follower, a saturated limit) fetches nothing.
                    let ready = tokio::select! {
                        () = shutdown.cancelled() => break,
                        ready = service.ready() => ready.map(drop).map_err(Into::<BoxError>::into),
                    };
                    if let Err(err) = ready {
                        not_ready = Some(err);
                        break;
                    }
                    let batch = consumer
                        .batch()
                        .max_messages(reserved.num_permits())
                        .expires(config.fetch_timeout)
                        .messages()
                        .await;
                    match batch {
                        Ok(batch) => {
                            backoff = Duration::from_millis(50);
                            pulls.push(Box::pin(deliveries(batch, reserved, batch_deadline)));
                            open_pulls += 1;
                        }
                        Err(err) => {
                            drop(reserved);
                            tracing::warn!(target: "natty", stream = %config.stream, durable = %config.durable, error = %format_args!("{err:#}"), "fetch failed; retrying");
                            self.pause_then_recreate(&config, &mut consumer, &shutdown, &mut backoff).await;
                            settings = refreshed(&settings, &consumer);
                        }
                    }
                    let idle = Duration::from_secs(5);
                    if last_message.elapsed() > idle && last_check.elapsed() > idle {
                        // An idle consumer may have been deleted under us; make sure it exists.
                        last_check = Instant::now();
                        if consumer.info().await.is_err() {
                            self.pause_then_recreate(&config, &mut consumer, &shutdown, &mut backoff).await;
                            settings = refreshed(&settings, &consumer);
                        }
                    }
                }
            }
        }

        // Open pull requests stay open on the server until filled or expired: read them to
        // their end and nak what still arrives, instead of leaving it unacked until the ack
        // wait runs out.
        while let Some(delivery) = pulls.next().await {
            if let Some((Ok(message), _slot)) = delivery {
                let _ = Message::from_jetstream(message).nak(None).await;
                summary.returned += 1;
            }
        }

        // Shutdown: give in-flight calls their grace, then cancel the rest (guards nak them).
        let deadline = tokio::time::sleep(config.shutdown_grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(done) => record(&config, &mut summary, done).await,
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
        match not_ready {
            None => Ok(summary),
            Some(error) => Err(Error::with_source(
                ConsumeErrorKind::NotReady,
                NotReadyError { summary, error },
            )),
        }
    }

    /// Check `config`'s names and create (or update) its durable consumer.
    pub(crate) async fn consumer_for(
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

    /// The settings every message of this run carries: the consumer's, as created, and the
    /// subjects of its stream.
    async fn settings_of(
        &self,
        consumer: &async_nats::jetstream::consumer::PullConsumer,
    ) -> Result<ConsumerSettings, ConsumeError> {
        let info = consumer.cached_info();
        let stream = self
            .jetstream()
            .get_stream(&info.stream_name)
            .await
            .map_err(|err| Error::with_source(ConsumeErrorKind::Fetch, err))?;
        let subjects = stream.cached_info().config.subjects.clone();
        Ok(ConsumerSettings::from_info(info, subjects))
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
            () = tokio::time::sleep(jittered(*backoff)) => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
        // Create-or-update is idempotent: it brings back a deleted durable and is harmless
        // otherwise. Failures (server still down) are retried on the next round.
        match self.consumer_for(config).await {
            Ok(fresh) => *consumer = fresh,
            Err(err) => {
                tracing::debug!(target: "natty", error = %format_args!("{err:#}"), "consumer not reachable yet")
            }
        }
    }
}

/// The settings of `consumer` after a recreation (its configuration may have changed; the
/// stream's subjects are kept from the start of the run).
fn refreshed(
    settings: &ConsumerSettings,
    consumer: &async_nats::jetstream::consumer::PullConsumer,
) -> ConsumerSettings {
    let fresh =
        ConsumerSettings::from_info(consumer.cached_info(), settings.stream_subjects().to_vec());
    // Most recreations change nothing; keep sharing the old allocation then.
    if fresh == *settings {
        settings.clone()
    } else {
        fresh
    }
}

async fn record(
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
        Ok((Outcome::Panicked, failure)) => {
            summary.panicked += 1;
            failure
        }
        // Calls catch their own panics; this is natty's own settling code panicking.
        Err(err) if err.is_panic() => {
            summary.panicked += 1;
            Some(HandlerFailure {
                subject: String::new(),
                stream_sequence: 0,
                delivered: 0,
                error: Error::new(ConsumeErrorKind::Panicked),
                logged: false,
            })
        }
        Err(_) => None,
    };
    if let Some(failure) = failure {
        if failure.logged {
            tracing::debug!(target: "natty", subject = %failure.subject, seq = failure.stream_sequence, "handler failed (logged by a layer)");
        } else {
            let error = format!("{:#}", failure.error);
            tracing::warn!(target: "natty", subject = %failure.subject, seq = failure.stream_sequence, delivered = failure.delivered, error, "handler failed");
        }
        if let Some(errors) = &config.errors {
            if let Err(undelivered) = errors.send(failure).await {
                summary.dropped_reports += 1;
                let reason = undelivered.reason();
                let failure = undelivered.into_inner();
                tracing::error!(target: "natty", subject = %failure.subject, seq = failure.stream_sequence, error = %format_args!("{:#}", failure.error), reason, "handler error report not delivered");
            }
        }
    }
}
