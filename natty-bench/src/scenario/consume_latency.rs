//! `consume-latency`: the p99 time from a plain async-nats client's publish to the handler's
//! first poll, at a steady 2,000 msg/s. natty's side is `natty.serve` with `consume-stack`'s
//! layers and config (concurrency 256); the baseline is an async-nats `messages()` loop that
//! acks each message, timed when the loop gets the message.
//!
//! The throughput lines read a backed-up stream, where a delay on one message hides behind the
//! next one waiting. This line reads a stream that is never backed up, so what natty's driver
//! adds on each message's way in shows: its pull requests (sent as room frees up), its turn
//! from the inbox to the call, the layers.
//!
//! Each run starts its reader on a fresh durable consumer, sends 100 warm-up messages and waits
//! until they have all arrived (consumer created, pulls open, caught up), then publishes the
//! timed messages, two every millisecond (the runtime's timer ticks in milliseconds). Every
//! payload carries its send time in nanoseconds since an `Instant` the whole process shares,
//! and the reader takes its arrival against the same origin, so no two clocks are compared.
//! The sample is the run's p99 (lower is better, so the ratio is baseline / natty); each run's
//! p50 and p99 are printed beside.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use natty::{CancellationToken, Message, Natty};
use tokio::sync::mpsc;
use tower::service_fn;

use super::{
    alternate, consume, natty_like_consumer, Bench, BoxError, Comparison, Side, Storage,
    PAYLOAD_SIZE,
};
use crate::report::{Better, Goal};

const STREAM: &str = "BENCH_LATENCY";
const SUBJECT: &str = "bench.latency";
/// Timed messages per run: 5 s at the rate below.
const MESSAGES: usize = 10_000;
/// Messages sent and waited for before timing.
const WARM_UP: usize = 100;
/// 2,000 messages a second.
const SEND_EVERY: Duration = Duration::from_micros(500);
/// The longest wait for the next message before the run fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// The comparison.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    let count = bench.count(MESSAGES);
    bench
        .create_stream(STREAM, &[SUBJECT], Storage::File)
        .await?;
    let publisher = bench.plain_client().await?;
    let origin = Instant::now();
    let comparison = Comparison::new(
        "consume-latency",
        "ms",
        Better::Lower,
        Goal::RatioAtLeast(0.9),
        "async-nats messages() loop, ack each",
    );
    let timed = Timed {
        bench,
        publisher: &publisher,
        origin,
        count,
    };
    let comparison = alternate(
        comparison,
        async |round| timed.p99(Side::Natty, round).await,
        async |round| timed.p99(Side::Baseline, round).await,
    )
    .await?;
    Ok(vec![comparison])
}

/// What one timed run needs.
struct Timed<'a> {
    bench: &'a Bench,
    publisher: &'a async_nats::Client,
    origin: Instant,
    count: usize,
}

impl Timed<'_> {
    /// One run of `side`'s reader; returns its p99 in milliseconds.
    async fn p99(&self, side: Side, round: usize) -> Result<f64, BoxError> {
        self.bench.purge(STREAM).await?;
        let (arrivals, mut arrived) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let name = match side {
            Side::Natty => "natty",
            Side::Baseline => "baseline",
        };
        let durable = format!("{name}-latency-{round}");
        let reader = Reader {
            durable: durable.clone(),
            origin: self.origin,
            arrivals,
            stop: stop.clone(),
        };
        let reader = match side {
            Side::Natty => tokio::spawn(reader.natty(self.bench.natty.clone())),
            Side::Baseline => tokio::spawn(reader.async_nats(self.bench.jetstream.clone())),
        };
        let timed = async {
            self.publish(WARM_UP).await?;
            receive(&mut arrived, WARM_UP).await?;
            let ((), latencies) =
                tokio::try_join!(self.publish(self.count), receive(&mut arrived, self.count))?;
            Ok::<_, BoxError>(latencies)
        };
        let latencies = timed.await;
        stop.cancel();
        // The reader's own failure says more than a missing message does.
        reader.await??;
        let mut latencies = latencies?;
        self.bench
            .natty
            .stream(STREAM)?
            .delete_consumer(&durable)
            .await?;

        latencies.sort_unstable();
        let (p50, p99) = (percentile(&latencies, 50), percentile(&latencies, 99));
        println!(
            "  consume-latency {name}: p50 {:.3} ms, p99 {:.3} ms",
            millis(p50),
            millis(p99)
        );
        Ok(millis(p99))
    }

    /// Publish `count` messages at [`SEND_EVERY`], each stamped with its send time.
    async fn publish(&self, count: usize) -> Result<(), BoxError> {
        let mut ticks = tokio::time::interval(SEND_EVERY);
        for _ in 0..count {
            ticks.tick().await;
            self.publisher
                .publish(SUBJECT, stamped(self.origin.elapsed())?)
                .await?;
        }
        self.publisher.flush().await?;
        Ok(())
    }
}

/// One run's reader: its durable consumer, where it reports each message's latency, and when
/// it stops.
struct Reader {
    durable: String,
    origin: Instant,
    arrivals: mpsc::UnboundedSender<Duration>,
    stop: CancellationToken,
}

impl Reader {
    /// natty's driver and `consume-stack`'s layers; the handler's first poll takes the time.
    async fn natty(self, natty: Natty) -> Result<(), BoxError> {
        let Self {
            durable,
            origin,
            arrivals,
            stop,
        } = self;
        let handler = service_fn(move |message: Message| {
            let arrivals = arrivals.clone();
            async move {
                let arrived = origin.elapsed();
                arrivals.send(arrived.saturating_sub(sent_at(message.payload())?))?;
                Ok::<_, BoxError>(())
            }
        });
        let stack = consume::layers().service(handler);
        natty
            .serve(consume::config(STREAM, &durable), stop, stack)
            .await?;
        Ok(())
    }

    /// async-nats' `messages()` on natty's consumer settings, acking each; the loop getting
    /// the message takes the time.
    async fn async_nats(self, jetstream: async_nats::jetstream::Context) -> Result<(), BoxError> {
        let stream = jetstream.get_stream(STREAM).await?;
        let consumer = stream
            .create_consumer(natty_like_consumer(&self.durable))
            .await?;
        let mut messages = consumer.messages().await?;
        loop {
            let message = tokio::select! {
                () = self.stop.cancelled() => return Ok(()),
                message = messages.next() => message.ok_or("message stream ended")??,
            };
            let arrived = self.origin.elapsed();
            let latency = arrived.saturating_sub(sent_at(&message.payload)?);
            self.arrivals.send(latency)?;
            message.ack().await?;
        }
    }
}

/// The next `count` latencies.
async fn receive(
    arrived: &mut mpsc::UnboundedReceiver<Duration>,
    count: usize,
) -> Result<Vec<Duration>, BoxError> {
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        match tokio::time::timeout(PATIENCE, arrived.recv()).await {
            Ok(Some(latency)) => latencies.push(latency),
            Ok(None) => return Err("consume-latency: the reader stopped".into()),
            Err(_) => {
                return Err(format!(
                    "consume-latency: {} of {count} messages arrived",
                    latencies.len()
                )
                .into())
            }
        }
    }
    Ok(latencies)
}

/// A payload of the usual size starting with `sent`, in nanoseconds, little-endian.
fn stamped(sent: Duration) -> Result<Bytes, BoxError> {
    let mut payload = vec![b'x'; PAYLOAD_SIZE];
    payload[..8].copy_from_slice(&u64::try_from(sent.as_nanos())?.to_le_bytes());
    Ok(payload.into())
}

/// The send time [`stamped`] wrote.
fn sent_at(payload: &[u8]) -> Result<Duration, BoxError> {
    let nanos = payload
        .get(..8)
        .ok_or("consume-latency: a payload without a send time")?;
    Ok(Duration::from_nanos(u64::from_le_bytes(nanos.try_into()?)))
}

/// The nearest-rank `percent` percentile of `sorted`.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_reads_back() {
        let sent = Duration::from_nanos(1_234_567_890);
        let payload = stamped(sent).expect("a small duration fits");
        assert_eq!(payload.len(), PAYLOAD_SIZE);
        assert_eq!(sent_at(&payload).expect("stamped"), sent);
        assert!(sent_at(b"short").is_err());
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50), Duration::from_millis(100));
        assert_eq!(percentile(&sorted, 99), Duration::from_millis(198));
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 99),
            Duration::from_millis(7)
        );
    }
}
