//! Reliability under faults (issue 8, scenarios 1–6): server crashes during publish and
//! consume, losing a cluster node, a network cut longer than the election lease, slow and hung
//! handlers, and a storm of poison messages. Every test runs against real `nats-server`
//! processes from the test kit and waits on events with deadlines.
//!
//! `NATTY_SOAK_SECS` (default 0) keeps the crash-during-consume test crashing the server for
//! that long.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use natty::{
    CancellationToken, Config, ConsumeConfig, ConsumerOptions, ElectionConfig, LeaderState,
    Leadership, Natty, PublishConfig, PublishFailure, ReportSender, Term,
};
use natty_testkit::{Cluster, Proxy, Server};
use natty_tower::ack::AckLayer;
use natty_tower::backoff::Backoff;
use natty_tower::classify::HandlerError;
use natty_tower::dead_letter::DeadLetterLayer;
use natty_tower::error::BoxError;
use natty_tower::json::JsonMessage;
use natty_tower::ServiceBuilderExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};
use tower::{service_fn, ServiceBuilder};

/// The longest any single wait may take before the test fails.
mod common;
use common::{wait_count, Handled};

const DEADLINE: Duration = Duration::from_secs(60);
/// Election lease of every election here.
const TTL: Duration = Duration::from_secs(2);
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

fn soak() -> Duration {
    let secs = std::env::var("NATTY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Duration::from_secs(secs)
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

/// A report channel that never drops (a kept clone reads the count of undelivered reports).
fn reports(capacity: usize) -> (ReportSender<PublishFailure>, mpsc::Receiver<PublishFailure>) {
    let (sender, receiver) = mpsc::channel(capacity);
    (ReportSender::new(sender), receiver)
}

fn stream_config(name: &str, subjects: &[&str], replicas: usize) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
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

/// Every failure report waiting in the channel; after `flush` that is all of them.
fn drain(failures: &mut mpsc::Receiver<PublishFailure>) -> Vec<PublishFailure> {
    let mut all = Vec::new();
    while let Ok(failure) = failures.try_recv() {
        all.push(failure);
    }
    all
}

/// Queues each reported message again with `Natty::republish`, which keeps its headers and
/// `Nats-Msg-Id`, as a caller should.
async fn resend(natty: &Natty, failed: Vec<PublishFailure>) {
    for failure in failed {
        natty.republish(failure).await.expect("resend");
    }
    timeout(DEADLINE, natty.flush())
        .await
        .expect("resend flushed");
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

/// A stack that records each order's id and acks it.
fn recording_stack(
    handled: Handled,
) -> impl tower::Service<natty::Message, Response = (), Error = BoxError, Future = impl Send + 'static>
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(AckLayer::new().nak_backoff(quick_naks()))
        .decode_json::<Order>()
        .service(service_fn(move |order: JsonMessage<Order>| {
            let handled = handled.clone();
            async move {
                handled.record(order.payload.id);
                Ok::<_, BoxError>(())
            }
        }))
}

/// Every term any node held, to check that no two overlap.
#[derive(Clone, Default)]
struct Terms(Arc<Mutex<Vec<(String, Term)>>>);

impl Terms {
    fn record(&self, leadership: &Leadership) {
        let (terms, leadership) = (self.clone(), leadership.clone());
        tokio::spawn(async move {
            while let Ok(term) = leadership.wait_leader().await {
                let node = leadership.node().to_owned();
                terms.0.lock().unwrap().push((node, term.clone()));
                term.ended().await;
            }
        });
    }

    fn all(&self) -> Vec<(String, Term)> {
        self.0.lock().unwrap().clone()
    }

    /// Each term ended before the next one started, and fencing tokens only grow.
    fn assert_never_overlapped(&self) {
        let mut terms = self.all();
        terms.sort_by_key(|(_, term)| term.started_at());
        for pair in terms.windows(2) {
            let ((a_node, a), (b_node, b)) = (&pair[0], &pair[1]);
            let a_end = a.ended_at().unwrap_or_else(Instant::now);
            assert!(
                a_end <= b.started_at(),
                "{a_node} still led {:?} after {b_node} took over",
                a_end - b.started_at()
            );
            assert!(
                a.fencing_token() < b.fencing_token(),
                "fencing token reused"
            );
        }
    }
}

/// Waits until exactly one of `nodes` leads and the others name it; two leaders at any check
/// fail the test.
async fn one_leader(nodes: &[&Leadership], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let leaders: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].is_leader()).collect();
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if let [leader] = leaders[..] {
            let name = nodes[leader].node().to_owned();
            let agreed = nodes.iter().enumerate().all(|(i, n)| {
                i == leader
                    || n.state()
                        == LeaderState::Follower {
                            leader: Some(name.clone()),
                        }
            });
            if agreed {
                return leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single leader within {within:?}"
        );
        let mut changes: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
        let any =
            futures_util::future::select_all(changes.iter_mut().map(|rx| Box::pin(rx.changed())));
        // Lease expiries are not always published at once: re-check shortly anyway.
        let _ = timeout(Duration::from_millis(100), any).await;
    }
}

async fn elect(natty: &Natty, bucket: &str, node: &str, replicas: usize) -> Leadership {
    let config = ElectionConfig::new(bucket, "leader", node)
        .ttl(TTL)
        .replicas(replicas);
    placed("election bucket", || natty.elect(config.clone())).await
}

// Scenario 1: server crash during publish.

/// SIGKILL while 50,000 messages are being batched, restart on the same store: after flush,
/// every accepted message is in the stream exactly once (read back one by one), and the
/// stored and reported-failed messages add up to the accepted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_publish_loses_and_duplicates_nothing() {
    const TOTAL: u64 = 50_000;
    let server = Server::start().unwrap();
    let (reports, mut failures) = reports(TOTAL as usize);
    let natty = connect(vec![server.url()], patient().failures(reports.clone())).await;
    natty
        .create_stream_with(stream_config("BULK", &["bulk"], 1))
        .await
        .unwrap();

    let publisher = natty.clone();
    let publishing = tokio::spawn(async move {
        let mut accepted = 0u64;
        for n in 0..TOTAL {
            publisher.publish("bulk", n.to_string()).await.unwrap();
            accepted += 1;
        }
        accepted
    });
    eventually("a fifth stored", DEADLINE, || async {
        stream_messages(&natty, "BULK").await >= TOTAL / 5
    })
    .await;
    server.kill();
    let at_crash = natty.queued();
    server.restart().unwrap();
    assert!(at_crash > 0, "the crash came while messages were in flight");

    let accepted = timeout(DEADLINE, publishing).await.unwrap().unwrap();
    timeout(Duration::from_secs(120), natty.flush())
        .await
        .expect("flush");
    assert_eq!(accepted, TOTAL);
    assert_eq!(reports.dropped(), 0);
    let failed: HashSet<String> = drain(&mut failures)
        .into_iter()
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    let stored = stored_payloads(&natty, "BULK").await;
    println!(
        "crash during publish: {at_crash} in flight at the crash, {} stored, {} reported failed",
        stored.len(),
        failed.len()
    );
    assert!(duplicated(&stored).is_empty(), "stored twice");
    assert!(
        failed.iter().all(|p| !stored.contains_key(p)),
        "reported failed, yet stored"
    );
    assert_eq!(
        stored.len() + failed.len(),
        TOTAL as usize,
        "none silently dropped"
    );
    assert!((0..TOTAL).all(|n| {
        let n = n.to_string();
        stored.contains_key(&n) || failed.contains(&n)
    }));
}

/// With a retry budget shorter than the outage, messages in flight at the crash are reported
/// failed, never dropped: every accepted message is stored or reported, and resending the
/// reports under their `Nats-Msg-Id` leaves each message in the stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_outlasting_their_retries_in_a_crash_are_reported_and_resend_exactly_once() {
    const TOTAL: u64 = 20_000;
    let server = Server::start().unwrap();
    let (reports, mut failures) = reports(TOTAL as usize);
    let natty = Natty::connect(
        Config::new([server.url()])
            .request_timeout(Duration::from_millis(500))
            .publish(
                PublishConfig::default()
                    .retries(3, Duration::from_millis(50), Duration::from_millis(100))
                    .failures(reports.clone()),
            ),
    )
    .await
    .unwrap();
    natty
        .create_stream_with(stream_config("BULK", &["bulk"], 1))
        .await
        .unwrap();

    let publisher = natty.clone();
    let publishing = tokio::spawn(async move {
        for n in 0..TOTAL {
            publisher.publish("bulk", n.to_string()).await.unwrap();
        }
    });
    eventually("a fifth stored", DEADLINE, || async {
        stream_messages(&natty, "BULK").await >= TOTAL / 5
    })
    .await;
    server.kill();
    // Down for longer than a message's whole retry budget (3 × 500 ms plus backoff).
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().unwrap();

    timeout(DEADLINE, publishing).await.unwrap().unwrap();
    timeout(DEADLINE, natty.flush()).await.expect("flush");
    assert_eq!(reports.dropped(), 0);
    let failed = drain(&mut failures);
    let stored = stored_payloads(&natty, "BULK").await;
    let failed_payloads: HashSet<String> = failed
        .iter()
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    let both = failed_payloads
        .iter()
        .filter(|p| stored.contains_key(*p))
        .count();
    println!(
        "outage past the retry budget: {} stored, {} reported failed, {both} of them stored anyway",
        stored.len(),
        failed.len()
    );
    assert!(!failed.is_empty(), "the outage outlasted some retries");
    assert!(duplicated(&stored).is_empty(), "stored twice");
    let missing: Vec<u64> = (0..TOTAL)
        .filter(|n| {
            let n = n.to_string();
            !stored.contains_key(&n) && !failed_payloads.contains(&n)
        })
        .collect();
    assert!(missing.is_empty(), "silently dropped: {missing:?}");
    // A report means "unconfirmed", not "not stored": async-nats sends publishes buffered
    // while disconnected once it reconnects, so some reported messages were stored anyway
    // (this run prints how many). Republishing them under their `Nats-Msg-Id` is what makes
    // every accepted message land exactly once.
    resend(&natty, failed).await;
    let stored = stored_payloads(&natty, "BULK").await;
    assert!(duplicated(&stored).is_empty(), "a resend was stored twice");
    assert_eq!(
        stored.len() as u64,
        TOTAL,
        "every message stored after the resend"
    );
}

// Scenario 2: server crash during consume.

/// SIGKILL and restart mid-consume (repeatedly under `NATTY_SOAK_SECS`): the same `serve` call
/// resumes on its own, every message is handled at least once, and none is acked without
/// being handled — messages whose first delivery fails come back and are handled too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_consume_handles_every_message_and_resumes_on_its_own() {
    let soak = soak();
    let total = 4_000 + 1_500 * soak.as_secs();
    let server = Server::start().unwrap();
    let natty = connect(vec![server.url()], patient()).await;
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    publish_all(&natty, "orders.created", (0..total).map(order)).await;

    let (handled, mut count) = Handled::new();
    let seen = handled.clone();
    let stack = ServiceBuilder::new()
        .layer(AckLayer::new().nak_backoff(quick_naks()))
        .decode_json::<Order>()
        .service(service_fn(move |order: JsonMessage<Order>| {
            let seen = seen.clone();
            async move {
                if order.payload.id.is_multiple_of(97) && order.message.info().delivered == 1 {
                    return Err(BoxError::from(HandlerError::retry("not yet")));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                seen.record(order.payload.id);
                Ok(())
            }
        }));
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

// Scenario 3: cluster node loss.

/// A 3-node cluster with an R3 stream and R3 KV buckets: killing the node the client talks to
/// while it publishes, consumes and campaigns loses nothing — every message stored once and
/// handled, the KV value still there — and there is one leader at a time, then one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_clients_cluster_node_loses_nothing_and_keeps_one_leader() {
    const TOTAL: u64 = 5_000;
    let cluster = Cluster::start(3).unwrap();
    let (reports, mut failures) = reports(TOTAL as usize);
    let natty = connect(cluster.urls(), patient().failures(reports)).await;
    placed("R3 stream", || {
        natty.create_stream_with(stream_config("ORDERS", &["orders.>"], 3))
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
        .create_consumer_with(
            "ORDERS",
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
    let other = connect(cluster.urls(), PublishConfig::default()).await;
    let b = elect(&other, "leaders", "b", 3).await;
    terms.record(&b);
    one_leader(&[&a, &b], DEADLINE).await;

    let (handled, mut count) = Handled::new();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (natty, shutdown) = (natty.clone(), shutdown.clone());
        let stack = recording_stack(handled.clone());
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
    let leader = one_leader(&[&a, &b], TTL * 10).await;
    println!(
        "node loss: leader now {}, {} terms, {} handled twice",
        [&a, &b][leader].node(),
        terms.all().len(),
        handled.duplicates()
    );
    terms.assert_never_overlapped();

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
    let direct = connect(vec![server.url()], PublishConfig::default()).await;
    direct
        .create_stream_with(stream_config("ORDERS", &["orders.>"], 1))
        .await
        .unwrap();
    direct
        .create_stream_with(stream_config("AUDIT", &["audit"], 1))
        .await
        .unwrap();

    let terms = Terms::default();
    let a = elect(&cut, "cut_leaders", "a", 1).await;
    terms.record(&a);
    let old = timeout(DEADLINE, a.wait_leader()).await.unwrap().unwrap();
    let b = elect(&direct, "cut_leaders", "b", 1).await;
    terms.record(&b);
    one_leader(&[&a, &b], DEADLINE).await;

    let (handled, mut count) = Handled::new();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (natty, shutdown) = (cut.clone(), shutdown.clone());
        let stack = recording_stack(handled.clone());
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
    let leader = one_leader(&[&a, &b], TTL * 5).await;
    assert_eq!(leader, 1, "b keeps leading after the restore");
    terms.assert_never_overlapped();

    shutdown.cancel();
    timeout(DEADLINE, serving).await.unwrap().unwrap().unwrap();
    timeout(DEADLINE, a.stop()).await.expect("a stopped");
    timeout(DEADLINE, b.stop()).await.expect("b stopped");
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
