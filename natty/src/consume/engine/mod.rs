//! The per-message rules every way of consuming shares: [`Natty::serve`](crate::Natty::serve),
//! [`Natty::consume`](crate::Natty::consume), the [`Consumer`](crate::Consumer) handle and the
//! members of static and elastic groups all hand their messages to one [`Engine`].
//!
//! The engine owns the service and the calls under way. It asks for readiness while it keeps
//! polling the calls (a concurrency limit inside the stack frees up only when they finish),
//! catches a panic wherever it is thrown (in `call` itself or in the returned future), settles
//! every message exactly once (left unsettled: `Ok` acks, `Err` or a panic naks), reports each
//! failure (logged once per delivery by [`log_failure`]'s rule, and sent to the report channel),
//! and counts what happened. A call dropped before it ended (shutdown past its grace, or the
//! whole run's future dropped) naks its message, unless it was given an [`Expiry`] and ran out
//! of time: then its message is left to the server's ack wait, because the server may have
//! handed it to another instance already.
//!
//! Calls are polled inside the driver's task (a `FuturesUnordered`), not spawned: a message
//! costs one queue node, and nothing of it is copied but a few reference counts for its report
//! ([`Origin`]).
//! tower's `Buffer` and `futures`' `buffer_unordered` work the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tower::Service;

use super::{
    log_failure, report_failure, CatchUnwind, ConsumeError, HandlerFailure, Origin, PanicMessage,
};
use crate::error::{BoxError, ConsumeErrorKind, Error};
use crate::message::{Acker, Message, Settlement};
use crate::report::ReportSender;

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It returned `Ok`.
    Handled,
    /// It returned `Err`.
    Failed,
    /// It panicked, in `call` or in its future.
    Panicked,
    /// Its [`Expiry`] ran out before it finished; its message was left unsettled.
    Expired,
}

/// What the engine did, counted once for every way of consuming.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) handled: u64,
    pub(crate) failed: u64,
    pub(crate) panicked: u64,
    /// Calls dropped unfinished: expired, or at the end of the shutdown grace.
    pub(crate) cancelled: u64,
    pub(crate) dropped_reports: u64,
}

/// Whether a stall or a lost pin makes a call's message another instance's: checked before
/// every poll of a call with an [`Expiry`].
pub(crate) trait Steady: Send + Sync {
    /// No stall since `epoch`, and none under way.
    fn steady_since(&self, epoch: u64) -> bool;
}

/// A call that must not be polled past a deadline or after a stall (a group member's handler
/// budget): it then ends as [`Outcome::Expired`] and its message is left unsettled. The check
/// runs whenever the call is polled (woken, or at the deadline): a call waiting on something
/// notices a stall only then, and nothing of it runs after the stall. A panic thrown by `call`
/// itself is reported whatever the expiry says.
pub(crate) struct Expiry {
    // Boxed so a call without an expiry (every `serve` call) pays nothing for it.
    timer: Pin<Box<tokio::time::Sleep>>,
    steady: Arc<dyn Steady>,
    epoch: u64,
}

impl Expiry {
    pub(crate) fn new(deadline: tokio::time::Instant, steady: Arc<dyn Steady>, epoch: u64) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            steady,
            epoch,
        }
    }

    /// Whether the call may no longer be polled; registers the deadline's wake-up otherwise.
    fn is_over(&mut self, cx: &mut Context<'_>) -> bool {
        !self.steady.steady_since(self.epoch) || self.timer.as_mut().poll(cx).is_ready()
    }
}

/// Naks its message when dropped still holding it: a call cancelled at the end of the grace,
/// or dropped with the whole run.
struct NakOnDrop(Option<Acker>);

impl Drop for NakOnDrop {
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

pin_project_lite::pin_project! {
    /// One message's call, its panics caught, and what settling it needs.
    struct Call<F, T> {
        #[pin]
        call: CatchUnwind<F>,
        guard: NakOnDrop,
        origin: Option<Origin>,
        tag: Option<T>,
        expiry: Option<Expiry>,
    }
}

/// A call that ended, to be settled by [`Engine::settle`].
pub(crate) struct Done<T> {
    tag: T,
    acker: Acker,
    origin: Origin,
    ended: Ended,
}

enum Ended {
    Returned(Result<(), BoxError>),
    Panicked(PanicMessage),
    Expired,
}

impl<F, R, E, T> Future for Call<F, T>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Done<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done<T>> {
        let this = self.project();
        // A panic `call` threw is reported whatever the expiry says: `call` has run.
        let ended = if !this.call.has_panicked()
            && this.expiry.as_mut().is_some_and(|e| e.is_over(cx))
        {
            Ended::Expired
        } else {
            match this.call.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(result)) => Ended::Returned(result.map(drop).map_err(Into::into)),
                Poll::Ready(Err(panic)) => Ended::Panicked(panic),
            }
        };
        let (Some(acker), Some(origin), Some(tag)) =
            (this.guard.0.take(), this.origin.take(), this.tag.take())
        else {
            // FuturesUnordered never polls a finished future again.
            return Poll::Pending;
        };
        Poll::Ready(Done {
            tag,
            acker,
            origin,
            ended,
        })
    }
}

/// What [`Engine::next_event`] brings.
pub(crate) enum Event<T> {
    /// A call ended; settle it with [`Engine::settle`].
    Done(Done<T>),
    /// The service is ready for one call.
    Ready,
    /// The service's `poll_ready` failed: it takes no more calls.
    NotReady(BoxError),
}

/// A settled call, for the driver's own bookkeeping (a group lane's fence).
pub(crate) struct Finished<T> {
    pub(crate) tag: T,
    pub(crate) outcome: Outcome,
    acker: Acker,
}

impl<T> Finished<T> {
    /// How the message was settled in the end, by the handler, a layer or the engine (read
    /// only by drivers that need it: a group lane's fence).
    pub(crate) fn settlement(&self) -> Option<Settlement> {
        self.acker.final_settlement()
    }
}

/// The service, its calls under way, and the rules they end by; see the [module docs](self).
pub(crate) struct Engine<S, T>
where
    S: Service<Message>,
{
    service: S,
    calls: FuturesUnordered<Call<S::Future, T>>,
    /// `poll_ready` said yes and no call has used it yet.
    ready: bool,
    failures: Option<ReportSender<HandlerFailure>>,
    tally: Tally,
}

impl<S, T> Engine<S, T>
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
{
    pub(crate) fn new(service: S, failures: Option<ReportSender<HandlerFailure>>) -> Self {
        Self {
            service,
            calls: FuturesUnordered::new(),
            ready: false,
            failures,
            tally: Tally::default(),
        }
    }

    /// Calls under way.
    pub(crate) fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// What happened so far.
    pub(crate) fn tally(&self) -> Tally {
        self.tally
    }

    /// The next call to end or, when `want_ready`, the service becoming ready, whichever comes
    /// first; never resolves when there is neither.
    pub(crate) fn next_event(&mut self, want_ready: bool) -> NextEvent<'_, S, T> {
        NextEvent {
            engine: self,
            want_ready,
        }
    }

    /// A call that has ended already, if any (for settling several in one turn of a driver,
    /// which polls [`Engine::next_event`] again before it waits).
    pub(crate) fn try_done(&mut self) -> Option<Done<T>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.calls.poll_next_unpin(&mut cx) {
            Poll::Ready(done) => done,
            Poll::Pending => None,
        }
    }

    /// Whether the service is ready for a call now, without waiting (for a driver that has
    /// several messages to start in a row).
    pub(crate) fn ready_now(&mut self) -> Result<bool, BoxError> {
        if self.ready {
            return Ok(true);
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                self.ready = true;
                Ok(true)
            }
            Poll::Ready(Err(err)) => Err(err.into()),
            Poll::Pending => Ok(false),
        }
    }

    /// Start the call for `message`; the service must have been ready (an [`Event::Ready`] or
    /// [`Engine::ready_now`] since the last start).
    pub(crate) fn start(&mut self, message: Message, tag: T, expiry: Option<Expiry>) {
        debug_assert!(self.ready, "a call starts only after poll_ready said yes");
        self.ready = false;
        let guard = NakOnDrop(Some(message.acker().clone()));
        let origin = Origin::of(&message);
        let call = CatchUnwind::call(|| self.service.call(message));
        self.calls.push(Call {
            call,
            guard,
            origin: Some(origin),
            tag: Some(tag),
            expiry,
        });
    }

    /// Settle an ended call (what the handler left unsettled: acked after `Ok`, nak'd after
    /// `Err` or a panic; an expired one is left alone), count it and report a failure.
    pub(crate) async fn settle(&mut self, done: Done<T>) -> Finished<T> {
        let Done {
            tag,
            acker,
            origin,
            ended,
        } = done;
        let (outcome, error) = match ended {
            Ended::Returned(Ok(())) => (Outcome::Handled, None),
            Ended::Returned(Err(err)) => (
                Outcome::Failed,
                Some(Error::with_source(ConsumeErrorKind::Handler, err)),
            ),
            Ended::Panicked(panic) => (Outcome::Panicked, Some(ConsumeError::from(panic))),
            Ended::Expired => (Outcome::Expired, None),
        };
        if outcome != Outcome::Expired && !acker.is_settled() {
            let settlement = if outcome == Outcome::Handled {
                Settlement::Ack
            } else {
                Settlement::Nak(None)
            };
            if let Err(err) = acker.settle(settlement).await {
                tracing::warn!(target: "natty", error = %format_args!("{err:#}"), "could not settle message");
            }
        }
        match outcome {
            Outcome::Handled => self.tally.handled += 1,
            Outcome::Failed => self.tally.failed += 1,
            Outcome::Panicked => self.tally.panicked += 1,
            Outcome::Expired => self.tally.cancelled += 1,
        }
        if let Some(error) = error {
            let failure = origin.failed(error);
            match &self.failures {
                Some(reports) => {
                    if !report_failure(&acker, failure, reports).await {
                        self.tally.dropped_reports += 1;
                    }
                }
                None => log_failure(&acker, &failure),
            }
        }
        Finished {
            tag,
            outcome,
            acker,
        }
    }

    /// Let the calls under way finish within `grace`, settling each; then drop the rest,
    /// counted as cancelled, and hand back their messages' ackers (still unsettled) for the
    /// driver to nak or leave. Returns what ended, for the driver's bookkeeping.
    pub(crate) async fn drain(&mut self, grace: Duration) -> (Vec<Finished<T>>, Vec<(T, Acker)>) {
        let mut finished = Vec::new();
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        while !self.calls.is_empty() {
            tokio::select! {
                Some(done) = self.calls.next() => finished.push(self.settle(done).await),
                () = &mut deadline => break,
            }
        }
        let mut cancelled = Vec::with_capacity(self.calls.len());
        for call in Pin::new(&mut self.calls).iter_pin_mut() {
            let call = call.project();
            if let (Some(acker), Some(tag)) = (call.guard.0.take(), call.tag.take()) {
                cancelled.push((tag, acker));
            }
        }
        self.tally.cancelled += self.calls.len() as u64;
        self.calls.clear();
        (finished, cancelled)
    }
}

/// The future of [`Engine::next_event`].
pub(crate) struct NextEvent<'a, S, T>
where
    S: Service<Message>,
{
    engine: &'a mut Engine<S, T>,
    want_ready: bool,
}

impl<S, T> Future for NextEvent<'_, S, T>
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
{
    type Output = Event<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event<T>> {
        let want_ready = self.want_ready;
        let engine = &mut *self.engine;
        if let Poll::Ready(Some(done)) = engine.calls.poll_next_unpin(cx) {
            return Poll::Ready(Event::Done(done));
        }
        if want_ready {
            if engine.ready {
                return Poll::Ready(Event::Ready);
            }
            match engine.service.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    engine.ready = true;
                    return Poll::Ready(Event::Ready);
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Event::NotReady(err.into())),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
