use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tracing::Span;

pin_project! {
    /// The response future of [`Trace`](super::Trace).
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        span: Span,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F, span: Span) -> Self {
        Self { future, span }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: fmt::Display,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let output = ready!(this.future.poll(cx));
        if let Err(err) = &output {
            this.span.record("otel.status_code", "ERROR");
            this.span
                .record("error.message", tracing::field::display(err));
        }
        Poll::Ready(output)
    }
}
