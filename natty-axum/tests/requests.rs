//! HTTP routes calling a NATS service through the `Requester` extractor, against a real
//! server with a hand-written responder: a service's error code becomes the HTTP status,
//! no responders 503, a timeout 504, each in the JSON error shape.

use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::StatusCode;
use natty::requester::Request;
use natty::service::{SERVICE_ERROR, SERVICE_ERROR_CODE};
use natty::{Config, Natty};
use natty_axum::rejection::RequestRejection;
use natty_axum::{subject, NattyState, Requester};
use natty_testkit::Server;

mod common;
use common::{listener, serve, Http};

/// Calls `svc.<service>.lookup` with the id, waiting 300 ms for the answer.
async fn lookup(
    requester: Requester,
    Path((service, id)): Path<(String, String)>,
) -> Result<Bytes, RequestRejection> {
    let subject = format!("svc.{}.lookup", subject::token(&service)?);
    let request = Request::new(subject, id).with_timeout(Duration::from_millis(300));
    Ok(requester.request(request).await?.into_payload())
}

/// Answers `svc.orders.lookup`: `o-<code>` with the service error `<code>`, `slow` never,
/// anything else with `order <id>`.
async fn orders_service(client: async_nats::Client) {
    let mut requests = client
        .queue_subscribe("svc.orders.lookup", "orders".to_owned())
        .await
        .unwrap();
    // The server handles a client's messages in order: the probe coming back proves it took
    // the subscription (`flush` only writes it out).
    let inbox = client.new_inbox();
    let mut probe = client.subscribe(inbox.clone()).await.unwrap();
    client.publish(inbox, Bytes::new()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), probe.next())
        .await
        .expect("the server answers the probe")
        .unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else { continue };
            let id = String::from_utf8_lossy(&request.payload).into_owned();
            if id == "slow" {
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            let payload = match id.strip_prefix("o-") {
                Some(code) => {
                    headers.insert(SERVICE_ERROR_CODE, code);
                    headers.insert(SERVICE_ERROR, format!("order {id} refused").as_str());
                    Bytes::new()
                }
                None => Bytes::from(format!("order {id}")),
            };
            client
                .publish_with_headers(reply, headers, payload)
                .await
                .unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_errors_no_responders_and_timeouts_answer_their_http_status_as_json() {
    let logs = common::capture_logs();
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    orders_service(async_nats::connect(server.url()).await.unwrap()).await;
    let state = NattyState::builder(natty)
        .allow_requests("svc.*.lookup")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/lookup/{service}/{id}", get(lookup))
        .with_state(state);
    let served = serve(listener().await, app);
    let http = Http::new();

    let answer = http.get(&served.url("/lookup/orders/17")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "order 17");

    let answer = http.get(&served.url("/lookup/orders/o-404")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.json(),
        serde_json::json!({
            "error": "service refused the request",
            "detail": "order o-404 refused",
        })
    );

    // A 5xx keeps its status and tells nothing of the service's description.
    let answer = http.get(&served.url("/lookup/orders/o-500")).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.json(),
        serde_json::json!({ "error": "service failed" })
    );

    // A code that is no HTTP error status is the gateway's failure.
    let answer = http.get(&served.url("/lookup/orders/o-700")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        answer.json(),
        serde_json::json!({ "error": "service failed" })
    );

    let answer = http.get(&served.url("/lookup/billing/17")).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(
        answer.json(),
        serde_json::json!({ "error": "service unavailable" })
    );

    let answer = http.get(&served.url("/lookup/orders/slow")).await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert_eq!(
        answer.json(),
        serde_json::json!({ "error": "service did not answer in time" })
    );

    // A 5xx logs the service's error at ERROR; a 4xx is the caller's and stays at TRACE.
    let logs = logs.text();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.iter().any(|l| l.contains("order o-500 refused")),
        "the 500's cause is logged: {errors:#?}"
    );
    assert!(
        !errors.iter().any(|l| l.contains("order o-404 refused")),
        "a 404 is no server failure: {errors:#?}"
    );
    assert!(logs
        .lines()
        .any(|l| l.contains("TRACE") && l.contains("status=404")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outside_the_allowed_subjects_is_refused_before_sending() {
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    // Publishing to `svc.>` is allowed; requests are not.
    let state = NattyState::builder(natty)
        .allow_subjects("svc.>")
        .allow_requests("svc.orders.lookup")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/lookup/{service}/{id}", get(lookup))
        .with_state(state);
    let served = serve(listener().await, app);
    let http = Http::new();

    let answer = http.get(&served.url("/lookup/billing/17")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(answer.json()["error"], "subject out of scope");
    let answer = http.get(&served.url("/lookup/a.b/17")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid subject");
}
