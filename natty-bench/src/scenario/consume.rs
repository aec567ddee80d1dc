//! `consume-stack` and `consume-ceiling`, each on a file-storage stream and (`-mem`) on a
//! memory-storage one.
//!
//! - `consume-stack`: a durable consumer through natty's driver and the natty-tower stack
//!   (trace, report errors, ack, retry, catch panic) against a raw `consumer.messages()` loop
//!   that acks each message: what natty's convenience costs against the hand-written loop.
//!   Goal: natty at least as fast.
//! - `consume-ceiling`: the same natty runs against `messages()` on an `AckPolicy::None`
//!   consumer, which the server sends to without waiting for acks: the most this server
//!   delivers to one reader, which no acking consumer reaches. Goal: natty at half of it.
//!
//! Each round runs the three readers in turn, the first rotating, so the two lines share
//! natty's samples. Every run reads the same stored messages through a new durable consumer,
//! created inside the timed part on every side, and is timed until its last message is
//! handled. natty's shutdown afterwards (reading the open pull request to its end, at most
//! `fetch_timeout`) is a one-off cost of stopping, not of consuming, and is printed on its own.
//!
//! natty never holds more than `concurrency` messages, so it is given 256, in line with what
//! the baseline holds: async-nats' `messages()` prefetches batches of 200 with up to 1000
//! unacked (the consumer's max ack pending).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures_util::StreamExt;
use natty::{CancellationToken, ConsumeConfig, Message};
use natty_tower::ack::AckLayer;
use natty_tower::catch_panic::CatchPanicLayer;
use natty_tower::report::ReportErrorsLayer;
use natty_tower::retry::RetryMessagesLayer;
use natty_tower::trace::TraceLayer;
use natty_tower::ServiceBuilderExt;
use tower::layer::util::{Identity, Stack};
use tower::{service_fn, ServiceBuilder};

use super::{
    check_count, natty_like_consumer, payload, per_second, rotated, Bench, BoxError, ClientCpu,
    Comparison, Storage, ROUNDS,
};
use crate::report::{Better, Goal};

const MESSAGES: usize = 100_000;
/// Messages natty handles at once (and so holds at most); it fetches up to this many per pull.
pub(crate) const CONCURRENCY: usize = 256;

/// The stream each storage's runs read.
fn stream_and_subject(storage: Storage) -> (&'static str, &'static str) {
    match storage {
        Storage::File => ("BENCH_CONSUME", "bench.consume"),
        Storage::Memory => ("BENCH_CONSUME_MEM", "bench.consume-mem"),
    }
}

/// The natty-tower stack every consume line puts in front of its handler.
pub(crate) type Layers = Stack<
    CatchPanicLayer,
    Stack<
        RetryMessagesLayer,
        Stack<AckLayer, Stack<ReportErrorsLayer, Stack<TraceLayer, Identity>>>,
    >,
>;

/// Trace, report errors, ack, retry three times, catch panics: what a natty service would run.
pub(crate) fn layers() -> ServiceBuilder<Layers> {
    ServiceBuilder::new()
        .trace_messages()
        .report_errors()
        .ack_messages()
        .retry_messages(3)
        .catch_panic()
}

/// natty's side of every consume line: its durable consumer, fed [`CONCURRENCY`] at a time.
pub(crate) fn config(stream: &str, durable: &str) -> ConsumeConfig {
    ConsumeConfig::new(stream, durable)
        .concurrency(CONCURRENCY)
        .fetch_size(CONCURRENCY)
}

/// The readers of one round.
#[derive(Clone, Copy)]
enum Reader {
    Natty,
    AckEach,
    NoAck,
}

/// The four lines: `consume-stack`, `consume-stack-mem`, `consume-ceiling`,
/// `consume-ceiling-mem`.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    let mut stacks = Vec::new();
    let mut ceilings = Vec::new();
    for storage in [Storage::File, Storage::Memory] {
        let [stack, ceiling] = on(bench, storage).await?;
        stacks.push(stack);
        ceilings.push(ceiling);
    }
    Ok(stacks.into_iter().chain(ceilings).collect())
}

/// Both lines on one storage.
async fn on(bench: &Bench, storage: Storage) -> Result<[Comparison; 2], BoxError> {
    let (stream, subject) = stream_and_subject(storage);
    let count = bench.count(MESSAGES);
    bench.create_stream(stream, &[subject], storage).await?;
    bench.purge(stream).await?;
    let payload = payload();
    for _ in 0..count {
        bench.natty.publish(subject, payload.clone()).await?;
    }
    bench.natty.flush().await;
    check_count("consume setup", bench.stored(stream).await?, count)?;

    let mut stack = Comparison::new(
        storage.line("consume-stack"),
        "msg/s",
        Better::Higher,
        Goal::RatioAtLeast(1.0),
        "async-nats messages() loop, ack each",
    );
    let mut ceiling = Comparison::new(
        storage.line("consume-ceiling"),
        "msg/s",
        Better::Higher,
        Goal::RatioAtLeast(0.5),
        "async-nats messages(), AckPolicy::None",
    );
    for round in 0..ROUNDS {
        for reader in rotated(round, [Reader::Natty, Reader::AckEach, Reader::NoAck]) {
            match reader {
                Reader::Natty => {
                    let rate = natty_stack(bench, &stack.scenario, stream, round, count).await?;
                    stack.natty.push(rate);
                    ceiling.natty.push(rate);
                }
                Reader::AckEach => {
                    let durable = format!("raw-{round}");
                    let rate = raw_loop(bench, stream, &durable, AckPolicy::Explicit, count);
                    stack.baseline.push(rate.await?);
                }
                Reader::NoAck => {
                    let durable = format!("no-ack-{round}");
                    let rate = raw_loop(bench, stream, &durable, AckPolicy::None, count);
                    ceiling.baseline.push(rate.await?);
                }
            }
        }
    }
    Ok([stack, ceiling])
}

/// natty's driver feeding the layer stack; the handler only counts.
async fn natty_stack(
    bench: &Bench,
    line: &str,
    stream: &str,
    round: usize,
    count: usize,
) -> Result<f64, BoxError> {
    let durable = format!("natty-{round}");
    let handled = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(OnceLock::new());
    let shutdown = CancellationToken::new();
    let (seen, done, stop) = (
        Arc::clone(&handled),
        Arc::clone(&finished),
        shutdown.clone(),
    );
    let stack = layers().service(service_fn(move |_: Message| {
        if seen.fetch_add(1, Ordering::Relaxed) + 1 == count {
            let _ = done.set(Instant::now());
            stop.cancel();
        }
        async { Ok::<_, BoxError>(()) }
    }));
    let start = Instant::now();
    let cpu = ClientCpu::start();
    let summary = bench
        .natty
        .serve(config(stream, &durable), shutdown, stack)
        .await?;
    let returned = Instant::now();
    let last = *finished
        .get()
        .ok_or("natty consume: the last message was not handled")?;
    println!(
        "  {line} natty: last message handled after {:.2} s, serve returned {:.2} s later, {}",
        (last - start).as_secs_f64(),
        (returned - last).as_secs_f64(),
        cpu.per_message(count),
    );
    let elapsed = last - start;
    check_count(
        "natty consume",
        summary.handled,
        handled.load(Ordering::Relaxed),
    )?;
    check_count("natty consume", summary.handled, count)?;
    bench
        .natty
        .stream(stream)?
        .delete_consumer(&durable)
        .await?;
    Ok(per_second(count, elapsed))
}

/// async-nats: create the durable consumer, then `messages()`. With `AckPolicy::None` the
/// consumer takes no acks; otherwise it is natty's and each message is acked in turn.
async fn raw_loop(
    bench: &Bench,
    stream: &str,
    durable: &str,
    ack: AckPolicy,
    count: usize,
) -> Result<f64, BoxError> {
    let consumer = match ack {
        AckPolicy::None => pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: AckPolicy::None,
            ..Default::default()
        },
        _ => natty_like_consumer(durable),
    };
    let start = Instant::now();
    let cpu = ClientCpu::start();
    let stream = bench.jetstream.get_stream(stream).await?;
    let consumer = stream.create_consumer(consumer).await?;
    let mut messages = consumer.messages().await?;
    for _ in 0..count {
        let message = messages.next().await.ok_or("message stream ended")??;
        if ack != AckPolicy::None {
            message.ack().await?;
        }
    }
    let elapsed = start.elapsed();
    println!("  {durable}: {}", cpu.per_message(count));
    drop(messages);
    stream.delete_consumer(durable).await?;
    Ok(per_second(count, elapsed))
}
