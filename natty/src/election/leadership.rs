//! [`Leadership`], the handle of a running campaign, and the state it publishes.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{ElectionError, ElectionErrorKind};

/// What this node knows about the leadership of its key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaderState {
    /// This node leads; `term` is the term's fencing token (the revision of the key write
    /// that won it), strictly increasing across terms.
    Leader {
        /// The fencing token of the current term.
        term: u64,
    },
    /// Another node leads, or nobody does (`None`) and this node is campaigning.
    Follower {
        /// The leader's node name, when one is known.
        leader: Option<String>,
    },
    /// Not known yet, or the server cannot be reached.
    Unknown,
}

impl LeaderState {
    /// Whether this is [`LeaderState::Leader`].
    pub fn is_leader(&self) -> bool {
        matches!(self, Self::Leader { .. })
    }
}

/// One term of leadership held by this node.
///
/// A term lasts while its **local lease** holds: the lease runs `ttl - safety margin` from the
/// last renew *sent*, on the monotonic clock, and ends before the server can expire the key
/// and let another node win. Every way of asking checks the lease itself, so a node whose
/// process was stopped past it (a VM pause, SIGSTOP, a blocked runtime) learns it lost the
/// term at its first check after resuming, before its campaign task has run:
///
/// - [`Term::is_current`] is false once the deadline has passed;
/// - [`Term::bound`] drops the work it runs at its first poll after the deadline;
/// - [`Term::ended`] completes at the deadline, whoever else is late;
/// - [`Term::token`] is cancelled by whichever of these, or the campaign, first sees the end.
///
/// A task waiting only on `token().cancelled()` can still be polled for another reason
/// before the cancellation is seen; work that must never run past the lease goes through
/// [`Term::bound`] (as [`run_while_leader`](super::run_while_leader) does) or checks
/// [`Term::is_current`] right before it acts. Resources the leader writes should still
/// check the [fencing token](Term::fencing_token): no local check can stop a write that a
/// stalled process had already sent.
#[derive(Clone, Debug)]
pub struct Term {
    fencing_token: u64,
    token: CancellationToken,
    started_at: Instant,
    lease: Arc<Lease>,
}

#[derive(Debug)]
struct Lease {
    deadline: Mutex<Instant>,
    ended_at: OnceLock<Instant>,
}

impl Term {
    pub(crate) fn new(fencing_token: u64, started_at: Instant, deadline: Instant) -> Self {
        Self {
            fencing_token,
            token: CancellationToken::new(),
            started_at,
            lease: Arc::new(Lease {
                deadline: Mutex::new(deadline),
                ended_at: OnceLock::new(),
            }),
        }
    }

    /// The fencing token: pass it to the resources the leader writes so they can refuse a
    /// stale leader's writes (a token lower than one already seen).
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The token cancelled when this term ends (already cancelled when the lease has run out).
    pub fn token(&self) -> &CancellationToken {
        self.expire_if_due();
        &self.token
    }

    /// Wait until this term ends: the campaign ended it, or its lease ran out.
    pub async fn ended(&self) {
        loop {
            let deadline = self.lease_deadline();
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    if !self.is_current() {
                        return;
                    }
                }
            }
        }
    }

    /// Whether this term is still running: not ended, and its lease not run out.
    pub fn is_current(&self) -> bool {
        !self.token.is_cancelled() && !self.expire_if_due()
    }

    /// When the local lease runs out unless a renew extends it (monotonic clock).
    pub fn lease_deadline(&self) -> Instant {
        *self.deadline()
    }

    /// Run `work` only within this term: it is polled only while the term is current and
    /// dropped at its first poll after the term ended or its lease ran out, so no code of it
    /// runs after that (its `Drop` impls run then). Resolves to `Some(output)` when `work`
    /// finished within the term, `None` when the term ended first.
    ///
    /// # Example
    /// ```no_run
    /// # async fn run(term: natty::Term) {
    /// let finished = term
    ///     .bound(async {
    ///         // leader-only work
    ///     })
    ///     .await;
    /// if finished.is_none() {
    ///     println!("term {} ended first", term.fencing_token());
    /// }
    /// # }
    /// ```
    pub async fn bound<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        let mut cancelled = pin!(self.token.cancelled());
        let mut lease = pin!(tokio::time::sleep_until(self.lease_deadline()));
        std::future::poll_fn(|cx| {
            // Checked before every poll of `work`: after a stall, the first poll is too late.
            if !self.is_current() || cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            // Wake at the deadline even when nothing else happens. A fired timer means the
            // deadline passed or moved: check again.
            loop {
                let deadline = self.lease_deadline();
                if lease.deadline() != deadline {
                    lease.as_mut().reset(deadline);
                }
                if lease.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if !self.is_current() {
                    return Poll::Ready(None);
                }
            }
        })
        .await
    }

    /// When this node started acting as leader for this term (monotonic clock).
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// When this node stopped acting as leader, once the term has ended (for a lease that
    /// ran out: its deadline).
    pub fn ended_at(&self) -> Option<Instant> {
        self.expire_if_due();
        self.lease.ended_at.get().copied()
    }

    fn deadline(&self) -> MutexGuard<'_, Instant> {
        // A plain value replaced whole; a panic elsewhere cannot leave it torn.
        self.lease
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// End the term if its lease has run out; returns whether it has.
    fn expire_if_due(&self) -> bool {
        let deadline = *self.deadline();
        if Instant::now() < deadline {
            return false;
        }
        self.end_at(deadline);
        true
    }

    /// Move the lease deadline to `deadline`, unless the term has already ended (then false).
    pub(crate) fn extend(&self, deadline: Instant) -> bool {
        let mut current = self.deadline();
        // Under the lock, so an expiry seen by anyone is never undone by a late renew.
        if self.token.is_cancelled() || Instant::now() >= *current {
            return false;
        }
        *current = deadline;
        true
    }

    /// Record the end, then cancel: whoever wakes on the token sees `ended_at`.
    pub(crate) fn end_at(&self, at: Instant) {
        let _ = self.lease.ended_at.set(at);
        self.token.cancel();
    }
}

/// The current term, shared by the campaign and its handles.
#[derive(Debug, Default)]
pub(crate) struct TermSlot {
    current: Mutex<Option<Term>>,
}

impl TermSlot {
    fn lock(&self) -> MutexGuard<'_, Option<Term>> {
        // Plain data replaced whole; a panic elsewhere cannot leave it torn.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn begin(&self, term: Term) {
        *self.lock() = Some(term);
    }

    /// Extend the current term's lease; false when it has already ended.
    pub(crate) fn extend(&self, deadline: Instant) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|term| term.extend(deadline))
    }

    /// End the current term, if any, as of `at`; returns it.
    pub(crate) fn end_at(&self, at: Instant) -> Option<Term> {
        let term = self.lock().take();
        if let Some(term) = &term {
            term.end_at(at);
        }
        term
    }

    /// The term, only while it is current (its local lease has not run out).
    pub(crate) fn current(&self) -> Option<Term> {
        self.lock()
            .as_ref()
            .filter(|term| term.is_current())
            .cloned()
    }
}

pub(crate) enum Command {
    StepDown(oneshot::Sender<bool>),
}

/// Cancels the campaign when the last [`Leadership`] clone is dropped.
struct Guard {
    shutdown: CancellationToken,
    commands: mpsc::Sender<Command>,
    slot: Arc<TermSlot>,
    node: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The handle of a running campaign, from [`Natty::elect`](crate::Natty::elect).
///
/// Cheap to clone. The campaign runs in a background task until [`Leadership::stop`], the
/// configured shutdown token, or the drop of the last clone; each of them releases the key
/// when this node leads, so another node takes over at once.
///
/// [`Leadership::is_leader`] trusts the local lease, not only the last state published: it
/// turns false when `last renew sent + ttl - safety margin` passes even if the campaign task
/// has not run yet.
#[derive(Clone)]
pub struct Leadership {
    guard: Arc<Guard>,
    watch: LeaderWatch,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("node", &self.guard.node)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Leadership {
    pub(crate) fn new(
        shutdown: CancellationToken,
        commands: mpsc::Sender<Command>,
        slot: Arc<TermSlot>,
        node: String,
        state: watch::Receiver<LeaderState>,
    ) -> Self {
        let slot_for_watch = Arc::clone(&slot);
        Self {
            guard: Arc::new(Guard {
                shutdown,
                commands,
                slot,
                node,
            }),
            watch: LeaderWatch::new(state, slot_for_watch),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.guard.node
    }

    /// The state now: [`LeaderState::Leader`] only while the local lease holds, even when
    /// the campaign task has not yet run to publish the end of the term.
    pub fn state(&self) -> LeaderState {
        self.watch.current()
    }

    /// A receiver of every state change, for gating work (a tower layer, a health check).
    /// Like [`Leadership::state`], it never reports `Leader` past the local lease.
    pub fn subscribe(&self) -> LeaderWatch {
        let mut watch = self.watch.clone();
        watch.seen = watch.current();
        watch
    }

    /// Whether this node leads right now, within its local lease.
    pub fn is_leader(&self) -> bool {
        self.guard.slot.current().is_some()
    }

    /// The current term, while this node leads.
    pub fn term(&self) -> Option<Term> {
        self.guard.slot.current()
    }

    /// The fencing token of the current term, while this node leads.
    pub fn fencing_token(&self) -> Option<u64> {
        self.term().map(|term| term.fencing_token())
    }

    /// The token of the current term, cancelled when this node stops leading.
    pub fn term_token(&self) -> Option<CancellationToken> {
        self.term().map(|term| term.token().clone())
    }

    /// Wait for the next state change and return the new state (see [`LeaderWatch::changed`]).
    ///
    /// # Errors
    /// `Stopped` once the campaign has ended.
    pub async fn changed(&mut self) -> Result<LeaderState, ElectionError> {
        self.watch.changed().await
    }

    /// Wait until this node leads and return the term.
    ///
    /// # Errors
    /// `Stopped` when the campaign ends first.
    pub async fn wait_leader(&self) -> Result<Term, ElectionError> {
        let mut state = self.watch.published.clone();
        loop {
            if let Some(term) = self.term() {
                return Ok(term);
            }
            state
                .changed()
                .await
                .map_err(|_| ElectionError::new(ElectionErrorKind::Stopped))?;
        }
    }

    /// Give up leadership now: end the term, release the key so another node takes over,
    /// and sit out one renew interval before campaigning again. Returns whether this node
    /// was leader.
    ///
    /// # Errors
    /// `Stopped` when the campaign has ended.
    pub async fn step_down(&self) -> Result<bool, ElectionError> {
        let (reply, answer) = oneshot::channel();
        self.guard
            .commands
            .send(Command::StepDown(reply))
            .await
            .map_err(|_| ElectionError::new(ElectionErrorKind::Stopped))?;
        answer
            .await
            .map_err(|_| ElectionError::new(ElectionErrorKind::Stopped))
    }

    /// Stop campaigning: end the term and release the key if leader, then wait until the
    /// campaign task has finished. Other clones see `Stopped` afterwards.
    pub async fn stop(&self) {
        self.guard.shutdown.cancel();
        let mut state = self.watch.published.clone();
        while state.changed().await.is_ok() {}
    }

    /// Whether the campaign has ended.
    pub fn is_stopped(&self) -> bool {
        self.watch.published.has_changed().is_err()
    }
}

/// Changes of a node's [`LeaderState`], from [`Leadership::subscribe`].
///
/// Unlike a plain `watch` receiver of what the campaign published, it checks the local lease:
/// once the lease has run out it reports the node as a follower, and [`LeaderWatch::changed`]
/// wakes at the lease deadline, even if the campaign task has not run since (a stalled
/// process, a blocked runtime).
#[derive(Clone, Debug)]
pub struct LeaderWatch {
    published: watch::Receiver<LeaderState>,
    slot: Arc<TermSlot>,
    seen: LeaderState,
}

impl LeaderWatch {
    fn new(published: watch::Receiver<LeaderState>, slot: Arc<TermSlot>) -> Self {
        let seen = published.borrow().clone();
        Self {
            published,
            slot,
            seen,
        }
    }

    /// The state now, within the local lease.
    pub fn current(&self) -> LeaderState {
        match self.slot.current() {
            Some(term) => LeaderState::Leader {
                term: term.fencing_token(),
            },
            None => match &*self.published.borrow() {
                // Published, but the lease has run out: the campaign has not caught up yet.
                LeaderState::Leader { .. } => LeaderState::Follower { leader: None },
                other => other.clone(),
            },
        }
    }

    /// Wait until the state differs from the one this receiver last returned (or saw when it
    /// was made), and return it.
    ///
    /// # Errors
    /// `Stopped` once the campaign has ended and its last state was returned.
    pub async fn changed(&mut self) -> Result<LeaderState, ElectionError> {
        loop {
            self.published.mark_unchanged();
            let now = self.current();
            if now != self.seen {
                self.seen = now.clone();
                return Ok(now);
            }
            let term = self.slot.current();
            tokio::select! {
                changed = self.published.changed() => {
                    changed.map_err(|_| ElectionError::new(ElectionErrorKind::Stopped))?;
                }
                // The lease ending is a change, whether or not the campaign has published it.
                _ = async { term.as_ref()?.ended().await; Some(()) }, if term.is_some() => {}
            }
        }
    }

    /// Wait until `accept` holds for the state and return that state (at once when it
    /// already holds).
    ///
    /// # Errors
    /// `Stopped` when the campaign ends first.
    pub async fn wait_for(
        &mut self,
        mut accept: impl FnMut(&LeaderState) -> bool,
    ) -> Result<LeaderState, ElectionError> {
        let now = self.current();
        if accept(&now) {
            self.seen = now.clone();
            return Ok(now);
        }
        loop {
            let state = self.changed().await?;
            if accept(&state) {
                return Ok(state);
            }
        }
    }
}
