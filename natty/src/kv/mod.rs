//! Key/value in the shape of Go natty's: buckets appear on first write, reads of missing keys
//! are `None`, deletes of missing things are no-ops, and `refresh` is a safe compare-and-set.
//!
//! [`Natty::bucket`](crate::Natty::bucket) checks a bucket name once and hands out a
//! [`Bucket`]: a cheap-to-clone handle that finds (or, on the first write, creates) the bucket
//! once and keeps it; every call on it only checks its key. The Go-shaped calls that take the
//! bucket name (`natty.get(bucket, key)`, ...) are thin shims over it on
//! [`GoNatty`](crate::compat::GoNatty).
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

mod bucket;
mod write;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::ErrorCode;
use bytes::Bytes;
use futures_util::Stream;

use crate::connection::Connection;
use crate::error::{api_error_code, timed_out, Error, KvErrorKind, ValidationError};
use crate::validate;

pub use bucket::Bucket;
pub use write::KvWrite;

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

pub(crate) fn bucket_err(bucket: &str) -> Result<(), KvError> {
    validate::bucket(bucket).map_err(|e| Error::with_source(KvErrorKind::InvalidBucket, e))
}

pub(crate) fn key_err(key: &str) -> Result<(), KvError> {
    validate::key(key).map_err(|e| Error::with_source(KvErrorKind::InvalidKey, e))
}

/// A server's answer as natty's kind, by async-nats' kind (never the error's text).
pub(crate) fn other(err: impl std::error::Error + Send + Sync + 'static) -> KvError {
    let kind = if timed_out(&err) {
        KvErrorKind::TimedOut
    } else {
        KvErrorKind::JetStream
    };
    Error::with_source(kind, err)
}

/// Whether the server said the bucket's stream does not exist.
pub(crate) fn stream_not_found(err: &(dyn std::error::Error + 'static)) -> bool {
    api_error_code(err) == Some(ErrorCode::STREAM_NOT_FOUND)
}

/// Whether `get_key_value` failed because the bucket does not exist.
fn missing_bucket(err: &async_nats::jetstream::context::KeyValueError) -> bool {
    err.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket
        && stream_not_found(err)
}

/// A watch of a bucket or a key: the changes from [`Bucket::watch`] and [`Bucket::watch_key`].
pub type Watch = std::pin::Pin<Box<dyn Stream<Item = Result<KvEntry, KvError>> + Send>>;

impl Connection {
    /// The store of `bucket`, from the cache or the server; `None` when the bucket does not
    /// exist. Shared through an `Arc`: a `Store` carries the bucket's stream info, too much
    /// to copy on every call.
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

    pub(crate) fn cached(&self, bucket: &str) -> Option<Arc<kv::Store>> {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bucket)
            .cloned()
    }

    pub(crate) fn cache(&self, bucket: &str, store: kv::Store) -> Arc<kv::Store> {
        let store = Arc::new(store);
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bucket.to_owned(), Arc::clone(&store));
        store
    }

    pub(crate) fn forget(&self, bucket: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(bucket);
    }

    pub(crate) fn check_value(&self, value: &Bytes) -> Result<(), KvError> {
        validate::payload(value.len(), self.server().max_payload())
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
                .server()
                .supports_message_ttl()
                .then_some(Duration::from_secs(1)),
            ..Default::default()
        }
    }

    pub(crate) fn require_ttl(&self) -> Result<(), KvError> {
        if self.server().supports_message_ttl() {
            Ok(())
        } else {
            Err(Error::with_source(
                KvErrorKind::Unsupported,
                ValidationError::new(
                    "per-key ttl",
                    &self.server().version(),
                    "needs nats-server 2.11 or later",
                ),
            ))
        }
    }
}
