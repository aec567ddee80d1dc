//! `service-request` and `service-latency`: request-reply through a natty service called by
//! natty's requester, against a hand-written async-nats pair (a queue subscription that
//! publishes each answer to the reply subject, called with `Client::request`).
//!
//! Each side runs on one connection of its own: natty's service and requester on the bench's
//! natty client, the baseline's responder and caller on a plain async-nats connection. Both
//! responders echo the 128-byte request payload at once, in the queue group `q`, and stay up
//! for the whole group; the rounds alternate only the callers.
//!
//! - `service-request`: requests per second with 64 in flight (natty's endpoint runs 64 calls
//!   at once by default; the baseline's loop answers one after another, which costs it
//!   nothing since each answer is a publish into the connection's buffer).
//! - `service-latency`: the p99 time from a request's send to its answer, at a steady 2,000
//!   requests a second sent on a fixed schedule whether or not earlier answers are back (open
//!   loop). Each run first makes 100 requests one at a time; each timed request takes its
//!   start when it is first polled, that is when it is sent. The ticks fire in pairs each
//!   millisecond (the runtime's timer resolution), on both sides alike. Lower is better, so
//!   the ratio is baseline / natty; each run's p50 and p99 are printed beside.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, FuturesUnordered};
use futures_util::{StreamExt, TryStreamExt};
use natty::requester::{Request, Requester};
use natty::service::{self, EndpointConfig, ServiceConfig};
use natty::CancellationToken;
use tokio::time::MissedTickBehavior;
use tower::service_fn;

use super::{alternate, payload, per_second, Bench, BoxError, Comparison, Side};
use crate::report::{Better, Goal};

const NATTY_SUBJECT: &str = "bench.service.natty";
const BASELINE_SUBJECT: &str = "bench.service.plain";
const QUEUE_GROUP: &str = "q";
/// Requests per `service-request` run: about 2 s at 150,000 req/s.
const REQUESTS: usize = 300_000;
/// Requests in flight on both sides of `service-request`.
const IN_FLIGHT: usize = 64;
/// Timed requests per `service-latency` run: 3 s at the rate below.
const TIMED: usize = 6_000;
/// Requests made one at a time before timing.
const WARM_UP: usize = 100;
/// 2,000 requests a second.
const SEND_EVERY: Duration = Duration::from_micros(500);

/// Both comparisons.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    let shutdown = CancellationToken::new();
    let mut instance = bench
        .natty
        .service(ServiceConfig::new("bench-echo", "1.0.0"))
        .await?;
    instance
        .endpoint(
            EndpointConfig::new("echo").subject(NATTY_SUBJECT),
            service_fn(|request: service::Request| async move {
                Ok::<_, BoxError>(request.into_payload())
            }),
        )
        .await?;
    let serving = tokio::spawn(instance.run(shutdown.clone()));

    let client = bench.plain_client().await?;
    // Subscribed here, not in the spawned task, so the request below comes after it on the
    // same connection: the subscription is in place once the server has answered.
    let requests = client
        .queue_subscribe(BASELINE_SUBJECT, QUEUE_GROUP.into())
        .await?;
    let responder = tokio::spawn(respond(client.clone(), requests, shutdown.clone()));
    client.request(BASELINE_SUBJECT, payload()).await?;

    let callers = Callers {
        requester: bench.natty.requester(),
        client,
        payload: payload(),
    };
    let result = callers.compare(bench).await;
    shutdown.cancel();
    let summary = serving.await?;
    responder.await??;
    let comparisons = result?;
    if summary.errors > 0 || summary.panicked > 0 {
        return Err(format!(
            "service: natty's endpoint answered {} errors, {} panics",
            summary.errors, summary.panicked
        )
        .into());
    }
    Ok(comparisons)
}

/// The baseline's responder: a queue subscription answering each request with its payload.
async fn respond(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    stop: CancellationToken,
) -> Result<(), BoxError> {
    loop {
        let request = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            request = requests.next() => request.ok_or("the baseline's subscription ended")?,
        };
        if let Some(reply) = request.reply {
            client.publish(reply, request.payload).await?;
        }
    }
}

/// Both sides' callers.
struct Callers {
    requester: Requester,
    client: async_nats::Client,
    payload: Bytes,
}

impl Callers {
    async fn compare(&self, bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
        let requests = bench.count(REQUESTS);
        let timed = bench.count(TIMED);
        let throughput = Comparison::new(
            "service-request",
            "req/s",
            Better::Higher,
            Goal::RatioAtLeast(1.0),
            "async-nats queue_subscribe + publish(reply), Client::request, 64 in flight",
        );
        let throughput = alternate(
            throughput,
            async |_| self.throughput(Side::Natty, requests).await,
            async |_| self.throughput(Side::Baseline, requests).await,
        )
        .await?;
        let latency = Comparison::new(
            "service-latency",
            "ms",
            Better::Lower,
            Goal::RatioAtLeast(0.9),
            "async-nats queue_subscribe + publish(reply), Client::request, 2,000 req/s",
        );
        let latency = alternate(
            latency,
            async |_| self.p99(Side::Natty, timed).await,
            async |_| self.p99(Side::Baseline, timed).await,
        )
        .await?;
        Ok(vec![throughput, latency])
    }

    /// One request of `side`; returns the time from its first poll (its send) to its answer.
    async fn call(&self, side: Side) -> Result<Duration, BoxError> {
        let start = Instant::now();
        let answer = match side {
            Side::Natty => self
                .requester
                .request(Request::new(NATTY_SUBJECT, self.payload.clone()))
                .await?
                .into_payload(),
            Side::Baseline => {
                self.client
                    .request(BASELINE_SUBJECT, self.payload.clone())
                    .await?
                    .payload
            }
        };
        let elapsed = start.elapsed();
        if answer.len() != self.payload.len() {
            return Err(format!("service: an answer of {} bytes", answer.len()).into());
        }
        Ok(elapsed)
    }

    /// `count` requests of `side`, [`IN_FLIGHT`] at a time; returns requests per second.
    async fn throughput(&self, side: Side, count: usize) -> Result<f64, BoxError> {
        let start = Instant::now();
        stream::iter(0..count)
            .map(|_| self.call(side))
            .buffer_unordered(IN_FLIGHT)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        Ok(per_second(count, start.elapsed()))
    }

    /// `count` requests of `side` sent at [`SEND_EVERY`]; returns their p99 in milliseconds.
    async fn p99(&self, side: Side, count: usize) -> Result<f64, BoxError> {
        for _ in 0..WARM_UP {
            self.call(side).await?;
        }
        let mut ticks = tokio::time::interval(SEND_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut in_flight = FuturesUnordered::new();
        let mut latencies = Vec::with_capacity(count);
        let mut sent = 0;
        while latencies.len() < count {
            tokio::select! {
                _ = ticks.tick(), if sent < count => {
                    sent += 1;
                    in_flight.push(self.call(side));
                }
                Some(latency) = in_flight.next() => latencies.push(latency?),
            }
        }
        latencies.sort_unstable();
        let (p50, p99) = (percentile(&latencies, 50), percentile(&latencies, 99));
        let name = match side {
            Side::Natty => "natty",
            Side::Baseline => "baseline",
        };
        println!(
            "  service-latency {name}: p50 {:.3} ms, p99 {:.3} ms",
            millis(p50),
            millis(p99)
        );
        Ok(millis(p99))
    }
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
    fn percentiles_take_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50), Duration::from_millis(100));
        assert_eq!(percentile(&sorted, 99), Duration::from_millis(198));
    }
}
