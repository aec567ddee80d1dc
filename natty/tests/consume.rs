//! Durable consuming against a real server.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natty::error::ConsumeErrorKind;
use natty::{CancellationToken, Config, ConsumeConfig, ConsumerOptions, Message, Natty};
use natty_testkit::Server;
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

async fn setup(server: &Server, stream: &str, count: usize) -> Natty {
    let natty = Natty::connect(Config::new([server.url()]).request_timeout(Duration::from_secs(2)))
        .await
        .expect("connect");
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
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = natty
        .jetstream()
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer(durable)
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
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
        ConsumeConfig::new("C2", "worker").errors(errors_tx),
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
    assert!(failure.error.to_string().contains("first try fails"));
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
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
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
