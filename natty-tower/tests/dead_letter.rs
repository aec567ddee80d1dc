//! The dead-letter layer against a real nats-server, through async-nats' JetStream context.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, PullConsumer};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use natty::compat::GoNatty as _;
use natty::error::ConsumeErrorKind;
use natty::Message;
use natty::{CancellationToken, Config, ConsumeConfig, Natty};
use natty_testkit::Server;
use natty_tower::classify::HandlerError;
use natty_tower::dead_letter::{self, DeadLetterLayer};
use natty_tower::error::BoxError;
use natty_tower::ServiceBuilderExt;
use tokio::time::{timeout, Instant};
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

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

/// natty's publish service over `js`'s connection.
fn publisher(js: &jetstream::Context) -> natty::Publisher {
    Natty::from_client(js.client()).publisher()
}

async fn give_up(msg: Message, layer: DeadLetterLayer<natty::Publisher>) {
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
    give_up(msg, DeadLetterLayer::with_prefix(publisher(&js), "dlq")).await;

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
    give_up(msg, DeadLetterLayer::new(publisher(&js), "nowhere.orders")).await;

    let again = next_message(&consumer).await;
    assert_eq!(again.info().stream_sequence, 1);
    assert_eq!(again.info().delivered, 2);
}

/// The three kinds of original: published through natty (natty's own `Nats-Msg-Id`), through
/// a plain client with its own `Nats-Msg-Id`, and with no id at all. Returns their stream
/// sequences, in that order.
async fn publish_originals(natty: &Natty, plain: &jetstream::Context) -> [u64; 3] {
    let with_natty_id = natty
        .publisher()
        .publish_acked("orders.paid", "natty")
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "order-7");
    let with_foreign_id = plain
        .publish_with_headers("orders.paid", headers, "foreign".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let without_id = plain
        .publish("orders.paid", "none".into())
        .await
        .unwrap()
        .await
        .unwrap();
    [
        with_natty_id.sequence,
        with_foreign_id.sequence,
        without_id.sequence,
    ]
}

/// Every message stored on `subject` in `stream`, read with a plain client.
async fn stored_on(
    plain: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let mut handle = plain.get_stream(stream).await.unwrap();
    let last = handle.info().await.unwrap().state.last_sequence;
    let mut found = Vec::new();
    for sequence in 1..=last {
        if let Ok(stored) = handle.get_raw_message(sequence).await {
            if stored.subject.as_str() == subject {
                found.push(stored);
            }
        }
    }
    found
}

/// The original sequences the dead letters in `stored` name, sorted.
fn originals_of(stored: &[async_nats::jetstream::message::StreamMessage]) -> Vec<u64> {
    let mut sequences: Vec<u64> = stored
        .iter()
        .map(|dead| {
            dead.headers
                .get(dead_letter::ORIGINAL_SEQUENCE)
                .expect("origin header")
                .as_str()
                .parse()
                .unwrap()
        })
        .collect();
    sequences.sort_unstable();
    sequences
}

/// Waits until the consumer has nothing pending and nothing awaiting an ack.
async fn wait_consumer_empty(plain: &jetstream::Context, durable: &str) {
    let started = Instant::now();
    loop {
        let stream = plain.get_stream("ORDERS").await.unwrap();
        let ready = match stream.get_consumer::<pull::Config>(durable).await {
            Ok(mut consumer) => {
                let info = consumer.info().await.unwrap();
                info.num_ack_pending == 0 && info.num_pending == 0
            }
            Err(_) => false,
        };
        if ready {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "originals not settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With the dead-letter subject inside the consumed stream (the consumer filters it out),
/// every original's dead letter is stored exactly once, whatever `Nats-Msg-Id` the original
/// carried: the dead letter has its own id, so the stream never takes it for a duplicate of
/// the original.
#[tokio::test]
async fn dead_letters_inside_the_consumed_stream_land_once_whatever_the_originals_message_id() {
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    let plain = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let originals = publish_originals(&natty, &plain).await;
    let consumer = plain
        .get_stream("ORDERS")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("billing".into()),
            filter_subject: "orders.paid".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in originals {
        let msg = next_message(&consumer).await;
        give_up(msg, DeadLetterLayer::new(publisher(&plain), "orders.dead")).await;
    }
    wait_consumer_empty(&plain, "billing").await;
    let dead = stored_on(&plain, "ORDERS", "orders.dead").await;
    assert_eq!(
        originals_of(&dead),
        originals,
        "one dead letter per original"
    );
}

/// A stack whose dead letters its own consumer would deliver back is refused before any
/// handler runs, with an error that says why; the message it saw goes back unhandled.
#[tokio::test]
async fn serve_refuses_a_dead_letter_subject_its_consumer_would_deliver_back() {
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    natty.publish("orders.paid", "poison").await.unwrap();
    natty.flush().await;
    let called = Arc::new(AtomicBool::new(false));
    let handler_called = Arc::clone(&called);
    let stack = ServiceBuilder::new()
        .ack_messages()
        .dead_letter(natty.publisher(), "orders.dead")
        .service(service_fn(move |_: Message| {
            handler_called.store(true, Ordering::SeqCst);
            async { Err::<(), _>(BoxError::from(HandlerError::give_up("bad"))) }
        }));
    let err = timeout(
        DEADLINE,
        natty.serve(
            ConsumeConfig::new("ORDERS", "billing"),
            CancellationToken::new(),
            stack,
        ),
    )
    .await
    .expect("refused, not served")
    .expect_err("refused");
    assert_eq!(err.kind(), ConsumeErrorKind::NotReady, "{err}");
    let text = format!("{err:#}");
    println!("refused: {text}");
    assert!(
        text.contains("orders.dead") && text.contains("ORDERS") && text.contains("billing"),
        "says why: {text}"
    );
    assert!(!called.load(Ordering::SeqCst), "no handler ran");
    let plain = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    assert!(stored_on(&plain, "ORDERS", "orders.dead").await.is_empty());
    let consumer: PullConsumer = plain
        .get_stream("ORDERS")
        .await
        .unwrap()
        .get_consumer("billing")
        .await
        .unwrap();
    let again = next_message(&consumer).await;
    assert_eq!(
        again.payload().as_ref(),
        b"poison",
        "the message is not lost"
    );
}

/// The layout the README recommends: dead letters in their own stream. Each original is
/// dead-lettered exactly once whatever its `Nats-Msg-Id`, and is terminated only once its dead
/// letter is stored.
#[tokio::test]
async fn serve_with_a_separate_dead_letter_stream_dead_letters_every_original_once() {
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    natty
        .create_stream("ORDERS_DEAD", ["dead.orders"])
        .await
        .unwrap();
    let plain = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let originals = publish_originals(&natty, &plain).await;
    let stack = ServiceBuilder::new()
        .ack_messages()
        .dead_letter(natty.publisher(), "dead.orders")
        .service(service_fn(|_: Message| async {
            Err::<(), _>(BoxError::from(HandlerError::give_up("unknown customer")))
        }));
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (natty, shutdown) = (natty.clone(), shutdown.clone());
        async move {
            natty
                .serve(ConsumeConfig::new("ORDERS", "billing"), shutdown, stack)
                .await
        }
    });
    // Whenever the server counts an original as settled, its dead letter is already stored.
    let started = Instant::now();
    loop {
        let stream = plain.get_stream("ORDERS").await.unwrap();
        if let Ok(mut consumer) = stream.get_consumer::<pull::Config>("billing").await {
            let info = consumer.info().await.unwrap().clone();
            let settled = info.ack_floor.stream_sequence;
            let dead = originals_of(&stored_on(&plain, "ORDERS_DEAD", "dead.orders").await);
            let settled_originals: Vec<u64> = originals
                .iter()
                .copied()
                .filter(|s| *s <= settled)
                .collect();
            assert!(
                settled_originals.iter().all(|s| dead.contains(s)),
                "termed before its dead letter was stored: settled {settled_originals:?}, dead {dead:?}"
            );
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                break;
            }
        }
        assert!(started.elapsed() < DEADLINE, "originals not settled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let summary = timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.failed, 3, "{summary:?}");
    let dead = stored_on(&plain, "ORDERS_DEAD", "dead.orders").await;
    assert_eq!(originals_of(&dead), originals, "each exactly once");
}

/// Dead-lettering the same message twice (the consumer was recreated and delivered it again,
/// as after a dead letter whose acknowledgement was lost) stores one dead letter, and the
/// stream's "duplicate" answer counts as stored: the original is terminated.
#[tokio::test]
async fn dead_lettering_the_same_message_twice_stores_one_dead_letter() {
    let server = Server::start().unwrap();
    let (js, consumer) = setup(&server).await;
    js.create_stream(stream::Config {
        name: "ORDERS_DEAD".into(),
        subjects: vec!["dead.orders".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let msg = next_message(&consumer).await;
    give_up(msg, DeadLetterLayer::new(publisher(&js), "dead.orders")).await;
    wait_consumer_empty(&js, "billing").await;

    let orders = js.get_stream("ORDERS").await.unwrap();
    orders.delete_consumer("billing").await.unwrap();
    let consumer = orders
        .create_consumer(pull::Config {
            durable_name: Some("billing".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let again = next_message(&consumer).await;
    assert_eq!(again.info().stream_sequence, 1, "the same message");
    give_up(again, DeadLetterLayer::new(publisher(&js), "dead.orders")).await;
    wait_consumer_empty(&js, "billing").await;
    let dead = stored_on(&js, "ORDERS_DEAD", "dead.orders").await;
    assert_eq!(originals_of(&dead), [1], "one dead letter");
}

/// When the stream answers "duplicate" for a message that is not this dead letter (its id
/// was taken), the dead letter is not stored: the original is not terminated but comes back.
#[tokio::test]
async fn a_dead_letter_whose_id_is_taken_by_another_message_leaves_the_original_to_come_back() {
    let server = Server::start().unwrap();
    let (js, consumer) = setup(&server).await;
    js.create_stream(stream::Config {
        name: "ORDERS_DEAD".into(),
        subjects: vec!["dead.orders".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let msg = next_message(&consumer).await;
    let mut squatter = HeaderMap::new();
    squatter.insert("Nats-Msg-Id", dead_letter::message_id(msg.info()).as_str());
    js.publish_with_headers("dead.orders", squatter, "something else".into())
        .await
        .unwrap()
        .await
        .unwrap();

    give_up(msg, DeadLetterLayer::new(publisher(&js), "dead.orders")).await;
    let again = next_message(&consumer).await;
    assert_eq!(again.info().stream_sequence, 1, "the original came back");
    assert_eq!(again.info().delivered, 2);
    let dead = stored_on(&js, "ORDERS_DEAD", "dead.orders").await;
    assert_eq!(dead.len(), 1, "only the other message");
    assert_eq!(dead[0].payload.as_ref(), b"something else");
}
