//! Hostile requests to a natty service, sent as any client could: headers past the server's
//! limit, large headers within it, header blocks no NATS client would write, payloads that
//! are not the JSON an endpoint takes. Each gets a typed answer or error; the service keeps
//! answering and its stats count what it handled.

use std::time::Duration;

use natty::error::RequestErrorKind;
use natty::header::HeaderMap;
use natty::requester;
use natty::service::{
    EndpointConfig, Request, Response, ServeSummary, ServiceConfig, ServiceError,
};
use natty_testkit::Server;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

mod common;
use common::connect;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(serde::Deserialize)]
struct Lookup {
    id: u64,
}

/// `orders.get` takes `{"id": N}` and answers with the number of header bytes it was sent.
async fn lookup(request: Request) -> Result<Response, ServiceError> {
    let lookup: Lookup = request.json()?;
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    Ok(Response::new(format!("{} {header_bytes}", lookup.id)))
}

async fn serve_orders(server: &Server) -> (CancellationToken, JoinHandle<ServeSummary>) {
    let natty = connect(server).await;
    let mut orders = natty
        .service(ServiceConfig::new("orders", "1.0.0"))
        .await
        .unwrap();
    orders
        .group("orders")
        .endpoint(EndpointConfig::new("get"), tower::service_fn(lookup))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(orders.run(shutdown.clone()));
    (shutdown, run)
}

/// Raw protocol bytes to the server from a client that speaks NATS by hand, then a PING; returns
/// everything the server sent back up to its PONG.
async fn raw(server: &Server, ops: &[u8]) -> String {
    let address = server.url().trim_start_matches("nats://").to_owned();
    let mut socket = TcpStream::connect(address).await.unwrap();
    let connect = br#"CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1}"#;
    socket.write_all(connect).await.unwrap();
    socket.write_all(b"\r\nSUB raw.reply 1\r\n").await.unwrap();
    socket.write_all(ops).await.unwrap();
    socket.write_all(b"PING\r\n").await.unwrap();
    let mut read = Vec::new();
    let mut buf = [0; 4096];
    while !String::from_utf8_lossy(&read).contains("PONG") {
        let n = timeout(DEADLINE, socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "the server closed: {}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&read).into_owned()
}

/// The one endpoint's stats, as any client reads them.
async fn endpoint_stats(server: &Server) -> Value {
    let client = async_nats::connect(server.url()).await.unwrap();
    let reply = timeout(DEADLINE, client.request("$SRV.STATS.orders", "".into()))
        .await
        .expect("stats in time")
        .unwrap();
    let stats: Value = serde_json::from_slice(&reply.payload).unwrap();
    stats["endpoints"][0].clone()
}

fn get(payload: &'static str) -> requester::Request {
    requester::Request::new("orders.get", payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_past_the_server_limit_are_refused_before_sending_and_large_ones_are_served() {
    let server = Server::start().unwrap();
    let (shutdown, run) = serve_orders(&server).await;
    let natty = connect(&server).await;
    let requester = natty.requester().with_timeout(DEADLINE);

    let mut past = HeaderMap::new();
    past.insert("Padding", "x".repeat(1_100_000)); // the server takes 1 MiB with headers
    let refused = requester
        .request(get(r#"{"id":7}"#).with_headers(past))
        .await
        .expect_err("refused");
    assert_eq!(refused.kind(), RequestErrorKind::PayloadTooLarge);

    let mut large = HeaderMap::new();
    for i in 0..100 {
        large.insert(&format!("Padding-{i:03}"), "x".repeat(3_000));
    }
    let answer = requester
        .request(get(r#"{"id":7}"#).with_headers(large))
        .await
        .expect("large headers within the limit are served");
    assert_eq!(
        answer.payload().as_ref(),
        format!("7 {}", 100 * (11 + 3_000)).as_bytes()
    );

    let stats = endpoint_stats(&server).await;
    assert_eq!(
        (stats["num_requests"].as_u64(), stats["num_errors"].as_u64()),
        (Some(1), Some(0))
    );
    shutdown.cancel();
    let summary = timeout(DEADLINE, run).await.unwrap().unwrap();
    assert_eq!(
        (summary.handled, summary.errors, summary.panicked),
        (1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_is_not_the_endpoint_s_json_answers_400_and_counts_an_error() {
    let server = Server::start().unwrap();
    let (shutdown, run) = serve_orders(&server).await;
    let natty = connect(&server).await;
    let requester = natty.requester().with_timeout(DEADLINE);

    for bad in ["seven", r#"{"id":"seven"}"#, "", "\u{0}\u{1}"] {
        let refused = requester.request(get(bad)).await.expect_err("refused");
        assert_eq!(refused.kind(), RequestErrorKind::Service, "{bad:?}");
        let answer = refused.service_error().unwrap();
        assert_eq!(answer.code(), 400, "{bad:?}");
        assert!(
            answer.description().starts_with("invalid JSON payload: "),
            "{answer}"
        );
    }
    let answer = requester.request(get(r#"{"id":7}"#)).await.unwrap();
    assert_eq!(answer.payload().as_ref(), b"7 0");

    let stats = endpoint_stats(&server).await;
    assert_eq!(stats["num_requests"], 5);
    assert_eq!(stats["num_errors"], 4);
    let last = stats["last_error"].as_str().unwrap();
    assert!(last.starts_with("400:invalid JSON payload: "), "{last}");
    shutdown.cancel();
    let summary = timeout(DEADLINE, run).await.unwrap().unwrap();
    assert_eq!(
        (summary.handled, summary.errors, summary.panicked),
        (1, 4, 0)
    );
}

/// A header block async-nats cannot parse (a line without `:`) ends the connection that
/// receives it: async-nats treats it as a protocol error, reconnects and subscribes again. So a
/// hostile publisher costs the service a reconnect, and requests in flight on that connection
/// time out; the service itself keeps running and answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_no_client_would_write_costs_a_reconnect_not_the_service() {
    let server = Server::start().unwrap();
    let (shutdown, run) = serve_orders(&server).await;
    let natty = connect(&server).await;
    let requester = natty.requester().with_timeout(Duration::from_secs(1));
    requester.request(get(r#"{"id":7}"#)).await.unwrap();

    let header = b"NATS/1.0\r\nno colon here\r\n\r\n";
    let payload = br#"{"id":8}"#;
    let mut op = format!(
        "HPUB orders.get raw.reply {} {}\r\n",
        header.len(),
        header.len() + payload.len()
    )
    .into_bytes();
    op.extend_from_slice(header);
    op.extend_from_slice(payload);
    op.extend_from_slice(b"\r\n");
    let sent_back = raw(&server, &op).await;
    assert!(
        !sent_back.contains("-ERR"),
        "the server takes it: {sent_back}"
    );

    // Until the service's connection is back, requests end in typed errors; then it answers.
    let until = tokio::time::Instant::now() + DEADLINE;
    let mut failed = 0;
    loop {
        match requester.request(get(r#"{"id":9}"#)).await {
            Ok(answer) => {
                assert_eq!(answer.payload().as_ref(), b"9 0");
                break;
            }
            Err(err) => {
                let kind = err.kind();
                assert!(
                    matches!(
                        kind,
                        RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
                    ),
                    "{err:?}"
                );
                failed += 1;
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the service answers again"
        );
    }
    println!("requests failed while the service reconnected: {failed}");

    shutdown.cancel();
    let summary = timeout(DEADLINE, run).await.unwrap().unwrap();
    assert_eq!(summary.panicked, 0, "{summary:?}");
    assert_eq!(summary.handled, 2, "{summary:?}");
}
