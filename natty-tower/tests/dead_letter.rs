//! The dead-letter layer against a real nats-server, through async-nats' JetStream context.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, PullConsumer};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use natty::Message;
use natty_testkit::Server;
use natty_tower::classify::HandlerError;
use natty_tower::dead_letter::{self, DeadLetterLayer};
use natty_tower::error::BoxError;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

const DEADLINE: Duration = Duration::from_secs(10);

/// A server with an ORDERS stream holding one message, and a pull consumer on it.
async fn setup(server: &Server) -> (jetstream::Context, PullConsumer) {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let orders = js
        .create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "order-1");
    headers.insert("tenant", "acme");
    js.publish_with_headers("orders.paid", headers, "poison".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let consumer = orders
        .create_consumer(pull::Config {
            durable_name: Some("billing".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    (js, consumer)
}

async fn next_message(consumer: &PullConsumer) -> Message {
    let mut messages = consumer
        .fetch()
        .max_messages(1)
        .expires(DEADLINE)
        .messages()
        .await
        .unwrap();
    let raw = messages.next().await.expect("a message").unwrap();
    Message::from_jetstream(raw)
}

async fn give_up(msg: Message, layer: DeadLetterLayer<jetstream::Context>) {
    let service = layer.layer(service_fn(|_: Message| async {
        Err::<(), _>(BoxError::from(HandlerError::give_up("unknown customer")))
    }));
    let err = service.oneshot(msg).await.unwrap_err();
    assert_eq!(err.to_string(), "unknown customer");
}

#[tokio::test]
async fn a_given_up_message_is_stored_in_the_dead_letter_stream_and_termed() {
    let server = Server::start().unwrap();
    let (js, mut consumer) = setup(&server).await;
    let dlq = js
        .create_stream(stream::Config {
            name: "DLQ".into(),
            subjects: vec!["dlq.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    let msg = next_message(&consumer).await;
    give_up(msg, DeadLetterLayer::with_prefix(js.clone(), "dlq")).await;

    let stored = dlq
        .get_last_raw_message_by_subject("dlq.orders.paid")
        .await
        .unwrap();
    assert_eq!(stored.payload.as_ref(), b"poison");
    let header = |name: &str| stored.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(
        header(dead_letter::ORIGINAL_SUBJECT).as_deref(),
        Some("orders.paid")
    );
    assert_eq!(
        header(dead_letter::ORIGINAL_STREAM).as_deref(),
        Some("ORDERS")
    );
    assert_eq!(
        header(dead_letter::ORIGINAL_CONSUMER).as_deref(),
        Some("billing")
    );
    assert_eq!(header(dead_letter::ORIGINAL_SEQUENCE).as_deref(), Some("1"));
    assert_eq!(header(dead_letter::DELIVERY_COUNT).as_deref(), Some("1"));
    assert_eq!(
        header(dead_letter::ERROR).as_deref(),
        Some("unknown customer")
    );
    assert_eq!(header("tenant").as_deref(), Some("acme"));

    // Termed: the consumer has nothing pending or awaiting an ack.
    let started = Instant::now();
    loop {
        let info = consumer.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "message never termed: {info:?}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_failed_dead_letter_publish_naks_so_the_message_comes_back() {
    let server = Server::start().unwrap();
    let (js, consumer) = setup(&server).await;

    // No stream captures "nowhere.>", so the publish fails.
    let msg = next_message(&consumer).await;
    give_up(msg, DeadLetterLayer::new(js, "nowhere.orders")).await;

    let again = next_message(&consumer).await;
    assert_eq!(again.info().stream_sequence, 1);
    assert_eq!(again.info().delivered, 2);
}
