//! Serving one member of a static group: the driver behind [`Natty::serve_static_member`].
//!
//! natty's own [`serve`](crate::Natty::serve) runs calls in any order; a group member needs
//! per-partition order, pinning and pin changes handled, so it has its own driver around the
//! same per-message [`Engine`] (readiness, panics, settling, reports). Every partition is a
//! lane holding its messages by stream sequence: one call at a time per lane, lanes
//! concurrently; a lane's next call starts as soon as the previous one ended and its
//! settlement was sent. Timers all follow from the ack wait `A`, as orbit's do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PriorityPolicy, PullConsumer};
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::config::{config_key, consumer_name, StaticGroupConfig, PRIORITY_GROUP};
use super::error::{not_member, refused, GroupError, GroupErrorKind};
use crate::backoff::Backoff;
use crate::consume::engine::{Engine, Event, Expiry, Finished, Outcome, Steady, Tally};
use crate::consume::{sleep_until_opt, HandlerFailure};
use crate::consumer::ConsumerSettings;
use crate::error::BoxError;
use crate::error::Error;
use crate::message::{Acker, DeliveringConsumer, Message, Settlement};
use crate::report::ReportSender;
use crate::Natty;

/// The header a pinned client's messages carry its pin in.
const PIN_ID: &str = "Nats-Pin-Id";

/// The partition a message came from, in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Partition(pub u32);

/// What member to serve and how.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    stream: String,
    group: String,
    member: String,
    ack_wait: Duration,
    max_deliver: i64,
    max_ack_pending: i64,
    backoff: Vec<Duration>,
    batch: usize,
    shutdown_grace: Duration,
    failures: Option<ReportSender<HandlerFailure>>,
}

impl MemberConfig {
    /// Serve `member` of the static group `group` on `stream`.
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        member: impl Into<String>,
    ) -> Self {
        Self {
            stream: stream.into(),
            group: group.into(),
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
    /// the [module docs](super). At least 1 s.
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
    fn consumer_config(&self, kind: Kind, filters: Vec<String>) -> pull::Config {
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

/// The timers of a member, all derived from its ack wait `A` (see the [module docs](super)).
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
    fn with(mut self, tally: Tally) -> Self {
        self.handled = tally.handled;
        self.failed = tally.failed;
        self.panicked = tally.panicked;
        self.cancelled = tally.cancelled;
        self.dropped_reports = tally.dropped_reports;
        self
    }
}

/// Notices when the process was paused (SIGSTOP, a frozen VM, a starved runtime): a ticker
/// task counts an epoch up whenever its ticks are further apart than the stall threshold.
struct StallWatch {
    origin: std::time::Instant,
    last_tick_ms: AtomicU64,
    epoch: AtomicU64,
    stall: Duration,
}

impl StallWatch {
    fn start(stall: Duration) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let watch = Arc::new(Self {
            origin: std::time::Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            stall,
        });
        let ticker = Arc::clone(&watch);
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(stall / 5);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let now = ticker.now_ms();
                let last = ticker.last_tick_ms.swap(now, Ordering::AcqRel);
                if now.saturating_sub(last) > ticker.stall_ms() {
                    ticker.epoch.fetch_add(1, Ordering::AcqRel);
                }
            }
        });
        (watch, task)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn stall_ms(&self) -> u64 {
        u64::try_from(self.stall.as_millis()).unwrap_or(u64::MAX)
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

impl Steady for StallWatch {
    /// No stall since `epoch`, and none under way (the ticker not yet caught up).
    fn steady_since(&self, epoch: u64) -> bool {
        let since_tick = self
            .now_ms()
            .saturating_sub(self.last_tick_ms.load(Ordering::Acquire));
        self.epoch() == epoch && since_tick <= self.stall_ms()
    }
}

/// One partition's messages by stream sequence, and what it waits for.
#[derive(Default)]
struct Lane {
    held: BTreeMap<u64, Held>,
    busy: Option<(u64, Acker)>,
    /// A message that will come back (nak'd, dropped, unsettled) and must go first: later
    /// ones wait for it until it is handled or the time is up.
    fence: Option<(u64, Instant)>,
}

struct Held {
    message: Message,
    deadline: Instant,
    pin: Option<Arc<str>>,
}

/// Which lane and message a call is for.
struct Slot {
    partition: u32,
    seq: u64,
}

/// Waiting, after a pin change or a stall, until the messages of an earlier pin are settled
/// or back with this instance.
struct Gate {
    until: Instant,
    check_at: Instant,
}

impl Natty {
    /// Serve `member` of a static group with `service` until `shutdown` is cancelled: one
    /// call at a time per partition, partitions concurrently, the partition token stripped
    /// from the subject (and kept as a [`Partition`] extension). See the [module
    /// docs](super) for the guarantees and timers.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`, `StreamNotFound`, `NotFound` (unknown
    /// group), `NotMember` at start; `ConfigDrift` when the member's consumer exists with
    /// other settings or the group's configuration changes while serving; `Deleted` when the
    /// group is deleted; `Service` when the service's `poll_ready` fails.
    pub fn serve_static_member<S>(
        &self,
        config: MemberConfig,
        shutdown: CancellationToken,
        service: S,
    ) -> impl Future<Output = Result<MemberSummary, GroupError>> + Send + '_
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        self.drive_member(Kind::Static, config, shutdown, service)
    }

    /// Serve `member` of an elastic group with `service` until `shutdown` is cancelled, as
    /// [`Natty::serve_static_member`] does, following membership changes: when the member's
    /// partitions change, the pinned instance finishes its calls (within the shutdown grace),
    /// returns what it holds in order and deletes its consumer, and every instance joins again
    /// with the new partitions once their previous owners let go. A member not (yet) in the
    /// group waits to be added.
    ///
    /// # Errors
    /// As [`Natty::serve_static_member`]; `ConfigDrift` when the partitions, filters or
    /// buffered limits change.
    pub fn serve_elastic_member<S>(
        &self,
        config: MemberConfig,
        shutdown: CancellationToken,
        service: S,
    ) -> impl Future<Output = Result<MemberSummary, GroupError>> + Send + '_
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        self.drive_member(Kind::Elastic, config, shutdown, service)
    }

    async fn drive_member<S>(
        &self,
        kind: Kind,
        config: MemberConfig,
        shutdown: CancellationToken,
        service: S,
    ) -> Result<MemberSummary, GroupError>
    where
        S: Service<Message> + Send,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let key = config_key(&config.stream, &config.group);
        let mut spec = Spec::read(self, kind, &config.stream, &config.group).await?;
        // An elastic member may start before it is added; a static one must be listed.
        if kind == Kind::Static && !spec.is_member(&config.member) {
            return Err(not_member(&config.member));
        }
        let consumer_name = kind.consumer_name(&config.group, &config.member);
        crate::validate::name("consumer name", &consumer_name)
            .map_err(|e| Error::with_source(GroupErrorKind::InvalidConfig, e))?;
        let timers = config.timers();
        let store = match kind {
            Kind::Static => self.static_bucket(None).await?,
            Kind::Elastic => self.elastic_bucket(None).await?,
        }
        .ok_or_else(|| refused(GroupErrorKind::NotFound, "group", &key, "does not exist"))?;
        let mut watch = Some(store.watch(&key).await.map_err(super::admin::js)?);
        let js_stream = self
            .jetstream()
            .get_stream(kind.stream_name(&config.stream, &config.group))
            .await
            .map_err(super::admin::js)?;

        let mut summary = MemberSummary::default();
        let mut engine: Engine<S, Slot> = Engine::new(service, config.failures.clone());
        let client = Arc::new(self.client().clone());
        let stream_subjects = js_stream.cached_info().config.subjects.clone();
        let delivering_for = |consumer: &Option<PullConsumer>| {
            consumer.as_ref().map(|consumer| {
                DeliveringConsumer::new(ConsumerSettings::from_info(
                    consumer.cached_info(),
                    stream_subjects.clone(),
                ))
            })
        };
        let (stall_watch, ticker) = StallWatch::start(timers.stall);
        let _ticker = AbortOnDrop(ticker);
        let stale_wait = timers.ack_wait + timers.pull_expiry;
        let mut backoff =
            Backoff::new(Duration::from_millis(50), Duration::from_secs(2)).with_jitter(true);

        // One round per membership: join with this member's filters, serve, leave.
        loop {
            // A member without partitions (more members than partitions, or not added yet) idles
            // until its group changes, as orbit's does.
            let filters = spec.member_filters(&config.member);
            let (mut consumer, mut messages) = if filters.is_empty() {
                (None, None)
            } else if kind == Kind::Static {
                let consumer =
                    create_member_consumer(&js_stream, config.consumer_config(kind, filters))
                        .await?;
                let messages = open_pull(&consumer, &config, &timers).await?;
                (Some(consumer), Some(messages))
            } else {
                let joining = Joining {
                    stream: &js_stream,
                    store: &store,
                    key: &key,
                    config: &config,
                    timers: &timers,
                    shutdown: &shutdown,
                };
                match joining.join(&mut spec, &mut watch).await {
                    Join::Joined(joined) => {
                        let (consumer, messages) = *joined;
                        (Some(consumer), Some(messages))
                    }
                    Join::Idle => (None, None),
                    Join::Shutdown => return Ok(summary.with(engine.tally())),
                    Join::Stop(err) => return Err(err),
                }
            };
            let mut delivering = delivering_for(&consumer);
            let mut seen_epoch = stall_watch.epoch();
            let mut lanes: HashMap<u32, Lane> = HashMap::new();
            let mut pin: Option<Arc<str>> = None;
            let mut revoked: HashSet<Arc<str>> = HashSet::new();
            let mut gate: Option<Gate> = None;
            // The highest consumer (delivery) sequence seen: a jump past it means a delivery
            // never arrived (lost with a dying server), so the lanes wait for its redelivery.
            let mut last_delivery: Option<u64> = None;
            let mut ended = Ended::Shutdown;

            loop {
                if stall_watch.epoch() != seen_epoch {
                    seen_epoch = stall_watch.epoch();
                    tracing::warn!(target: "natty", member = %config.member, "process stalled; re-checking the pin before handling more");
                    summary.stale += drop_held(&mut lanes, stale_wait);
                    let now = Instant::now();
                    gate = Some(Gate {
                        until: now + timers.takeover,
                        check_at: now,
                    });
                }
                let fence_wake = next_fence_end(&lanes);
                let gate_wake = gate.as_ref().map(|g| g.check_at);
                let starts = Starts {
                    watch: &stall_watch,
                    epoch: seen_epoch,
                    stale_wait,
                };
                // While the gate is shut no call starts; otherwise ask for readiness whenever a
                // lane has a message that may go.
                let want_ready = gate.is_none() && starts.any_ready(&mut lanes, &mut summary);
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    event = engine.next_event(want_ready), if want_ready || engine.in_flight() > 0 => match event {
                        Event::Done(done) => {
                            let finished = engine.settle(done).await;
                            finish(&mut lanes, finished, &timers);
                        }
                        Event::Ready => starts.start(&mut lanes, &mut engine, &mut summary)?,
                        Event::NotReady(err) => return Err(Error::with_source(GroupErrorKind::Service, err)),
                    },
                    update = next_update(&mut watch) => {
                        match update {
                            Some(Ok(entry)) => match entry.operation {
                                async_nats::jetstream::kv::Operation::Put => {
                                    match spec.follow(kind, &entry.value, &config.member) {
                                        Follow::Same => {}
                                        Follow::Rejoin(next) => {
                                            ended = Ended::Rejoin(next);
                                            break;
                                        }
                                        Follow::Drift => {
                                            ended = Ended::Stop(refused(GroupErrorKind::ConfigDrift, "group", &key, "changed while serving"));
                                            break;
                                        }
                                    }
                                }
                                _ => {
                                    ended = Ended::Stop(refused(GroupErrorKind::Deleted, "group", &key, "was deleted while serving"));
                                    break;
                                }
                            },
                            Some(Err(err)) => {
                                tracing::warn!(target: "natty", error = %err, "group watch failed; watching again");
                                watch = store.watch(&key).await.ok();
                            }
                            None => {
                                tokio::time::sleep(backoff.next_pause()).await;
                                watch = store.watch(&key).await.ok();
                            }
                        }
                    }
                    () = sleep_until_opt(gate_wake), if gate_wake.is_some() => {
                        let Some(consumer) = consumer.as_mut() else { gate = None; continue };
                        let held = held_count(&lanes);
                        let info = consumer.info().await;
                        let now = Instant::now();
                        match info {
                            Ok(info) => {
                                let pinned = info
                                    .priority_groups
                                    .iter()
                                    .find(|g| g.group == PRIORITY_GROUP)
                                    .and_then(|g| g.pinned_client_id.clone());
                                if pinned.is_some() && pinned.as_deref() != pin.as_deref() {
                                    // Another instance holds the pin: what this one holds is its.
                                    if let Some(lost) = pin.take() {
                                        revoked.insert(lost);
                                    }
                                    summary.stale += drop_held(&mut lanes, stale_wait);
                                    gate = None;
                                } else if info.num_ack_pending <= held || now >= gate.as_ref().map_or(now, |g| g.until) {
                                    if info.num_ack_pending > held {
                                        tracing::warn!(target: "natty", member = %config.member, pending = info.num_ack_pending, held, "earlier pin's messages still pending at takeover deadline");
                                    }
                                    gate = None;
                                    tracing::debug!(target: "natty", member = %config.member, pending = info.num_ack_pending, held, "pinned; handling");
                                } else if let Some(g) = gate.as_mut() {
                                    g.check_at = now + Duration::from_millis(100);
                                }
                            }
                            Err(err) => {
                                tracing::debug!(target: "natty", error = %err, "consumer info failed");
                                if let Some(g) = gate.as_mut() {
                                    g.check_at = now + Duration::from_millis(200);
                                }
                            }
                        }
                    }
                    // A fence ends: its lane may start again (the next turn asks for readiness).
                    () = sleep_until_opt(fence_wake), if fence_wake.is_some() && gate.is_none() => {}
                    next = next_message(&mut messages) => {
                        let Some(next) = next else {
                            // The pull stream ended: open a fresh one on the (re)created consumer.
                            tokio::time::sleep(backoff.next_pause()).await;
                            (consumer, messages) = reopen(&js_stream, &config, kind, &spec, &timers).await;
                            delivering = delivering_for(&consumer);
                            continue;
                        };
                        let message = match next {
                            Ok(message) => message,
                            Err(err) => {
                                tracing::warn!(target: "natty", member = %config.member, error = %err, "pull failed");
                                if matches!(err.kind(), pull::MessagesErrorKind::ConsumerDeleted | pull::MessagesErrorKind::NoResponders) {
                                    tokio::time::sleep(backoff.next_pause()).await;
                                    (consumer, messages) = reopen(&js_stream, &config, kind, &spec, &timers).await;
                                    delivering = delivering_for(&consumer);
                                }
                                continue;
                            }
                        };
                        backoff.reset();
                        let now = Instant::now();
                        if let Ok(info) = message.info() {
                            let delivery = info.consumer_sequence;
                            if last_delivery.is_some_and(|last| delivery > last + 1) && gate.is_none() {
                                tracing::debug!(target: "natty", member = %config.member, delivery, "a delivery went missing; waiting for its redelivery");
                                gate = Some(Gate { until: now + timers.takeover, check_at: now });
                            }
                            last_delivery = Some(last_delivery.map_or(delivery, |last| last.max(delivery)));
                        }
                        // The server appends its pin after any a publisher set: take the last. The
                        // current pin is shared by its messages, not copied into each.
                        let message_pin: Option<Arc<str>> = match message.headers.as_ref().and_then(|h| h.get_last(PIN_ID)) {
                            None => None,
                            Some(value) if revoked.contains(value.as_str()) => {
                                summary.stale += 1;
                                continue;
                            }
                            Some(value) if pin.as_deref() == Some(value.as_str()) => pin.clone(),
                            Some(value) => {
                                let fresh: Arc<str> = Arc::from(value.as_str());
                                pin = Some(Arc::clone(&fresh));
                                summary.pins += 1;
                                gate = Some(Gate { until: now + timers.takeover, check_at: now });
                                Some(fresh)
                            }
                        };
                        let Some(delivering) = delivering.as_ref() else { continue };
                        let Some((partition, seq, message)) = into_partitioned(message, &client, delivering) else {
                            tracing::warn!(target: "natty", "message without a partition token; leaving it to the ack wait");
                            continue;
                        };
                        let lane = lanes.entry(partition).or_default();
                        // A redelivery replaces what is held of the same message.
                        lane.held.insert(seq, Held { message, deadline: now + timers.handler_budget, pin: message_pin });
                    }
                }
            }

            drop(messages);
            let was_pinned = self
                .leave(
                    &config,
                    &timers,
                    &js_stream,
                    &consumer_name,
                    consumer.as_mut(),
                    &mut lanes,
                    &mut engine,
                    &mut summary,
                    pin.filter(|_| stall_watch.steady_since(seen_epoch)),
                )
                .await;
            match ended {
                Ended::Shutdown => return Ok(summary.with(engine.tally())),
                Ended::Stop(err) => {
                    // The consumer's filters belong to the old configuration; orbit deletes it too.
                    let _ = js_stream.delete_consumer(&consumer_name).await;
                    return Err(err);
                }
                Ended::Rejoin(next) => {
                    // The pinned instance, drained, deletes the consumer so the partitions it
                    // gives up are free for their new owners; standbys wait a moment (orbit's
                    // 400-500 ms) and join the recreated one.
                    if was_pinned {
                        let _ = js_stream.delete_consumer(&consumer_name).await;
                    } else {
                        let jitter = Duration::from_millis(400 + fastrand_ms());
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(summary.with(engine.tally())),
                            () = tokio::time::sleep(jitter) => {}
                        }
                    }
                    spec = next;
                }
            }
        }
    }

    /// Stop serving: let calls finish within the grace, then (if this instance still holds
    /// the pin) nak what is left in order and unpin, so the next instance takes over at once.
    #[allow(clippy::too_many_arguments)]
    async fn leave<S>(
        &self,
        config: &MemberConfig,
        timers: &Timers,
        stream: &async_nats::jetstream::stream::Stream,
        consumer_name: &str,
        consumer: Option<&mut PullConsumer>,
        lanes: &mut HashMap<u32, Lane>,
        engine: &mut Engine<S, Slot>,
        summary: &mut MemberSummary,
        pin: Option<Arc<str>>,
    ) -> bool
    where
        S: Service<Message>,
        S::Error: Into<BoxError>,
    {
        // Calls cut off at the end of the grace keep their lane busy: nak'd below if this
        // instance still holds the pin, else left to the ack wait.
        let (finished, _cut_off) = engine.drain(config.shutdown_grace).await;
        for finished in finished {
            finish(lanes, finished, timers);
        }
        let (Some(pin), Some(consumer)) = (pin, consumer) else {
            return false;
        };
        for lane in lanes.values_mut() {
            if let Some((_, acker)) = lane.busy.take() {
                let _ = acker.nak(None).await;
            }
            for (_, held) in std::mem::take(&mut lane.held) {
                if held.pin.as_deref() == Some(&*pin) {
                    let _ = held.message.nak(None).await;
                    summary.returned += 1;
                }
            }
        }
        let Ok(info) = consumer.info().await else {
            return false;
        };
        let pinned = info
            .priority_groups
            .iter()
            .any(|g| g.group == PRIORITY_GROUP && g.pinned_client_id.as_deref() == Some(&*pin));
        if pinned {
            let _ = stream.unpin_consumer(consumer_name, PRIORITY_GROUP).await;
        }
        pinned
    }
}

/// Which kind of group a member serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Static,
    Elastic,
}

impl Kind {
    fn consumer_name(self, group: &str, member: &str) -> String {
        match self {
            Kind::Static => consumer_name(group, member),
            Kind::Elastic => member.to_owned(),
        }
    }

    /// The stream the member's consumer lives on.
    fn stream_name(self, stream: &str, group: &str) -> String {
        match self {
            Kind::Static => stream.to_owned(),
            Kind::Elastic => super::elastic::elastic_stream_name(stream, group),
        }
    }
}

/// A group's configuration, of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Spec {
    Static(StaticGroupConfig),
    Elastic(super::elastic::ElasticGroupConfig),
}

/// What a member does about a new configuration.
enum Follow {
    Same,
    Rejoin(Spec),
    Drift,
}

/// Why one membership round ended.
enum Ended {
    Shutdown,
    Stop(GroupError),
    Rejoin(Spec),
}

impl Spec {
    async fn read(
        natty: &Natty,
        kind: Kind,
        stream: &str,
        group: &str,
    ) -> Result<Self, GroupError> {
        Ok(match kind {
            Kind::Static => Spec::Static(natty.static_group(stream, group).await?),
            Kind::Elastic => Spec::Elastic(natty.elastic_group(stream, group).await?),
        })
    }

    fn is_member(&self, member: &str) -> bool {
        match self {
            Spec::Static(config) => config.is_member(member),
            Spec::Elastic(config) => config.is_member(member),
        }
    }

    fn member_filters(&self, member: &str) -> Vec<String> {
        match self {
            Spec::Static(config) => config.member_filters(member),
            Spec::Elastic(config) => config.member_filters(member),
        }
    }

    /// A static group never changes under its members; an elastic one may change members,
    /// and a member rejoins when its own filters change.
    fn follow(&self, kind: Kind, json: &[u8], member: &str) -> Follow {
        let next = match kind {
            Kind::Static => super::config::StaticGroupConfig::from_json(json).map(Spec::Static),
            Kind::Elastic => super::elastic::ElasticGroupConfig::from_json(json).map(Spec::Elastic),
        };
        match (self, next) {
            (current, Ok(next)) if *current == next => Follow::Same,
            (Spec::Elastic(current), Ok(Spec::Elastic(next))) if current.same_shape(&next) => {
                if current.member_filters(member) == next.member_filters(member) {
                    Follow::Same
                } else {
                    Follow::Rejoin(Spec::Elastic(next))
                }
            }
            _ => Follow::Drift,
        }
    }
}

/// How joining an elastic group ended.
enum Join {
    Joined(Box<(PullConsumer, pull::Stream)>),
    /// The member owns no partitions (now).
    Idle,
    Shutdown,
    Stop(GroupError),
}

/// What joining an elastic group needs.
struct Joining<'a> {
    stream: &'a async_nats::jetstream::stream::Stream,
    store: &'a async_nats::jetstream::kv::Store,
    key: &'a str,
    config: &'a MemberConfig,
    timers: &'a Timers,
    shutdown: &'a CancellationToken,
}

impl Joining<'_> {
    /// Create the member's consumer on the elastic group's stream, retrying while its
    /// partitions are still another member's (the server refuses overlapping filters on a
    /// work queue) and following configuration changes meanwhile. A consumer of this member
    /// left with other filters is deleted once no instance holds its pin (none is draining
    /// it), as orbit's members delete it.
    async fn join(
        &self,
        spec: &mut Spec,
        watch: &mut Option<async_nats::jetstream::kv::Watch>,
    ) -> Join {
        use async_nats::jetstream::stream::ConsumerCreateStrictErrorKind;
        let member = &self.config.member;
        loop {
            let filters = spec.member_filters(member);
            if filters.is_empty() {
                return Join::Idle;
            }
            let consumer_config = self.config.consumer_config(Kind::Elastic, filters);
            match self.stream.create_consumer_strict(consumer_config).await {
                Ok(consumer) => match open_pull(&consumer, self.config, self.timers).await {
                    Ok(messages) => return Join::Joined(Box::new((consumer, messages))),
                    Err(err) => tracing::debug!(target: "natty", error = %err, "pull not open yet"),
                },
                Err(err) if err.kind() == ConsumerCreateStrictErrorKind::AlreadyExists => {
                    if self.unpinned_leftover(member).await {
                        let _ = self.stream.delete_consumer(member).await;
                        continue;
                    }
                }
                Err(err) => {
                    tracing::debug!(target: "natty", member = %member, error = %err, "partitions not free yet")
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Join::Shutdown,
                update = next_update(watch) => match update {
                    Some(Ok(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                        match spec.follow(Kind::Elastic, &entry.value, member) {
                            Follow::Same => {}
                            Follow::Rejoin(next) => *spec = next,
                            Follow::Drift => return Join::Stop(refused(GroupErrorKind::ConfigDrift, "group", self.key, "changed while serving")),
                        }
                    }
                    Some(Ok(_)) => return Join::Stop(refused(GroupErrorKind::Deleted, "group", self.key, "was deleted while serving")),
                    Some(Err(_)) | None => *watch = self.store.watch(self.key).await.ok(),
                },
                () = tokio::time::sleep(Duration::from_millis(250 + fastrand_ms() / 2)) => {}
            }
        }
    }

    /// Whether this member's existing consumer has no pinned instance.
    async fn unpinned_leftover(&self, member: &str) -> bool {
        match self.stream.consumer_info(member).await {
            Ok(info) => !info
                .priority_groups
                .iter()
                .any(|g| g.group == PRIORITY_GROUP && g.pinned_client_id.is_some()),
            Err(_) => false,
        }
    }
}

/// 0-99 ms of jitter, so instances reacting to one change do not move in lockstep.
fn fastrand_ms() -> u64 {
    u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
            % 100,
    )
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn create_member_consumer(
    stream: &async_nats::jetstream::stream::Stream,
    config: pull::Config,
) -> Result<PullConsumer, GroupError> {
    use async_nats::jetstream::stream::ConsumerCreateStrictErrorKind;
    match stream.create_consumer_strict(config).await {
        Ok(consumer) => Ok(consumer),
        // The consumer exists with other settings: another instance runs another ack wait,
        // or the group changed while this member was down.
        Err(err) if err.kind() == ConsumerCreateStrictErrorKind::AlreadyExists => {
            Err(Error::with_source(GroupErrorKind::ConfigDrift, err))
        }
        Err(err) => Err(super::admin::js(err)),
    }
}

async fn open_pull(
    consumer: &PullConsumer,
    config: &MemberConfig,
    timers: &Timers,
) -> Result<pull::Stream, GroupError> {
    consumer
        .stream()
        .group(PRIORITY_GROUP)
        .max_messages_per_batch(config.batch)
        .expires(timers.pull_expiry)
        .heartbeat(timers.pull_expiry / 2)
        .messages()
        .await
        .map_err(|e| Error::with_source(GroupErrorKind::JetStream, e))
}

/// Recreate the member's consumer (idempotent) and a pull stream on it; on failure both are
/// `None` and the driver tries again when the stream is next polled.
async fn reopen(
    stream: &async_nats::jetstream::stream::Stream,
    config: &MemberConfig,
    kind: Kind,
    spec: &Spec,
    timers: &Timers,
) -> (Option<PullConsumer>, Option<pull::Stream>) {
    let filters = spec.member_filters(&config.member);
    if filters.is_empty() {
        return (None, None);
    }
    match create_member_consumer(stream, config.consumer_config(kind, filters)).await {
        Ok(consumer) => match open_pull(&consumer, config, timers).await {
            Ok(messages) => (Some(consumer), Some(messages)),
            Err(err) => {
                tracing::debug!(target: "natty", error = %err, "pull not open yet");
                (Some(consumer), None)
            }
        },
        Err(err) => {
            tracing::debug!(target: "natty", error = %err, "member consumer not reachable yet");
            (None, None)
        }
    }
}

/// The next pulled message; `None` when the stream ended or none is open.
async fn next_message(
    messages: &mut Option<pull::Stream>,
) -> Option<Result<async_nats::jetstream::Message, pull::MessagesError>> {
    match messages {
        Some(messages) => messages.next().await,
        // A member with no partitions waits for config changes; one whose reopen failed is
        // retried by answering `None` at once.
        None => None,
    }
}

async fn next_update(
    watch: &mut Option<async_nats::jetstream::kv::Watch>,
) -> Option<Result<async_nats::jetstream::kv::Entry, async_nats::jetstream::kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => None,
    }
}

/// natty's message with the partition token stripped from its subject; `None` for a subject
/// without one.
fn into_partitioned(
    message: async_nats::jetstream::Message,
    client: &Arc<async_nats::Client>,
    delivering: &DeliveringConsumer,
) -> Option<(u32, u64, Message)> {
    let (partition, rest) = super::partition::split(message.message.subject.as_str())?;
    let rest = async_nats::Subject::from(rest);
    let async_nats::jetstream::Message { mut message, .. } = message;
    message.subject = rest;
    let mut message = Message::from_delivery(message, client, delivering);
    let seq = message.info().stream_sequence;
    message.extensions_mut().insert(Partition(partition));
    Some((partition, seq, message))
}

fn held_count(lanes: &HashMap<u32, Lane>) -> usize {
    lanes
        .values()
        .map(|l| l.held.len() + usize::from(l.busy.is_some()))
        .sum()
}

/// Drop every held message (the server redelivers them) and fence each lane at its first.
fn drop_held(lanes: &mut HashMap<u32, Lane>, wait: Duration) -> u64 {
    let until = Instant::now() + wait;
    let mut dropped = 0;
    for lane in lanes.values_mut() {
        if let Some((&first, _)) = lane.held.first_key_value() {
            let fence = lane.fence.map_or(first, |(seq, _)| seq.min(first));
            lane.fence = Some((fence, until));
        }
        dropped += lane.held.len() as u64;
        lane.held.clear();
    }
    dropped
}

fn next_fence_end(lanes: &HashMap<u32, Lane>) -> Option<Instant> {
    lanes
        .values()
        .filter(|l| l.busy.is_none() && !l.held.is_empty())
        .filter_map(|l| l.fence.map(|(_, until)| until))
        .min()
}

/// Free a finished call's lane and fence it when its message will come back.
fn finish(lanes: &mut HashMap<u32, Lane>, finished: Finished<Slot>, timers: &Timers) {
    let settlement = finished.settlement();
    let Finished {
        tag: Slot { partition, seq },
        outcome,
        ..
    } = finished;
    let Some(lane) = lanes.get_mut(&partition) else {
        return;
    };
    lane.busy = None;
    let comes_back = match (outcome, settlement) {
        // Unsettled: the server redelivers it when its ack wait runs out.
        (Outcome::Expired, _) => Some(timers.ack_wait),
        (_, Some(Settlement::Nak(delay))) => Some(delay.unwrap_or_default()),
        (_, Some(Settlement::Ack | Settlement::DoubleAck | Settlement::Term)) => None,
        _ => Some(timers.ack_wait),
    };
    if let Some(after) = comes_back {
        tracing::debug!(target: "natty", partition, seq, "partition waits for a message to come back");
        lane.fence = Some((
            seq,
            Instant::now() + after + timers.pull_expiry + timers.ack_wait,
        ));
    }
}

/// Starting calls: which lanes may go, and handing their first messages to the engine.
struct Starts<'a> {
    watch: &'a Arc<StallWatch>,
    epoch: u64,
    /// How long a lane waits for a message it dropped as stale to come back.
    stale_wait: Duration,
}

impl Starts<'_> {
    /// Whether some lane has a message that may start now.
    fn any_ready(&self, lanes: &mut HashMap<u32, Lane>, summary: &mut MemberSummary) -> bool {
        let steady = self.watch.steady_since(self.epoch);
        let now = Instant::now();
        lanes.iter_mut().any(|(&partition, lane)| {
            lane_may_start(partition, lane, steady, now, self.stale_wait, summary)
        })
    }

    /// Start every lane that may go, while the service stays ready.
    fn start<S>(
        &self,
        lanes: &mut HashMap<u32, Lane>,
        engine: &mut Engine<S, Slot>,
        summary: &mut MemberSummary,
    ) -> Result<(), GroupError>
    where
        S: Service<Message>,
        S::Error: Into<BoxError>,
    {
        let steady = self.watch.steady_since(self.epoch);
        let now = Instant::now();
        for (&partition, lane) in lanes.iter_mut() {
            if !lane_may_start(partition, lane, steady, now, self.stale_wait, summary) {
                continue;
            }
            match engine.ready_now() {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(err) => return Err(Error::with_source(GroupErrorKind::Service, err)),
            }
            let Some((seq, held)) = lane.held.pop_first() else {
                continue;
            };
            lane.busy = Some((seq, held.message.acker().clone()));
            let steady: Arc<dyn Steady> = Arc::clone(self.watch) as Arc<dyn Steady>;
            let expiry = Expiry::new(held.deadline, steady, self.epoch);
            engine.start(held.message, Slot { partition, seq }, Some(expiry));
        }
        Ok(())
    }
}

/// Whether the lane is idle and its first message may go: not behind a fence, within its
/// handler budget and no stall since. Messages past their budget (all of them, after a stall)
/// are dropped on the way, since the server may have given them to another instance already,
/// and the lane is fenced at the first of them until they come back.
fn lane_may_start(
    partition: u32,
    lane: &mut Lane,
    steady: bool,
    now: Instant,
    stale_wait: Duration,
    summary: &mut MemberSummary,
) -> bool {
    if lane.busy.is_some() {
        return false;
    }
    loop {
        let Some((&seq, first)) = lane.held.first_key_value() else {
            return false;
        };
        if let Some((fence, until)) = lane.fence {
            if seq > fence && now < until {
                return false;
            }
            // An earlier message (a redelivery) may go first; the fence stays for later ones.
            if seq >= fence || now >= until {
                lane.fence = None;
            }
        }
        if now < first.deadline && steady {
            return true;
        }
        let before = lane.held.len();
        lane.held.retain(|_, held| steady && now < held.deadline);
        summary.stale += (before - lane.held.len()) as u64;
        tracing::debug!(target: "natty", partition, seq, dropped = before - lane.held.len(), "dropped messages past their handler budget");
        lane.fence = Some((seq, now + stale_wait));
    }
}
