//! The scenarios: each runs natty and its hand-written async-nats baseline in
//! alternating rounds against the same server and returns one [`Comparison`] per line.
//!
//! The baselines are what a careful user writes with async-nats alone, on their own
//! connection, with the same stream settings as natty's side. Two are bounds rather than
//! alternatives: `consume-ceiling`'s (a consumer without acks, the most the server delivers)
//! and `groups-efficiency`'s (the ideal rate, computed from natty's own run).

pub(crate) mod axum_publish;
pub(crate) mod consume;
pub(crate) mod consume_latency;
pub(crate) mod explain;
pub(crate) mod groups;
pub(crate) mod groups_efficiency;
pub(crate) mod kv;
pub(crate) mod leader;
pub(crate) mod memory;
pub(crate) mod process;
pub(crate) mod publish;
pub(crate) mod service;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use bytes::Bytes;
use natty::Natty;
use natty_testkit::Server;

pub(crate) use crate::report::Comparison;

/// Any error of a run; a failed run stops the benchmark.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Rounds of natty and baseline per comparison; the first side alternates each round.
pub(crate) const ROUNDS: usize = 3;

/// The message size of every scenario.
pub(crate) const PAYLOAD_SIZE: usize = 128;

/// A server, a natty client, and a separate plain async-nats connection for the baselines.
pub(crate) struct Bench {
    pub(crate) server: Server,
    pub(crate) natty: Natty,
    pub(crate) jetstream: jetstream::Context,
    scale: f64,
}

impl Bench {
    /// Start a nats-server (JetStream, file storage, loopback) and connect both sides.
    /// `scale` multiplies every message count (1.0 for the published numbers).
    pub(crate) async fn start(scale: f64) -> Result<Self, BoxError> {
        let server = Server::start()?;
        let natty = Natty::connect(natty::Config::new([server.url()])).await?;
        let client = async_nats::connect(server.url()).await?;
        Ok(Self {
            server,
            natty,
            jetstream: jetstream::new(client),
            scale,
        })
    }

    /// `count` scaled by the `--scale` option, at least 1.
    pub(crate) fn count(&self, count: usize) -> usize {
        ((count as f64 * self.scale) as usize).max(1)
    }

    /// A fresh plain async-nats connection, for baselines that need one of their own.
    pub(crate) async fn plain_client(&self) -> Result<async_nats::Client, BoxError> {
        Ok(async_nats::connect(self.server.url()).await?)
    }

    /// Messages stored in `stream` right now.
    pub(crate) async fn stored(&self, stream: &str) -> Result<u64, BoxError> {
        let mut stream = self.jetstream.get_stream(stream).await?;
        Ok(stream.info().await?.state.messages)
    }

    /// Remove every message of `stream`, so each run starts from the same state.
    pub(crate) async fn purge(&self, stream: &str) -> Result<(), BoxError> {
        self.jetstream.get_stream(stream).await?.purge().await?;
        Ok(())
    }

    /// Create the stream `name` on `subjects` with natty's stream settings
    /// ([`natty::Stream::create`]), kept on `storage`.
    pub(crate) async fn create_stream(
        &self,
        name: &str,
        subjects: &[&str],
        storage: Storage,
    ) -> Result<(), BoxError> {
        match storage {
            Storage::File => {
                self.natty
                    .stream(name)?
                    .create(subjects.iter().copied())
                    .await?
            }
            // What `Stream::create` sends, storage aside: natty has no setting for storage.
            Storage::Memory => {
                self.natty
                    .stream(name)?
                    .create_with_config(stream::Config {
                        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
                        retention: RetentionPolicy::Limits,
                        storage: StorageType::Memory,
                        max_age: natty::stream::DEFAULT_MAX_AGE,
                        allow_batch_publish: self.natty.server_info().supports_fast_ingest(),
                        allow_atomic_publish: self.natty.server_info().supports_atomic_batch(),
                        ..Default::default()
                    })
                    .await?
            }
        }
        Ok(())
    }
}

/// Where a scenario's stream keeps its messages. The server runs with a file store; the
/// lines named `…-mem` repeat their file-storage line on a memory-storage stream, which takes
/// the disk out of what is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    File,
    Memory,
}

impl Storage {
    /// The line `name` on this storage: `name` on file storage, `name-mem` on memory.
    pub(crate) fn line(self, name: &str) -> String {
        match self {
            Self::File => name.to_owned(),
            Self::Memory => format!("{name}-mem"),
        }
    }
}

/// The durable consumer natty's `serve` creates, for the baselines that read the same way:
/// explicit acks, natty's 30 s ack wait, at most 1000 unacked.
pub(crate) fn natty_like_consumer(durable: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(durable.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1000,
        ..Default::default()
    }
}

/// A 128-byte payload; clones share one buffer on both sides.
pub(crate) fn payload() -> Bytes {
    Bytes::from(vec![b'x'; PAYLOAD_SIZE])
}

/// Operations per second.
pub(crate) fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// One side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Natty,
    Baseline,
}

/// The order of the sides in `round`: natty goes first in even rounds, so neither side always
/// gets the warm (or the cold) server.
pub(crate) fn sides(round: usize) -> [Side; 2] {
    rotated(round, [Side::Natty, Side::Baseline])
}

/// `runs` rotated left by `round`: each run of a round goes first in turn.
pub(crate) fn rotated<T, const N: usize>(round: usize, mut runs: [T; N]) -> [T; N] {
    runs.rotate_left(round % N);
    runs
}

/// `comparison` with [`ROUNDS`] samples of each side, taking turns at going first; each closure
/// gets the round and returns one sample.
pub(crate) async fn alternate(
    mut comparison: Comparison,
    mut natty: impl AsyncFnMut(usize) -> Result<f64, BoxError>,
    mut baseline: impl AsyncFnMut(usize) -> Result<f64, BoxError>,
) -> Result<Comparison, BoxError> {
    for round in 0..ROUNDS {
        for side in sides(round) {
            match side {
                Side::Natty => comparison.natty.push(natty(round).await?),
                Side::Baseline => comparison.baseline.push(baseline(round).await?),
            }
        }
    }
    Ok(comparison)
}

/// Fail the run unless `stored` equals `expected`: a benchmark that lost messages is no
/// benchmark.
pub(crate) fn check_count(what: &str, stored: u64, expected: usize) -> Result<(), BoxError> {
    if stored == expected as u64 {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected} messages, found {stored}").into())
    }
}

/// The CPU time this process (the client side: natty or the baseline, never the server) spent
/// over a run, from `/proc/self/stat`: on a machine whose cores the server shares, it tells
/// what each side costs per message where throughput only shows who waited for whom.
pub(crate) struct ClientCpu(Option<Duration>);

impl ClientCpu {
    pub(crate) fn start() -> Self {
        Self(process_cpu())
    }

    /// "client CPU N µs/msg" since the start, or a note that it could not be read.
    pub(crate) fn per_message(&self, count: usize) -> String {
        match (self.0, process_cpu()) {
            (Some(start), Some(now)) if count > 0 => format!(
                "client CPU {:.2} us/msg",
                (now.saturating_sub(start)).as_secs_f64() * 1e6 / count as f64
            ),
            _ => "client CPU unknown".to_owned(),
        }
    }
}

/// User plus system time of this process; Linux reports it in clock ticks of 10 ms.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, so split after its `)`).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}
