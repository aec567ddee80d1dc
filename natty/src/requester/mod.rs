//! Calling request-reply services: [`Requester`], a tower [`Service`] of [`Request`]s that
//! answers with the service's [`Response`].
//!
//! [`Natty::requester`](crate::Natty::requester) hands out the client's requester, cheap to
//! clone. A request goes out on async-nats' request machinery (one shared reply
//! subscription per client, so a request costs one publish and one reply), and waits for the
//! answer up to its deadline: the request's own ([`Request::with_timeout`]), or the
//! requester's ([`Requester::with_timeout`], by default the client's
//! [`Config::request_timeout`](crate::Config::request_timeout)).
//!
//! Every failure has its [kind](crate::error::RequestErrorKind):
//! - `InvalidSubject`, `InvalidHeader`, `PayloadTooLarge`: refused before anything is sent,
//!   so the future is ready at once (a payload under the limit that its headers push over
//!   it is refused by async-nats, still unsent);
//! - `NoResponders`: nobody listens on the subject, known at once from the server;
//! - `TimedOut`: no answer within the deadline;
//! - `Service`: the service answered with an error, in the NATS service API's
//!   `Nats-Service-Error-Code` and `Nats-Service-Error` headers; the error's
//!   [`service_error`](crate::Error::service_error) is its code and description, as a
//!   [`ServiceError`](crate::service::ServiceError);
//! - `Failed`: the client could not send (it is closed).
//!
//! Any tower middleware applies. [`RetryPolicy`] is tower's retry policy for requests marked
//! [idempotent](Request::idempotent): it tries them again after no responders or a timeout,
//! a bounded number of times with natty's [`Backoff`](crate::backoff::Backoff), and never
//! retries a service's error answer or a request not so marked.
//!
//! # Example
//! ```no_run
//! use natty::requester::{Request, RetryPolicy};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! let requester = natty.requester();
//! let response = requester.request(Request::new("orders.lookup", "o-17")).await?;
//! println!("o-17: {:?}", response.payload());
//!
//! // As a tower service, retrying lookups while the service restarts.
//! let retrying = ServiceBuilder::new()
//!     .retry(RetryPolicy::default())
//!     .service(requester);
//! let lookup = Request::new("orders.lookup", "o-18").idempotent();
//! let response = retrying.oneshot(lookup).await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```

mod error;
mod future;
mod request;
mod retry;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use crate::connection::Connection;
use crate::error::{Error, RequestErrorKind};
use crate::validate;

pub use error::RequestError;
pub use future::ResponseFuture;
pub use request::{Request, Response};
pub use retry::RetryPolicy;

/// The deadline of a requester whose client has no request timeout of its own (an async-nats
/// client given to [`Natty::from_client`](crate::Natty::from_client) without one).
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The requesting handle of a natty client: sends [`Request`]s to services and waits for
/// their answers, as a method and as a tower [`Service`] (always ready). Cheap to clone
/// (one `Arc`). See the [module docs](self).
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use natty::requester::Request;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let natty = natty::Natty::connect(natty::Config::from_env()).await?;
/// let requester = natty.requester().with_timeout(Duration::from_secs(1));
/// let request = Request::new("orders.lookup", "o-17").header("tenant", "acme");
/// let response = requester.request(request).await?;
/// println!("{:?} {:?}", response.headers().get("version"), response.payload());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Requester {
    connection: Arc<Connection>,
    timeout: Duration,
}

impl fmt::Debug for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requester")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Requester {
    /// The requester of a client, with its request timeout as the default deadline.
    pub(crate) fn new(connection: &Arc<Connection>) -> Self {
        let timeout = connection.client().timeout().unwrap_or(FALLBACK_TIMEOUT);
        Self {
            connection: Arc::clone(connection),
            timeout,
        }
    }

    /// This requester with `timeout` as the deadline of requests that have none of their own.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The deadline of requests that have none of their own.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send `request` and wait for the answer, up to its deadline. The subject, headers and
    /// payload size are checked first; a request that fails them sends nothing and its future
    /// is ready at once.
    ///
    /// # Errors
    /// `InvalidSubject`, `InvalidHeader` or `PayloadTooLarge` (nothing sent); `NoResponders`,
    /// `TimedOut`, `Service` (the service's error answer) or `Failed`. See the
    /// [module docs](self).
    pub fn request(&self, request: Request) -> ResponseFuture {
        if let Err(refused) = self.check(&request) {
            return ResponseFuture::failed(refused);
        }
        let (subject, payload, headers, timeout) = request.into_parts();
        let mut outgoing = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout.unwrap_or(self.timeout)));
        if !headers.is_empty() {
            outgoing = outgoing.headers(headers.into());
        }
        let connection = Arc::clone(&self.connection);
        ResponseFuture::sending(Box::pin(async move {
            connection.client().send_request(subject, outgoing).await
        }))
    }

    /// What the server would refuse, or misroute, checked before sending.
    fn check(&self, request: &Request) -> Result<(), RequestError> {
        validate::publish_subject(request.subject())
            .map_err(|err| Error::with_source(RequestErrorKind::InvalidSubject, err))?;
        if let Some(invalid) = request.headers().invalid() {
            return Err(Error::with_source(
                RequestErrorKind::InvalidHeader,
                invalid.clone(),
            ));
        }
        validate::payload(
            request.payload().len(),
            self.connection.client().max_payload(),
        )
        .map_err(|err| Error::with_source(RequestErrorKind::PayloadTooLarge, err))
    }
}

impl Service<Request> for Requester {
    type Response = Response;
    type Error = RequestError;
    type Future = ResponseFuture;

    /// Always ready: async-nats queues the request on the client's connection.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.request(request)
    }
}
