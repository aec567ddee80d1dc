//! [`ElectionConfig`]: which key to campaign on, as whom, and how fast.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::{ElectionError, ElectionErrorKind};
use crate::error::Error;
use crate::validate;

/// The bucket TTL used when none is set (Go natty's `DefaultAsLeaderBucketTTL`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// How often [`GoNatty::as_leader`](crate::compat::GoNatty::as_leader) runs its function when none is set
/// (Go natty's default looper interval).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// What an election campaigns for: a key in a KV bucket whose value is the leader's node name.
///
/// Every timing derives from the TTL: the leader renews every `ttl / 3` and acts as leader
/// only until `last renew sent + ttl - safety margin` (default margin `ttl / 5`), so it stops
/// before the server can expire its key.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use natty::ElectionConfig;
///
/// let config = ElectionConfig::new("leaders", "billing", "node-1")
///     .ttl(Duration::from_secs(5))
///     .replicas(3)
///     .description("who runs billing")
///     .interval(Duration::from_millis(500));
/// assert_eq!(config.renew_interval(), Duration::from_secs(5) / 3);
/// ```
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) node: String,
    pub(crate) ttl: Duration,
    pub(crate) replicas: usize,
    pub(crate) description: String,
    pub(crate) interval: Duration,
    pub(crate) safety_margin: Option<Duration>,
    pub(crate) shutdown: Option<CancellationToken>,
}

impl ElectionConfig {
    /// Campaign on `key` in `bucket` as `node` (the value written to the key; make it unique
    /// per process).
    pub fn new(bucket: impl Into<String>, key: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
            node: node.into(),
            ttl: DEFAULT_TTL,
            replicas: 1,
            description: String::new(),
            interval: DEFAULT_INTERVAL,
            safety_margin: None,
            shutdown: None,
        }
    }

    /// The bucket TTL, and the lease length (default 10 s, at least 1 s). On servers with
    /// per-message TTL (2.11+) each write also carries this TTL in whole seconds.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Copies the cluster keeps of the bucket when it is created (default 1).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The bucket description used when it is created.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// How often [`GoNatty::as_leader`](crate::compat::GoNatty::as_leader) runs its function while
    /// leader (Go natty's `Looper`; default 1 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long before the server could expire the key the leader stops acting as leader
    /// (default `ttl / 5`); must be below `2 * ttl / 3`. Larger margins tolerate slower clocks
    /// and schedulers, at the cost of shorter leases.
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = Some(margin);
        self
    }

    /// Stop campaigning (and release the key if leader) when `token` is cancelled.
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// The bucket name.
    pub fn bucket_name(&self) -> &str {
        &self.bucket
    }

    /// The key campaigned on.
    pub fn key_name(&self) -> &str {
        &self.key
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The configured TTL.
    pub fn configured_ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the leader renews: `ttl / 3`.
    pub fn renew_interval(&self) -> Duration {
        self.ttl / 3
    }

    /// The safety margin in effect (see [`ElectionConfig::safety_margin`]).
    pub fn effective_safety_margin(&self) -> Duration {
        self.safety_margin.unwrap_or(self.ttl / 5)
    }

    pub(crate) fn validate(&self) -> Result<(), ElectionError> {
        let invalid = |source: crate::error::ValidationError| {
            Error::with_source(ElectionErrorKind::InvalidConfig, source)
        };
        validate::bucket(&self.bucket).map_err(invalid)?;
        validate::key(&self.key).map_err(invalid)?;
        let problem = if self.node.is_empty() {
            Some(("node name", self.node.clone(), "is empty"))
        } else if self.ttl < Duration::from_secs(1) {
            Some(("ttl", format!("{:?}", self.ttl), "must be at least 1s"))
        } else if !(1..=5).contains(&self.replicas) {
            Some((
                "replicas",
                self.replicas.to_string(),
                "must be between 1 and 5",
            ))
        } else if self.interval.is_zero() {
            Some((
                "interval",
                format!("{:?}", self.interval),
                "must not be zero",
            ))
        } else if self.effective_safety_margin() * 3 >= self.ttl * 2 {
            Some((
                "safety margin",
                format!("{:?}", self.effective_safety_margin()),
                "must be below two thirds of the ttl",
            ))
        } else {
            None
        };
        match problem {
            Some((what, value, reason)) => Err(invalid(crate::error::ValidationError::new(
                what, &value, reason,
            ))),
            None => Ok(()),
        }
    }
}

/// The timings of one campaign, fixed when it starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timings {
    /// How long a write keeps the key alive on the server.
    pub(crate) lease: Duration,
    /// How long after sending a write this node may act as leader.
    pub(crate) acting: Duration,
    /// Time between renews.
    pub(crate) renew: Duration,
    /// Per-key TTL to send with every write (servers 2.11+), whole seconds.
    pub(crate) key_ttl: Option<Duration>,
}

impl Timings {
    pub(crate) fn new(config: &ElectionConfig, per_key_ttl: bool) -> Self {
        // `Nats-TTL` has whole-second granularity: the key may live only that long.
        let key_ttl = per_key_ttl.then(|| Duration::from_secs(config.ttl.as_secs().max(1)));
        let lease = key_ttl.map_or(config.ttl, |ttl| ttl.min(config.ttl));
        let mut margin = config.effective_safety_margin();
        if margin * 3 >= lease * 2 {
            // Only reachable when whole-second rounding shortened the lease.
            margin = lease / 5;
        }
        Self {
            lease,
            acting: lease.saturating_sub(margin),
            renew: lease / 3,
            key_ttl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_ttl_and_large_margin() {
        let base = ElectionConfig::new("b", "k", "n");
        assert!(base.clone().validate().is_ok());
        let short = base.clone().ttl(Duration::from_millis(500)).validate();
        assert_eq!(
            short.map_err(|e| e.kind()),
            Err(ElectionErrorKind::InvalidConfig)
        );
        let margin = base
            .clone()
            .safety_margin(Duration::from_secs(7))
            .validate();
        assert!(margin.is_err());
        assert!(ElectionConfig::new("b", "k", "").validate().is_err());
        assert!(ElectionConfig::new("b c", "k", "n").validate().is_err());
    }

    #[test]
    fn timings_use_whole_seconds_with_per_key_ttl() {
        let config = ElectionConfig::new("b", "k", "n").ttl(Duration::from_millis(2500));
        let old = Timings::new(&config, false);
        assert_eq!(old.lease, Duration::from_millis(2500));
        assert_eq!(old.acting, Duration::from_millis(2000));
        let new = Timings::new(&config, true);
        assert_eq!(new.key_ttl, Some(Duration::from_secs(2)));
        assert_eq!(new.lease, Duration::from_secs(2));
        assert!(new.acting < new.lease);
        assert!(new.renew < new.acting);
    }
}
