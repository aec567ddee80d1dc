//! Reliability scenarios 3 and 4: the client's cluster node dies, or the client is cut off
//! for longer than its election lease, while it publishes, consumes, keeps a KV value and
//! campaigns. Nothing accepted is lost, and there is one leader at a time. Against real
//! `nats-server` processes from the test kit; `election.rs` checks leadership alone through
//! the same faults.

use std::collections::HashSet;
use std::time::Duration;

use natty::compat::GoNatty as _;
use natty::{
    BoxError, CancellationToken, Config, ConsumeConfig, ConsumerOptions, ElectionConfig,
    Leadership, Message, Natty, PublishConfig,
};
use natty_testkit::{Cluster, Proxy, Server};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tower::service_fn;

mod common;
use common::consume::{order, wait_count, wait_drained, Handled, Order};
use common::election::{settled_leader, Terms};
use common::publish::{
    drain, duplicated, patient, publish_all, reports, resend, stored_payloads, stream_config,
};
use common::{connect_urls, placed, DEADLINE};

/// Election lease of every election here.
const TTL: Duration = Duration::from_secs(2);

/// A service that records each order's id; `serve` acks it after `Ok`.
fn recording(
    handled: Handled,
) -> impl tower::Service<Message, Response = (), Error = BoxError, Future = impl Send + 'static>
       + Send
       + 'static {
    service_fn(move |message: Message| {
        let handled = handled.clone();
        async move {
            handled.record(Order::of(&message).id);
            Ok::<_, BoxError>(())
        }
    })
}

async fn elect(natty: &Natty, bucket: &str, node: &str, replicas: usize) -> Leadership {
    let config = ElectionConfig::new(bucket, "leader", node)
        .ttl(TTL)
        .replicas(replicas);
    placed("election bucket", || natty.elect(config.clone())).await
}

// Scenario 3: cluster node loss.

/// A 3-node cluster with an R3 stream and R3 KV buckets: killing the node the client talks to
/// while it publishes, consumes and campaigns loses nothing — every message stored once and
/// handled, the KV value still there — and there is one leader at a time, then one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_clients_cluster_node_loses_nothing_and_keeps_one_leader() {
    const TOTAL: u64 = 5_000;
    let cluster = Cluster::start(3).unwrap();
    let (reports, mut failures) = reports(TOTAL as usize);
    let natty = connect_urls(cluster.urls(), patient().failures(reports)).await;
    let orders = natty.stream("ORDERS").unwrap();
    placed("R3 stream", || {
        orders.create_with_config(stream_config("ORDERS", &["orders.>"], 3))
    })
    .await;
    placed("R3 bucket", || {
        natty.create_bucket("settings", Duration::ZERO, 3, "")
    })
    .await;
    placed("first KV write", || {
        natty.put("settings", "mode", "live".into())
    })
    .await;
    natty
        .stream("ORDERS")
        .unwrap()
        .create_consumer(
            "orders",
            Vec::<String>::new(),
            ConsumerOptions::default().ack_wait(Duration::from_secs(2)),
        )
        .await
        .unwrap();

    let terms = Terms::default();
    let a = elect(&natty, "leaders", "a", 3).await;
    terms.record(&a);
    timeout(DEADLINE, a.wait_leader()).await.unwrap().unwrap();
    let other = connect_urls(cluster.urls(), PublishConfig::default()).await;
    let b = elect(&other, "leaders", "b", 3).await;
    terms.record(&b);
    settled_leader(&[&a, &b], DEADLINE).await;

    let (handled, mut count) = Handled::new();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (natty, shutdown) = (natty.clone(), shutdown.clone());
        let stack = recording(handled.clone());
        let config = ConsumeConfig::new("ORDERS", "orders")
            .concurrency(16)
            .consumer_options(ConsumerOptions::default().ack_wait(Duration::from_secs(2)));
        async move { natty.serve(config, shutdown, stack).await }
    });
    let (progress, mut published) = watch::channel(0u64);
    let publishing = tokio::spawn({
        let natty = natty.clone();
        async move {
            // Paced, so the node dies in the middle of publishing.
            for chunk in 0..TOTAL / 100 {
                for id in chunk * 100..(chunk + 1) * 100 {
                    natty.publish("orders.created", order(id)).await.unwrap();
                }
                progress.send_replace((chunk + 1) * 100);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    timeout(DEADLINE, published.wait_for(|n| *n >= TOTAL / 5))
        .await
        .unwrap()
        .unwrap();
    wait_count(&mut count, 100).await;

    let victim = cluster
        .index_of_port(natty.client().server_info().port)
        .expect("the client's node");
    assert!(a.is_leader(), "the client's candidate leads at the kill");
    cluster.node(victim).kill();
    assert!(*published.borrow() < TOTAL, "killed during publishing");
    assert!(*count.borrow() < TOTAL as usize, "killed during consuming");

    timeout(DEADLINE, publishing).await.unwrap().unwrap();
    timeout(DEADLINE, natty.flush()).await.expect("flush");
    assert!(drain(&mut failures).is_empty(), "no publish failed");
    wait_count(&mut count, TOTAL as usize).await;
    wait_drained(&natty, "ORDERS", "orders").await;
    let now_on = cluster.index_of_port(natty.client().server_info().port);
    assert_ne!(now_on, Some(victim), "the client moved to another node");

    let stored = stored_payloads(&natty, "ORDERS").await;
    assert!(duplicated(&stored).is_empty(), "stored twice");
    assert_eq!(stored.len() as u64, TOTAL, "every message stored");
    assert_eq!(handled.ids().len() as u64, TOTAL, "every message handled");
    assert_eq!(
        natty.get("settings", "mode").await.unwrap().as_deref(),
        Some(&b"live"[..]),
        "the KV value survived"
    );
    let leader = settled_leader(&[&a, &b], TTL * 10).await;
    println!(
        "node loss: leader now {}, {} terms, {} handled twice",
        [&a, &b][leader].node(),
        terms.all().len(),
        handled.duplicates()
    );
    terms.assert_safe();

    shutdown.cancel();
    timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();
    timeout(DEADLINE, a.stop()).await.expect("a stopped");
    timeout(DEADLINE, b.stop()).await.expect("b stopped");
}

// Scenario 4: network cut.

/// A client cut off by the proxy for longer than its lease: its leader term ends before the
/// other node's starts; its publishes stay queued or are reported within their retry budget
/// (none silently dropped, and a resend under the same `Nats-Msg-Id` stores each once); its
/// consumer resumes after the restore and handles what was published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_client_steps_down_reports_its_publishes_and_resumes_consuming() {
    const BEFORE: u64 = 100;
    const DURING: u64 = 200;
    let server = Server::start().unwrap();
    let (reports, mut failures) = reports(1024);
    let proxy = Proxy::start(server.addr()).unwrap();
    // The cut client: publisher, consumer and first leader. Its retry budget (3 × 1 s plus
    // backoff) is shorter than the cut.
    let cut = Natty::connect(
        Config::new([proxy.url()])
            .request_timeout(Duration::from_secs(1))
            .publish(
                PublishConfig::default()
                    .retries(3, Duration::from_millis(50), Duration::from_millis(200))
                    .failures(reports),
            ),
    )
    .await
    .unwrap();
    let direct = connect_urls(vec![server.url()], PublishConfig::default()).await;
    direct
        .stream("ORDERS")
        .unwrap()
        .create_with_config(stream_config("ORDERS", &["orders.>"], 1))
        .await
        .unwrap();
    direct
        .stream("AUDIT")
        .unwrap()
        .create_with_config(stream_config("AUDIT", &["audit"], 1))
        .await
        .unwrap();

    let terms = Terms::default();
    let a = elect(&cut, "cut_leaders", "a", 1).await;
    terms.record(&a);
    let old = timeout(DEADLINE, a.wait_leader()).await.unwrap().unwrap();
    let b = elect(&direct, "cut_leaders", "b", 1).await;
    terms.record(&b);
    settled_leader(&[&a, &b], DEADLINE).await;

    let (handled, mut count) = Handled::new();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (natty, shutdown) = (cut.clone(), shutdown.clone());
        let stack = recording(handled.clone());
        let config = ConsumeConfig::new("ORDERS", "orders")
            .concurrency(8)
            .consumer_options(ConsumerOptions::default().ack_wait(Duration::from_secs(2)));
        async move { natty.serve(config, shutdown, stack).await }
    });
    publish_all(&direct, "orders.created", (0..BEFORE).map(order)).await;
    wait_count(&mut count, BEFORE as usize).await;

    let cut_at = Instant::now();
    proxy.cut();
    for n in 0..DURING {
        let queued = timeout(Duration::from_secs(1), cut.publish("audit", n.to_string())).await;
        assert!(
            matches!(queued, Ok(Ok(()))),
            "publish {n} waited: {queued:?}"
        );
        direct
            .publish("orders.created", order(BEFORE + n))
            .await
            .unwrap();
    }
    timeout(DEADLINE, direct.flush()).await.expect("flushed");

    timeout(DEADLINE, old.ended())
        .await
        .expect("the cut leader steps down");
    let new = timeout(DEADLINE, b.wait_leader())
        .await
        .expect("the other node takes over")
        .unwrap();
    let ended = old.ended_at().expect("ended");
    println!(
        "cut: a stepped down {:?} after the cut, b took over {:?} after it",
        ended - cut_at,
        new.started_at() - cut_at
    );
    assert!(ended <= new.started_at(), "a still led when b took over");
    assert!(!a.is_leader());
    assert!(
        *count.borrow() <= BEFORE as usize,
        "the cut consumer handled nothing during the cut"
    );
    // Keep the cut past the cut client's whole publish retry budget.
    let hold = cut_at + Duration::from_secs(4);
    tokio::time::sleep_until(hold).await;
    proxy.restore();

    timeout(Duration::from_secs(15), cut.flush())
        .await
        .expect("publishes settle within a bound after the restore");
    // Whatever the client buffered during the cut reaches the server once it reconnects.
    timeout(DEADLINE, cut.client().flush())
        .await
        .expect("reconnected")
        .expect("client flushed");
    let failed = drain(&mut failures);
    let stored = stored_payloads(&direct, "AUDIT").await;
    let failed_payloads: HashSet<String> = failed
        .iter()
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    println!(
        "cut: {} publishes stored, {} reported failed, {} of those stored anyway",
        stored.len(),
        failed.len(),
        failed_payloads
            .iter()
            .filter(|p| stored.contains_key(*p))
            .count()
    );
    assert!(duplicated(&stored).is_empty(), "stored twice");
    let missing: Vec<u64> = (0..DURING)
        .filter(|n| {
            let n = n.to_string();
            !stored.contains_key(&n) && !failed_payloads.contains(&n)
        })
        .collect();
    assert!(missing.is_empty(), "silently dropped: {missing:?}");
    resend(&cut, failed).await;
    let stored = stored_payloads(&direct, "AUDIT").await;
    assert!(duplicated(&stored).is_empty(), "a resend was stored twice");
    assert_eq!(stored.len() as u64, DURING);

    wait_count(&mut count, (BEFORE + DURING) as usize).await;
    wait_drained(&direct, "ORDERS", "orders").await;
    assert_eq!(handled.ids().len() as u64, BEFORE + DURING);
    let leader = settled_leader(&[&a, &b], TTL * 5).await;
    assert_eq!(leader, 1, "b keeps leading after the restore");
    terms.assert_safe();

    shutdown.cancel();
    timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();
    timeout(DEADLINE, a.stop()).await.expect("a stopped");
    timeout(DEADLINE, b.stop()).await.expect("b stopped");
}
