//! `processor-vs-hand-written`: inputs per second through a natty [`Processor`] (three outputs
//! per input, stored as one atomic batch, then the input acked) against a hand-written
//! async-nats loop giving the same guarantee by hand: each output published with a
//! `Nats-Msg-Id` derived from the input, the three acks awaited, then the input acked, 64
//! inputs in flight on both sides. The difference is what an atomic batch costs against plain
//! de-duplicated publishes (one staged answer per message plus the commit, against one ack
//! each), and what it buys: the hand-written loop can store part of an input's outputs when
//! it dies between two publishes; the batch never does.
//!
//! The outputs go to a file-storage stream (`processor-vs-hand-written`) and to a
//! memory-storage one (`-mem`): nats-server stages an atomic batch for a one-replica file
//! stream on disk until its commit, so there each batch costs the server about 2 ms, one
//! after another per stream; in memory (and on replicated streams) it stages in memory.
//!
//! On a server without atomic batches (before 2.12.1) the lines are skipped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use natty::process::Processor;
use natty::{CancellationToken, ConsumeConfig, Message, OutgoingMessage};
use tower::{service_fn, Service, ServiceExt};

use super::{alternate, check_count, natty_like_consumer, payload, per_second, Bench, BoxError};
use super::{Comparison, Storage};
use crate::report::{Better, Goal};

const INPUTS_STREAM: &str = "PROC_IN";
const INPUT_SUBJECT: &str = "proc.in";
/// The outputs stream on `storage`, and the subjects it takes.
fn outputs_stream(storage: Storage) -> (&'static str, &'static str) {
    match storage {
        Storage::File => ("PROC_OUT", "proc.out.>"),
        Storage::Memory => ("PROC_OUT_MEM", "proc.mem.>"),
    }
}
/// Inputs per run: about 1 s at 20,000 inputs/s in memory; a tenth of that on file storage,
/// where natty's side runs at some hundreds a second (see the module docs).
const INPUTS: usize = 20_000;

/// The inputs of a run whose outputs go to a stream on `storage`.
fn inputs(bench: &Bench, storage: Storage) -> usize {
    match storage {
        Storage::File => bench.count(INPUTS / 10),
        Storage::Memory => bench.count(INPUTS),
    }
}
/// Outputs of each input.
const OUTPUTS: usize = 3;
/// Inputs in flight on both sides.
const IN_FLIGHT: usize = 64;

/// Both lines.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    if !bench.natty.server_info().supports_atomic_batch() {
        println!("  processor-vs-hand-written: skipped, the server has no atomic batches");
        return Ok(Vec::new());
    }
    let mut lines = Vec::new();
    for storage in [Storage::File, Storage::Memory] {
        lines.push(on(bench, storage).await?);
    }
    Ok(lines)
}

/// The line whose outputs go to a stream on `storage`.
async fn on(bench: &Bench, storage: Storage) -> Result<Comparison, BoxError> {
    let count = inputs(bench, storage);
    let (outputs_name, outputs_subjects) = outputs_stream(storage);
    bench
        .create_stream(INPUTS_STREAM, &[INPUT_SUBJECT], Storage::File)
        .await?;
    bench
        .create_stream(outputs_name, &[outputs_subjects], storage)
        .await?;
    bench.purge(INPUTS_STREAM).await?;
    for _ in 0..count {
        bench.natty.publish(INPUT_SUBJECT, payload()).await?;
    }
    bench.natty.flush().await;
    check_count("processor setup", bench.stored(INPUTS_STREAM).await?, count)?;

    let line = Comparison::new(
        storage.line("processor-vs-hand-written"),
        "inputs/s",
        Better::Higher,
        Goal::RatioAtLeast(1.0),
        "async-nats messages(), 3 publishes with derived Msg-Ids, acks awaited, then ack; 64 in flight",
    );
    alternate(
        line,
        async |round| natty_processor(bench, storage, round, count).await,
        async |round| hand_written(bench, storage, round, count).await,
    )
    .await
}

/// The three outputs of an input, as both sides publish them to the stream on `storage`.
fn outputs(storage: Storage) -> impl Iterator<Item = (String, bytes::Bytes)> {
    let prefix = outputs_stream(storage).1.trim_end_matches('>');
    (0..OUTPUTS).map(move |i| (format!("{prefix}{i}"), payload()))
}

/// natty's consume engine serving a [`Processor`] whose handler answers three outputs.
async fn natty_processor(
    bench: &Bench,
    storage: Storage,
    round: usize,
    count: usize,
) -> Result<f64, BoxError> {
    let outputs_name = outputs_stream(storage).0;
    bench.purge(outputs_name).await?;
    let durable = format!("natty-{}-{round}", storage.line("p"));
    let config = ConsumeConfig::new(INPUTS_STREAM, &durable)
        .concurrency(IN_FLIGHT)
        .fetch_size(IN_FLIGHT);
    let consumer = bench.natty.consumer(config).await?;
    let handler = service_fn(move |_: Message| async move {
        let outputs =
            outputs(storage).map(|(subject, payload)| OutgoingMessage::new(subject, payload));
        Ok::<_, BoxError>(outputs.collect::<Vec<_>>())
    });
    let processor = Processor::new(bench.natty.publisher(), handler);
    let (processed, finished, shutdown) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(OnceLock::new()),
        CancellationToken::new(),
    );
    let (seen, done, stop) = (
        Arc::clone(&processed),
        Arc::clone(&finished),
        shutdown.clone(),
    );
    let stack = service_fn(move |input: Message| {
        let mut processor = processor.clone();
        let (seen, done, stop) = (Arc::clone(&seen), Arc::clone(&done), stop.clone());
        async move {
            let result = match processor.ready().await {
                Ok(ready) => ready.call(input).await,
                Err(err) => Err(err),
            };
            if result.is_ok() && seen.fetch_add(1, Ordering::Relaxed) + 1 == count {
                let _ = done.set(Instant::now());
                stop.cancel();
            }
            result
        }
    });
    let start = Instant::now();
    let summary = consumer.serve(shutdown, stack).await?;
    let last = *finished
        .get()
        .ok_or("natty processor: the last input was not processed")?;
    check_count("natty processor", summary.handled, count)?;
    check_count(
        "natty processor outputs",
        bench.stored(outputs_name).await?,
        count * OUTPUTS,
    )?;
    bench
        .natty
        .stream(INPUTS_STREAM)?
        .delete_consumer(&durable)
        .await?;
    Ok(per_second(count, last - start))
}

/// async-nats alone: each input's outputs published with ids derived from the input, their
/// acks awaited, then the input acked; 64 inputs at once.
async fn hand_written(
    bench: &Bench,
    storage: Storage,
    round: usize,
    count: usize,
) -> Result<f64, BoxError> {
    let outputs_name = outputs_stream(storage).0;
    bench.purge(outputs_name).await?;
    let durable = format!("raw-{}-{round}", storage.line("p"));
    let js = &bench.jetstream;
    let stream = js.get_stream(INPUTS_STREAM).await?;
    let consumer = stream
        .create_consumer(natty_like_consumer(&durable))
        .await?;
    let durable = durable.as_str();
    let start = Instant::now();
    let messages = consumer.messages().await?;
    messages
        .take(count)
        .map_err(BoxError::from)
        .try_for_each_concurrent(IN_FLIGHT, |input| async move {
            let sequence = input.info()?.stream_sequence;
            let mut acks = Vec::with_capacity(OUTPUTS);
            for (index, (subject, payload)) in outputs(storage).enumerate() {
                let mut headers = async_nats::HeaderMap::new();
                let id = format!("{INPUTS_STREAM}:{durable}:{sequence}:{index}");
                headers.insert("Nats-Msg-Id", id.as_str());
                acks.push(js.publish_with_headers(subject, headers, payload).await?);
            }
            for ack in acks {
                ack.await?;
            }
            input.ack().await?;
            Ok(())
        })
        .await?;
    let elapsed = start.elapsed();
    check_count(
        "hand-written processor outputs",
        bench.stored(outputs_name).await?,
        count * OUTPUTS,
    )?;
    stream.delete_consumer(durable).await?;
    Ok(per_second(count, elapsed))
}
