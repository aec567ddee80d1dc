//! Key/value in the shape of Go natty's: buckets appear on first write, reads of missing keys
//! are `None`, deletes of missing things are no-ops, and `refresh` is a safe compare-and-set.
//!
//! [`Natty::bucket`] checks a bucket name once and hands out a [`Bucket`]: a cheap-to-clone
//! handle that finds (or, on the first write, creates) the bucket once and keeps it; every
//! call on it only checks its key. The Go-shaped calls that take the bucket name
//! ([`Natty::get`], [`Natty::put`], ...) are thin shims over it.
//!
//! # Example
//! ```no_run
//! # async fn run(natty: natty::Natty) -> Result<(), Box<dyn std::error::Error>> {
//! let sessions = natty.bucket("sessions")?;        // the name is checked here, once
//! sessions.put("user.42", "online").await?;        // the bucket is created on first write
//! assert_eq!(sessions.get("user.42").await?.as_deref(), Some(&b"online"[..]));
//! sessions.refresh("user.42").await?;              // rewrites it only if nobody else did
//! sessions.delete("user.42").await?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::ErrorCode;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::error::{api_error_code, timed_out, Error, KvErrorKind, ValidationError};
use crate::{validate, Natty};

/// The error of a key/value call.
pub type KvError = Error<KvErrorKind>;

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub enum KvOperation {
    /// A value was written.
    Put,
    /// The key was deleted.
    Delete,
    /// The key's history was purged (also how expiries appear).
    Purge,
}

impl From<kv::Entry> for KvEntry {
    /// Escape hatch: an entry read through async-nats' own store. Takes async-nats' own type,
    /// so it may change with async-nats releases.
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
#[non_exhaustive]
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

/// A server's answer as natty's kind, by async-nats' kind (never the error's text).
fn other(err: impl std::error::Error + Send + Sync + 'static) -> KvError {
    let kind = if timed_out(&err) {
        KvErrorKind::TimedOut
    } else {
        KvErrorKind::JetStream
    };
    Error::with_source(kind, err)
}

/// Whether the server said the bucket's stream does not exist.
fn stream_not_found(err: &(dyn std::error::Error + 'static)) -> bool {
    api_error_code(err) == Some(ErrorCode::STREAM_NOT_FOUND)
}

/// Whether `get_key_value` failed because the bucket does not exist.
fn missing_bucket(err: &async_nats::jetstream::context::KeyValueError) -> bool {
    err.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket
        && stream_not_found(err)
}

/// A watch of a bucket or a key: the changes from [`Bucket::watch`] and [`Bucket::watch_key`].
pub type Watch = std::pin::Pin<Box<dyn Stream<Item = Result<KvEntry, KvError>> + Send>>;

/// A key/value bucket, its name checked once; from [`Natty::bucket`]. Cheap to clone: clones
/// share the bucket once found. See the [module docs](self).
#[derive(Clone)]
pub struct Bucket {
    natty: Natty,
    name: Arc<str>,
    store: Arc<OnceCell<Arc<kv::Store>>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("found", &self.store.initialized())
            .finish()
    }
}

impl Natty {
    /// The bucket `name`, checked now (`[A-Za-z0-9_-]+`); nothing is sent until its first
    /// call, which finds the bucket (or, for a write, creates it) once for every clone.
    ///
    /// # Errors
    /// `InvalidBucket`.
    pub fn bucket(&self, name: &str) -> Result<Bucket, KvError> {
        bucket_err(name)?;
        let store = OnceCell::new_with(self.cached(name));
        Ok(Bucket {
            natty: self.clone(),
            name: Arc::from(name),
            store: Arc::new(store),
        })
    }

    /// The store of `bucket`, from the client's cache or the server; `None` when the bucket
    /// does not exist. Shared through an `Arc`: a `Store` carries the bucket's stream info,
    /// too much to copy on every call.
    pub(crate) async fn store(&self, bucket: &str) -> Result<Option<Arc<kv::Store>>, KvError> {
        bucket_err(bucket)?;
        if let Some(store) = self.cached(bucket) {
            return Ok(Some(store));
        }
        match self.jetstream().get_key_value(bucket).await {
            Ok(store) => Ok(Some(self.cache(bucket, store))),
            Err(err) if missing_bucket(&err) => Ok(None),
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

    fn check_value(&self, value: &Bytes) -> Result<(), KvError> {
        validate::payload(value.len(), self.max_payload())
            .map_err(|e| Error::with_source(KvErrorKind::PayloadTooLarge, e))
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

    /// Go natty's `Get`: [`Bucket::get`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::get`].
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, KvError> {
        self.bucket(bucket)?.get(key).await
    }

    /// [`Bucket::entry`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::entry`].
    pub async fn entry(&self, bucket: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        self.bucket(bucket)?.entry(key).await
    }

    /// Go natty's `Create`: [`Bucket::create`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::create`].
    pub async fn create(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.bucket(bucket)?.create(key, value).await
    }

    /// [`Bucket::create_with_ttl`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::create_with_ttl`].
    pub async fn create_with_ttl(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<u64, KvError> {
        self.bucket(bucket)?.create_with_ttl(key, value, ttl).await
    }

    /// Go natty's `Put`: [`Bucket::put`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::put`].
    pub async fn put(&self, bucket: &str, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.bucket(bucket)?.put(key, value).await
    }

    /// [`Bucket::update`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::update`].
    pub async fn update(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, KvError> {
        self.bucket(bucket)?.update(key, value, revision).await
    }

    /// Go natty's `Refresh`: [`Bucket::refresh`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::refresh`].
    pub async fn refresh(&self, bucket: &str, key: &str) -> Result<u64, KvError> {
        self.bucket(bucket)?.refresh(key).await
    }

    /// Go natty's `Delete`: [`Bucket::delete`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::delete`].
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        self.bucket(bucket)?.delete(key).await
    }

    /// Go natty's `Keys`: [`Bucket::keys`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::keys`].
    pub async fn keys(&self, bucket: &str) -> Result<Vec<String>, KvError> {
        self.bucket(bucket)?.keys().await
    }

    /// Go natty's `Status`: [`Bucket::status`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::status`].
    pub async fn status(&self, bucket: &str) -> Result<BucketStatus, KvError> {
        self.bucket(bucket)?.status().await
    }

    /// Go natty's `WatchBucket`: [`Bucket::watch`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::watch`].
    pub async fn watch_bucket(&self, bucket: &str) -> Result<Watch, KvError> {
        self.bucket(bucket)?.watch().await
    }

    /// Go natty's `WatchKey`: [`Bucket::watch_key`] on `bucket`.
    ///
    /// # Errors
    /// `InvalidBucket`, and those of [`Bucket::watch_key`].
    pub async fn watch_key(&self, bucket: &str, key: &str) -> Result<Watch, KvError> {
        self.bucket(bucket)?.watch_key(key).await
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
        if self.store(bucket).await?.is_some() {
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

    /// Delete `bucket` and every key in it. A missing bucket is not an error. [`Bucket`]
    /// handles taken before keep the deleted bucket: take new ones.
    ///
    /// # Errors
    /// `InvalidBucket` before sending; `TimedOut` or `JetStream` from the server.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), KvError> {
        bucket_err(bucket)?;
        self.forget(bucket);
        match self.jetstream().delete_key_value(bucket).await {
            Ok(_) => Ok(()),
            Err(err) if stream_not_found(&err) => Ok(()),
            Err(err) => Err(other(err)),
        }
    }
}

impl Bucket {
    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bucket's store, found once; `None` while the bucket does not exist.
    async fn found(&self) -> Result<Option<Arc<kv::Store>>, KvError> {
        if let Some(store) = self.store.get() {
            return Ok(Some(Arc::clone(store)));
        }
        let store = self.natty.store(&self.name).await?;
        if let Some(store) = &store {
            let _ = self.store.set(Arc::clone(store));
        }
        Ok(store)
    }

    /// The bucket's store, created (no TTL, one replica) when it does not exist.
    async fn found_or_created(&self) -> Result<Arc<kv::Store>, KvError> {
        self.store
            .get_or_try_init(|| async {
                if let Some(store) = self.natty.store(&self.name).await? {
                    return Ok(store);
                }
                let config = self.natty.bucket_config(&self.name, Duration::ZERO, 1, "");
                let store = self
                    .natty
                    .jetstream()
                    .create_key_value(config)
                    .await
                    .map_err(other)?;
                Ok(self.natty.cache(&self.name, store))
            })
            .await
            .cloned()
    }

    async fn existing(&self) -> Result<Arc<kv::Store>, KvError> {
        self.found()
            .await?
            .ok_or_else(|| Error::new(KvErrorKind::BucketNotFound))
    }

    /// The value of `key`, or `None` when the bucket or key is missing or deleted.
    ///
    /// # Errors
    /// `InvalidKey` before sending; `TimedOut` or `JetStream` from the server.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        key_err(key)?;
        match self.found().await? {
            Some(store) => store.get(key).await.map_err(other),
            None => Ok(None),
        }
    }

    /// The current entry of `key` with its revision, or `None`.
    ///
    /// # Errors
    /// See [`Bucket::get`].
    pub async fn entry(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        key_err(key)?;
        match self.found().await? {
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
    pub async fn create(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, KvError> {
        self.create_maybe_ttl(key, value.into(), None).await
    }

    /// Like [`Bucket::create`], with a TTL for this key alone (servers 2.11 and later).
    ///
    /// # Errors
    /// `Unsupported` on an older server, and those of [`Bucket::create`].
    pub async fn create_with_ttl(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<u64, KvError> {
        self.create_maybe_ttl(key, value.into(), Some(ttl)).await
    }

    async fn create_maybe_ttl(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<u64, KvError> {
        key_err(key)?;
        self.natty.check_value(&value)?;
        if ttl.is_some() {
            self.natty.require_ttl()?;
        }
        let store = self.found_or_created().await?;
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

    /// Write `value` under `key`, creating the bucket when it is missing. Returns the
    /// revision.
    ///
    /// # Errors
    /// Validation errors before sending; `TimedOut` or `JetStream` from the server.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, KvError> {
        let value = value.into();
        key_err(key)?;
        self.natty.check_value(&value)?;
        let store = self.found_or_created().await?;
        store.put(key, value).await.map_err(other)
    }

    /// Write `value` under `key` only if its revision is still `revision` (compare-and-set).
    ///
    /// # Errors
    /// `Conflict` when the key changed since; `BucketNotFound` when the bucket is missing.
    pub async fn update(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        revision: u64,
    ) -> Result<u64, KvError> {
        let value = value.into();
        key_err(key)?;
        self.natty.check_value(&value)?;
        let store = self.existing().await?;
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
    pub async fn refresh(&self, key: &str) -> Result<u64, KvError> {
        let entry = self
            .entry(key)
            .await?
            .ok_or_else(|| Error::new(KvErrorKind::KeyNotFound))?;
        self.update(key, entry.value, entry.revision).await
    }

    /// Delete `key`. A missing bucket or key is not an error.
    ///
    /// # Errors
    /// `InvalidKey` before sending; `TimedOut` or `JetStream` from the server.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        key_err(key)?;
        match self.found().await? {
            Some(store) => store.delete(key).await.map_err(other),
            None => Ok(()),
        }
    }

    /// The keys with a value (empty when the bucket is missing or empty).
    ///
    /// # Errors
    /// `TimedOut` or `JetStream` from the server.
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        match self.found().await? {
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

    /// Configuration and size of the bucket, asked afresh.
    ///
    /// # Errors
    /// `BucketNotFound` when it is missing.
    pub async fn status(&self) -> Result<BucketStatus, KvError> {
        let store = self.existing().await?;
        // async-nats' `Store::status` answers from the info cached at open; ask afresh.
        let mut stream = store.stream.clone();
        let info = stream.info().await.map_err(other)?;
        let config = &info.config;
        Ok(BucketStatus {
            bucket: self.name.to_string(),
            values: info.state.messages,
            ttl: config.max_age,
            replicas: config.num_replicas,
            history: config.max_messages_per_subject,
            description: config.description.clone().unwrap_or_default(),
        })
    }

    /// Every change in the bucket from now on: puts, deletes and purges.
    ///
    /// # Errors
    /// `BucketNotFound` when it is missing.
    pub async fn watch(&self) -> Result<Watch, KvError> {
        let store = self.existing().await?;
        let watch = store.watch_all().await.map_err(other)?;
        Ok(Box::pin(
            watch.map(|entry| entry.map(KvEntry::from).map_err(other)),
        ))
    }

    /// Every change of `key`, starting with its current value if it has one.
    ///
    /// # Errors
    /// `BucketNotFound` when it is missing; `InvalidKey` before sending.
    pub async fn watch_key(&self, key: &str) -> Result<Watch, KvError> {
        key_err(key)?;
        let store = self.existing().await?;
        let watch = store.watch_with_history(key).await.map_err(other)?;
        Ok(Box::pin(
            watch.map(|entry| entry.map(KvEntry::from).map_err(other)),
        ))
    }
}
