//! Request-reply services on the NATS service API, against a real server, read back by a plain
//! async-nats client as any other NATS client would.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use natty::service::{
    EndpointConfig, Request, Response, ServeSummary, ServiceConfig, ServiceError, ServiceInstance,
    SERVICE_ERROR, SERVICE_ERROR_CODE,
};
use natty_testkit::Server;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

mod common;
use common::connect;

const DEADLINE: Duration = Duration::from_secs(10);

/// A client that knows nothing of natty.
async fn plain(server: &Server) -> async_nats::Client {
    async_nats::connect(server.url()).await.expect("connect")
}

/// The JSON answer to a request on `subject`.
async fn json(client: &async_nats::Client, subject: &str) -> Value {
    let reply = timeout(DEADLINE, client.request(subject.to_owned(), Bytes::new()))
        .await
        .expect("answered in time")
        .expect("answered");
    serde_json::from_slice(&reply.payload).expect("json")
}

/// Run `instance` until the returned token is cancelled.
fn spawn(instance: ServiceInstance) -> (CancellationToken, JoinHandle<ServeSummary>) {
    let shutdown = CancellationToken::new();
    (shutdown.clone(), tokio::spawn(instance.run(shutdown)))
}

async fn stopped(shutdown: CancellationToken, run: JoinHandle<ServeSummary>) -> ServeSummary {
    shutdown.cancel();
    timeout(DEADLINE, run)
        .await
        .expect("the run ends in time")
        .expect("the run does not panic")
}

/// Ask `subject` (each ask given up after half a second: a request that reaches a
/// subscription being dropped is never answered) until the server says no one subscribes to
/// it any more.
async fn no_responders(client: &async_nats::Client, subject: &str) {
    loop {
        let probe = async_nats::Request::new()
            .payload("probe".into())
            .timeout(Some(Duration::from_millis(500)));
        match client.send_request(subject.to_owned(), probe).await {
            Err(err) if err.kind() == RequestErrorKind::NoResponders => break,
            _ => continue,
        }
    }
}

/// Answers `7` with an order and anything else with a 404.
async fn lookup(request: Request) -> Result<Response, ServiceError> {
    match request.payload().as_ref() {
        b"7" => Ok(Response::new("order 7")),
        _ => Err(ServiceError::new(404, "no such order")),
    }
}

#[tokio::test]
async fn ping_info_and_stats_answer_a_plain_client_with_name_version_endpoints_and_counts() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut orders = natty
        .service(
            ServiceConfig::new("orders", "1.2.3")
                .description("order lookups")
                .metadata([("team", "billing")]),
        )
        .await
        .unwrap();
    orders
        .group("orders")
        .endpoint(
            EndpointConfig::new("get").metadata([("format", "text")]),
            tower::service_fn(lookup),
        )
        .await
        .unwrap();
    let id = orders.id().to_owned();
    let (shutdown, run) = spawn(orders);
    let client = plain(&server).await;

    let by_id = format!("$SRV.PING.orders.{id}");
    for subject in ["$SRV.PING", "$SRV.PING.orders", by_id.as_str()] {
        let ping = json(&client, subject).await;
        assert_eq!(ping["type"], "io.nats.micro.v1.ping_response", "{subject}");
        assert_eq!(ping["name"], "orders");
        assert_eq!(ping["version"], "1.2.3");
        assert_eq!(ping["id"], id.as_str());
        assert_eq!(ping["metadata"]["team"], "billing");
    }

    let info = json(&client, "$SRV.INFO.orders").await;
    assert_eq!(info["type"], "io.nats.micro.v1.info_response");
    assert_eq!(info["description"], "order lookups");
    let endpoints = info["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["name"], "get");
    assert_eq!(endpoints[0]["subject"], "orders.get");
    assert_eq!(endpoints[0]["queue_group"], "q");
    assert_eq!(endpoints[0]["metadata"]["format"], "text");

    let found = client.request("orders.get", "7".into()).await.unwrap();
    assert_eq!(found.payload, "order 7");
    let missing = client.request("orders.get", "8".into()).await.unwrap();
    assert_eq!(
        missing
            .headers
            .unwrap()
            .get(SERVICE_ERROR_CODE)
            .unwrap()
            .as_str(),
        "404"
    );

    let stats = json(&client, &format!("$SRV.STATS.orders.{id}")).await;
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
    assert_eq!(stats["name"], "orders");
    assert_eq!(stats["version"], "1.2.3");
    let get = &stats["endpoints"][0];
    assert_eq!(get["name"], "get");
    assert_eq!(get["num_requests"], 2);
    assert_eq!(get["num_errors"], 1);
    assert_eq!(get["last_error"], "404:no such order");

    let summary = stopped(shutdown, run).await;
    assert_eq!((summary.handled, summary.errors), (1, 1));
}

#[tokio::test]
async fn a_request_is_answered_with_the_response_headers() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut echo = natty
        .service(ServiceConfig::new("echo", "1.0.0"))
        .await
        .unwrap();
    echo.endpoint(
        EndpointConfig::new("echo"),
        tower::service_fn(|request: Request| async move {
            let asked = request
                .headers()
                .get("X-Asked")
                .unwrap_or("nothing")
                .to_owned();
            Ok::<_, ServiceError>(
                Response::new(request.into_payload())
                    .header("X-Answered", asked)
                    .header("Content-Type", "text/plain"),
            )
        }),
    )
    .await
    .unwrap();
    let (shutdown, run) = spawn(echo);
    let client = plain(&server).await;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Asked", "order 7");
    let reply = client
        .request_with_headers("echo", headers, "hello".into())
        .await
        .unwrap();
    assert_eq!(reply.payload, "hello");
    let headers = reply.headers.expect("the answer has headers");
    assert_eq!(headers.get("X-Answered").unwrap().as_str(), "order 7");
    assert_eq!(headers.get("Content-Type").unwrap().as_str(), "text/plain");
    assert!(headers.get(SERVICE_ERROR).is_none());

    assert_eq!(stopped(shutdown, run).await.handled, 1);
}

#[tokio::test]
async fn a_service_error_arrives_as_the_two_headers() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut orders = natty
        .service(ServiceConfig::new("orders", "1.0.0"))
        .await
        .unwrap();
    orders
        .endpoint(EndpointConfig::new("get"), tower::service_fn(lookup))
        .await
        .unwrap();
    let (shutdown, run) = spawn(orders);
    let client = plain(&server).await;

    let reply = client.request("get", "8".into()).await.unwrap();
    assert!(reply.payload.is_empty());
    let headers = reply.headers.expect("an error travels as headers");
    assert_eq!(
        headers.get(SERVICE_ERROR).unwrap().as_str(),
        "no such order"
    );
    assert_eq!(headers.get(SERVICE_ERROR_CODE).unwrap().as_str(), "404");

    let summary = stopped(shutdown, run).await;
    assert_eq!(
        (summary.handled, summary.errors, summary.panicked),
        (0, 1, 0)
    );
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_counts_an_error() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut fragile = natty
        .service(ServiceConfig::new("fragile", "1.0.0"))
        .await
        .unwrap();
    fragile
        .endpoint(
            EndpointConfig::new("parse"),
            tower::service_fn(|request: Request| async move {
                if request.payload().as_ref() == b"bad" {
                    panic!("cannot parse the order");
                }
                Ok::<_, ServiceError>(Response::new("parsed"))
            }),
        )
        .await
        .unwrap();
    let id = fragile.id().to_owned();
    let (shutdown, run) = spawn(fragile);
    let client = plain(&server).await;

    let reply = client.request("parse", "bad".into()).await.unwrap();
    let headers = reply.headers.expect("a panic answers an error");
    assert_eq!(headers.get(SERVICE_ERROR_CODE).unwrap().as_str(), "500");
    assert_eq!(
        headers.get(SERVICE_ERROR).unwrap().as_str(),
        "internal error"
    );
    let reply = client.request("parse", "good".into()).await.unwrap();
    assert_eq!(
        reply.payload, "parsed",
        "the endpoint serves on after a panic"
    );

    let stats = json(&client, &format!("$SRV.STATS.fragile.{id}")).await;
    assert_eq!(stats["endpoints"][0]["num_requests"], 2);
    assert_eq!(stats["endpoints"][0]["num_errors"], 1);

    let summary = stopped(shutdown, run).await;
    assert_eq!(
        (summary.handled, summary.errors, summary.panicked),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn shutdown_finishes_an_in_flight_request_within_the_grace_and_then_answers_no_more() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let (release_tx, release) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release)));
    let mut slow = natty
        .service(ServiceConfig::new("slow", "1.0.0").shutdown_grace(DEADLINE))
        .await
        .unwrap();
    slow.endpoint(
        EndpointConfig::new("work"),
        tower::service_fn(move |request: Request| {
            let started = started_tx.clone();
            let release = Arc::clone(&release);
            async move {
                if request.payload().as_ref() == b"slow" {
                    let _ = started.send(());
                    let release = release.lock().await.take().expect("one slow request");
                    let _ = release.await;
                }
                Ok::<_, ServiceError>(Response::new("done"))
            }
        }),
    )
    .await
    .unwrap();
    let (shutdown, run) = spawn(slow);
    let client = plain(&server).await;

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.request("work", "slow".into()).await }
    });
    timeout(DEADLINE, started.recv()).await.unwrap().unwrap();
    shutdown.cancel();

    // The endpoint unsubscribes while the slow request still runs.
    timeout(DEADLINE, no_responders(&client, "work"))
        .await
        .expect("the endpoint unsubscribes");
    assert!(
        !in_flight.is_finished(),
        "the slow request is still in flight"
    );

    release_tx.send(()).unwrap();
    let answer = timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer.payload, "done", "the in-flight request is answered");
    let summary = timeout(DEADLINE, run).await.unwrap().unwrap();
    assert_eq!(summary.cut_off, 0);
    assert!(summary.handled >= 1);

    // Discovery ends too (async-nats drops its PING/INFO/STATS subscriptions in the background).
    timeout(DEADLINE, no_responders(&client, "$SRV.PING.slow"))
        .await
        .expect("PING stops answering");
}

#[tokio::test]
async fn a_request_still_running_when_the_grace_ends_is_cut_off() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let mut stuck = natty
        .service(ServiceConfig::new("stuck", "1.0.0").shutdown_grace(Duration::from_millis(100)))
        .await
        .unwrap();
    stuck
        .endpoint(
            EndpointConfig::new("wait"),
            tower::service_fn(move |_: Request| {
                let started = started_tx.clone();
                async move {
                    let _ = started.send(());
                    std::future::pending::<Result<Response, ServiceError>>().await
                }
            }),
        )
        .await
        .unwrap();
    let (shutdown, run) = spawn(stuck);
    let client = plain(&server).await;
    let request = async_nats::Request::new().timeout(Some(DEADLINE));
    let _waiting = tokio::spawn(async move { client.send_request("wait", request).await });
    timeout(DEADLINE, started.recv()).await.unwrap().unwrap();

    let summary = stopped(shutdown, run).await;
    assert_eq!(
        (summary.handled, summary.errors, summary.cut_off),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn two_instances_in_the_queue_group_share_requests_and_each_gets_exactly_one_answer() {
    let server = Server::start().unwrap();
    let mut runs = Vec::new();
    let counts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    for (tag, count) in counts.iter().enumerate() {
        let natty = connect(&server).await;
        let mut instance = natty
            .service(ServiceConfig::new("shared", "1.0.0"))
            .await
            .unwrap();
        let count = Arc::clone(count);
        instance
            .endpoint(
                EndpointConfig::new("who"),
                tower::service_fn(move |request: Request| {
                    count.fetch_add(1, Ordering::Relaxed);
                    let payload = format!("{tag}:{}", String::from_utf8_lossy(request.payload()));
                    async move { Ok::<_, ServiceError>(Response::new(payload)) }
                }),
            )
            .await
            .unwrap();
        runs.push(spawn(instance));
    }

    let client = plain(&server).await;
    let mut replies = client.subscribe("replies.>").await.unwrap();
    client.flush().await.unwrap();
    const REQUESTS: usize = 200;
    for i in 0..REQUESTS {
        client
            .publish_with_reply("who", format!("replies.{i}"), i.to_string().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    let mut answered = HashSet::new();
    while answered.len() < REQUESTS {
        let reply = timeout(DEADLINE, replies.next()).await.unwrap().unwrap();
        let payload = String::from_utf8(reply.payload.to_vec()).unwrap();
        let (_, asked) = payload.split_once(':').unwrap();
        assert_eq!(reply.subject.as_str(), format!("replies.{asked}"));
        assert!(answered.insert(asked.to_owned()), "{asked} answered twice");
    }

    let mut handled = 0;
    for (shutdown, run) in runs {
        handled += stopped(shutdown, run).await.handled;
    }
    assert_eq!(handled, REQUESTS as u64, "each request handled once");
    let (a, b) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    );
    assert_eq!(a + b, REQUESTS as u64);
    assert!(a > 0 && b > 0, "both instances took requests ({a} and {b})");
}

/// A service whose backend is gone: `poll_ready` fails every time.
struct Unavailable;

impl tower::Service<Request> for Unavailable {
    type Response = Response;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Response, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Err(std::io::Error::other("backend gone")))
    }

    fn call(&mut self, _: Request) -> Self::Future {
        std::future::ready(Ok(Response::new("never called")))
    }
}

#[tokio::test]
async fn a_service_that_is_not_ready_answers_503_to_every_request() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut down = natty
        .service(ServiceConfig::new("down", "1.0.0"))
        .await
        .unwrap();
    down.endpoint(EndpointConfig::new("work"), Unavailable)
        .await
        .unwrap();
    let (shutdown, run) = spawn(down);
    let client = plain(&server).await;

    for _ in 0..2 {
        let reply = client.request("work", "x".into()).await.unwrap();
        let headers = reply.headers.expect("an error answer");
        assert_eq!(headers.get(SERVICE_ERROR_CODE).unwrap().as_str(), "503");
        assert_eq!(
            headers.get(SERVICE_ERROR).unwrap().as_str(),
            "service unavailable"
        );
    }
    let summary = stopped(shutdown, run).await;
    assert_eq!((summary.handled, summary.errors), (0, 2));
}

#[tokio::test]
async fn an_endpoint_runs_at_most_concurrency_calls_at_once() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (active, most) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut bounded = natty
        .service(ServiceConfig::new("bounded", "1.0.0").concurrency(2))
        .await
        .unwrap();
    let handler = {
        let (release, active, most) =
            (Arc::clone(&release), Arc::clone(&active), Arc::clone(&most));
        tower::service_fn(move |_: Request| {
            let (started, release) = (started_tx.clone(), Arc::clone(&release));
            let (active, most) = (Arc::clone(&active), Arc::clone(&most));
            async move {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = started.send(());
                release.acquire().await.expect("open").forget();
                active.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ServiceError>(Response::new("done"))
            }
        })
    };
    bounded
        .endpoint(EndpointConfig::new("slow"), handler)
        .await
        .unwrap();
    let (shutdown, run) = spawn(bounded);
    let client = plain(&server).await;

    let mut replies = client.subscribe("bounded-replies.>").await.unwrap();
    for i in 0..5 {
        client
            .publish_with_reply("slow", format!("bounded-replies.{i}"), Bytes::new())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    // Every request has arrived; two start, and each one that ends lets one more start.
    for _ in 0..2 {
        timeout(DEADLINE, started.recv()).await.unwrap().unwrap();
    }
    for round in 0..5 {
        release.add_permits(1);
        timeout(DEADLINE, replies.next()).await.unwrap().unwrap();
        if round < 3 {
            timeout(DEADLINE, started.recv()).await.unwrap().unwrap();
        }
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "never more than two calls at once"
    );
    assert_eq!(stopped(shutdown, run).await.handled, 5);
}

#[tokio::test]
async fn groups_put_endpoints_under_their_prefix_and_queue_group_as_info_shows() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut orders = natty
        .service(ServiceConfig::new("orders", "1.0.0"))
        .await
        .unwrap();
    let mut api = orders.group("api").queue_group("api-workers");
    api.group("v1")
        .endpoint(EndpointConfig::new("get"), tower::service_fn(lookup))
        .await
        .unwrap();
    api.endpoint(
        EndpointConfig::new("find")
            .subject("find.*")
            .queue_group("finders"),
        tower::service_fn(lookup),
    )
    .await
    .unwrap();
    let err = orders
        .endpoint(EndpointConfig::new("get"), tower::service_fn(lookup))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        natty::error::ServeErrorKind::InvalidConfig,
        "the name is taken"
    );
    let (shutdown, run) = spawn(orders);
    let client = plain(&server).await;

    let info = json(&client, "$SRV.INFO.orders").await;
    let mut endpoints: Vec<(String, String, String)> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |key: &str| e[key].as_str().unwrap().to_owned();
            (text("name"), text("subject"), text("queue_group"))
        })
        .collect();
    endpoints.sort();
    assert_eq!(
        endpoints,
        [
            ("find".into(), "api.find.*".into(), "finders".into()),
            ("get".into(), "api.v1.get".into(), "api-workers".into()),
        ]
    );
    let found = client.request("api.v1.get", "7".into()).await.unwrap();
    assert_eq!(found.payload, "order 7");
    let found = client.request("api.find.x", "7".into()).await.unwrap();
    assert_eq!(found.payload, "order 7");
    assert_eq!(stopped(shutdown, run).await.handled, 2);
}

#[tokio::test]
async fn a_bad_name_or_version_is_refused_before_anything_is_sent() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    for config in [
        ServiceConfig::new("or ders", "1.0.0"),
        ServiceConfig::new("orders", "1.0"),
        ServiceConfig::new("orders", "1.0.0").queue_group("a b"),
    ] {
        let err = natty.service(config).await.unwrap_err();
        assert_eq!(err.kind(), natty::error::ServeErrorKind::InvalidConfig);
    }
    let client = plain(&server).await;
    let err = client.request("$SRV.PING", Bytes::new()).await.unwrap_err();
    assert_eq!(
        err.kind(),
        RequestErrorKind::NoResponders,
        "no service was started"
    );
}

#[tokio::test]
async fn an_instance_dropped_without_running_leaves_the_service() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let client = plain(&server).await;
    let orders = natty
        .service(ServiceConfig::new("orders", "1.0.0"))
        .await
        .unwrap();
    assert_eq!(json(&client, "$SRV.PING.orders").await["name"], "orders");

    drop(orders);
    timeout(DEADLINE, no_responders(&client, "$SRV.PING.orders"))
        .await
        .expect("PING stops answering");
}

#[tokio::test]
async fn shutdown_answers_503_to_requests_received_but_not_started() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let mut busy = natty
        .service(ServiceConfig::new("busy", "1.0.0").concurrency(1))
        .await
        .unwrap();
    let handler = {
        let release = Arc::clone(&release);
        tower::service_fn(move |_: Request| {
            let (started, release) = (started_tx.clone(), Arc::clone(&release));
            async move {
                let _ = started.send(());
                release.acquire().await.expect("open").forget();
                Ok::<_, ServiceError>(Response::new("done"))
            }
        })
    };
    busy.endpoint(EndpointConfig::new("work"), handler)
        .await
        .unwrap();
    busy.endpoint(
        EndpointConfig::new("ping"),
        tower::service_fn(|_: Request| async { Ok::<_, ServiceError>(Response::new("pong")) }),
    )
    .await
    .unwrap();
    let (shutdown, run) = spawn(busy);
    let client = plain(&server).await;
    let mut replies = client.subscribe("busy-replies.>").await.unwrap();

    client
        .publish_with_reply("work", "busy-replies.0", Bytes::new())
        .await
        .unwrap();
    timeout(DEADLINE, started.recv()).await.unwrap().unwrap();
    for i in 1..4 {
        client
            .publish_with_reply("work", format!("busy-replies.{i}"), Bytes::new())
            .await
            .unwrap();
    }
    // Answered behind the three on the same connection: they have reached the instance.
    let pong = client.request("ping", Bytes::new()).await.unwrap();
    assert_eq!(pong.payload, "pong");

    shutdown.cancel();
    let mut refused = HashSet::new();
    while refused.len() < 3 {
        let reply = timeout(DEADLINE, replies.next()).await.unwrap().unwrap();
        let headers = reply.headers.expect("a refusal is an error answer");
        assert_eq!(headers.get(SERVICE_ERROR_CODE).unwrap().as_str(), "503");
        assert_eq!(
            headers.get(SERVICE_ERROR).unwrap().as_str(),
            "shutting down"
        );
        assert!(refused.insert(reply.subject.to_string()));
    }
    assert!(!refused.contains("busy-replies.0"));

    release.add_permits(1);
    let done = timeout(DEADLINE, replies.next()).await.unwrap().unwrap();
    assert_eq!(
        (done.subject.as_str(), &done.payload[..]),
        ("busy-replies.0", &b"done"[..])
    );
    let summary = timeout(DEADLINE, run).await.unwrap().unwrap();
    assert_eq!(
        (summary.handled, summary.errors, summary.cut_off),
        (2, 3, 0)
    );
}

#[tokio::test]
async fn natty_s_requester_reads_a_natty_service_s_answers_and_its_errors_typed() {
    use natty::error::RequestErrorKind;
    use natty::requester::Request as Call;
    use tower::ServiceExt;

    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut orders = natty
        .service(ServiceConfig::new("orders", "1.0.0"))
        .await
        .unwrap();
    orders
        .endpoint(
            EndpointConfig::new("get").subject("orders.get"),
            tower::service_fn(lookup),
        )
        .await
        .unwrap();
    let (shutdown, run) = spawn(orders);

    let requester = natty.requester().with_timeout(Duration::from_secs(2));
    let found = requester
        .clone()
        .oneshot(Call::new("orders.get", "7"))
        .await
        .expect("answered");
    assert_eq!(found.payload().as_ref(), b"order 7");

    let err = requester
        .clone()
        .oneshot(Call::new("orders.get", "8"))
        .await
        .expect_err("a service error");
    assert_eq!(err.kind(), RequestErrorKind::Service, "{err}");
    let answer = err.service_error().expect("its code and description");
    assert_eq!(
        (answer.code(), answer.description()),
        (404, "no such order")
    );

    let summary = stopped(shutdown, run).await;
    assert_eq!((summary.handled, summary.errors), (1, 1), "{summary:?}");
    let err = requester
        .oneshot(Call::new("orders.get", "7"))
        .await
        .expect_err("nobody answers after shutdown");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders, "{err}");
}

#[tokio::test]
async fn an_overloaded_endpoint_answers_503_at_once_and_a_hung_one_504_before_the_caller_gives_up()
{
    use tower::ServiceBuilder;

    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut jobs = natty
        .service(ServiceConfig::new("jobs", "1.0.0"))
        .await
        .unwrap();
    // One call at a time, and nothing queued behind it.
    let (entered, mut busy) = mpsc::channel::<()>(1);
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(Mutex::new(Some(released)));
    let slow = tower::service_fn(move |_: Request| {
        let entered = entered.clone();
        let released = Arc::clone(&released);
        async move {
            let _ = entered.send(()).await;
            if let Some(released) = released.lock().await.take() {
                let _ = released.await;
            }
            Ok::<_, ServiceError>(Response::new("done"))
        }
    });
    jobs.endpoint(
        EndpointConfig::new("slow"),
        ServiceBuilder::new()
            .load_shed()
            .concurrency_limit(1)
            .service(slow),
    )
    .await
    .unwrap();
    let hung =
        tower::service_fn(|_: Request| std::future::pending::<Result<Response, ServiceError>>());
    jobs.endpoint(
        EndpointConfig::new("hung"),
        ServiceBuilder::new()
            .timeout(Duration::from_millis(200))
            .service(hung),
    )
    .await
    .unwrap();
    let (shutdown, run) = spawn(jobs);
    let client = plain(&server).await;

    let first = tokio::spawn({
        let client = client.clone();
        async move { client.request("slow", "1".into()).await }
    });
    timeout(DEADLINE, busy.recv())
        .await
        .expect("the first call runs");
    let shed = timeout(Duration::from_secs(2), client.request("slow", "2".into()))
        .await
        .expect("answered at once, not queued")
        .unwrap();
    let headers = shed.headers.expect("an error answer");
    assert_eq!(headers.get(SERVICE_ERROR_CODE).unwrap().as_str(), "503");
    release.send(()).unwrap();
    let done = timeout(DEADLINE, first).await.unwrap().unwrap().unwrap();
    assert_eq!(done.payload.as_ref(), b"done");

    // The caller would wait 5 s; the endpoint's own timeout answers first.
    let asked = async_nats::Request::new()
        .payload("x".into())
        .timeout(Some(Duration::from_secs(5)));
    let late = timeout(Duration::from_secs(3), client.send_request("hung", asked))
        .await
        .expect("answered before the caller's deadline")
        .unwrap();
    let headers = late.headers.expect("an error answer");
    assert_eq!(headers.get(SERVICE_ERROR_CODE).unwrap().as_str(), "504");

    let summary = stopped(shutdown, run).await;
    assert_eq!((summary.handled, summary.errors), (1, 2), "{summary:?}");
}

/// The node whose answer `reply` is, with the request's number: `node:number`.
fn answer_of(reply: &async_nats::Message) -> (String, String) {
    let text = String::from_utf8_lossy(&reply.payload).into_owned();
    let (node, number) = text.split_once(':').expect("node:number");
    (node.to_owned(), number.to_owned())
}

/// Publish `count` requests to `subject`, each with a reply subject of its own under
/// `replies`, and return who answered each; a second answer to any request fails the test.
async fn ask_all(
    client: &async_nats::Client,
    replies: &mut async_nats::Subscriber,
    round: &str,
    count: usize,
) -> HashSet<String> {
    for i in 0..count {
        client
            .publish_with_reply(
                "leader.who",
                format!("replies.{round}.{i}"),
                i.to_string().into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let mut numbers = HashSet::new();
    let mut nodes = HashSet::new();
    while numbers.len() < count {
        let reply = timeout(DEADLINE, replies.next())
            .await
            .expect("every request answered in time")
            .expect("subscribed");
        let (node, number) = answer_of(&reply);
        assert!(numbers.insert(number), "request answered twice");
        nodes.insert(node);
    }
    // A second answer would come as fast as the first did.
    assert!(
        timeout(Duration::from_millis(300), replies.next())
            .await
            .is_err(),
        "no request is answered twice"
    );
    nodes
}

/// The leader-only test's election ttl.
const TTL: Duration = Duration::from_secs(2);

/// The node that answers `leader.who` once a node other than `previous` does.
async fn answered_by_another(client: &async_nats::Client, previous: &str) -> String {
    timeout(DEADLINE, async {
        loop {
            let ask = async_nats::Request::new()
                .payload("probe".into())
                .timeout(Some(Duration::from_millis(500)));
            if let Ok(reply) = client.send_request("leader.who".to_owned(), ask).await {
                let (node, _) = answer_of(&reply);
                if node != previous {
                    break node;
                }
            }
        }
    })
    .await
    .expect("a new leader answers in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_only_endpoint_is_answered_by_the_leader_alone_and_moves_with_leadership() {
    let server = Server::start().unwrap();
    let bucket = format!("svc-leader-{}", std::process::id());
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let natty = connect(&server).await;
        let leadership = natty
            .elect(natty::ElectionConfig::new(&bucket, "leader", name).ttl(TTL))
            .await
            .expect("elect");
        let mut instance = natty
            .service(ServiceConfig::new("leader", "1.0.0"))
            .await
            .unwrap();
        instance
            .group("leader")
            .endpoint(
                EndpointConfig::new("who").leader_only(leadership.clone()),
                tower::service_fn(move |request: Request| {
                    let payload = format!("{name}:{}", String::from_utf8_lossy(request.payload()));
                    async move { Ok::<_, ServiceError>(Response::new(payload)) }
                }),
            )
            .await
            .unwrap();
        let id = instance.id().to_owned();
        let run = spawn(instance);
        nodes.push((name, leadership, run, natty, id));
    }
    // Some node leads, and its endpoint is subscribed: a request is answered.
    let client = plain(&server).await;
    let first = timeout(DEADLINE, async {
        loop {
            let ask = async_nats::Request::new()
                .payload("probe".into())
                .timeout(Some(Duration::from_millis(500)));
            if let Ok(reply) = client.send_request("leader.who".to_owned(), ask).await {
                break answer_of(&reply).0;
            }
        }
    })
    .await
    .expect("a leader answers in time");
    let leader = nodes
        .iter()
        .find(|(name, ..)| *name == first)
        .expect("a node answered");
    assert!(leader.1.is_leader(), "the node that answers leads");

    let mut replies = client.subscribe("replies.>").await.unwrap();
    client.flush().await.unwrap();
    let answered = ask_all(&client, &mut replies, "before", 50).await;
    assert_eq!(
        answered,
        HashSet::from([first.clone()]),
        "the leader alone answers"
    );

    let stepped_down = tokio::time::Instant::now();
    assert!(leader.1.step_down().await.expect("campaign runs"));
    let next = answered_by_another(&client, &first).await;
    let handover = stepped_down.elapsed();
    // A step-down releases the key, so a standby takes over at once rather than after a ttl.
    assert!(handover < TTL, "the new leader answers within {handover:?}");
    println!("handover after a step-down: {handover:?}");
    let answered = ask_all(&client, &mut replies, "after", 50).await;
    assert_eq!(
        answered,
        HashSet::from([next.clone()]),
        "the new leader alone answers, the old one no more"
    );
    assert!(!leader.1.is_leader());

    // A second handover: whoever leads now may have led before. Every instance lists the
    // endpoint once in INFO however many terms it served (a term subscribes it again).
    let second = nodes.iter().find(|(name, ..)| *name == next).unwrap();
    assert!(second.1.step_down().await.expect("campaign runs"));
    let third = answered_by_another(&client, &next).await;
    let answered = ask_all(&client, &mut replies, "third", 50).await;
    assert_eq!(answered, HashSet::from([third]));
    for (name, .., id) in &nodes {
        let info = json(&client, &format!("$SRV.INFO.leader.{id}")).await;
        let subjects: Vec<_> = info["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|endpoint| endpoint["subject"].clone())
            .collect();
        assert!(
            subjects.iter().filter(|s| *s == "leader.who").count() <= 1,
            "{name} lists the endpoint once: {info}"
        );
    }

    for (_, leadership, (shutdown, run), ..) in nodes {
        stopped(shutdown, run).await;
        leadership.stop().await;
    }
}

#[tokio::test]
async fn a_request_without_a_reply_subject_is_dropped_and_the_endpoint_keeps_answering() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut orders = natty
        .service(ServiceConfig::new("orders", "1.0.0"))
        .await
        .unwrap();
    orders
        .endpoint(EndpointConfig::new("get"), tower::service_fn(lookup))
        .await
        .unwrap();
    let (shutdown, run) = spawn(orders);
    let client = plain(&server).await;

    // Fire-and-forget messages on the endpoint's subject: nobody to answer, nothing to crash.
    for _ in 0..10 {
        client.publish("get", "7".into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let reply = timeout(DEADLINE, client.request("get", "7".into()))
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(reply.payload.as_ref(), b"order 7");

    let summary = stopped(shutdown, run).await;
    assert_eq!(summary.panicked, 0, "{summary:?}");
    assert!(summary.handled >= 1, "{summary:?}");
}
