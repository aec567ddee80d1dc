//! What a subject's worker does next, apart from the I/O that does it: which message it takes
//! and how it sends it, when a batch closes, when a failed attempt is retried, what becomes
//! of an outcome, and when the worker goes idle. Pure functions and one small state machine
//! ([`Plan`]), tested without a server; the worker's `select!` only carries them out.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::{
    PublishError as NatsPublishError, PublishErrorKind as NatsPublishErrorKind,
};
use tokio::time::Instant;

use super::config::PublishConfig;
use super::message::{PublishAck, PublishError};
use super::queued::{Outgoing, Reply};
use crate::error::{Error, PublishErrorKind};

/// How long a batch waits with an empty queue before it commits, so the server confirms its
/// tail: long enough that a steady producer keeps one batch open, short next to an ack.
pub(super) const BATCH_LINGER: Duration = Duration::from_millis(1);

/// Messages a worker sends into an open batch in one pass before it looks at the server's
/// replies again.
pub(super) const SEND_RUN: usize = 64;

/// What a worker sees of its open fast-ingest batch on one pass.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchView {
    /// How many more messages it may be sent now.
    pub(super) room: usize,
    /// Whether messages sent to it wait for confirmation.
    pub(super) unconfirmed: bool,
    /// Whether its end-of-batch commit was sent.
    pub(super) committed: bool,
    /// When to ask it for news if the server stays silent.
    pub(super) next_check: Instant,
}

/// The first of the messages waiting to be resent, before anything newer from the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resend {
    /// Nothing waits.
    Empty,
    /// A plain message.
    Message,
    /// A [`Publisher`](crate::Publisher) call, which waits for its own ack.
    Call,
}

impl Resend {
    /// What waits first in `resend`.
    pub(super) fn first(resend: &VecDeque<Outgoing>) -> Self {
        match resend.front() {
            None => Self::Empty,
            Some(message) if message.is_call() => Self::Call,
            Some(_) => Self::Message,
        }
    }
}

/// What a worker sees of its work on one pass.
#[derive(Clone, Copy, Debug)]
pub(super) struct View {
    /// Single publishes whose acks are outstanding.
    pub(super) in_flight: usize,
    /// The open batch, if one is.
    pub(super) batch: Option<BatchView>,
    /// What waits to be resent first.
    pub(super) resend: Resend,
}

/// What a worker waits for on one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pass {
    /// Take the next message, with up to this many from the queue at once; `None` takes none.
    pub(super) take: Option<usize>,
    /// When to ask the silent batch for news.
    pub(super) check_at: Option<Instant>,
    /// When to commit the batch, the queue having stayed empty since [`BATCH_LINGER`] before.
    pub(super) commit_at: Option<Instant>,
    /// When to exit idle.
    pub(super) idle_at: Option<Instant>,
}

/// How a taken message goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// End the open batch first and put the message back first: it goes alone on a later
    /// pass, after the batch, so the subject's order holds.
    EndBatch,
    /// Alone: one publish with its own ack and retries, in the window.
    Alone,
    /// Into the open batch, with what follows it while the batch has room.
    IntoBatch,
    /// Back first, until the single publishes out now are settled: it then opens a batch,
    /// so the subject's order holds across the two paths.
    AfterSingles,
    /// Open a batch with it.
    OpenBatch,
}

/// A worker's course: which path it takes, whether it is in trouble, when its queue lingers
/// or idles. The worker tells it what happened and asks it what to do next.
#[derive(Debug)]
pub(super) struct Plan {
    window: usize,
    idle_timeout: Duration,
    /// Whether the worker publishes through fast-ingest batches.
    fast: bool,
    /// Set when a batch could not be opened, or ended without confirming anything (an
    /// outage): single publishes, with their window and retries, until one is confirmed.
    troubled: bool,
    /// Whether the queue may still bring messages.
    open: bool,
    /// Since when the queue has been empty while a batch holds unconfirmed messages.
    quiet_since: Option<Instant>,
    /// When the worker exits idle, while it has nothing to do.
    idle_at: Option<Instant>,
}

impl Plan {
    /// The course of a new worker: fast-ingest batches when `fast` (the server has them and
    /// the config allows them), at most `window` single publishes out at once, exiting after
    /// `idle_timeout` without work.
    pub(super) fn new(fast: bool, window: usize, idle_timeout: Duration) -> Self {
        Self {
            window,
            idle_timeout,
            fast,
            troubled: false,
            open: true,
            quiet_since: None,
            idle_at: None,
        }
    }

    /// Whether the worker publishes through fast-ingest batches.
    pub(super) fn fast(&self) -> bool {
        self.fast
    }

    /// What to wait for on this pass. `queue_is_empty` and `now` are asked only when the
    /// answer depends on them (a lingering batch, a deadline being set), so a busy pass reads
    /// neither.
    pub(super) fn pass(
        &mut self,
        view: &View,
        queue_is_empty: impl FnOnce() -> bool,
        now: impl Fn() -> Instant,
    ) -> Pass {
        let room = match view.batch {
            // What a batch left over goes into the next batch, in order, like new messages.
            Some(batch) => batch.room > 0,
            None if self.fast && !self.troubled => match view.resend {
                // A new batch starts only once every single publish before it is settled.
                Resend::Message => view.in_flight == 0,
                // `Publisher` calls go alone, in a window, like the per-message path.
                Resend::Empty | Resend::Call => view.in_flight < self.window,
            },
            None => view.in_flight < self.window,
        };
        let lingering = view
            .batch
            .is_some_and(|batch| batch.unconfirmed && !batch.committed)
            && queue_is_empty();
        if !lingering {
            self.quiet_since = None;
        } else if self.quiet_since.is_none() {
            self.quiet_since = Some(now());
        }
        let idle = self.open
            && view.in_flight == 0
            && view.batch.is_none()
            && view.resend == Resend::Empty;
        if !idle {
            self.idle_at = None;
        } else if self.idle_at.is_none() {
            self.idle_at = Some(now() + self.idle_timeout);
        }
        let taking = room && (self.open || view.resend != Resend::Empty);
        Pass {
            // An open batch takes a run of queued messages that it has room for; anything
            // else, one at a time.
            take: taking.then(|| view.batch.map_or(1, |batch| batch.room.clamp(1, SEND_RUN))),
            check_at: view.batch.map(|batch| batch.next_check),
            commit_at: self.quiet_since.map(|since| since + BATCH_LINGER),
            idle_at: self.idle_at,
        }
    }

    /// How the message just taken goes out; `batch` says whether one is open, `in_flight`
    /// how many single publishes are out.
    pub(super) fn route(&self, is_call: bool, batch: bool, in_flight: usize) -> Route {
        // A `Publisher` call waits for its own ack (sequence, duplicate), which a flow ack
        // does not give: it goes alone.
        let alone = !self.fast || self.troubled || is_call;
        match (alone, batch) {
            (true, true) => Route::EndBatch,
            (true, false) => Route::Alone,
            (false, true) => Route::IntoBatch,
            (false, false) if in_flight > 0 => Route::AfterSingles,
            (false, false) => Route::OpenBatch,
        }
    }

    /// A single publish settled: a confirmed one ends the trouble.
    pub(super) fn single_settled(&mut self, confirmed: bool) {
        self.troubled &= !confirmed;
    }

    /// The batch ended; `left_over` says whether it left messages unconfirmed. A batch that
    /// met a gap or a restart after confirming some passes its rest to the next batch; one
    /// that confirmed nothing at all means an outage: single publishes until one gets through.
    pub(super) fn batch_ended(&mut self, confirmed_any: bool, left_over: bool) {
        self.troubled |= left_over && !confirmed_any;
    }

    /// The batch stayed silent past the ack timeout and was given up.
    pub(super) fn batch_went_silent(&mut self, confirmed_any: bool) {
        self.troubled |= !confirmed_any;
    }

    /// A message could not be written into the batch (the connection is down), or a batch
    /// could not be opened.
    pub(super) fn batch_failed(&mut self) {
        self.troubled = true;
    }

    /// The stream does not allow batches: single publishes for as long as the worker lives.
    pub(super) fn batching_disabled(&mut self) {
        self.fast = false;
    }

    /// The lingering batch was committed.
    pub(super) fn lingered(&mut self) {
        self.quiet_since = None;
    }

    /// The queue is closed and empty: only what waits to be resent is still taken.
    pub(super) fn queue_closed(&mut self) {
        self.open = false;
    }

    /// The idle deadline passed (the worker closes its queue and drains it).
    pub(super) fn idle_passed(&mut self) {
        self.idle_at = None;
    }
}

/// Whether a run into a batch goes on after `sent` messages, the batch having room or not.
pub(super) fn run_goes_on(sent: usize, batch_has_room: bool) -> bool {
    sent < SEND_RUN && batch_has_room
}

/// Put what a batch did not confirm before the rest of `resend`: a batch sends from the front
/// of `resend`, so whatever is still there is newer than everything the batch was sent.
pub(super) fn resend_first(resend: &mut VecDeque<Outgoing>, mut unconfirmed: VecDeque<Outgoing>) {
    unconfirmed.append(resend);
    *resend = unconfirmed;
}

/// The next message of `resend` if it may go into the open batch (a
/// [`Publisher`](crate::Publisher) call goes alone, so it stays first for the next pass).
pub(super) fn ready_for_batch(resend: &mut VecDeque<Outgoing>) -> Option<Outgoing> {
    if resend.front()?.is_call() {
        return None;
    }
    resend.pop_front()
}

/// `Ok(err)` when the attempt that failed with `err` (number `attempt`) is worth another;
/// otherwise the publish's error.
pub(super) fn another_attempt(
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

/// Give a settled message's outcome to the [`Publisher`](crate::Publisher) call that waits
/// for it (`to_ack` makes the call's ack). What no caller takes comes back, to be reported:
/// the failure of a plain publish, or of a call whose caller stopped waiting (a timeout).
pub(super) fn answer<A>(
    result: Result<A, PublishError>,
    reply: Option<Reply>,
    to_ack: impl FnOnce(A) -> PublishAck,
) -> Result<(), PublishError> {
    match reply {
        Some(reply) => match result {
            Ok(ack) => {
                let _ = reply.sender.send(Ok(to_ack(ack)));
                Ok(())
            }
            Err(error) => match reply.sender.send(Err(error)) {
                Ok(()) => Ok(()),
                Err(unheard) => unheard.map(drop),
            },
        },
        None => result.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::sync::{oneshot, Semaphore};

    use super::*;
    use crate::publish::queued::MessageHeaders;

    const WINDOW: usize = 4;
    const IDLE: Duration = Duration::from_secs(30);

    fn call() -> (Reply, oneshot::Receiver<Result<PublishAck, PublishError>>) {
        let (sender, answer) = oneshot::channel();
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let reply = Reply {
            sender,
            _slot: slot,
        };
        (reply, answer)
    }

    fn queued(payload: &'static str, is_call: bool) -> Outgoing {
        Outgoing {
            headers: MessageHeaders::Id(nuid::next()),
            payload: Bytes::from_static(payload.as_bytes()),
            reply: is_call.then(|| call().0),
        }
    }

    fn payloads(resend: &VecDeque<Outgoing>) -> Vec<&[u8]> {
        resend.iter().map(|m| m.payload.as_ref()).collect()
    }

    fn view(in_flight: usize, batch: Option<BatchView>, resend: Resend) -> View {
        View {
            in_flight,
            batch,
            resend,
        }
    }

    fn batch(room: usize, unconfirmed: bool, committed: bool, next_check: Instant) -> BatchView {
        BatchView {
            room,
            unconfirmed,
            committed,
            next_check,
        }
    }

    fn no_clock() -> Instant {
        panic!("this pass needs no clock")
    }

    fn failed(kind: NatsPublishErrorKind) -> NatsPublishError {
        NatsPublishError::new(kind)
    }

    #[test]
    fn a_new_worker_on_a_fast_ingest_server_opens_a_batch_with_its_first_message() {
        let t0 = Instant::now();
        let mut plan = Plan::new(true, WINDOW, IDLE);
        let pass = plan.pass(&view(0, None, Resend::Empty), || true, || t0);
        assert_eq!(pass.take, Some(1));
        assert_eq!(plan.route(false, false, 0), Route::OpenBatch);
    }

    #[test]
    fn without_fast_ingest_messages_go_alone_in_a_window() {
        let mut plan = Plan::new(false, WINDOW, IDLE);
        assert_eq!(plan.route(false, false, 0), Route::Alone);
        let busy = plan.pass(&view(WINDOW - 1, None, Resend::Empty), || true, no_clock);
        assert_eq!(busy.take, Some(1), "room in the window");
        let full = plan.pass(&view(WINDOW, None, Resend::Empty), || true, no_clock);
        assert_eq!(full.take, None, "the window is full: wait for an ack");
    }

    #[test]
    fn a_stream_without_batches_turns_the_worker_to_single_publishes_for_good() {
        let mut plan = Plan::new(true, WINDOW, IDLE);
        plan.batching_disabled();
        assert!(!plan.fast());
        plan.single_settled(true);
        assert_eq!(plan.route(false, false, 0), Route::Alone);
    }

    #[test]
    fn a_publisher_call_ends_the_open_batch_and_goes_alone() {
        let plan = Plan::new(true, WINDOW, IDLE);
        assert_eq!(plan.route(true, true, 0), Route::EndBatch);
        assert_eq!(plan.route(true, false, 0), Route::Alone);
    }

    #[test]
    fn a_batch_opens_only_once_the_single_publishes_before_it_are_settled() {
        let mut plan = Plan::new(true, WINDOW, IDLE);
        let waiting = plan.pass(&view(1, None, Resend::Message), || true, no_clock);
        assert_eq!(waiting.take, None);
        assert_eq!(plan.route(false, false, 1), Route::AfterSingles);
        let settled = plan.pass(&view(0, None, Resend::Message), || true, no_clock);
        assert_eq!(settled.take, Some(1));
        let call = plan.pass(&view(1, None, Resend::Call), || true, no_clock);
        assert_eq!(call.take, Some(1), "a call goes alone, in the window");
    }

    #[test]
    fn an_open_batch_takes_a_run_it_has_room_for() {
        let t0 = Instant::now();
        let mut plan = Plan::new(true, WINDOW, IDLE);
        for (room, take) in [(1000, Some(SEND_RUN)), (10, Some(10)), (0, None)] {
            let open = Some(batch(room, true, false, t0));
            let pass = plan.pass(&view(0, open, Resend::Empty), || false, no_clock);
            assert_eq!(pass.take, take, "room {room}");
            assert_eq!(
                pass.check_at,
                Some(t0),
                "a batch is checked on while it is open"
            );
        }
        assert_eq!(plan.route(false, true, 0), Route::IntoBatch);
        assert!(run_goes_on(SEND_RUN - 1, true));
        assert!(
            !run_goes_on(SEND_RUN, true),
            "a run ends after SEND_RUN messages"
        );
        assert!(!run_goes_on(1, false), "or when the batch has no more room");
    }

    #[test]
    fn a_batch_that_confirmed_nothing_sends_alone_until_a_single_publish_is_confirmed() {
        let mut plan = Plan::new(true, WINDOW, IDLE);
        plan.batch_ended(true, true);
        assert_eq!(
            plan.route(false, false, 0),
            Route::OpenBatch,
            "a batch that made progress hands its rest to the next batch"
        );
        plan.batch_ended(false, false);
        assert_eq!(
            plan.route(false, false, 0),
            Route::OpenBatch,
            "nothing was lost"
        );
        plan.batch_ended(false, true);
        assert_eq!(plan.route(false, false, 0), Route::Alone);
        let troubled = plan.pass(&view(1, None, Resend::Message), || true, no_clock);
        assert_eq!(troubled.take, Some(1), "alone, in the window");
        plan.single_settled(false);
        assert_eq!(plan.route(false, false, 0), Route::Alone);
        plan.single_settled(true);
        assert_eq!(plan.route(false, false, 0), Route::OpenBatch);
    }

    #[test]
    fn a_silent_or_failed_batch_without_progress_is_trouble() {
        let mut plan = Plan::new(true, WINDOW, IDLE);
        plan.batch_went_silent(true);
        assert_eq!(plan.route(false, false, 0), Route::OpenBatch);
        plan.batch_went_silent(false);
        assert_eq!(plan.route(false, false, 0), Route::Alone);
        let mut plan = Plan::new(true, WINDOW, IDLE);
        plan.batch_failed();
        assert_eq!(plan.route(false, false, 0), Route::Alone);
    }

    #[test]
    fn a_batch_commits_once_the_queue_stayed_empty_for_the_linger() {
        let t0 = Instant::now();
        let mut plan = Plan::new(true, WINDOW, IDLE);
        let open = Some(batch(10, true, false, t0 + IDLE));
        let quiet = plan.pass(&view(0, open, Resend::Empty), || true, || t0);
        assert_eq!(quiet.commit_at, Some(t0 + BATCH_LINGER));
        let later = plan.pass(&view(0, open, Resend::Empty), || true, || t0 + IDLE);
        assert_eq!(
            later.commit_at,
            Some(t0 + BATCH_LINGER),
            "quiet since the first empty pass"
        );
        let busy = plan.pass(&view(0, open, Resend::Empty), || false, no_clock);
        assert_eq!(busy.commit_at, None, "a message came: keep the batch open");
        let quiet = plan.pass(&view(0, open, Resend::Empty), || true, || t0 + IDLE);
        assert_eq!(quiet.commit_at, Some(t0 + IDLE + BATCH_LINGER));
        plan.lingered();
        let committed = Some(batch(0, true, true, t0 + IDLE));
        let done = plan.pass(&view(0, committed, Resend::Empty), || true, no_clock);
        assert_eq!(done.commit_at, None, "a committed batch waits for its end");
        let confirmed = Some(batch(10, false, false, t0 + IDLE));
        let empty = plan.pass(&view(0, confirmed, Resend::Empty), || true, no_clock);
        assert_eq!(
            empty.commit_at, None,
            "nothing to confirm: nothing to commit"
        );
    }

    #[test]
    fn a_worker_without_work_exits_after_its_idle_timeout_and_drains_what_is_left() {
        let t0 = Instant::now();
        let mut plan = Plan::new(true, WINDOW, IDLE);
        let idle = plan.pass(&view(0, None, Resend::Empty), || true, || t0);
        assert_eq!(idle.idle_at, Some(t0 + IDLE));
        let still = plan.pass(&view(0, None, Resend::Empty), || true, || t0 + IDLE);
        assert_eq!(still.idle_at, Some(t0 + IDLE), "the deadline does not move");
        for busy in [
            view(1, None, Resend::Empty),
            view(0, None, Resend::Message),
            view(0, Some(batch(1, false, false, t0)), Resend::Empty),
        ] {
            let pass = plan.pass(&busy, || false, no_clock);
            assert_eq!(pass.idle_at, None, "{busy:?} is work");
        }
        let again = plan.pass(&view(0, None, Resend::Empty), || true, || t0 + IDLE);
        assert_eq!(again.idle_at, Some(t0 + IDLE + IDLE), "idle again from now");
        plan.idle_passed();
        plan.queue_closed();
        let closed = plan.pass(&view(0, None, Resend::Empty), || true, no_clock);
        assert_eq!(
            closed,
            Pass {
                take: None,
                check_at: None,
                commit_at: None,
                idle_at: None
            },
            "a closed, drained worker waits for nothing and exits"
        );
        let leftover = plan.pass(&view(0, None, Resend::Message), || true, no_clock);
        assert_eq!(leftover.take, Some(1), "what waits to be resent still goes");
    }

    #[test]
    fn what_a_batch_did_not_confirm_goes_before_what_it_was_not_sent() {
        let mut resend: VecDeque<_> = [queued("3", false), queued("4", false)].into();
        resend_first(&mut resend, [queued("1", false), queued("2", false)].into());
        assert_eq!(payloads(&resend), [b"1", b"2", b"3", b"4"]);
        assert_eq!(Resend::first(&resend), Resend::Message);
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
        assert_eq!(Resend::first(&resend), Resend::Call);
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

    fn ack(sequence: u64) -> PublishAck {
        PublishAck::new("S", sequence, false)
    }

    fn timed_out() -> PublishError {
        Error::new(PublishErrorKind::TimedOut)
    }

    #[test]
    fn a_waiting_caller_takes_its_outcome_and_nothing_is_reported() {
        let (reply, mut answered) = call();
        assert!(answer(Ok(7), Some(reply), ack).is_ok());
        assert_eq!(answered.try_recv().unwrap().unwrap().sequence, 7);
        let (reply, mut answered) = call();
        assert!(answer::<u64>(Err(timed_out()), Some(reply), ack).is_ok());
        let failure = answered.try_recv().unwrap().unwrap_err();
        assert_eq!(failure.kind(), PublishErrorKind::TimedOut);
    }

    #[test]
    fn a_failure_nobody_waits_for_is_reported() {
        let plain = answer::<u64>(Err(timed_out()), None, ack).unwrap_err();
        assert_eq!(plain.kind(), PublishErrorKind::TimedOut);
        let (reply, answered) = call();
        drop(answered);
        let left = answer::<u64>(Err(timed_out()), Some(reply), ack).unwrap_err();
        assert_eq!(
            left.kind(),
            PublishErrorKind::TimedOut,
            "the caller stopped waiting"
        );
        let (reply, answered) = call();
        drop(answered);
        assert!(
            answer(Ok(1), Some(reply), ack).is_ok(),
            "an ack needs no report"
        );
        assert!(answer(Ok(1), None, ack).is_ok());
    }
}
