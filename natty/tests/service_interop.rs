//! natty's services and another language's, on one server. Two Python clients read a natty
//! service: nats-py (`nats.micro`) and natsio (Synadia's client) each ask PING, INFO and STATS,
//! parse every answer with their own response types, and call an endpoint, reading a success
//! and a service error from its headers. And natty's requester calls a nats-py micro service,
//! getting its answers and its errors typed.
//!
//! The Python comes from `scripts/pcgroups-venv` (Python 3.13+ with natsio and nats-py,
//! installed into `.natty/`); without one each test says loudly that it did not run.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use natty::error::RequestErrorKind;
use natty::requester;
use natty::service::{EndpointConfig, Request, Response, ServiceConfig, ServiceError};
use natty_testkit::{Process, Server};
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

mod common;
use common::connect;

const DEADLINE: Duration = Duration::from_secs(60);

/// The venv's Python, or `None` after saying loudly that `test` did not run.
async fn python_for(test: &str) -> Option<String> {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    if python.is_none() {
        println!("{test}: NOT RUN: no Python 3.13+ with natsio and nats-py (scripts/pcgroups-venv failed)");
    }
    python
}

fn python() -> Option<String> {
    Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/pcgroups-venv"
    ))
    .stderr(Stdio::inherit())
    .output()
    .ok()
    .filter(|out| out.status.success())
    .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natsio_reads_ping_info_and_stats_and_calls_an_endpoint() {
    let Some(python) = python_for("natsio_reads_ping_info_and_stats").await else {
        return;
    };
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut orders = natty
        .service(ServiceConfig::new("orders", "2.0.1").description("order lookups"))
        .await
        .unwrap();
    orders
        .group("orders")
        .endpoint(
            EndpointConfig::new("get"),
            tower::service_fn(|request: Request| async move {
                match request.payload().as_ref() {
                    b"7" => Ok(Response::new("order 7")),
                    _ => Err(ServiceError::new(404, "no such order")),
                }
            }),
        )
        .await
        .unwrap();
    let id = orders.id().to_owned();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(orders.run(shutdown.clone()));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/micro_client.py");
    let args = [script, &server.url(), "orders", "orders.get"];
    let read = run_python(python, args.map(str::to_owned).into()).await;

    assert_eq!(read["ping_type_ok"], true);
    assert_eq!(read["ping"], json!(["orders", "2.0.1", id]));
    assert_eq!(read["info_type_ok"], true);
    assert_eq!(read["description"], "order lookups");
    assert_eq!(read["endpoints"], json!([["get", "orders.get", "q"]]));
    assert_eq!(read["found"], "order 7");
    assert_eq!(read["error"], json!(["404", "no such order"]));
    assert_eq!(read["stats_type_ok"], true);
    assert_eq!(read["started"], true);
    assert_eq!(read["stats"], json!([["get", 2, 1]]));

    shutdown.cancel();
    let summary = timeout(DEADLINE, run).await.unwrap().unwrap();
    assert_eq!((summary.handled, summary.errors), (1, 1));
}

/// Runs a script (the first of `args`) in the venv's Python and parses the one JSON object it prints.
async fn run_python(python: String, args: Vec<String>) -> Value {
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(args)
            .stderr(Stdio::inherit())
            .output()
    });
    let out = timeout(DEADLINE, run)
        .await
        .expect("the python client ends in time")
        .unwrap()
        .expect("python runs");
    assert!(out.status.success(), "the python client fails: {out:?}");
    serde_json::from_slice(&out.stdout).expect("one json object")
}

const NATS_PY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/nats_py_micro.py"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_reads_ping_info_and_stats_and_calls_an_endpoint() {
    let Some(python) = python_for("nats_py_reads_ping_info_and_stats").await else {
        return;
    };
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let mut stock = natty
        .service(
            ServiceConfig::new("stock", "3.1.0")
                .description("stock levels")
                .metadata([("team", "warehouse")]),
        )
        .await
        .unwrap();
    stock
        .group("stock")
        .endpoint(
            EndpointConfig::new("get").metadata([("cached", "no")]),
            tower::service_fn(|request: Request| async move {
                match request.payload().as_ref() {
                    b"7" => Ok(Response::new("7 in stock")),
                    _ => Err(ServiceError::new(404, "no such item")),
                }
            }),
        )
        .await
        .unwrap();
    let id = stock.id().to_owned();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(stock.run(shutdown.clone()));

    let args = [NATS_PY, "read", &server.url(), "stock", "stock.get"];
    let read = run_python(python, args.map(str::to_owned).into()).await;

    assert_eq!(read["types_ok"], json!([true, true, true]));
    assert_eq!(read["ping"], json!(["stock", "3.1.0", id]));
    assert_eq!(read["description"], "stock levels");
    assert_eq!(read["metadata"], json!({"team": "warehouse"}));
    assert_eq!(
        read["endpoints"],
        json!([["get", "stock.get", "q", {"cached": "no"}]])
    );
    assert_eq!(read["found"], "7 in stock");
    assert_eq!(read["error"], json!(["404", "no such item"]));
    assert_eq!(read["stats"], json!([["get", 2, 1, "404:no such item"]]));
    // The fields nats-py's STATS parser needed added (see `ask_stats` in the script): no more
    // than these, so a change on either side shows here.
    assert_eq!(read["adjusted"], json!(["metadata", "endpoints.data"]));
    assert_eq!(read["timed"], true, "processing times are counted: {read}");

    shutdown.cancel();
    let summary = timeout(DEADLINE, run).await.unwrap().unwrap();
    assert_eq!((summary.handled, summary.errors), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natty_s_requester_calls_a_nats_py_service_and_gets_its_errors_typed() {
    let Some(python) = python_for("natty_s_requester_calls_a_nats_py_service").await else {
        return;
    };
    let server = Server::start().unwrap();
    let mut service = Process::spawn(
        Command::new(python)
            .args([NATS_PY, "serve", &server.url()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .expect("the nats-py service starts");
    let stdout = service.take_stdout().expect("piped stdout");
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.starts_with("ready "))
    });
    timeout(DEADLINE, ready)
        .await
        .expect("the nats-py service is ready in time")
        .unwrap()
        .expect("the nats-py service says it is ready");

    let natty = connect(&server).await;
    let requester = natty.requester().with_timeout(Duration::from_secs(5));
    let found = requester
        .request(requester::Request::new("inventory.get", "7"))
        .await
        .expect("an answer");
    assert_eq!(found.payload().as_ref(), b"item 7");

    let refused = requester
        .request(requester::Request::new("inventory.get", "8"))
        .await
        .expect_err("a service error");
    assert_eq!(refused.kind(), RequestErrorKind::Service);
    let answer = refused.service_error().expect("the service's answer");
    assert_eq!((answer.code(), answer.description()), (404, "no such item"));

    let raised = requester
        .request(requester::Request::new("inventory.boom", ""))
        .await
        .expect_err("a service error");
    assert_eq!(raised.kind(), RequestErrorKind::Service);
    let answer = raised.service_error().expect("the service's answer");
    assert_eq!(
        (answer.code(), answer.description()),
        (500, "the handler raised")
    );

    // Closing its stdin stops the service: its endpoints leave and nobody answers.
    drop(service.take_stdin());
    let stopped = tokio::task::spawn_blocking(move || service.wait_timeout(DEADLINE));
    timeout(DEADLINE, stopped)
        .await
        .expect("the nats-py service stops in time")
        .unwrap()
        .unwrap()
        .expect("the nats-py service exits");
    let gone = requester
        .request(requester::Request::new("inventory.get", "7"))
        .await
        .expect_err("nobody answers");
    assert_eq!(gone.kind(), RequestErrorKind::NoResponders);
}
