//! [`Requester`]: call a NATS service from a handler, inside the subjects the application
//! allowed for requests ([`NattyStateBuilder::allow_requests`](crate::NattyStateBuilder::allow_requests)).
//!
//! Every request is checked before anything is sent: the subject must be valid (400), not
//! reserved and inside the allowed filters (403), its headers sendable (400), the payload no
//! larger than the server's `max_payload` (413), and the client connected (503). Then natty's
//! requester ([`natty::Requester`]) sends it with its deadline, behind tower's `Retry` with
//! natty's [`RetryPolicy`]: a request marked
//! [idempotent](natty::requester::Request::idempotent) is tried again after no responders or
//! a timeout, any other is sent once.
//!
//! What comes back becomes a [`RequestRejection`] in natty-axum's JSON shape: a service's
//! error answer keeps its code as the HTTP status when it is 4xx or 5xx (502 otherwise; see
//! [`ServiceFailure`]), no responders is 503, a timeout 504.
//!
//! # Example
//! ```no_run
//! use axum::{extract::Path, routing::get, Router};
//! use natty::requester::Request;
//! use natty_axum::{rejection::RequestRejection, subject, NattyState, Requester};
//!
//! async fn order(
//!     requester: Requester,
//!     Path(id): Path<String>,
//! ) -> Result<bytes::Bytes, RequestRejection> {
//!     let lookup = Request::new("orders.lookup", subject::token(&id)?.to_owned()).idempotent();
//!     let response = requester.request(lookup).await?; // 404 from the service stays 404
//!     Ok(response.into_payload())
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! let state = NattyState::builder(natty).allow_requests("orders.lookup").build()?;
//! let app: Router = Router::new().route("/orders/{id}", get(order)).with_state(state);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::poll_fn;

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use natty::error::RequestErrorKind;
use natty::requester::{Request, Response, RetryPolicy};
use natty::{ConnectionState, RequestError};
use serde::Serialize;
use tower::retry::Retry;
use tower_service::Service;

use crate::rejection::{
    cause, InvalidHeader, InvalidSubject, NatsFailure, NatsUnavailable, NoResponders,
    PayloadTooLarge, PublishRejection, RequestRejection, ServiceFailure, ServiceTimeout,
    ValueNotSerializable,
};
use crate::NattyState;

/// A request handle scoped to the subjects the application allowed for requests; an
/// extractor. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Requester {
    state: NattyState,
    retry: RetryPolicy,
}

impl<S> FromRequestParts<S> for Requester
where
    NattyState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::new(NattyState::from_ref(state)))
    }
}

impl Requester {
    pub(crate) fn new(state: NattyState) -> Self {
        Self {
            state,
            retry: RetryPolicy::default(),
        }
    }

    /// This handle with `policy` for idempotent requests instead of the default
    /// ([`RetryPolicy::default`]: three retries).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Send `request` and wait for the service's answer, up to the request's deadline.
    ///
    /// # Errors
    /// 400 [`InvalidSubject`] or [`InvalidHeader`], 403
    /// [`SubjectOutOfScope`](crate::rejection::SubjectOutOfScope), 413
    /// [`PayloadTooLarge`] (nothing sent); the service's 4xx or 5xx (502 for another code)
    /// [`ServiceFailure`]; 503 [`NoResponders`]; 504 [`ServiceTimeout`]; 503
    /// [`NatsUnavailable`] when disconnected; 500 [`NatsFailure`] for the rest.
    pub async fn request(&self, request: Request) -> Result<Response, RequestRejection> {
        self.state.check_request(request.subject()).map_err(scope)?;
        let natty = self.state.natty();
        if natty.connection_state() != ConnectionState::Connected {
            return Err(self.unavailable(None).into());
        }
        let mut service = Retry::new(self.retry, natty.requester());
        poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(|err| self.rejection(err))?;
        service
            .call(request)
            .await
            .map_err(|err| self.rejection(err))
    }

    /// Send `value` as JSON to `subject` and wait for the answer. A value that does not
    /// serialize is refused before anything is sent.
    ///
    /// # Errors
    /// See [`Requester::request`]; 500 [`ValueNotSerializable`] when `value` does not
    /// serialize.
    pub async fn request_json<T: Serialize + ?Sized>(
        &self,
        subject: &str,
        value: &T,
    ) -> Result<Response, RequestRejection> {
        let payload = serde_json::to_vec(value).map_err(ValueNotSerializable::with_cause)?;
        self.request(Request::new(subject, payload)).await
    }

    fn unavailable(&self, cause: Option<RequestError>) -> NatsUnavailable {
        NatsUnavailable::new(
            self.state.retry_after_secs(),
            "not connected",
            cause.map(Into::into),
        )
    }

    fn rejection(&self, err: RequestError) -> RequestRejection {
        match err.kind() {
            RequestErrorKind::InvalidSubject => InvalidSubject::with_detail(cause(&err)).into(),
            RequestErrorKind::InvalidHeader => InvalidHeader::with_detail(cause(&err)).into(),
            RequestErrorKind::PayloadTooLarge => PayloadTooLarge::with_detail(cause(&err)).into(),
            RequestErrorKind::Service => match err.service_error() {
                Some(answer) => ServiceFailure::new(answer.clone()).into(),
                None => NatsFailure::with_cause(err).into(),
            },
            RequestErrorKind::NoResponders => NoResponders::with_cause(err).into(),
            RequestErrorKind::TimedOut => ServiceTimeout::with_cause(err).into(),
            _ if self.state.natty().connection_state() != ConnectionState::Connected => {
                self.unavailable(Some(err)).into()
            }
            _ => NatsFailure::with_cause(err).into(),
        }
    }
}

/// The scope check's refusal (it is shared with publishing) as a request's.
fn scope(rejection: PublishRejection) -> RequestRejection {
    match rejection {
        PublishRejection::InvalidSubject(inner) => inner.into(),
        PublishRejection::SubjectOutOfScope(inner) => inner.into(),
        other => NatsFailure::with_cause(other).into(),
    }
}
