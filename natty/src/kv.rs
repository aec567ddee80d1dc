//! Key/value helpers in the shape of Go natty's: buckets appear on first write, reads of
//! missing keys are `None`, deletes of missing things are no-ops, and `refresh` is a safe
//! compare-and-set. Bucket handles are cached per client.
//!
//! # Example
//! ```no_run
//! # async fn run(natty: natty::Natty) -> Result<(), Box<dyn std::error::Error>> {
//! natty.put("sessions", "user.42", "online".into()).await?;
//! assert_eq!(natty.get("sessions", "user.42").await?.as_deref(), Some(&b"online"[..]));
//! natty.refresh("sessions", "user.42").await?; // rewrites it only if nobody else did
//! natty.delete("sessions", "user.42").await?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

use crate::error::{Error, KvErrorKind, ValidationError};
use crate::{validate, Natty};

/// The error of a key/value call.
pub type KvError = Error<KvErrorKind>;

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The value (empty for deletes and purges).
    pub value: Bytes,
    /// The revision of this change.
    pub revision: u64,
    /// What happened.
    pub operation: KvOperation,
}

/// What a [`KvEntry`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOperation {
    /// A value was written.
    Put,
    /// The key was deleted.
    Delete,
    /// The key's history was purged (also how expiries appear).
    Purge,
}

impl From<kv::Entry> for KvEntry {
    fn from(entry: kv::Entry) -> Self {
        Self {
            key: entry.key,
            value: entry.value,
            revision: entry.revision,
            operation: match entry.operation {
                Operation::Put => KvOperation::Put,
                Operation::Delete => KvOperation::Delete,
                Operation::Purge => KvOperation::Purge,
            },
        }
    }
}

/// A bucket's configuration and size.
#[derive(Clone, Debug)]
pub struct BucketStatus {
    /// The bucket name.
    pub bucket: String,
    /// Keys with a value, deletes included until compacted (the stream's message count).
    pub values: u64,
    /// How long a value lives (zero: forever).
    pub ttl: Duration,
    /// How many copies the cluster keeps.
    pub replicas: usize,
    /// Revisions kept per key.
    pub history: i64,
    /// The description.
    pub description: String,
}

fn bucket_err(bucket: &str) -> Result<(), KvError> {
    validate::bucket(bucket).map_err(|e| Error::with_source(KvErrorKind::InvalidBucket, e))
}

fn key_err(key: &str) -> Result<(), KvError> {
    validate::key(key).map_err(|e| Error::with_source(KvErrorKind::InvalidKey, e))
}

fn other(err: impl std::error::Error + Send + Sync + 'static) -> KvError {
    let kind = if err.to_string().contains("timed out") {
        KvErrorKind::TimedOut
    } else {
        KvErrorKind::JetStream
    };
    Error::with_source(kind, err)
}

impl Natty {
    fn check_value(&self, value: &Bytes) -> Result<(), KvError> {
        validate::payload(value.len(), self.max_payload())
            .map_err(|e| Error::with_source(KvErrorKind::PayloadTooLarge, e))
    }

    /// The cached handle of `bucket`; `None` when the bucket does not exist. Shared through an
    /// `Arc`: a `Store` carries the bucket's stream info, too much to copy on every call.
    pub(crate) async fn bucket(&self, bucket: &str) -> Result<Option<Arc<kv::Store>>, KvError> {
        bucket_err(bucket)?;
        if let Some(store) = self.cached(bucket) {
            return Ok(Some(store));
        }
        match self.jetstream().get_key_value(bucket).await {
            Ok(store) => Ok(Some(self.cache(bucket, store))),
            Err(err)
                if err.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket =>
            {
                let not_found = std::error::Error::source(&err)
                    .map(|s| s.to_string().contains("not found"))
                    .unwrap_or(false);
                if not_found {
                    Ok(None)
                } else {
                    Err(other(err))
                }
            }
            Err(err) => Err(other(err)),
        }
    }

    fn cached(&self, bucket: &str) -> Option<Arc<kv::Store>> {
        self.inner
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bucket)
            .cloned()
    }

    fn cache(&self, bucket: &str, store: kv::Store) -> Arc<kv::Store> {
        let store = Arc::new(store);
        self.inner
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket.to_owned(), Arc::clone(&store));
        store
    }

    fn forget(&self, bucket: &str) {
        self.inner
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(bucket);
    }

    async fn bucket_or_create(&self, bucket: &str) -> Result<Arc<kv::Store>, KvError> {
        if let Some(store) = self.bucket(bucket).await? {
            return Ok(store);
        }
        let store = self
            .jetstream()
            .create_key_value(self.bucket_config(bucket, Duration::ZERO, 1, ""))
            .await
            .map_err(other)?;
        Ok(self.cache(bucket, store))
    }

    pub(crate) fn bucket_config(
        &self,
        bucket: &str,
        ttl: Duration,
        replicas: usize,
        description: &str,
    ) -> kv::Config {
        kv::Config {
            bucket: bucket.to_owned(),
            description: description.to_owned(),
            max_age: ttl,
            num_replicas: replicas.max(1),
            history: 1,
            // Servers that can expire single keys also announce the expiry to watchers.
            limit_markers: self
                .supports_message_ttl()
                .then_some(Duration::from_secs(1)),
            ..Default::default()
        }
    }

    /// The value of `key`, or `None` when the bucket or key is missing or deleted.
    ///
    /// # Errors
    /// `InvalidBucket`/`InvalidKey` before sending; `TimedOut` or `JetStream` from the server.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, KvError> {
        key_err(key)?;
        match self.bucket(bucket).await? {
            Some(store) => store.get(key).await.map_err(other),
            None => Ok(None),
        }
    }

    /// The current entry of `key` with its revision, or `None`.
    ///
    /// # Errors
    /// See [`Natty::get`].
    pub async fn entry(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        key_err(key)?;
        match self.bucket(bucket).await? {
            Some(store) => Ok(store
                .entry(key)
                .await
                .map_err(other)?
                .filter(|e| e.operation == Operation::Put)
                .map(KvEntry::from)),
            None => Ok(None),
        }
    }

    /// Write `value` under `key` only if the key does not exist; creates the bucket when it
    /// is missing. Returns the revision.
    ///
    /// # Errors
    /// `AlreadyExists` when the key has a value; validation errors before sending.
    pub async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.create_maybe_ttl(bucket, key, value, None).await
    }

    /// Like [`Natty::create`], with a TTL for this key alone (servers 2.11 and later).
    ///
    /// # Errors
    /// `Unsupported` on an older server, and those of [`Natty::create`].
    pub async fn create_with_ttl(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<u64, KvError> {
        self.create_maybe_ttl(bucket, key, value, Some(ttl)).await
    }

    async fn create_maybe_ttl(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<u64, KvError> {
        bucket_err(bucket)?;
        key_err(key)?;
        self.check_value(&value)?;
        if ttl.is_some() {
            self.require_ttl()?;
        }
        let store = self.bucket_or_create(bucket).await?;
        let created = match ttl {
            Some(ttl) => store.create_with_ttl(key, value, ttl).await,
            None => store.create(key, value).await,
        };
        created.map_err(|err| match err.kind() {
            kv::CreateErrorKind::AlreadyExists => {
                Error::with_source(KvErrorKind::AlreadyExists, err)
            }
            _ => other(err),
        })
    }

    fn require_ttl(&self) -> Result<(), KvError> {
        if self.supports_message_ttl() {
            Ok(())
        } else {
            Err(Error::with_source(
                KvErrorKind::Unsupported,
                ValidationError::new(
                    "per-key ttl",
                    &self.server_version(),
                    "needs nats-server 2.11 or later",
                ),
            ))
        }
    }

    /// Write `value` under `key`, creating the bucket when it is missing. Returns the
    /// revision.
    ///
    /// # Errors
    /// Validation errors before sending; `TimedOut` or `JetStream` from the server.
    pub async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, KvError> {
        bucket_err(bucket)?;
        key_err(key)?;
        self.check_value(&value)?;
        let store = self.bucket_or_create(bucket).await?;
        store.put(key, value).await.map_err(other)
    }

    /// Write `value` under `key` only if its revision is still `revision` (compare-and-set).
    ///
    /// # Errors
    /// `Conflict` when the key changed since; `BucketNotFound` when the bucket is missing.
    pub async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, KvError> {
        key_err(key)?;
        self.check_value(&value)?;
        let store = self
            .bucket(bucket)
            .await?
            .ok_or_else(|| Error::new(KvErrorKind::BucketNotFound))?;
        store
            .update(key, value, revision)
            .await
            .map_err(|err| match err.kind() {
                kv::UpdateErrorKind::WrongLastRevision => {
                    Error::with_source(KvErrorKind::Conflict, err)
                }
                _ => other(err),
            })
    }

    /// Rewrite `key` with its current value if nobody changed it in between, refreshing its
    /// age against the bucket TTL. Returns the new revision.
    ///
    /// # Errors
    /// `KeyNotFound` when it has no value; `Conflict` when another writer got in between.
    pub async fn refresh(&self, bucket: &str, key: &str) -> Result<u64, KvError> {
        let entry = self
            .entry(bucket, key)
            .await?
            .ok_or_else(|| Error::new(KvErrorKind::KeyNotFound))?;
        self.update(bucket, key, entry.value, entry.revision).await
    }

    /// Delete `key`. A missing bucket or key is not an error.
    ///
    /// # Errors
    /// Validation errors before sending; `TimedOut` or `JetStream` from the server.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        key_err(key)?;
        match self.bucket(bucket).await? {
            Some(store) => store.delete(key).await.map_err(other),
            None => Ok(()),
        }
    }

    /// The keys with a value in `bucket` (empty when the bucket is missing or empty).
    ///
    /// # Errors
    /// `InvalidBucket` before sending; `TimedOut` or `JetStream` from the server.
    pub async fn keys(&self, bucket: &str) -> Result<Vec<String>, KvError> {
        match self.bucket(bucket).await? {
            Some(store) => store
                .keys()
                .await
                .map_err(other)?
                .try_collect()
                .await
                .map_err(other),
            None => Ok(Vec::new()),
        }
    }

    /// Create `bucket` whose values live for `ttl` (zero: forever), with `replicas` copies.
    ///
    /// # Errors
    /// `AlreadyExists` when the bucket exists; validation errors before sending.
    pub async fn create_bucket(
        &self,
        bucket: &str,
        ttl: Duration,
        replicas: usize,
        description: &str,
    ) -> Result<(), KvError> {
        if self.bucket(bucket).await?.is_some() {
            return Err(Error::new(KvErrorKind::AlreadyExists));
        }
        let store = self
            .jetstream()
            .create_key_value(self.bucket_config(bucket, ttl, replicas, description))
            .await
            .map_err(other)?;
        self.cache(bucket, store);
        Ok(())
    }

    /// Delete `bucket` and every key in it. A missing bucket is not an error.
    ///
    /// # Errors
    /// `InvalidBucket` before sending; `TimedOut` or `JetStream` from the server.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), KvError> {
        bucket_err(bucket)?;
        self.forget(bucket);
        match self.jetstream().delete_key_value(bucket).await {
            Ok(_) => Ok(()),
            Err(err) if err.to_string().contains("not found") => Ok(()),
            Err(err) => Err(other(err)),
        }
    }

    /// Configuration and size of `bucket`.
    ///
    /// # Errors
    /// `BucketNotFound` when it is missing.
    pub async fn status(&self, bucket: &str) -> Result<BucketStatus, KvError> {
        let store = self
            .bucket(bucket)
            .await?
            .ok_or_else(|| Error::new(KvErrorKind::BucketNotFound))?;
        // async-nats' `Store::status` answers from the info cached at open; ask afresh.
        let mut stream = store.stream.clone();
        let info = stream.info().await.map_err(other)?;
        let config = &info.config;
        Ok(BucketStatus {
            bucket: bucket.to_owned(),
            values: info.state.messages,
            ttl: config.max_age,
            replicas: config.num_replicas,
            history: config.max_messages_per_subject,
            description: config.description.clone().unwrap_or_default(),
        })
    }

    /// Every change in `bucket` from now on: puts, deletes and purges.
    ///
    /// # Errors
    /// `BucketNotFound` when it is missing.
    pub async fn watch_bucket(
        &self,
        bucket: &str,
    ) -> Result<impl Stream<Item = Result<KvEntry, KvError>> + Send + 'static, KvError> {
        let store = self
            .bucket(bucket)
            .await?
            .ok_or_else(|| Error::new(KvErrorKind::BucketNotFound))?;
        let watch = store.watch_all().await.map_err(other)?;
        Ok(watch.map(|entry| entry.map(KvEntry::from).map_err(other)))
    }

    /// Every change of `key`, starting with its current value if it has one.
    ///
    /// # Errors
    /// `BucketNotFound` when it is missing; `InvalidKey` before sending.
    pub async fn watch_key(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<impl Stream<Item = Result<KvEntry, KvError>> + Send + 'static, KvError> {
        key_err(key)?;
        let store = self
            .bucket(bucket)
            .await?
            .ok_or_else(|| Error::new(KvErrorKind::BucketNotFound))?;
        let watch = store.watch_with_history(key).await.map_err(other)?;
        Ok(watch.map(|entry| entry.map(KvEntry::from).map_err(other)))
    }
}
