use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use natty::Message;
use pin_project_lite::pin_project;

use super::{ErrorReport, Shared};

pin_project! {
    /// The response future of [`ReportErrors`](super::ReportErrors).
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        original: Message,
        shared: Arc<Shared>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F, original: Message, shared: Arc<Shared>) -> Self {
        Self {
            future,
            original,
            shared,
        }
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
        let output = ready!(this.future.poll(cx));
        if let Err(err) = &output {
            // With its causes: natty's errors print them in the alternate form.
            let report = ErrorReport::new(this.original, format!("{err:#}"));
            this.shared.report(report, this.original.acker());
        }
        Poll::Ready(output)
    }
}
