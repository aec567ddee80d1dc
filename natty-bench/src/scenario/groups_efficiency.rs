//! `groups-efficiency`: how close natty's partition lanes come to keeping every lane busy. A
//! static group of 8 partitions, all served by one instance of one member (one consumer and
//! one driver feed every lane, where `groups-vs-ordered` spreads 4 members x 2), a handler that
//! sleeps 1 ms, and 20,000 stored messages, the same number in every partition.
//!
//! natty runs one call at a time per partition and the partitions at once, so at best 8 calls
//! run at every moment: the ideal is 8 / the mean handler time, and whatever natty leaves
//! between a lane's calls (pulls, acks, handing messages to their lane) is what the ratio shows
//! missing. The handler measures both: each call's sleep (the mean over all calls gives the
//! ideal, so that a 1 ms sleep taking longer on the runtime's millisecond timer counts on both
//! sides), and the window from the first call's start to the last call's end (natty's rate:
//! calls / window). Creating the group, pinning and the first pull come before the window.
//!
//! The messages are stored with their keys interleaved (published in order on one plain
//! connection), so that every lane has messages among those the consumer's pending limit lets
//! the member hold. The keys are chosen so that every partition holds the same number of messages: with a
//! hash's uneven shares the fullest lane would run alone at the end, and the line would
//! measure the hash rather than the lanes. A key's partition is the server's (a
//! `partition(8,1)` subject transform, which natty does not compute), so the keys are picked by
//! trial: one probe message per candidate key, read back as the stored subjects
//! `<partition>.bench.lanes.<key>`, keeping 4 keys for each partition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use natty::group::{MemberConfig, Partitioning, StaticGroupConfig};
use natty::{CancellationToken, Message};
use tokio::sync::Notify;

use super::{check_count, Bench, BoxError, Comparison, ROUNDS};
use crate::report::{Better, Goal};

const STREAM: &str = "BENCH_LANES";
const PREFIX: &str = "bench.lanes";
const PARTITIONS: u32 = 8;
/// The one member, owning every partition.
const MEMBER: &str = "all";
const MESSAGES: usize = 20_000;
const KEYS_PER_PARTITION: usize = 4;
/// Publish acks awaited at once while storing the messages.
const WINDOW: usize = 256;
/// Keys tried to find [`KEYS_PER_PARTITION`] for every partition (32 land in each on average).
const CANDIDATES: usize = 256;
const HANDLER_TIME: Duration = Duration::from_millis(1);

/// The comparison.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    bench
        .natty
        .stream(STREAM)?
        .create_partitioned(&Partitioning::new(format!("{PREFIX}.*"), PARTITIONS))
        .await?;
    let keys = balanced_keys(bench).await?;
    let count = bench.count(MESSAGES).div_ceil(keys.len()) * keys.len();
    bench.purge(STREAM).await?;
    // Stored in this order, the keys (and so the partitions) interleaved: natty's `publish`
    // keeps order per subject only, and its per-subject batches would store runs of one key,
    // leaving some lanes without messages while the consumer's pending limit is taken by others.
    let mut acks = std::collections::VecDeque::with_capacity(WINDOW);
    for (n, key) in keys.iter().cycle().take(count).enumerate() {
        if acks.len() == WINDOW {
            if let Some(ack) = acks.pop_front() {
                ack.await?;
            }
        }
        let ack = bench
            .jetstream
            .publish(format!("{PREFIX}.{key}"), n.to_string().into())
            .await?;
        acks.push_back(ack);
    }
    for ack in acks {
        ack.await?;
    }
    check_count(
        "groups-efficiency setup",
        bench.stored(STREAM).await?,
        count,
    )?;
    for (partition, stored) in stored_per_partition(bench).await? {
        let what = format!("groups-efficiency setup, partition {partition}");
        check_count(&what, stored, count / PARTITIONS as usize)?;
    }

    let mut comparison = Comparison::new(
        "groups-efficiency",
        "msg/s",
        Better::Higher,
        Goal::RatioAtLeast(0.9),
        "ideal: 8 lanes / mean handler time",
    );
    for round in 0..ROUNDS {
        let calls = serve_all_partitions(bench, round, count).await?;
        println!(
            "  groups-efficiency: {} calls in {:.2} s, mean handler time {:.3} ms",
            calls.calls,
            calls.window().as_secs_f64(),
            calls.mean().as_secs_f64() * 1000.0
        );
        comparison.natty.push(calls.rate());
        comparison.baseline.push(calls.ideal());
    }
    Ok(vec![comparison])
}

/// [`KEYS_PER_PARTITION`] keys for every partition, found by storing one probe per candidate.
async fn balanced_keys(bench: &Bench) -> Result<Vec<String>, BoxError> {
    bench.purge(STREAM).await?;
    for n in 0..CANDIDATES {
        bench
            .natty
            .publish(&format!("{PREFIX}.k{n}"), "probe")
            .await?;
    }
    bench.natty.flush().await;
    let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (subject, _) in stored_subjects(bench).await? {
        let (partition, key) = partition_and_key(&subject)?;
        by_partition
            .entry(partition)
            .or_default()
            .push(key.to_owned());
    }
    let mut keys = Vec::new();
    for partition in 0..PARTITIONS {
        let mut found = by_partition.remove(&partition).unwrap_or_default();
        if found.len() < KEYS_PER_PARTITION {
            return Err(format!(
                "groups-efficiency: {} of {CANDIDATES} keys land in partition {partition}, {KEYS_PER_PARTITION} needed",
                found.len()
            )
            .into());
        }
        found.sort_unstable();
        keys.extend(found.into_iter().take(KEYS_PER_PARTITION));
    }
    Ok(keys)
}

/// Every stored subject and how many messages it holds.
async fn stored_subjects(bench: &Bench) -> Result<Vec<(String, usize)>, BoxError> {
    let stream = bench.jetstream.get_stream(STREAM).await?;
    let mut subjects = stream.info_with_subjects(">").await?;
    let mut stored = Vec::new();
    while let Some(subject) = subjects.next().await {
        stored.push(subject?);
    }
    Ok(stored)
}

/// Messages stored in each partition.
async fn stored_per_partition(bench: &Bench) -> Result<BTreeMap<u32, u64>, BoxError> {
    let mut per_partition = BTreeMap::new();
    for (subject, stored) in stored_subjects(bench).await? {
        let (partition, _) = partition_and_key(&subject)?;
        *per_partition.entry(partition).or_default() += stored as u64;
    }
    Ok(per_partition)
}

/// `<partition>.bench.lanes.<key>` split into its partition and key.
fn partition_and_key(stored: &str) -> Result<(u32, &str), BoxError> {
    let unexpected = || format!("groups-efficiency: unexpected stored subject {stored:?}");
    let (partition, subject) = stored.split_once('.').ok_or_else(unexpected)?;
    let key = subject
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or_else(unexpected)?;
    Ok((partition.parse()?, key))
}

/// One group, one instance of its one member serving all partitions, until `count` calls ended.
async fn serve_all_partitions(
    bench: &Bench,
    round: usize,
    count: usize,
) -> Result<Calls, BoxError> {
    let group = format!("lanes{round}");
    bench
        .natty
        .static_group(STREAM, &group)?
        .create(&StaticGroupConfig::with_members(PARTITIONS, [MEMBER]))
        .await?;
    let calls = Arc::new(Mutex::new(Calls::default()));
    let all_done = Arc::new(Notify::new());
    let (seen, done) = (Arc::clone(&calls), Arc::clone(&all_done));
    let handler = tower::service_fn(move |_: Message| {
        let (seen, done) = (Arc::clone(&seen), Arc::clone(&done));
        async move {
            let start = Instant::now();
            tokio::time::sleep(HANDLER_TIME).await;
            let end = Instant::now();
            let mut calls = seen.lock().unwrap_or_else(PoisonError::into_inner);
            calls.record(start, end);
            if calls.calls == count {
                done.notify_one();
            }
            Ok::<_, std::convert::Infallible>(())
        }
    });
    let shutdown = CancellationToken::new();
    let config = MemberConfig::new(MEMBER).shutdown_grace(Duration::from_secs(1));
    let handle = bench.natty.static_group(STREAM, &group)?;
    let serving = handle.serve(config, shutdown.clone(), handler);
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => {
            let handled = served?.handled;
            return Err(format!("groups-efficiency: the member stopped after {handled} of {count} calls").into());
        }
        () = all_done.notified() => shutdown.cancel(),
    }
    let summary = serving.await?;
    check_count("groups-efficiency", summary.handled, count)?;
    bench.natty.static_group(STREAM, &group)?.delete().await?;
    let calls = calls.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(calls.clone())
}

/// What the handler saw over all its calls.
#[derive(Clone, Debug, Default)]
struct Calls {
    calls: usize,
    /// The sum of the calls' durations.
    busy: Duration,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
}

impl Calls {
    fn record(&mut self, start: Instant, end: Instant) {
        self.calls += 1;
        self.busy += end - start;
        self.first_start = Some(self.first_start.map_or(start, |first| first.min(start)));
        self.last_end = Some(self.last_end.map_or(end, |last| last.max(end)));
    }

    /// The mean duration of a call.
    fn mean(&self) -> Duration {
        self.busy.div_f64(self.calls.max(1) as f64)
    }

    /// From the first call's start to the last call's end.
    fn window(&self) -> Duration {
        match (self.first_start, self.last_end) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        }
    }

    /// natty's rate: calls per second over the window.
    fn rate(&self) -> f64 {
        self.calls as f64 / self.window().as_secs_f64()
    }

    /// Every lane busy all the window: one call per lane per mean call duration.
    fn ideal(&self) -> f64 {
        f64::from(PARTITIONS) / self.mean().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_subjects_split_into_partition_and_key() {
        assert_eq!(
            partition_and_key("3.bench.lanes.k17").expect("a stored subject"),
            (3, "k17")
        );
        assert!(partition_and_key("bench.lanes.k17").is_err());
        assert!(partition_and_key("3.bench.other.k17").is_err());
    }

    #[test]
    fn eight_lanes_back_to_back_reach_the_ideal() {
        let origin = Instant::now();
        let mut calls = Calls::default();
        let call = Duration::from_millis(2);
        for lane_call in 0..10u32 {
            for _lane in 0..PARTITIONS {
                let start = origin + call * lane_call;
                calls.record(start, start + call);
            }
        }
        assert_eq!(calls.mean(), call);
        assert_eq!(calls.window(), call * 10);
        assert!((calls.rate() / calls.ideal() - 1.0).abs() < 1e-9);
        assert_eq!(calls.ideal(), 4000.0);
    }
}
