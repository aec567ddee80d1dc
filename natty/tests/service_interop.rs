//! A natty service read by another language's client: natsio (Synadia's Python client) asks
//! PING, INFO and STATS, parses each answer with `natsio.micro`'s own response types, and
//! calls an endpoint, reading a success and a service error.
//!
//! The Python comes from `scripts/pcgroups-venv` (Python 3.13+ with natsio, installed into
//! `.natty/`); without one the test says loudly that it did not run.

use std::process::{Command, Stdio};
use std::time::Duration;

use natty::service::{EndpointConfig, Request, Response, ServiceConfig, ServiceError};
use natty_testkit::Server;
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

mod common;
use common::connect;

const DEADLINE: Duration = Duration::from_secs(60);

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
    let Some(python) = tokio::task::spawn_blocking(python).await.unwrap() else {
        println!(
            "service_interop: NOT RUN: no Python 3.13+ with natsio (scripts/pcgroups-venv failed)"
        );
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

    let url = server.url();
    let client = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/interop/micro_client.py"
            ))
            .args([url.as_str(), "orders", "orders.get"])
            .stderr(Stdio::inherit())
            .output()
    });
    let out = timeout(DEADLINE, client)
        .await
        .expect("the python client ends in time")
        .unwrap()
        .expect("python runs");
    assert!(out.status.success(), "the python client fails: {out:?}");
    let read: Value = serde_json::from_slice(&out.stdout).expect("one json object");

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
