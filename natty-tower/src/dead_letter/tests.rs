use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use natty::message::{DeliveryInfo, Message, Recorder, Settlement};
use natty::{HeaderMap, OutgoingMessage, PublishAck};
use tower::{service_fn, Layer, Service, ServiceExt};

use super::*;
use crate::ack::AckLayer;
use crate::backoff::Backoff;
use crate::classify::HandlerError;
use crate::error::BoxError;

type Published = (String, HeaderMap, Bytes);

/// Records what it publishes; fails every publish when `fail` is set.
#[derive(Clone, Default)]
struct FakeSink {
    published: Arc<Mutex<Vec<Published>>>,
    fail: bool,
}

impl FakeSink {
    fn failing() -> Self {
        Self {
            fail: true,
            ..Self::default()
        }
    }

    fn published(&self) -> Vec<Published> {
        self.published.lock().unwrap().clone()
    }
}

impl Service<OutgoingMessage> for FakeSink {
    type Response = PublishAck;
    type Error = BoxError;
    type Future = std::future::Ready<Result<PublishAck, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: OutgoingMessage) -> Self::Future {
        if self.fail {
            return std::future::ready(Err("publish refused".into()));
        }
        let mut published = self.published.lock().unwrap();
        published.push((
            message.subject().to_owned(),
            message.headers().clone(),
            message.payload().clone(),
        ));
        let sequence = published.len() as u64;
        std::future::ready(Ok(PublishAck::new("DEAD", sequence, false)))
    }
}

/// A handler failing with `HandlerError::give_up` on `"poison"`, `retry` on `"flaky"`.
fn handler(
    layer: DeadLetterLayer<FakeSink>,
) -> impl Service<Message, Response = (), Error = BoxError> + Clone {
    layer.layer(service_fn(|msg: Message| async move {
        match msg.payload().as_ref() {
            b"poison" => Err(HandlerError::give_up("cannot parse\nline 2").into()),
            b"flaky" => Err(HandlerError::retry("database down").into()),
            _ => Ok(()),
        }
    }))
}

fn message(payload: &'static str, delivered: u64) -> (Message, Recorder) {
    let mut info = DeliveryInfo::new("ORDERS", "billing");
    info.stream_sequence = 41;
    info.delivered = delivered;
    Message::builder("orders.paid", payload)
        .header("Nats-Msg-Id", "order-41")
        .header("Nats-Expected-Stream", "ORDERS")
        .header("tenant", "acme")
        .info(info)
        .build()
}

#[tokio::test]
async fn a_given_up_message_is_published_with_its_origin_then_termed() {
    let sink = FakeSink::default();
    let service = handler(DeadLetterLayer::new(sink.clone(), "dlq.orders"));
    let (msg, recorder) = message("poison", 1);
    let err = service.oneshot(msg).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot parse\nline 2",
        "the error is passed on"
    );
    assert_eq!(recorder.settlements(), [Settlement::Term]);

    let published = sink.published();
    assert_eq!(published.len(), 1);
    let (subject, headers, payload) = &published[0];
    assert_eq!(subject, "dlq.orders");
    assert_eq!(payload.as_ref(), b"poison");
    let header = |name: &str| headers.get(name).map(str::to_owned);
    assert_eq!(header(ORIGINAL_SUBJECT).as_deref(), Some("orders.paid"));
    assert_eq!(header(ORIGINAL_STREAM).as_deref(), Some("ORDERS"));
    assert_eq!(header(ORIGINAL_CONSUMER).as_deref(), Some("billing"));
    assert_eq!(header(ORIGINAL_SEQUENCE).as_deref(), Some("41"));
    assert_eq!(header(DELIVERY_COUNT).as_deref(), Some("1"));
    assert_eq!(header(ERROR).as_deref(), Some("cannot parse line 2"));
    assert_eq!(header("tenant").as_deref(), Some("acme"));
    assert_eq!(
        header("Nats-Msg-Id").as_deref(),
        Some("natty-dead-letter:ORDERS:billing:41"),
        "an id of its own"
    );
    assert_eq!(header(ORIGINAL_MESSAGE_ID).as_deref(), Some("order-41"));
    assert_eq!(
        header("Nats-Expected-Stream"),
        None,
        "publish controls are dropped"
    );
}

/// Every header reaches the dead letter, however long and however many values it has.
#[tokio::test]
async fn long_and_repeated_headers_reach_the_dead_letter_whole() {
    let sink = FakeSink::default();
    let service = handler(DeadLetterLayer::new(sink.clone(), "dlq.orders"));
    let (mut msg, _) = message("poison", 1);
    let long = "v".repeat(2000);
    msg.headers_mut().insert("long", long.as_str());
    msg.headers_mut().append("tag", "new");
    msg.headers_mut().append("tag", "paid");
    let _ = service.oneshot(msg).await;
    let published = sink.published();
    let headers = &published[0].1;
    assert_eq!(headers.get("long"), Some(long.as_str()));
    assert_eq!(headers.get_all("tag").collect::<Vec<_>>(), ["new", "paid"]);
    assert_eq!(headers.get("tenant"), Some("acme"));
    assert_eq!(headers.get(ORIGINAL_MESSAGE_ID), Some("order-41"));
}

/// The layer keeps a clone of the message, so what the handler changes in its own copy stays out
/// of the dead letter.
#[tokio::test]
async fn the_dead_letter_has_the_headers_delivered_not_the_handlers_changes() {
    let sink = FakeSink::default();
    let service = DeadLetterLayer::new(sink.clone(), "dlq.orders").layer(service_fn(
        |mut msg: Message| async move {
            msg.headers_mut().insert("tenant", "changed");
            msg.headers_mut().insert("added", "by handler");
            Err::<(), BoxError>(HandlerError::give_up("bad").into())
        },
    ));
    let (msg, _) = message("poison", 1);
    let _ = service.oneshot(msg).await;
    let published = sink.published();
    let headers = &published[0].1;
    assert_eq!(headers.get("tenant"), Some("acme"));
    assert_eq!(headers.get("added"), None);
}

#[tokio::test]
async fn a_retryable_failure_on_the_last_delivery_is_dead_lettered() {
    let sink = FakeSink::default();
    let service = handler(DeadLetterLayer::with_prefix(sink.clone(), "dlq").max_deliveries(5));
    let (msg, recorder) = message("flaky", 5);
    let _ = service.oneshot(msg).await;
    assert_eq!(recorder.settlements(), [Settlement::Term]);
    let published = sink.published();
    assert_eq!(published[0].0, "dlq.orders.paid");
    assert_eq!(published[0].1.get(DELIVERY_COUNT).unwrap(), "5");
}

#[tokio::test]
async fn a_retryable_failure_before_the_last_delivery_is_left_for_redelivery() {
    let sink = FakeSink::default();
    let service = handler(DeadLetterLayer::new(sink.clone(), "dlq").max_deliveries(5));
    let (msg, recorder) = message("flaky", 4);
    let _ = service.oneshot(msg).await;
    assert!(recorder.settlements().is_empty());
    assert!(sink.published().is_empty());
}

#[tokio::test]
async fn successes_are_not_dead_lettered() {
    let sink = FakeSink::default();
    let service = handler(DeadLetterLayer::new(sink.clone(), "dlq"));
    let (msg, recorder) = message("fine", 1);
    service.oneshot(msg).await.unwrap();
    assert!(recorder.settlements().is_empty());
    assert!(sink.published().is_empty());
}

#[tokio::test]
async fn a_failed_publish_naks_instead_so_nothing_is_lost() {
    let backoff = Backoff::new(Duration::from_secs(3), Duration::from_secs(60));
    let layer = DeadLetterLayer::new(FakeSink::failing(), "dlq").nak_backoff(backoff);
    let (msg, recorder) = message("poison", 2);
    let _ = handler(layer).oneshot(msg).await;
    assert_eq!(
        recorder.settlements(),
        [Settlement::Nak(Some(Duration::from_secs(6)))]
    );
}

#[tokio::test]
async fn under_an_ack_layer_the_dead_letter_term_wins() {
    let sink = FakeSink::default();
    let service = AckLayer::new().layer(handler(
        DeadLetterLayer::new(sink.clone(), "dlq").max_deliveries(3),
    ));
    let (msg, recorder) = message("flaky", 3);
    let _ = service.oneshot(msg).await;
    assert_eq!(recorder.settlements(), [Settlement::Term]);
    assert_eq!(sink.published().len(), 1);
}

/// A message on the last delivery its consumer settings allow.
fn message_from_consumer(payload: &'static str, delivered: u64) -> (Message, Recorder) {
    let settings = natty::ConsumerSettings::new("ORDERS", "billing").with_max_deliver(Some(3));
    Message::builder("orders.paid", payload)
        .delivered(delivered)
        .consumer_settings(settings)
        .build()
}

#[tokio::test]
async fn without_a_max_the_consumers_max_deliver_is_used() {
    let sink = FakeSink::default();
    let service = handler(DeadLetterLayer::new(sink.clone(), "dlq"));
    let (msg, recorder) = message_from_consumer("flaky", 2);
    let _ = service.clone().oneshot(msg).await;
    assert!(recorder.settlements().is_empty(), "not the last delivery");
    let (msg, recorder) = message_from_consumer("flaky", 3);
    let _ = service.oneshot(msg).await;
    assert_eq!(recorder.settlements(), [Settlement::Term]);
    assert_eq!(sink.published().len(), 1);
}

#[tokio::test]
async fn above_an_ack_layer_the_dead_letter_term_still_wins() {
    let sink = FakeSink::default();
    let layer = DeadLetterLayer::new(sink.clone(), "dlq");
    let service = layer.layer(AckLayer::new().layer(service_fn(|_: Message| async {
        Err::<(), BoxError>(HandlerError::retry("database down").into())
    })));
    let (msg, recorder) = message_from_consumer("flaky", 3);
    let _ = service.clone().oneshot(msg).await;
    assert_eq!(recorder.settlements(), [Settlement::Term]);
    assert_eq!(sink.published().len(), 1);
    // Before the last delivery the ack layer below still naks as usual.
    let (msg, recorder) = message_from_consumer("flaky", 1);
    let _ = service.oneshot(msg).await;
    assert!(matches!(recorder.outcome(), Some(Settlement::Nak(Some(_)))));
}

#[tokio::test]
async fn a_panic_on_the_last_delivery_is_dead_lettered_then_unwinds_on() {
    let sink = FakeSink::default();
    let service = DeadLetterLayer::new(sink.clone(), "dlq").layer(service_fn(|_: Message| async {
        panic!("handler bug");
        #[allow(unreachable_code)]
        Ok::<_, BoxError>(())
    }));
    let (msg, recorder) = message_from_consumer("any", 3);
    let call = tokio::spawn(service.oneshot(msg));
    assert!(call.await.unwrap_err().is_panic(), "the panic goes on");
    assert_eq!(recorder.settlements(), [Settlement::Term]);
    let published = sink.published();
    assert_eq!(
        published[0].1.get(ERROR).unwrap(),
        "handler panicked: handler bug"
    );
}

#[tokio::test]
async fn a_subject_its_consumer_would_deliver_back_is_refused_before_the_handler_runs() {
    let sink = FakeSink::default();
    let mut service = handler(DeadLetterLayer::new(sink.clone(), "orders.dead"));
    let settings =
        natty::ConsumerSettings::new("ORDERS", "billing").with_stream_subjects(["orders.>"]);
    let (msg, recorder) = Message::builder("orders.paid", "fine")
        .consumer_settings(settings)
        .build();
    let err = service.ready().await.unwrap().call(msg).await.unwrap_err();
    assert!(err.to_string().contains("delivered back"), "{err}");
    assert_eq!(recorder.settlements(), [Settlement::Nak(None)], "sent back");
    let err = service.ready().await.err().expect("no longer ready");
    let kind = err.downcast_ref::<DeadLetterError>().map(|e| e.kind());
    assert_eq!(kind, Some(DeadLetterErrorKind::DeliveredBack));
    assert!(sink.published().is_empty());
}

#[tokio::test]
async fn a_subject_of_another_stream_is_accepted() {
    let sink = FakeSink::default();
    let service = handler(DeadLetterLayer::new(sink, "dead.orders"));
    let settings =
        natty::ConsumerSettings::new("ORDERS", "billing").with_stream_subjects(["orders.>"]);
    let (msg, recorder) = Message::builder("orders.paid", "fine")
        .consumer_settings(settings)
        .build();
    service.oneshot(msg).await.unwrap();
    assert!(recorder.settlements().is_empty());
}

#[tokio::test]
async fn a_received_header_that_cannot_be_sent_again_is_left_out_of_the_dead_letter() {
    let sink = FakeSink::default();
    let service = handler(DeadLetterLayer::new(sink.clone(), "dlq.orders"));
    let (mut msg, recorder) = message("poison", 1);
    // async-nats reads a header line with an empty name; natty's map would refuse to send it.
    let mut wire = async_nats::HeaderMap::new();
    wire.insert("tenant", "acme");
    wire.insert("", "nameless");
    *msg.headers_mut() = HeaderMap::from(wire);
    assert!(msg.headers().invalid().is_some());

    let _ = service.oneshot(msg).await;
    assert_eq!(
        recorder.settlements(),
        [Settlement::Term],
        "dead-lettered, not naked"
    );
    let published = sink.published();
    assert_eq!(published.len(), 1);
    let headers = &published[0].1;
    assert_eq!(headers.invalid(), None, "the dead letter can be sent");
    assert_eq!(headers.get("tenant"), Some("acme"));
    assert!(headers.iter().all(|(name, _)| !name.is_empty()));
}
