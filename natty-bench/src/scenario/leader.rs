//! `leader-handover` and `leader-failover-crash`: how long a key goes without a leader.
//!
//! Graceful: from the moment the leader stops acting as leader (its term's end, just before it
//! deletes the key) to the moment the candidate starts acting as leader (its winning write
//! acked). Crash: from cutting the leader's connection (a testkit proxy between it and the
//! server) to the candidate's winning write, with a 2 s TTL.
//!
//! The baseline is Go natty's scheme written with async-nats: acquire with a KV create,
//! renew with a blind put every TTL / 3, leave the key behind on release, and let candidates
//! retry the create every 100 ms until the bucket's max age removes the key.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Store};
use bytes::Bytes;
use natty::{CancellationToken, ElectionConfig, LeaderState, Leadership, Natty};
use natty_testkit::Proxy;

use super::{sides, Bench, BoxError, Comparison, Side, ROUNDS};
use crate::report::{Better, Goal};

const NATTY_BUCKET: &str = "bench_leader";
const BASELINE_BUCKET: &str = "bench_leader_go";
const TTL: Duration = Duration::from_secs(2);
/// How often a baseline candidate retries its create: far more often than Go natty's 1 s
/// looper, so the baseline is not slowed by its polling.
const BASELINE_POLL: Duration = Duration::from_millis(100);
/// Graceful handovers measured per round on natty's side; they take milliseconds each.
const NATTY_GRACEFUL_PER_ROUND: usize = 3;
/// No wait below may take longer than this.
const PATIENCE: Duration = Duration::from_secs(15);

/// Both comparisons.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    let candidate = &bench.natty;
    let baseline_store = bench
        .jetstream
        .create_key_value(kv::Config {
            bucket: BASELINE_BUCKET.into(),
            max_age: TTL,
            history: 1,
            ..Default::default()
        })
        .await?;

    let mut graceful = Comparison::new(
        "leader-handover",
        "ms",
        Better::Lower,
        Goal::NattyBelow(250.0),
        "Go natty scheme: key left to expire",
    );
    let mut crash = Comparison::new(
        "leader-failover-crash",
        "ms",
        Better::Lower,
        Goal::None,
        "Go natty scheme, same 2 s TTL",
    );
    let mut sample = 0;
    for round in 0..ROUNDS {
        for side in sides(round) {
            sample += 1;
            match side {
                Side::Natty => {
                    let leader = Natty::connect(natty::Config::new([bench.server.url()])).await?;
                    for n in 0..NATTY_GRACEFUL_PER_ROUND {
                        let key = format!("graceful{sample}x{n}");
                        graceful
                            .natty
                            .push(natty_graceful(&leader, candidate, &key).await?);
                    }
                    crash
                        .natty
                        .push(natty_crash(bench, candidate, &format!("crash{sample}")).await?);
                }
                Side::Baseline => {
                    let leader = bench.plain_client().await?;
                    let leader_store = async_nats::jetstream::new(leader)
                        .get_key_value(BASELINE_BUCKET)
                        .await?;
                    let key = format!("graceful{sample}");
                    graceful
                        .baseline
                        .push(baseline_graceful(&leader_store, &baseline_store, &key).await?);
                    crash.baseline.push(
                        baseline_crash(bench, &baseline_store, &format!("crash{sample}")).await?,
                    );
                }
            }
        }
    }
    Ok(vec![graceful, crash])
}

fn election(key: &str, node: &str) -> ElectionConfig {
    ElectionConfig::new(NATTY_BUCKET, key, node).ttl(TTL)
}

fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

async fn within<T>(
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> Result<T, BoxError> {
    tokio::time::timeout(PATIENCE, future)
        .await
        .map_err(|_| format!("{what}: no result within {PATIENCE:?}").into())
}

/// Wait until `candidate` has seen `leader` take the key, so it is watching when it is freed.
async fn following(candidate: &Leadership, leader: &str) -> Result<(), BoxError> {
    let mut state = candidate.subscribe();
    let seen =
        state.wait_for(|s| matches!(s, LeaderState::Follower { leader: Some(l) } if l == leader));
    within("candidate sees the leader", seen).await??;
    Ok(())
}

async fn natty_graceful(leader: &Natty, candidate: &Natty, key: &str) -> Result<f64, BoxError> {
    let first = leader.elect(election(key, "first")).await?;
    let first_term = within("first leader", first.wait_leader()).await??;
    let second = candidate.elect(election(key, "second")).await?;
    following(&second, "first").await?;

    first.stop().await;
    let released = first_term.ended_at().ok_or("the first term did not end")?;
    let second_term = within("graceful handover", second.wait_leader()).await??;
    let gap = second_term.started_at().duration_since(released);
    second.stop().await;
    Ok(millis(gap))
}

async fn natty_crash(bench: &Bench, candidate: &Natty, key: &str) -> Result<f64, BoxError> {
    let proxy = Proxy::start(bench.server.addr())?;
    let leader = Natty::connect(natty::Config::new([proxy.url()])).await?;
    let first = leader.elect(election(key, "first")).await?;
    within("first leader", first.wait_leader()).await??;
    let second = candidate.elect(election(key, "second")).await?;
    following(&second, "first").await?;

    let crashed = Instant::now();
    proxy.cut();
    let second_term = within("crash failover", second.wait_leader()).await??;
    let gap = second_term.started_at().into_std().duration_since(crashed);
    second.stop().await;
    // The cut leader gives up its release after one renew interval; let it go in the background.
    tokio::spawn(async move {
        first.stop().await;
        drop(leader);
    });
    Ok(millis(gap))
}

/// Go natty's leader loop: renew with a blind put every TTL / 3 until `stop`, then walk away.
fn renew_until(store: Store, key: String, node: &'static str, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(TTL / 3) => {}
            }
            let _ = store.put(&key, Bytes::from_static(node.as_bytes())).await;
        }
    });
}

/// Go natty's candidate: retry the create until the key has expired. Returns when it won.
async fn acquire(store: &Store, key: &str, node: &'static str) -> Instant {
    loop {
        if store
            .create(key, Bytes::from_static(node.as_bytes()))
            .await
            .is_ok()
        {
            return Instant::now();
        }
        tokio::time::sleep(BASELINE_POLL).await;
    }
}

/// [`acquire`] in a task of its own, campaigning while the leader still leads.
fn campaign(store: &Store, key: &str) -> tokio::task::JoinHandle<Instant> {
    let (store, key) = (store.clone(), key.to_owned());
    tokio::spawn(async move { acquire(&store, &key, "second").await })
}

async fn baseline_graceful(leader: &Store, candidate: &Store, key: &str) -> Result<f64, BoxError> {
    within("first leader", acquire(leader, key, "first")).await?;
    let stop = CancellationToken::new();
    renew_until(leader.clone(), key.to_owned(), "first", stop.clone());
    let contender = campaign(candidate, key);
    // Lead for a few renewals, as a real leader would, then release the Go way: stop renewing.
    tokio::time::sleep(TTL).await;
    stop.cancel();
    let released = Instant::now();
    let won = within("graceful handover", contender).await??;
    Ok(millis(won.duration_since(released)))
}

async fn baseline_crash(bench: &Bench, candidate: &Store, key: &str) -> Result<f64, BoxError> {
    let proxy = Proxy::start(bench.server.addr())?;
    let client = async_nats::connect(proxy.url()).await?;
    let leader = async_nats::jetstream::new(client)
        .get_key_value(BASELINE_BUCKET)
        .await?;
    within("first leader", acquire(&leader, key, "first")).await?;
    let stop = CancellationToken::new();
    renew_until(leader, key.to_owned(), "first", stop.clone());
    let contender = campaign(candidate, key);
    tokio::time::sleep(TTL).await;

    let crashed = Instant::now();
    proxy.cut();
    let won = within("crash failover", contender).await??;
    stop.cancel();
    Ok(millis(won.duration_since(crashed)))
}
