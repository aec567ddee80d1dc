//! natty-tower stacks driven by natty's consumer driver (`Natty::serve`) against a real server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use natty::compat::GoNatty as _;
use natty::election::ElectionConfig;
use natty::{CancellationToken, Config, ConsumeConfig, ConsumerOptions, Natty};
use natty_testkit::Server;
use natty_tower::ack::AckLayer;
use natty_tower::backoff::Backoff;
use natty_tower::classify::HandlerError;
use natty_tower::dead_letter::DeadLetterLayer;
use natty_tower::error::BoxError;
use natty_tower::json::JsonMessage;
use natty_tower::leader::FencingToken;
use natty_tower::ServiceBuilderExt;
use tokio::time::timeout;
use tower::{service_fn, ServiceBuilder};

mod common;
use common::{wait_count, Handled};

const DEADLINE: Duration = Duration::from_secs(90);

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
    #[serde(default)]
    poison: bool,
}

fn quick_naks() -> Backoff {
    Backoff::new(Duration::from_millis(5), Duration::from_millis(20))
}

async fn connect(server: &Server) -> Natty {
    Natty::connect(Config::new([server.url()])).await.unwrap()
}

async fn publish_orders(natty: &Natty, ids: std::ops::Range<u64>) {
    for id in ids {
        natty
            .publish("orders.created", format!(r#"{{"id":{id}}}"#))
            .await
            .unwrap();
    }
    natty.flush().await;
}

async fn consumer_info(natty: &Natty, durable: &str) -> async_nats::jetstream::consumer::Info {
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = natty
        .jetstream()
        .get_stream("ORDERS")
        .await
        .unwrap()
        .get_consumer(durable)
        .await
        .unwrap();
    consumer.info().await.unwrap().clone()
}

/// Waits until the server has applied every ack: it does so asynchronously, so a consumer
/// info read right after the last ack can still count it as pending.
async fn wait_settled(natty: &Natty, durable: &str) -> async_nats::jetstream::consumer::Info {
    wait_ack_pending(natty, durable, 0).await
}

/// Waits until the server counts exactly `expected` delivered-but-unacked messages.
async fn wait_ack_pending(
    natty: &Natty,
    durable: &str,
    expected: u64,
) -> async_nats::jetstream::consumer::Info {
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    // Well below the 30 s ack wait: a message really left unsettled fails this.
    let waited = timeout(Duration::from_secs(10), async {
        loop {
            ticks.tick().await;
            let info = consumer_info(natty, durable).await;
            if info.num_ack_pending as u64 == expected {
                return info;
            }
        }
    })
    .await;
    match waited {
        Ok(info) => info,
        Err(_) => panic!(
            "delivered messages left unsettled: {:?}",
            consumer_info(natty, durable).await
        ),
    }
}

/// A poison message lands in the dead-letter subject after max deliveries, with its headers,
/// while 10,000 good messages are all processed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_after_max_deliveries_while_good_messages_flow() {
    const GOOD: u64 = 10_000;
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    natty.create_stream("DLQ", ["dlq.>"]).await.unwrap();
    let mut dead_letters = natty.client().subscribe("dlq.>").await.unwrap();
    natty.client().flush().await.unwrap();

    for id in 0..GOOD {
        natty
            .publish("orders.created", format!(r#"{{"id":{id}}}"#))
            .await
            .unwrap();
        if id == GOOD / 2 {
            natty
                .publish("orders.created", r#"{"id":424242,"poison":true}"#)
                .await
                .unwrap();
            natty
                .publish("orders.created", "not json at all")
                .await
                .unwrap();
        }
    }
    natty.flush().await;

    let (handled, mut count) = Handled::new();
    let attempts = Arc::new(Mutex::new(0u32));
    let (seen, poison_attempts) = (handled.clone(), attempts.clone());
    let stack = ServiceBuilder::new()
        .trace_messages()
        .layer(AckLayer::new().nak_backoff(quick_naks()))
        .layer(DeadLetterLayer::new(natty.publisher(), "dlq.orders").max_deliveries(3))
        .catch_panic()
        .decode_json::<Order>()
        .service(service_fn(move |order: JsonMessage<Order>| {
            let (seen, poison_attempts) = (seen.clone(), poison_attempts.clone());
            async move {
                if order.payload.poison {
                    *poison_attempts.lock().unwrap() += 1;
                    return Err(BoxError::from(HandlerError::retry(
                        "downstream refuses this order",
                    )));
                }
                seen.record(order.payload.id);
                Ok(())
            }
        }));
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let natty = natty.clone();
        let config = ConsumeConfig::new("ORDERS", "orders")
            .concurrency(32)
            .consumer_options(ConsumerOptions::default().max_deliver(3));
        let shutdown = shutdown.clone();
        async move { natty.serve(config, shutdown, stack).await }
    });

    wait_count(&mut count, GOOD as usize).await;
    let mut letters = Vec::new();
    while letters.len() < 2 {
        letters.push(
            timeout(DEADLINE, dead_letters.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    shutdown.cancel();
    let summary = timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();

    assert_eq!(handled.duplicates(), 0, "no good message handled twice");
    assert_eq!(handled.ids().len() as u64, GOOD);
    assert_eq!(
        *attempts.lock().unwrap(),
        3,
        "the poison was tried max-deliveries times"
    );
    let poison = letters
        .iter()
        .find(|m| m.payload.as_ref().starts_with(b"{\"id\":424242"))
        .expect("poison dead-lettered");
    let headers = poison.headers.as_ref().expect("dead-letter headers");
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(
        header(natty_tower::dead_letter::ORIGINAL_SUBJECT).as_deref(),
        Some("orders.created")
    );
    assert_eq!(
        header(natty_tower::dead_letter::ORIGINAL_STREAM).as_deref(),
        Some("ORDERS")
    );
    assert_eq!(
        header(natty_tower::dead_letter::DELIVERY_COUNT).as_deref(),
        Some("3")
    );
    assert!(header(natty_tower::dead_letter::ORIGINAL_SEQUENCE).is_some());
    assert!(header(natty_tower::dead_letter::ERROR)
        .unwrap()
        .contains("downstream refuses"));
    assert!(
        letters
            .iter()
            .any(|m| m.payload.as_ref() == b"not json at all"),
        "bad json gives up at once"
    );

    let info = wait_settled(&natty, "orders").await;
    assert_eq!(info.num_pending, 0, "nothing left to deliver");
    assert!(summary.handled >= GOOD, "{summary:?}");
}

/// A handler that panics on some messages does not stop the consumer: the panic becomes an
/// error, the message is nak'd and handled on redelivery, and everything else flows on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_does_not_stop_the_consumer() {
    const TOTAL: u64 = 500;
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    publish_orders(&natty, 0..TOTAL).await;

    let (handled, mut count) = Handled::new();
    let seen = handled.clone();
    let stack = ServiceBuilder::new()
        .layer(AckLayer::new().nak_backoff(quick_naks()))
        .catch_panic()
        .service(service_fn(move |msg: natty::Message| {
            let seen = seen.clone();
            async move {
                let order: Order = serde_json::from_slice(msg.payload())?;
                if order.id.is_multiple_of(50) && msg.info().delivered == 1 {
                    panic!("handler bug on order {}", order.id);
                }
                seen.record(order.id);
                Ok::<_, BoxError>(())
            }
        }));
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (natty, shutdown) = (natty.clone(), shutdown.clone());
        async move {
            natty
                .serve(
                    ConsumeConfig::new("ORDERS", "orders").concurrency(8),
                    shutdown,
                    stack,
                )
                .await
        }
    });
    wait_count(&mut count, TOTAL as usize).await;
    shutdown.cancel();
    let summary = timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();
    assert_eq!(
        summary.failed,
        TOTAL / 50,
        "each panic surfaced as a failed call: {summary:?}"
    );
    assert_eq!(handled.ids().len() as u64, TOTAL);
}

/// Shutdown under load: every message acked was handled, and every handled message was acked
/// (a second run sees exactly the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_nothing_and_acks_only_what_was_handled() {
    const TOTAL: u64 = 3_000;
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    publish_orders(&natty, 0..TOTAL).await;

    let run = |handled: Handled, shutdown: CancellationToken| {
        let natty = natty.clone();
        let stack = ServiceBuilder::new()
            .ack_messages()
            .decode_json::<Order>()
            .service(service_fn(move |order: JsonMessage<Order>| {
                let handled = handled.clone();
                async move {
                    tokio::task::yield_now().await; // some work between fetch and ack
                    handled.record(order.payload.id);
                    Ok::<_, BoxError>(())
                }
            }));
        tokio::spawn(async move {
            natty
                .serve(
                    ConsumeConfig::new("ORDERS", "orders")
                        .concurrency(16)
                        .fetch_size(64),
                    shutdown,
                    stack,
                )
                .await
        })
    };

    let (first, mut first_count) = Handled::new();
    let stop_first = CancellationToken::new();
    let first_run = run(first.clone(), stop_first.clone());
    wait_count(&mut first_count, (TOTAL / 3) as usize).await;
    stop_first.cancel();
    let summary = timeout(DEADLINE, first_run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Messages fetched but not started were nak'd: the server keeps them pending for the next
    // consumer. Everything else delivered was handled and acked.
    let info = wait_ack_pending(&natty, "orders", summary.returned).await;
    let first_ids = first.ids();
    assert_eq!(summary.handled, first_ids.len() as u64, "{summary:?}");
    assert_eq!(
        TOTAL - info.num_pending - info.num_ack_pending as u64,
        first_ids.len() as u64,
        "acked exactly the messages that were handled"
    );

    let (second, mut second_count) = Handled::new();
    let stop_second = CancellationToken::new();
    let second_run = run(second.clone(), stop_second.clone());
    wait_count(&mut second_count, (TOTAL as usize) - first_ids.len()).await;
    stop_second.cancel();
    timeout(DEADLINE, second_run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let second_ids = second.ids();
    assert!(
        first_ids.is_disjoint(&second_ids),
        "a handled message came back: it was not acked"
    );
    assert_eq!(
        first_ids.len() + second_ids.len(),
        TOTAL as usize,
        "no message lost"
    );
    assert_eq!(first.duplicates() + second.duplicates(), 0);
}

/// A slow service never has more than `concurrency` messages outstanding on the server. Acks
/// are double acks here: the server applies plain acks asynchronously, so with them it may
/// briefly count one delivery more than the driver holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_service_never_has_more_than_n_messages_outstanding() {
    const N: usize = 4;
    const TOTAL: u64 = 200;
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    publish_orders(&natty, 0..TOTAL).await;
    natty
        .create_consumer("ORDERS", "slow", Vec::<String>::new())
        .await
        .unwrap();

    let (handled, mut count) = Handled::new();
    let seen = handled.clone();
    let stack = ServiceBuilder::new()
        .layer(AckLayer::new().double_ack(true))
        .decode_json::<Order>()
        .service(service_fn(move |order: JsonMessage<Order>| {
            let seen = seen.clone();
            async move {
                // Slow work: far slower than a fetch.
                tokio::time::sleep(Duration::from_millis(10)).await;
                seen.record(order.payload.id);
                Ok::<_, BoxError>(())
            }
        }));
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (natty, shutdown) = (natty.clone(), shutdown.clone());
        async move {
            natty
                .serve(
                    ConsumeConfig::new("ORDERS", "slow").concurrency(N),
                    shutdown,
                    stack,
                )
                .await
        }
    });

    // Sample what the server considers outstanding while the slow service works.
    let sampler = tokio::spawn({
        let natty = natty.clone();
        let mut count = count.clone();
        async move {
            let mut most = 0;
            let mut ticks = tokio::time::interval(Duration::from_millis(5));
            while *count.borrow_and_update() < TOTAL as usize {
                ticks.tick().await;
                most = most.max(consumer_info(&natty, "slow").await.num_ack_pending);
            }
            most
        }
    });
    wait_count(&mut count, TOTAL as usize).await;
    let most = timeout(DEADLINE, sampler).await.unwrap().unwrap();
    shutdown.cancel();
    timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();
    assert!(most <= N, "{most} outstanding with concurrency {N}");
    assert!(most > 0, "the sampler saw work outstanding");
}

/// Which node handled an order, under which fencing token.
type HandledBy = (&'static str, u64, u64);

/// Only the leader's consumer handles messages; after a handover the new leader carries on
/// with no message lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_consumes_and_a_handover_loses_nothing() {
    const TOTAL: u64 = 1_000;
    let server = Server::start().unwrap();
    let publisher = connect(&server).await;
    publisher
        .create_stream("ORDERS", ["orders.>"])
        .await
        .unwrap();

    let handled_by: Arc<Mutex<Vec<HandledBy>>> = Arc::default();
    let (handled, mut count) = Handled::new();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let natty = connect(&server).await;
        let leadership = natty
            .elect(
                ElectionConfig::new("orders_leader", "consumer", name).ttl(Duration::from_secs(2)),
            )
            .await
            .unwrap();
        if name == "a" {
            timeout(DEADLINE, leadership.wait_leader())
                .await
                .unwrap()
                .unwrap();
        }
        let (log, seen) = (handled_by.clone(), handled.clone());
        let stack = ServiceBuilder::new()
            .wait_for_leader(leadership.clone())
            .ack_messages()
            .decode_json::<Order>()
            .service(service_fn(move |order: JsonMessage<Order>| {
                let (log, seen) = (log.clone(), seen.clone());
                async move {
                    let token = order
                        .message
                        .extensions()
                        .get::<FencingToken>()
                        .expect("fencing token")
                        .0;
                    log.lock().unwrap().push((name, token, order.payload.id));
                    seen.record(order.payload.id);
                    Ok::<_, BoxError>(())
                }
            }));
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn({
            let (natty, shutdown) = (natty.clone(), shutdown.clone());
            async move {
                natty
                    .serve(
                        ConsumeConfig::new("ORDERS", "orders").concurrency(4),
                        shutdown,
                        stack,
                    )
                    .await
            }
        });
        nodes.push((leadership, shutdown, serving));
    }

    publish_orders(&publisher, 0..TOTAL / 2).await;
    wait_count(&mut count, (TOTAL / 2) as usize).await;

    // Hand over: node a stops consuming and releases leadership; b takes over.
    let (a_leadership, a_shutdown, a_serving) = nodes.remove(0);
    a_shutdown.cancel();
    timeout(DEADLINE, a_serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    a_leadership.stop().await;
    timeout(DEADLINE, nodes[0].0.wait_leader())
        .await
        .unwrap()
        .unwrap();

    publish_orders(&publisher, TOTAL / 2..TOTAL).await;
    wait_count(&mut count, TOTAL as usize).await;
    let (_b, b_shutdown, b_serving) = nodes.remove(0);
    b_shutdown.cancel();
    timeout(DEADLINE, b_serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let log = handled_by.lock().unwrap().clone();
    assert_eq!(handled.ids().len() as u64, TOTAL, "no message lost");
    assert_eq!(handled.duplicates(), 0);
    let a: Vec<_> = log.iter().filter(|(node, ..)| *node == "a").collect();
    let b: Vec<_> = log.iter().filter(|(node, ..)| *node == "b").collect();
    assert_eq!(
        a.len() as u64,
        TOTAL / 2,
        "only the leader (a) consumed before the handover"
    );
    assert_eq!(
        b.len() as u64,
        TOTAL / 2,
        "the new leader (b) consumed the rest"
    );
    let a_max = a.iter().map(|(_, token, _)| *token).max().unwrap();
    let b_min = b.iter().map(|(_, token, _)| *token).min().unwrap();
    assert!(
        b_min > a_max,
        "b's fencing token {b_min} follows a's {a_max}"
    );
}
