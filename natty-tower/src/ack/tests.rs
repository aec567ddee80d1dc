use std::time::Duration;

use natty::message::{Message, Settlement};
use tower::{service_fn, Layer, ServiceExt};

use super::AckLayer;
use crate::backoff::Backoff;
use crate::classify::{Decision, HandlerError};
use crate::error::BoxError;

/// Run one message through an ack layer over a handler that returns `result`.
async fn settle_with(
    layer: AckLayer,
    delivered: u64,
    result: Result<(), HandlerError>,
) -> Vec<Settlement> {
    let mut result = Some(result);
    let service = layer.layer(service_fn(move |_: Message| {
        let result = result.take().expect("called once").map_err(BoxError::from);
        async move { result }
    }));
    let (msg, recorder) = Message::builder("orders", "{}")
        .delivered(delivered)
        .build();
    let _ = service.oneshot(msg).await;
    recorder.settlements()
}

#[tokio::test]
async fn ok_acks() {
    assert_eq!(
        settle_with(AckLayer::new(), 1, Ok(())).await,
        [Settlement::Ack]
    );
}

#[tokio::test]
async fn ok_double_acks_when_configured() {
    let layer = AckLayer::new().double_ack(true);
    assert_eq!(settle_with(layer, 1, Ok(())).await, [Settlement::DoubleAck]);
}

#[tokio::test]
async fn retry_naks_with_a_delay_growing_with_the_delivery_count() {
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    let layer = AckLayer::new().nak_backoff(backoff);
    let mut delays = Vec::new();
    for delivered in [1, 2, 3, 9] {
        let settlements =
            settle_with(layer.clone(), delivered, Err(HandlerError::retry("down"))).await;
        delays.push(settlements);
    }
    let secs = |s| Settlement::Nak(Some(Duration::from_secs(s)));
    assert_eq!(delays, [[secs(1)], [secs(2)], [secs(4)], [secs(10)]]);
}

#[tokio::test]
async fn retry_after_naks_with_the_errors_own_delay() {
    let err = HandlerError::retry_after(Duration::from_secs(42), "rate limited");
    let settlements = settle_with(AckLayer::new(), 1, Err(err)).await;
    assert_eq!(
        settlements,
        [Settlement::Nak(Some(Duration::from_secs(42)))]
    );
}

#[tokio::test]
async fn give_up_terms() {
    let settlements = settle_with(AckLayer::new(), 1, Err(HandlerError::give_up("bad"))).await;
    assert_eq!(settlements, [Settlement::Term]);
}

#[tokio::test]
async fn ack_decision_acks_despite_the_error() {
    let settlements = settle_with(AckLayer::new(), 1, Err(HandlerError::ack("dup"))).await;
    assert_eq!(settlements, [Settlement::Ack]);
}

#[tokio::test]
async fn error_is_passed_on_after_settling() {
    let service = AckLayer::new().layer(service_fn(|_: Message| async {
        Err::<(), _>(BoxError::from(HandlerError::give_up("bad input")))
    }));
    let (msg, recorder) = Message::builder("orders", "{}").build();
    let err = service.oneshot(msg).await.unwrap_err();
    assert_eq!(err.to_string(), "bad input");
    assert_eq!(recorder.outcome(), Some(Settlement::Term));
}

#[tokio::test]
async fn message_settled_by_the_handler_is_left_alone() {
    let service = AckLayer::new().layer(service_fn(|msg: Message| async move {
        msg.term().await?;
        Err::<(), BoxError>("termed it myself".into())
    }));
    let (msg, recorder) = Message::builder("orders", "{}").build();
    let _ = service.oneshot(msg).await;
    assert_eq!(recorder.settlements(), [Settlement::Term]);
}

#[tokio::test]
async fn a_closure_classifies_the_handlers_own_error_type() {
    #[derive(Debug)]
    enum OrderError {
        Duplicate,
    }
    let layer = AckLayer::new().classifier(|err: &OrderError| match err {
        OrderError::Duplicate => Decision::Ack,
    });
    let service = layer.layer(service_fn(|_: Message| async {
        Err::<(), _>(OrderError::Duplicate)
    }));
    let (msg, recorder) = Message::builder("orders", "{}").build();
    let _ = service.oneshot(msg).await;
    assert_eq!(recorder.settlements(), [Settlement::Ack]);
}
