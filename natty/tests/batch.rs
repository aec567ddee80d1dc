//! Atomic batches against a real server, read back by a plain async-nats client: a batch is
//! stored whole with consecutive sequences, or not at all, and every refusal is typed. On a
//! server without atomic batches (2.10, 2.11) every test checks instead that the batch is
//! refused as `Unsupported` before anything is sent.

use std::time::Duration;

use async_nats::jetstream::stream::Config as StreamConfig;
use natty::error::BatchErrorKind;
use natty::{Batch, BatchError, Natty, OutgoingMessage};
use natty_testkit::Server;

mod common;
use common::connect;

/// Messages `stream` holds, as a plain client reads its info.
async fn stored(server: &Server, stream: &str) -> u64 {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// `count` messages on `orders.<n>`, payload `order <n>`.
fn orders(count: usize) -> Batch {
    (0..count)
        .map(|n| OutgoingMessage::new(format!("orders.{n}"), format!("order {n}")))
        .collect()
}

/// A natty client with stream `ORDERS` on `orders.>`, made by `Stream::create`.
async fn with_orders(server: &Server) -> Natty {
    let natty = connect(server).await;
    create_orders(&natty).await;
    natty
}

/// A server with stream `ORDERS` and a natty client of it, or `None` when the server has no
/// atomic batches (after checking that a batch is refused as `Unsupported`).
async fn atomic_orders() -> Option<(Server, Natty)> {
    let server = Server::start().unwrap();
    let natty = with_orders(&server).await;
    has_atomic_batches(&server, &natty)
        .await
        .then_some((server, natty))
}

/// On a server without atomic batches: `Unsupported`, and nothing stored. Returns whether
/// the server has them.
async fn has_atomic_batches(server: &Server, natty: &Natty) -> bool {
    if natty.server_info().supports_atomic_batch() {
        return true;
    }
    let err = natty
        .publisher()
        .publish_batch(&orders(3))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BatchErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("atomic batches"), "{err}");
    assert_eq!(stored(server, "ORDERS").await, 0, "nothing was sent");
    println!("nats-server {}: Unsupported", natty.server_info().version());
    false
}

fn kind(result: Result<natty::BatchAck, BatchError>) -> BatchErrorKind {
    result.expect_err("refused").kind()
}

#[tokio::test]
async fn a_batch_is_stored_whole_in_order_with_consecutive_sequences() {
    let Some((server, natty)) = atomic_orders().await else {
        return;
    };
    natty
        .publisher()
        .publish_acked("orders.before", "x")
        .await
        .unwrap();
    let batch = orders(5);
    let ack = natty.publisher().publish_batch(&batch).await.unwrap();
    assert_eq!(ack.stream, "ORDERS");
    assert_eq!(ack.sequences(), 2..=6);

    let client = async_nats::connect(server.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("ORDERS")
        .await
        .unwrap();
    for (n, sequence) in ack.sequences().enumerate() {
        let message = stream.get_raw_message(sequence).await.unwrap();
        assert_eq!(message.subject.as_str(), format!("orders.{n}"));
        assert_eq!(message.payload.as_ref(), format!("order {n}").as_bytes());
        let sent_id = batch.messages()[n].headers().get("Nats-Msg-Id").unwrap();
        assert_eq!(
            message.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some(sent_id)
        );
    }
}

#[tokio::test]
async fn a_batch_with_one_bad_message_stores_nothing_and_says_which() {
    let Some((server, natty)) = atomic_orders().await else {
        return;
    };
    natty
        .stream("OTHER")
        .unwrap()
        .create(["other.>"])
        .await
        .unwrap();
    let publisher = natty.publisher();

    // Refused before sending.
    let bad_subject = orders(2).with(OutgoingMessage::new("orders.*", "x"));
    assert_eq!(
        kind(publisher.publish_batch(&bad_subject).await),
        BatchErrorKind::InvalidSubject
    );
    let too_large = orders(2).with(OutgoingMessage::new(
        "orders.big",
        vec![0; natty.server_info().max_payload() + 1],
    ));
    assert_eq!(
        kind(publisher.publish_batch(&too_large).await),
        BatchErrorKind::PayloadTooLarge
    );
    assert_eq!(
        kind(publisher.publish_batch(&Batch::new()).await),
        BatchErrorKind::Empty
    );

    // Refused by the server, which names the message.
    let nowhere = orders(2)
        .with(OutgoingMessage::new("nobody.listens", "x"))
        .with(OutgoingMessage::new("orders.9", "x"));
    let err = publisher.publish_batch(&nowhere).await.unwrap_err();
    assert_eq!(err.kind(), BatchErrorKind::NoStream, "{err:?}");
    let two_streams = orders(2)
        .with(OutgoingMessage::new("other.1", "x"))
        .with(OutgoingMessage::new("orders.9", "x"));
    let err = publisher.publish_batch(&two_streams).await.unwrap_err();
    assert_eq!(err.kind(), BatchErrorKind::MixedStreams, "{err:?}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("message 2 (other.1)"), "{source}");
    // Only the commit goes elsewhere.
    let commit_elsewhere = orders(2).with(OutgoingMessage::new("other.1", "x"));
    let err = publisher
        .publish_batch(&commit_elsewhere)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BatchErrorKind::MixedStreams, "{err:?}");
    // Only the first goes elsewhere.
    let first_elsewhere = Batch::new()
        .with(OutgoingMessage::new("other.1", "x"))
        .with(orders(2).messages()[1].clone());
    let err = publisher.publish_batch(&first_elsewhere).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            BatchErrorKind::MixedStreams | BatchErrorKind::Incomplete
        ),
        "{err:?}"
    );

    assert_eq!(stored(&server, "ORDERS").await, 0);
    assert_eq!(stored(&server, "OTHER").await, 0);
}

#[tokio::test]
async fn a_stream_without_allow_atomic_refuses_the_batch_typed() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty
        .stream("ORDERS")
        .unwrap()
        .create_with_config(StreamConfig {
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    if !has_atomic_batches(&server, &natty).await {
        return;
    }
    assert_eq!(
        kind(natty.publisher().publish_batch(&orders(3)).await),
        BatchErrorKind::AtomicDisabled
    );
    assert_eq!(stored(&server, "ORDERS").await, 0);
}

#[tokio::test]
async fn the_same_batch_published_again_stores_nothing_twice() {
    let Some((server, natty)) = atomic_orders().await else {
        return;
    };
    let batch = orders(3);
    natty.publisher().publish_batch(&batch).await.unwrap();
    let again = natty.publisher().publish_batch(&batch).await.unwrap_err();
    assert_eq!(again.kind(), BatchErrorKind::Duplicate, "{again:?}");
    // One message of a stored batch is enough to refuse a new batch whole.
    let mixed = orders(2).with(batch.messages()[1].clone());
    assert_eq!(
        kind(natty.publisher().publish_batch(&mixed).await),
        BatchErrorKind::Duplicate
    );
    assert_eq!(stored(&server, "ORDERS").await, 3);
}

#[tokio::test]
async fn more_messages_than_the_server_takes_in_a_batch_store_nothing() {
    let Some((server, natty)) = atomic_orders().await else {
        return;
    };
    let err = natty
        .publisher()
        .publish_batch(&orders(1_001))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BatchErrorKind::TooManyMessages, "{err:?}");
    assert_eq!(stored(&server, "ORDERS").await, 0);
    // The server's limit itself is fine.
    let ack = natty
        .publisher()
        .publish_batch(&orders(1_000))
        .await
        .unwrap();
    assert_eq!(ack.count(), 1_000);
}

#[tokio::test]
async fn expected_subject_sequences_make_a_batch_a_compare_and_set() {
    let Some((server, natty)) = atomic_orders().await else {
        return;
    };
    let first = natty
        .publisher()
        .publish_acked("orders.a", "a1")
        .await
        .unwrap();
    let expecting = |a: u64, b: u64| {
        Batch::new()
            .with(
                OutgoingMessage::new("orders.a", "a2")
                    .header("Nats-Expected-Last-Subject-Sequence", &a.to_string()),
            )
            .with(
                OutgoingMessage::new("orders.b", "b1")
                    .header("Nats-Expected-Last-Subject-Sequence", &b.to_string()),
            )
    };
    // `orders.b` must not exist yet (0) and `orders.a` must be at its first write.
    let stale = natty
        .publisher()
        .publish_batch(&expecting(first.sequence + 5, 0))
        .await;
    assert_eq!(kind(stale), BatchErrorKind::WrongLastSequence);
    assert_eq!(stored(&server, "ORDERS").await, 1);
    let ack = natty
        .publisher()
        .publish_batch(&expecting(first.sequence, 0))
        .await
        .unwrap();
    assert_eq!(ack.count(), 2);
    assert_eq!(stored(&server, "ORDERS").await, 3);
}

#[tokio::test]
async fn a_closed_publisher_refuses_a_batch_before_sending() {
    let server = Server::start().unwrap();
    let natty = with_orders(&server).await;
    let publisher = natty.publisher();
    natty.shutdown().await;
    let refused = tokio::time::timeout(Duration::from_secs(5), publisher.publish_batch(&orders(2)))
        .await
        .expect("refused at once");
    assert_eq!(kind(refused), BatchErrorKind::Closed);
}

/// Whether the server under test has atomic batches, from its version alone (before one is
/// started with a configuration that needs them).
fn server_has_atomic_batches() -> bool {
    let version = natty_testkit::server_version().unwrap();
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let release = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    release >= (2, 12, 1)
}

/// A server whose batch timeout is 1 s instead of 10 (between messages on 2.14+, from the
/// first message on 2.12), behind a proxy that can slow or cut the client's connection, and a
/// plain client's subscription to the stream `ORDERS`'s abandoned-batch advisories.
struct Trickle {
    server: Server,
    proxy: natty_testkit::Proxy,
    abandoned: async_nats::Subscriber,
    _watcher: async_nats::Client,
}

impl Trickle {
    async fn start() -> Self {
        let server = Server::builder()
            .config_snippet("jetstream { limits { batch { timeout: \"1s\" } } }")
            .start()
            .unwrap();
        let proxy = natty_testkit::Proxy::start(server.addr()).unwrap();
        let watcher = async_nats::connect(server.url()).await.unwrap();
        let abandoned = watcher
            .subscribe("$JS.EVENT.ADVISORY.STREAM.BATCH_ABANDONED.ORDERS")
            .await
            .unwrap();
        watcher.flush().await.unwrap();
        Self {
            server,
            proxy,
            abandoned,
            _watcher: watcher,
        }
    }

    /// Messages the server has received from all clients.
    fn in_msgs(&self) -> u64 {
        let varz = self.server.monitoring("/varz").unwrap();
        let varz: serde_json::Value = serde_json::from_str(&varz).unwrap();
        varz["in_msgs"].as_u64().unwrap()
    }

    /// Slow the proxy and publish 400 messages of 16 KiB on `natty` (with stream `ORDERS`),
    /// returning once 10 of them reached the server, with the call still running.
    async fn send_slowly(
        &self,
        natty: &Natty,
        batch: Batch,
    ) -> tokio::task::JoinHandle<Result<natty::BatchAck, BatchError>> {
        let before = self.in_msgs();
        self.proxy.set_latency(Duration::from_millis(20));
        let publisher = natty.publisher();
        let sending = tokio::spawn(async move { publisher.publish_batch(&batch).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.in_msgs() < before + 10 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the batch never reached the server"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sending
    }

    /// The next abandoned-batch advisory: the server dropped what a batch had staged.
    async fn abandoned(&mut self) -> serde_json::Value {
        use futures_util::StreamExt as _;
        let advisory = tokio::time::timeout(Duration::from_secs(20), self.abandoned.next())
            .await
            .expect("the batch is abandoned")
            .unwrap();
        let advisory: serde_json::Value = serde_json::from_slice(&advisory.payload).unwrap();
        assert_eq!(advisory["stream"], "ORDERS", "{advisory}");
        advisory
    }
}

/// 400 messages of 16 KiB: slow enough through the slowed proxy for a fault to land mid-batch.
fn large_batch() -> Batch {
    (0..400)
        .map(|n| OutgoingMessage::new(format!("orders.{n}"), vec![b'x'; 16 * 1024]))
        .collect()
}

/// Stream `ORDERS` on `orders.>`, made by `Stream::create`.
async fn create_orders(natty: &Natty) {
    natty
        .stream("ORDERS")
        .unwrap()
        .create(["orders.>"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_batch_stores_nothing_and_the_caller_gets_a_typed_error() {
    if !server_has_atomic_batches() {
        println!("the server has no atomic batches: covered by the Unsupported checks");
        return;
    }
    let mut trickle = Trickle::start().await;
    let natty = common::connect_with(
        natty::Config::new([trickle.proxy.url()]).request_timeout(Duration::from_secs(3)),
    )
    .await;
    create_orders(&natty).await;
    let before = trickle.in_msgs();

    let sending = trickle.send_slowly(&natty, large_batch()).await;
    assert!(
        trickle.in_msgs() < before + 400,
        "the cut must land mid-batch"
    );
    trickle.proxy.cut();
    trickle.proxy.set_latency(Duration::ZERO);
    trickle.proxy.restore();

    let err = tokio::time::timeout(Duration::from_secs(20), sending)
        .await
        .expect("the caller gets an answer")
        .unwrap()
        .expect_err("not stored");
    assert!(
        matches!(
            err.kind(),
            BatchErrorKind::TimedOut | BatchErrorKind::Failed | BatchErrorKind::Incomplete
        ),
        "{err:?}"
    );
    // The server drops what it staged once the batch goes silent; nothing was stored.
    let advisory = trickle.abandoned().await;
    assert_eq!(stored(&trickle.server, "ORDERS").await, 0);
    println!("cut mid-batch: {:?}; advisory {advisory}", err.kind());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_batches_at_once_are_each_stored_whole() {
    let Some((server, natty)) = atomic_orders().await else {
        return;
    };
    // More than the 50 batches a stream keeps open: each is sent whole before the next.
    let batches = (0..80).map(|_| {
        let publisher = natty.publisher();
        async move { publisher.publish_batch(&orders(3)).await }
    });
    let results = futures_util::future::join_all(batches).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(stored(&server, "ORDERS").await, 80 * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_mid_send_is_never_committed_and_the_same_batch_sent_at_once_is_stored_whole(
) {
    if !server_has_atomic_batches() {
        println!("the server has no atomic batches: covered by the Unsupported checks");
        return;
    }
    let mut trickle = Trickle::start().await;
    // A client whose outgoing queue holds 8 messages: behind the slowed proxy, the batch's
    // sends wait for room, so dropping the call leaves the rest of it, the commit too, unsent.
    let client = async_nats::ConnectOptions::new()
        .client_capacity(8)
        .connect(trickle.proxy.url())
        .await
        .unwrap();
    let natty = Natty::from_client(client);
    create_orders(&natty).await;

    let batch = large_batch();
    let sending = trickle.send_slowly(&natty, batch.clone()).await;
    sending.abort();
    assert!(
        sending.await.unwrap_err().is_cancelled(),
        "dropped mid-send"
    );
    trickle.proxy.set_latency(Duration::ZERO);

    // The same batch (the same Nats-Msg-Ids) sent again at once, while the server still
    // stages the dropped one: stored whole, not refused as a duplicate.
    let ack = tokio::time::timeout(
        Duration::from_secs(20),
        natty.publisher().publish_batch(&batch),
    )
    .await
    .expect("answered")
    .unwrap();
    assert_eq!(ack.count(), 400);
    assert_eq!(ack.sequences(), 1..=400);

    // The dropped batch never got its commit: the server drops what it staged once the batch
    // goes quiet (an abandoned advisory), and the stream holds the second batch alone.
    let advisory = trickle.abandoned().await;
    assert_eq!(advisory["reason"], "timeout", "{advisory}");
    assert_eq!(stored(&trickle.server, "ORDERS").await, 400);
    println!("dropped mid-send: {advisory}; then stored whole");
}
