//! Catching a handler's panic, wherever it is thrown: in `call` itself (a closure that parses
//! before its `async` block) or while its future is polled. natty's engine and natty-tower's
//! catch-panic layer both wrap calls in [`CatchUnwind`], so a panic is caught, and reads, the
//! same everywhere.
//!
//! # Example
//! ```
//! use natty::consume::CatchUnwind;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let call = CatchUnwind::call(|| async { panic!("cannot parse order 7") });
//! let caught: Result<(), _> = call.await;
//! assert_eq!(caught.unwrap_err().as_str(), "cannot parse order 7");
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::ConsumeError;
use crate::error::{ConsumeErrorKind, Error};

pin_project_lite::pin_project! {
    /// A call under `catch_unwind`: resolves to the future's output, or to the
    /// [`PanicMessage`] of a panic thrown by `call` or by a poll of its future. A future that
    /// panicked is never polled again.
    pub struct CatchUnwind<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: F },
        Panicked { message: Option<PanicMessage> },
    }
}

impl<F> fmt::Debug for CatchUnwind<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchUnwind")
            .field("panicked", &self.has_panicked())
            .finish_non_exhaustive()
    }
}

impl<F> CatchUnwind<F> {
    /// Run `call` (a service's `call`, say) and catch a panic it throws, then one thrown while
    /// its future is polled.
    pub fn call(call: impl FnOnce() -> F) -> Self {
        let state = match catch_unwind(AssertUnwindSafe(call)) {
            Ok(future) => State::Running { future },
            Err(payload) => State::Panicked {
                message: Some(PanicMessage::from_payload(payload.as_ref())),
            },
        };
        Self { state }
    }

    /// Whether a panic was caught (its message may have been handed out already).
    pub fn has_panicked(&self) -> bool {
        matches!(self.state, State::Panicked { .. })
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, PanicMessage>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let message = match state.as_mut().project() {
            StateProj::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(poll) => return poll.map(Ok),
                    Err(payload) => PanicMessage::from_payload(payload.as_ref()),
                }
            }
            StateProj::Panicked { message } => match message.take() {
                Some(message) => message,
                // Handed out already: a finished future stays pending, as `FuturesUnordered`
                // never polls one again.
                None => return Poll::Pending,
            },
        };
        state.set(State::Panicked { message: None });
        Poll::Ready(Err(message))
    }
}

/// The text a handler panicked with: the `source` of a
/// [`Panicked`](ConsumeErrorKind::Panicked) error, from natty's driver or natty-tower's
/// catch-panic layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicMessage(String);

impl PanicMessage {
    /// The text of a caught panic's payload (`panic!` with a string or a format).
    pub fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let text = if let Some(text) = payload.downcast_ref::<&'static str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a non-string panic payload".to_owned()
        };
        Self(text)
    }

    /// The panic's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PanicMessage {}

impl From<PanicMessage> for ConsumeError {
    fn from(message: PanicMessage) -> Self {
        Error::with_source(ConsumeErrorKind::Panicked, message)
    }
}
