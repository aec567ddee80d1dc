//! [`IdempotencyKey`]: the `Idempotency-Key` request header, checked, ready to become the
//! message's `Nats-Msg-Id`.
//!
//! A client that retries a request after a timeout sends the same key; publishing with it as
//! `Nats-Msg-Id` lets the stream keep one copy (inside its duplicate window). Extract
//! `IdempotencyKey` to require the header, or `Option<IdempotencyKey>` to accept requests
//! without it; a present but malformed header is a 400 either way.
//!
//! # Example
//! ```no_run
//! use axum::{routing::post, Router};
//! use natty_axum::{rejection::PublishRejection, IdempotencyKey, NattyState, AckedPublisher};
//!
//! async fn create(
//!     publisher: AckedPublisher,
//!     key: Option<IdempotencyKey>,
//!     body: bytes::Bytes,
//! ) -> Result<&'static str, PublishRejection> {
//!     let headers = key.map(|key| key.to_headers()).unwrap_or_default();
//!     let ack = publisher.publish_acked_with_headers("orders.created", headers, body).await?;
//!     Ok(if ack.duplicate { "already stored" } else { "stored" })
//! }
//!
//! # fn app(state: NattyState) -> Router {
//! Router::new().route("/orders", post(create)).with_state(state)
//! # }
//! ```

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use http::HeaderName;
use natty::header::{HeaderMap, NATS_MESSAGE_ID};

use crate::rejection::{IdempotencyKeyRejection, InvalidIdempotencyKey, MissingIdempotencyKey};

/// The request header read by [`IdempotencyKey`].
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The longest key accepted, in bytes.
const MAX_LEN: usize = 128;

/// A checked `Idempotency-Key` header: 1 to 128 visible ASCII characters. An extractor; see
/// the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Check `value` as an idempotency key.
    ///
    /// # Errors
    /// [`InvalidIdempotencyKey`] when it is empty, longer than 128 bytes, or has characters
    /// other than visible ASCII.
    pub fn new(value: &str) -> Result<Self, InvalidIdempotencyKey> {
        if value.is_empty() || value.len() > MAX_LEN {
            return Err(InvalidIdempotencyKey::with_detail(format_args!(
                "must be 1 to {MAX_LEN} characters"
            )));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidIdempotencyKey::with_detail(
                "must be visible ASCII characters without spaces",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Headers carrying the key as `Nats-Msg-Id`, for
    /// [`AckedPublisher::publish_acked_with_headers`](crate::AckedPublisher::publish_acked_with_headers).
    pub fn to_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, self.0.as_str());
        headers
    }

    fn from_parts(parts: &Parts) -> Result<Option<Self>, InvalidIdempotencyKey> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(None);
        };
        let value = value.to_str().map_err(|_| {
            InvalidIdempotencyKey::with_detail("must be visible ASCII characters without spaces")
        })?;
        Self::new(value).map(Some)
    }
}

impl<S> FromRequestParts<S> for IdempotencyKey
where
    S: Send + Sync,
{
    type Rejection = IdempotencyKeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_parts(parts)?.ok_or_else(|| MissingIdempotencyKey::new().into())
    }
}

impl<S> OptionalFromRequestParts<S> for IdempotencyKey
where
    S: Send + Sync,
{
    type Rejection = InvalidIdempotencyKey;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Self::from_parts(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::IdempotencyKey;

    #[test]
    fn keys() {
        assert_eq!(IdempotencyKey::new("a-1_B").unwrap().as_str(), "a-1_B");
        let long = "k".repeat(129);
        for bad in ["", "a b", "é", long.as_str()] {
            assert!(IdempotencyKey::new(bad).is_err(), "{bad:?}");
        }
        let headers = IdempotencyKey::new("abc").unwrap().to_headers();
        assert_eq!(headers.get("Nats-Msg-Id"), Some("abc"));
    }
}
