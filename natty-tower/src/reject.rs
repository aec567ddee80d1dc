//! The response future shared by layers that either call the inner service or refuse the
//! message up front with their own error (the JSON decoder, the leader gate).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use crate::error::BoxError;

pin_project! {
    /// Resolves to the inner service's result, or to the refusal the layer decided on.
    pub struct CallOrReject<F, R> {
        #[pin]
        state: State<F, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Called { #[pin] future: F },
        Rejected { error: Option<R> },
    }
}

impl<F, R> CallOrReject<F, R> {
    pub(crate) fn called(future: F) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(crate) fn rejected(error: R) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<F, R> std::fmt::Debug for CallOrReject<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOrReject").finish_non_exhaustive()
    }
}

impl<F, T, E, R> Future for CallOrReject<F, R>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    R: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => {
                Poll::Ready(ready!(future.poll(cx)).map_err(Into::into))
            }
            StateProj::Rejected { error } => {
                let error = error
                    .take()
                    .expect("CallOrReject polled after it completed");
                Poll::Ready(Err(error.into()))
            }
        }
    }
}
