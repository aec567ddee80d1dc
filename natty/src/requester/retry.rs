//! [`RetryPolicy`]: tower's `retry::Policy` for idempotent requests.

use tokio::time::Sleep;
use tower::retry::Policy;

use super::error::RequestError;
use super::request::{Request, Response};
use crate::backoff::Backoff;
use crate::error::RequestErrorKind;

/// Retries requests marked [idempotent](Request::idempotent) after no responders or a timeout,
/// at most `max_retries` times, pausing by natty's [`Backoff`] between attempts; for tower's
/// `Retry` (`ServiceBuilder::retry`). A request not so marked is sent once, and a service's
/// error answer is never retried: the service has spoken.
///
/// No responders is what a caller sees while a service restarts or has not started yet; a
/// timeout may mean the service did the work and its answer was lost, hence idempotent
/// requests only. Each attempt waits its own deadline.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use natty::backoff::Backoff;
/// use natty::requester::{Request, RetryPolicy};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let natty = natty::Natty::connect(natty::Config::from_env()).await?;
/// let policy = RetryPolicy::new(
///     5,
///     Backoff::new(Duration::from_millis(50), Duration::from_secs(1)).with_jitter(true),
/// );
/// let requester = ServiceBuilder::new().retry(policy).service(natty.requester());
/// let lookup = Request::new("orders.lookup", "o-17").idempotent();
/// let response = requester.oneshot(lookup).await?;
/// println!("{:?}", response.payload());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    max_retries: u32,
    backoff: Backoff,
    /// Retries of the request this copy follows (tower's `Retry` copies the policy per call).
    retries: u32,
}

impl RetryPolicy {
    /// At most `max_retries` retries after the first attempt, each after `backoff`'s next
    /// pause.
    pub fn new(max_retries: u32, backoff: Backoff) -> Self {
        Self {
            max_retries,
            backoff,
            retries: 0,
        }
    }
}

impl Default for RetryPolicy {
    /// Three retries, pausing 50 ms, 100 ms and 200 ms (jittered, at most 1 s).
    fn default() -> Self {
        Self::new(
            3,
            Backoff::new(
                std::time::Duration::from_millis(50),
                std::time::Duration::from_secs(1),
            )
            .with_jitter(true),
        )
    }
}

/// Whether an attempt that failed with `kind` is tried again: only for an idempotent request,
/// after no responders or a timeout, while retries are left.
fn retries_after(idempotent: bool, kind: RequestErrorKind, retries: u32, max: u32) -> bool {
    idempotent
        && retries < max
        && matches!(
            kind,
            RequestErrorKind::NoResponders | RequestErrorKind::TimedOut
        )
}

impl Policy<Request, Response, RequestError> for RetryPolicy {
    type Future = Sleep;

    fn retry(
        &mut self,
        request: &mut Request,
        result: &mut Result<Response, RequestError>,
    ) -> Option<Self::Future> {
        let Err(err) = result else {
            return None;
        };
        if !retries_after(
            request.is_idempotent(),
            err.kind(),
            self.retries,
            self.max_retries,
        ) {
            return None;
        }
        self.retries += 1;
        tracing::debug!(
            target: "natty",
            subject = request.subject(),
            retry = self.retries,
            error = %err,
            "request failed; retrying",
        );
        Some(tokio::time::sleep(self.backoff.next_pause()))
    }

    fn clone_request(&mut self, request: &Request) -> Option<Request> {
        request.is_idempotent().then(|| request.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::Error;
    use crate::service::ServiceError;

    #[test]
    fn only_idempotent_requests_are_retried_after_no_responders_or_a_timeout() {
        for kind in [RequestErrorKind::NoResponders, RequestErrorKind::TimedOut] {
            assert!(retries_after(true, kind, 0, 3), "{kind}");
            assert!(!retries_after(false, kind, 0, 3), "{kind} not idempotent");
            assert!(!retries_after(true, kind, 3, 3), "{kind} out of retries");
        }
        for kind in [
            RequestErrorKind::Service,
            RequestErrorKind::InvalidSubject,
            RequestErrorKind::InvalidHeader,
            RequestErrorKind::PayloadTooLarge,
            RequestErrorKind::Failed,
        ] {
            assert!(!retries_after(true, kind, 0, 3), "{kind}");
        }
    }

    /// Whether `policy` retries `request` after `result`, pausing `expected` first.
    fn pauses(
        policy: &mut RetryPolicy,
        request: &mut Request,
        result: &mut Result<Response, RequestError>,
        expected: Duration,
    ) -> bool {
        let before = tokio::time::Instant::now();
        let Some(pause) = policy.retry(request, result) else {
            return false;
        };
        let after = tokio::time::Instant::now();
        let deadline = pause.deadline();
        assert!(deadline >= before + expected && deadline <= after + expected);
        true
    }

    #[tokio::test]
    async fn the_policy_backs_off_then_gives_up() {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        let mut policy = RetryPolicy::new(2, backoff);
        let mut request = Request::new("svc.lookup", "1").idempotent();
        assert!(policy.clone_request(&request).is_some());
        let mut timed_out = Err(Error::new(RequestErrorKind::TimedOut));
        let ms = Duration::from_millis;
        assert!(pauses(&mut policy, &mut request, &mut timed_out, ms(10)));
        assert!(pauses(&mut policy, &mut request, &mut timed_out, ms(20)));
        assert!(
            !pauses(&mut policy, &mut request, &mut timed_out, ms(40)),
            "out of retries"
        );
    }

    #[tokio::test]
    async fn a_service_error_or_a_plain_request_is_never_retried() {
        let mut policy = RetryPolicy::default();
        let mut refused: Result<Response, RequestError> = Err(Error::with_source(
            RequestErrorKind::Service,
            ServiceError::new(503, "overloaded"),
        ));
        let mut idempotent = Request::new("svc.lookup", "1").idempotent();
        assert!(policy.retry(&mut idempotent, &mut refused).is_none());
        let plain = Request::new("svc.order", "1");
        assert!(
            policy.clone_request(&plain).is_none(),
            "sent once, never cloned"
        );
    }
}
