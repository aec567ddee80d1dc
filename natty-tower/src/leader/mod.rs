//! Run a service only while this node leads.
//!
//! Some consumers must have one active processor in a cluster of replicas (a projector writing
//! in order, a scheduler). [`LeaderLayer`] gates a service on a [`LeaderGate`], which natty's
//! leader election implements (and a `tokio::sync::watch::Receiver<Option<u64>>` does too, for
//! tests or home-grown elections):
//!
//! - [`LeaderMode::Wait`]: `poll_ready` stays pending while this node is not the leader, so a
//!   consumer driver that honours readiness does not even fetch on followers.
//! - [`LeaderMode::Reject`]: calls on a follower fail at once with
//!   [`LeaderErrorKind::NotLeader`], which the [default classifier](crate::classify) retries
//!   (the message is nak'd and goes to whichever node leads).
//!
//! Every message let through carries the leader's [`FencingToken`] in its extensions, to pass
//! on to storage that rejects writes from a deposed leader.
//!
//! # Example
//! ```
//! use natty::Message;
//! use natty_tower::leader::{FencingToken, LeaderLayer, LeaderMode};
//! use natty_tower::error::BoxError;
//! use tokio::sync::watch;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Leadership as `Some(fencing token)`, driven by hand here.
//! let (leadership, gate) = watch::channel(None);
//! let service = LeaderLayer::new(gate, LeaderMode::Reject).layer(service_fn(|msg: Message| async move {
//!     let token = msg.extensions().get::<FencingToken>().copied();
//!     Ok::<_, BoxError>(token)
//! }));
//!
//! let (msg, _) = Message::builder("jobs.run", "").build();
//! assert!(service.clone().oneshot(msg).await.is_err(), "followers reject");
//!
//! leadership.send_replace(Some(7));
//! let (msg, _) = Message::builder("jobs.run", "").build();
//! assert_eq!(service.oneshot(msg).await.unwrap(), Some(FencingToken(7)));
//! # }
//! ```

mod error;
mod future;
mod layer;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use natty::Message;
use tokio::sync::watch;
use tower::Service;

pub use self::error::{LeaderError, LeaderErrorKind};
pub use self::future::ResponseFuture;
pub use self::layer::LeaderLayer;
use crate::error::BoxError;

/// Whether this node leads, and how to learn when that changes.
///
/// natty implements it for its election's `Leadership`; it is implemented here for
/// `tokio::sync::watch::Receiver<Option<u64>>` (`Some(token)` while leading).
pub trait LeaderGate {
    /// The leader's fencing token (its term) while this node leads, else `None`.
    fn fencing_token(&self) -> Option<u64>;

    /// Whether this node leads now.
    fn is_leader(&self) -> bool {
        self.fencing_token().is_some()
    }

    /// A future that completes once leadership changes after this call; it never completes
    /// if leadership can no longer change (the election stopped).
    fn changed(&self) -> impl Future<Output = ()> + Send + 'static;
}

impl LeaderGate for watch::Receiver<Option<u64>> {
    fn fencing_token(&self) -> Option<u64> {
        *self.borrow()
    }

    fn changed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.clone();
        // Only changes after this call count, whatever the clone had seen.
        receiver.mark_unchanged();
        async move {
            if watch::Receiver::changed(&mut receiver).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl LeaderGate for natty::election::Leadership {
    fn fencing_token(&self) -> Option<u64> {
        natty::election::Leadership::fencing_token(self)
    }

    fn is_leader(&self) -> bool {
        natty::election::Leadership::is_leader(self)
    }

    fn changed(&self) -> impl Future<Output = ()> + Send + 'static {
        // A fresh subscription counts only changes after this call, the lease running out
        // included.
        let mut receiver = self.subscribe();
        async move {
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The fencing token of the leader that handled a message, found in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FencingToken(pub u64);

/// What a [`Leader`] service does on a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LeaderMode {
    /// Stay not ready until this node leads (no fetching on followers).
    #[default]
    Wait,
    /// Be ready, and fail each call with [`LeaderErrorKind::NotLeader`].
    Reject,
}

/// Gates a service on leadership; see the [module docs](self).
pub struct Leader<S, G> {
    inner: S,
    gate: G,
    mode: LeaderMode,
    // Set while `poll_ready` waits for leadership; boxed because gates return opaque futures,
    // and only followers pay for it.
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<S, G> Leader<S, G> {
    /// Gate `inner` on `gate`, acting on followers as `mode` says.
    pub fn new(inner: S, gate: G, mode: LeaderMode) -> Self {
        Self {
            inner,
            gate,
            mode,
            waiting: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, G: Clone> Clone for Leader<S, G> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.gate.clone(), self.mode)
    }
}

impl<S: fmt::Debug, G: fmt::Debug> fmt::Debug for Leader<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .field("mode", &self.mode)
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

impl<S, G> Service<Message> for Leader<S, G>
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
    G: LeaderGate,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.mode == LeaderMode::Wait {
            loop {
                // The leader's common case costs one check and no allocation.
                if self.waiting.is_none() && self.gate.is_leader() {
                    #[cfg(feature = "metrics")]
                    crate::metrics::record_leadership(true);
                    break;
                }
                // Subscribe before checking again, so a change right after the check still
                // wakes us.
                let waiting = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(self.gate.changed()));
                let is_leader = self.gate.is_leader();
                #[cfg(feature = "metrics")]
                crate::metrics::record_leadership(is_leader);
                if is_leader {
                    self.waiting = None;
                    break;
                }
                ready!(waiting.as_mut().poll(cx));
                self.waiting = None;
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut msg: Message) -> Self::Future {
        // Checked again here: leadership may have been lost since `poll_ready`.
        let token = self.gate.fencing_token();
        #[cfg(feature = "metrics")]
        crate::metrics::record_leadership(token.is_some());
        match token {
            Some(token) => {
                msg.extensions_mut().insert(FencingToken(token));
                ResponseFuture::called(self.inner.call(msg))
            }
            None => ResponseFuture::rejected(LeaderError::new(LeaderErrorKind::NotLeader)),
        }
    }
}

#[cfg(test)]
mod tests;
