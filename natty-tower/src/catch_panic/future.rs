use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use natty::error::ConsumeErrorKind;
use pin_project_lite::pin_project;

use super::PanicMessage;
use crate::error::{BoxError, Error};

pin_project! {
    /// The response future of [`CatchPanic`](super::CatchPanic).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        Panicked { message: Option<PanicMessage> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(future: F) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(super) fn panicked(message: PanicMessage) -> Self {
        Self {
            state: State::Panicked {
                message: Some(message),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let message = match state.as_mut().project() {
            StateProj::Called { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(poll) => return poll.map_err(Into::into),
                    Err(panic) => PanicMessage::from_payload(panic.as_ref()),
                }
            }
            StateProj::Panicked { message } => message
                .take()
                .expect("catch_panic::ResponseFuture polled after it completed"),
        };
        // A future that panicked must not be polled again.
        state.set(State::Panicked { message: None });
        Poll::Ready(Err(Error::<ConsumeErrorKind>::from(message).into()))
    }
}
