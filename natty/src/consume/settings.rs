//! [`ConsumerSettings`]: what the server knows about a durable consumer.

use std::sync::Arc;
use std::time::Duration;

/// JetStream's ack wait when a consumer does not set one.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// What the server knows about a durable consumer, carried by every message it delivers.
///
/// A setting is said once: the consumer's ack wait, max deliveries and redelivery backoff
/// live on the server, and middleware that needs them (an in-progress heartbeat, a
/// dead-letter layer that must act on the last delivery) should not ask the user to repeat
/// them. natty's consumer driver reads them from the consumer's info when it starts (and again
/// whenever it recreates the consumer) and puts a [`ConsumerSettings`] into each
/// [`Message`](crate::Message)'s extensions, as axum puts `MatchedPath` into a request's.
/// Cloning it is cheap: every message of a run shares one allocation.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use natty::consume::ConsumerSettings;
/// use natty::Message;
///
/// // What the driver attaches; built by hand here, as in a layer's unit test.
/// let settings = ConsumerSettings::new("ORDERS", "billing")
///     .with_stream_subjects(["orders.>"])
///     .with_ack_wait(Duration::from_secs(10))
///     .with_max_deliver(Some(3));
/// let (msg, _) = Message::builder("orders.paid", "{}")
///     .delivered(3)
///     .consumer_settings(settings)
///     .build();
/// let settings = msg.consumer_settings().unwrap();
/// assert!(settings.is_last_delivery(msg.info().delivered));
/// assert!(settings.would_deliver("orders.dead"), "a dead letter here would come back");
/// assert!(!settings.would_deliver("dead.orders"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSettings {
    inner: Arc<Settings>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    stream: String,
    consumer: String,
    stream_subjects: Vec<String>,
    filter_subjects: Vec<String>,
    ack_wait: Duration,
    max_deliver: Option<u64>,
    backoff: Vec<Duration>,
}

impl ConsumerSettings {
    /// Settings of the consumer `consumer` on `stream` with JetStream's defaults: all of the
    /// stream's subjects, a 30 s ack wait, unlimited deliveries, no backoff. For hand-built
    /// messages; the driver reads the real ones with [`ConsumerSettings::from_info`].
    pub fn new(stream: impl Into<String>, consumer: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Settings {
                stream: stream.into(),
                consumer: consumer.into(),
                stream_subjects: Vec::new(),
                filter_subjects: Vec::new(),
                ack_wait: DEFAULT_ACK_WAIT,
                max_deliver: None,
                backoff: Vec::new(),
            }),
        }
    }

    /// Escape hatch: the settings in an async-nats consumer info, with the subjects of its
    /// stream. Takes async-nats' own type, so it may change with async-nats releases.
    pub fn from_info(
        info: &async_nats::jetstream::consumer::Info,
        stream_subjects: Vec<String>,
    ) -> Self {
        let config = &info.config;
        let mut filter_subjects = config.filter_subjects.clone();
        if !config.filter_subject.is_empty() {
            filter_subjects.push(config.filter_subject.clone());
        }
        let ack_wait = if config.ack_wait.is_zero() {
            DEFAULT_ACK_WAIT
        } else {
            config.ack_wait
        };
        Self {
            inner: Arc::new(Settings {
                stream: info.stream_name.clone(),
                consumer: info.name.clone(),
                stream_subjects,
                filter_subjects,
                ack_wait,
                // The server reports "unlimited" as -1 (0 on some versions).
                max_deliver: u64::try_from(config.max_deliver).ok().filter(|n| *n > 0),
                backoff: config.backoff.clone(),
            }),
        }
    }

    fn edit(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// With the stream's subjects.
    pub fn with_stream_subjects<I, S>(self, subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let subjects = subjects.into_iter().map(Into::into).collect();
        self.edit(|s| s.stream_subjects = subjects)
    }

    /// With the consumer's filter subjects (none: all of the stream's).
    pub fn with_filter_subjects<I, S>(self, subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let subjects = subjects.into_iter().map(Into::into).collect();
        self.edit(|s| s.filter_subjects = subjects)
    }

    /// With an ack wait.
    pub fn with_ack_wait(self, ack_wait: Duration) -> Self {
        self.edit(|s| s.ack_wait = ack_wait)
    }

    /// With a delivery limit (`None`: unlimited).
    pub fn with_max_deliver(self, max_deliver: Option<u64>) -> Self {
        self.edit(|s| s.max_deliver = max_deliver)
    }

    /// With redelivery delays by delivery.
    pub fn with_backoff(self, backoff: Vec<Duration>) -> Self {
        self.edit(|s| s.backoff = backoff)
    }

    /// The stream consumed.
    pub fn stream(&self) -> &str {
        &self.inner.stream
    }

    /// The durable consumer's name.
    pub fn consumer(&self) -> &str {
        &self.inner.consumer
    }

    /// The subjects the stream captures.
    pub fn stream_subjects(&self) -> &[String] {
        &self.inner.stream_subjects
    }

    /// The consumer's filter subjects (empty: all of the stream's).
    pub fn filter_subjects(&self) -> &[String] {
        &self.inner.filter_subjects
    }

    /// How long the server waits for a settlement before redelivering a first delivery.
    pub fn ack_wait(&self) -> Duration {
        self.inner.ack_wait
    }

    /// Deliveries before the server gives up on a message (`None`: unlimited).
    pub fn max_deliver(&self) -> Option<u64> {
        self.inner.max_deliver
    }

    /// The consumer's redelivery delays by delivery (empty: the ack wait every time).
    pub fn backoff(&self) -> &[Duration] {
        &self.inner.backoff
    }

    /// How long the server waits for a settlement of delivery number `delivered` (from 1)
    /// before redelivering it: the backoff entry for that delivery (the last one past its
    /// end), else the ack wait.
    pub fn ack_wait_for(&self, delivered: u64) -> Duration {
        let backoff = &self.inner.backoff;
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        backoff
            .get(index)
            .or(backoff.last())
            .copied()
            .unwrap_or(self.inner.ack_wait)
    }

    /// Whether delivery number `delivered` is the last the server will make.
    pub fn is_last_delivery(&self, delivered: u64) -> bool {
        self.inner.max_deliver.is_some_and(|max| delivered >= max)
    }

    /// Whether a message published to `subject` (wildcards allowed: any subject it matches)
    /// could be stored in the stream and delivered to this consumer again. Errs on the side
    /// of "yes" when the subject, the stream's subjects and the filters only overlap in part.
    pub fn would_deliver(&self, subject: &str) -> bool {
        let stored = self
            .inner
            .stream_subjects
            .iter()
            .any(|captured| subjects_overlap(captured, subject));
        let filtered = self.inner.filter_subjects.is_empty()
            || self
                .inner
                .filter_subjects
                .iter()
                .any(|filter| subjects_overlap(filter, subject));
        stored && filtered
    }
}

/// Whether some subject matches both `a` and `b` (each may hold `*` and `>` wildcards).
fn subjects_overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            // `>` stands for one or more tokens, and the other side has at least one here.
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_overlap_token_by_token() {
        assert!(subjects_overlap("orders.>", "orders.dead"));
        assert!(subjects_overlap("orders.*", "orders.dead"));
        assert!(subjects_overlap("orders.*.created", "orders.>"));
        assert!(subjects_overlap("*.dead", "orders.*"));
        assert!(!subjects_overlap("orders.*.created", "orders.dead"));
        assert!(!subjects_overlap("orders.>", "orders"));
        assert!(!subjects_overlap("orders.*", "orders.a.b"));
        assert!(!subjects_overlap("dead.orders", "orders.>"));
    }

    #[test]
    fn the_ack_wait_of_a_delivery_follows_the_backoff() {
        let settings = ConsumerSettings::new("S", "c")
            .with_backoff(vec![Duration::from_secs(1), Duration::from_secs(5)]);
        assert_eq!(settings.ack_wait_for(1), Duration::from_secs(1));
        assert_eq!(settings.ack_wait_for(2), Duration::from_secs(5));
        assert_eq!(settings.ack_wait_for(9), Duration::from_secs(5));
        let plain = ConsumerSettings::new("S", "c").with_ack_wait(Duration::from_secs(7));
        assert_eq!(plain.ack_wait_for(3), Duration::from_secs(7));
    }

    #[test]
    fn a_filtered_consumer_delivers_only_its_filters() {
        let settings = ConsumerSettings::new("ORDERS", "billing")
            .with_stream_subjects(["orders.>"])
            .with_filter_subjects(["orders.*.created"]);
        assert!(settings.would_deliver("orders.1.created"));
        assert!(!settings.would_deliver("orders.dead"));
        assert!(!settings.would_deliver("dead.orders"));
    }
}
