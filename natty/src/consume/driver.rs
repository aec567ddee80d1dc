//! The driver behind [`Natty::serve`](crate::Natty::serve): one [`Pull`] feeding one [`Engine`], and the recovery
//! of the consumer when the server stops answering as a live consumer does.
//!
//! The `select!` only moves things between the two: a message pulled waits in `waiting` until
//! the service is ready, a free slot sends the next pull request (the [`Budget`] decides its
//! size), an ended call is settled by the engine.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::engine::{Engine, Event};
use super::options::create_durable;
use super::pull::{Budget, Pull, Pulled};
use super::settings::ConsumerSettings;
use super::{ConsumeConfig, ConsumeError, ConsumeSummary, NotReadyError};
use crate::backoff::Backoff;
use crate::connection::Connection;
use crate::error::{BoxError, ConsumeErrorKind, Error, StreamErrorKind};
use crate::message::{DeliveringConsumer, Message};

/// The pauses before the consumer is recreated after trouble.
const PAUSES: Backoff =
    Backoff::new(Duration::from_millis(50), Duration::from_secs(2)).with_jitter(true);

/// A recreation of the consumer under way (boxed: it happens after trouble, not per message).
type Recovery<'a> = Pin<Box<dyn Future<Output = Result<PullConsumer, ConsumeError>> + Send + 'a>>;

impl Connection {
    /// Serve `config`'s durable consumer; `resolved` is the consumer when a
    /// [`Consumer`](crate::Consumer) handle created it already. The run owns its share of the
    /// connection, so its future can be spawned.
    pub(crate) async fn drive<S>(
        self: Arc<Self>,
        config: ConsumeConfig,
        resolved: Option<PullConsumer>,
        shutdown: CancellationToken,
        service: S,
    ) -> Result<ConsumeSummary, ConsumeError>
    where
        S: Service<Message> + Send,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let consumer = match resolved {
            Some(consumer) => consumer,
            None => self.consumer_for(&config).await?,
        };
        let mut delivering = DeliveringConsumer::new(self.settings_of(&consumer).await?);
        let client = Arc::new(self.client().clone());
        let budget = Budget::new(config.concurrency, config.fetch_size);
        let mut pull = Pull::open(&client, consumer, budget, config.fetch_timeout)
            .await
            .map_err(|err| Error::with_source(ConsumeErrorKind::Fetch, err))?;
        let mut engine: Engine<S, ()> = Engine::new(service, config.failures.clone());
        let mut waiting: VecDeque<Message> = VecDeque::new();
        let mut returned = 0u64;
        let mut pause = PAUSES;
        let mut recovery: Option<Recovery<'_>> = None;
        let mut watch =
            tokio::time::interval(pull.heartbeat_period().unwrap_or(Duration::from_secs(2)));
        watch.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Set when the service's `poll_ready` fails: the run then drains as on shutdown.
        let mut not_ready: Option<BoxError> = None;

        // Made once: a fresh `cancelled()` per turn would register with the token every time.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            let held = engine.in_flight() + waiting.len();
            // No pull requests while the consumer is being recreated.
            let wants_pull = recovery.is_none() && pull.wants_request(held);
            let want_ready = !waiting.is_empty() || wants_pull;
            tokio::select! {
                biased;
                () = &mut cancelled => break,
                event = engine.next_event(want_ready), if want_ready || engine.in_flight() > 0 => match event {
                    Event::Done(done) => {
                        engine.settle(done).await;
                        while let Some(done) = engine.try_done() {
                            engine.settle(done).await;
                        }
                    }
                    Event::Ready => {
                        if let Some(message) = waiting.pop_front() {
                            engine.start(message, (), None);
                            // Start the others at once while the service stays ready.
                            while !waiting.is_empty() && matches!(engine.ready_now(), Ok(true)) {
                                if let Some(message) = waiting.pop_front() {
                                    engine.start(message, (), None);
                                }
                            }
                        } else if let Err(err) = pull.request(held).await {
                            tracing::warn!(target: "natty", stream = %config.stream, durable = %config.durable, error = %err, "pull request failed; retrying");
                            recovery = Some(Box::pin(self.recreate_after(&config, &mut pause)));
                        }
                    }
                    Event::NotReady(err) => {
                        not_ready = Some(err);
                        break;
                    }
                },
                pulled = pull.next() => {
                    // Take what else has arrived in this turn, not one turn per message.
                    let mut next = Some(pulled);
                    while let Some(pulled) = next.take() {
                        match pulled {
                            Pulled::Message(message) => {
                                pause.reset();
                                let message = Message::from_delivery(message, &client, &delivering);
                                if engine.in_flight() + waiting.len() < config.concurrency {
                                    waiting.push_back(message);
                                } else {
                                    // Only a miscounted request end gets here: keep the bound.
                                    let _ = message.nak(None).await;
                                    returned += 1;
                                }
                            }
                            Pulled::Quiet => {}
                            Pulled::Trouble(why) => {
                                if recovery.is_none() {
                                    tracing::warn!(target: "natty", stream = %config.stream, durable = %config.durable, why, "pull interrupted; recreating the consumer");
                                    recovery = Some(Box::pin(self.recreate_after(&config, &mut pause)));
                                }
                                break;
                            }
                        }
                        next = pull.try_next();
                    }
                }
                fresh = async { recovery.as_mut().expect("guarded by is_some").await }, if recovery.is_some() => {
                    recovery = None;
                    match fresh {
                        Ok(consumer) => {
                            delivering = refreshed(&delivering, &consumer);
                            pull.replace_consumer(consumer);
                            if let Err(err) = pull.resubscribe_if_closed(&client).await {
                                tracing::debug!(target: "natty", error = %err, "inbox not subscribed yet");
                                recovery = Some(Box::pin(self.recreate_after(&config, &mut pause)));
                            }
                        }
                        Err(err) => {
                            tracing::debug!(target: "natty", error = %format_args!("{err:#}"), "consumer not reachable yet");
                            recovery = Some(Box::pin(self.recreate_after(&config, &mut pause)));
                        }
                    }
                }
                _ = watch.tick() => {
                    let missed = pull.missed_heartbeats();
                    if recovery.is_none() && missed {
                        tracing::warn!(target: "natty", stream = %config.stream, durable = %config.durable, "pull heartbeats missed; recreating the consumer");
                        pull.budget.forget();
                        recovery = Some(Box::pin(self.recreate_after(&config, &mut pause)));
                    }
                }
            }
        }
        drop(recovery);

        // Shutdown: the open pull requests stay open on the server until filled or expired, so
        // read them to their end, while the calls under way get their grace. What is not
        // started (what waits for the service, and what still arrives) is nak'd once the
        // requests have ended, instead of being left to the ack wait: nak'd while one is open,
        // a message comes straight back into it, spending a delivery each time.
        let grace = tokio::time::sleep(config.shutdown_grace);
        tokio::pin!(grace);
        let mut grace_over = false;
        loop {
            let open_until = pull.open_until();
            if open_until.is_none() {
                for message in waiting.drain(..) {
                    let _ = message.nak(None).await;
                    returned += 1;
                }
                if engine.in_flight() == 0 {
                    break;
                }
            }
            tokio::select! {
                pulled = pull.next(), if open_until.is_some() => {
                    if let Pulled::Message(message) = pulled {
                        waiting.push_back(Message::from_delivery(message, &client, &delivering));
                    }
                }
                () = sleep_until_opt(open_until), if open_until.is_some() => pull.budget.forget(),
                event = engine.next_event(false), if engine.in_flight() > 0 => {
                    if let Event::Done(done) = event {
                        engine.settle(done).await;
                    }
                }
                () = &mut grace, if !grace_over && engine.in_flight() > 0 => {
                    grace_over = true;
                    let (_, cancelled) = engine.drain(Duration::ZERO).await;
                    for ((), acker) in cancelled {
                        let _ = acker.nak(None).await;
                    }
                }
            }
        }

        let tally = engine.tally();
        let summary = ConsumeSummary {
            handled: tally.handled,
            failed: tally.failed,
            panicked: tally.panicked,
            cancelled: tally.cancelled,
            returned,
            dropped_reports: tally.dropped_reports,
        };
        match not_ready {
            None => Ok(summary),
            Some(error) => Err(Error::with_source(
                ConsumeErrorKind::NotReady,
                NotReadyError { summary, error },
            )),
        }
    }

    /// Pause (the next of `pauses`), then create or update the durable: idempotent, so it
    /// brings back a deleted durable and is harmless otherwise.
    fn recreate_after<'a>(
        &'a self,
        config: &'a ConsumeConfig,
        pauses: &mut Backoff,
    ) -> impl Future<Output = Result<PullConsumer, ConsumeError>> + Send + 'a {
        let wait = pauses.next_pause();
        async move {
            tokio::time::sleep(wait).await;
            self.consumer_for(config).await
        }
    }

    /// Check `config`'s names and create (or update) its durable consumer.
    pub(crate) async fn consumer_for(
        &self,
        config: &ConsumeConfig,
    ) -> Result<PullConsumer, ConsumeError> {
        create_durable(
            self,
            &config.stream,
            &config.durable,
            &config.filter_subjects,
            &config.consumer,
        )
        .await
        .map_err(|err| {
            let kind = match err.kind() {
                StreamErrorKind::InvalidName | StreamErrorKind::InvalidSubject => {
                    ConsumeErrorKind::InvalidName
                }
                StreamErrorKind::NotFound => ConsumeErrorKind::StreamNotFound,
                _ => ConsumeErrorKind::Fetch,
            };
            Error::with_source(kind, err)
        })
    }

    /// The settings every message of this run carries: the consumer's, as created, and the
    /// subjects of its stream.
    async fn settings_of(&self, consumer: &PullConsumer) -> Result<ConsumerSettings, ConsumeError> {
        let info = consumer.cached_info();
        let stream = self
            .jetstream()
            .get_stream(&info.stream_name)
            .await
            .map_err(|err| Error::with_source(ConsumeErrorKind::Fetch, err))?;
        let subjects = stream.cached_info().config.subjects.clone();
        Ok(ConsumerSettings::from_info(info, subjects))
    }
}

/// The consumer's settings after a recreation (its configuration may have changed; the
/// stream's subjects are kept from the start of the run).
fn refreshed(current: &DeliveringConsumer, consumer: &PullConsumer) -> DeliveringConsumer {
    let fresh = ConsumerSettings::from_info(
        consumer.cached_info(),
        current.settings.stream_subjects().to_vec(),
    );
    // Most recreations change nothing; keep sharing the old allocation then.
    if fresh == current.settings {
        current.clone()
    } else {
        DeliveringConsumer::new(fresh)
    }
}

/// Sleep until `at`, or forever without one (a `select!` branch that is off until a deadline is set).
pub(crate) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
