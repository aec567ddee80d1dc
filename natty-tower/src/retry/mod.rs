//! Retry failed handlers in process, with exponential backoff and jitter, before a message is
//! nak'd back to the server.
//!
//! This is tower's own [`Retry`] middleware with a [`RetryPolicy`]: only
//! errors the [classifier](crate::classify) marks [`Decision::Retry`] are retried, at most
//! `max_attempts` calls in all, waiting a jittered exponential [`Backoff`] between calls. A
//! [`Decision::RetryAfter`] is left for a later redelivery; a message settled by the failed
//! call is not retried.
//!
//! tower's retry clones each request before calling; requests opt in through
//! [`RetryRequest`].
//!
//! For messages, [`RetryMessagesLayer`] (what `ServiceBuilderExt::retry_messages` adds) wraps
//! tower's `Retry` and tells the layers below it how many attempts are left, so an
//! [ack](crate::ack) or [dead-letter](crate::dead_letter) layer below it settles only the last
//! attempt. Where it may sit, and where tower's own `RetryLayer` must, is in the
//! [crate docs](crate#layer-order).
//!
//! # Example
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use natty_tower::backoff::Backoff;
//! use natty_tower::error::BoxError;
//! use natty_tower::retry::{RetryPolicy, RetryRequest};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! #[derive(Clone)]
//! struct Job(u32);
//! impl RetryRequest for Job {
//!     fn try_clone(&self) -> Option<Self> {
//!         Some(self.clone())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let policy = RetryPolicy::new(3)
//!     .backoff(Backoff::new(Duration::from_millis(50), Duration::from_secs(1)).with_jitter(true));
//! let service = ServiceBuilder::new()
//!     .retry(policy)
//!     .service(service_fn(move |_: Job| {
//!         let calls = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!         async move {
//!             if calls < 3 { Err(BoxError::from("flaky")) } else { Ok(calls) }
//!         }
//!     }));
//! assert_eq!(service.oneshot(Job(1)).await.unwrap(), 3);
//! # }
//! ```

use std::task::{Context, Poll};
use std::time::Duration;

use natty::Message;
use tokio::time::Sleep;
use tower::retry::{Policy, Retry};
use tower::{Layer, Service};

use crate::backoff::Backoff;
use crate::classify::{ClassifyError, Decision, DefaultClassifier};

/// A request that can be copied for another attempt.
pub trait RetryRequest: Sized {
    /// A copy for the next attempt, or `None` if it cannot be retried.
    fn try_clone(&self) -> Option<Self>;

    /// Whether a failed attempt settled it already (then it is not retried).
    fn is_settled(&self) -> bool {
        false
    }

    /// Note that `left` more attempts may follow this one (for settling layers below the
    /// retry, which must leave a failure that will be tried again unsettled).
    fn set_attempts_left(&mut self, left: u32) {
        let _ = left;
    }
}

impl RetryRequest for Message {
    /// A clone sharing the same [`Acker`](natty::message::Acker), so a retried message is
    /// still settled once.
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }

    fn is_settled(&self) -> bool {
        self.acker().is_settled()
    }

    fn set_attempts_left(&mut self, left: u32) {
        self.extensions_mut().insert(RetryAbove {
            attempts_left: left,
        });
    }
}

/// Marks a message as passing through a retry layer, for the settling layers below it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryAbove {
    /// Attempts the retry layer may still make after this one.
    pub(crate) attempts_left: u32,
}

impl RetryAbove {
    /// Whether the retry layer above calls again after a failure decided as `decision`.
    pub(crate) fn retries(self, decision: Decision) -> bool {
        decision == Decision::Retry && self.attempts_left > 0
    }
}

/// Applies [`RetryMessages`]: tower's `Retry` with a [`RetryPolicy`], for messages.
#[derive(Clone, Debug)]
pub struct RetryMessagesLayer<C = DefaultClassifier> {
    policy: RetryPolicy<C>,
}

impl<C> RetryMessagesLayer<C> {
    /// Retry as `policy` says.
    pub fn new(policy: RetryPolicy<C>) -> Self {
        Self { policy }
    }
}

impl<S, C: Clone> Layer<S> for RetryMessagesLayer<C> {
    type Service = RetryMessages<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryMessages {
            first_attempts_left: self.policy.max_attempts.saturating_sub(1),
            inner: Retry::new(self.policy.clone(), inner),
        }
    }
}

/// tower's `Retry` for messages, telling the layers below how many attempts are left; see
/// the [module docs](self).
#[derive(Clone, Debug)]
pub struct RetryMessages<S, C = DefaultClassifier> {
    inner: Retry<RetryPolicy<C>, S>,
    first_attempts_left: u32,
}

impl<S, C> RetryMessages<S, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, C> Service<Message> for RetryMessages<S, C>
where
    Retry<RetryPolicy<C>, S>: Service<Message>,
{
    type Response = <Retry<RetryPolicy<C>, S> as Service<Message>>::Response;
    type Error = <Retry<RetryPolicy<C>, S> as Service<Message>>::Error;
    type Future = <Retry<RetryPolicy<C>, S> as Service<Message>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut msg: Message) -> Self::Future {
        msg.set_attempts_left(self.first_attempts_left);
        self.inner.call(msg)
    }
}

/// Which failures to retry in process, how often and how far apart; a [`Policy`] for tower's
/// `Retry`.
#[derive(Clone, Debug)]
pub struct RetryPolicy<C = DefaultClassifier> {
    classifier: C,
    backoff: Backoff,
    max_attempts: u32,
    attempts: u32,
}

impl RetryPolicy {
    /// At most `max_attempts` calls per message (the first included), with the
    /// [`DefaultClassifier`] and a jittered backoff from 100 ms doubling to 5 s.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            classifier: DefaultClassifier,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
                .with_jitter(true),
            max_attempts,
            attempts: 1,
        }
    }
}

impl<C> RetryPolicy<C> {
    /// Wait `backoff` at the attempt number between calls.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Decide which errors to retry with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> RetryPolicy<C2> {
        RetryPolicy {
            classifier,
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            attempts: self.attempts,
        }
    }
}

impl<Req, Res, E, C> Policy<Req, Res, E> for RetryPolicy<C>
where
    Req: RetryRequest,
    C: ClassifyError<E>,
{
    type Future = Sleep;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        if self.attempts >= self.max_attempts || req.is_settled() {
            return None;
        }
        if self.classifier.classify(err) != Decision::Retry {
            return None;
        }
        let delay = self.backoff.delay(u64::from(self.attempts));
        self.attempts += 1;
        req.set_attempts_left(self.max_attempts.saturating_sub(self.attempts));
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        req.try_clone()
    }
}

#[cfg(test)]
mod tests;
