//! `kv-get` and `kv-put`: natty's KV calls against async-nats `Store` calls on the same
//! bucket, one call at a time.

use std::time::Instant;

use async_nats::jetstream::kv::Store;
use bytes::Bytes;

use super::{payload, per_second, sides, Bench, BoxError, Comparison, Side, ROUNDS};
use crate::report::{Better, Goal};

const BUCKET: &str = "bench_kv";
/// Calls per run.
const CALLS: usize = 8_000;
/// Keys cycled through, so puts and gets touch more than one subject.
const KEYS: usize = 100;

/// Both KV comparisons.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    let calls = bench.count(CALLS);
    let keys: Vec<String> = (0..KEYS).map(|k| format!("key{k}")).collect();
    let value = payload();
    // natty creates the bucket with its settings on first write; both sides then use it.
    for key in &keys {
        bench.natty.bucket(BUCKET)?.put(key, value.clone()).await?;
    }
    let store = bench.jetstream.get_key_value(BUCKET).await?;

    let mut put = Comparison::new(
        "kv-put",
        "op/s",
        Better::Higher,
        Goal::RatioAtLeast(0.95),
        "async-nats Store::put",
    );
    let mut get = Comparison::new(
        "kv-get",
        "op/s",
        Better::Higher,
        Goal::RatioAtLeast(0.95),
        "async-nats Store::get",
    );
    for round in 0..ROUNDS {
        for side in sides(round) {
            match side {
                Side::Natty => put
                    .natty
                    .push(natty_put(bench, &keys, &value, calls).await?),
                Side::Baseline => put
                    .baseline
                    .push(store_put(&store, &keys, &value, calls).await?),
            }
        }
        for side in sides(round) {
            match side {
                Side::Natty => get.natty.push(natty_get(bench, &keys, calls).await?),
                Side::Baseline => get.baseline.push(store_get(&store, &keys, calls).await?),
            }
        }
    }
    Ok(vec![get, put])
}

async fn natty_put(
    bench: &Bench,
    keys: &[String],
    value: &Bytes,
    calls: usize,
) -> Result<f64, BoxError> {
    let start = Instant::now();
    for key in keys.iter().cycle().take(calls) {
        bench.natty.bucket(BUCKET)?.put(key, value.clone()).await?;
    }
    Ok(per_second(calls, start.elapsed()))
}

async fn store_put(
    store: &Store,
    keys: &[String],
    value: &Bytes,
    calls: usize,
) -> Result<f64, BoxError> {
    let start = Instant::now();
    for key in keys.iter().cycle().take(calls) {
        store.put(key, value.clone()).await?;
    }
    Ok(per_second(calls, start.elapsed()))
}

async fn natty_get(bench: &Bench, keys: &[String], calls: usize) -> Result<f64, BoxError> {
    let start = Instant::now();
    for key in keys.iter().cycle().take(calls) {
        let value = bench.natty.bucket(BUCKET)?.get(key).await?;
        if value.is_none() {
            return Err(format!("natty get: {key} has no value").into());
        }
    }
    Ok(per_second(calls, start.elapsed()))
}

async fn store_get(store: &Store, keys: &[String], calls: usize) -> Result<f64, BoxError> {
    let start = Instant::now();
    for key in keys.iter().cycle().take(calls) {
        let value = store.get(key).await?;
        if value.is_none() {
            return Err(format!("store get: {key} has no value").into());
        }
    }
    Ok(per_second(calls, start.elapsed()))
}
