//! The publish lines: natty's batched `publish` + `flush` (which always stamps a `Nats-Msg-Id`)
//! against
//! - `publish-vs-window`: async-nats with 256 outstanding ack futures, no ids;
//! - `publish-vs-window-msgid`: the same with a `Nats-Msg-Id` per message (the same guarantee
//!   as natty's);
//! - `publish-vs-naive`: one acked publish at a time, a report without a goal: it shows what
//!   any window buys, not what natty adds;
//! - `publish-vs-fast-ingest`: Synadia's `jetstream-extra` fast-ingest publisher (ADR-50) with
//!   an id per message, on servers that have fast ingest (2.14+); skipped on older ones.
//!
//! Every line but `publish-vs-naive` runs on a file-storage stream and again (`-mem`, same
//! goal) on a memory-storage stream with natty's settings otherwise: without the disk, what is
//! left is the client's and the server's own work per message. Every run purges its stream,
//! is timed until its last message is confirmed (natty's `flush`, the last ack) and checks
//! the stored count.

use std::time::Instant;

use async_nats::jetstream::stream::StorageType;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use super::{alternate, check_count, payload, per_second, Bench, BoxError, Comparison, Storage};
use crate::report::{Better, Goal};

/// One storage's streams and subjects.
#[derive(Clone, Copy, Debug)]
struct Target {
    storage: Storage,
    stream: &'static str,
    subjects: &'static str,
    natty_subject: &'static str,
    baseline_subject: &'static str,
    /// The fast-ingest baseline's stream, which allows batched publishing.
    fast_stream: &'static str,
    fast_subjects: &'static str,
    fast_subject: &'static str,
}

const FILE: Target = Target {
    storage: Storage::File,
    stream: "BENCH_PUBLISH",
    subjects: "bench.publish.>",
    natty_subject: "bench.publish.natty",
    baseline_subject: "bench.publish.baseline",
    fast_stream: "BENCH_FAST",
    fast_subjects: "bench.fast.>",
    fast_subject: "bench.fast.baseline",
};

const MEMORY: Target = Target {
    storage: Storage::Memory,
    stream: "BENCH_PUBLISH_MEM",
    subjects: "bench.publish-mem.>",
    natty_subject: "bench.publish-mem.natty",
    baseline_subject: "bench.publish-mem.baseline",
    fast_stream: "BENCH_FAST_MEM",
    fast_subjects: "bench.fast-mem.>",
    fast_subject: "bench.fast-mem.baseline",
};

/// async-nats' window of outstanding acks, the same size as natty's default.
const WINDOW: usize = 256;
/// Messages per windowed or natty run.
const BATCHED: usize = 150_000;
/// Messages per naive run: one round trip each, so far fewer fit in a second.
const NAIVE: usize = 10_000;

/// Whether the windowed baseline stamps a `Nats-Msg-Id` on each message.
#[derive(Clone, Copy, Debug)]
enum MessageIds {
    None,
    Each,
}

/// Every publish line, each file-storage line followed by its memory-storage one.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    for target in [FILE, MEMORY] {
        bench
            .create_stream(target.stream, &[target.subjects], target.storage)
            .await?;
    }
    let batched = bench.count(BATCHED);
    let naive = bench.count(NAIVE);
    let mut lines = Vec::new();
    lines.extend(
        on_both_storages(
            bench,
            "publish-vs-window",
            Goal::RatioAtLeast(1.0),
            "async-nats, 256 ack futures in flight",
            async |target| windowed_publish(bench, target, MessageIds::None, batched).await,
        )
        .await?,
    );
    lines.extend(
        on_both_storages(
            bench,
            "publish-vs-window-msgid",
            Goal::RatioAtLeast(1.3),
            "async-nats, 256 ack futures in flight, a Nats-Msg-Id each",
            async |target| windowed_publish(bench, target, MessageIds::Each, batched).await,
        )
        .await?,
    );
    let one_by_one = Comparison::new(
        "publish-vs-naive",
        "msg/s",
        Better::Higher,
        Goal::None,
        "async-nats, publish().await?.await? in turn",
    );
    lines.push(
        alternate(
            one_by_one,
            async |_| natty_publish(bench, FILE, batched).await,
            async |_| naive_publish(bench, FILE, naive).await,
        )
        .await?,
    );
    if !fast_ingest_supported(bench) {
        println!(
            "  publish-vs-fast-ingest skipped: nats-server {} has no fast ingest (2.14+)",
            bench.natty.server_info().version()
        );
        return Ok(lines);
    }
    for target in [FILE, MEMORY] {
        create_fast_ingest_stream(bench, target).await?;
    }
    lines.extend(
        on_both_storages(
            bench,
            "publish-vs-fast-ingest",
            Goal::RatioAtLeast(0.9),
            "jetstream-extra fast ingest, flow 500, a Nats-Msg-Id each",
            async |target| fast_ingest(bench, target, batched).await,
        )
        .await?,
    );
    Ok(lines)
}

/// The line `name` on file storage and its `-mem` line: natty's publish against `baseline`,
/// both on the storage's streams.
async fn on_both_storages(
    bench: &Bench,
    name: &str,
    goal: Goal,
    baseline_is: &'static str,
    mut baseline: impl AsyncFnMut(Target) -> Result<f64, BoxError>,
) -> Result<Vec<Comparison>, BoxError> {
    let batched = bench.count(BATCHED);
    let mut lines = Vec::with_capacity(2);
    for target in [FILE, MEMORY] {
        let line = Comparison::new(
            target.storage.line(name),
            "msg/s",
            Better::Higher,
            goal,
            baseline_is,
        );
        lines.push(
            alternate(
                line,
                async |_| natty_publish(bench, target, batched).await,
                async |_| baseline(target).await,
            )
            .await?,
        );
    }
    Ok(lines)
}

/// Fast ingest (ADR-50) came with nats-server 2.14.
fn fast_ingest_supported(bench: &Bench) -> bool {
    let version = bench.natty.server_info().version();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 14)
}

/// The baseline's own stream, with batched publishing allowed, as fast ingest requires.
async fn create_fast_ingest_stream(bench: &Bench, target: Target) -> Result<(), BoxError> {
    let storage = match target.storage {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    };
    bench
        .jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: target.fast_stream.into(),
            subjects: vec![target.fast_subjects.into()],
            allow_batch_publish: true,
            storage,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Synadia's fast-ingest publisher (on async-nats 0.48, a connection of its own), an id per
/// message, flow 500, closed at the end so every message is confirmed.
async fn fast_ingest(bench: &Bench, target: Target, count: usize) -> Result<f64, BoxError> {
    use jetstream_extra::batch_publish_fast::FastPublishExt;

    bench.purge(target.fast_stream).await?;
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
                subject: target.fast_subject.into(),
                payload: payload.clone(),
                headers: Some(headers),
            })
            .await?;
    }
    batch.close().await?;
    let elapsed = start.elapsed();
    let stored = bench.stored(target.fast_stream).await?;
    check_count("fast ingest", stored, count)?;
    Ok(per_second(count, elapsed))
}

/// natty: `publish` each message (queued, batched by the subject's worker), then `flush`.
async fn natty_publish(bench: &Bench, target: Target, count: usize) -> Result<f64, BoxError> {
    bench.purge(target.stream).await?;
    let payload = payload();
    let start = Instant::now();
    for _ in 0..count {
        bench
            .natty
            .publish(target.natty_subject, payload.clone())
            .await?;
    }
    bench.natty.flush().await;
    let elapsed = start.elapsed();
    check_count("natty publish", bench.stored(target.stream).await?, count)?;
    Ok(per_second(count, elapsed))
}

/// async-nats: send, keep up to 256 ack futures outstanding, wait for the oldest-ready one
/// when the window is full, then wait for the rest.
async fn windowed_publish(
    bench: &Bench,
    target: Target,
    ids: MessageIds,
    count: usize,
) -> Result<f64, BoxError> {
    bench.purge(target.stream).await?;
    let payload = payload();
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    for _ in 0..count {
        if acks.len() >= WINDOW {
            if let Some(ack) = acks.next().await {
                ack?;
            }
        }
        let subject = target.baseline_subject;
        let ack = match ids {
            MessageIds::None => bench.jetstream.publish(subject, payload.clone()).await?,
            // The de-duplication natty always asks the server for.
            MessageIds::Each => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", nuid::next().as_str());
                bench
                    .jetstream
                    .publish_with_headers(subject, headers, payload.clone())
                    .await?
            }
        };
        acks.push(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let elapsed = start.elapsed();
    check_count(
        "windowed publish",
        bench.stored(target.stream).await?,
        count,
    )?;
    Ok(per_second(count, elapsed))
}

/// async-nats as most first versions are written: one publish, wait for its ack, repeat.
async fn naive_publish(bench: &Bench, target: Target, count: usize) -> Result<f64, BoxError> {
    bench.purge(target.stream).await?;
    let payload = payload();
    let start = Instant::now();
    for _ in 0..count {
        bench
            .jetstream
            .publish(target.baseline_subject, payload.clone())
            .await?
            .await?;
    }
    let elapsed = start.elapsed();
    check_count("naive publish", bench.stored(target.stream).await?, count)?;
    Ok(per_second(count, elapsed))
}
