//! Request-reply services on the NATS service API (ADR-32, "micro"), each endpoint served by a
//! tower `Service<Request>`: what a natty service answers with and what a caller reads back.
//!
//! [`Natty::service`](crate::Natty::service) starts a [`ServiceInstance`] from a
//! [`ServiceConfig`] (a name, a semver version, a description, metadata); its endpoints
//! ([`EndpointConfig`]: a name, a subject, a queue group, `q` unless set, metadata), alone or
//! in [`EndpointGroup`]s under a subject prefix, are each served by a tower service called
//! with a [`Request`] (subject, payload, headers, reply subject, extensions, shaped like
//! [`Message`](crate::Message)). The service answers with a [`Response`] (a payload and
//! headers, or anything that converts into one) or an error: a [`ServiceError`] travels as
//! the `Nats-Service-Error` and `Nats-Service-Error-Code` headers; any other error, and a
//! panic in `call` or in its future, answers `500 internal error` (the cause is logged at
//! ERROR); a failing `poll_ready` answers `503` (and the next request asks `poll_ready`
//! again, so a stack that recovers serves on). Each endpoint runs up to
//! [`ServiceConfig::concurrency`] calls at once, polled inside one task rather than spawned,
//! as natty's consume driver does. [`ServiceInstance::run`] serves until its
//! `CancellationToken` fires, then leaves the service, unsubscribes the endpoints, answers a
//! 503 to what it received but never started, lets the calls under way finish within
//! [`ServiceConfig::shutdown_grace`] and returns a [`ServeSummary`].
//!
//! # Why async-nats' `service` module underneath
//! The wire protocol is async-nats' `service` module, reused rather than rewritten: it answers
//! `$SRV.PING|INFO|STATS` (bare, `.<name>` and `.<name>.<id>`) with the
//! `io.nats.micro.v1.*` JSON the Go and Python clients speak, keeps each endpoint's request
//! and error counts and processing times, and writes the error headers. What natty adds is
//! what it leaves to its user: a tower service per endpoint instead of a stream of requests
//! to loop over, bounded concurrency, panics and readiness answered instead of requests left
//! to time out, names and versions checked before anything is sent, a typed error of natty's
//! own, and a graceful shutdown with a summary.
//!
//! # What other clients see, and hostile input
//! nats-py's `nats.micro` and Synadia's natsio parse a natty service's PING, INFO and STATS
//! with their own types, call its endpoints and read its error headers; natty's
//! [`Requester`](crate::Requester) calls their services and types their errors (tested in
//! `natty/tests/service_interop.rs`). Two differences come from async-nats' STATS answer: it
//! leaves out the service's metadata (INFO carries it) and, like Go's, an endpoint's `data`
//! when there is none; nats-py 2.16 requires both, and reads `started` to microseconds only.
//!
//! A request without a reply subject is dropped. A payload an endpoint cannot decode is its
//! `400` ([`Request::json`] answers one). A message whose header block async-nats cannot parse
//! (no NATS client writes one; a raw TCP client can) ends the connection that receives it:
//! async-nats reconnects and subscribes again, so the service answers again after a moment and
//! what was in flight on that connection times out at its callers. Keep service subjects
//! behind NATS permissions where untrusted clients connect.
//!
//! # Example
//! ```no_run
//! use natty::service::{EndpointConfig, Request, Response, ServiceConfig, ServiceError};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! let mut greeter = natty
//!     .service(ServiceConfig::new("greeter", "1.0.0").description("says hello"))
//!     .await?;
//! greeter
//!     .endpoint(
//!         EndpointConfig::new("hello"),
//!         tower::service_fn(|request: Request| async move {
//!             let name = std::str::from_utf8(request.payload())
//!                 .map_err(|_| ServiceError::new(400, "the name is not UTF-8"))?;
//!             Ok::<_, ServiceError>(Response::new(format!("hello, {name}")))
//!         }),
//!     )
//!     .await?;
//! let shutdown = CancellationToken::new();
//! let serving = tokio::spawn(greeter.run(shutdown.clone()));
//! // ... on SIGTERM:
//! shutdown.cancel();
//! let summary = serving.await?;
//! println!("{} answered, {} errors", summary.handled, summary.errors);
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod instance;
mod request;
mod serve;

pub use config::{EndpointConfig, ServiceConfig, DEFAULT_QUEUE_GROUP};
pub use error::{ServiceError, SERVICE_ERROR, SERVICE_ERROR_CODE};
pub use instance::{EndpointGroup, ServiceInstance};
pub use request::{Request, Response};
pub use serve::ServeSummary;

/// The error of starting a service or adding an endpoint.
pub type ServeError = crate::error::Error<crate::error::ServeErrorKind>;
