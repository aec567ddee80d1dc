//! [`Pipeline`]: the subjects' queues and workers of one client, what it admits into them,
//! and how it waits for them (`flush`, `shutdown`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::Subject;
use bytes::Bytes;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::batch::{self, Batch, BatchAck, BatchError};
use super::config::PublishConfig;
use super::confirm::{Confirm, Outcome};
use super::decide::answer;
use super::message::{PublishAck, PublishError, PublishFailure};
use super::queued::{Outgoing, Reply};
use super::worker::{self, Host};
use crate::error::{BatchErrorKind, Error, PublishErrorKind};
use crate::header::HeaderMap;
use crate::validate;

/// How a subject's worker gets its messages to the stream; see [Paths](crate::publish#paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishPath {
    /// Fast-ingest batches (ADR-50): one flow ack confirms many messages.
    FastIngest,
    /// One publish and one ack per message, with a window of acks outstanding.
    PerMessage,
}

/// A subject's running worker, as the pipeline knows it.
struct RunningWorker {
    id: u64,
    sender: mpsc::Sender<Outgoing>,
    task: JoinHandle<()>,
    /// Whether the worker publishes through fast-ingest batches right now.
    fast: Arc<AtomicBool>,
}

/// The publish pipeline shared by every clone of a client's [`Publisher`](crate::Publisher):
/// one worker per subject.
pub(super) struct Pipeline {
    jetstream: Arc<async_nats::jetstream::Context>,
    client: async_nats::Client,
    config: PublishConfig,
    workers: Mutex<HashMap<String, RunningWorker>>,
    closed: AtomicBool,
    next_worker: AtomicU64,
    pending: AtomicUsize,
    idle: Notify,
    /// Room of the [`Publisher`](crate::Publisher) services: `queue_capacity` unsettled calls.
    room: Arc<Semaphore>,
    /// Where the answers to atomic batches arrive, once one was sent (shared with the
    /// client's multi-key writes).
    batch_answers: Arc<tokio::sync::OnceCell<batch::Answers>>,
}

impl Pipeline {
    pub(super) fn new(
        jetstream: async_nats::jetstream::Context,
        client: async_nats::Client,
        config: PublishConfig,
        batch_answers: Arc<tokio::sync::OnceCell<batch::Answers>>,
    ) -> Self {
        Self {
            jetstream: Arc::new(jetstream),
            client,
            room: Arc::new(Semaphore::new(config.queue_capacity)),
            batch_answers,
            config,
            workers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            next_worker: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Validate, stamp a `Nats-Msg-Id` (unless the caller set one) and enqueue.
    pub(super) async fn publish(
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
    pub(super) async fn publish_acked(
        &self,
        subject: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<PublishAck, PublishError> {
        self.check(subject, true, headers.as_ref(), &payload)?;
        let subject = Subject::from(subject);
        let message = Outgoing::new(headers, payload, None);
        let sent = self
            .jetstream
            .send_publish(subject.clone(), message.to_publish())
            .await;
        let (result, _message) =
            Confirm::new(&self.jetstream, &self.config, &subject, message, sent).await;
        result.map(|ack| PublishAck::new_stored(ack, &self.jetstream))
    }

    /// Send an atomic batch on the client's connection, unless the publisher is closed.
    pub(super) async fn publish_batch(&self, batch: &Batch) -> Result<BatchAck, BatchError> {
        if self.closed.load(Ordering::Acquire) {
            batch::check(batch, self.client.max_payload())?;
            return Err(Error::new(BatchErrorKind::Closed));
        }
        batch::publish(&self.client, &self.batch_answers, batch).await
    }

    /// The room every [`Publisher`](crate::Publisher) service reserves a slot of.
    pub(super) fn room(&self) -> &Arc<Semaphore> {
        &self.room
    }

    /// Validate and stamp a message for [`Pipeline::try_enqueue`], and find its subject's
    /// running worker. A subject with a running worker was validated when the worker
    /// started, so it is not validated again.
    pub(super) fn prepare(
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
        let message = Outgoing::new(headers, payload, reply);
        Ok(Prepared { running, message })
    }

    /// Enqueue the message if its subject's queue has room now; otherwise hand it back with
    /// the queue's sender, to wait for room on.
    pub(super) fn try_enqueue(
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
    pub(super) fn count_one(&self) {
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
        let task = tokio::spawn(worker::run(
            Arc::clone(self),
            Subject::from(subject),
            id,
            receiver,
            Arc::clone(&fast),
        ));
        workers.insert(
            subject.to_owned(),
            RunningWorker {
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

    /// Answer the caller of a settled message, or report its failure when nobody took it
    /// (see [`answer`]), then count it settled: `flush` returns only once every report was
    /// handed over.
    async fn finish(&self, subject: &Subject, outcome: Outcome) {
        let (
            result,
            Outgoing {
                headers,
                payload,
                reply,
            },
        ) = outcome;
        let result = answer(result, reply, |ack| {
            PublishAck::new_stored(ack, &self.jetstream)
        });
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

    /// Count one message settled.
    pub(super) fn settled_one(&self) {
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
    pub(super) async fn flush(&self) {
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
    pub(super) async fn close_subject(&self, subject: &str) -> bool {
        let worker = self.lock().remove(subject);
        match worker {
            Some(RunningWorker { sender, task, .. }) => {
                drop(sender);
                let _ = task.await;
                true
            }
            None => false,
        }
    }

    /// Refuse new messages and drain every worker.
    pub(super) async fn shutdown(&self) {
        let workers: Vec<RunningWorker> = {
            let mut workers = self.lock();
            self.closed.store(true, Ordering::Release);
            self.room.close();
            workers.drain().map(|(_, worker)| worker).collect()
        };
        for RunningWorker { sender, task, .. } in workers {
            drop(sender);
            let _ = task.await;
        }
        self.flush().await;
    }

    /// The path the subject's worker publishes through, while it runs.
    pub(super) fn path(&self, subject: &str) -> Option<PublishPath> {
        self.lock().get(subject).map(|worker| {
            if worker.fast.load(Ordering::Acquire) {
                PublishPath::FastIngest
            } else {
                PublishPath::PerMessage
            }
        })
    }

    /// How many subjects have a worker running.
    pub(super) fn active_subjects(&self) -> usize {
        self.lock().len()
    }

    /// Messages accepted and not settled yet.
    pub(super) fn queued(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, RunningWorker>> {
        // Only inserts and removes happen under this lock; a panic cannot tear the map.
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Host for Pipeline {
    fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.jetstream
    }

    fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn config(&self) -> &PublishConfig {
        &self.config
    }

    fn settle(&self, subject: &Subject, outcome: Outcome) -> impl Future<Output = ()> + Send {
        self.finish(subject, outcome)
    }

    fn confirmed(&self, count: usize) {
        self.settled(count);
    }

    fn retire(&self, subject: &str, id: u64) {
        self.forget_worker(subject, id);
    }
}

/// A subject's worker and the sender of its queue.
type WorkerQueue = (u64, mpsc::Sender<Outgoing>);

/// A message [`Pipeline::prepare`]d for its subject's queue.
pub(super) struct Prepared {
    /// The queue of the subject's worker, when one was running.
    running: Option<WorkerQueue>,
    message: Outgoing,
}

impl Prepared {
    /// A prepared message whose queue closed (its worker went idle): it goes to the next one.
    pub(super) fn requeued(message: Outgoing) -> Self {
        Self {
            running: None,
            message,
        }
    }
}

/// Why a [`Pipeline::try_enqueue`] did not enqueue.
pub(super) enum Enqueue {
    /// The subject's queue is full: wait for room on its sender, then send the message.
    Full(mpsc::Sender<Outgoing>, Outgoing),
    /// The pipeline refused the message.
    Failed(PublishError),
}
