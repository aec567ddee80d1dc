//! Reliability under faulty handlers: slow and hung handlers
//! under natty-tower's `in_progress` and tower's `timeout`, and a storm of poison messages
//! through the dead-letter and catch-panic layers. Every test runs against real `nats-server`
//! processes from the test kit and waits on events with deadlines. Scenarios 1 to 4 exercise
//! natty alone and live with it: `natty/tests/publish_faults.rs`, `consume_faults.rs` and
//! `election_faults.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use futures_util::StreamExt;
use natty::compat::GoNatty as _;
use natty::{CancellationToken, Config, ConsumeConfig, ConsumerOptions, Natty, PublishConfig};
use natty_testkit::Server;
use natty_tower::ack::AckLayer;
use natty_tower::backoff::Backoff;
use natty_tower::classify::HandlerError;
use natty_tower::dead_letter::DeadLetterLayer;
use natty_tower::error::BoxError;
use natty_tower::json::JsonMessage;
use natty_tower::ServiceBuilderExt;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tower::{service_fn, ServiceBuilder};

mod common;
use common::{wait_count, Handled};

/// The longest any single wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);
/// Short ack wait, so redeliveries happen within the test.
const ACK_WAIT: Duration = Duration::from_secs(1);

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
    #[serde(default)]
    poison: Option<String>,
}

fn order(id: u64) -> String {
    format!(r#"{{"id":{id}}}"#)
}

fn quick_naks() -> Backoff {
    Backoff::new(Duration::from_millis(5), Duration::from_millis(20))
}

async fn connect(urls: Vec<String>, publish: PublishConfig) -> Natty {
    Natty::connect(
        Config::new(urls)
            .request_timeout(Duration::from_secs(2))
            .publish(publish),
    )
    .await
    .expect("connect")
}

/// A publisher whose retries outlast a server restart.
fn patient() -> PublishConfig {
    PublishConfig::default().retries(60, Duration::from_millis(50), Duration::from_millis(500))
}

/// Retries `attempt` until it succeeds: right after start a cluster may not yet know enough
/// peers to place replicated assets.
async fn placed<T, E: std::fmt::Debug, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(err) if Instant::now() < deadline => {
                println!("{what} not placed yet: {err:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("{what}: {err:?}"),
        }
    }
}

async fn stream_messages(natty: &Natty, name: &str) -> u64 {
    let mut stream = natty.jetstream().get_stream(name).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
}

/// Polls `check` every 10 ms until it holds, failing after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waited = timeout(within, async {
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        loop {
            ticks.tick().await;
            if check().await {
                return;
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "{what} within {within:?}");
}

/// Every payload stored in the stream, with how often it is stored, read back through an
/// ordered consumer.
async fn stored_payloads(natty: &Natty, name: &str) -> HashMap<String, u32> {
    let stream = natty.jetstream().get_stream(name).await.expect("stream");
    let total = stream.cached_info().state.messages;
    let mut counts = HashMap::new();
    if total == 0 {
        return counts;
    }
    // After a node loss the cluster may need a moment before it places a new consumer.
    let reader = placed("ordered consumer", || {
        stream.create_consumer(pull::OrderedConfig::default())
    })
    .await;
    let mut messages = reader.messages().await.expect("ordered messages");
    for _ in 0..total {
        let message = timeout(DEADLINE, messages.next())
            .await
            .expect("read back in time")
            .expect("stream open")
            .expect("message");
        *counts
            .entry(String::from_utf8_lossy(&message.payload).into_owned())
            .or_default() += 1;
    }
    counts
}

fn duplicated(stored: &HashMap<String, u32>) -> Vec<&String> {
    stored
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| p)
        .collect()
}

/// Publishes every payload to `subject` and waits until each is stored or reported.
async fn publish_all(natty: &Natty, subject: &str, payloads: impl IntoIterator<Item = String>) {
    timeout(DEADLINE, async {
        for payload in payloads {
            natty.publish(subject, payload).await.expect("queued");
        }
        natty.flush().await;
    })
    .await
    .expect("published in time");
}

async fn consumer_info(natty: &Natty, stream: &str, durable: &str) -> consumer::Info {
    let mut consumer: consumer::PullConsumer = natty
        .jetstream()
        .get_stream(stream)
        .await
        .expect("stream")
        .get_consumer(durable)
        .await
        .expect("consumer");
    consumer.info().await.expect("consumer info").clone()
}

/// Waits until the consumer has nothing left to deliver and nothing delivered unacked. The
/// server applies acks asynchronously, so a single read right after the last ack can lag.
async fn wait_drained(natty: &Natty, stream: &str, durable: &str) -> consumer::Info {
    let drained = timeout(DEADLINE, async {
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        loop {
            ticks.tick().await;
            let Ok(handle) = natty.jetstream().get_stream(stream).await else {
                continue;
            };
            let Ok(mut consumer) = handle.get_consumer::<pull::Config>(durable).await else {
                continue;
            };
            if let Ok(info) = consumer.info().await {
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    return info.clone();
                }
            }
        }
    })
    .await;
    match drained {
        Ok(info) => info,
        Err(_) => panic!(
            "consumer {durable} not drained: {:?}",
            consumer_info(natty, stream, durable).await
        ),
    }
}

// Scenario 5: slow or hung handler.

/// A handler that takes 2.5 ack waits, under `in_progress`, is handled once and never
/// redelivered (the server's delivery count stays at one per message), while the same handler
/// without it is redelivered: the control shows the test would notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_ack_wait_sends_in_progress_and_is_not_redelivered() {
    const TOTAL: u64 = 4;
    let server = Server::start().unwrap();
    let natty = connect(vec![server.url()], PublishConfig::default()).await;
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    publish_all(&natty, "orders.created", (0..TOTAL).map(order)).await;

    let slow = |handled: Handled| {
        service_fn(move |order: JsonMessage<Order>| {
            let handled = handled.clone();
            async move {
                tokio::time::sleep(ACK_WAIT * 5 / 2).await;
                handled.record(order.payload.id);
                Ok::<_, BoxError>(())
            }
        })
    };
    // Free slots keep pulling, so a redelivery would be fetched and handled again.
    let config = |durable: &str| {
        ConsumeConfig::new("ORDERS", durable)
            .concurrency(2 * TOTAL as usize)
            .consumer_options(ConsumerOptions::default().ack_wait(ACK_WAIT))
    };
    let shutdown = CancellationToken::new();

    let (kept, mut kept_count) = Handled::new();
    let with_progress = ServiceBuilder::new()
        .ack_messages()
        .in_progress()
        .decode_json::<Order>()
        .service(slow(kept.clone()));
    let serving = tokio::spawn({
        let (natty, shutdown, config) = (natty.clone(), shutdown.clone(), config("kept"));
        async move { natty.serve(config, shutdown, with_progress).await }
    });
    let (control, mut control_count) = Handled::new();
    let without_progress = ServiceBuilder::new()
        .ack_messages()
        .decode_json::<Order>()
        .service(slow(control.clone()));
    let control_serving = tokio::spawn({
        let (natty, shutdown, config) = (natty.clone(), shutdown.clone(), config("control"));
        async move { natty.serve(config, shutdown, without_progress).await }
    });

    wait_count(&mut kept_count, TOTAL as usize).await;
    wait_count(&mut control_count, TOTAL as usize).await;
    let kept_info = wait_drained(&natty, "ORDERS", "kept").await;
    let control_info = consumer_info(&natty, "ORDERS", "control").await;
    shutdown.cancel();
    timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();
    timeout(DEADLINE, control_serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    assert_eq!(
        kept_info.delivered.consumer_sequence, TOTAL,
        "in progress kept every message from being redelivered"
    );
    assert_eq!(kept.duplicates(), 0, "each message handled once");
    assert!(
        control_info.delivered.consumer_sequence > TOTAL,
        "control: without in progress the server redelivers ({control_info:?})"
    );
}

/// What became of a message whose first handler hung.
struct HungHandover {
    /// From the hung call's start to the healthy instance handling the message.
    after: Duration,
    /// The delivery count the healthy instance saw.
    delivered: u64,
}

/// One message, first taken by an instance of one slot whose stack (from `hung_stack`, given
/// a channel to announce each call on) hangs; then a healthy instance joins the same durable.
/// Returns when and how the healthy instance handled the message, after checking that it was
/// handled once and stays settled after the hung instance shuts down.
async fn hand_over_from_a_hung_instance<S>(
    hung_stack: impl FnOnce(mpsc::UnboundedSender<Instant>) -> S,
) -> HungHandover
where
    S: tower::Service<natty::Message> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let server = Server::start().unwrap();
    let hung_node = connect(vec![server.url()], PublishConfig::default()).await;
    let healthy_node = connect(vec![server.url()], PublishConfig::default()).await;
    hung_node
        .create_stream("ORDERS", ["orders.>"])
        .await
        .unwrap();
    publish_all(&hung_node, "orders.created", [order(7)]).await;
    let config = |concurrency| {
        ConsumeConfig::new("ORDERS", "work")
            .concurrency(concurrency)
            .shutdown_grace(Duration::from_millis(100))
            .consumer_options(ConsumerOptions::default().ack_wait(ACK_WAIT))
    };

    // One slot, taken by the hung call: this instance fetches nothing more meanwhile.
    let (took, mut taken) = mpsc::unbounded_channel();
    let hung = hung_stack(took);
    let stop_hung = CancellationToken::new();
    let hung_serving = tokio::spawn({
        let (natty, shutdown) = (hung_node.clone(), stop_hung.clone());
        async move { natty.serve(config(1), shutdown, hung).await }
    });
    let hung_at = timeout(DEADLINE, taken.recv()).await.unwrap().unwrap();

    let (handled_tx, mut handled_rx) = mpsc::unbounded_channel();
    let healthy = ServiceBuilder::new()
        .ack_messages()
        .decode_json::<Order>()
        .service(service_fn(move |order: JsonMessage<Order>| {
            let sent = handled_tx.send((
                Instant::now(),
                order.payload.id,
                order.message.info().delivered,
            ));
            async move {
                sent.map_err(|_| BoxError::from("test gone"))?;
                Ok::<_, BoxError>(())
            }
        }));
    let stop_healthy = CancellationToken::new();
    let healthy_serving = tokio::spawn({
        let (natty, shutdown) = (healthy_node.clone(), stop_healthy.clone());
        async move { natty.serve(config(4), shutdown, healthy).await }
    });
    let (handled_at, id, delivered) = timeout(DEADLINE, handled_rx.recv())
        .await
        .expect("redelivered within a bound")
        .unwrap();
    assert_eq!(id, 7, "the hung message");

    // The hung instance's shutdown naks its stale delivery; that must not bring it back.
    stop_hung.cancel();
    timeout(DEADLINE, hung_serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    timeout(DEADLINE, hung_node.client().flush())
        .await
        .expect("nak sent")
        .unwrap();
    let info = wait_drained(&healthy_node, "ORDERS", "work").await;
    // A redelivery caused by that nak would show within a moment.
    let again = timeout(Duration::from_millis(500), handled_rx.recv()).await;
    assert!(again.is_err(), "handled again: {again:?}");
    assert_eq!(
        info.delivered.consumer_sequence, delivered,
        "no delivery after the one handled"
    );
    stop_healthy.cancel();
    timeout(DEADLINE, healthy_serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    HungHandover {
        after: handled_at - hung_at,
        delivered,
    }
}

/// An instance stuck on its hung handler: never ready again after its first call, so it
/// fetches nothing more and a redelivery can only go to another instance.
struct StuckAfterFirstCall<S> {
    inner: S,
    called: bool,
}

impl<S: tower::Service<natty::Message>> tower::Service<natty::Message> for StuckAfterFirstCall<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.called {
            // Stuck for good: nothing will ever wake this; the driver's shutdown still does.
            return std::task::Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: natty::Message) -> Self::Future {
        self.called = true;
        self.inner.call(msg)
    }
}

/// A handler that hangs holds its message only until the ack wait: the server then
/// redelivers it to another consumer instance, which handles it once; the hung instance's
/// late nak at shutdown does not bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_is_redelivered_to_another_consumer_after_the_ack_wait() {
    let handover = hand_over_from_a_hung_instance(|took| {
        ServiceBuilder::new()
            .ack_messages()
            .service(service_fn(move |_: natty::Message| {
                let _ = took.send(Instant::now());
                std::future::pending::<Result<(), BoxError>>()
            }))
    })
    .await;
    println!("hung handler: redelivered after {:?}", handover.after);
    assert_eq!(
        handover.delivered, 2,
        "redelivered once, to the other instance"
    );
    assert!(
        handover.after >= ACK_WAIT - Duration::from_millis(100),
        "redelivered before the ack wait ran out: {:?}",
        handover.after
    );
    assert!(
        handover.after < ACK_WAIT * 4,
        "redelivery took {:?}",
        handover.after
    );
}

/// Under `in_progress` a hung handler would hold its message forever; the recommended
/// `timeout` below it ends the call, the message is nak'd and another instance handles it:
/// not at the ack wait (heartbeats hold it), but once the timeout fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_under_in_progress_is_released_by_its_timeout_not_the_ack_wait() {
    const HANDLER_TIMEOUT: Duration = Duration::from_secs(3);
    let handover = hand_over_from_a_hung_instance(|took| {
        let stack = ServiceBuilder::new()
            .layer(AckLayer::new().nak_backoff(quick_naks()))
            .in_progress()
            .timeout(HANDLER_TIMEOUT)
            .service(service_fn(move |_: natty::Message| {
                let _ = took.send(Instant::now());
                std::future::pending::<Result<(), BoxError>>()
            }));
        StuckAfterFirstCall {
            inner: stack,
            called: false,
        }
    })
    .await;
    println!(
        "hung handler under in progress: redelivered after {:?}",
        handover.after
    );
    assert_eq!(
        handover.delivered, 2,
        "redelivered once, to the other instance"
    );
    assert!(
        handover.after >= HANDLER_TIMEOUT - Duration::from_millis(100),
        "redelivered at the ack wait despite in progress: {:?}",
        handover.after
    );
    assert!(
        handover.after < HANDLER_TIMEOUT + ACK_WAIT * 2,
        "redelivery took {:?}",
        handover.after
    );
}

// Scenario 6: poison storm.

/// 100 poison messages (1%) among 10,000 — refused by the handler, panicking it, or not JSON
/// at all: every good message is handled exactly once, every poison message is in the
/// dead-letter stream exactly once, and the server delivered each message exactly as often as
/// the policy allows (once, or `max_deliver` times), never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_storm_dead_letters_every_poison_once_and_handles_every_good_message_once() {
    const TOTAL: u64 = 10_000;
    const MAX_DELIVER: u64 = 3;
    let server = Server::start().unwrap();
    let natty = connect(vec![server.url()], patient()).await;
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    natty.create_stream("DLQ", ["dlq.>"]).await.unwrap();

    // Poison payload -> kind: 0 refused, 1 panics the handler, 2 not JSON.
    let mut poison = HashMap::new();
    let payloads: Vec<String> = (0..TOTAL)
        .map(|id| {
            if id % 100 != 50 {
                return order(id);
            }
            let payload = match (id / 100) % 3 {
                0 => format!(r#"{{"id":{id},"poison":"refuse"}}"#),
                1 => format!(r#"{{"id":{id},"poison":"panic"}}"#),
                _ => format!("not json {id}"),
            };
            poison.insert(payload.clone(), (id / 100) % 3);
            payload
        })
        .collect();
    publish_all(&natty, "orders.created", payloads).await;
    let good = TOTAL as usize - poison.len();
    let retried = poison.values().filter(|kind| **kind < 2).count() as u64;
    let malformed = poison.len() as u64 - retried;

    let (handled, mut count) = Handled::new();
    let attempts: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let (seen, tried) = (handled.clone(), attempts.clone());
    let stack = ServiceBuilder::new()
        .layer(AckLayer::new().nak_backoff(quick_naks()))
        .layer(DeadLetterLayer::new(natty.publisher(), "dlq.orders").max_deliveries(MAX_DELIVER))
        .catch_panic()
        .decode_json::<Order>()
        .service(service_fn(move |order: JsonMessage<Order>| {
            let (seen, tried) = (seen.clone(), tried.clone());
            async move {
                let id = order.payload.id;
                match order.payload.poison.as_deref() {
                    None => {
                        seen.record(id);
                        Ok(())
                    }
                    Some(kind) => {
                        *tried.lock().unwrap().entry(id).or_default() += 1;
                        if kind == "panic" {
                            panic!("poison order {id}");
                        }
                        Err(BoxError::from(HandlerError::retry("downstream refuses")))
                    }
                }
            }
        }));
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (natty, shutdown) = (natty.clone(), shutdown.clone());
        let config = ConsumeConfig::new("ORDERS", "orders")
            .concurrency(32)
            .consumer_options(ConsumerOptions::default().max_deliver(MAX_DELIVER as i64));
        async move { natty.serve(config, shutdown, stack).await }
    });

    wait_count(&mut count, good).await;
    eventually("every poison dead-lettered", DEADLINE, || async {
        stream_messages(&natty, "DLQ").await >= poison.len() as u64
    })
    .await;
    let info = wait_drained(&natty, "ORDERS", "orders").await;
    shutdown.cancel();
    let summary = timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();

    assert_eq!(handled.ids().len(), good, "every good message handled");
    assert_eq!(handled.duplicates(), 0, "no good message handled twice");
    let dead = stored_payloads(&natty, "DLQ").await;
    assert!(duplicated(&dead).is_empty(), "a poison dead-lettered twice");
    let dead: HashSet<&String> = dead.keys().collect();
    let expected: HashSet<&String> = poison.keys().collect();
    assert_eq!(
        dead, expected,
        "exactly the poison is in the dead-letter stream"
    );
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len() as u64, retried);
    assert!(
        attempts.values().all(|n| *n == MAX_DELIVER),
        "each retried poison tried max-deliver times: {attempts:?}"
    );
    assert_eq!(
        info.delivered.consumer_sequence,
        good as u64 + retried * MAX_DELIVER + malformed,
        "deliveries beyond the policy"
    );
    println!("poison storm: {summary:?}");
}
