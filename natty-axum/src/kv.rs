//! [`Kv`]: key/value access from handlers, limited to the buckets the application allowed.
//!
//! [`Kv::bucket`] hands out a [`Bucket`] only for an allowed name (403 otherwise), so request
//! input can never pick another bucket. Keys are checked by natty before anything is sent: a
//! bad key from a path or body is a 400, a missing one a 404 from [`Bucket::get`], a lost
//! compare-and-set a 409, an oversized value a 413, and a NATS outage a 503.
//!
//! # Example
//! ```no_run
//! use axum::{extract::Path, routing::get, Router};
//! use natty_axum::{rejection::KvRejection, Kv, NattyState};
//!
//! async fn status(kv: Kv, Path(id): Path<String>) -> Result<String, KvRejection> {
//!     let value = kv.bucket("order_status")?.get(&id).await?; // 400, 404, 503, ...
//!     Ok(String::from_utf8_lossy(&value).into_owned())
//! }
//!
//! # fn app(state: NattyState) -> Router {
//! Router::new().route("/orders/{id}", get(status)).with_state(state)
//! # }
//! ```

use std::convert::Infallible;

use axum::extract::{FromRef, FromRequestParts};
use bytes::Bytes;
use http::request::Parts;
use natty::error::KvErrorKind;
use natty::{ConnectionState, KvEntry, KvError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::rejection::{
    cause, BucketOutOfScope, InvalidKey, InvalidStoredValue, KeyConflict, KeyNotFound, KvRejection,
    NatsFailure, NatsTimeout, NatsUnavailable, PayloadTooLarge, ValueNotSerializable,
};
use crate::subject::shorten;
use crate::NattyState;

/// A key/value handle scoped to the buckets the application allowed; an extractor. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct Kv {
    state: NattyState,
}

impl<S> FromRequestParts<S> for Kv
where
    NattyState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::new(NattyState::from_ref(state)))
    }
}

impl Kv {
    pub(crate) fn new(state: NattyState) -> Self {
        Self { state }
    }

    /// The bucket `name`, if the application allowed it.
    ///
    /// # Errors
    /// [`BucketOutOfScope`] (403) for any other name.
    pub fn bucket(&self, name: &str) -> Result<Bucket, BucketOutOfScope> {
        if let Some(bucket) = self.state.bucket(name) {
            Ok(Bucket {
                state: self.state.clone(),
                bucket: bucket.clone(),
            })
        } else {
            Err(BucketOutOfScope::with_detail(format_args!(
                "bucket {:?} is not in the allowed buckets",
                shorten(name)
            )))
        }
    }
}

/// One allowed bucket, from [`Kv::bucket`]: natty's [`natty::Bucket`] handle, found once for
/// the whole application. Every call checks the key and the connection before sending.
#[derive(Clone, Debug)]
pub struct Bucket {
    state: NattyState,
    bucket: natty::Bucket,
}

impl Bucket {
    /// The bucket's name.
    pub fn name(&self) -> &str {
        self.bucket.name()
    }

    /// natty's handle of the bucket, for what this scoped one does not offer (watches,
    /// status). It reaches only this bucket.
    pub fn inner(&self) -> &natty::Bucket {
        &self.bucket
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// 404 [`KeyNotFound`] when it has no value (or the bucket does not exist yet), 400
    /// [`InvalidKey`], 503 [`NatsUnavailable`] when disconnected, 504 [`NatsTimeout`] when
    /// NATS did not answer in time, 500 [`NatsFailure`].
    pub async fn get(&self, key: &str) -> Result<Bytes, KvRejection> {
        self.connected()?;
        match self.bucket.get(key).await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(not_found(key)),
            Err(err) => Err(self.rejection(err)),
        }
    }

    /// The current entry of `key`, with its revision (for [`Bucket::update`]).
    ///
    /// # Errors
    /// See [`Bucket::get`].
    pub async fn entry(&self, key: &str) -> Result<KvEntry, KvRejection> {
        self.connected()?;
        match self.bucket.entry(key).await {
            Ok(Some(entry)) => Ok(entry),
            Ok(None) => Err(not_found(key)),
            Err(err) => Err(self.rejection(err)),
        }
    }

    /// The value of `key`, decoded from JSON.
    ///
    /// # Errors
    /// Those of [`Bucket::get`], and 500 [`InvalidStoredValue`] when it does not decode as `T`.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<T, KvRejection> {
        let value = self.get(key).await?;
        serde_json::from_slice(&value).map_err(|err| {
            let cause = format!("bucket {:?} key {:?}: {err}", self.name(), shorten(key));
            InvalidStoredValue::with_cause(cause).into()
        })
    }

    /// Write `value` under `key` (the bucket is created on first write). Returns the revision.
    ///
    /// # Errors
    /// 400 [`InvalidKey`], 413 [`PayloadTooLarge`], 503 [`NatsUnavailable`] when disconnected,
    /// 504 [`NatsTimeout`] when NATS did not answer in time (the value may be written), 500
    /// [`NatsFailure`].
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, KvRejection> {
        self.connected()?;
        self.bucket
            .put(key, value.into())
            .await
            .map_err(|err| self.rejection(err))
    }

    /// Write `value` as JSON under `key`. Returns the revision.
    ///
    /// # Errors
    /// See [`Bucket::put`]; 500 [`ValueNotSerializable`] when `value` does not serialize.
    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<u64, KvRejection> {
        let value = serde_json::to_vec(value).map_err(ValueNotSerializable::with_cause)?;
        self.put(key, value).await
    }

    /// Write `value` under `key` only if the key has no value. Returns the revision.
    ///
    /// # Errors
    /// 409 [`KeyConflict`] when it has one, and those of [`Bucket::put`].
    pub async fn create(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, KvRejection> {
        self.connected()?;
        self.bucket
            .create(key, value.into())
            .await
            .map_err(|err| self.rejection(err))
    }

    /// Write `value` under `key` only if its revision is still `revision`. Returns the new
    /// revision.
    ///
    /// # Errors
    /// 409 [`KeyConflict`] when the key changed since, and those of [`Bucket::put`].
    pub async fn update(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        revision: u64,
    ) -> Result<u64, KvRejection> {
        self.connected()?;
        self.bucket
            .update(key, value.into(), revision)
            .await
            .map_err(|err| self.rejection(err))
    }

    /// Delete `key`; a missing key is not an error.
    ///
    /// # Errors
    /// 400 [`InvalidKey`], 503 [`NatsUnavailable`] when disconnected, 504 [`NatsTimeout`] when
    /// NATS did not answer in time, 500 [`NatsFailure`].
    pub async fn delete(&self, key: &str) -> Result<(), KvRejection> {
        self.connected()?;
        self.bucket
            .delete(key)
            .await
            .map_err(|err| self.rejection(err))
    }

    /// The keys that have a value (empty while the bucket does not exist).
    ///
    /// # Errors
    /// 503 [`NatsUnavailable`] when disconnected, 504 [`NatsTimeout`] when NATS did not answer
    /// in time, 500 [`NatsFailure`].
    pub async fn keys(&self) -> Result<Vec<String>, KvRejection> {
        self.connected()?;
        self.bucket.keys().await.map_err(|err| self.rejection(err))
    }

    /// A disconnected client would wait for its request timeout; answer 503 at once instead.
    fn connected(&self) -> Result<(), NatsUnavailable> {
        match self.state.natty().connection_state() {
            ConnectionState::Connected => Ok(()),
            _ => Err(NatsUnavailable::new(
                self.state.retry_after_secs(),
                "not connected",
                None,
            )),
        }
    }

    fn rejection(&self, err: KvError) -> KvRejection {
        let retry_after = self.state.retry_after_secs();
        let unavailable = |reason, err: KvError| {
            NatsUnavailable::new(retry_after, reason, Some(err.into())).into()
        };
        match err.kind() {
            KvErrorKind::InvalidKey => InvalidKey::with_detail(cause(&err)).into(),
            KvErrorKind::PayloadTooLarge => PayloadTooLarge::with_detail(cause(&err)).into(),
            KvErrorKind::KeyNotFound | KvErrorKind::BucketNotFound => {
                KeyNotFound::with_detail(err).into()
            }
            KvErrorKind::AlreadyExists | KvErrorKind::Conflict => {
                KeyConflict::with_detail(err).into()
            }
            _ if self.connected().is_err() => unavailable("not connected", err),
            KvErrorKind::TimedOut => NatsTimeout::with_cause(err).into(),
            _ => NatsFailure::with_cause(err).into(),
        }
    }
}

fn not_found(key: &str) -> KvRejection {
    KeyNotFound::with_detail(format_args!("key {:?} has no value", shorten(key))).into()
}
