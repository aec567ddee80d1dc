//! Stream and durable consumer management.
//!
//! `create_stream` is idempotent like Go natty's, but stricter: an existing stream with other
//! subjects is an error ([`StreamErrorKind::Mismatch`]), never a silent mismatch.
//! Consumers are always durable pull consumers with explicit acks.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use natty::ConsumerOptions;
//!
//! # async fn run(natty: natty::Natty) -> Result<(), Box<dyn std::error::Error>> {
//! natty.create_stream("ORDERS", ["orders.>"]).await?;
//! natty
//!     .create_consumer_with(
//!         "ORDERS",
//!         "billing",
//!         ["orders.created"],
//!         ConsumerOptions::default().ack_wait(Duration::from_secs(10)).max_deliver(5),
//!     )
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{self, pull, AckPolicy};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::ErrorCode;

use crate::error::{api_error_code, timed_out, Error, StreamErrorKind};
use crate::{validate, Natty};

/// The error of a stream or consumer call.
pub type StreamError = Error<StreamErrorKind>;

/// Go natty's stream defaults: limits retention, file storage, 30 days max age.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

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

fn check_name(what: &'static str, name: &str) -> Result<(), StreamError> {
    validate::name(what, name).map_err(|e| Error::with_source(StreamErrorKind::InvalidName, e))
}

fn check_filters(filters: &[String]) -> Result<(), StreamError> {
    for filter in filters {
        validate::filter_subject(filter)
            .map_err(|e| Error::with_source(StreamErrorKind::InvalidSubject, e))?;
    }
    Ok(())
}

/// Sort an async-nats stream or consumer error into natty's kinds by its API error code or
/// async-nats kind, keeping it as the source.
pub(crate) fn classify(err: impl std::error::Error + Send + Sync + 'static) -> StreamError {
    let kind = match api_error_code(&err) {
        Some(
            ErrorCode::STREAM_NOT_FOUND
            | ErrorCode::CONSUMER_NOT_FOUND
            | ErrorCode::NO_MESSAGE_FOUND
            | ErrorCode::SEQUENCE_NOT_FOUND,
        ) => StreamErrorKind::NotFound,
        _ if timed_out(&err) => StreamErrorKind::TimedOut,
        _ => StreamErrorKind::JetStream,
    };
    Error::with_source(kind, err)
}

impl Natty {
    /// Create the stream `name` capturing `subjects` with Go natty's defaults (limits
    /// retention, file storage, 30 days max age), allowing fast-ingest batched publishing on
    /// servers 2.14+ (natty's publishers then use it; see
    /// [Paths](crate::publish#paths)). Idempotent: an existing stream with the same subjects
    /// is fine, and is left as it is.
    ///
    /// # Errors
    /// `InvalidName`/`InvalidSubject` before sending; `Mismatch` when the stream exists with
    /// other subjects.
    pub async fn create_stream<I, S>(&self, name: &str, subjects: I) -> Result<(), StreamError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.create_stream_with(stream::Config {
            name: name.to_owned(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_age: DEFAULT_MAX_AGE,
            allow_batch_publish: self.supports_fast_ingest(),
            ..Default::default()
        })
        .await
    }

    /// Escape hatch: create a stream from a full async-nats configuration (replicas, storage,
    /// max age, duplicate window, ...). Idempotent on the subjects, like
    /// [`Natty::create_stream`]. Takes async-nats' own type, so it may change with async-nats
    /// releases.
    ///
    /// # Errors
    /// See [`Natty::create_stream`].
    pub async fn create_stream_with(&self, config: stream::Config) -> Result<(), StreamError> {
        check_name("stream name", &config.name)?;
        if config.subjects.is_empty() {
            return Err(Error::with_source(
                StreamErrorKind::InvalidConfig,
                crate::error::ValidationError::new("subjects", &config.name, "is an empty list"),
            ));
        }
        check_filters(&config.subjects)?;
        let js = self.jetstream();
        match js.get_stream(&config.name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(classify)?;
                let mut have = info.config.subjects.clone();
                let mut want = config.subjects.clone();
                have.sort();
                want.sort();
                if have == want {
                    Ok(())
                } else {
                    Err(Error::with_source(
                        StreamErrorKind::Mismatch,
                        crate::error::ValidationError::new(
                            "stream",
                            &config.name,
                            "exists with different subjects",
                        ),
                    ))
                }
            }
            Err(err) if api_error_code(&err) == Some(ErrorCode::STREAM_NOT_FOUND) => {
                js.create_stream(config).await.map(drop).map_err(classify)
            }
            Err(err) => Err(classify(err)),
        }
    }

    /// Delete the stream `name` and all its messages.
    ///
    /// # Errors
    /// `InvalidName` before sending; `NotFound` when there is no such stream.
    pub async fn delete_stream(&self, name: &str) -> Result<(), StreamError> {
        check_name("stream name", name)?;
        self.jetstream()
            .delete_stream(name)
            .await
            .map(drop)
            .map_err(classify)
    }

    /// Create (or update) the durable pull consumer `durable` on `stream`, with explicit acks,
    /// delivering the subjects in `filter_subjects` (all of the stream's when empty).
    ///
    /// # Errors
    /// `InvalidName`/`InvalidSubject` before sending; `NotFound` when the stream is missing.
    pub async fn create_consumer<I, S>(
        &self,
        stream: &str,
        durable: &str,
        filter_subjects: I,
    ) -> Result<(), StreamError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.create_consumer_with(stream, durable, filter_subjects, ConsumerOptions::default())
            .await
    }

    /// Like [`Natty::create_consumer`], with [`ConsumerOptions`].
    ///
    /// # Errors
    /// See [`Natty::create_consumer`].
    pub async fn create_consumer_with<I, S>(
        &self,
        stream: &str,
        durable: &str,
        filter_subjects: I,
        options: ConsumerOptions,
    ) -> Result<(), StreamError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let filters: Vec<String> = filter_subjects.into_iter().map(Into::into).collect();
        self.pull_consumer(stream, durable, &filters, &options)
            .await
            .map(drop)
    }

    pub(crate) async fn pull_consumer(
        &self,
        stream: &str,
        durable: &str,
        filters: &[String],
        options: &ConsumerOptions,
    ) -> Result<consumer::PullConsumer, StreamError> {
        check_name("stream name", stream)?;
        check_name("consumer name", durable)?;
        check_filters(filters)?;
        self.jetstream()
            .create_consumer_on_stream(options.to_config(durable, filters), stream)
            .await
            .map_err(classify)
    }

    /// Delete the durable consumer `durable` of `stream`.
    ///
    /// # Errors
    /// `InvalidName` before sending; `NotFound` when the stream or consumer is missing.
    pub async fn delete_consumer(&self, stream: &str, durable: &str) -> Result<(), StreamError> {
        check_name("stream name", stream)?;
        check_name("consumer name", durable)?;
        let handle = self
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(classify)?;
        handle
            .delete_consumer(durable)
            .await
            .map(drop)
            .map_err(classify)
    }
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
