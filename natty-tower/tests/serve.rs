//! A natty-tower stack driven by natty's consumer driver against a real server: good messages
//! are handled once each, poison messages end in the dead-letter stream, nothing is redelivered
//! forever.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natty::{CancellationToken, Config, ConsumeConfig, Natty};
use natty_testkit::Server;
use natty_tower::json::Json;
use natty_tower::ServiceBuilderExt;
use tower::{service_fn, ServiceBuilder};

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
}

const GOOD: u64 = 1_000;
const POISON: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dead_letter_stream_while_good_messages_are_handled_once() {
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    natty.create_stream("DLQ", ["dlq.>"]).await.unwrap();
    for id in 0..GOOD {
        natty
            .publish("orders.created", format!(r#"{{"id":{id}}}"#))
            .await
            .unwrap();
        if id % (GOOD / POISON) == 0 {
            natty.publish("orders.created", "not json").await.unwrap();
        }
    }
    natty.flush().await;

    let handled = Arc::new(Mutex::new(HashSet::new()));
    let duplicates = Arc::new(Mutex::new(0u64));
    let shutdown = CancellationToken::new();
    let (seen, dups, stop) = (handled.clone(), duplicates.clone(), shutdown.clone());
    let stack = ServiceBuilder::new()
        .trace_messages()
        .ack_messages()
        .dead_letter(natty.clone(), "dlq.orders")
        .catch_panic()
        .decode_json::<Order>()
        .service(service_fn(move |order: Json<Order>| {
            let (seen, dups, stop) = (seen.clone(), dups.clone(), stop.clone());
            async move {
                let mut seen = seen.lock().unwrap();
                if !seen.insert(order.payload.id) {
                    *dups.lock().unwrap() += 1;
                }
                if seen.len() as u64 == GOOD {
                    stop.cancel();
                }
                Ok::<_, natty_tower::error::BoxError>(())
            }
        }));

    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        natty.serve(
            ConsumeConfig::new("ORDERS", "orders").concurrency(16),
            shutdown,
            stack,
        ),
    )
    .await
    .expect("stack finishes")
    .unwrap();

    assert_eq!(handled.lock().unwrap().len() as u64, GOOD);
    assert_eq!(
        *duplicates.lock().unwrap(),
        0,
        "no good message handled twice"
    );
    assert_eq!(summary.handled, GOOD, "{summary:?}");

    let mut dlq = natty.jetstream().get_stream("DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, POISON);
    let first = dlq.get_raw_message(1).await.unwrap();
    assert_eq!(first.payload.as_ref(), b"not json");
    assert_eq!(
        first
            .headers
            .get(natty_tower::dead_letter::ORIGINAL_SUBJECT)
            .map(|v| v.as_str()),
        Some("orders.created")
    );

    let mut consumer: natty::async_nats::jetstream::consumer::PullConsumer = natty
        .jetstream()
        .get_stream("ORDERS")
        .await
        .unwrap()
        .get_consumer("orders")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.num_ack_pending, 0,
        "every delivered message was settled"
    );
}
