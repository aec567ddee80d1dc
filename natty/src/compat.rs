//! Go natty's names, for those who come from `streamdal/natty`: [`GoNatty`] puts its flat
//! calls (a bucket or stream *name* as the first argument, `AsLeader`, `HaveLeader`,
//! `GetLeader`) on [`Natty`] as thin shims over the handles.
//!
//! | Go natty | natty, Go-shaped ([`GoNatty`]) | natty, with handles |
//! |---|---|---|
//! | `Publish` | [`Natty::publish`] | [`Natty::publisher`] |
//! | `Consume` | [`Natty::consume`] | [`Natty::consumer`], [`Natty::serve`] |
//! | `CreateStream`, `DeleteStream` | [`GoNatty::create_stream`], [`GoNatty::delete_stream`] | [`Natty::stream`] |
//! | `CreateConsumer`, `DeleteConsumer` | [`GoNatty::create_consumer`], [`GoNatty::delete_consumer`] | [`Stream::create_consumer`] |
//! | `Get`, `Create`, `Put`, `Delete`, `Keys`, `Refresh`, ... | [`GoNatty::get`], [`GoNatty::create`], ... | [`Natty::bucket`] |
//! | `CreateBucket`, `DeleteBucket`, `WatchBucket`, `WatchKey` | [`GoNatty::create_bucket`], ... | [`Bucket::create_bucket`], ... |
//! | `AsLeader`, `HaveLeader`, `GetLeader` | [`GoNatty::as_leader`], [`GoNatty::have_leader`], [`GoNatty::get_leader`] | [`Natty::elect`] |
//!
//! A shim checks the names on every call; code that uses one bucket or stream many times
//! is better served by its handle, which checks them once.
//!
//! # Example
//! ```no_run
//! use natty::compat::GoNatty as _;
//!
//! # async fn run(natty: natty::Natty) -> Result<(), Box<dyn std::error::Error>> {
//! natty.create_stream("ORDERS", ["orders.>"]).await?;
//! natty.put("sessions", "user.42", "online".into()).await?;
//! let online = natty.get("sessions", "user.42").await?;
//! assert_eq!(online.as_deref(), Some(&b"online"[..]));
//! # Ok(())
//! # }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::client::Natty;
use crate::consume::ConsumerOptions;
use crate::election::{ElectionConfig, ElectionError, ElectionErrorKind};
use crate::error::{Error, KvErrorKind, StreamError};
use crate::kv::{BucketStatus, KvError, Watch};
#[cfg(doc)]
use crate::{kv::Bucket, stream::Stream};

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::client::Natty {}
}

/// Go natty's flat calls on [`Natty`]; see the [module docs](self).
pub trait GoNatty: sealed::Sealed {
    /// Go natty's `CreateStream`: [`Stream::create`] on `name`.
    ///
    /// # Errors
    /// `InvalidName`, and those of [`Stream::create`].
    fn create_stream<I, S>(
        &self,
        name: &str,
        subjects: I,
    ) -> impl Future<Output = Result<(), StreamError>> + Send
    where
        I: IntoIterator<Item = S> + Send,
        S: Into<String>;

    /// Go natty's `DeleteStream`: [`Stream::delete`] on `name`.
    ///
    /// # Errors
    /// `InvalidName`, and those of [`Stream::delete`].
    fn delete_stream(&self, name: &str) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Go natty's `CreateConsumer`: [`Stream::create_consumer`] on `stream` with the default
    /// [`ConsumerOptions`].
    ///
    /// # Errors
    /// `InvalidName`, and those of [`Stream::create_consumer`].
    fn create_consumer<I, S>(
        &self,
        stream: &str,
        durable: &str,
        filter_subjects: I,
    ) -> impl Future<Output = Result<(), StreamError>> + Send
    where
        I: IntoIterator<Item = S> + Send,
        S: Into<String>;

    /// Go natty's `DeleteConsumer`: [`Stream::delete_consumer`] on `stream`.
    ///
    /// # Errors
    /// `InvalidName`, and those of [`Stream::delete_consumer`].
    fn delete_consumer(
        &self,
        stream: &str,
        durable: &str,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Go natty's `Get`: [`Bucket::get`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::get`].
    fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Bytes>, KvError>> + Send;

    /// Go natty's `Create`: [`Bucket::create`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::create`].
    fn create(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
    ) -> impl Future<Output = Result<u64, KvError>> + Send;

    /// Go natty's `Put`: [`Bucket::put`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::put`].
    fn put(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
    ) -> impl Future<Output = Result<u64, KvError>> + Send;

    /// [`Bucket::update`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::update`].
    fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> impl Future<Output = Result<u64, KvError>> + Send;

    /// Go natty's `Refresh`: [`Bucket::refresh`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::refresh`].
    fn refresh(&self, bucket: &str, key: &str)
        -> impl Future<Output = Result<u64, KvError>> + Send;

    /// Go natty's `Delete`: [`Bucket::delete`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::delete`].
    fn delete(&self, bucket: &str, key: &str) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Go natty's `Keys`: [`Bucket::keys`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::keys`].
    fn keys(&self, bucket: &str) -> impl Future<Output = Result<Vec<String>, KvError>> + Send;

    /// Go natty's `Status`: [`Bucket::status`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::status`].
    fn status(&self, bucket: &str) -> impl Future<Output = Result<BucketStatus, KvError>> + Send;

    /// Go natty's `WatchBucket`: [`Bucket::watch`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::watch`].
    fn watch_bucket(&self, bucket: &str) -> impl Future<Output = Result<Watch, KvError>> + Send;

    /// Go natty's `WatchKey`: [`Bucket::watch_key`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::watch_key`].
    fn watch_key(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Watch, KvError>> + Send;

    /// Go natty's `CreateBucket`: [`Bucket::create_bucket`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::create_bucket`].
    fn create_bucket(
        &self,
        bucket: &str,
        ttl: Duration,
        replicas: usize,
        description: &str,
    ) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Go natty's `DeleteBucket`: [`Bucket::delete_bucket`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::delete_bucket`].
    fn delete_bucket(&self, bucket: &str) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Run `f` every [`ElectionConfig::interval`] for as long as this node leads, until
    /// `shutdown` is cancelled (Go natty's `AsLeader`, with its `Looper` as the interval).
    ///
    /// Unlike Go's, a run of `f` is dropped the moment leadership is lost, and on shutdown
    /// the key is released so another node takes over at once. Errors `f` returns are logged
    /// and the loop goes on, as in Go.
    ///
    /// # Errors
    /// Those of [`Natty::elect`]: `InvalidConfig`, `TtlMismatch` (Go's
    /// `ErrBucketTTLMismatch`) or `Bucket`.
    fn as_leader<F, Fut, E>(
        &self,
        config: ElectionConfig,
        shutdown: CancellationToken,
        f: F,
    ) -> impl Future<Output = Result<(), ElectionError>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display;

    /// The node name stored under `key` (Go natty's `GetLeader`), or `None` when nobody holds
    /// it. The value can outlive a leader that lost its lease by up to the TTL; use a
    /// [`Leadership`](crate::Leadership) to know whether this node leads.
    ///
    /// # Errors
    /// `InvalidConfig` for a bad bucket or key name; `Bucket` when the server fails.
    fn get_leader(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, ElectionError>> + Send;

    /// Whether `key` names `node` as leader (Go natty's `HaveLeader`); `false` on any error.
    fn have_leader(&self, node: &str, bucket: &str, key: &str)
        -> impl Future<Output = bool> + Send;
}

impl GoNatty for Natty {
    async fn create_stream<I, S>(&self, name: &str, subjects: I) -> Result<(), StreamError>
    where
        I: IntoIterator<Item = S> + Send,
        S: Into<String>,
    {
        let subjects: Vec<String> = subjects.into_iter().map(Into::into).collect();
        self.stream(name)?.create(subjects).await
    }

    async fn delete_stream(&self, name: &str) -> Result<(), StreamError> {
        self.stream(name)?.delete().await
    }

    async fn create_consumer<I, S>(
        &self,
        stream: &str,
        durable: &str,
        filter_subjects: I,
    ) -> Result<(), StreamError>
    where
        I: IntoIterator<Item = S> + Send,
        S: Into<String>,
    {
        let filters: Vec<String> = filter_subjects.into_iter().map(Into::into).collect();
        self.stream(stream)?
            .create_consumer(durable, filters, ConsumerOptions::default())
            .await
    }

    async fn delete_consumer(&self, stream: &str, durable: &str) -> Result<(), StreamError> {
        self.stream(stream)?.delete_consumer(durable).await
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, KvError> {
        self.bucket(bucket)?.get(key).await
    }

    async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.bucket(bucket)?.create(key, value).await
    }

    async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.bucket(bucket)?.put(key, value).await
    }

    async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, KvError> {
        self.bucket(bucket)?.update(key, value, revision).await
    }

    async fn refresh(&self, bucket: &str, key: &str) -> Result<u64, KvError> {
        self.bucket(bucket)?.refresh(key).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        self.bucket(bucket)?.delete(key).await
    }

    async fn keys(&self, bucket: &str) -> Result<Vec<String>, KvError> {
        self.bucket(bucket)?.keys().await
    }

    async fn status(&self, bucket: &str) -> Result<BucketStatus, KvError> {
        self.bucket(bucket)?.status().await
    }

    async fn watch_bucket(&self, bucket: &str) -> Result<Watch, KvError> {
        self.bucket(bucket)?.watch().await
    }

    async fn watch_key(&self, bucket: &str, key: &str) -> Result<Watch, KvError> {
        self.bucket(bucket)?.watch_key(key).await
    }

    async fn create_bucket(
        &self,
        bucket: &str,
        ttl: Duration,
        replicas: usize,
        description: &str,
    ) -> Result<(), KvError> {
        self.bucket(bucket)?
            .create_bucket(ttl, replicas, description)
            .await
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<(), KvError> {
        self.bucket(bucket)?.delete_bucket().await
    }

    async fn as_leader<F, Fut, E>(
        &self,
        config: ElectionConfig,
        shutdown: CancellationToken,
        mut f: F,
    ) -> Result<(), ElectionError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        let interval = config.interval;
        let leadership = self.elect(config.shutdown(shutdown.clone())).await?;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(term) = leadership.term() else {
                continue;
            };
            // Polled only within the term: a stall past the lease drops `f` at its next poll.
            if let Some(Err(err)) = term.bound(f()).await {
                tracing::warn!(node = leadership.node(), error = %err, "as_leader: function failed");
            }
        }
        leadership.stop().await;
        Ok(())
    }

    async fn get_leader(&self, bucket: &str, key: &str) -> Result<Option<String>, ElectionError> {
        match self.get(bucket, key).await {
            Ok(value) => Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned())),
            Err(err) => {
                let kind = match err.kind() {
                    KvErrorKind::InvalidBucket | KvErrorKind::InvalidKey => {
                        ElectionErrorKind::InvalidConfig
                    }
                    _ => ElectionErrorKind::Bucket,
                };
                Err(Error::with_source(kind, err))
            }
        }
    }

    async fn have_leader(&self, node: &str, bucket: &str, key: &str) -> bool {
        matches!(self.get_leader(bucket, key).await, Ok(Some(leader)) if leader == node)
    }
}
