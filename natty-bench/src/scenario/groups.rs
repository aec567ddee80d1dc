//! `groups-vs-ordered`: per-key order two ways, with a handler that takes 1 ms. natty's
//! partitioned consumer group (4 members, 2 partitions each, one instance per member) against
//! the usual way to keep order in JetStream: one consumer with `max_ack_pending = 1`, read
//! through async-nats' `messages()` loop.
//!
//! Every run consumes the same stored messages (64 keys, numbers in order) through consumers
//! created inside the timed part and is timed until its last message is handled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures_util::StreamExt;
use natty::group::{MemberConfig, Partitioning, StaticGroupConfig};
use natty::{CancellationToken, Message};
use tokio::sync::Notify;

use super::{alternate, check_count, per_second, Bench, BoxError, Comparison};
use crate::report::{Better, Goal};

const STREAM: &str = "BENCH_GROUPS";
const MESSAGES: usize = 2_000;
const KEYS: usize = 64;
const MEMBERS: [&str; 4] = ["m0", "m1", "m2", "m3"];
const PARTITIONS: u32 = 8;
const HANDLER_TIME: Duration = Duration::from_millis(1);

/// The comparison.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    let count = bench.count(MESSAGES).max(KEYS);
    bench
        .natty
        .stream(STREAM)?
        .create_partitioned(&Partitioning::new("bench.groups.*", PARTITIONS))
        .await?;
    bench.purge(STREAM).await?;
    for n in 0..count {
        bench
            .natty
            .publish(&format!("bench.groups.k{}", n % KEYS), n.to_string())
            .await?;
    }
    bench.natty.flush().await;
    check_count("groups setup", bench.stored(STREAM).await?, count)?;

    let comparison = Comparison::new(
        "groups-vs-ordered",
        "msg/s",
        Better::Higher,
        Goal::RatioAtLeast(3.0),
        "one consumer, max_ack_pending = 1",
    );
    let comparison = alternate(
        comparison,
        async |round| group(bench, round, count).await,
        async |round| ordered(bench, round, count).await,
    )
    .await?;
    Ok(vec![comparison])
}

/// Four natty members, each serving a handler that sleeps 1 ms.
async fn group(bench: &Bench, round: usize, count: usize) -> Result<f64, BoxError> {
    let name = format!("g{round}");
    let handled = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    bench
        .natty
        .static_group(STREAM, &name)?
        .create(&StaticGroupConfig::with_members(PARTITIONS, MEMBERS))
        .await?;
    let mut members = Vec::new();
    for member in MEMBERS {
        let (seen, done) = (Arc::clone(&handled), Arc::clone(&all_done));
        let handler = tower::service_fn(move |_: Message| {
            let (seen, done) = (Arc::clone(&seen), Arc::clone(&done));
            async move {
                tokio::time::sleep(HANDLER_TIME).await;
                if seen.fetch_add(1, Ordering::AcqRel) + 1 == count {
                    done.notify_one();
                }
                Ok::<_, std::convert::Infallible>(())
            }
        });
        let group = bench.natty.static_group(STREAM, &name)?;
        let config = MemberConfig::new(member).shutdown_grace(Duration::from_secs(1));
        let stop = shutdown.clone();
        members.push(tokio::spawn(async move {
            group.serve(config, stop, handler).await
        }));
    }
    all_done.notified().await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    for member in members {
        member.await??;
    }
    bench.natty.static_group(STREAM, &name)?.delete().await?;
    Ok(per_second(count, elapsed))
}

/// One consumer with `max_ack_pending = 1`: the same handler, one message at a time.
async fn ordered(bench: &Bench, round: usize, count: usize) -> Result<f64, BoxError> {
    let started = Instant::now();
    let stream = bench.jetstream.get_stream(STREAM).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(format!("ordered-{round}")),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: 1,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut handled = 0;
    while handled < count {
        let message = messages.next().await.ok_or("message stream ended")??;
        tokio::time::sleep(HANDLER_TIME).await;
        message.ack().await?;
        handled += 1;
    }
    let elapsed = started.elapsed();
    drop(messages);
    stream.delete_consumer(&format!("ordered-{round}")).await?;
    Ok(per_second(count, elapsed))
}
