//! The publish lines: natty's batched `publish` + `flush` (which always stamps a `Nats-Msg-Id`)
//! against
//! - `publish-vs-window`: async-nats with 256 outstanding ack futures, no ids;
//! - `publish-vs-window-msgid`: the same with a `Nats-Msg-Id` per message (the same guarantee
//!   as natty's);
//! - `publish-vs-naive`: one acked publish at a time;
//! - `publish-vs-fast-ingest`: Synadia's `jetstream-extra` fast-ingest publisher (ADR-50) with
//!   an id per message, on servers that have fast ingest (2.14+); skipped on older ones.

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
        Goal::RatioAtLeast(1.0),
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

    let mut window_ids = Comparison::new(
        "publish-vs-window-msgid",
        "msg/s",
        Better::Higher,
        Goal::RatioAtLeast(1.3),
        "async-nats, 256 ack futures in flight, a Nats-Msg-Id each",
    );
    for round in 0..ROUNDS {
        for side in sides(round) {
            match side {
                Side::Natty => window_ids.natty.push(natty_publish(bench, batched).await?),
                Side::Baseline => window_ids
                    .baseline
                    .push(windowed_publish_with_ids(bench, batched).await?),
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
    let mut comparisons = vec![window, window_ids, one_by_one];
    if fast_ingest_supported(bench) {
        let mut fast = Comparison::new(
            "publish-vs-fast-ingest",
            "msg/s",
            Better::Higher,
            Goal::RatioAtLeast(0.9),
            "jetstream-extra fast ingest, flow 500, a Nats-Msg-Id each",
        );
        create_fast_ingest_stream(bench).await?;
        for round in 0..ROUNDS {
            for side in sides(round) {
                match side {
                    Side::Natty => fast.natty.push(natty_publish(bench, batched).await?),
                    Side::Baseline => fast.baseline.push(fast_ingest(bench, batched).await?),
                }
            }
        }
        comparisons.push(fast);
    } else {
        println!(
            "  publish-vs-fast-ingest skipped: nats-server {} has no fast ingest (2.14+)",
            bench.natty.server_version()
        );
    }
    Ok(comparisons)
}

const FAST_STREAM: &str = "BENCH_FAST";
const FAST_SUBJECT: &str = "bench.fast.baseline";

/// Fast ingest (ADR-50) came with nats-server 2.14.
fn fast_ingest_supported(bench: &Bench) -> bool {
    let version = bench.natty.server_version();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 14)
}

/// The baseline's own stream, with batched publishing allowed, as fast ingest requires.
async fn create_fast_ingest_stream(bench: &Bench) -> Result<(), BoxError> {
    bench
        .jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: FAST_STREAM.into(),
            subjects: vec!["bench.fast.>".into()],
            allow_batch_publish: true,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// async-nats' window with a `Nats-Msg-Id` per message: the de-duplication natty always has.
async fn windowed_publish_with_ids(bench: &Bench, count: usize) -> Result<f64, BoxError> {
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
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", nuid::next().as_str());
        let ack = bench
            .jetstream
            .publish_with_headers(BASELINE_SUBJECT, headers, payload.clone())
            .await?;
        acks.push(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let elapsed = start.elapsed();
    check_count(
        "windowed publish with ids",
        bench.stored(STREAM).await?,
        count,
    )?;
    Ok(per_second(count, elapsed))
}

/// Synadia's fast-ingest publisher (on async-nats 0.48, a connection of its own), an id per
/// message, flow 500, closed at the end so every message is confirmed.
async fn fast_ingest(bench: &Bench, count: usize) -> Result<f64, BoxError> {
    use jetstream_extra::batch_publish_fast::FastPublishExt;

    bench.purge(FAST_STREAM).await?;
    let client = async_nats_048::connect(bench.server.url()).await?;
    let jetstream = async_nats_048::jetstream::new(client);
    let payload = payload();
    let start = Instant::now();
    let mut batch = jetstream.fast_publish().flow(500).build()?;
    for _ in 0..count {
        let mut headers = async_nats_048::HeaderMap::new();
        headers.insert("Nats-Msg-Id", nuid::next().as_str());
        batch
            .add_message(async_nats_048::jetstream::message::OutboundMessage {
                subject: FAST_SUBJECT.into(),
                payload: payload.clone(),
                headers: Some(headers),
            })
            .await?;
    }
    batch.close().await?;
    let elapsed = start.elapsed();
    check_count("fast ingest", bench.stored(FAST_STREAM).await?, count)?;
    Ok(per_second(count, elapsed))
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
