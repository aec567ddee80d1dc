//! The requester against a real server, with hand-written responders on a plain async-nats
//! client: answers with headers, no responders, timeouts, service errors, idempotent retries
//! and input refused before sending.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};
use natty::backoff::Backoff;
use natty::error::RequestErrorKind;
use natty::requester::{Request, Response, RetryPolicy};
use natty::{Natty, RequestError};
use natty_testkit::Server;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tower::{ServiceBuilder, ServiceExt as _};

mod common;
use common::connect;

const DEADLINE: Duration = Duration::from_secs(30);

/// A plain client of `server`.
async fn plain(server: &Server) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .expect("plain client")
}

/// Returns once the server has taken every subscription `client` made so far: it handles a
/// client's messages in order, so a message to a fresh inbox coming back proves it.
/// (`flush` only writes them out.)
async fn subscribed(client: &async_nats::Client) {
    let inbox = client.new_inbox();
    let mut probe = client.subscribe(inbox.clone()).await.expect("probe");
    client.publish(inbox, Bytes::new()).await.expect("probe");
    timeout(DEADLINE, probe.next())
        .await
        .expect("the server answers the probe")
        .expect("probe delivered");
}

/// A queue subscription on `subject` answering each request with `answer(request)` (none
/// for `None`), started (the server knows the subscription) when this returns.
async fn respond<F>(client: &async_nats::Client, subject: &str, answer: F)
where
    F: Fn(&async_nats::Message) -> Option<(async_nats::HeaderMap, Bytes)> + Send + 'static,
{
    let mut requests = client
        .queue_subscribe(subject.to_owned(), "responders".to_owned())
        .await
        .expect("subscribe");
    subscribed(client).await;
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply.clone() else {
                continue;
            };
            let Some((headers, payload)) = answer(&request) else {
                continue;
            };
            client
                .publish_with_headers(reply, headers, payload)
                .await
                .expect("answer");
        }
    });
}

/// Echoes the payload, with the request's `tenant` header and `answered-by: echo`.
fn echo(request: &async_nats::Message) -> Option<(async_nats::HeaderMap, Bytes)> {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(tenant) = request.headers.as_ref().and_then(|h| h.get("tenant")) {
        headers.insert("tenant", tenant.as_str());
    }
    headers.insert("answered-by", "echo");
    Some((headers, request.payload.clone()))
}

/// Answers every request with the service error 404 "no such order".
fn not_found(_request: &async_nats::Message) -> Option<(async_nats::HeaderMap, Bytes)> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(natty::service::SERVICE_ERROR_CODE, "404");
    headers.insert(natty::service::SERVICE_ERROR, "no such order");
    Some((headers, Bytes::new()))
}

async fn request(natty: &Natty, request: Request) -> Result<Response, RequestError> {
    timeout(DEADLINE, natty.requester().request(request))
        .await
        .expect("the request ends within its deadline")
}

#[tokio::test]
async fn an_answer_comes_back_with_its_payload_and_headers() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    respond(&plain(&server).await, "svc.echo", echo).await;

    let response = request(
        &natty,
        Request::new("svc.echo", "hello").header("tenant", "acme"),
    )
    .await
    .expect("answered");
    assert_eq!(response.payload().as_ref(), b"hello");
    assert_eq!(response.headers().get("answered-by"), Some("echo"));
    assert_eq!(
        response.headers().get("tenant"),
        Some("acme"),
        "the request's headers reached the service"
    );

    // The same through the `Service` interface.
    let response = natty
        .requester()
        .oneshot(Request::new("svc.echo", "again"))
        .await
        .expect("answered");
    assert_eq!(response.into_payload().as_ref(), b"again");
}

#[tokio::test]
async fn no_responders_is_told_at_once_and_a_silent_service_times_out_at_its_deadline() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let deadline = Duration::from_millis(300);

    let started = Instant::now();
    let err = request(
        &natty,
        Request::new("svc.nobody", "x").with_timeout(deadline),
    )
    .await
    .expect_err("nobody listens");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    assert!(started.elapsed() < deadline, "told before the deadline");

    // Subscribed, never answering.
    let silent = plain(&server).await;
    let _requests = silent.subscribe("svc.silent").await.unwrap();
    subscribed(&silent).await;
    let started = Instant::now();
    let err = request(
        &natty,
        Request::new("svc.silent", "x").with_timeout(deadline),
    )
    .await
    .expect_err("nobody answers");
    assert_eq!(err.kind(), RequestErrorKind::TimedOut);
    let waited = started.elapsed();
    assert!(
        waited >= deadline && waited < deadline + Duration::from_secs(2),
        "timed out at its deadline: {waited:?}"
    );

    // The requester's own deadline applies to a request without one.
    let requester = natty.requester().with_timeout(deadline);
    let started = Instant::now();
    let err = timeout(DEADLINE, requester.request(Request::new("svc.silent", "x")))
        .await
        .expect("ends")
        .expect_err("nobody answers");
    assert_eq!(err.kind(), RequestErrorKind::TimedOut);
    assert!(started.elapsed() < deadline + Duration::from_secs(2));
}

#[tokio::test]
async fn a_service_error_answer_is_typed_with_its_code_and_description() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    respond(&plain(&server).await, "svc.orders", not_found).await;

    let err = request(&natty, Request::new("svc.orders", "o-404"))
        .await
        .expect_err("the service refused");
    assert_eq!(err.kind(), RequestErrorKind::Service);
    let answer = err.service_error().expect("the service's answer");
    assert_eq!(answer.code(), 404);
    assert_eq!(answer.description(), "no such order");
}

/// A requester behind tower's `Retry` with `policy`, counting its attempts and their kinds.
struct Counted {
    attempts: watch::Receiver<usize>,
    kinds: Arc<Mutex<Vec<Option<RequestErrorKind>>>>,
}

fn counted_retrying(
    natty: &Natty,
    policy: RetryPolicy,
) -> (
    impl tower::Service<
            Request,
            Response = Response,
            Error = RequestError,
            Future = impl std::future::Future<Output = Result<Response, RequestError>> + Send + 'static,
        > + Clone
        + Send
        + 'static,
    Counted,
) {
    let (count, attempts) = watch::channel(0);
    let count = Arc::new(count);
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let requester = natty.requester();
    let seen = Arc::clone(&kinds);
    let counting = tower::service_fn(move |request: Request| {
        let (requester, count, seen) = (requester.clone(), Arc::clone(&count), Arc::clone(&seen));
        async move {
            let result = requester.request(request).await;
            seen.lock()
                .unwrap()
                .push(result.as_ref().err().map(RequestError::kind));
            count.send_modify(|n| *n += 1);
            result
        }
    });
    let service = ServiceBuilder::new().retry(policy).service(counting);
    (service, Counted { attempts, kinds })
}

fn quick_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy::new(
        max_retries,
        Backoff::new(Duration::from_millis(20), Duration::from_millis(100)),
    )
}

#[tokio::test]
async fn an_idempotent_request_is_retried_after_no_responders_until_a_responder_appears() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let (service, mut counted) = counted_retrying(&natty, quick_retries(100));

    let lookup = Request::new("svc.late", "o-1")
        .with_timeout(Duration::from_secs(2))
        .idempotent();
    let call = tokio::spawn(service.oneshot(lookup));
    timeout(DEADLINE, counted.attempts.wait_for(|n| *n >= 1))
        .await
        .expect("the first attempt ends")
        .unwrap();
    // The responder starts only after the first attempt found nobody.
    respond(&plain(&server).await, "svc.late", echo).await;

    let response = timeout(DEADLINE, call)
        .await
        .expect("retried within the deadline")
        .unwrap()
        .expect("answered once the responder is up");
    assert_eq!(response.payload().as_ref(), b"o-1");
    let kinds = counted.kinds.lock().unwrap().clone();
    assert!(kinds.len() >= 2, "retried: {kinds:?}");
    assert_eq!(kinds[0], Some(RequestErrorKind::NoResponders));
    assert_eq!(kinds.last(), Some(&None), "the last attempt was answered");
}

#[tokio::test]
async fn an_idempotent_request_is_retried_after_a_timeout() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    // Drops the first request it gets, answers the others.
    let dropped = Arc::new(Mutex::new(false));
    respond(&plain(&server).await, "svc.flaky", move |request| {
        let mut dropped = dropped.lock().unwrap();
        let first = !*dropped;
        *dropped = true;
        (!first).then(|| (async_nats::HeaderMap::new(), request.payload.clone()))
    })
    .await;
    let (service, counted) = counted_retrying(&natty, quick_retries(3));
    let deadline = Duration::from_millis(300);

    let lookup = Request::new("svc.flaky", "o-2")
        .with_timeout(deadline)
        .idempotent();
    let response = timeout(DEADLINE, service.oneshot(lookup))
        .await
        .expect("retried within the deadline")
        .expect("answered on the retry");
    assert_eq!(response.payload().as_ref(), b"o-2");
    let kinds = counted.kinds.lock().unwrap().clone();
    assert_eq!(kinds, [Some(RequestErrorKind::TimedOut), None]);
}

#[tokio::test]
async fn a_plain_request_or_a_service_error_is_not_retried() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;

    let (service, counted) = counted_retrying(&natty, quick_retries(5));
    let err = timeout(DEADLINE, service.oneshot(Request::new("svc.nobody", "x")))
        .await
        .expect("ends")
        .expect_err("nobody listens");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    assert_eq!(*counted.attempts.borrow(), 1, "sent once: not idempotent");

    respond(&plain(&server).await, "svc.orders", not_found).await;
    let (service, counted) = counted_retrying(&natty, quick_retries(5));
    let lookup = Request::new("svc.orders", "o-404").idempotent();
    let err = timeout(DEADLINE, service.oneshot(lookup))
        .await
        .expect("ends")
        .expect_err("the service refused");
    assert_eq!(err.kind(), RequestErrorKind::Service);
    assert_eq!(*counted.attempts.borrow(), 1, "the service has spoken");
}

#[tokio::test]
async fn bad_input_fails_before_anything_is_sent() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let seen = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&seen);
    respond(&plain(&server).await, "bad.>", move |_request| {
        let mut seen = counter.lock().unwrap();
        *seen += 1;
        Some((async_nats::HeaderMap::new(), Bytes::from(seen.to_string())))
    })
    .await;

    let requester = natty.requester();
    let too_large = vec![0u8; natty.server_info().max_payload() + 1];
    let refused = [
        (Request::new("bad.*", "x"), RequestErrorKind::InvalidSubject),
        (
            Request::new("bad..x", "x"),
            RequestErrorKind::InvalidSubject,
        ),
        (Request::new("bad x", "x"), RequestErrorKind::InvalidSubject),
        (
            Request::new("bad.header", "x").header("bad name", "v"),
            RequestErrorKind::InvalidHeader,
        ),
        (
            Request::new("bad.header", "x").header("name", "a\r\nb"),
            RequestErrorKind::InvalidHeader,
        ),
        (
            Request::new("bad.payload", too_large),
            RequestErrorKind::PayloadTooLarge,
        ),
    ];
    for (request, kind) in refused {
        let subject = request.subject().to_owned();
        let err = requester
            .request(request)
            .now_or_never()
            .expect("refused at once, without waiting on the network")
            .expect_err("refused");
        assert_eq!(err.kind(), kind, "{subject:?}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "says why: {err:?}"
        );
    }

    let first = request(&natty, Request::new("bad.ok", "x"))
        .await
        .expect("answered");
    assert_eq!(
        first.payload().as_ref(),
        b"1",
        "the responder saw no request before this one"
    );
}
