//! Reliability scenario 2: a server crash during consume. The same `serve` call resumes on
//! its own and handles every message, none acked unhandled. Against real `nats-server`
//! processes from the test kit.
//!
//! `NATTY_SOAK_SECS` (default 0) keeps the test crashing the server for that long.

use std::time::Duration;

use natty::compat::GoNatty as _;
use natty::{BoxError, CancellationToken, ConsumeConfig, ConsumerOptions, Message};
use natty_testkit::Server;
use tokio::time::{timeout, Instant};
use tower::service_fn;

mod common;
use common::consume::{order, wait_count, wait_drained, Handled, Order};
use common::publish::{patient, publish_all};
use common::{connect_urls, soak_secs, DEADLINE};

// Scenario 2: server crash during consume.

/// SIGKILL and restart mid-consume (repeatedly under `NATTY_SOAK_SECS`): the same `serve` call
/// resumes on its own, every message is handled at least once, and none is acked without
/// being handled — messages whose first delivery fails come back and are handled too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_consume_handles_every_message_and_resumes_on_its_own() {
    let soak = Duration::from_secs(soak_secs(0));
    let total = 4_000 + 1_500 * soak.as_secs();
    let server = Server::start().unwrap();
    let natty = connect_urls(vec![server.url()], patient()).await;
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    publish_all(&natty, "orders.created", (0..total).map(order)).await;

    let (handled, mut count) = Handled::new();
    let seen = handled.clone();
    // serve settles what the handler leaves: `Ok` acks, `Err` naks for a redelivery.
    let stack = service_fn(move |message: Message| {
        let seen = seen.clone();
        async move {
            let order = Order::of(&message);
            if order.id.is_multiple_of(97) && message.info().delivered == 1 {
                return Err(BoxError::from("not yet"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            seen.record(order.id);
            Ok(())
        }
    });
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (natty, shutdown) = (natty.clone(), shutdown.clone());
        let config = ConsumeConfig::new("ORDERS", "orders")
            .concurrency(16)
            .consumer_options(ConsumerOptions::default().ack_wait(Duration::from_secs(2)));
        async move { natty.serve(config, shutdown, stack).await }
    });

    let started = Instant::now();
    let step = 1_000;
    let mut crashes = 0;
    loop {
        let next = (*count.borrow() + step).min(total as usize);
        wait_count(&mut count, next).await;
        let before = *count.borrow();
        if before >= total as usize {
            break;
        }
        server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restart().unwrap();
        crashes += 1;
        if started.elapsed() >= soak {
            break;
        }
    }
    assert!(crashes >= 1, "the server crashed mid-consume");

    wait_count(&mut count, total as usize).await;
    let info = wait_drained(&natty, "ORDERS", "orders").await;
    assert!(
        !serving.is_finished(),
        "serve kept running through the crash"
    );
    shutdown.cancel();
    timeout(DEADLINE, serving)
        .await
        .unwrap()
        .unwrap()
        .expect("serve ends cleanly");
    println!(
        "crash during consume: {crashes} crashes, {} handled more than once, {:?} deliveries",
        handled.duplicates(),
        info.delivered.consumer_sequence
    );
    assert_eq!(handled.ids().len() as u64, total, "every message handled");
    assert!(
        (0..total)
            .filter(|id| id.is_multiple_of(97))
            .all(|id| handled.times(id) >= 1),
        "messages that failed their first delivery were not acked"
    );
}
