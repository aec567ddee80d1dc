//! A subject's worker: the task that takes the subject's queue, writes its messages to the
//! connection in order (one by one, or as fast-ingest batches) and settles each of them.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::traits::TimeoutProvider;
use async_nats::Subject;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, Sleep};

use super::config::PublishConfig;
use super::confirm::{Confirm, Outcome};
use super::decide::{
    ready_for_batch, resend_first, run_goes_on, BatchView, Pass, Plan, Resend, Route, View,
};
use super::fast_ingest::{Batch, OpenError, Progress};
use super::queued::Outgoing;
use crate::server::ServerInfo;

/// What a worker needs of the pipeline that runs it. A trait, so that this module does not
/// import the pipeline back: the pipeline starts workers, a worker only reports to it.
pub(super) trait Host: Send + Sync + 'static {
    /// The JetStream context single publishes go through.
    fn jetstream(&self) -> &async_nats::jetstream::Context;
    /// The connection fast-ingest batches go through.
    fn client(&self) -> &async_nats::Client;
    /// The publish tuning.
    fn config(&self) -> &PublishConfig;
    /// Answer or report a single publish's outcome, then count it settled.
    fn settle(&self, subject: &Subject, outcome: Outcome) -> impl Future<Output = ()> + Send;
    /// Count `count` messages settled that a batch confirmed.
    fn confirmed(&self, count: usize);
    /// Stop handing new messages to worker `id` of `subject`: it exits idle.
    fn retire(&self, subject: &str, id: u64);
}

/// Publish what `queue` brings for `subject` until the queue closes (or the worker exits idle
/// and closes it) and everything taken from it is settled. What to do next is the [`Plan`]'s
/// to say; this loop only waits for what the pass asks and hands it to the [`Worker`].
pub(super) async fn run<H: Host>(
    host: Arc<H>,
    subject: Subject,
    id: u64,
    mut queue: mpsc::Receiver<Outgoing>,
    path: Arc<AtomicBool>,
) {
    let mut worker = Worker::new(&*host, &subject, &path);
    // When to ask a silent batch for news, to commit a lingering batch, to exit idle.
    let mut check_timer = Timer::new();
    let mut linger_timer = Timer::new();
    let mut idle_timer = Timer::new();
    // Messages [`next_message`] takes from the queue at once (kept for its capacity).
    let mut taken = Vec::new();
    loop {
        let pass = worker.pass(&queue);
        check_timer.aim(pass.check_at);
        linger_timer.aim(pass.commit_at);
        idle_timer.aim(pass.idle_at);
        let take = pass.take.unwrap_or(1);
        tokio::select! {
            Some(outcome) = worker.in_flight.next(), if !worker.in_flight.is_empty() => {
                worker.settle(outcome).await;
            }
            progress = batch_progress(&mut worker.batch), if worker.batch.is_some() => {
                worker.progressed(progress);
            }
            () = check_timer.fire(), if pass.check_at.is_some() => worker.check_batch().await,
            () = linger_timer.fire(), if pass.commit_at.is_some() => worker.commit_lingering().await,
            next = next_message(&mut worker.resend, &mut queue, &mut taken, take), if pass.take.is_some() => {
                match next {
                    Some(message) => worker.send(message).await,
                    None => worker.queue_closed().await,
                }
            }
            () = idle_timer.fire(), if pass.idle_at.is_some() => {
                // Refuse new sends, then drain what was queued before the refusal.
                worker.plan.idle_passed();
                queue.close();
                host.retire(&subject, id);
            }
            else => break,
        }
    }
    tracing::debug!(target: "natty", %subject, "publish worker exited");
}

/// A subject's worker between two passes: its [`Plan`], the single publishes it waits for,
/// its open batch and what waits to be resent; its methods do what the plan decided.
struct Worker<'a, H> {
    host: &'a H,
    config: &'a PublishConfig,
    subject: &'a Subject,
    /// Whether the worker publishes through fast-ingest batches right now, for
    /// [`Publisher::path`](crate::Publisher::path).
    path: &'a AtomicBool,
    ack_timeout: Duration,
    plan: Plan,
    /// Single publishes whose acks are outstanding.
    in_flight: FuturesUnordered<Confirm<'a>>,
    /// Messages to send before anything newer: what a batch did not confirm.
    resend: VecDeque<Outgoing>,
    batch: Option<Batch<Outgoing>>,
}

impl<'a, H: Host> Worker<'a, H> {
    fn new(host: &'a H, subject: &'a Subject, path: &'a AtomicBool) -> Self {
        let config = host.config();
        let fast = config.fast_ingest && ServerInfo::of(host.client()).supports_fast_ingest();
        let plan = Plan::new(fast, config.window, config.idle_timeout);
        path.store(plan.fast(), Ordering::Release);
        Self {
            host,
            config,
            subject,
            path,
            ack_timeout: host.jetstream().timeout(),
            plan,
            in_flight: FuturesUnordered::new(),
            resend: VecDeque::new(),
            batch: None,
        }
    }

    /// What to wait for on this pass, as the plan sees the worker now.
    fn pass(&mut self, queue: &mpsc::Receiver<Outgoing>) -> Pass {
        let view = View {
            in_flight: self.in_flight.len(),
            batch: self.batch.as_ref().map(|batch| BatchView {
                room: batch.room(),
                unconfirmed: batch.has_unconfirmed(),
                committed: batch.is_committed(),
                next_check: batch.next_check(self.ack_timeout),
            }),
            resend: Resend::first(&self.resend),
        };
        self.plan.pass(&view, || queue.is_empty(), Instant::now)
    }

    /// A single publish settled.
    async fn settle(&mut self, outcome: Outcome) {
        self.plan.single_settled(outcome.0.is_ok());
        self.host.settle(self.subject, outcome).await;
    }

    /// The server said something about the open batch.
    fn progressed(&mut self, progress: Progress) {
        let Some(current) = self.batch.as_mut() else {
            return;
        };
        match progress {
            Progress::Stored(count) => self.host.confirmed(current.take_stored(count).count()),
            Progress::Ended(count) => {
                self.host.confirmed(current.take_stored(count).count());
                if let Some(ended) = self.batch.take() {
                    let confirmed_any = ended.confirmed_any();
                    let unconfirmed = ended.into_unconfirmed();
                    self.plan
                        .batch_ended(confirmed_any, !unconfirmed.is_empty());
                    resend_first(&mut self.resend, unconfirmed);
                }
            }
            Progress::Nothing => {}
        }
    }

    /// The batch's check is due: ask it for news, or give it up when it stayed silent.
    async fn check_batch(&mut self) {
        let alive = match self.batch.as_mut() {
            Some(current) => current.keep_alive(self.ack_timeout).await,
            None => true,
        };
        if !alive {
            tracing::debug!(target: "natty", subject = %self.subject, "fast-ingest batch went silent; resending what it did not confirm");
            if let Some(lost) = self.batch.take() {
                self.plan.batch_went_silent(lost.confirmed_any());
                resend_first(&mut self.resend, lost.into_unconfirmed());
            }
        }
    }

    /// The queue stayed empty: end the batch, so the server confirms its tail (flow acks
    /// only cover whole flows).
    async fn commit_lingering(&mut self) {
        self.commit().await;
        self.plan.lingered();
    }

    /// The queue is closed and drained: end the batch, so it confirms everything.
    async fn queue_closed(&mut self) {
        self.plan.queue_closed();
        self.commit().await;
    }

    async fn commit(&mut self) {
        if let Some(current) = self.batch.as_mut() {
            current.commit().await;
        }
    }

    /// Send `message` the way the plan routes it.
    async fn send(&mut self, message: Outgoing) {
        let route = self.plan.route(
            message.is_call(),
            self.batch.is_some(),
            self.in_flight.len(),
        );
        match route {
            Route::EndBatch => {
                self.commit().await;
                self.resend.push_front(message);
            }
            Route::AfterSingles => self.resend.push_front(message),
            Route::Alone => self.send_alone(message).await,
            Route::IntoBatch => self.send_run(message).await,
            Route::OpenBatch => self.open_batch(message).await,
        }
    }

    /// Write `message` alone, and wait for its ack among the others in flight. Written one at
    /// a time, in queue order, so the stream stores the subject's messages in publish order;
    /// earlier acks are still collected meanwhile, since the write may wait for async-nats'
    /// ack permits.
    async fn send_alone(&mut self, message: Outgoing) {
        let jetstream = self.host.jetstream();
        let send = jetstream.send_publish(self.subject.clone(), message.to_publish());
        tokio::pin!(send);
        let sent = loop {
            tokio::select! {
                sent = &mut send => break sent,
                Some(outcome) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.settle(outcome).await;
                }
            }
        };
        let confirm = Confirm::new(jetstream, self.config, self.subject, message, sent);
        self.in_flight.push(confirm);
    }

    /// Write `message` into the open batch, and what is queued already after it while the
    /// batch has room: one pass of the loop per run of messages, not per message, in the same
    /// order and window as one pass each.
    async fn send_run(&mut self, message: Outgoing) {
        let Some(current) = self.batch.as_mut() else {
            return;
        };
        let mut next = Some(message);
        let mut sent = 0;
        while let Some(message) = next.take() {
            if let Err(unsent) = current.send(message).await {
                let mut lost = self
                    .batch
                    .take()
                    .map(Batch::into_unconfirmed)
                    .unwrap_or_default();
                lost.push_back(unsent);
                resend_first(&mut self.resend, lost);
                self.plan.batch_failed();
                return;
            }
            sent += 1;
            if run_goes_on(sent, current.has_room()) {
                next = ready_for_batch(&mut self.resend);
            }
        }
    }

    /// Open a batch with `first`; when none opens, `first` waits to go another way.
    async fn open_batch(&mut self, first: Outgoing) {
        let (client, flow) = (self.host.client(), self.config.fast_ingest_flow);
        match Batch::open(client, self.subject, first, flow, self.ack_timeout).await {
            Ok(opened) => self.batch = Some(opened),
            Err(OpenError::Disabled(first)) => {
                self.plan.batching_disabled();
                self.path.store(self.plan.fast(), Ordering::Release);
                tracing::debug!(target: "natty", subject = %self.subject, "stream does not allow batched publishing; publishing message by message");
                self.resend.push_front(first);
            }
            Err(OpenError::Failed(first)) => {
                self.plan.batch_failed();
                self.resend.push_front(first);
            }
        }
    }
}

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

/// The open batch's next progress; pending forever without one.
async fn batch_progress(batch: &mut Option<Batch<Outgoing>>) -> Progress {
    match batch {
        Some(batch) => batch.progress().await,
        None => std::future::pending().await,
    }
}
