//! Durable consuming against a real server.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natty::compat::GoNatty as _;
use natty::error::ConsumeErrorKind;
use natty::{
    CancellationToken, Config, ConsumeConfig, ConsumeSummary, ConsumerOptions, Message, Natty,
};
use natty_testkit::Server;
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::consume::consumer_info;
use common::{chain, connect, connect_with};

const DEADLINE: Duration = Duration::from_secs(30);

async fn setup(server: &Server, stream: &str, count: usize) -> Natty {
    let natty =
        connect_with(Config::new([server.url()]).request_timeout(Duration::from_secs(2))).await;
    natty
        .create_stream(stream, [format!("{}.>", stream.to_lowercase())])
        .await
        .unwrap();
    for n in 0..count {
        natty
            .publish(&format!("{}.in", stream.to_lowercase()), n.to_string())
            .await
            .unwrap();
    }
    natty.flush().await;
    natty
}

async fn pending(natty: &Natty, stream: &str, durable: &str) -> (u64, usize) {
    let info = consumer_info(natty, stream, durable).await;
    (info.num_pending, info.num_ack_pending)
}

#[tokio::test]
async fn consume_handles_every_message_and_acks_on_ok() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C1", 500).await;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let shutdown = CancellationToken::new();
    let handler_seen = Arc::clone(&seen);
    let handler_shutdown = shutdown.clone();
    let summary = timeout(
        DEADLINE,
        natty.consume(
            ConsumeConfig::new("C1", "worker").concurrency(8),
            shutdown.clone(),
            move |msg: Message| {
                let seen = Arc::clone(&handler_seen);
                let shutdown = handler_shutdown.clone();
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.insert(String::from_utf8(msg.payload().to_vec()).unwrap());
                    if seen.len() == 500 {
                        shutdown.cancel();
                    }
                    Ok::<_, std::io::Error>(())
                }
            },
        ),
    )
    .await
    .expect("consume ends after shutdown")
    .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 500);
    assert_eq!(summary.handled, 500);
    assert_eq!(pending(&natty, "C1", "worker").await, (0, 0), "all acked");
}

#[tokio::test]
async fn handler_errors_are_reported_and_the_message_redelivered() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C2", 1).await;
    let (errors_tx, mut errors) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let handler_calls = Arc::clone(&calls);
    let handler_shutdown = shutdown.clone();
    let consuming = natty.consume(
        ConsumeConfig::new("C2", "worker").failures(errors_tx),
        shutdown.clone(),
        move |msg: Message| {
            let calls = Arc::clone(&handler_calls);
            let shutdown = handler_shutdown.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(std::io::Error::other("first try fails"));
                }
                assert_eq!(msg.info().delivered, 2, "redelivered after the nak");
                shutdown.cancel();
                Ok(())
            }
        },
    );
    let summary = timeout(DEADLINE, consuming).await.unwrap().unwrap();
    assert_eq!((summary.failed, summary.handled), (1, 1));
    let failure = errors.try_recv().expect("error reported");
    assert_eq!(failure.error.kind(), ConsumeErrorKind::Handler);
    assert_eq!(failure.stream_sequence, 1);
    assert!(chain(&failure.error).contains("first try fails"));
}

#[tokio::test]
async fn a_panicking_handler_does_not_stop_consuming() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C3", 3).await;
    let shutdown = CancellationToken::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let (h, s) = (Arc::clone(&handled), shutdown.clone());
    let summary = timeout(
        DEADLINE,
        natty.consume(
            ConsumeConfig::new("C3", "worker"),
            shutdown.clone(),
            move |msg: Message| {
                let (handled, shutdown) = (Arc::clone(&h), s.clone());
                async move {
                    if msg.payload().as_ref() == b"1" && msg.info().delivered == 1 {
                        panic!("poison");
                    }
                    if handled.fetch_add(1, Ordering::SeqCst) == 2 {
                        shutdown.cancel();
                    }
                    Ok::<_, std::io::Error>(())
                }
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(summary.panicked, 1);
    assert_eq!(
        summary.handled, 3,
        "the panicked message was redelivered and handled"
    );
}

#[tokio::test]
async fn concurrency_bounds_messages_in_flight() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C4", 60).await;
    let shutdown = CancellationToken::new();
    let (now, max, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (n, m, d, s) = (now.clone(), max.clone(), done.clone(), shutdown.clone());
    timeout(
        DEADLINE,
        natty.consume(
            ConsumeConfig::new("C4", "worker").concurrency(4),
            shutdown.clone(),
            move |_msg: Message| {
                let (now, max, done, shutdown) = (n.clone(), m.clone(), d.clone(), s.clone());
                async move {
                    let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(current, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    if done.fetch_add(1, Ordering::SeqCst) + 1 == 60 {
                        shutdown.cancel();
                    }
                    Ok::<_, std::io::Error>(())
                }
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        max.load(Ordering::SeqCst) <= 4,
        "max in flight {}",
        max.load(Ordering::SeqCst)
    );
    assert!(max.load(Ordering::SeqCst) > 1, "ran concurrently");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_work_and_naks_what_was_not_started() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C5", 20).await;
    let shutdown = CancellationToken::new();
    let started = Arc::new(AtomicUsize::new(0));
    let (st, s) = (started.clone(), shutdown.clone());
    let summary = timeout(
        DEADLINE,
        natty.consume(
            ConsumeConfig::new("C5", "worker")
                .concurrency(2)
                .fetch_size(20),
            shutdown.clone(),
            move |msg: Message| {
                let (started, shutdown) = (st.clone(), s.clone());
                async move {
                    if started.fetch_add(1, Ordering::SeqCst) == 0 {
                        shutdown.cancel();
                    }
                    tokio::task::yield_now().await;
                    msg.ack().await?;
                    Ok::<_, natty::message::SettleError>(())
                }
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let handled = summary.handled as usize;
    assert_eq!(
        handled,
        started.load(Ordering::SeqCst),
        "every started call finished"
    );
    // Handled messages were acked; the ones fetched but not started went back with a nak,
    // and the server keeps those pending for the next consumer. It applies acks
    // asynchronously, so wait (bounded, far below the ack wait) for its count to settle.
    let returned = summary.returned as usize;
    let settled = timeout(DEADLINE, async {
        loop {
            let (remaining, ack_pending) = pending(&natty, "C5", "worker").await;
            if ack_pending == returned {
                return remaining as usize;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the server's count settles");
    assert_eq!(settled, 20 - handled - returned, "{summary:?}");
}

/// A poison message mid-retry at shutdown: its failing call is counted in `failed`, and its
/// redelivery into the still-open pull request goes back once (`returned` is 1), not bounced
/// between that request and a nak until the request is filled, each bounce spending one of its
/// deliveries. A plain client then gets it as its 4th delivery: two calls, one returned.
#[tokio::test]
async fn a_shutdown_mid_retry_returns_the_poison_message_once() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C9", 1).await;
    let shutdown = CancellationToken::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let (counted, stop) = (Arc::clone(&calls), shutdown.clone());
    let summary = timeout(
        DEADLINE,
        natty.consume(
            // Room for more than the one message, so a pull request is open at shutdown.
            ConsumeConfig::new("C9", "worker")
                .concurrency(4)
                .fetch_timeout(Duration::from_secs(2)),
            shutdown,
            move |_: Message| {
                let (calls, stop) = (Arc::clone(&counted), stop.clone());
                async move {
                    // The second call is the retry: shutdown comes while it runs.
                    if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                        stop.cancel();
                        tokio::task::yield_now().await;
                    }
                    Err(std::io::Error::other("poison"))
                }
            },
        ),
    )
    .await
    .expect("consume ends after shutdown")
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        (
            summary.handled,
            summary.failed,
            summary.cancelled,
            summary.returned
        ),
        (0, 2, 0, 1),
        "{summary:?}"
    );

    let plain = plain_consumer(&server, "C9", "worker").await;
    let mut batch = plain
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let message = timeout(DEADLINE, futures_util::StreamExt::next(&mut batch))
        .await
        .unwrap()
        .expect("the nak'd message is delivered again at once")
        .unwrap();
    assert_eq!(message.info().unwrap().delivered, 4);
    message.double_ack().await.unwrap();
}

#[tokio::test]
async fn consume_survives_a_server_restart_and_a_deleted_consumer() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C6", 200).await;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let (count_tx, count) = tokio::sync::watch::channel(0usize);
    let shutdown = CancellationToken::new();
    let (handler_seen, consumer_opts) = (
        Arc::clone(&seen),
        ConsumerOptions::default().ack_wait(Duration::from_secs(2)),
    );
    let consuming = tokio::spawn({
        let natty = natty.clone();
        let shutdown = shutdown.clone();
        async move {
            natty
                .consume(
                    ConsumeConfig::new("C6", "worker")
                        .consumer_options(consumer_opts)
                        .fetch_timeout(Duration::from_millis(200)),
                    shutdown,
                    move |msg: Message| {
                        let seen = Arc::clone(&handler_seen);
                        let count_tx = count_tx.clone();
                        async move {
                            let mut seen = seen.lock().unwrap();
                            seen.insert(String::from_utf8(msg.payload().to_vec()).unwrap());
                            count_tx.send_replace(seen.len());
                            Ok::<_, std::io::Error>(())
                        }
                    },
                )
                .await
        }
    });
    let wait_for = |n: usize| {
        let mut count = count.clone();
        async move {
            timeout(DEADLINE, count.wait_for(|seen| *seen >= n))
                .await
                .unwrap_or_else(|_| panic!("{n} messages handled in time"))
                .expect("handler alive");
        }
    };
    wait_for(50).await;
    server.kill();
    server.restart().unwrap();
    // Publish more after the restart; the consumer must pick them up by itself.
    for n in 200..300 {
        natty.publish("c6.in", n.to_string()).await.unwrap();
    }
    natty.flush().await;
    wait_for(300).await;

    natty.delete_consumer("C6", "worker").await.unwrap();
    for n in 300..310 {
        natty.publish("c6.in", n.to_string()).await.unwrap();
    }
    natty.flush().await;
    wait_for(310).await;
    shutdown.cancel();
    timeout(DEADLINE, consuming)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 310);
}

#[tokio::test]
async fn consume_rejects_bad_names_and_missing_streams() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let never = |_msg: Message| async { Ok::<_, std::io::Error>(()) };
    let err = natty
        .consume(
            ConsumeConfig::new("A.B", "d"),
            CancellationToken::new(),
            never,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConsumeErrorKind::InvalidName);
    let err = natty
        .consume(
            ConsumeConfig::new("MISSING", "d"),
            CancellationToken::new(),
            never,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConsumeErrorKind::StreamNotFound, "{err}");
}

/// A consumer handle checks its names and creates the durable when it is made, then serves
/// every message, each carrying the consumer's settings, and acks them all.
#[tokio::test]
async fn a_consumer_handle_fails_early_and_serves_every_message() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "CH", 200).await;
    let err = natty
        .consumer(ConsumeConfig::new("A.B", "worker"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConsumeErrorKind::InvalidName);
    let err = natty
        .consumer(ConsumeConfig::new("MISSING", "worker"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConsumeErrorKind::StreamNotFound, "{err}");

    let handle = natty
        .consumer(ConsumeConfig::new("CH", "worker").concurrency(8))
        .await
        .unwrap();
    // The durable exists on the server as soon as the handle does.
    assert_eq!(pending(&natty, "CH", "worker").await, (200, 0));
    let with_settings = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let (counted, stop) = (Arc::clone(&with_settings), shutdown.clone());
    let summary = timeout(
        DEADLINE,
        handle.consume(shutdown, move |msg: Message| {
            let (counted, stop) = (Arc::clone(&counted), stop.clone());
            async move {
                if msg
                    .consumer_settings()
                    .is_some_and(|settings| settings.consumer() == "worker")
                    && counted.fetch_add(1, Ordering::SeqCst) + 1 == 200
                {
                    stop.cancel();
                }
                Ok::<_, std::io::Error>(())
            }
        }),
    )
    .await
    .expect("consume ends after shutdown")
    .unwrap();
    assert_eq!(with_settings.load(Ordering::SeqCst), 200);
    assert_eq!(summary.handled, 200);
    assert_eq!(pending(&natty, "CH", "worker").await, (0, 0), "all acked");
}

/// The durable `durable` of `stream` read through a plain async-nats client, not through natty.
async fn plain_consumer(
    server: &Server,
    stream: &str,
    durable: &str,
) -> async_nats::jetstream::consumer::PullConsumer {
    let client = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(client)
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer(durable)
        .await
        .unwrap()
}

/// Fetches what the consumer can deliver right now through a plain client and acks it, so
/// a message that was nak'd (ready at once) is told apart from one left hanging until the
/// 30 s ack wait. Returns the payloads and the consumer's ack-pending count afterwards.
async fn drain_with_plain_client(
    server: &Server,
    stream: &str,
    durable: &str,
    expect: usize,
) -> (Vec<String>, usize) {
    use futures_util::StreamExt;
    let mut consumer = plain_consumer(server, stream, durable).await;
    let mut payloads = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while payloads.len() < expect && tokio::time::Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(expect - payloads.len())
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            payloads.push(String::from_utf8(message.payload.to_vec()).unwrap());
            message.double_ack().await.unwrap();
        }
    }
    let ack_pending = consumer.info().await.unwrap().num_ack_pending;
    (payloads, ack_pending)
}

/// A closure that panics before its `async` block (while "parsing") must not escape the
/// driver: the message is nak'd, reported with its subject, sequence and delivery count, and
/// consuming goes on.
#[tokio::test]
async fn a_panic_before_the_handlers_future_is_caught_reported_and_the_message_redelivered() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C7", 3).await;
    let (errors_tx, mut errors) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let (h, s) = (Arc::clone(&handled), shutdown.clone());
    let consuming = tokio::spawn({
        let natty = natty.clone();
        let shutdown = shutdown.clone();
        async move {
            natty
                .consume(
                    ConsumeConfig::new("C7", "worker").failures(errors_tx),
                    shutdown,
                    move |msg: Message| {
                        // The synchronous part: a parse that panics on the first delivery.
                        if msg.payload().as_ref() == b"1" && msg.info().delivered == 1 {
                            panic!("cannot parse");
                        }
                        let (handled, shutdown) = (Arc::clone(&h), s.clone());
                        async move {
                            if handled.fetch_add(1, Ordering::SeqCst) == 2 {
                                shutdown.cancel();
                            }
                            Ok::<_, std::io::Error>(())
                        }
                    },
                )
                .await
        }
    });
    let summary = timeout(DEADLINE, consuming)
        .await
        .expect("consuming ends after shutdown")
        .expect("the panic did not escape the driver")
        .unwrap();
    assert_eq!(summary.panicked, 1, "{summary:?}");
    assert_eq!(summary.handled, 3, "the panicked message was redelivered");
    let failure = errors.try_recv().expect("the panic was reported");
    assert_eq!(failure.error.kind(), ConsumeErrorKind::Panicked);
    assert_eq!(failure.subject, "c7.in");
    assert_eq!(failure.stream_sequence, 2);
    assert_eq!(failure.delivered, 1);
    let (left, ack_pending) = drain_with_plain_client(&server, "C7", "worker", 1).await;
    assert!(
        left.is_empty(),
        "nothing left for another consumer: {left:?}"
    );
    assert_eq!(ack_pending, 0, "nothing left ack-pending");
}

/// A panic inside the handler's future is reported with the message it happened on.
#[tokio::test]
async fn a_panic_in_the_handlers_future_is_reported_with_its_message() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C8", 1).await;
    let (errors_tx, mut errors) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    let summary = timeout(
        DEADLINE,
        natty.consume(
            ConsumeConfig::new("C8", "worker").failures(errors_tx),
            shutdown.clone(),
            move |msg: Message| {
                let shutdown = s.clone();
                async move {
                    if msg.info().delivered == 1 {
                        panic!("poison");
                    }
                    shutdown.cancel();
                    Ok::<_, std::io::Error>(())
                }
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((summary.panicked, summary.handled), (1, 1));
    let failure = errors.try_recv().expect("the panic was reported");
    assert_eq!(failure.error.kind(), ConsumeErrorKind::Panicked);
    assert_eq!(
        (
            failure.subject.as_str(),
            failure.stream_sequence,
            failure.delivered
        ),
        ("c8.in", 1, 1)
    );
}

/// A service whose `poll_ready` fails once `broken` is set.
#[derive(Clone)]
struct BreaksAfterFirstCall {
    broken: Arc<std::sync::atomic::AtomicBool>,
    finished: Arc<AtomicUsize>,
}

impl tower::Service<Message> for BreaksAfterFirstCall {
    type Response = ();
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), std::io::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.broken.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(Err(std::io::Error::other("database pool closed")));
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _msg: Message) -> Self::Future {
        self.broken.store(true, Ordering::SeqCst);
        let finished = Arc::clone(&self.finished);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// When the service stops being ready, the driver drains as on shutdown: the call in flight
/// finishes within its grace, what was fetched but not started is nak'd (so it is ready for
/// another consumer at once, not after the ack wait), and the error says what happened and
/// carries the summary.
#[tokio::test]
async fn a_failing_poll_ready_drains_like_shutdown_and_returns_its_own_kind_with_the_summary() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C9", 10).await;
    let service = BreaksAfterFirstCall {
        broken: Arc::default(),
        finished: Arc::default(),
    };
    let finished = Arc::clone(&service.finished);
    let err = timeout(
        DEADLINE,
        natty.serve(
            ConsumeConfig::new("C9", "worker")
                .concurrency(4)
                .fetch_size(4)
                .shutdown_grace(Duration::from_secs(5)),
            CancellationToken::new(),
            service,
        ),
    )
    .await
    .expect("serve returns")
    .expect_err("a service that fails poll_ready ends the run");
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the call in flight finished within its grace"
    );
    assert_eq!(err.kind(), ConsumeErrorKind::NotReady, "{err}");
    assert!(
        std::error::Error::source(&err)
            .is_some_and(|source| source.to_string().contains("database pool closed")),
        "the service's error is the source: {err:?}"
    );
    let summary = ConsumeSummary::from_error(&err).expect("the error carries the summary");
    assert_eq!(summary.handled, 1, "{summary:?}");
    // Everything not handled went back with a nak: a plain client gets all 9 at once.
    let (left, ack_pending) = drain_with_plain_client(&server, "C9", "worker", 9).await;
    assert_eq!(left.len(), 9, "{left:?}");
    assert_eq!(ack_pending, 0);
    assert!(summary.returned >= 1, "{summary:?}");
}

/// Dropping a run's future while a call is under way (an aborted task, a `select!` that lost)
/// gives the message back at once: a plain client gets it long before the 30 s ack wait.
#[tokio::test]
async fn dropping_serve_mid_call_naks_the_message_in_flight_for_the_next_consumer() {
    let server = Server::start().unwrap();
    let natty = setup(&server, "C10", 1).await;
    let (started, mut call_started) = mpsc::channel(1);
    let serving = tokio::spawn({
        let natty = natty.clone();
        async move {
            natty
                .consume(
                    // One at a time: no pull request is left open to catch the redelivery.
                    ConsumeConfig::new("C10", "worker").concurrency(1),
                    CancellationToken::new(),
                    move |_msg: Message| {
                        let started = started.clone();
                        async move {
                            let _ = started.send(()).await;
                            std::future::pending::<Result<(), std::io::Error>>().await
                        }
                    },
                )
                .await
        }
    });
    timeout(DEADLINE, call_started.recv())
        .await
        .expect("the call starts")
        .expect("the handler is alive");
    serving.abort();
    assert!(serving.await.unwrap_err().is_cancelled());
    let (payloads, ack_pending) = drain_with_plain_client(&server, "C10", "worker", 1).await;
    assert_eq!(
        payloads,
        vec!["0".to_owned()],
        "nak'd when dropped, not left to the ack wait"
    );
    assert_eq!(ack_pending, 0);
}
