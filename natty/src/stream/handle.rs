//! [`Stream`], the handle of one stream.

use std::sync::Arc;

use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, RetentionPolicy, StorageType};
use async_nats::jetstream::ErrorCode;

use super::DEFAULT_MAX_AGE;
use crate::connection::Connection;
use crate::consume::options::{check_filters, check_name, create_durable};
use crate::consume::ConsumerOptions;
use crate::error::ValidationError;
use crate::error::{api_error_code, classify_stream, Error, StreamError, StreamErrorKind};
use crate::group::{GroupError, Partitioning};
use crate::publish::StoredMessage;

/// A stream, its name checked once; from [`Natty::stream`](crate::Natty::stream). Nothing is
/// sent until a call. Cheap to clone. See the [module docs](super).
#[derive(Clone)]
pub struct Stream {
    connection: Arc<Connection>,
    name: Arc<str>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("name", &self.name).finish()
    }
}

impl Stream {
    pub(crate) fn open(connection: &Arc<Connection>, name: &str) -> Result<Self, StreamError> {
        check_name("stream name", name)?;
        Ok(Self {
            connection: Arc::clone(connection),
            name: Arc::from(name),
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Create the stream capturing `subjects` with Go natty's defaults (limits retention,
    /// file storage, 30 days max age), allowing fast-ingest batched publishing on servers
    /// 2.14+ (natty's publishers then use it; see [Paths](crate::publish#paths)) and atomic
    /// batches on 2.12.1+ ([`Publisher::publish_batch`](crate::Publisher::publish_batch)).
    /// Idempotent: an existing stream with the same subjects is fine, and is left as it is.
    ///
    /// # Errors
    /// `InvalidSubject`/`InvalidConfig` before sending; `Mismatch` when the stream exists
    /// with other subjects.
    pub async fn create<I, S>(&self, subjects: I) -> Result<(), StreamError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.create_with_config(stream::Config {
            name: self.name.to_string(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_age: DEFAULT_MAX_AGE,
            allow_batch_publish: self.connection.server().supports_fast_ingest(),
            allow_atomic_publish: self.connection.server().supports_atomic_batch(),
            ..Default::default()
        })
        .await
    }

    /// Escape hatch: create the stream from a full async-nats configuration (replicas,
    /// storage, max age, duplicate window, ...); its `name` is the handle's (an empty one is
    /// filled in). Idempotent on the subjects, like [`Stream::create`]. Takes async-nats' own
    /// type, so it may change with async-nats releases.
    ///
    /// # Errors
    /// `InvalidConfig` when the configuration names another stream or has no subjects, and
    /// those of [`Stream::create`].
    pub async fn create_with_config(&self, mut config: stream::Config) -> Result<(), StreamError> {
        if config.name.is_empty() {
            config.name = self.name.to_string();
        } else if *config.name != *self.name {
            return Err(Error::with_source(
                StreamErrorKind::InvalidConfig,
                ValidationError::new("stream name", &config.name, "differs from the handle's"),
            ));
        }
        if config.subjects.is_empty() {
            return Err(Error::with_source(
                StreamErrorKind::InvalidConfig,
                ValidationError::new("subjects", &config.name, "is an empty list"),
            ));
        }
        check_filters(&config.subjects)?;
        let js = self.connection.jetstream();
        match js.get_stream(&config.name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(classify_stream)?;
                let mut have = info.config.subjects.clone();
                let mut want = config.subjects.clone();
                have.sort();
                want.sort();
                if have == want {
                    Ok(())
                } else {
                    Err(Error::with_source(
                        StreamErrorKind::Mismatch,
                        ValidationError::new(
                            "stream",
                            &config.name,
                            "exists with different subjects",
                        ),
                    ))
                }
            }
            Err(err) if api_error_code(&err) == Some(ErrorCode::STREAM_NOT_FOUND) => js
                .create_stream(config)
                .await
                .map(drop)
                .map_err(classify_stream),
            Err(err) => Err(classify_stream(err)),
        }
    }

    /// Delete the stream and all its messages.
    ///
    /// # Errors
    /// `NotFound` when there is no such stream.
    pub async fn delete(&self) -> Result<(), StreamError> {
        self.connection
            .jetstream()
            .delete_stream(&*self.name)
            .await
            .map(drop)
            .map_err(classify_stream)
    }

    /// Create (or update) the durable pull consumer `durable`, with explicit acks, delivering
    /// the subjects in `filter_subjects` (all of the stream's when empty), with `options`
    /// (`ConsumerOptions::default()` for Go natty's defaults). To consume at once, use
    /// [`Natty::consumer`](crate::Natty::consumer), which creates it too.
    ///
    /// # Errors
    /// `InvalidName`/`InvalidSubject` before sending; `NotFound` when the stream is missing.
    pub async fn create_consumer<I, S>(
        &self,
        durable: &str,
        filter_subjects: I,
        options: ConsumerOptions,
    ) -> Result<(), StreamError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let filters: Vec<String> = filter_subjects.into_iter().map(Into::into).collect();
        create_durable(&self.connection, &self.name, durable, &filters, &options)
            .await
            .map(drop)
    }

    /// Delete the durable consumer `durable`.
    ///
    /// # Errors
    /// `InvalidName` before sending; `NotFound` when the stream or consumer is missing.
    pub async fn delete_consumer(&self, durable: &str) -> Result<(), StreamError> {
        check_name("consumer name", durable)?;
        self.resolve()
            .await?
            .delete_consumer(durable)
            .await
            .map(drop)
            .map_err(classify_stream)
    }

    /// The last message the stream stores on `subject` (a literal subject, or a filter with
    /// wildcards: the last of all it matches), with its headers; `None` when it stores none.
    /// One request, answered by the stream's leader.
    ///
    /// ```no_run
    /// # async fn run(natty: natty::Natty) -> Result<(), natty::StreamError> {
    /// if let Some(last) = natty.stream("ORDERS")?.last_message("orders.created").await? {
    ///     println!("#{}: {:?}, id {:?}", last.sequence, last.payload, last.headers.get("Nats-Msg-Id"));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `InvalidSubject` before sending; `NotFound` when the stream is missing; `TimedOut` or
    /// `JetStream` from the server.
    pub async fn last_message(&self, subject: &str) -> Result<Option<StoredMessage>, StreamError> {
        crate::validate::filter_subject(subject)
            .map_err(|err| Error::with_source(StreamErrorKind::InvalidSubject, err))?;
        match self
            .resolve()
            .await?
            .get_last_raw_message_by_subject(subject)
            .await
        {
            Ok(stored) => Ok(Some(StoredMessage::read(stored))),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(classify_stream(err)),
        }
    }

    /// The async-nats handle of the stream, without asking for its info.
    async fn resolve(&self) -> Result<stream::Stream<()>, StreamError> {
        self.connection
            .jetstream()
            .get_stream_no_info(&*self.name)
            .await
            .map_err(classify_stream)
    }

    /// Create the stream for static groups: it captures `partitioning`'s subjects and stores
    /// each message under `<partition>.<subject>` (a `partition(n, ...)` subject transform),
    /// with natty's stream defaults. Idempotent.
    ///
    /// # Errors
    /// `InvalidConfig` for a filter with no `*` wildcard; `ConfigDrift` when the stream
    /// exists with another transform.
    pub async fn create_partitioned(&self, partitioning: &Partitioning) -> Result<(), GroupError> {
        self.connection
            .create_partitioned_stream(&self.name, partitioning, DEFAULT_MAX_AGE)
            .await
    }

    /// The static groups defined on this stream.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `JetStream` when the server fails.
    pub async fn static_groups(&self) -> Result<Vec<String>, GroupError> {
        self.connection.list_static_groups(&self.name).await
    }

    /// The elastic groups defined on this stream.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `JetStream` when the server fails.
    pub async fn elastic_groups(&self) -> Result<Vec<String>, GroupError> {
        self.connection.list_elastic_groups(&self.name).await
    }
}
