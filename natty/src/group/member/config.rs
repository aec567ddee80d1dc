//! What member to serve and how ([`MemberConfig`]), the timers that follow from its ack wait,
//! and what a run did ([`MemberSummary`]).

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PriorityPolicy};

use crate::consume::engine::Tally;
use crate::consume::HandlerFailure;
use crate::group::config::{consumer_name, PRIORITY_GROUP};
use crate::report::ReportSender;

/// The partition a message came from, in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Partition(pub u32);

/// What member to serve and how.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub(super) stream: String,
    pub(super) group: String,
    pub(super) member: String,
    ack_wait: Duration,
    max_deliver: i64,
    max_ack_pending: i64,
    backoff: Vec<Duration>,
    pub(super) batch: usize,
    pub(super) shutdown_grace: Duration,
    pub(super) failures: Option<ReportSender<HandlerFailure>>,
}

impl MemberConfig {
    /// The configuration for `member` of `group` on `stream`, as the group's handle serves it.
    pub(crate) fn in_group(mut self, stream: &str, group: &str) -> Self {
        stream.clone_into(&mut self.stream);
        group.clone_into(&mut self.group);
        self
    }

    /// Serve `member` of the group whose handle serves this configuration
    /// ([`StaticGroup::serve`](crate::group::StaticGroup::serve),
    /// [`ElasticGroup::serve`](crate::group::ElasticGroup::serve)).
    pub fn new(member: impl Into<String>) -> Self {
        Self {
            stream: String::new(),
            group: String::new(),
            member: member.into(),
            ack_wait: Duration::from_secs(5),
            max_deliver: 0,
            max_ack_pending: 0,
            backoff: Vec::new(),
            batch: 100,
            shutdown_grace: Duration::from_secs(10),
            failures: None,
        }
    }

    /// Also send each handler error here, as
    /// [`ConsumeConfig::failures`](crate::ConsumeConfig::failures) does for `serve`: a tokio
    /// `mpsc::Sender` delivers every report (the member starts no call while the channel is
    /// full); a [`ReportSender::lossy`] never waits and counts what it dropped, also in
    /// [`MemberSummary::dropped_reports`].
    pub fn failures(mut self, failures: impl Into<ReportSender<HandlerFailure>>) -> Self {
        self.failures = Some(failures.into());
        self
    }

    /// The consumer's ack wait (default 5 s, orbit's); every other timer follows from it, see
    /// the [module docs](crate::group). At least 1 s.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait.max(Duration::from_secs(1));
        self
    }

    /// The consumer's max deliveries (default: the server's, unlimited).
    pub fn max_deliver(mut self, max_deliver: i64) -> Self {
        self.max_deliver = max_deliver;
        self
    }

    /// The consumer's max ack pending (default: the server's, 1000).
    pub fn max_ack_pending(mut self, max_ack_pending: i64) -> Self {
        self.max_ack_pending = max_ack_pending;
        self
    }

    /// The consumer's redelivery backoff (default none).
    pub fn backoff(mut self, backoff: Vec<Duration>) -> Self {
        self.backoff = backoff;
        self
    }

    /// Messages per pull request, at most (default 100).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// How long calls under way may finish after shutdown (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The timers that follow from the ack wait.
    pub fn timers(&self) -> Timers {
        Timers::from_ack_wait(self.ack_wait)
    }

    /// The member consumer's configuration, field for field what orbit creates (with natty's
    /// settings where given), so instances written with either share it.
    pub(super) fn consumer_config(&self, kind: Kind, filters: Vec<String>) -> pull::Config {
        let name = kind.consumer_name(&self.group, &self.member);
        let (durable_name, name, inactive_threshold) = match kind {
            Kind::Static => (Some(name), None, Duration::ZERO),
            // Orbit's elastic consumers are named, not durable: one no instance pulls from
            // for an ack wait is removed, freeing its partitions.
            Kind::Elastic => (None, Some(name), self.ack_wait),
        };
        pull::Config {
            durable_name,
            name,
            inactive_threshold,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            max_ack_pending: self.max_ack_pending,
            backoff: self.backoff.clone(),
            filter_subjects: filters,
            priority_groups: vec![PRIORITY_GROUP.to_owned()],
            priority_policy: PriorityPolicy::PinnedClient,
            priority_timeout: self.timers().pinned_ttl,
            ..Default::default()
        }
    }
}

/// The timers of a member, all derived from its ack wait `A` (see the [module
/// docs](crate::group)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timers {
    /// The consumer's ack wait `A`.
    pub ack_wait: Duration,
    /// How long the server keeps a silent instance pinned: `max(A, 1 s)` (orbit's).
    pub pinned_ttl: Duration,
    /// How long one pull request waits: `max(A / 2, 1 s)` (orbit's).
    pub pull_expiry: Duration,
    /// A pause of the process longer than this counts as a stall: `max(A / 10, 250 ms)`.
    pub stall: Duration,
    /// How long after it arrived a message may still be handled: `A - max(A / 5, 2 * stall +
    /// 100 ms)`, so it is never handled when the server may have given it to another instance.
    pub handler_budget: Duration,
    /// Longest wait of a newly pinned instance for its predecessor's messages:
    /// `A + pull_expiry + 1 s`.
    pub takeover: Duration,
}

impl Timers {
    /// The timers for ack wait `ack_wait`.
    pub fn from_ack_wait(ack_wait: Duration) -> Self {
        let second = Duration::from_secs(1);
        let stall = (ack_wait / 10).max(Duration::from_millis(250));
        let margin = (ack_wait / 5).max(stall * 2 + Duration::from_millis(100));
        let pull_expiry = (ack_wait / 2).max(second);
        Self {
            ack_wait,
            pinned_ttl: ack_wait.max(second),
            pull_expiry,
            stall,
            handler_budget: ack_wait.saturating_sub(margin),
            takeover: ack_wait + pull_expiry + second,
        }
    }
}

/// What a member run did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberSummary {
    /// Calls that returned `Ok`.
    pub handled: u64,
    /// Calls that returned `Err`.
    pub failed: u64,
    /// Calls that panicked (their messages were nak'd).
    pub panicked: u64,
    /// Calls dropped at their deadline, after a stall, or at the end of the shutdown grace.
    pub cancelled: u64,
    /// Messages dropped unhandled because their time was up or their pin was lost; the
    /// server redelivers them.
    pub stale: u64,
    /// Messages nak'd unhandled at shutdown, so the next instance gets them at once.
    pub returned: u64,
    /// Times this instance was newly pinned (its first pin included).
    pub pins: u64,
    /// Handler error reports not delivered (see [`MemberConfig::failures`]).
    pub dropped_reports: u64,
}

impl MemberSummary {
    /// This summary with the engine's counts of calls.
    pub(super) fn with(mut self, tally: Tally) -> Self {
        self.handled = tally.handled;
        self.failed = tally.failed;
        self.panicked = tally.panicked;
        self.cancelled = tally.cancelled;
        self.dropped_reports = tally.dropped_reports;
        self
    }
}

/// Which kind of group a member serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Static,
    Elastic,
}

impl Kind {
    pub(super) fn consumer_name(self, group: &str, member: &str) -> String {
        match self {
            Kind::Static => consumer_name(group, member),
            Kind::Elastic => member.to_owned(),
        }
    }

    /// The stream the member's consumer lives on.
    pub(super) fn stream_name(self, stream: &str, group: &str) -> String {
        match self {
            Kind::Static => stream.to_owned(),
            Kind::Elastic => crate::group::elastic::elastic_stream_name(stream, group),
        }
    }
}
