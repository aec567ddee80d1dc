use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use natty::consume::CatchUnwind;
use natty::error::ConsumeErrorKind;
use pin_project_lite::pin_project;

use crate::error::{BoxError, Error};

pin_project! {
    /// The response future of [`CatchPanic`](super::CatchPanic): natty's own panic guard, its
    /// panic turned into an error.
    pub struct ResponseFuture<F> {
        #[pin]
        call: CatchUnwind<F>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(call: CatchUnwind<F>) -> Self {
        Self { call }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().call.poll(cx)) {
            Ok(output) => output.map_err(Into::into),
            Err(panic) => Err(Error::<ConsumeErrorKind>::from(panic).into()),
        })
    }
}
