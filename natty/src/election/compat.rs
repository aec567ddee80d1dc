//! Go natty's `AsLeader`, `HaveLeader` and `GetLeader`, on top of [`Natty::elect`].

use std::fmt::Display;
use std::future::Future;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::config::ElectionConfig;
use super::error::{ElectionError, ElectionErrorKind};
use crate::error::{Error, KvErrorKind};
use crate::Natty;

impl Natty {
    /// Run `f` every [`ElectionConfig::interval`] for as long as this node leads, until
    /// `shutdown` is cancelled (Go natty's `AsLeader`, with its `Looper` as the interval).
    ///
    /// Unlike Go's, a run of `f` is dropped the moment leadership is lost, and on shutdown
    /// the key is released so another node takes over at once. Errors `f` returns are logged
    /// and the loop goes on, as in Go.
    ///
    /// # Errors
    /// Those of [`Natty::elect`]: `InvalidConfig`, `TtlMismatch` (Go's
    /// `ErrBucketTTLMismatch`) or `Bucket`.
    pub async fn as_leader<F, Fut, E>(
        &self,
        config: ElectionConfig,
        shutdown: CancellationToken,
        mut f: F,
    ) -> Result<(), ElectionError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        let interval = config.interval;
        let leadership = self.elect(config.shutdown(shutdown.clone())).await?;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(term) = leadership.term() else {
                continue;
            };
            // Polled only within the term: a stall past the lease drops `f` at its next poll.
            if let Some(Err(err)) = term.bound(f()).await {
                tracing::warn!(node = leadership.node(), error = %err, "as_leader: function failed");
            }
        }
        leadership.stop().await;
        Ok(())
    }

    /// The node name stored under `key` (Go natty's `GetLeader`), or `None` when nobody holds
    /// it. The value can outlive a leader that lost its lease by up to the TTL; use a
    /// [`Leadership`](crate::Leadership) to know whether this node leads.
    ///
    /// # Errors
    /// `InvalidConfig` for a bad bucket or key name; `Bucket` when the server fails.
    pub async fn get_leader(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<String>, ElectionError> {
        match self.get(bucket, key).await {
            Ok(value) => Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned())),
            Err(err) => {
                let kind = match err.kind() {
                    KvErrorKind::InvalidBucket | KvErrorKind::InvalidKey => {
                        ElectionErrorKind::InvalidConfig
                    }
                    _ => ElectionErrorKind::Bucket,
                };
                Err(Error::with_source(kind, err))
            }
        }
    }

    /// Whether `key` names `node` as leader (Go natty's `HaveLeader`); `false` on any error.
    pub async fn have_leader(&self, node: &str, bucket: &str, key: &str) -> bool {
        matches!(self.get_leader(bucket, key).await, Ok(Some(leader)) if leader == node)
    }
}
