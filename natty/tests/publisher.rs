//! The publish `Service` against a real server, read back through a plain async-nats client.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use natty::compat::GoNatty as _;
use natty::error::PublishErrorKind;
use natty::{OutgoingMessage, PublishConfig};
use natty_testkit::Server;
use tokio::time::timeout;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

mod common;
use common::{connect, connect_publishing};

const DEADLINE: Duration = Duration::from_secs(30);

/// Every message stored in `stream`, as (subject, payload, headers), read by a plain client.
async fn read_back(server: &Server, stream: &str) -> Vec<(String, String, async_nats::HeaderMap)> {
    let plain = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = plain.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let count = stream.get_info().await.unwrap().state.messages as usize;
    let mut messages = consumer.messages().await.unwrap().take(count);
    let mut read = Vec::new();
    while let Some(message) = timeout(DEADLINE, messages.next()).await.expect("read back") {
        let message = message.unwrap();
        read.push((
            message.subject.to_string(),
            String::from_utf8_lossy(&message.payload).into_owned(),
            message.headers.clone().unwrap_or_default(),
        ));
    }
    read
}

#[tokio::test]
async fn the_publisher_service_under_concurrency_limit_and_timeout_stores_every_call_once() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("SVC", ["svc.>"]).await.unwrap();
    let publisher = ServiceBuilder::new()
        .concurrency_limit(4)
        .timeout(Duration::from_secs(10))
        .service(natty.publisher());

    let calls = (0..50).map(|n| {
        let publisher = publisher.clone();
        async move {
            let message = OutgoingMessage::new(format!("svc.{}", n % 3), format!("m{n}"))
                .header("order", &n.to_string());
            publisher.oneshot(message).await
        }
    });
    let acks = timeout(DEADLINE, join_all(calls)).await.expect("calls");
    let mut sequences: Vec<u64> = acks
        .into_iter()
        .map(|ack| ack.expect("acked").sequence)
        .collect();
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (1..=50).collect::<Vec<u64>>(),
        "one sequence per call"
    );

    let stored = read_back(&server, "SVC").await;
    assert_eq!(stored.len(), 50);
    for (subject, payload, headers) in stored {
        let n: usize = payload[1..].parse().unwrap();
        assert_eq!(subject, format!("svc.{}", n % 3));
        assert_eq!(headers.get("order").unwrap().as_str(), n.to_string());
        assert!(headers.get("Nats-Msg-Id").is_some(), "natty stamped an id");
    }
    assert_eq!(natty.publisher().queued(), 0, "every call settled");
}

#[tokio::test]
async fn poll_ready_waits_for_queue_room_so_load_shed_refuses_and_room_comes_back() {
    let server = Server::start().unwrap();
    // Two slots of room; no stream yet, so both calls stay unsettled, retried until it exists.
    let config = PublishConfig::default().queue_capacity(2).retries(
        1_000,
        Duration::from_millis(20),
        Duration::from_millis(20),
    );
    let natty = connect_publishing(&server, config).await;
    let mut shed = ServiceBuilder::new().load_shed().service(natty.publisher());

    let first = shed
        .ready()
        .await
        .unwrap()
        .call(OutgoingMessage::new("late.a", "1"));
    let second = shed
        .ready()
        .await
        .unwrap()
        .call(OutgoingMessage::new("late.b", "2"));
    let first = tokio::spawn(first);
    let second = tokio::spawn(second);

    // The queue is full: poll_ready is pending, so LoadShed refuses at once.
    let refused: Result<_, BoxError> = shed
        .ready()
        .await
        .unwrap()
        .call(OutgoingMessage::new("late.c", "3"))
        .await;
    let refused = refused.expect_err("shed");
    assert!(
        refused.is::<tower::load_shed::error::Overloaded>(),
        "{refused}"
    );

    // A timeout on a waiting poll_ready gives up without sending anything.
    let mut plain = natty.publisher();
    let waited = timeout(Duration::from_millis(200), plain.ready()).await;
    assert!(waited.is_err(), "no room: poll_ready stays pending");

    // Once the stream exists the two calls are stored, and their room comes back.
    natty.create_stream("LATE", ["late.>"]).await.unwrap();
    let first = timeout(DEADLINE, first).await.unwrap().unwrap().unwrap();
    let second = timeout(DEADLINE, second).await.unwrap().unwrap().unwrap();
    assert_eq!(first.stream, "LATE");
    assert_ne!(first.sequence, second.sequence);
    let third = timeout(DEADLINE, shed.ready())
        .await
        .expect("room came back")
        .unwrap()
        .call(OutgoingMessage::new("late.c", "3"))
        .await
        .unwrap();
    assert_eq!(third.sequence, 3);

    let stored = read_back(&server, "LATE").await;
    let mut payloads: Vec<String> = stored.into_iter().map(|(_, payload, _)| payload).collect();
    payloads.sort();
    assert_eq!(
        payloads,
        ["1", "2", "3"],
        "shed call never sent; the others once"
    );
}

#[tokio::test]
async fn a_dropped_call_is_still_sent_and_a_duplicate_ack_reads_back_the_first() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("KEYED", ["keyed"]).await.unwrap();
    let mut publisher = natty.publisher();
    let message = OutgoingMessage::new("keyed", "first").header("Nats-Msg-Id", "key-1");
    let first = publisher
        .ready()
        .await
        .unwrap()
        .call(message)
        .await
        .unwrap();
    assert!(!first.duplicate);

    let again = OutgoingMessage::new("keyed", "second").header("Nats-Msg-Id", "key-1");
    let ack = publisher.ready().await.unwrap().call(again).await.unwrap();
    assert!(ack.duplicate);
    assert_eq!(ack.sequence, first.sequence);
    let stored = ack.stored_message().await.unwrap();
    assert_eq!(stored.payload, "first", "the first message under the id");

    // A caller that stops waiting (what `Timeout` does) drops the future after `call`
    // enqueued: the message is sent anyway.
    let dropped = publisher
        .ready()
        .await
        .unwrap()
        .call(OutgoingMessage::new("keyed", "dropped"));
    drop(dropped);
    timeout(DEADLINE, natty.flush()).await.expect("flush");
    let payloads: Vec<String> = read_back(&server, "KEYED")
        .await
        .into_iter()
        .map(|(_, payload, _)| payload)
        .collect();
    assert_eq!(payloads, ["first", "dropped"]);
}

#[tokio::test]
async fn after_shutdown_poll_ready_fails_closed_and_invalid_subjects_fail_the_call() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut publisher = natty.publisher();
    let invalid = publisher
        .ready()
        .await
        .unwrap()
        .call(OutgoingMessage::new("bad subject", "x"))
        .await
        .unwrap_err();
    assert_eq!(invalid.kind(), PublishErrorKind::InvalidSubject);

    natty.shutdown().await;
    let closed = natty.publisher().ready().await.unwrap_err();
    assert_eq!(closed.kind(), PublishErrorKind::Closed);
}

#[tokio::test]
async fn rate_limit_holds_the_publisher_back_and_only_the_allowed_calls_are_stored() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("RATE", ["rate.>"]).await.unwrap();
    let mut publisher = ServiceBuilder::new()
        .rate_limit(3, Duration::from_secs(3600))
        .service(natty.publisher());

    for n in 0..3 {
        let ready = timeout(DEADLINE, publisher.ready())
            .await
            .expect("within the rate")
            .expect("ready");
        ready
            .call(OutgoingMessage::new("rate.limited", format!("m{n}")))
            .await
            .expect("acked");
    }
    // Readiness is the whole contract: a fourth call is not admitted within the window.
    let fourth = timeout(Duration::from_millis(300), publisher.ready()).await;
    assert!(
        fourth.is_err(),
        "a fourth publish was admitted past the rate"
    );

    let stored = read_back(&server, "RATE").await;
    let payloads: Vec<&str> = stored
        .iter()
        .map(|(_, payload, _)| payload.as_str())
        .collect();
    assert_eq!(payloads, ["m0", "m1", "m2"]);
}

#[tokio::test]
async fn an_idempotency_key_in_any_case_is_sent_as_the_servers_nats_msg_id() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("CASED", ["cased.>"]).await.unwrap();
    for spelling in ["nats-msg-id", "NATS-MSG-ID", "Nats-Msg-Id"] {
        let mut headers = natty::HeaderMap::new();
        headers.insert(spelling, "order-17");
        natty
            .publisher()
            .publish_with_headers("cased.orders", headers, "order 17")
            .await
            .unwrap();
        let service_call =
            OutgoingMessage::new("cased.orders", "order 17").header(spelling, "order-17");
        let ack = natty.publisher().oneshot(service_call).await.unwrap();
        assert_eq!(
            ack.sequence, 1,
            "{spelling}: de-duplicated against the first"
        );
    }
    natty.flush().await;

    let stored = read_back(&server, "CASED").await;
    assert_eq!(
        stored.len(),
        1,
        "one message for one key, whatever its spelling"
    );
    let names: Vec<String> = stored[0]
        .2
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(names, ["Nats-Msg-Id"], "only the server's spelling is sent");
    assert_eq!(stored[0].2.get("Nats-Msg-Id").unwrap().as_str(), "order-17");
}
