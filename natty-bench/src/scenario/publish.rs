//! `publish-vs-window` and `publish-vs-naive`: natty's batched `publish` + `flush` against
//! async-nats with 256 outstanding ack futures, and against one acked publish at a time.

use std::time::Instant;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use super::{check_count, payload, per_second, sides, Bench, BoxError, Comparison, Side, ROUNDS};
use crate::report::{Better, Goal};

const STREAM: &str = "BENCH_PUBLISH";
const NATTY_SUBJECT: &str = "bench.publish.natty";
const BASELINE_SUBJECT: &str = "bench.publish.baseline";

/// async-nats' window of outstanding acks, the same size as natty's default.
const WINDOW: usize = 256;
/// Messages per windowed or natty run.
const BATCHED: usize = 150_000;
/// Messages per naive run: one round trip each, so far fewer fit in a second.
const NAIVE: usize = 10_000;

/// Both publish comparisons.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    bench
        .natty
        .create_stream(STREAM, ["bench.publish.>"])
        .await?;
    let batched = bench.count(BATCHED);
    let naive = bench.count(NAIVE);

    let mut window = Comparison::new(
        "publish-vs-window",
        "msg/s",
        Better::Higher,
        Goal::RatioAtLeast(0.9),
        "async-nats, 256 ack futures in flight",
    );
    for round in 0..ROUNDS {
        for side in sides(round) {
            match side {
                Side::Natty => window.natty.push(natty_publish(bench, batched).await?),
                Side::Baseline => window
                    .baseline
                    .push(windowed_publish(bench, batched).await?),
            }
        }
    }

    let mut one_by_one = Comparison::new(
        "publish-vs-naive",
        "msg/s",
        Better::Higher,
        Goal::RatioAtLeast(20.0),
        "async-nats, publish().await?.await? in turn",
    );
    for round in 0..ROUNDS {
        for side in sides(round) {
            match side {
                Side::Natty => one_by_one.natty.push(natty_publish(bench, batched).await?),
                Side::Baseline => one_by_one.baseline.push(naive_publish(bench, naive).await?),
            }
        }
    }
    Ok(vec![window, one_by_one])
}

/// natty: `publish` each message (queued, batched by the subject's worker), then `flush`.
async fn natty_publish(bench: &Bench, count: usize) -> Result<f64, BoxError> {
    bench.purge(STREAM).await?;
    let payload = payload();
    let start = Instant::now();
    for _ in 0..count {
        bench.natty.publish(NATTY_SUBJECT, payload.clone()).await?;
    }
    bench.natty.flush().await;
    let elapsed = start.elapsed();
    check_count("natty publish", bench.stored(STREAM).await?, count)?;
    Ok(per_second(count, elapsed))
}

/// async-nats: send, keep up to 256 ack futures outstanding, wait for the oldest-ready one
/// when the window is full, then wait for the rest.
async fn windowed_publish(bench: &Bench, count: usize) -> Result<f64, BoxError> {
    bench.purge(STREAM).await?;
    let payload = payload();
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    for _ in 0..count {
        if acks.len() >= WINDOW {
            if let Some(ack) = acks.next().await {
                ack?;
            }
        }
        let ack = bench
            .jetstream
            .publish(BASELINE_SUBJECT, payload.clone())
            .await?;
        acks.push(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let elapsed = start.elapsed();
    check_count("windowed publish", bench.stored(STREAM).await?, count)?;
    Ok(per_second(count, elapsed))
}

/// async-nats as most first versions are written: one publish, wait for its ack, repeat.
async fn naive_publish(bench: &Bench, count: usize) -> Result<f64, BoxError> {
    bench.purge(STREAM).await?;
    let payload = payload();
    let start = Instant::now();
    for _ in 0..count {
        bench
            .jetstream
            .publish(BASELINE_SUBJECT, payload.clone())
            .await?
            .await?;
    }
    let elapsed = start.elapsed();
    check_count("naive publish", bench.stored(STREAM).await?, count)?;
    Ok(per_second(count, elapsed))
}
