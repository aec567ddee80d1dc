//! [`Leadership`], the handle of a running campaign, and the state it publishes.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{ElectionError, ElectionErrorKind};

/// What this node knows about the leadership of its key.
#[derive(Clone, Debug, PartialEq, Eq)]
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
/// Its token is cancelled the moment the node stops being leader (lost renew, expired local
/// lease, step-down, shutdown): give it to work that must only run while leader.
#[derive(Clone, Debug)]
pub struct Term {
    fencing_token: u64,
    token: CancellationToken,
    started_at: Instant,
    ended_at: Arc<OnceLock<Instant>>,
}

impl Term {
    pub(crate) fn new(fencing_token: u64, started_at: Instant) -> Self {
        Self {
            fencing_token,
            token: CancellationToken::new(),
            started_at,
            ended_at: Arc::new(OnceLock::new()),
        }
    }

    /// The fencing token: pass it to the resources the leader writes so they can refuse a
    /// stale leader's writes (a token lower than one already seen).
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The token cancelled when this term ends.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Wait until this term ends.
    pub async fn ended(&self) {
        self.token.cancelled().await;
    }

    /// Whether this term is still running.
    pub fn is_current(&self) -> bool {
        !self.token.is_cancelled()
    }

    /// When this node started acting as leader for this term (monotonic clock).
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// When this node stopped acting as leader, once the term has ended.
    pub fn ended_at(&self) -> Option<Instant> {
        self.ended_at.get().copied()
    }

    /// Record the end, then cancel: whoever wakes on the token sees `ended_at`.
    pub(crate) fn end(&self) {
        let _ = self.ended_at.set(Instant::now());
        self.token.cancel();
    }
}

/// The current term and the local lease deadline, shared by the campaign and its handles.
#[derive(Debug, Default)]
pub(crate) struct TermSlot {
    current: Mutex<Option<(Term, Instant)>>,
}

impl TermSlot {
    fn lock(&self) -> MutexGuard<'_, Option<(Term, Instant)>> {
        // Plain data replaced whole; a panic elsewhere cannot leave it torn.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn begin(&self, term: Term, deadline: Instant) {
        *self.lock() = Some((term, deadline));
    }

    pub(crate) fn extend(&self, deadline: Instant) {
        if let Some((_, current)) = self.lock().as_mut() {
            *current = deadline;
        }
    }

    /// End the current term, if any; returns it.
    pub(crate) fn end(&self) -> Option<Term> {
        let term = self.lock().take().map(|(term, _)| term);
        if let Some(term) = &term {
            term.end();
        }
        term
    }

    /// The term, only while its local lease has not run out.
    pub(crate) fn current(&self) -> Option<Term> {
        self.lock()
            .as_ref()
            .filter(|(term, deadline)| term.is_current() && Instant::now() < *deadline)
            .map(|(term, _)| term.clone())
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
    state: watch::Receiver<LeaderState>,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("node", &self.guard.node)
            .field("state", &*self.state.borrow())
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
        Self {
            guard: Arc::new(Guard {
                shutdown,
                commands,
                slot,
                node,
            }),
            state,
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.guard.node
    }

    /// The state as last published.
    pub fn state(&self) -> LeaderState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change, for gating work (a tower layer, a health check).
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.state.clone()
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

    /// Wait for the next state change and return the new state.
    ///
    /// # Errors
    /// `Stopped` once the campaign has ended.
    pub async fn changed(&mut self) -> Result<LeaderState, ElectionError> {
        self.state
            .changed()
            .await
            .map_err(|_| ElectionError::new(ElectionErrorKind::Stopped))?;
        Ok(self.state.borrow_and_update().clone())
    }

    /// Wait until this node leads and return the term.
    ///
    /// # Errors
    /// `Stopped` when the campaign ends first.
    pub async fn wait_leader(&self) -> Result<Term, ElectionError> {
        let mut state = self.state.clone();
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
        let mut state = self.state.clone();
        while state.changed().await.is_ok() {}
    }

    /// Whether the campaign has ended.
    pub fn is_stopped(&self) -> bool {
        self.state.has_changed().is_err()
    }
}
