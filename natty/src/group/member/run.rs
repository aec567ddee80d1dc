//! The member's run: one round per membership (join, serve, leave), its `select!` over
//! shutdown, the engine's events, group changes, the takeover gate, fences and pulled
//! messages. What to do about a pin, a gate or a lost delivery is decided in `takeover`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, PullConsumer};
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::config::{Kind, MemberConfig, MemberSummary, Partition, Timers};
use super::join::{
    create_member_consumer, fastrand_ms, next_update, open_pull, reopen, Join, Joining,
};
use super::lanes::{drop_held, finish, held_count, next_fence_end, Held, Lane, Slot, Starts};
use super::spec::{Follow, Spec};
use super::stall::{AbortOnDrop, StallWatch};
use super::takeover::{check_gate, seen_pin, Deliveries, Gate, GateCheck, PinSeen};
use crate::backoff::Backoff;
use crate::connection::Connection;
use crate::consume::engine::{Engine, Event, Steady};
use crate::consume::sleep_until_opt;
use crate::consume::ConsumerSettings;
use crate::error::{BoxError, Error};
use crate::group::config::{config_key, PRIORITY_GROUP};
use crate::group::error::{not_member, refused, transient, GroupError, GroupErrorKind};
use crate::message::{DeliveringConsumer, Message};

/// The header a pinned client's messages carry its pin in.
const PIN_ID: &str = "Nats-Pin-Id";

impl Connection {
    /// Serve `config`'s member of a group of `kind` until `shutdown` is cancelled; see
    /// [`StaticGroup::serve`](crate::group::StaticGroup::serve). The run owns its share of
    /// the connection, so its future can be spawned.
    pub(crate) async fn drive_member<S>(
        self: Arc<Self>,
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
        let mut backoff =
            Backoff::new(Duration::from_millis(50), Duration::from_secs(2)).with_jitter(true);
        // Right after a server of a cluster died or started, the group's bucket or stream may
        // not answer for a moment ("no responders", a timeout): wait that out, as the run
        // does later, instead of failing the member.
        let (mut spec, store, watch, js_stream) = loop {
            match self.open_member(kind, &config, &key).await {
                Ok(opened) => break opened,
                Err(err) if transient(&err) => {
                    tracing::debug!(target: "natty", member = %config.member, error = %err, "group not reachable yet");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(MemberSummary::default()),
                        () = tokio::time::sleep(backoff.next_pause()) => {}
                    }
                }
                Err(err) => return Err(err),
            }
        };
        backoff.reset();
        let mut watch = Some(watch);
        let consumer_name = kind.consumer_name(&config.group, &config.member);
        let timers = config.timers();

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

        // One round per membership: join with this member's filters, serve, leave.
        loop {
            // A member without partitions (more members than partitions, or not added yet) idles
            // until its group changes, as orbit's does.
            let filters = spec.member_filters(&config.member);
            let (mut consumer, mut messages) = if filters.is_empty() {
                (None, None)
            } else if kind == Kind::Static {
                let joined = async {
                    let consumer =
                        create_member_consumer(&js_stream, config.consumer_config(kind, filters))
                            .await?;
                    let messages = open_pull(&consumer, &config, &timers).await?;
                    Ok::<_, GroupError>((consumer, messages))
                };
                match joined.await {
                    Ok((consumer, messages)) => {
                        backoff.reset();
                        (Some(consumer), Some(messages))
                    }
                    Err(err) if transient(&err) => {
                        tracing::debug!(target: "natty", member = %config.member, error = %err, "member consumer not reachable yet");
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(summary.with(engine.tally())),
                            () = tokio::time::sleep(backoff.next_pause()) => continue,
                        }
                    }
                    Err(err) => return Err(err),
                }
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
            let mut deliveries = Deliveries::default();
            let mut ended = Ended::Shutdown;

            loop {
                if stall_watch.epoch() != seen_epoch {
                    seen_epoch = stall_watch.epoch();
                    tracing::warn!(target: "natty", member = %config.member, "process stalled; re-checking the pin before handling more");
                    summary.stale += drop_held(&mut lanes, stale_wait);
                    gate = Some(Gate::shut(Instant::now(), timers.takeover));
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
                                    .and_then(|g| g.pinned_client_id.as_deref());
                                let until = gate.as_ref().map_or(now, |g| g.until);
                                match check_gate(pinned, pin.as_deref(), info.num_ack_pending, held, until, now) {
                                    GateCheck::PinLost => {
                                        if let Some(lost) = pin.take() {
                                            revoked.insert(lost);
                                        }
                                        summary.stale += drop_held(&mut lanes, stale_wait);
                                        gate = None;
                                    }
                                    GateCheck::Open { late } => {
                                        if late {
                                            tracing::warn!(target: "natty", member = %config.member, pending = info.num_ack_pending, held, "earlier pin's messages still pending at takeover deadline");
                                        }
                                        gate = None;
                                        tracing::debug!(target: "natty", member = %config.member, pending = info.num_ack_pending, held, "pinned; handling");
                                    }
                                    GateCheck::Wait => {
                                        if let Some(g) = gate.as_mut() {
                                            g.check_at = now + Duration::from_millis(100);
                                        }
                                    }
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
                            if deliveries.saw(delivery) && gate.is_none() {
                                tracing::debug!(target: "natty", member = %config.member, delivery, "a delivery went missing; waiting for its redelivery");
                                gate = Some(Gate::shut(now, timers.takeover));
                            }
                        }
                        // The server appends its pin after any a publisher set: take the last. The
                        // current pin is shared by its messages, not copied into each.
                        let value = message.headers.as_ref().and_then(|h| h.get_last(PIN_ID)).map(|v| v.as_str());
                        let message_pin: Option<Arc<str>> = match seen_pin(value, pin.as_deref(), &revoked) {
                            PinSeen::Unpinned => None,
                            PinSeen::Revoked => {
                                summary.stale += 1;
                                continue;
                            }
                            PinSeen::Current => pin.clone(),
                            PinSeen::New(value) => {
                                let fresh: Arc<str> = Arc::from(value);
                                pin = Some(Arc::clone(&fresh));
                                summary.pins += 1;
                                gate = Some(Gate::shut(now, timers.takeover));
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

    /// Read the group, check the member against it, and open what serving needs: the
    /// group's bucket and a watch of its key, and the stream the member's consumer reads.
    async fn open_member(
        &self,
        kind: Kind,
        config: &MemberConfig,
        key: &str,
    ) -> Result<
        (
            Spec,
            async_nats::jetstream::kv::Store,
            async_nats::jetstream::kv::Watch,
            async_nats::jetstream::stream::Stream,
        ),
        GroupError,
    > {
        let spec = Spec::read(self, kind, &config.stream, &config.group).await?;
        // An elastic member may start before it is added; a static one must be listed.
        if kind == Kind::Static && !spec.is_member(&config.member) {
            return Err(not_member(&config.member));
        }
        let consumer_name = kind.consumer_name(&config.group, &config.member);
        crate::validate::name("consumer name", &consumer_name)
            .map_err(|e| Error::with_source(GroupErrorKind::InvalidConfig, e))?;
        let store = match kind {
            Kind::Static => self.static_bucket(None).await?,
            Kind::Elastic => self.elastic_bucket(None).await?,
        }
        .ok_or_else(|| refused(GroupErrorKind::NotFound, "group", key, "does not exist"))?;
        let watch = store.watch(key).await.map_err(crate::group::admin::js)?;
        let js_stream = self
            .jetstream()
            .get_stream(kind.stream_name(&config.stream, &config.group))
            .await
            .map_err(crate::group::admin::js)?;
        Ok((spec, store, watch, js_stream))
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

/// Why one membership round ended.
enum Ended {
    Shutdown,
    Stop(GroupError),
    Rejoin(Spec),
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

/// natty's message with the partition token stripped from its subject; `None` for a subject
/// without one.
fn into_partitioned(
    message: async_nats::jetstream::Message,
    client: &Arc<async_nats::Client>,
    delivering: &DeliveringConsumer,
) -> Option<(u32, u64, Message)> {
    let (partition, rest) = crate::group::partition::split(message.message.subject.as_str())?;
    let rest = async_nats::Subject::from(rest);
    let async_nats::jetstream::Message { mut message, .. } = message;
    message.subject = rest;
    let mut message = Message::from_delivery(message, client, delivering);
    let seq = message.info().stream_sequence;
    message.extensions_mut().insert(Partition(partition));
    Some((partition, seq, message))
}
