use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::{HANDLER_DURATION, IN_FLIGHT};

/// Counts a message in flight from creation until drop, however the call ends.
#[derive(Debug)]
struct InFlight;

impl InFlight {
    fn start() -> Self {
        ::metrics::gauge!(IN_FLIGHT).increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        ::metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}

pin_project! {
    /// The response future of [`Metrics`](super::Metrics).
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        started: Instant,
        in_flight: Option<InFlight>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F) -> Self {
        Self {
            future,
            started: Instant::now(),
            in_flight: Some(InFlight::start()),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.future.poll(cx));
        // Literal labels: the macro builds a label it is given in a variable on the heap.
        let histogram = if output.is_ok() {
            ::metrics::histogram!(HANDLER_DURATION, "result" => "ok")
        } else {
            ::metrics::histogram!(HANDLER_DURATION, "result" => "error")
        };
        histogram.record(this.started.elapsed().as_secs_f64());
        this.in_flight.take();
        Poll::Ready(output)
    }
}
