//! `explain`: not a comparison, but the breakdowns behind the missed goals (there is no
//! profiler on the benchmark machine). Each line isolates one cost:
//!
//! - publish: async-nats' windowed publish with a `Nats-Msg-Id` header on each message (the
//!   server's de-duplication work natty always asks for), and natty's time split into
//!   enqueueing and waiting in `flush`.
//! - consume: natty's driver with a bare handler (no layers) and with the layer stack, and how
//!   many pull requests each side sends and for how many messages, counted by a plain
//!   subscriber on the consumer's pull subject.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use natty::{CancellationToken, ConsumeConfig, Message};
use tower::service_fn;

use super::consume::{layers, CONCURRENCY};
use super::{check_count, natty_like_consumer, payload, per_second, Bench, BoxError};

const PUBLISH_STREAM: &str = "BENCH_EXPLAIN_PUBLISH";
const CONSUME_STREAM: &str = "BENCH_EXPLAIN_CONSUME";

/// Print the breakdowns.
pub(crate) async fn run(bench: &Bench) -> Result<(), BoxError> {
    publish(bench).await?;
    consume(bench).await?;
    axum(bench).await
}

/// The axum routes without the leader layer, and the baseline with a `Nats-Msg-Id`.
async fn axum(bench: &Bench) -> Result<(), BoxError> {
    use super::axum_publish::{
        natty_publish, plain_publish_with_id, serve, CONNECTIONS, PATH, STREAM,
    };
    use axum::routing::post;
    use axum::Router;

    let requests = bench.count(20_000);
    bench.natty.stream(STREAM)?.create(["bench.axum.>"]).await?;
    let stop = CancellationToken::new();
    let state = natty_axum::NattyState::builder(bench.natty.clone())
        .allow_subjects("bench.axum.>")
        .build()?;
    let ungated = serve(
        Router::new()
            .route(PATH, post(natty_publish))
            .with_state(state),
        &stop,
    )
    .await?;
    let with_id = serve(
        Router::new()
            .route(PATH, post(plain_publish_with_id))
            .with_state(async_nats::jetstream::new(bench.plain_client().await?)),
        &stop,
    )
    .await?;
    for _ in 0..3 {
        bench.purge(STREAM).await?;
        let natty = crate::load::post(ungated, PATH, payload(), CONNECTIONS, requests).await?;
        bench.purge(STREAM).await?;
        let plain = crate::load::post(with_id, PATH, payload(), CONNECTIONS, requests).await?;
        println!(
            "  explain axum: natty AckedPublisher without the leader layer {natty:.0} req/s; plain axum + async-nats with a Nats-Msg-Id {plain:.0} req/s"
        );
    }
    stop.cancel();
    Ok(())
}

async fn publish(bench: &Bench) -> Result<(), BoxError> {
    let count = bench.count(150_000);
    bench
        .natty
        .stream(PUBLISH_STREAM)?
        .create(["bench.explain.publish"])
        .await?;
    let payload = payload();
    for round in 0..3 {
        bench.purge(PUBLISH_STREAM).await?;
        let start = Instant::now();
        let mut acks = FuturesUnordered::new();
        for _ in 0..count {
            if acks.len() >= 256 {
                if let Some(ack) = acks.next().await {
                    ack?;
                }
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                nuid_like(round).as_str(),
            );
            let ack = bench
                .jetstream
                .publish_with_headers("bench.explain.publish", headers, payload.clone())
                .await?;
            acks.push(std::future::IntoFuture::into_future(ack));
        }
        while let Some(ack) = acks.next().await {
            ack?;
        }
        let with_id = per_second(count, start.elapsed());
        check_count("explain", bench.stored(PUBLISH_STREAM).await?, count)?;

        bench.purge(PUBLISH_STREAM).await?;
        let start = Instant::now();
        for _ in 0..count {
            bench
                .natty
                .publish("bench.explain.publish", payload.clone())
                .await?;
        }
        let enqueued = start.elapsed();
        bench.natty.flush().await;
        let total = start.elapsed();
        println!(
            "  explain publish: async-nats window + Nats-Msg-Id {with_id:.0} msg/s; natty {:.0} msg/s ({:.2} s enqueueing, {:.2} s in flush)",
            per_second(count, total),
            enqueued.as_secs_f64(),
            (total - enqueued).as_secs_f64(),
        );
    }
    Ok(())
}

/// A unique id per message, like natty's: a counter is enough for the server's table.
fn nuid_like(round: usize) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("explain-{round}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Counts pull requests sent for `durable` and the messages they ask for.
struct PullProbe {
    requests: Arc<AtomicUsize>,
    asked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl PullProbe {
    async fn start(bench: &Bench, durable: &str) -> Result<Self, BoxError> {
        let client = bench.plain_client().await?;
        let mut requests_sub = client
            .subscribe(format!(
                "$JS.API.CONSUMER.MSG.NEXT.{CONSUME_STREAM}.{durable}"
            ))
            .await?;
        client.flush().await?;
        let (requests, asked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, a) = (Arc::clone(&requests), Arc::clone(&asked));
        let task = tokio::spawn(async move {
            let _client = client;
            while let Some(request) = requests_sub.next().await {
                r.fetch_add(1, Ordering::Relaxed);
                a.fetch_add(batch_of(&request.payload), Ordering::Relaxed);
            }
        });
        Ok(Self {
            requests,
            asked,
            task,
        })
    }

    fn finish(self) -> (usize, usize) {
        self.task.abort();
        (
            self.requests.load(Ordering::Relaxed),
            self.asked.load(Ordering::Relaxed),
        )
    }
}

/// The `batch` field of a pull request's JSON.
fn batch_of(request: &[u8]) -> usize {
    let text = String::from_utf8_lossy(request);
    text.split("\"batch\":")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

async fn consume(bench: &Bench) -> Result<(), BoxError> {
    let count = bench.count(50_000);
    bench
        .natty
        .stream(CONSUME_STREAM)?
        .create(["bench.explain.consume"])
        .await?;
    bench.purge(CONSUME_STREAM).await?;
    let payload = payload();
    for _ in 0..count {
        bench
            .natty
            .publish("bench.explain.consume", payload.clone())
            .await?;
    }
    bench.natty.flush().await;

    for (round, concurrency) in [(0, CONCURRENCY), (1, 1), (2, 256)] {
        // natty's driver with a handler that acks itself, no layers.
        let durable = format!("bare-{round}");
        let probe = PullProbe::start(bench, &durable).await?;
        let handled = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let (seen, stop) = (Arc::clone(&handled), shutdown.clone());
        let start = Instant::now();
        let config = ConsumeConfig::new(CONSUME_STREAM, &durable)
            .concurrency(concurrency)
            .fetch_size(concurrency.max(100));
        bench
            .natty
            .serve(
                config,
                shutdown,
                service_fn(move |message: Message| {
                    if seen.fetch_add(1, Ordering::Relaxed) + 1 == count {
                        stop.cancel();
                    }
                    async move { message.ack().await }
                }),
            )
            .await?;
        let bare = per_second(count, start.elapsed());
        let (requests, asked) = probe.finish();
        bench
            .natty
            .stream(CONSUME_STREAM)?
            .delete_consumer(&durable)
            .await?;

        // The same with the scenario's stack.
        let durable = format!("stack-{round}");
        let handled = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let (seen, stop) = (Arc::clone(&handled), shutdown.clone());
        let stack = layers().service(service_fn(move |_: Message| {
            if seen.fetch_add(1, Ordering::Relaxed) + 1 == count {
                stop.cancel();
            }
            async { Ok::<_, BoxError>(()) }
        }));
        let start = Instant::now();
        let config = ConsumeConfig::new(CONSUME_STREAM, &durable)
            .concurrency(concurrency)
            .fetch_size(concurrency.max(100));
        bench.natty.serve(config, shutdown, stack).await?;
        let stacked = per_second(count, start.elapsed());
        bench
            .natty
            .stream(CONSUME_STREAM)?
            .delete_consumer(&durable)
            .await?;
        println!(
            "  explain consume (concurrency {concurrency}): natty driver, bare handler {bare:.0} msg/s, {requests} pull requests asking {:.1} messages each; with the stack {stacked:.0} msg/s",
            asked as f64 / requests.max(1) as f64
        );
    }

    // When natty's driver calls the handler: gaps between calls within a pull and between pulls.
    {
        let durable = "gaps";
        let calls = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count)));
        let shutdown = CancellationToken::new();
        let (seen, stop) = (Arc::clone(&calls), shutdown.clone());
        let config = ConsumeConfig::new(CONSUME_STREAM, durable)
            .concurrency(CONCURRENCY)
            .fetch_timeout(Duration::from_millis(300));
        let start = Instant::now();
        bench
            .natty
            .serve(
                config,
                shutdown,
                service_fn(move |message: Message| {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.push(Instant::now());
                    if seen.len() == count {
                        stop.cancel();
                    }
                    async move { message.ack().await }
                }),
            )
            .await?;
        let end = Instant::now();
        bench
            .natty
            .stream(CONSUME_STREAM)?
            .delete_consumer(durable)
            .await?;
        let calls = calls.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(first), Some(last)) = (calls.first(), calls.last()) {
            println!(
                "  explain consume: natty serve took {:.2} s: {:.3} s to the first handler call, {:.3} s from the last call to returning",
                (end - start).as_secs_f64(),
                (*first - start).as_secs_f64(),
                (end - *last).as_secs_f64()
            );
        }
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        let total: Duration = gaps.iter().sum();
        let long: Vec<&Duration> = gaps
            .iter()
            .filter(|g| **g > Duration::from_micros(300))
            .collect();
        let long_sum: Duration = long.iter().copied().sum();
        println!(
            "  explain consume: natty driver handler calls span {:.2} s; {} gaps over 0.3 ms add up to {:.2} s (mean {:.2} ms); the other {} gaps average {:.1} us",
            total.as_secs_f64(),
            long.len(),
            long_sum.as_secs_f64(),
            long_sum.as_secs_f64() * 1000.0 / long.len().max(1) as f64,
            gaps.len() - long.len(),
            (total - long_sum).as_secs_f64() * 1e6 / (gaps.len() - long.len()).max(1) as f64,
        );
    }

    // async-nats pulling the way natty's driver does: one batch request at a time.
    for batch in [CONCURRENCY, 256] {
        let durable = format!("batches-{batch}");
        let stream = bench.jetstream.get_stream(CONSUME_STREAM).await?;
        let consumer = stream
            .create_consumer(natty_like_consumer(&durable))
            .await?;
        let start = Instant::now();
        let mut acked = 0;
        let mut pulls = 0;
        let mut waiting = Duration::ZERO;
        while acked < count {
            pulls += 1;
            let asked = Instant::now();
            let mut messages = consumer
                .batch()
                .max_messages(batch.min(count - acked))
                .expires(Duration::from_secs(1))
                .messages()
                .await?;
            let mut first = true;
            while let Some(message) = messages.next().await {
                if first {
                    waiting += asked.elapsed();
                    first = false;
                }
                message?.ack().await?;
                acked += 1;
            }
        }
        let rate = per_second(count, start.elapsed());
        stream.delete_consumer(&durable).await?;
        println!(
            "  explain consume: async-nats batch() of {batch} at a time {rate:.0} msg/s, {pulls} pulls, {:.2} ms from request to first message on average",
            waiting.as_secs_f64() * 1000.0 / pulls as f64
        );
    }

    // async-nats' messages() loop again, but acking each message from a task of its own, as
    // natty's driver runs each handler call.
    let durable = "spawned";
    let stream = bench.jetstream.get_stream(CONSUME_STREAM).await?;
    let consumer = stream.create_consumer(natty_like_consumer(durable)).await?;
    let start = Instant::now();
    let mut messages = consumer.messages().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let message = messages.next().await.ok_or("message stream ended")??;
        tasks.spawn(async move { message.ack().await });
        while let Some(done) = tasks.try_join_next() {
            done?.map_err(|e| e.to_string())?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|e| e.to_string())?;
    }
    let spawned = per_second(count, start.elapsed());
    drop(messages);
    stream.delete_consumer(durable).await?;
    println!(
        "  explain consume: async-nats messages() loop, a spawned task per ack {spawned:.0} msg/s"
    );

    // The raw loop's pulls, for comparison.
    let durable = "raw-probe";
    let probe = PullProbe::start(bench, durable).await?;
    let stream = bench.jetstream.get_stream(CONSUME_STREAM).await?;
    let consumer = stream.create_consumer(natty_like_consumer(durable)).await?;
    let start = Instant::now();
    let mut messages = consumer.messages().await?;
    for _ in 0..count {
        messages
            .next()
            .await
            .ok_or("message stream ended")??
            .ack()
            .await?;
    }
    let raw = per_second(count, start.elapsed());
    drop(messages);
    let (requests, asked) = probe.finish();
    stream.delete_consumer(durable).await?;
    println!(
        "  explain consume: async-nats messages() loop {raw:.0} msg/s, {requests} pull requests asking {:.1} messages each",
        asked as f64 / requests.max(1) as f64
    );
    Ok(())
}
