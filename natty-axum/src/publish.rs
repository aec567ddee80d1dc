//! [`Publisher`]: publish to JetStream from a handler, inside the subjects the application
//! allowed, and wait for the stream's acknowledgement.
//!
//! Every publish is checked before anything is sent: the subject must be a valid publish
//! subject (400), not reserved and inside the allowed filters (403), the payload no larger
//! than the server's `max_payload` (413), and the client connected (503). Then natty's
//! [`Natty::publish_acked`](natty::Natty::publish_acked) sends it with a `Nats-Msg-Id` (yours,
//! from [`IdempotencyKey`](crate::IdempotencyKey), or a fresh one) and retries under that id,
//! so the stream stores it once.
//!
//! # Example
//! ```no_run
//! use axum::{extract::Path, routing::post, Router};
//! use natty_axum::{rejection::PublishRejection, subject, NattyState, Publisher};
//!
//! async fn ship(
//!     publisher: Publisher,
//!     Path(id): Path<String>,
//!     body: bytes::Bytes,
//! ) -> Result<String, PublishRejection> {
//!     let subject = format!("orders.{}.shipped", subject::token(&id)?);
//!     let ack = publisher.publish(&subject, body).await?;
//!     Ok(format!("stored as {} #{}", ack.stream, ack.sequence))
//! }
//!
//! # async fn run(state: NattyState) {
//! let app: Router = Router::new().route("/orders/{id}/ship", post(ship)).with_state(state);
//! # let _ = app;
//! # }
//! ```

use std::convert::Infallible;

use axum::extract::{FromRef, FromRequestParts};
use bytes::Bytes;
use http::request::Parts;
use natty::async_nats::jetstream::publish::PublishAck;
use natty::async_nats::HeaderMap;
use natty::error::PublishErrorKind;
use natty::{ConnectionState, PublishError};

use crate::rejection::{
    InvalidSubject, NatsFailure, NatsUnavailable, PayloadTooLarge, PublishRejection,
};
use crate::{subject, NattyState};

/// A publish handle scoped to the subjects the application allowed; an extractor. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct Publisher {
    state: NattyState,
}

impl<S> FromRequestParts<S> for Publisher
where
    NattyState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::new(NattyState::from_ref(state)))
    }
}

impl Publisher {
    pub(crate) fn new(state: NattyState) -> Self {
        Self { state }
    }

    /// Publish `payload` to `subject` and wait for the stream to store it.
    ///
    /// # Errors
    /// See [`Publisher::publish_with_headers`].
    pub async fn publish(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, PublishRejection> {
        self.publish_with_headers(subject, HeaderMap::new(), payload)
            .await
    }

    /// Publish with headers; a `Nats-Msg-Id` among them is kept (the stream drops a second
    /// message with the same id inside its duplicate window), otherwise one is generated.
    ///
    /// # Errors
    /// 400 [`InvalidSubject`], 403 [`SubjectOutOfScope`](crate::rejection::SubjectOutOfScope),
    /// 413 [`PayloadTooLarge`], 503 [`NatsUnavailable`] when disconnected or timed out, and
    /// 500 [`NatsFailure`] for the rest (such as no stream capturing the subject).
    pub async fn publish_with_headers(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck, PublishRejection> {
        let payload = payload.into();
        subject::check_publish(subject, self.state.allowed_subjects())?;
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
            return Err(self.unavailable("not connected").into());
        }
        natty
            .publish_acked_with_headers(subject, headers, payload)
            .await
            .map_err(|err| self.rejection(err))
    }

    fn unavailable(&self, detail: &str) -> NatsUnavailable {
        NatsUnavailable::new(self.state.retry_after_secs(), Some(detail.to_owned()))
    }

    fn rejection(&self, err: PublishError) -> PublishRejection {
        let detail = crate::rejection::cause(&err);
        match err.kind() {
            PublishErrorKind::InvalidSubject => InvalidSubject::with_detail(detail).into(),
            PublishErrorKind::PayloadTooLarge => PayloadTooLarge::with_detail(detail).into(),
            PublishErrorKind::TimedOut | PublishErrorKind::Closed => {
                self.unavailable(&err.to_string()).into()
            }
            _ if self.state.natty().connection_state() != ConnectionState::Connected => {
                self.unavailable(&err.to_string()).into()
            }
            _ => NatsFailure::with_detail(err).into(),
        }
    }
}
