//! [`ConsumerOptions`]: the settings of a durable consumer beyond its name and filters, and
//! the one place a durable pull consumer is created (for [`Natty::consumer`](crate::Natty::consumer),
//! [`Stream::create_consumer`](crate::Stream::create_consumer) and the serve loop's recovery).

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{self, pull, AckPolicy};

use crate::connection::Connection;
use crate::error::{classify_stream, Error, StreamError, StreamErrorKind};
use crate::validate;

/// Where a new consumer starts in its stream (an existing durable keeps its place).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliverPolicy {
    /// Every message the stream holds (the default).
    #[default]
    All,
    /// The last message the stream holds, then new ones.
    Last,
    /// Only messages stored after the consumer is created.
    New,
    /// From this stream sequence on.
    ByStartSequence(u64),
    /// From the first message stored at or after this time. Times before 1970 start at the
    /// first message; times after 2262-04-11 (the end of the server's nanosecond clock) are
    /// taken as that end.
    ByStartTime(SystemTime),
    /// The last message of each subject, then new ones (the consumer needs filter subjects).
    LastPerSubject,
}

impl DeliverPolicy {
    fn to_async_nats(self) -> consumer::DeliverPolicy {
        use consumer::DeliverPolicy as Nats;
        match self {
            Self::All => Nats::All,
            Self::Last => Nats::Last,
            Self::New => Nats::New,
            Self::ByStartSequence(start_sequence) => Nats::ByStartSequence { start_sequence },
            Self::ByStartTime(time) => Nats::ByStartTime {
                start_time: representable(time).into(),
            },
            Self::LastPerSubject => Nats::LastPerSubject,
        }
    }
}

/// `time` within what the server reads as a start time: nanoseconds since 1970 in an `i64`
/// (until 2262-04-11; a later time wraps around to the first message). async-nats' conversion
/// would panic past the year 9999.
fn representable(time: SystemTime) -> SystemTime {
    const LAST: Duration = Duration::from_nanos(i64::MAX as u64);
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) if since <= LAST => time,
        Ok(_) => SystemTime::UNIX_EPOCH + LAST,
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// Settings of a durable consumer beyond its name and filters.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: i64,
    pub(crate) backoff: Vec<Duration>,
    pub(crate) max_ack_pending: i64,
    pub(crate) deliver_policy: DeliverPolicy,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            backoff: Vec::new(),
            max_ack_pending: 1000,
            deliver_policy: DeliverPolicy::default(),
        }
    }
}

impl ConsumerOptions {
    /// How long the server waits for an ack before redelivering (default 30 s).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Deliveries before the server gives up on a message (default unlimited).
    pub fn max_deliver(mut self, max_deliver: i64) -> Self {
        self.max_deliver = max_deliver;
        self
    }

    /// Redelivery delays by attempt, replacing `ack_wait` for redeliveries.
    pub fn backoff(mut self, backoff: Vec<Duration>) -> Self {
        self.backoff = backoff;
        self
    }

    /// Messages delivered but not yet acked, at most (default 1000).
    pub fn max_ack_pending(mut self, max_ack_pending: i64) -> Self {
        self.max_ack_pending = max_ack_pending;
        self
    }

    /// Where a new consumer starts (default all messages).
    pub fn deliver_policy(mut self, policy: DeliverPolicy) -> Self {
        self.deliver_policy = policy;
        self
    }

    pub(crate) fn to_config(&self, durable: &str, filters: &[String]) -> pull::Config {
        let mut config = pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            backoff: self.backoff.clone(),
            max_ack_pending: self.max_ack_pending,
            deliver_policy: self.deliver_policy.to_async_nats(),
            ..Default::default()
        };
        match filters {
            [] => {}
            [one] => config.filter_subject = one.clone(),
            many => config.filter_subjects = many.to_vec(),
        }
        config
    }
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), StreamError> {
    validate::name(what, name).map_err(|e| Error::with_source(StreamErrorKind::InvalidName, e))
}

pub(crate) fn check_filters(filters: &[String]) -> Result<(), StreamError> {
    for filter in filters {
        validate::filter_subject(filter)
            .map_err(|e| Error::with_source(StreamErrorKind::InvalidSubject, e))?;
    }
    Ok(())
}

/// Create (or update) the durable pull consumer `durable` on `stream`, names checked first.
pub(crate) async fn create_durable(
    connection: &Connection,
    stream: &str,
    durable: &str,
    filters: &[String],
    options: &ConsumerOptions,
) -> Result<consumer::PullConsumer, StreamError> {
    check_name("stream name", stream)?;
    check_name("consumer name", durable)?;
    check_filters(filters)?;
    connection
        .jetstream()
        .create_consumer_on_stream(options.to_config(durable, filters), stream)
        .await
        .map_err(classify_stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_policies_map_to_async_nats_and_times_out_of_range_do_not_panic() {
        use consumer::DeliverPolicy as Nats;
        assert_eq!(
            DeliverPolicy::ByStartSequence(7).to_async_nats(),
            Nats::ByStartSequence { start_sequence: 7 }
        );
        assert_eq!(DeliverPolicy::default().to_async_nats(), Nats::All);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let Nats::ByStartTime { start_time } = DeliverPolicy::ByStartTime(at).to_async_nats()
        else {
            panic!("not a start time");
        };
        assert_eq!(start_time.unix_timestamp(), 1_700_000_000);
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40);
        let Nats::ByStartTime { start_time } = DeliverPolicy::ByStartTime(far).to_async_nats()
        else {
            panic!("not a start time");
        };
        assert_eq!(start_time.unix_timestamp_nanos(), i128::from(i64::MAX));
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1 << 40);
        let Nats::ByStartTime { start_time } = DeliverPolicy::ByStartTime(before).to_async_nats()
        else {
            panic!("not a start time");
        };
        assert_eq!(start_time.unix_timestamp(), 0);
    }
}
