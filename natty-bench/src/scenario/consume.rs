//! `consume-stack`: a durable consumer through natty's driver and the natty-tower stack
//! (trace, report errors, ack, retry, catch panic) against a raw `consumer.messages()` loop
//! that acks each message.
//!
//! Every run reads the same stored messages through a new durable consumer, created inside
//! the timed part on both sides, and is timed until its last message is handled. natty's
//! shutdown afterwards (reading the open pull request to its end, at most `fetch_timeout`)
//! is a one-off cost of stopping, not of consuming, and is printed on its own.
//!
//! natty never holds more than `concurrency` messages, so it is given 256, in line with what
//! the baseline holds: async-nats' `messages()` prefetches batches of 200 with up to 1000
//! unacked (the consumer's max ack pending).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures_util::StreamExt;
use natty::{CancellationToken, ConsumeConfig, Message};
use natty_tower::ServiceBuilderExt;
use tower::{service_fn, ServiceBuilder};

use super::{check_count, payload, per_second, sides, Bench, BoxError, Comparison, Side, ROUNDS};
use crate::report::{Better, Goal};

const STREAM: &str = "BENCH_CONSUME";
const SUBJECT: &str = "bench.consume";
const MESSAGES: usize = 100_000;
/// Handler calls natty's driver runs at once (it fetches up to this many per pull).
/// Messages natty handles at once (and so holds at most).
pub(crate) const CONCURRENCY: usize = 256;

/// The comparison.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    let count = bench.count(MESSAGES);
    bench.natty.create_stream(STREAM, [SUBJECT]).await?;
    bench.purge(STREAM).await?;
    let payload = payload();
    for _ in 0..count {
        bench.natty.publish(SUBJECT, payload.clone()).await?;
    }
    bench.natty.flush().await;
    check_count("consume setup", bench.stored(STREAM).await?, count)?;

    let mut comparison = Comparison::new(
        "consume-stack",
        "msg/s",
        Better::Higher,
        Goal::RatioAtLeast(0.9),
        "async-nats messages() loop, ack each",
    );
    for round in 0..ROUNDS {
        for side in sides(round) {
            match side {
                Side::Natty => comparison
                    .natty
                    .push(natty_stack(bench, round, count).await?),
                Side::Baseline => comparison
                    .baseline
                    .push(raw_loop(bench, round, count).await?),
            }
        }
    }
    Ok(vec![comparison])
}

/// natty's driver feeding the layer stack; the handler only counts.
async fn natty_stack(bench: &Bench, round: usize, count: usize) -> Result<f64, BoxError> {
    let durable = format!("natty-{round}");
    let handled = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(OnceLock::new());
    let shutdown = CancellationToken::new();
    let (seen, done, stop) = (
        Arc::clone(&handled),
        Arc::clone(&finished),
        shutdown.clone(),
    );
    let stack = ServiceBuilder::new()
        .trace_messages()
        .report_errors()
        .ack_messages()
        .retry_messages(3)
        .catch_panic()
        .service(service_fn(move |_: Message| {
            if seen.fetch_add(1, Ordering::Relaxed) + 1 == count {
                let _ = done.set(Instant::now());
                stop.cancel();
            }
            async { Ok::<_, BoxError>(()) }
        }));
    let config = ConsumeConfig::new(STREAM, &durable)
        .concurrency(CONCURRENCY)
        .fetch_size(CONCURRENCY);
    let start = Instant::now();
    let summary = bench.natty.serve(config, shutdown, stack).await?;
    let returned = Instant::now();
    let last = *finished
        .get()
        .ok_or("natty consume: the last message was not handled")?;
    println!(
        "  consume-stack natty: last message handled after {:.2} s, serve returned {:.2} s later",
        (last - start).as_secs_f64(),
        (returned - last).as_secs_f64()
    );
    let elapsed = last - start;
    check_count(
        "natty consume",
        summary.handled,
        handled.load(Ordering::Relaxed),
    )?;
    check_count("natty consume", summary.handled, count)?;
    bench.natty.delete_consumer(STREAM, &durable).await?;
    Ok(per_second(count, elapsed))
}

/// async-nats: create the same durable consumer, then `messages()` and ack each in turn.
async fn raw_loop(bench: &Bench, round: usize, count: usize) -> Result<f64, BoxError> {
    let durable = format!("raw-{round}");
    let start = Instant::now();
    let stream = bench.jetstream.get_stream(STREAM).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.clone()),
            // natty's consumer defaults, so both sides get the same server behaviour.
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut acked = 0;
    while acked < count {
        let message = messages.next().await.ok_or("message stream ended")??;
        message.ack().await?;
        acked += 1;
    }
    let elapsed = start.elapsed();
    drop(messages);
    stream.delete_consumer(&durable).await?;
    Ok(per_second(count, elapsed))
}
