//! [`Bucket`], the handle of one key/value bucket.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::{
    bucket_err, key_err, other, stream_not_found, BucketStatus, KvEntry, KvError, KvWrite, Watch,
};
use crate::connection::Connection;
use crate::error::{BatchErrorKind, Error, KvErrorKind};
use crate::publish::{self, Batch, OutgoingMessage};

/// A key/value bucket, its name checked once; from [`Natty::bucket`](crate::Natty::bucket). Cheap to clone: clones
/// share the bucket once found. See the [module docs](super).
#[derive(Clone)]
pub struct Bucket {
    connection: Arc<Connection>,
    name: Arc<str>,
    store: Arc<OnceCell<Arc<kv::Store>>>,
    /// Set once the bucket's stream allows atomic batches ([`Bucket::write_all`]).
    atomic: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("found", &self.store.initialized())
            .finish()
    }
}

impl Bucket {
    /// The handle of bucket `name`, checked here; see [`Natty::bucket`](crate::Natty::bucket).
    pub(crate) fn open(connection: &Arc<Connection>, name: &str) -> Result<Self, KvError> {
        bucket_err(name)?;
        let store = OnceCell::new_with(connection.cached(name));
        Ok(Self {
            connection: Arc::clone(connection),
            name: Arc::from(name),
            store: Arc::new(store),
            atomic: Arc::new(OnceCell::new()),
        })
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bucket's store, found once; `None` while the bucket does not exist.
    async fn found(&self) -> Result<Option<Arc<kv::Store>>, KvError> {
        if let Some(store) = self.store.get() {
            return Ok(Some(Arc::clone(store)));
        }
        let store = self.connection.store(&self.name).await?;
        if let Some(store) = &store {
            let _ = self.store.set(Arc::clone(store));
        }
        Ok(store)
    }

    /// The bucket's store, created (no TTL, one replica) when it does not exist.
    async fn found_or_created(&self) -> Result<Arc<kv::Store>, KvError> {
        self.store
            .get_or_try_init(|| async {
                if let Some(store) = self.connection.store(&self.name).await? {
                    return Ok(store);
                }
                let config = self
                    .connection
                    .bucket_config(&self.name, Duration::ZERO, 1, "");
                let store = self
                    .connection
                    .jetstream()
                    .create_key_value(config)
                    .await
                    .map_err(other)?;
                Ok(self.connection.cache(&self.name, store))
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
        self.connection.check_value(&value)?;
        if ttl.is_some() {
            self.connection.require_ttl()?;
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
        self.connection.check_value(&value)?;
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
        self.connection.check_value(&value)?;
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

    /// Create the bucket, its values living for `ttl` (zero: forever), with `replicas`
    /// copies. Writes create a missing bucket with no TTL and one replica; this is for
    /// anything else.
    ///
    /// # Errors
    /// `AlreadyExists` when the bucket exists; `TimedOut` or `JetStream` from the server.
    pub async fn create_bucket(
        &self,
        ttl: Duration,
        replicas: usize,
        description: &str,
    ) -> Result<(), KvError> {
        if self.connection.store(&self.name).await?.is_some() {
            return Err(Error::new(KvErrorKind::AlreadyExists));
        }
        let config = self
            .connection
            .bucket_config(&self.name, ttl, replicas, description);
        let store = self
            .connection
            .jetstream()
            .create_key_value(config)
            .await
            .map_err(other)?;
        let store = self.connection.cache(&self.name, store);
        let _ = self.store.set(store);
        Ok(())
    }

    /// Write several keys at once, all or none (nats-server 2.12.1+): one atomic batch on the
    /// bucket's stream, each key's write checked against its expected revision, if it has
    /// one, against the bucket as it was before the batch. Returns each key's new revision, in
    /// order. Creates a missing bucket, and turns on its stream's `allow_atomic` on the first
    /// call (async-nats creates buckets without it). Up to 1,000 keys (the server's batch
    /// limit), each at most once.
    ///
    /// # Errors
    /// `InvalidKey` (also for a key given twice), `PayloadTooLarge` and `Unsupported` (older
    /// servers) before sending; `Conflict` when a key is not at its expected revision (nothing
    /// is written); `TimedOut` when the answer did not come in time (then all or none was
    /// written); `JetStream` for the rest.
    ///
    /// # Example
    /// ```no_run
    /// use natty::error::KvErrorKind;
    /// use natty::KvWrite;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let natty = natty::Natty::connect(natty::Config::from_env()).await?;
    /// let stock = natty.bucket("stock")?;
    /// let tea = stock.entry("tea").await?.map_or(0, |entry| entry.revision);
    /// let moved = stock
    ///     .write_all([
    ///         KvWrite::put("tea", "8").if_revision(tea),
    ///         KvWrite::put("reserved.o-7", "tea").if_missing(),
    ///     ])
    ///     .await;
    /// match moved {
    ///     Ok(revisions) => println!("written at {revisions:?}"),
    ///     Err(err) if err.kind() == KvErrorKind::Conflict => println!("someone was faster"),
    ///     Err(err) => return Err(err.into()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn write_all(
        &self,
        writes: impl IntoIterator<Item = KvWrite>,
    ) -> Result<Vec<u64>, KvError> {
        let writes: Vec<KvWrite> = writes.into_iter().collect();
        let mut keys = std::collections::HashSet::new();
        for write in &writes {
            key_err(&write.key)?;
            if !keys.insert(write.key.as_str()) {
                return Err(Error::with_source(
                    KvErrorKind::InvalidKey,
                    format!("{:?} is written twice in one write_all", write.key),
                ));
            }
            if let Some(value) = &write.value {
                self.connection.check_value(value)?;
            }
        }
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        if !self.connection.server().supports_atomic_batch() {
            return Err(Error::with_source(
                KvErrorKind::Unsupported,
                "writing several keys at once needs nats-server 2.12.1 or later",
            ));
        }
        let store = self.found_or_created().await?;
        self.allow_atomic(&store).await?;
        let prefix = store.put_prefix.as_deref().unwrap_or(&store.prefix);
        let batch: Batch = writes
            .iter()
            .map(|write| {
                let subject = format!("{prefix}{}", write.key);
                let mut message = match &write.value {
                    Some(value) => OutgoingMessage::new(subject, value.clone()),
                    None => {
                        OutgoingMessage::new(subject, Bytes::new()).header("KV-Operation", "DEL")
                    }
                };
                if let Some(revision) = write.revision {
                    message
                        .headers_mut()
                        .insert("Nats-Expected-Last-Subject-Sequence", revision.to_string());
                }
                message
            })
            .collect();
        let answers = &self.connection.batch_answers;
        match publish::batch::publish(self.connection.client(), answers, &batch).await {
            Ok(ack) => Ok(ack.sequences().collect()),
            Err(err) => Err(match err.kind() {
                BatchErrorKind::WrongLastSequence => Error::with_source(KvErrorKind::Conflict, err),
                BatchErrorKind::TimedOut => Error::with_source(KvErrorKind::TimedOut, err),
                BatchErrorKind::Unsupported => Error::with_source(KvErrorKind::Unsupported, err),
                _ => Error::with_source(KvErrorKind::JetStream, err),
            }),
        }
    }

    /// Turn on atomic batches on the bucket's stream, once per handle.
    async fn allow_atomic(&self, store: &kv::Store) -> Result<(), KvError> {
        self.atomic
            .get_or_try_init(|| async {
                let mut stream = store.stream.clone();
                let info = stream.info().await.map_err(other)?;
                if info.config.allow_atomic_publish {
                    return Ok(());
                }
                let mut config = info.config.clone();
                config.allow_atomic_publish = true;
                self.connection
                    .jetstream()
                    .update_stream(config)
                    .await
                    .map(drop)
                    .map_err(other)
            })
            .await
            .map(drop)
    }

    /// Delete the bucket and every key in it. A missing bucket is not an error. This handle
    /// and its clones keep the deleted bucket's store: take a new handle from
    /// [`Natty::bucket`](crate::Natty::bucket) to use the name again.
    ///
    /// # Errors
    /// `TimedOut` or `JetStream` from the server.
    pub async fn delete_bucket(&self) -> Result<(), KvError> {
        self.connection.forget(&self.name);
        match self
            .connection
            .jetstream()
            .delete_key_value(&*self.name)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if stream_not_found(&err) => Ok(()),
            Err(err) => Err(other(err)),
        }
    }
}
