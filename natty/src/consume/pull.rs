//! One long-lived pull per consumer: a single inbox subscription, pull requests sent as room
//! frees up, idle heartbeats watched.
//!
//! async-nats' `messages()` works this way but asks for more whenever its own prefetch runs
//! low, however many messages the application still holds; natty promises never to hold more
//! than `concurrency`, so it sizes every request by the room it has ([`Budget`], the decisions,
//! kept apart from the I/O in [`Pull`] and unit-tested on their own).

use std::time::Duration;

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::{StatusCode, Subject};
use futures_util::StreamExt;
use tokio::time::Instant;

/// How long after its expiry a pull request may still deliver: a request that died with its
/// server never sends its end, and the budget then stops counting it.
const REQUEST_GRACE: Duration = Duration::from_millis(500);

/// The header a request's end carries its unfilled message count in.
const PENDING_MESSAGES: &str = "Nats-Pending-Messages";

/// How many messages to ask for, and when: the pure part of the pull.
///
/// `capacity` is the most messages ever held (requested but not delivered, plus delivered and
/// not finished); a request goes out when the free room reaches a threshold (one message
/// while nothing is requested, else half a batch, since every request costs a message to the
/// server and tiny ones cost more than they save), for as much of the room as one batch may
/// take. Deciding reads no clock (it runs for every message); requests whose end never came
/// are given up by [`Budget::expire`], called from the heartbeat watch.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    capacity: usize,
    batch: usize,
    requested: usize,
    /// When every request sent so far has expired (grace included).
    all_expired_at: Option<Instant>,
}

impl Budget {
    pub(crate) fn new(capacity: usize, batch: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            batch: batch.max(1),
            requested: 0,
            all_expired_at: None,
        }
    }

    /// Messages asked for and not yet delivered or given up.
    pub(crate) fn outstanding(&self) -> usize {
        self.requested
    }

    /// Give up requests that have all expired by `now` without their end arriving (it died
    /// with their server): nothing more can come of them.
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.all_expired_at.is_some_and(|at| now >= at) {
            self.forget();
        }
    }

    /// The size of the request to send now, with `held` messages delivered and not finished.
    pub(crate) fn request_size(&self, held: usize) -> Option<usize> {
        let outstanding = self.requested;
        let free = self.capacity.saturating_sub(held + outstanding);
        let threshold = if outstanding == 0 {
            1
        } else {
            (self.capacity.min(self.batch) / 2).max(1)
        };
        (free >= threshold).then(|| free.min(self.batch))
    }

    /// A request for `size` messages went out, living `expires`.
    pub(crate) fn sent(&mut self, size: usize, now: Instant, expires: Duration) {
        self.requested += size;
        self.all_expired_at = Some(now + expires + REQUEST_GRACE);
    }

    /// One requested message arrived.
    pub(crate) fn delivered(&mut self) {
        self.requested = self.requested.saturating_sub(1);
    }

    /// A request ended with `unfilled` of its messages not delivered.
    pub(crate) fn ended(&mut self, unfilled: usize) {
        self.requested = self.requested.saturating_sub(unfilled);
    }

    /// Count nothing as requested: the requests were lost (a reconnect, a recreated consumer).
    pub(crate) fn forget(&mut self) {
        self.requested = 0;
        self.all_expired_at = None;
    }
}

/// What the subscription brought.
#[derive(Debug)]
pub(crate) enum Pulled {
    /// A message of the stream.
    Message(async_nats::Message),
    /// Nothing for the driver: a heartbeat, or a request's end (already counted).
    Quiet,
    /// The consumer or its server did not answer as a live consumer does (deleted, no
    /// responders, a refused request, missed heartbeats): check it and pull again.
    Trouble(String),
}

/// A pull session on one consumer; see the [module docs](self).
pub(crate) struct Pull {
    consumer: PullConsumer,
    inbox: Subject,
    subscription: async_nats::Subscriber,
    pub(crate) budget: Budget,
    expires: Duration,
    heartbeat: Duration,
    last_heard: Instant,
    /// Something arrived since `last_heard` was last brought up to date.
    heard: bool,
    /// The subscription ended (the client was closed): nothing more comes from it.
    closed: bool,
}

impl std::fmt::Debug for Pull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pull")
            .field("inbox", &self.inbox)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Pull {
    /// Subscribe an inbox for `consumer`'s deliveries.
    pub(crate) async fn open(
        client: &async_nats::Client,
        consumer: PullConsumer,
        budget: Budget,
        expires: Duration,
    ) -> Result<Self, async_nats::SubscribeError> {
        let inbox = Subject::from(client.new_inbox());
        let subscription = client.subscribe(inbox.clone()).await?;
        // The server wants a heartbeat of at most half the expiry.
        let heartbeat = if expires >= Duration::from_millis(20) {
            expires / 2 - Duration::from_millis(1)
        } else {
            Duration::ZERO
        };
        Ok(Self {
            consumer,
            inbox,
            subscription,
            budget,
            expires,
            heartbeat,
            last_heard: Instant::now(),
            heard: false,
            closed: false,
        })
    }

    /// Subscribe the inbox again if its subscription ended.
    pub(crate) async fn resubscribe_if_closed(
        &mut self,
        client: &async_nats::Client,
    ) -> Result<(), async_nats::SubscribeError> {
        if self.closed {
            self.subscription = client.subscribe(self.inbox.clone()).await?;
            self.closed = false;
        }
        Ok(())
    }

    /// Until when requests are open, if any is.
    pub(crate) fn open_until(&self) -> Option<Instant> {
        (self.budget.outstanding() > 0)
            .then_some(self.budget.all_expired_at)
            .flatten()
    }

    /// Pull from `consumer` from now on (it was recreated); earlier requests are forgotten.
    pub(crate) fn replace_consumer(&mut self, consumer: PullConsumer) {
        self.consumer = consumer;
        self.budget.forget();
    }

    /// Send a pull request if the budget has room, with `held` messages delivered and not
    /// finished; `Ok(true)` when one went out.
    pub(crate) async fn request(&mut self, held: usize) -> Result<bool, BoxedPullError> {
        let Some(size) = self.budget.request_size(held) else {
            return Ok(false);
        };
        let now = Instant::now();
        let request = BatchConfig {
            batch: size,
            expires: Some(self.expires),
            idle_heartbeat: self.heartbeat,
            ..BatchConfig::default()
        };
        self.consumer
            .request_batch(request, self.inbox.clone())
            .await
            .map_err(|err| BoxedPullError(Box::new(err)))?;
        if self.budget.outstanding() == 0 {
            // Heartbeats are owed from now, not from the last message of an idle spell.
            self.last_heard = now;
            self.heard = false;
        }
        self.budget.sent(size, now, self.expires);
        Ok(true)
    }

    /// Whether a request would go out with `held` messages held.
    pub(crate) fn wants_request(&self, held: usize) -> bool {
        self.budget.request_size(held).is_some()
    }

    /// What has arrived already, if anything (for taking several arrivals in one turn).
    pub(crate) fn try_next(&mut self) -> Option<Pulled> {
        if self.closed {
            return None;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match self.subscription.poll_next_unpin(&mut cx) {
            std::task::Poll::Ready(next) => Some(self.classify(next)),
            std::task::Poll::Pending => None,
        }
    }

    /// The next thing the subscription brings; counts it in the budget.
    pub(crate) async fn next(&mut self) -> Pulled {
        if self.closed {
            return std::future::pending().await;
        }
        let next = self.subscription.next().await;
        self.classify(next)
    }

    fn classify(&mut self, next: Option<async_nats::Message>) -> Pulled {
        let Some(message) = next else {
            self.closed = true;
            self.budget.forget();
            return Pulled::Trouble("the inbox subscription ended".to_owned());
        };
        // Noted, not timed: reading the clock per message costs more than the rest of this.
        self.heard = true;
        match message.status {
            None | Some(StatusCode::OK) => {
                self.budget.delivered();
                Pulled::Message(message)
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Pulled::Quiet,
            Some(status) => {
                // A request's end (expired, or ended by the server) says how much of it went
                // unfilled; a refusal without that count is trouble.
                let unfilled = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get(PENDING_MESSAGES))
                    .and_then(|value| value.as_str().parse::<usize>().ok());
                match unfilled {
                    Some(unfilled)
                        if status == StatusCode::TIMEOUT
                            || status == StatusCode::REQUEST_TERMINATED =>
                    {
                        self.budget.ended(unfilled);
                        Pulled::Quiet
                    }
                    _ => {
                        self.budget.forget();
                        Pulled::Trouble(format!(
                            "status {status} {}",
                            message.description.as_deref().unwrap_or_default()
                        ))
                    }
                }
            }
        }
    }

    /// How often to look for missed heartbeats ([`Pull::missed_heartbeats`]); `None` when the
    /// expiry is too short for heartbeats.
    pub(crate) fn heartbeat_period(&self) -> Option<Duration> {
        (!self.heartbeat.is_zero()).then_some(self.heartbeat)
    }

    /// The heartbeat watch, called every [`Pull::heartbeat_period`]: gives up requests that
    /// expired without their end, and says whether two heartbeats were missed while requests
    /// are open (the connection or the consumer's server is gone, and the requests with it).
    pub(crate) fn missed_heartbeats(&mut self) -> bool {
        let now = Instant::now();
        if std::mem::take(&mut self.heard) {
            self.last_heard = now;
        }
        self.budget.expire(now);
        !self.heartbeat.is_zero()
            && self.budget.outstanding() > 0
            && now >= self.last_heard + self.heartbeat * 2 + REQUEST_GRACE
    }
}

/// A pull request that could not be sent.
#[derive(Debug)]
pub(crate) struct BoxedPullError(pub(crate) Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for BoxedPullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Budget, REQUEST_GRACE};

    const EXPIRES: Duration = Duration::from_secs(1);

    #[test]
    fn a_first_request_asks_for_a_whole_batch_and_never_more_than_the_room() {
        assert_eq!(Budget::new(256, 100).request_size(0), Some(100));
        assert_eq!(Budget::new(4, 100).request_size(0), Some(4));
        assert_eq!(Budget::new(4, 100).request_size(3), Some(1));
        assert_eq!(Budget::new(4, 100).request_size(4), None, "full");
    }

    #[test]
    fn with_a_request_open_the_next_waits_for_half_a_batch_of_room() {
        let now = Instant::now();
        let mut budget = Budget::new(256, 256);
        budget.sent(256, now, EXPIRES);
        assert_eq!(budget.request_size(0), None, "all room is requested");
        for _ in 0..127 {
            budget.delivered();
        }
        // 127 delivered and finished: 127 free, below the 128 threshold.
        assert_eq!(budget.request_size(0), None);
        budget.delivered();
        assert_eq!(budget.request_size(0), Some(128));
        assert_eq!(budget.request_size(1), None, "held messages count");
    }

    #[test]
    fn held_and_requested_never_exceed_the_capacity() {
        let now = Instant::now();
        let mut budget = Budget::new(10, 4);
        let mut held = 0;
        for step in 0..1000 {
            if let Some(size) = budget.request_size(held) {
                budget.sent(size, now, EXPIRES);
            }
            assert!(held + budget.outstanding() <= 10, "step {step}");
            // Deliver one, and finish one every other step.
            if budget.outstanding() > 0 {
                budget.delivered();
                held += 1;
            }
            if step % 2 == 0 && held > 0 {
                held -= 1;
            }
        }
    }

    #[test]
    fn a_requests_end_frees_what_it_did_not_fill() {
        let now = Instant::now();
        let mut budget = Budget::new(100, 100);
        budget.sent(100, now, EXPIRES);
        budget.delivered();
        budget.ended(99);
        assert_eq!(budget.outstanding(), 0);
        assert_eq!(budget.request_size(1), Some(99));
    }

    #[test]
    fn requests_whose_end_never_came_stop_counting_after_their_expiry() {
        let now = Instant::now();
        let mut budget = Budget::new(8, 8);
        budget.sent(8, now, EXPIRES);
        assert_eq!(budget.request_size(0), None);
        budget.expire(now + EXPIRES);
        assert_eq!(budget.request_size(0), None, "not before the grace is over");
        budget.expire(now + EXPIRES + REQUEST_GRACE);
        assert_eq!(budget.outstanding(), 0);
        assert_eq!(budget.request_size(0), Some(8));
    }

    #[test]
    fn forgetting_frees_the_whole_room_at_once() {
        let now = Instant::now();
        let mut budget = Budget::new(8, 8);
        budget.sent(8, now, EXPIRES);
        budget.forget();
        assert_eq!(budget.request_size(0), Some(8));
    }
}
