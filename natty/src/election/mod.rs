//! Leader election on a NATS KV key that never lets two nodes act as leader at once.
//!
//! Go natty's `AsLeader` renews its key with a read and a blind `Put`, keeps running its
//! function after losing leadership, and leaves its key behind on shutdown. This module
//! keeps its easy API (`as_leader`, `have_leader`, `get_leader` on
//! [`GoNatty`](crate::compat::GoNatty)) and adds a [`Leadership`] handle from
//! [`Natty::elect`](crate::Natty::elect), built on these rules:
//!
//! 1. A term is won with a create (a write expecting no value); the revision it returns is
//!    the term's **fencing token**, strictly increasing across terms.
//! 2. Renewals are compare-and-set writes on the last revision, every `ttl / 3`. A
//!    wrong-revision answer ends the term at once, and so does a write by anyone else seen
//!    on the key's watch (a blind put by Go natty's `AsLeader` or an operator).
//! 3. The leader keeps a **local lease** on the monotonic clock, measured from when each
//!    renew was *sent*: it acts as leader only while `last renew sent + ttl - safety margin`
//!    is in the future, so it stops before the server can expire the key. Errors, timeouts
//!    and disconnects keep it leader only until then. Every way of asking checks the lease
//!    itself ([`Leadership::is_leader`], [`Leadership::state`], [`Leadership::subscribe`],
//!    [`Term::is_current`], [`Term::bound`], [`run_while_leader`]), so a process stopped past
//!    its lease (SIGSTOP, a VM pause, a blocked runtime) does not act on resuming, even
//!    before the campaign task runs again.
//! 4. Each term has a [`CancellationToken`](tokio_util::sync::CancellationToken), cancelled
//!    the moment the term ends; [`run_while_leader`] runs a task per term under it.
//! 5. Shutdown (the configured token, [`Leadership::stop`], or dropping the last handle) and
//!    [`Leadership::step_down`] cancel the term first, then delete the key at the expected
//!    revision. Candidates watch the key, so a release is taken over at once.
//! 6. On servers with per-message TTL (2.11+) and a bucket that allows it, every write
//!    carries a `Nats-TTL`, so the key expires on its own schedule; older servers fall back
//!    to the bucket's max age, and candidates poll every renew interval because those
//!    expiries leave no marker to watch.
//!
//! Why not reuse a crate: no maintained Rust crate elects over NATS KV; the writes are
//! published here because async-nats has no compare-and-set update with a TTL.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use natty::{election, ElectionConfig, Natty};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = Natty::connect(natty::Config::new(["nats://127.0.0.1:4222"])).await?;
//! let config = ElectionConfig::new("leaders", "billing", "node-1").ttl(Duration::from_secs(5));
//! let leadership = natty.elect(config).await?;
//!
//! // Run the billing loop only while this node leads; it is cancelled when leadership goes.
//! let billing = tokio::spawn(election::run_while_leader(leadership.clone(), |term| async move {
//!     loop {
//!         println!("billing under fencing token {}", term.fencing_token());
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!     }
//! }));
//!
//! let term = leadership.wait_leader().await?;
//! assert!(leadership.is_leader());
//! leadership.step_down().await?; // hand over to another node
//! term.ended().await;
//! leadership.stop().await; // release the key and stop campaigning
//! billing.await?;
//! # Ok(())
//! # }
//! ```

mod campaign;
mod config;
mod error;
mod leadership;

use std::future::Future;
use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

pub use config::{ElectionConfig, DEFAULT_INTERVAL, DEFAULT_TTL};
pub use error::{ElectionError, ElectionErrorKind};
pub use leadership::{LeaderState, LeaderWatch, Leadership, Term};

use crate::connection::Connection;
use crate::error::{Error, ValidationError};
use campaign::Campaign;
use config::Timings;
use error::bucket_error;
use leadership::TermSlot;

impl Connection {
    /// Start campaigning for `config`'s key in the background and return the handle.
    ///
    /// Creates the bucket (with the configured TTL, replicas and description) when it is
    /// missing. The returned handle starts in [`LeaderState::Unknown`].
    ///
    /// # Errors
    /// `InvalidConfig` before anything is sent; `TtlMismatch` when the bucket exists with
    /// another TTL; `Bucket` when it cannot be read or created.
    pub(crate) async fn elect(&self, config: ElectionConfig) -> Result<Leadership, ElectionError> {
        config.validate()?;
        let store = self.election_bucket(&config).await?;
        if store.use_jetstream_prefix {
            return Err(Error::with_source(
                ElectionErrorKind::InvalidConfig,
                ValidationError::new(
                    "bucket",
                    &config.bucket,
                    "is reached through a JetStream domain prefix, which elections do not support",
                ),
            ));
        }
        let info = store.status().await.map_err(bucket_error)?;
        let per_key_ttl =
            self.server().supports_message_ttl() && info.info.config.allow_message_ttl;
        let timings = Timings::new(&config, per_key_ttl);
        let subject = format!(
            "{}{}",
            store.put_prefix.as_deref().unwrap_or(&store.prefix),
            config.key
        );

        let shutdown = config.shutdown.map(|t| t.child_token()).unwrap_or_default();
        let (state_tx, state_rx) = watch::channel(LeaderState::Unknown);
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let slot = Arc::new(TermSlot::default());
        let campaign = Campaign {
            store,
            jetstream: self.jetstream().clone(),
            subject,
            key: config.key,
            node: Bytes::from(config.node.clone()),
            timings,
            state: state_tx,
            slot: Arc::clone(&slot),
            commands: commands_rx,
            shutdown: shutdown.clone(),
        };
        tokio::spawn(campaign.run());
        Ok(Leadership::new(
            shutdown,
            commands_tx,
            slot,
            config.node,
            state_rx,
        ))
    }

    /// The election bucket, created when missing; an existing one must have the TTL asked.
    async fn election_bucket(&self, config: &ElectionConfig) -> Result<kv::Store, ElectionError> {
        let store = match self.store(&config.bucket).await.map_err(bucket_error)? {
            Some(store) => kv::Store::clone(&store),
            None => {
                let created = self
                    .jetstream()
                    .create_key_value(self.bucket_config(
                        &config.bucket,
                        config.ttl,
                        config.replicas,
                        &config.description,
                    ))
                    .await;
                match created {
                    Ok(store) => store,
                    // Another node may have created it first, possibly with another TTL.
                    Err(err) => self
                        .store(&config.bucket)
                        .await
                        .map_err(bucket_error)?
                        .map(|store| kv::Store::clone(&store))
                        .ok_or_else(|| bucket_error(err))?,
                }
            }
        };
        let status = store.status().await.map_err(bucket_error)?;
        let ttl = status.info.config.max_age;
        if ttl != config.ttl {
            return Err(Error::with_source(
                ElectionErrorKind::TtlMismatch,
                ValidationError::new(
                    "bucket ttl",
                    &format!("{ttl:?}"),
                    "differs from the configured ttl",
                ),
            ));
        }
        Ok(store)
    }
}

/// Run a task made by `task` each time this node wins leadership, only within the term.
///
/// The task runs under [`Term::bound`]: it is polled only while the term is current, and
/// dropped at its first poll after the term ended or its local lease ran out, even when this
/// node's campaign task has not run yet (after a stall of the whole process, say). A task
/// that finishes early is not restarted before the next term. Returns when the campaign
/// stops.
///
/// What runs when a term ends: the task future is dropped, so code after a pending `.await`
/// in it (such as `term.ended().await; cleanup()`) never runs. Put cleanup in a value whose
/// `Drop` does it (dropped with the task, right when the term ends), or after the loop that
/// awaits `run_while_leader`.
///
/// Holding `leadership` here keeps the campaign alive: stop it with its shutdown token or
/// [`Leadership::stop`].
///
/// # Example
/// ```no_run
/// # async fn run(leadership: natty::Leadership) {
/// struct Cleanup(u64);
/// impl Drop for Cleanup {
///     fn drop(&mut self) {
///         println!("term {} is over: cleaning up", self.0);
///     }
/// }
///
/// natty::election::run_while_leader(leadership, |term| async move {
///     let _cleanup = Cleanup(term.fencing_token());
///     loop {
///         println!("leading with fencing token {}", term.fencing_token());
///         tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///     }
/// })
/// .await;
/// # }
/// ```
pub async fn run_while_leader<F, Fut>(leadership: Leadership, mut task: F)
where
    F: FnMut(Term) -> Fut,
    Fut: Future<Output = ()>,
{
    while let Ok(term) = leadership.wait_leader().await {
        if term.bound(task(term.clone())).await.is_some() {
            term.ended().await;
        }
    }
}
