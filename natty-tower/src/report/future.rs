use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use natty::consume::HandlerFailure;
use natty::Message;
use pin_project_lite::pin_project;

use super::Shared;

/// A report on its way into a channel (boxed: only failed calls send one).
pub(super) type Sending = Pin<Box<dyn Future<Output = ()> + Send>>;

pin_project! {
    /// The response future of [`ReportErrors`](super::ReportErrors): the inner call, then the
    /// delivery of its failure's report.
    pub struct ResponseFuture<F: Future> {
        #[pin]
        state: State<F>,
        original: Message,
        shared: Arc<Shared>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F: Future> {
        Calling { #[pin] future: F },
        Reporting { sending: Sending, output: Option<F::Output> },
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(super) fn new(future: F, original: Message, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Calling { future },
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
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let output = ready!(future.poll(cx));
                    let Err(err) = &output else {
                        return Poll::Ready(output);
                    };
                    // With its causes: natty's errors print them in the alternate form.
                    let failure = HandlerFailure::new(this.original, format!("{err:#}"));
                    let Some(sending) = this.shared.report(this.original.acker(), failure) else {
                        return Poll::Ready(output);
                    };
                    this.state.set(State::Reporting {
                        sending,
                        output: Some(output),
                    });
                }
                StateProj::Reporting { sending, output } => {
                    ready!(sending.as_mut().poll(cx));
                    return Poll::Ready(
                        output
                            .take()
                            .expect("report::ResponseFuture polled after it completed"),
                    );
                }
            }
        }
    }
}
