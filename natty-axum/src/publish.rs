//! [`AckedPublisher`]: publish to JetStream from a handler, inside the subjects the application
//! allowed, and wait for the stream's acknowledgement.
//!
//! Every publish is checked before anything is sent: the subject must be a valid publish
//! subject (400), not reserved and inside the allowed filters (403), the payload no larger
//! than the server's `max_payload` (413), and the client connected (503). Then natty's
//! publish service ([`natty::Publisher`]) sends it with a `Nats-Msg-Id` (yours, from
//! [`IdempotencyKey`](crate::IdempotencyKey), or a fresh one) on the batched pipeline and
//! retries under that id, so the stream stores it once; the handler waits for queue room and
//! then for the stream's ack.
//!
//! # Example
//! ```no_run
//! use axum::{extract::Path, routing::post, Router};
//! use natty_axum::{rejection::PublishRejection, subject, NattyState, AckedPublisher};
//!
//! async fn ship(
//!     publisher: AckedPublisher,
//!     Path(id): Path<String>,
//!     body: bytes::Bytes,
//! ) -> Result<String, PublishRejection> {
//!     let subject = format!("orders.{}.shipped", subject::token(&id)?);
//!     let ack = publisher.publish_acked(&subject, body).await?;
//!     Ok(format!("stored as {} #{}", ack.stream, ack.sequence))
//! }
//!
//! # async fn run(state: NattyState) {
//! let app: Router = Router::new().route("/orders/{id}/ship", post(ship)).with_state(state);
//! # let _ = app;
//! # }
//! ```

use std::convert::Infallible;
use std::future::poll_fn;

use axum::extract::{FromRef, FromRequestParts};
use bytes::Bytes;
use http::request::Parts;
use natty::error::{PublishErrorKind, StreamErrorKind};
use natty::header::{HeaderMap, NATS_MESSAGE_ID};
use natty::{ConnectionState, OutgoingMessage, PublishAck, PublishError};
use serde::Serialize;
use tower_service::Service;

use crate::rejection::{
    cause, IdempotencyKeyReused, InvalidHeader, InvalidSubject, NatsFailure, NatsUnavailable,
    PayloadTooLarge, PublishRejection, ValueNotSerializable,
};
use crate::NattyState;

/// A publish handle scoped to the subjects the application allowed; an extractor. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct AckedPublisher {
    state: NattyState,
}

impl<S> FromRequestParts<S> for AckedPublisher
where
    NattyState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::new(NattyState::from_ref(state)))
    }
}

impl AckedPublisher {
    pub(crate) fn new(state: NattyState) -> Self {
        Self { state }
    }

    /// Publish `payload` to `subject` and wait for the stream to store it.
    ///
    /// # Errors
    /// See [`AckedPublisher::publish_acked_with_headers`].
    pub async fn publish_acked(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, PublishRejection> {
        self.publish_acked_with_headers(subject, HeaderMap::new(), payload)
            .await
    }

    /// Publish `value` as JSON to `subject` and wait for the stream to store it.
    ///
    /// # Errors
    /// See [`AckedPublisher::publish_json_acked_with_headers`].
    pub async fn publish_json_acked<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        value: &T,
    ) -> Result<PublishAck, PublishRejection> {
        self.publish_json_acked_with_headers(subject, HeaderMap::new(), value)
            .await
    }

    /// Publish `value` as JSON with headers (an [`IdempotencyKey`](crate::IdempotencyKey)'s,
    /// say), as [`AckedPublisher::publish_acked_with_headers`] does. A value that does not
    /// serialize is refused before anything is sent: no message goes out with an empty body.
    ///
    /// # Errors
    /// See [`AckedPublisher::publish_acked_with_headers`]; 500 [`ValueNotSerializable`] when
    /// `value` does not serialize.
    pub async fn publish_json_acked_with_headers<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        headers: HeaderMap,
        value: &T,
    ) -> Result<PublishAck, PublishRejection> {
        let payload = serde_json::to_vec(value).map_err(ValueNotSerializable::with_cause)?;
        self.publish_acked_with_headers(subject, headers, payload)
            .await
    }

    /// Publish with headers; a `Nats-Msg-Id` among them is kept (the stream drops a second
    /// message with the same id inside its duplicate window), otherwise one is generated.
    ///
    /// A kept id is bound to its request: when the stream answers "duplicate", the first
    /// message stored under the id is read back, and a different subject or payload is
    /// refused with 422 [`IdempotencyKeyReused`]; the same request gets the first message's
    /// ack (same sequence, `duplicate: true`). The binding lasts as long as the stream's
    /// duplicate window (2 minutes by default).
    ///
    /// # Errors
    /// 400 [`InvalidSubject`] or [`InvalidHeader`],
    /// 403 [`SubjectOutOfScope`](crate::rejection::SubjectOutOfScope),
    /// 413 [`PayloadTooLarge`], 422 [`IdempotencyKeyReused`], 503 [`NatsUnavailable`] when
    /// disconnected or timed out, and 500 [`NatsFailure`] for the rest (such as no stream
    /// capturing the subject).
    pub async fn publish_acked_with_headers(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, PublishRejection> {
        let payload = payload.into();
        self.state.check_publish(subject)?;
        if let Some(invalid) = headers.invalid() {
            return Err(InvalidHeader::with_detail(invalid).into());
        }
        let max = self.state.max_payload();
        if max > 0 && payload.len() > max {
            return Err(PayloadTooLarge::with_detail(format_args!(
                "{} bytes is more than the server's max_payload of {max} bytes",
                payload.len()
            ))
            .into());
        }
        let natty = self.state.natty();
        if natty.connection_state() != ConnectionState::Connected {
            return Err(self.unavailable("not connected", None).into());
        }
        let keyed = headers.get(NATS_MESSAGE_ID).is_some();
        let message = OutgoingMessage::new(subject, payload.clone()).with_headers(headers);
        let mut publisher = natty.publisher();
        poll_fn(|cx| publisher.poll_ready(cx))
            .await
            .map_err(|err| self.rejection(err))?;
        let ack = publisher
            .call(message)
            .await
            .map_err(|err| self.rejection(err))?;
        if ack.duplicate && keyed {
            self.check_same_request(&ack, subject, &payload).await?;
        }
        Ok(ack)
    }

    /// A duplicate ack names the first message stored under the id; the id is bound to that
    /// request, so a different subject or payload is refused (IETF httpapi Idempotency-Key
    /// draft: 422). Costs one request, on duplicates only.
    async fn check_same_request(
        &self,
        ack: &PublishAck,
        subject: &str,
        payload: &Bytes,
    ) -> Result<(), PublishRejection> {
        let first = match ack.stored_message().await {
            Ok(first) => first,
            // Removed since (limits, work queue): nothing left to compare with, the stream
            // still stored the id once.
            Err(err) if err.kind() == StreamErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(self.failure(err)),
        };
        if first.subject == subject && first.payload == *payload {
            Ok(())
        } else {
            Err(IdempotencyKeyReused::with_detail(
                "the key was first used with another subject or payload",
            )
            .into())
        }
    }

    fn unavailable(&self, reason: &'static str, cause: Option<PublishError>) -> NatsUnavailable {
        NatsUnavailable::new(self.state.retry_after_secs(), reason, cause.map(Into::into))
    }

    /// A NATS error that is not the request's fault: 503 while disconnected, 500 otherwise.
    fn failure(
        &self,
        err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> PublishRejection {
        if self.state.natty().connection_state() != ConnectionState::Connected {
            NatsUnavailable::new(
                self.state.retry_after_secs(),
                "not connected",
                Some(err.into()),
            )
            .into()
        } else {
            NatsFailure::with_cause(err).into()
        }
    }

    fn rejection(&self, err: PublishError) -> PublishRejection {
        match err.kind() {
            PublishErrorKind::InvalidSubject => InvalidSubject::with_detail(cause(&err)).into(),
            PublishErrorKind::InvalidHeader => InvalidHeader::with_detail(cause(&err)).into(),
            PublishErrorKind::PayloadTooLarge => PayloadTooLarge::with_detail(cause(&err)).into(),
            PublishErrorKind::TimedOut => self
                .unavailable("nats did not answer in time", Some(err))
                .into(),
            PublishErrorKind::Closed => self.unavailable("not connected", Some(err)).into(),
            _ => self.failure(err),
        }
    }
}
