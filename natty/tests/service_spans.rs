//! The span every service request runs in, read from captured logs. Alone in its test binary:
//! `natty_testkit::Logs` captures one thread's logs, and tests running beside it on other
//! threads could register a log call site while no capture listens.

use std::time::Duration;

use bytes::Bytes;
use natty::service::{EndpointConfig, Request, Response, ServiceConfig, ServiceError};
use natty_testkit::Server;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

mod common;
use common::connect;

const DEADLINE: Duration = Duration::from_secs(10);

/// Answers `7` with an order and anything else with a 404.
async fn lookup(request: Request) -> Result<Response, ServiceError> {
    match request.payload().as_ref() {
        b"7" => Ok(Response::new("order 7")),
        _ => Err(ServiceError::new(404, "no such order")),
    }
}

#[tokio::test]
async fn each_request_runs_in_a_span_with_its_subject_endpoint_and_answer_code() {
    let (logs, _guard) = natty_testkit::Logs::capture();
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut instance = natty
        .service(ServiceConfig::new("spans", "1.0.0"))
        .await
        .unwrap();
    instance
        .group("orders")
        .endpoint(EndpointConfig::new("get"), tower::service_fn(lookup))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(instance.run(shutdown.clone()));
    let client = async_nats::connect(server.url()).await.expect("connect");
    for payload in ["7", "8"] {
        timeout(DEADLINE, client.request("orders.get", Bytes::from(payload)))
            .await
            .expect("answered in time")
            .expect("answered");
    }
    shutdown.cancel();
    timeout(DEADLINE, run)
        .await
        .expect("stops in time")
        .expect("no panic");

    let answered = logs.lines("DEBUG", "service request answered");
    let in_span = |code: &str| {
        answered.iter().any(|line| {
            line.contains("service request{subject=orders.get endpoint=get")
                && line.contains(&format!("code={code}"))
        })
    };
    assert_eq!(answered.len(), 2, "one span per request: {answered:?}");
    assert!(in_span("200"), "the order's span: {answered:?}");
    assert!(in_span("404"), "the missing order's span: {answered:?}");
}
