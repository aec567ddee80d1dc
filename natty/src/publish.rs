//! Batched, bounded, de-duplicated JetStream publishing.
//!
//! Each subject gets a worker on first use (as in Go natty). The worker keeps a window of
//! publishes whose acks are outstanding, retries a failed publish with backoff under the same
//! `Nats-Msg-Id` (so the stream's duplicate window drops a copy whose first ack was lost), and
//! exits after an idle timeout. Unlike Go natty, each subject's queue is bounded: `publish`
//! waits for room and `try_publish` fails with [`PublishErrorKind::Full`].
//!
//! # Paths
//!
//! A worker gets its messages to the stream one of two ways, and
//! [`Natty::publish_path`](crate::Natty::publish_path) says which a subject uses right now:
//!
//! - **Fast ingest** ([`PublishPath::FastIngest`]), on servers 2.14+ when the subject's stream
//!   allows batched publishing (`allow_batched`, which [`Natty::create_stream`](crate::Natty::create_stream) sets on those
//!   servers): messages go out as one fast-ingest batch (ADR-50), and one flow ack from the
//!   server confirms hundreds of them (default 500, [`PublishConfig::fast_ingest_flow`]). When
//!   the queue stays empty for a moment the batch is committed, so its tail is confirmed too.
//!   A batch that ends early (a gap, a server restart, silence past the request timeout)
//!   confirms what the server says it stored; the rest goes into the next batch, under the
//!   same `Nats-Msg-Id`s and before anything newer, so nothing is stored twice and order
//!   holds (the server stores a batch's messages in order and stops at a gap). Only when a
//!   batch cannot be opened, or confirmed nothing at all (an outage), do messages go one by
//!   one with their own retries until one of them is confirmed again.
//! - **Per message** ([`PublishPath::PerMessage`]): one publish and one ack each, with up to
//!   `window` acks outstanding. Streams without `allow_batched`, servers before 2.14, and
//!   [`PublishConfig::fast_ingest`]`(false)` use it.
//!
//! Both keep every guarantee below; the worker learns which applies from the server's answer
//! to its first batch, and keeps to it until it exits idle.
//!
//! # Failures
//!
//! A message that still fails after its last attempt is reported, never dropped silently: to
//! the [`ReportSender`] given to [`PublishConfig::failures`] (Go natty's `PublishErrorCh`),
//! with its payload and headers so it can be resent with
//! [`Natty::republish`](crate::Natty::republish). Without one, it is logged at `ERROR` with
//! its subject and `Nats-Msg-Id`. The worker waits for room in a full report channel (unless
//! the sender is [lossy](ReportSender::lossy)), and meanwhile sends nothing more for that
//! subject, and `flush`/`shutdown` wait for the report to be taken: read reports concurrently,
//! and do not wait on a `republish` to the same subject while reading them (its queue may
//! only drain once the report channel does; resend after the outage, or from another task).
//!
//! # Order
//!
//! A subject's worker writes its messages to the connection one at a time, in the order they
//! entered the subject's queue (for one task, the order of its `publish` calls), and only
//! waits for their acks concurrently; so the stream stores them in that order. The exception
//! is a retry: a message whose attempt failed (no ack in time, a disconnect) is written again
//! after its backoff, when later messages of the same subject may already be stored, so it is
//! stored *after* them (and if its first attempt did reach the stream after all, the retry is
//! dropped as a duplicate and the message keeps its first place). Messages of different
//! subjects are not ordered with each other. On the fast-ingest path (see [Paths](self#paths))
//! a batch's leftovers are resent in the next batch, so order holds across a crash or a cut
//! too, unless the outage outlasts a batch (then messages go one by one, with the retry
//! caveat above). Where order must hold across any failure, use
//! [`Natty::publish_acked`](crate::Natty::publish_acked) one message at a time.
//!
//! # Cancellation
//!
//! `publish` only ever waits for room in the queue; dropped while waiting (a timeout, a
//! `select!`, a cancelled HTTP request), it has queued and counted nothing, so
//! [`Natty::flush`](crate::Natty::flush) and [`Natty::shutdown`](crate::Natty::shutdown) do not
//! wait for it. Once `publish` returned `Ok`, the message is sent or reported.
//!
//! # Example
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! natty.create_stream("ORDERS", ["orders.>"]).await?;
//! for n in 0..1000 {
//!     natty.publish("orders.created", format!("order {n}")).await?;
//! }
//! natty.flush().await; // every message above is now acked or reported failed
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Poll};
use std::time::Duration;

use async_nats::jetstream::context::traits::TimeoutProvider;
use async_nats::jetstream::context::{
    PublishAckFuture, PublishError as NatsPublishError, PublishErrorKind as NatsPublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::Subject;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::backoff::Backoff;
use crate::client::version_at_least;
use crate::error::{Error, PublishErrorKind};
use crate::fast_ingest::{Batch, BatchMessage, OpenError, Progress};
use crate::header::HeaderMap;
use crate::report::ReportSender;
use crate::validate;

/// The error of a publish.
pub type PublishError = Error<PublishErrorKind>;

/// Tuning of the batched publisher; the defaults suit most services.
#[derive(Clone, Debug)]
pub struct PublishConfig {
    pub(crate) queue_capacity: usize,
    pub(crate) window: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) failures: Option<ReportSender<PublishFailure>>,
    pub(crate) fast_ingest: bool,
    pub(crate) fast_ingest_flow: u16,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            window: 256,
            idle_timeout: Duration::from_secs(30),
            max_attempts: 8,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            failures: None,
            fast_ingest: true,
            fast_ingest_flow: 500,
        }
    }
}

impl PublishConfig {
    /// Messages a subject's queue holds before `publish` waits (default 8192). Besides the
    /// queue, a subject's worker holds the messages it is sending: its window of unconfirmed
    /// ones and, on the fast-ingest path, a run of at most 64 taken from the queue at once.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// Publishes per subject whose ack may be outstanding at once (default 256).
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// How long a subject's worker waits for work before it exits (default 30 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Attempts per message before it is reported failed (default 8), with exponential
    /// backoff from `backoff` up to `max_backoff` between them (defaults 50 ms and 2 s). Each
    /// delay is drawn between half and all of its nominal value, so clients that failed
    /// together (a server restart) do not retry in lockstep.
    pub fn retries(mut self, max_attempts: u32, backoff: Duration, max_backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.backoff = backoff;
        self.max_backoff = max_backoff.max(backoff);
        self
    }

    /// Whether subjects whose stream allows batched publishing use fast-ingest batches on
    /// servers 2.14+ (default `true`); see [Paths](self#paths).
    pub fn fast_ingest(mut self, enabled: bool) -> Self {
        self.fast_ingest = enabled;
        self
    }

    /// Messages per flow ack a fast-ingest batch asks for (default 500, at least 1; the
    /// server may choose fewer). Up to twice this many messages per subject are sent ahead of
    /// the last flow ack.
    pub fn fast_ingest_flow(mut self, flow: u16) -> Self {
        self.fast_ingest_flow = flow.max(1);
        self
    }

    /// Where messages that failed after every attempt are reported (Go natty's
    /// `PublishErrorCh`): a tokio `mpsc::Sender` (every report delivered, waiting for room) or
    /// a [`ReportSender::lossy`]. Without one (the default), each failure is logged at `ERROR`
    /// with its subject and `Nats-Msg-Id`. See [Failures](self#failures) for the backpressure
    /// a full channel exerts.
    pub fn failures(mut self, failures: impl Into<ReportSender<PublishFailure>>) -> Self {
        self.failures = Some(failures.into());
        self
    }
}

/// A message whose publish natty could not confirm after every attempt.
///
/// "Unconfirmed" is not "not stored": a publish sent while the connection was dropping can
/// still reach the stream once the client reconnects, after natty gave up waiting for its ack.
/// Resend it with [`Natty::republish`](crate::Natty::republish), which keeps its
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

pub(crate) struct Outgoing {
    headers: MessageHeaders,
    payload: Bytes,
    /// Set for a [`Publisher`](crate::Publisher) call: who waits for the outcome.
    reply: Option<Reply>,
}

/// The caller of a [`Publisher`](crate::Publisher) call, and its slot of queue room, which is
/// given back when the message settles (dropped with it).
pub(crate) struct Reply {
    pub(crate) sender: oneshot::Sender<Result<crate::PublishAck, PublishError>>,
    pub(crate) _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Outgoing {
    /// One attempt's copy (cheap: the payload is shared, the header map is small).
    fn to_publish(&self) -> PublishMessage {
        PublishMessage::build()
            .headers(self.headers.to_map())
            .payload(self.payload.clone())
    }
}

/// A queued message's headers. Most messages carry nothing but the `Nats-Msg-Id` natty
/// stamped: that id is kept inline and each attempt builds its map, instead of building one
/// map at `publish` and copying it for every attempt.
enum MessageHeaders {
    /// Only the stamped `Nats-Msg-Id`.
    Id(nuid::NUIDStr),
    /// The caller's headers, `Nats-Msg-Id` included.
    Map(async_nats::HeaderMap),
}

impl MessageHeaders {
    /// The headers as sent: async-nats' map (moved, not copied), with a `Nats-Msg-Id` unless
    /// the caller set one and (with the `opentelemetry` feature) the current span's trace
    /// context.
    fn stamp(headers: Option<HeaderMap>) -> Self {
        #[cfg(feature = "opentelemetry")]
        let headers = {
            let mut headers = headers.unwrap_or_default();
            crate::otel::inject_current(&mut headers);
            Some(headers)
        };
        let Some(headers) = headers.filter(|headers| !headers.is_empty()) else {
            return Self::Id(nuid::next());
        };
        let mut headers = async_nats::HeaderMap::from(headers);
        if headers.get(async_nats::header::NATS_MESSAGE_ID).is_none() {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, nuid::next().as_str());
        }
        Self::Map(headers)
    }

    /// One attempt's map.
    fn to_map(&self) -> async_nats::HeaderMap {
        match self {
            Self::Id(id) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                headers
            }
            Self::Map(headers) => headers.clone(),
        }
    }

    fn into_map(self) -> async_nats::HeaderMap {
        match self {
            Self::Id(_) => self.to_map(),
            Self::Map(headers) => headers,
        }
    }

    fn message_id(&self) -> &str {
        match self {
            Self::Id(id) => id.as_str(),
            Self::Map(headers) => headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map_or("", |id| id.as_str()),
        }
    }
}

struct Worker {
    id: u64,
    sender: mpsc::Sender<Outgoing>,
    task: JoinHandle<()>,
    /// Whether the worker publishes through fast-ingest batches right now.
    fast: Arc<AtomicBool>,
}

/// How a subject's worker gets its messages to the stream; see [the module docs](self#paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishPath {
    /// Fast-ingest batches (ADR-50): one flow ack confirms many messages.
    FastIngest,
    /// One publish and one ack per message, with a window of acks outstanding.
    PerMessage,
}

/// The publish pipeline shared by every clone of a [`Natty`](crate::Natty): one worker per
/// subject.
pub(crate) struct Pipeline {
    jetstream: Arc<async_nats::jetstream::Context>,
    client: async_nats::Client,
    config: PublishConfig,
    workers: Mutex<HashMap<String, Worker>>,
    closed: AtomicBool,
    next_worker: AtomicU64,
    pending: AtomicUsize,
    idle: Notify,
    /// Room of the [`Publisher`](crate::Publisher) services: `queue_capacity` unsettled calls.
    room: Arc<Semaphore>,
}

impl Pipeline {
    pub(crate) fn new(
        jetstream: async_nats::jetstream::Context,
        client: async_nats::Client,
        config: PublishConfig,
    ) -> Self {
        Self {
            jetstream: Arc::new(jetstream),
            client,
            room: Arc::new(Semaphore::new(config.queue_capacity)),
            config,
            workers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            next_worker: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Validate, stamp a `Nats-Msg-Id` (unless the caller set one) and enqueue.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        subject: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
        wait: bool,
    ) -> Result<(), PublishError> {
        let Prepared {
            mut running,
            message,
        } = self.prepare(subject, headers, payload, None)?;
        loop {
            let (id, sender) = match running.take() {
                Some(queue) => queue,
                None => self.sender_for(subject)?,
            };
            // Waiting for room is the only await: a publish dropped there (a timeout, a
            // `select!`, a cancelled request) has reserved nothing and counted nothing.
            let slot = if wait {
                sender.reserve().await.map_err(|_closed| false)
            } else {
                sender.try_reserve().map_err(|err| match err {
                    mpsc::error::TrySendError::Full(()) => true,
                    mpsc::error::TrySendError::Closed(()) => false,
                })
            };
            match slot {
                Ok(slot) => {
                    // Counted before the worker can see it, so it cannot settle uncounted.
                    self.pending.fetch_add(1, Ordering::AcqRel);
                    slot.send(message);
                    return Ok(());
                }
                Err(true) => return Err(Error::new(PublishErrorKind::Full)),
                // The worker went idle between lookup and reserve: replace it and try again.
                Err(false) => self.forget_worker(subject, id),
            }
        }
    }

    /// Publish one message and wait for its ack, retrying like the workers do.
    pub(crate) async fn publish_acked(
        &self,
        subject: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<crate::PublishAck, PublishError> {
        self.check(subject, true, headers.as_ref(), &payload)?;
        let subject = Subject::from(subject);
        let message = Outgoing {
            headers: MessageHeaders::stamp(headers),
            payload,
            reply: None,
        };
        let sent = self
            .jetstream
            .send_publish(subject.clone(), message.to_publish())
            .await;
        let (result, _message) = Confirm::new(self, &subject, message, sent).await;
        result.map(|ack| crate::PublishAck::new_stored(ack, &self.jetstream))
    }

    /// The room every [`Publisher`](crate::Publisher) service reserves a slot of.
    pub(crate) fn room(&self) -> &Arc<Semaphore> {
        &self.room
    }

    /// Validate and stamp a message for [`Pipeline::try_enqueue`], and find its subject's
    /// running worker. A subject with a running worker was validated when the worker
    /// started, so it is not validated again.
    pub(crate) fn prepare(
        &self,
        subject: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
        reply: Option<Reply>,
    ) -> Result<Prepared, PublishError> {
        let running = self
            .lock()
            .get(subject)
            .map(|worker| (worker.id, worker.sender.clone()));
        self.check(subject, running.is_none(), headers.as_ref(), &payload)?;
        let message = Outgoing {
            headers: MessageHeaders::stamp(headers),
            payload,
            reply,
        };
        Ok(Prepared { running, message })
    }

    /// Enqueue the message if its subject's queue has room now; otherwise hand it back with
    /// the queue's sender, to wait for room on.
    pub(crate) fn try_enqueue(
        self: &Arc<Self>,
        subject: &str,
        prepared: Prepared,
    ) -> Result<(), Enqueue> {
        let Prepared {
            mut running,
            message,
        } = prepared;
        loop {
            let (id, sender) = match running.take() {
                Some(queue) => queue,
                None => self.sender_for(subject).map_err(Enqueue::Failed)?,
            };
            let full = match sender.try_reserve() {
                Ok(slot) => {
                    self.enqueue(slot, message);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Full(())) => true,
                Err(mpsc::error::TrySendError::Closed(())) => false,
            };
            if full {
                return Err(Enqueue::Full(sender, message));
            }
            // The worker went idle between lookup and reserve: replace it and try again.
            self.forget_worker(subject, id);
        }
    }

    /// Put `message` into the slot reserved for it, counted first so it cannot settle uncounted.
    fn enqueue(&self, slot: mpsc::Permit<'_, Outgoing>, message: Outgoing) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        slot.send(message);
    }

    /// Count a message about to be sent into a slot reserved elsewhere (see [`Pipeline::enqueue`]).
    pub(crate) fn count_one(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// Refuse what cannot be sent; `new_subject` is false for a subject already validated.
    fn check(
        &self,
        subject: &str,
        new_subject: bool,
        headers: Option<&HeaderMap>,
        payload: &Bytes,
    ) -> Result<(), PublishError> {
        if new_subject {
            validate::publish_subject(subject)
                .map_err(|err| Error::with_source(PublishErrorKind::InvalidSubject, err))?;
        }
        if let Some(invalid) = headers.and_then(HeaderMap::invalid) {
            return Err(Error::with_source(
                PublishErrorKind::InvalidHeader,
                invalid.clone(),
            ));
        }
        validate::payload(payload.len(), self.client.max_payload())
            .map_err(|err| Error::with_source(PublishErrorKind::PayloadTooLarge, err))?;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(PublishErrorKind::Closed));
        }
        Ok(())
    }

    /// The queue of `subject`'s worker, started if none runs; `subject` was validated (every
    /// key of `workers` is a valid publish subject).
    fn sender_for(self: &Arc<Self>, subject: &str) -> Result<WorkerQueue, PublishError> {
        let mut workers = self.lock();
        // Checked under the lock so `shutdown` cannot miss a worker started after it looked.
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(PublishErrorKind::Closed));
        }
        if let Some(worker) = workers.get(subject) {
            return Ok((worker.id, worker.sender.clone()));
        }
        let id = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(self.config.queue_capacity);
        let fast = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(Arc::clone(self).run_worker(
            Subject::from(subject),
            id,
            receiver,
            Arc::clone(&fast),
        ));
        workers.insert(
            subject.to_owned(),
            Worker {
                id,
                fast,
                sender: sender.clone(),
                task,
            },
        );
        Ok((id, sender))
    }

    fn forget_worker(&self, subject: &str, id: u64) {
        let mut workers = self.lock();
        if workers.get(subject).is_some_and(|w| w.id == id) {
            workers.remove(subject);
        }
    }

    async fn run_worker(
        self: Arc<Self>,
        subject: Subject,
        id: u64,
        mut queue: mpsc::Receiver<Outgoing>,
        path: Arc<AtomicBool>,
    ) {
        let window = self.config.window;
        let ack_timeout = self.jetstream.timeout();
        // Single publishes whose acks are outstanding.
        let mut in_flight = FuturesUnordered::new();
        // Messages to send before anything newer: what a batch did not confirm.
        let mut resend: VecDeque<Outgoing> = VecDeque::new();
        let mut batch: Option<Batch<Outgoing>> = None;
        let mut fast =
            self.config.fast_ingest && version_at_least(&self.client.server_info().version, 2, 14);
        // Set when a batch could not be opened, or ended without confirming anything (an
        // outage): single publishes, with their window and retries, until one is confirmed.
        let mut troubled = false;
        // Since when the queue has been empty while a batch holds unconfirmed messages.
        let mut quiet_since: Option<Instant> = None;
        // When to ask a silent batch for news, to commit a lingering batch, to exit idle.
        let mut check_timer = Timer::new();
        let mut linger_timer = Timer::new();
        let mut idle_timer = Timer::new();
        let mut open = true;
        // Messages [`next_message`] takes from the queue at once (kept for its capacity).
        let mut taken = Vec::new();
        path.store(fast, Ordering::Release);
        loop {
            let room = if let Some(batch) = &batch {
                // What a batch left over goes into the next batch, in order, like new messages.
                batch.has_room()
            } else if fast && !troubled {
                match resend.front() {
                    // A new batch starts only once every single publish before it is settled,
                    // so the subject's order holds across the two paths.
                    Some(next) if next.reply.is_none() => in_flight.is_empty(),
                    // `Publisher` calls go alone, in a window, like the per-message path.
                    _ => in_flight.len() < window,
                }
            } else {
                in_flight.len() < window
            };
            let lingering = batch
                .as_ref()
                .is_some_and(|b| b.has_unconfirmed() && !b.is_committed())
                && queue.is_empty();
            if !lingering {
                quiet_since = None;
            } else if quiet_since.is_none() {
                quiet_since = Some(Instant::now());
            }
            linger_timer.aim(quiet_since.map(|since| since + BATCH_LINGER));
            check_timer.aim(batch.as_ref().map(|b| b.next_check(ack_timeout)));
            if !(open && in_flight.is_empty() && batch.is_none() && resend.is_empty()) {
                idle_timer.aim(None);
            } else if !idle_timer.is_armed() {
                idle_timer.aim(Some(Instant::now() + self.config.idle_timeout));
            }
            // An open batch takes a run of queued messages that it has room for; anything
            // else, one at a time.
            let take = batch.as_ref().map_or(1, |b| b.room().clamp(1, SEND_RUN));
            let (checking, committing, idling) = (
                check_timer.is_armed(),
                linger_timer.is_armed(),
                idle_timer.is_armed(),
            );
            tokio::select! {
                Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                    let outcome: Outcome = outcome;
                    troubled &= outcome.0.is_err();
                    self.finish(&subject, outcome).await;
                }
                progress = batch_progress(&mut batch), if batch.is_some() => {
                    let Some(current) = batch.as_mut() else { continue };
                    match progress {
                        Progress::Stored(count) => {
                            self.settled(current.take_stored(count).count());
                        }
                        Progress::Ended(count) => {
                            self.settled(current.take_stored(count).count());
                            if let Some(ended) = batch.take() {
                                // A batch that ended before confirming everything it was sent
                                // met a gap or a restart: the rest goes into the next batch,
                                // or alone if this one confirmed nothing at all.
                                let made_progress = ended.confirmed_any();
                                let unconfirmed = ended.into_unconfirmed();
                                troubled |= !unconfirmed.is_empty() && !made_progress;
                                resend_first(&mut resend, unconfirmed);
                            }
                        }
                        Progress::Nothing => {}
                    }
                }
                () = check_timer.fire(), if checking => {
                    let alive = match batch.as_mut() {
                        Some(current) => current.keep_alive(ack_timeout).await,
                        None => true,
                    };
                    if !alive {
                        tracing::debug!(target: "natty", %subject, "fast-ingest batch went silent; resending what it did not confirm");
                        if let Some(lost) = batch.take() {
                            troubled |= !lost.confirmed_any();
                            resend_first(&mut resend, lost.into_unconfirmed());
                        }
                    }
                }
                () = linger_timer.fire(), if committing => {
                    // Nothing more to send for a moment: end the batch, so the server confirms
                    // its tail (flow acks only cover whole flows).
                    if let Some(current) = batch.as_mut() {
                        current.commit().await;
                    }
                    quiet_since = None;
                }
                next = next_message(&mut resend, &mut queue, &mut taken, take), if room && (open || !resend.is_empty()) => {
                    let Some(message) = next else {
                        open = false;
                        if let Some(current) = batch.as_mut() {
                            current.commit().await;
                        }
                        continue;
                    };
                    // A `Publisher` call waits for its own ack (sequence, duplicate), which a
                    // flow ack does not give: it goes alone, after the open batch has ended,
                    // so the subject's order holds.
                    let alone = !fast || troubled || message.reply.is_some();
                    if alone {
                        if let Some(current) = batch.as_mut() {
                            current.commit().await;
                            resend.push_front(message);
                            continue;
                        }
                    }
                    if alone {
                        // Written one at a time, in queue order, so the stream stores the
                        // subject's messages in publish order; earlier acks are still
                        // collected meanwhile, since the write may wait for async-nats' ack
                        // permits.
                        let send = self.jetstream.send_publish(subject.clone(), message.to_publish());
                        tokio::pin!(send);
                        let sent = loop {
                            tokio::select! {
                                sent = &mut send => break sent,
                                Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                                    troubled &= outcome.0.is_err();
                                    self.finish(&subject, outcome).await;
                                }
                            }
                        };
                        in_flight.push(Confirm::new(&self, &subject, message, sent));
                        continue;
                    }
                    match batch.as_mut() {
                        Some(current) => {
                            // What is queued already follows in this pass while the batch has
                            // room: one pass of the loop per run of messages, not per message,
                            // in the same order and window as one pass each.
                            let mut next = Some(message);
                            let mut sent = 0;
                            while let Some(message) = next.take() {
                                if let Err(unsent) = current.send(message).await {
                                    let mut lost = batch
                                        .take()
                                        .map(Batch::into_unconfirmed)
                                        .unwrap_or_default();
                                    lost.push_back(unsent);
                                    resend_first(&mut resend, lost);
                                    troubled = true;
                                    break;
                                }
                                sent += 1;
                                if sent < SEND_RUN && current.has_room() {
                                    next = ready_for_batch(&mut resend);
                                }
                            }
                        }
                        None if !in_flight.is_empty() => {
                            // Single publishes are still out: this one opens the next batch
                            // once they are settled.
                            resend.push_front(message);
                        }
                        None => {
                            let flow = self.config.fast_ingest_flow;
                            match Batch::open(&self.client, &subject, message, flow, ack_timeout).await {
                                Ok(opened) => batch = Some(opened),
                                Err(OpenError::Disabled(first)) => {
                                    // The stream does not allow batches: single publishes
                                    // for as long as this worker lives.
                                    fast = false;
                                    path.store(fast, Ordering::Release);
                                    tracing::debug!(target: "natty", %subject, "stream does not allow batched publishing; publishing message by message");
                                    resend.push_front(first);
                                }
                                Err(OpenError::Failed(first)) => {
                                    troubled = true;
                                    resend.push_front(first);
                                }
                            }
                        }
                    }
                }
                () = idle_timer.fire(), if idling => {
                    // Refuse new sends, then drain what was queued before the refusal.
                    queue.close();
                    self.forget_worker(&subject, id);
                }
                else => break,
            }
        }
        tracing::debug!(target: "natty", %subject, "publish worker exited");
    }

    /// Report a failed message, then count it settled: `flush` returns only once every
    /// report was handed over.
    async fn finish(&self, subject: &Subject, outcome: Outcome) {
        let (
            result,
            Outgoing {
                headers,
                payload,
                reply,
            },
        ) = outcome;
        let result = match reply {
            // A caller that stopped waiting (a timeout) leaves its failure to be reported.
            Some(reply) => match result {
                Ok(ack) => {
                    let _ = reply
                        .sender
                        .send(Ok(crate::PublishAck::new_stored(ack, &self.jetstream)));
                    Ok(())
                }
                Err(error) => match reply.sender.send(Err(error)) {
                    Ok(()) => Ok(()),
                    Err(unheard) => unheard.map(drop),
                },
            },
            None => result.map(drop),
        };
        if let Err(error) = result {
            self.report(PublishFailure {
                subject: subject.to_string(),
                message_id: headers.message_id().to_owned(),
                payload,
                headers: HeaderMap::received(headers.into_map()),
                error,
            })
            .await;
        }
        self.settled_one();
    }

    async fn report(&self, failure: PublishFailure) {
        let Some(failures) = &self.config.failures else {
            tracing::error!(target: "natty", subject = %failure.subject, message_id = %failure.message_id, error = %format_args!("{:#}", failure.error), "publish failed after every attempt (no failure channel configured)");
            return;
        };
        tracing::warn!(target: "natty", subject = %failure.subject, message_id = %failure.message_id, error = %format_args!("{:#}", failure.error), "publish failed after every attempt; reported");
        if let Err(undelivered) = failures.send(failure).await {
            let reason = undelivered.reason();
            let failure = undelivered.into_inner();
            tracing::error!(target: "natty", subject = %failure.subject, message_id = %failure.message_id, error = %format_args!("{:#}", failure.error), reason, "publish failed after every attempt and its report was not delivered");
        }
    }

    pub(crate) fn settled_one(&self) {
        self.settled(1);
    }

    /// Count `count` messages settled at once (a flow ack's worth: one atomic step, not one
    /// per message, on a counter every `publish` also steps).
    fn settled(&self, count: usize) {
        if count > 0 && self.pending.fetch_sub(count, Ordering::AcqRel) == count {
            self.idle.notify_waiters();
        }
    }

    /// Wait until every accepted message is acked or reported failed.
    pub(crate) async fn flush(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Stop one subject's worker after it has published what it holds.
    pub(crate) async fn delete_publisher(&self, subject: &str) -> bool {
        let worker = self.lock().remove(subject);
        match worker {
            Some(Worker { sender, task, .. }) => {
                drop(sender);
                let _ = task.await;
                true
            }
            None => false,
        }
    }

    /// Refuse new messages and drain every worker.
    pub(crate) async fn shutdown(&self) {
        let workers: Vec<Worker> = {
            let mut workers = self.lock();
            self.closed.store(true, Ordering::Release);
            self.room.close();
            workers.drain().map(|(_, worker)| worker).collect()
        };
        for Worker { sender, task, .. } in workers {
            drop(sender);
            let _ = task.await;
        }
        self.flush().await;
    }

    /// The path the subject's worker publishes through, while it runs.
    pub(crate) fn path(&self, subject: &str) -> Option<PublishPath> {
        self.lock().get(subject).map(|worker| {
            if worker.fast.load(Ordering::Acquire) {
                PublishPath::FastIngest
            } else {
                PublishPath::PerMessage
            }
        })
    }

    pub(crate) fn workers(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn queued(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Worker>> {
        // Only inserts and removes happen under this lock; a panic cannot tear the map.
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long a batch waits with an empty queue before it commits, so the server confirms its
/// tail: long enough that a steady producer keeps one batch open, short next to an ack.
const BATCH_LINGER: Duration = Duration::from_millis(1);

/// Messages a worker sends into an open batch in one pass before it looks at the server's
/// replies again.
const SEND_RUN: usize = 64;

/// A worker's timer, kept across the passes of its loop and reset only when its deadline
/// moves: a fresh `Sleep` on every pass would enter the timer wheel, and leave it, once per
/// message.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    deadline: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        Self {
            sleep: Box::pin(sleep_until(Instant::now())),
            deadline: None,
        }
    }

    /// Aim at `deadline`, or disarm with `None`.
    fn aim(&mut self, deadline: Option<Instant>) {
        if deadline != self.deadline {
            if let Some(at) = deadline {
                self.sleep.as_mut().reset(at);
            }
            self.deadline = deadline;
        }
    }

    fn is_armed(&self) -> bool {
        self.deadline.is_some()
    }

    /// Wait for the deadline; once it fired the timer is disarmed, so the next `aim` sets it
    /// again even to the same instant (as a fresh `Sleep` would be).
    async fn fire(&mut self) {
        (&mut self.sleep).await;
        self.deadline = None;
    }
}

/// The next message to send: first what a batch left over, then the queue (`None` once it is
/// closed and empty). Up to `up_to` queued messages are taken at once (one wake-up of a
/// producer waiting for room per run, not per message); those after the first wait in
/// `resend`, which was empty, so their order holds.
async fn next_message(
    resend: &mut VecDeque<Outgoing>,
    queue: &mut mpsc::Receiver<Outgoing>,
    taken: &mut Vec<Outgoing>,
    up_to: usize,
) -> Option<Outgoing> {
    if let Some(message) = resend.pop_front() {
        return Some(message);
    }
    if queue.recv_many(taken, up_to).await == 0 {
        return None;
    }
    let mut taken = taken.drain(..);
    let first = taken.next();
    resend.extend(taken);
    first
}

/// Put what a batch did not confirm before the rest of `resend`: a batch sends from the front
/// of `resend`, so whatever is still there is newer than everything the batch was sent.
fn resend_first(resend: &mut VecDeque<Outgoing>, mut unconfirmed: VecDeque<Outgoing>) {
    unconfirmed.append(resend);
    *resend = unconfirmed;
}

/// The next message of `resend` if it may go into the open batch (a
/// [`Publisher`](crate::Publisher) call goes alone, so it stays first for the next pass).
fn ready_for_batch(resend: &mut VecDeque<Outgoing>) -> Option<Outgoing> {
    if resend.front()?.reply.is_some() {
        return None;
    }
    resend.pop_front()
}

/// The open batch's next progress; pending forever without one.
async fn batch_progress(batch: &mut Option<Batch<Outgoing>>) -> Progress {
    match batch {
        Some(batch) => batch.progress().await,
        None => std::future::pending().await,
    }
}

impl BatchMessage for Outgoing {
    fn parts(&self) -> (async_nats::HeaderMap, Bytes) {
        (self.headers.to_map(), self.payload.clone())
    }
}

/// A subject's worker and the sender of its queue.
type WorkerQueue = (u64, mpsc::Sender<Outgoing>);

/// A message [`Pipeline::prepare`]d for its subject's queue.
pub(crate) struct Prepared {
    /// The queue of the subject's worker, when one was running.
    running: Option<WorkerQueue>,
    message: Outgoing,
}

impl Prepared {
    /// A prepared message whose queue closed (its worker went idle): it goes to the next one.
    pub(crate) fn requeued(message: Outgoing) -> Self {
        Self {
            running: None,
            message,
        }
    }
}

/// Why a [`Pipeline::try_enqueue`] did not enqueue.
pub(crate) enum Enqueue {
    /// The subject's queue is full: wait for room on its sender, then send the message.
    Full(mpsc::Sender<Outgoing>, Outgoing),
    /// The pipeline refused the message.
    Failed(PublishError),
}

/// A message's outcome, with the message (to answer its caller or report it).
type Outcome = (Result<PublishAck, PublishError>, Outgoing);

/// The ack of a message already written, as async-nats waits for it.
type AckWait = Pin<Box<dyn Future<Output = Result<PublishAck, NatsPublishError>> + Send>>;

/// Wait for the ack of a message already written, then retry it under the same `Nats-Msg-Id`
/// with jittered exponential backoff until it is acked, refused for good, or out of attempts.
/// A retry is written when its delay is over, so it may be stored after messages of the same
/// subject published later.
///
/// The first wait is what nearly every message needs, so only it is inline; the retry loop
/// is boxed when a retry is due. (A window holds hundreds of these; an `async fn` would carry
/// the whole retry loop in each of them, and copy it into the window.)
struct Confirm<'a> {
    jetstream: &'a async_nats::jetstream::Context,
    config: &'a PublishConfig,
    subject: &'a Subject,
    state: ConfirmState<'a>,
}

enum ConfirmState<'a> {
    /// The first attempt's ack (or why it could not be written).
    First {
        ack: AckWait,
        message: Outgoing,
    },
    Retrying(Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>),
    Done,
}

impl<'a> Confirm<'a> {
    fn new(
        pipeline: &'a Pipeline,
        subject: &'a Subject,
        message: Outgoing,
        sent: Result<PublishAckFuture, NatsPublishError>,
    ) -> Self {
        let ack = match sent {
            Ok(ack) => ack.into_future(),
            Err(unsent) => Box::pin(std::future::ready(Err(unsent))),
        };
        Self {
            jetstream: &pipeline.jetstream,
            config: &pipeline.config,
            subject,
            state: ConfirmState::First { ack, message },
        }
    }
}

impl Future for Confirm<'_> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Outcome> {
        let this = self.get_mut();
        let result = match &mut this.state {
            ConfirmState::First { ack, .. } => ready!(ack.as_mut().poll(cx)),
            ConfirmState::Retrying(retrying) => return retrying.as_mut().poll(cx),
            ConfirmState::Done => panic!("a Confirm polled after it completed"),
        };
        let ConfirmState::First { message, .. } =
            std::mem::replace(&mut this.state, ConfirmState::Done)
        else {
            unreachable!("the state was First above");
        };
        let err = match result {
            Ok(ack) => return Poll::Ready((Ok(ack), message)),
            Err(err) => err,
        };
        match another_attempt(this.config, err, 1) {
            Err(failed) => Poll::Ready((Err(failed), message)),
            Ok(err) => {
                let mut retrying = Box::pin(retry(
                    this.jetstream,
                    this.config,
                    this.subject,
                    message,
                    err,
                ));
                let outcome = retrying.as_mut().poll(cx);
                this.state = ConfirmState::Retrying(retrying);
                outcome
            }
        }
    }
}

/// `Ok(err)` when the attempt that failed with `err` (number `attempt`) is worth another;
/// otherwise the publish's error.
fn another_attempt(
    config: &PublishConfig,
    err: NatsPublishError,
    attempt: u32,
) -> Result<NatsPublishError, PublishError> {
    let kind = match err.kind() {
        NatsPublishErrorKind::TimedOut => PublishErrorKind::TimedOut,
        NatsPublishErrorKind::StreamNotFound => PublishErrorKind::NoStream,
        NatsPublishErrorKind::MaxPayloadExceeded => PublishErrorKind::PayloadTooLarge,
        _ => PublishErrorKind::Rejected,
    };
    let retryable = !matches!(
        err.kind(),
        NatsPublishErrorKind::MaxPayloadExceeded
            | NatsPublishErrorKind::WrongLastMessageId
            | NatsPublishErrorKind::WrongLastSequence
    );
    if !retryable || attempt >= config.max_attempts {
        return Err(Error::with_source(kind, err));
    }
    Ok(err)
}

/// The attempts after the first failed one (`err`), each after its backoff.
async fn retry(
    jetstream: &async_nats::jetstream::Context,
    config: &PublishConfig,
    subject: &Subject,
    message: Outgoing,
    err: NatsPublishError,
) -> Outcome {
    let mut err = err;
    let mut backoff = Backoff::new(config.backoff, config.max_backoff).with_jitter(true);
    let mut attempt = 1;
    loop {
        tracing::debug!(target: "natty", %subject, attempt, error = %err, "publish failed; retrying");
        tokio::time::sleep(backoff.next_pause()).await;
        attempt += 1;
        let result = match jetstream
            .send_publish(subject.clone(), message.to_publish())
            .await
        {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        err = match result {
            Ok(ack) => return (Ok(ack), message),
            Err(err) => match another_attempt(config, err, attempt) {
                Ok(err) => err,
                Err(failed) => return (Err(failed), message),
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: NatsPublishErrorKind) -> NatsPublishError {
        NatsPublishError::new(kind)
    }

    fn queued(payload: &'static str, call: bool) -> Outgoing {
        let reply = call.then(|| {
            let (sender, _answer) = oneshot::channel();
            let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
            Reply {
                sender,
                _slot: slot,
            }
        });
        Outgoing {
            headers: MessageHeaders::Id(nuid::next()),
            payload: Bytes::from_static(payload.as_bytes()),
            reply,
        }
    }

    fn payloads(resend: &VecDeque<Outgoing>) -> Vec<&[u8]> {
        resend.iter().map(|m| m.payload.as_ref()).collect()
    }

    #[test]
    fn what_a_batch_did_not_confirm_goes_before_what_it_was_not_sent() {
        let mut resend: VecDeque<_> = [queued("3", false), queued("4", false)].into();
        resend_first(&mut resend, [queued("1", false), queued("2", false)].into());
        assert_eq!(payloads(&resend), [b"1", b"2", b"3", b"4"]);
    }

    #[test]
    fn a_run_into_a_batch_stops_before_a_publisher_call() {
        let mut resend: VecDeque<_> = [queued("1", false), queued("2", true)].into();
        let first = ready_for_batch(&mut resend).expect("a plain message goes into the batch");
        assert_eq!(first.payload.as_ref(), b"1");
        assert!(ready_for_batch(&mut resend).is_none());
        assert_eq!(
            payloads(&resend),
            [b"2"],
            "the call stays first, for its own pass"
        );
    }

    #[test]
    fn a_timed_out_attempt_is_retried_until_the_last_one() {
        let config = PublishConfig::default().retries(3, Duration::ZERO, Duration::ZERO);
        for attempt in 1..3 {
            assert!(
                another_attempt(&config, failed(NatsPublishErrorKind::TimedOut), attempt).is_ok()
            );
        }
        let last = another_attempt(&config, failed(NatsPublishErrorKind::TimedOut), 3).unwrap_err();
        assert_eq!(last.kind(), PublishErrorKind::TimedOut);
    }

    #[test]
    fn a_refusal_no_retry_can_change_fails_at_once() {
        let config = PublishConfig::default();
        for (refusal, kind) in [
            (
                NatsPublishErrorKind::MaxPayloadExceeded,
                PublishErrorKind::PayloadTooLarge,
            ),
            (
                NatsPublishErrorKind::WrongLastMessageId,
                PublishErrorKind::Rejected,
            ),
            (
                NatsPublishErrorKind::WrongLastSequence,
                PublishErrorKind::Rejected,
            ),
        ] {
            let err = another_attempt(&config, failed(refusal), 1).unwrap_err();
            assert_eq!(err.kind(), kind);
        }
        let no_stream = another_attempt(&config, failed(NatsPublishErrorKind::StreamNotFound), 1);
        assert!(no_stream.is_ok(), "a stream may be created meanwhile");
        let config = PublishConfig::default().retries(1, Duration::ZERO, Duration::ZERO);
        let err =
            another_attempt(&config, failed(NatsPublishErrorKind::StreamNotFound), 1).unwrap_err();
        assert_eq!(err.kind(), PublishErrorKind::NoStream);
    }
}
