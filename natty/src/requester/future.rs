//! [`ResponseFuture`]: the future of a [`Requester`](super::Requester) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::error::{classify, service_error, RequestError};
use super::request::Response;
use crate::error::{Error, RequestErrorKind};
use crate::header::HeaderMap;

/// async-nats' request, under way. Its `async fn` future has no name, so it is boxed: one
/// allocation per request, as a publish's ack wait is.
pub(super) type Sending =
    Pin<Box<dyn Future<Output = Result<async_nats::Message, async_nats::RequestError>> + Send>>;

/// The future of a [`Requester`](super::Requester) call: the service's [`Response`], or why
/// there is none.
pub struct ResponseFuture {
    state: State,
}

enum State {
    /// Refused before sending (or already answered): the error, taken once.
    Failed(Option<RequestError>),
    Sending(Sending),
}

impl ResponseFuture {
    /// A request refused before anything was sent.
    pub(super) fn failed(error: RequestError) -> Self {
        Self {
            state: State::Failed(Some(error)),
        }
    }

    /// A request under way.
    pub(super) fn sending(sending: Sending) -> Self {
        Self {
            state: State::Sending(sending),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Failed(_) => "failed",
            State::Sending(_) => "waiting for the answer",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            State::Failed(error) => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| Error::new(RequestErrorKind::Failed)))),
            State::Sending(sending) => {
                let answered = ready!(sending.as_mut().poll(cx));
                this.state = State::Failed(None);
                Poll::Ready(answered.map_err(classify).and_then(answer))
            }
        }
    }
}

/// The service's answer: a [`Response`], or a `Service` error when it carries the error
/// headers.
fn answer(message: async_nats::Message) -> Result<Response, RequestError> {
    let headers = message.headers.map(HeaderMap::received).unwrap_or_default();
    match service_error(&headers) {
        Some(refused) => Err(Error::with_source(RequestErrorKind::Service, refused)),
        None => Ok(Response::new(message.payload, headers)),
    }
}
