//! The driver of one endpoint: its requests go into the endpoint's tower service, up to
//! `concurrency` at once, polled inside the driver's task (a `FuturesUnordered`, as natty's
//! consume driver polls its calls) rather than spawned; each answer goes back through
//! async-nats' `respond_with_headers`, which keeps the endpoint's stats.
//!
//! The `select!` only moves things: a request waits for the service's readiness, a ready
//! service starts its call, an ended call is answered. What the answer is ([`decide`]) is a
//! pure function of how the call ended.
//!
//! Each request runs in a `service request` span with its subject, the endpoint's name and the
//! answer's code; under `opentelemetry` the span's parent is the request's W3C trace context.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_nats::service::endpoint::Endpoint;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::{Request, Response, ServiceError};
use crate::consume::{CatchUnwind, PanicMessage};
use crate::election::Leadership;
use crate::error::BoxError;

/// async-nats' service, `None` once stopped.
#[derive(Clone)]
pub(crate) struct SharedService(pub(super) Arc<Mutex<Option<async_nats::service::Service>>>);

impl SharedService {
    /// A builder for a new endpoint, unless the service has stopped.
    pub(crate) fn endpoint_builder(&self) -> Option<async_nats::service::EndpointBuilder> {
        let service = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        service
            .as_ref()
            .map(async_nats::service::Service::endpoint_builder)
    }
}

/// async-nats' request: the message (its reply subject) and the endpoint's stats.
type Incoming = async_nats::service::Request;

/// What a run of a service did, summed over its endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSummary {
    /// Requests answered with a response.
    pub handled: u64,
    /// Requests answered with an error: the service's own, a 500 for another error or a
    /// panic, a 503 when the service was not ready or the instance was shutting down.
    pub errors: u64,
    /// Of the errors, the calls that panicked.
    pub panicked: u64,
    /// Calls still running when the shutdown grace ended: dropped, never answered.
    pub cut_off: u64,
}

impl ServeSummary {
    /// Add what `other` (one endpoint, or one term of a leader-only one) did to this.
    pub(crate) fn include(&mut self, other: Self) {
        self.handled += other.handled;
        self.errors += other.errors;
        self.panicked += other.panicked;
        self.cut_off += other.cut_off;
    }
}

/// How many calls at once, and how long they may finish after shutdown.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) concurrency: usize,
    pub(crate) grace: Duration,
}

/// The answer to a call, and whether the call panicked.
#[derive(Debug)]
pub(crate) struct Decided {
    answer: Result<Response, ServiceError>,
    panicked: bool,
}

/// What answers a call that ended with `ended`: its response; its [`ServiceError`]; a 503 when
/// tower's `load_shed` refused it and a 504 when tower's `timeout` ended it; a 500 for any
/// other error, for a panic, and for a response whose headers cannot be sent (the cause is
/// logged at ERROR, the caller reads a generic description).
pub(crate) fn decide<R, E>(ended: Result<Result<R, E>, PanicMessage>, subject: &str) -> Decided
where
    R: Into<Response>,
    E: Into<BoxError>,
{
    let internal = || ServiceError::new(500, "internal error");
    let (answer, panicked) = match ended {
        Ok(Ok(response)) => {
            let response = response.into();
            match response.headers().invalid().map(ToString::to_string) {
                None => (Ok(response), false),
                Some(invalid) => {
                    tracing::error!(target: "natty", subject, error = %invalid, "service response has a header that cannot be sent; answered 500");
                    (Err(internal()), false)
                }
            }
        }
        Ok(Err(err)) => {
            let err: BoxError = err.into();
            match err.downcast::<ServiceError>() {
                Ok(err) => {
                    tracing::trace!(target: "natty", subject, code = err.code(), description = err.description(), "service answered an error");
                    (Err(*err), false)
                }
                // tower's own layers: an instance shedding load answers at once, and a timeout
                // answers before the caller's own deadline ends its wait.
                Err(err) if err.is::<tower::load_shed::error::Overloaded>() => {
                    tracing::debug!(target: "natty", subject, "service overloaded; answered 503");
                    (Err(ServiceError::new(503, "overloaded")), false)
                }
                Err(err) if err.is::<tower::timeout::error::Elapsed>() => {
                    tracing::warn!(target: "natty", subject, "service handler timed out; answered 504");
                    (Err(ServiceError::new(504, "timed out")), false)
                }
                Err(err) => {
                    tracing::error!(target: "natty", subject, error = %format_args!("{err:#}"), "service handler failed; answered 500");
                    (Err(internal()), false)
                }
            }
        }
        Err(panic) => {
            tracing::error!(target: "natty", subject, panic = %panic, "service handler panicked; answered 500");
            (Err(internal()), true)
        }
    };
    Decided { answer, panicked }
}

pin_project_lite::pin_project! {
    /// One request's call, its panics caught, polled and decided within the request's span.
    struct Call<F> {
        #[pin]
        call: CatchUnwind<F>,
        incoming: Option<Incoming>,
        span: tracing::Span,
    }
}

impl<F, R, E> Future for Call<F>
where
    F: Future<Output = Result<R, E>>,
    R: Into<Response>,
    E: Into<BoxError>,
{
    type Output = (Incoming, Decided);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let ended = ready!(this.call.poll(cx));
        match this.incoming.take() {
            Some(incoming) => {
                let decided = decide(ended, incoming.message.subject.as_str());
                let code = decided
                    .answer
                    .as_ref()
                    .map_or_else(ServiceError::code, |_| 200);
                this.span.record("code", code);
                tracing::debug!(target: "natty", code, "service request answered");
                Poll::Ready((incoming, decided))
            }
            // FuturesUnordered never polls a finished future again.
            None => Poll::Pending,
        }
    }
}

/// Serve `endpoint` with `service` until `shutdown` fires (or the subscription ends), then
/// unsubscribe, refuse with a 503 what was received but not started, and let the calls under
/// way finish within the grace; what is still running then is cut off, unanswered.
pub(crate) async fn serve_endpoint<S>(
    name: &str,
    mut endpoint: Endpoint,
    mut service: S,
    limits: Limits,
    shutdown: CancellationToken,
) -> ServeSummary
where
    S: Service<Request>,
    S::Response: Into<Response>,
    S::Error: Into<BoxError>,
{
    let mut calls: FuturesUnordered<Call<S::Future>> = FuturesUnordered::new();
    // A request received, waiting for the service to be ready.
    let mut waiting: Option<Incoming> = None;
    let mut tally = ServeSummary::default();
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => break,
            Some((incoming, decided)) = calls.next(), if !calls.is_empty() => {
                answer(&incoming, decided, &mut tally).await;
            }
            ready = std::future::poll_fn(|cx| ready_or_boxed(&mut service, cx)), if waiting.is_some() => {
                let Some(mut incoming) = waiting.take() else { continue };
                match ready {
                    Ok(()) => {
                        let request = Request::received(&mut incoming.message);
                        let span = request_span(name, &request);
                        let call = span.in_scope(|| CatchUnwind::call(|| service.call(request)));
                        calls.push(Call { call, incoming: Some(incoming), span });
                    }
                    Err(err) => {
                        tracing::error!(target: "natty", subject = incoming.message.subject.as_str(), error = %format_args!("{err:#}"), "service not ready; answered 503");
                        refuse(&incoming, "service unavailable", &mut tally).await;
                    }
                }
            }
            next = endpoint.next(), if waiting.is_none() && calls.len() < limits.concurrency => match next {
                Some(incoming) => waiting = Some(incoming),
                None => break,
            },
        }
    }

    if let Err(err) = endpoint.stop().await {
        tracing::warn!(target: "natty", error = %err, "could not unsubscribe a service endpoint");
    }
    // Refused at once, so the caller can retry another instance instead of timing out.
    if let Some(incoming) = waiting.take() {
        refuse(&incoming, "shutting down", &mut tally).await;
    }
    while let Some(Some(incoming)) = endpoint.next().now_or_never() {
        refuse(&incoming, "shutting down", &mut tally).await;
    }

    let grace = tokio::time::sleep(limits.grace);
    tokio::pin!(grace);
    while !calls.is_empty() {
        tokio::select! {
            Some((incoming, decided)) = calls.next() => answer(&incoming, decided, &mut tally).await,
            () = &mut grace => break,
        }
    }
    tally.cut_off = calls.len() as u64;
    tally
}

/// An endpoint's name, subject, queue group and metadata, checked: what async-nats needs to
/// subscribe it, once or at each term of a leader-only endpoint.
#[derive(Debug)]
pub(crate) struct NewEndpoint {
    pub(crate) name: String,
    pub(crate) subject: String,
    pub(crate) queue_group: String,
    pub(crate) metadata: HashMap<String, String>,
}

impl NewEndpoint {
    /// Subscribe the endpoint to `service`.
    pub(crate) async fn add(&self, service: &SharedService) -> Result<Endpoint, BoxError> {
        let builder = service
            .endpoint_builder()
            .ok_or("the service has stopped")?;
        builder
            .name(&self.name)
            .metadata(self.metadata.clone())
            .queue_group(&self.queue_group)
            .add(&self.subject)
            .await
    }
}

/// Serve `endpoint` with `service` during each of `leadership`'s terms until `shutdown`
/// fires: subscribe when a term starts, and when it ends unsubscribe as a shutdown does.
pub(crate) async fn serve_while_leader<S>(
    nats: SharedService,
    endpoint: NewEndpoint,
    leadership: Leadership,
    mut service: S,
    limits: Limits,
    shutdown: CancellationToken,
) -> ServeSummary
where
    S: Service<Request>,
    S::Response: Into<Response>,
    S::Error: Into<BoxError>,
{
    let mut tally = ServeSummary::default();
    loop {
        let term = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            term = leadership.wait_leader() => match term {
                Ok(term) => term,
                Err(_) => break,
            },
        };
        let subscribed = match endpoint.add(&nats).await {
            Ok(subscribed) => subscribed,
            Err(err) => {
                tracing::warn!(target: "natty", endpoint = endpoint.name.as_str(), error = %err, "could not subscribe a leader-only endpoint; it waits for the next term");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = term.ended() => continue,
                }
            }
        };
        tracing::debug!(target: "natty", endpoint = endpoint.name.as_str(), "leader: serving a leader-only endpoint");
        let stop = shutdown.child_token();
        let serving = serve_endpoint(
            &endpoint.name,
            subscribed,
            &mut service,
            limits,
            stop.clone(),
        );
        tokio::pin!(serving);
        let served = tokio::select! {
            served = &mut serving => served,
            () = term.ended() => {
                stop.cancel();
                serving.await
            }
        };
        tally.include(served);
        // Neither shutdown nor the term's end: the subscription ended with the connection.
        if shutdown.is_cancelled() || !stop.is_cancelled() {
            break;
        }
        tracing::debug!(target: "natty", endpoint = endpoint.name.as_str(), "term ended: a leader-only endpoint unsubscribed");
    }
    tally
}

/// The span of one request: its subject, the endpoint's name and, once answered, the code
/// (200 for a response); under `opentelemetry` its parent is the trace context the request's
/// headers carry.
fn request_span(endpoint: &str, request: &Request) -> tracing::Span {
    let span = tracing::info_span!(
        target: "natty",
        "service request",
        subject = %request.subject(),
        endpoint = %endpoint,
        code = tracing::field::Empty,
    );
    #[cfg(feature = "opentelemetry")]
    crate::otel::set_parent(&span, request.headers());
    span
}

/// `poll_ready` with the error boxed: a `S::Error` need not be `Send`, and it is held across
/// the 503's await.
fn ready_or_boxed<S>(service: &mut S, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    service.poll_ready(cx).map_err(Into::into)
}

/// Send `decided`'s answer to `incoming`'s caller, and count it.
async fn answer(incoming: &Incoming, decided: Decided, tally: &mut ServeSummary) {
    let Decided { answer, panicked } = decided;
    let sent = match answer {
        Ok(response) => {
            tally.handled += 1;
            let (payload, headers) = response.into_parts();
            incoming
                .respond_with_headers(Ok(payload), headers.into())
                .await
        }
        Err(err) => {
            tally.errors += 1;
            tally.panicked += u64::from(panicked);
            respond_error(incoming, &err).await
        }
    };
    report_unsent(incoming, sent);
}

/// Log an answer that could not be sent (a request published without a reply subject has
/// no one to answer: that is no failure).
fn report_unsent(incoming: &Incoming, sent: Result<(), async_nats::PublishError>) {
    if let Err(err) = sent {
        if incoming.message.reply.is_some() {
            tracing::warn!(target: "natty", error = %err, "could not send a service answer");
        }
    }
}

/// Answer `incoming` with a 503 (`why`), counted as an error.
async fn refuse(incoming: &Incoming, why: &str, tally: &mut ServeSummary) {
    tally.errors += 1;
    let sent = respond_error(incoming, &ServiceError::new(503, why)).await;
    report_unsent(incoming, sent);
}

async fn respond_error(
    incoming: &Incoming,
    err: &ServiceError,
) -> Result<(), async_nats::PublishError> {
    incoming
        .respond_with_headers(Err(to_wire(err)), async_nats::HeaderMap::new())
        .await
}

/// `err` as async-nats carries it; CR and LF become spaces, as a header value cannot hold them.
fn to_wire(err: &ServiceError) -> async_nats::service::error::Error {
    async_nats::service::error::Error {
        status: err.description().replace(['\r', '\n'], " "),
        code: usize::from(err.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_message(text: &'static str) -> PanicMessage {
        PanicMessage::from_payload(&text)
    }

    #[test]
    fn a_response_is_answered_as_is() {
        let ended: Result<Result<Response, ServiceError>, _> =
            Ok(Ok(Response::new("ok").header("X-A", "1")));
        let decided = decide(ended, "s");
        let response = decided.answer.unwrap();
        assert_eq!(response.headers().get("x-a"), Some("1"));
        assert!(!decided.panicked);
    }

    #[test]
    fn a_service_error_is_answered_as_is_and_any_other_error_as_500() {
        let own: Result<Result<Response, ServiceError>, _> =
            Ok(Err(ServiceError::new(404, "no such order")));
        assert_eq!(
            decide(own, "s").answer.unwrap_err(),
            ServiceError::new(404, "no such order")
        );
        let other: Result<Result<Response, std::io::Error>, _> =
            Ok(Err(std::io::Error::other("disk on fire")));
        assert_eq!(
            decide(other, "s").answer.unwrap_err(),
            ServiceError::new(500, "internal error")
        );
    }

    #[test]
    fn load_shed_answers_503_and_a_timeout_504() {
        let shed: Result<Result<Response, BoxError>, _> =
            Ok(Err(Box::new(tower::load_shed::error::Overloaded::new())));
        assert_eq!(decide(shed, "s").answer.unwrap_err().code(), 503);
        let late: Result<Result<Response, BoxError>, _> =
            Ok(Err(Box::new(tower::timeout::error::Elapsed::new())));
        assert_eq!(decide(late, "s").answer.unwrap_err().code(), 504);
    }

    #[test]
    fn a_panic_is_answered_500_and_marked() {
        let ended: Result<Result<Response, ServiceError>, _> = Err(panic_message("boom"));
        let decided = decide(ended, "s");
        assert_eq!(decided.answer.unwrap_err().code(), 500);
        assert!(decided.panicked);
    }

    #[test]
    fn a_response_header_that_cannot_be_sent_makes_a_500() {
        let ended: Result<Result<Response, ServiceError>, _> =
            Ok(Ok(Response::new("ok").header("X-A", "line\nbreak")));
        assert_eq!(decide(ended, "s").answer.unwrap_err().code(), 500);
    }

    #[test]
    fn an_error_description_loses_its_line_breaks_on_the_wire() {
        let wire = to_wire(&ServiceError::new(400, "bad\r\nrequest"));
        assert_eq!((wire.status.as_str(), wire.code), ("bad  request", 400));
    }
}
