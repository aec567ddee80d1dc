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
/// and closes it) and everything taken from it is settled.
pub(super) async fn run<H: Host>(
    host: Arc<H>,
    subject: Subject,
    id: u64,
    mut queue: mpsc::Receiver<Outgoing>,
    path: Arc<AtomicBool>,
) {
    let config = host.config();
    let window = config.window;
    let ack_timeout = host.jetstream().timeout();
    // Single publishes whose acks are outstanding.
    let mut in_flight = FuturesUnordered::new();
    // Messages to send before anything newer: what a batch did not confirm.
    let mut resend: VecDeque<Outgoing> = VecDeque::new();
    let mut batch: Option<Batch<Outgoing>> = None;
    let mut fast =
        config.fast_ingest && ServerInfo::from_client(host.client()).supports_fast_ingest();
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
                Some(next) if !next.is_call() => in_flight.is_empty(),
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
            idle_timer.aim(Some(Instant::now() + config.idle_timeout));
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
                host.settle(&subject, outcome).await;
            }
            progress = batch_progress(&mut batch), if batch.is_some() => {
                let Some(current) = batch.as_mut() else { continue };
                match progress {
                    Progress::Stored(count) => {
                        host.confirmed(current.take_stored(count).count());
                    }
                    Progress::Ended(count) => {
                        host.confirmed(current.take_stored(count).count());
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
                let alone = !fast || troubled || message.is_call();
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
                    let send = host.jetstream().send_publish(subject.clone(), message.to_publish());
                    tokio::pin!(send);
                    let sent = loop {
                        tokio::select! {
                            sent = &mut send => break sent,
                            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                                troubled &= outcome.0.is_err();
                                host.settle(&subject, outcome).await;
                            }
                        }
                    };
                    in_flight.push(Confirm::new(host.jetstream(), config, &subject, message, sent));
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
                        let flow = config.fast_ingest_flow;
                        match Batch::open(host.client(), &subject, message, flow, ack_timeout).await {
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
                host.retire(&subject, id);
            }
            else => break,
        }
    }
    tracing::debug!(target: "natty", %subject, "publish worker exited");
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
    if resend.front()?.is_call() {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::sync::{oneshot, Semaphore};

    use super::*;
    use crate::publish::queued::{MessageHeaders, Reply};

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
}
