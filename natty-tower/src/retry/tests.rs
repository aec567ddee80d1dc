use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use natty::Message;
use tokio::time::Instant;
use tower::retry::RetryLayer;
use tower::{service_fn, Layer, Service, ServiceExt};

use super::{RetryPolicy, RetryRequest};
use crate::backoff::Backoff;
use crate::classify::HandlerError;
use crate::error::BoxError;

/// A retryable request; `settled` stands in for a message settled by a failed attempt.
#[derive(Clone, Default)]
struct Job {
    settled: Arc<AtomicBool>,
}

impl RetryRequest for Job {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }

    fn is_settled(&self) -> bool {
        self.settled.load(Ordering::SeqCst)
    }
}

const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

/// A service failing its first `failures` calls with `make_error`; returns it and its call count.
fn flaky(
    failures: u32,
    make_error: fn() -> HandlerError,
) -> (
    impl Service<Job, Response = u32, Error = BoxError> + Clone,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let service = service_fn(move |_: Job| {
        let call = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if call <= failures {
                Err(BoxError::from(make_error()))
            } else {
                Ok(call)
            }
        }
    });
    (service, calls)
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_exponential_backoff() {
    let (service, calls) = flaky(3, || HandlerError::retry("down"));
    let service = RetryLayer::new(RetryPolicy::new(5).backoff(BACKOFF)).layer(service);
    let started = Instant::now();
    assert_eq!(service.oneshot(Job::default()).await.unwrap(), 4);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(started.elapsed(), Duration::from_millis(100 + 200 + 400));
}

#[tokio::test(start_paused = true)]
async fn attempts_are_bounded() {
    let (service, calls) = flaky(u32::MAX, || HandlerError::retry("down"));
    let service = RetryLayer::new(RetryPolicy::new(3).backoff(BACKOFF)).layer(service);
    assert!(service.oneshot(Job::default()).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn errors_not_classified_retry_are_not_retried() {
    for make_error in [
        (|| HandlerError::give_up("bad")) as fn() -> HandlerError,
        || HandlerError::ack("dup"),
        || HandlerError::retry_after(Duration::from_secs(60), "later"),
    ] {
        let (service, calls) = flaky(1, make_error);
        let service = RetryLayer::new(RetryPolicy::new(5)).layer(service);
        assert!(service.oneshot(Job::default()).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_settled_by_a_failed_attempt_is_not_retried() {
    let job = Job::default();
    let settled = job.settled.clone();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let service = RetryLayer::new(RetryPolicy::new(5)).layer(service_fn(move |_: Job| {
        counter.fetch_add(1, Ordering::SeqCst);
        settled.store(true, Ordering::SeqCst);
        async { Err::<(), _>(BoxError::from("failed after settling")) }
    }));
    assert!(service.oneshot(job).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn messages_are_retried_in_process_and_settled_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let service = RetryLayer::new(RetryPolicy::new(5)).layer(service_fn(move |_: Message| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(BoxError::from("down")) }
    }));
    let (msg, recorder) = Message::builder("orders", "{}").build();
    assert!(service.oneshot(msg).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 5, "every attempt ran");
    assert!(
        recorder.settlements().is_empty(),
        "retry itself settles nothing"
    );
}
