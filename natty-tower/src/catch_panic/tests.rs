use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use natty::error::{ConsumeErrorKind, Error};
use natty::Message;
use tower::{service_fn, Layer, Service, ServiceExt};

use super::{CatchPanicLayer, PanicMessage};
use crate::classify::{ClassifyError, Decision, DefaultClassifier};
use crate::error::BoxError;

fn panicked(err: &BoxError) -> Option<&Error<ConsumeErrorKind>> {
    err.downcast_ref::<Error<ConsumeErrorKind>>()
        .filter(|err| err.kind() == ConsumeErrorKind::Panicked)
}

#[tokio::test]
async fn a_panic_while_polling_becomes_a_panicked_error() {
    let service = CatchPanicLayer::new().layer(service_fn(|msg: Message| async move {
        if msg.payload().is_empty() {
            panic!("empty payload: {}", msg.subject());
        }
        Ok::<_, Infallible>(())
    }));
    let (msg, _) = Message::builder("orders", "").build();
    let err = service.oneshot(msg).await.unwrap_err();
    let panicked = panicked(&err).expect("a Panicked error");
    let message = std::error::Error::source(panicked)
        .and_then(|source| source.downcast_ref::<PanicMessage>())
        .map(PanicMessage::as_str);
    assert_eq!(message, Some("empty payload: orders"));
    assert_eq!(DefaultClassifier.classify(&err), Decision::Retry);
}

#[derive(Clone)]
struct PanicsInCall;

impl Service<Message> for PanicsInCall {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        if msg.payload().is_empty() {
            panic!("no payload");
        }
        ready(Ok(()))
    }
}

#[tokio::test]
async fn a_panic_in_call_becomes_an_error_and_the_service_keeps_running() {
    let mut service = CatchPanicLayer::new().layer(PanicsInCall);
    let (bad, _) = Message::builder("orders", "").build();
    let err = service.ready().await.unwrap().call(bad).await.unwrap_err();
    assert!(panicked(&err).is_some());
    assert_eq!(err.to_string(), "handler panicked");
    let cause = std::error::Error::source(&*err).map(ToString::to_string);
    assert_eq!(
        cause.as_deref(),
        Some("no payload"),
        "the panic's text is the cause"
    );

    let (good, _) = Message::builder("orders", "{}").build();
    service.ready().await.unwrap().call(good).await.unwrap();
}
