//! Consumer settings are said once: the consumer's `max_deliver` and ack wait reach the
//! dead-letter and in-progress layers through each message, whatever the layer order.
//! Served by natty's driver against a real server; read back through a plain async-nats
//! client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use natty::compat::GoNatty as _;
use natty::{CancellationToken, Config, ConsumeConfig, ConsumerOptions, Message, Natty};
use natty_testkit::Server;
use natty_tower::ack::AckLayer;
use natty_tower::backoff::Backoff;
use natty_tower::classify::HandlerError;
use natty_tower::dead_letter;
use natty_tower::error::BoxError;
use natty_tower::ServiceBuilderExt;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tower::{service_fn, Service, ServiceBuilder};

const DEADLINE: Duration = Duration::from_secs(10);
const MAX_DELIVER: i64 = 3;

/// A server with the stream ORDERS (`orders.>`) holding one message, and a separate
/// dead-letter stream ORDERS_DEAD (`dead.orders`); natty for serving, a plain client for
/// reading back.
async fn setup(server: &Server) -> (Natty, jetstream::Context) {
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    natty
        .create_stream("ORDERS_DEAD", ["dead.orders"])
        .await
        .unwrap();
    natty.publish("orders.paid", "poison").await.unwrap();
    natty.flush().await;
    let plain = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    (natty, plain)
}

fn quick_naks() -> Backoff {
    Backoff::new(Duration::from_millis(5), Duration::from_millis(20))
}

/// Serve `stack` from the durable `billing` with the given consumer options, two calls at a
/// time (so a redelivery during a call would be fetched and seen).
fn serve<S>(
    natty: &Natty,
    options: ConsumerOptions,
    shutdown: &CancellationToken,
    stack: S,
) -> JoinHandle<Result<natty::ConsumeSummary, natty::ConsumeError>>
where
    S: Service<Message> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let natty = natty.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        natty
            .serve(
                ConsumeConfig::new("ORDERS", "billing")
                    .consumer_options(options)
                    .concurrency(2),
                shutdown,
                stack,
            )
            .await
    })
}

/// Waits until the dead-letter stream holds a message, then returns how many it holds and
/// the delivery count the first one records.
async fn wait_dead_letter(plain: &jetstream::Context) -> (u64, String) {
    let started = Instant::now();
    let mut stream = plain.get_stream("ORDERS_DEAD").await.unwrap();
    loop {
        let messages = stream.info().await.unwrap().state.messages;
        if messages > 0 {
            let stored = stream.get_raw_message(1).await.unwrap();
            let count = stored.headers.get(dead_letter::DELIVERY_COUNT).unwrap();
            return (messages, count.as_str().to_owned());
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no dead letter within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The consumer as the server sees it, through the plain client (`None` until the driver
/// has created it).
async fn consumer_info(plain: &jetstream::Context) -> Option<jetstream::consumer::Info> {
    let stream = plain.get_stream("ORDERS").await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer("billing").await.ok()?;
    Some(consumer.info().await.unwrap().clone())
}

/// Waits until the original is settled for good: nothing pending, nothing awaiting an ack.
async fn wait_original_gone(plain: &jetstream::Context) {
    let started = Instant::now();
    loop {
        let info = consumer_info(plain).await;
        if info
            .as_ref()
            .is_some_and(|info| info.num_ack_pending == 0 && info.num_pending == 0)
        {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "original not settled: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a poison message's handler fails on every delivery.
#[derive(Clone, Copy)]
enum Poison {
    /// A retryable error.
    Error,
    /// A panic, with no catch-panic layer anywhere.
    Panic,
}

/// A handler that fails as `poison` says, counting its calls.
fn poison_handler(
    poison: Poison,
    calls: Arc<AtomicU64>,
) -> impl Service<Message, Response = (), Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |_msg: Message| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            match poison {
                Poison::Error => Err(BoxError::from(HandlerError::retry("database down"))),
                Poison::Panic => panic!("handler bug"),
            }
        }
    })
}

/// Runs a poison message through `stack` on a consumer with `max_deliver` 3 and a
/// dead-letter layer given no max, then checks it was dead-lettered exactly once, after its
/// 3rd delivery, and the original is gone.
async fn poison_is_dead_lettered_once_after_max_deliver<S>(
    server: &Server,
    natty: &Natty,
    plain: &jetstream::Context,
    calls: &AtomicU64,
    stack: S,
) where
    S: Service<Message> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let _ = server;
    let shutdown = CancellationToken::new();
    let options = ConsumerOptions::default().max_deliver(MAX_DELIVER);
    let serving = serve(natty, options, &shutdown, stack);
    let (dead_letters, delivery_count) = wait_dead_letter(plain).await;
    wait_original_gone(plain).await;
    // Give a wrong second dead letter its chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();
    let stored = plain
        .get_stream("ORDERS_DEAD")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!((dead_letters, stored), (1, 1), "dead-lettered exactly once");
    assert_eq!(delivery_count, "3", "after its 3rd delivery");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "handled 3 times, no more");
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_once_after_the_consumers_max_deliver() {
    let server = Server::start().unwrap();
    let (natty, plain) = setup(&server).await;
    let calls = Arc::new(AtomicU64::new(0));
    let stack = ServiceBuilder::new()
        .layer(AckLayer::new().nak_backoff(quick_naks()))
        .dead_letter(natty.publisher(), "dead.orders") // no max: the consumer's is used
        .service(poison_handler(Poison::Error, Arc::clone(&calls)));
    poison_is_dead_lettered_once_after_max_deliver(&server, &natty, &plain, &calls, stack).await;
}

#[tokio::test]
async fn a_dead_letter_layer_above_the_ack_layer_still_dead_letters_the_last_delivery() {
    let server = Server::start().unwrap();
    let (natty, plain) = setup(&server).await;
    let calls = Arc::new(AtomicU64::new(0));
    let stack = ServiceBuilder::new()
        .dead_letter(natty.publisher(), "dead.orders")
        .layer(AckLayer::new().nak_backoff(quick_naks()))
        .service(poison_handler(Poison::Error, Arc::clone(&calls)));
    poison_is_dead_lettered_once_after_max_deliver(&server, &natty, &plain, &calls, stack).await;
}

#[tokio::test]
async fn a_panicking_handler_is_dead_lettered_on_its_last_delivery_without_catch_panic() {
    let server = Server::start().unwrap();
    let (natty, plain) = setup(&server).await;
    let calls = Arc::new(AtomicU64::new(0));
    let stack = ServiceBuilder::new()
        .layer(AckLayer::new().nak_backoff(quick_naks()))
        .dead_letter(natty.publisher(), "dead.orders")
        .service(poison_handler(Poison::Panic, Arc::clone(&calls)));
    poison_is_dead_lettered_once_after_max_deliver(&server, &natty, &plain, &calls, stack).await;
}

/// An in-progress layer given no interval keeps a handler that runs 2.5 times the consumer's
/// 1 s ack wait from being redelivered.
#[tokio::test]
async fn an_in_progress_layer_without_an_interval_uses_the_consumers_ack_wait() {
    let server = Server::start().unwrap();
    let (natty, plain) = setup(&server).await;
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    let stack = ServiceBuilder::new()
        .ack_messages()
        .in_progress()
        .service(service_fn(move |_msg: Message| {
            let calls = Arc::clone(&counter);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Ok::<_, BoxError>(())
            }
        }));
    let shutdown = CancellationToken::new();
    let options = ConsumerOptions::default().ack_wait(Duration::from_secs(1));
    let serving = serve(&natty, options, &shutdown, stack);
    wait_original_gone(&plain).await;
    let info = consumer_info(&plain).await.unwrap();
    shutdown.cancel();
    timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();
    assert_eq!(
        info.delivered.consumer_sequence, 1,
        "delivered once, never redelivered: {info:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "handled once");
    assert_eq!(info.ack_floor.stream_sequence, 1, "acked");
}
