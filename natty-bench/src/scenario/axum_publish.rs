//! `axum-publish`: requests per second through an axum route that publishes with
//! natty-axum's `AckedPublisher` extractor behind its leader-only layer, against a plain axum route
//! that publishes with a cloned async-nats JetStream context.
//!
//! natty-axum's `AckedPublisher` answers once the stream has stored the message, so the baseline
//! waits for its publish ack as well: both sides answer 204 after the same guarantee. The
//! load comes from 32 keep-alive connections in this process.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use natty::{CancellationToken, ElectionConfig};
use natty_axum::leader::LeaderOnlyLayer;
use natty_axum::rejection::PublishRejection;
use natty_axum::{AckedPublisher, NattyState};

use super::{check_count, payload, sides, Bench, BoxError, Comparison, Side, ROUNDS};
use crate::load;
use crate::report::{Better, Goal};

pub(crate) const STREAM: &str = "BENCH_AXUM";
const NATTY_SUBJECT: &str = "bench.axum.natty";
const BASELINE_SUBJECT: &str = "bench.axum.baseline";
pub(crate) const PATH: &str = "/publish";
pub(crate) const CONNECTIONS: usize = 32;
const REQUESTS: usize = 20_000;

/// The comparison.
pub(crate) async fn run(bench: &Bench) -> Result<Vec<Comparison>, BoxError> {
    let requests = bench.count(REQUESTS);
    bench.natty.stream(STREAM)?.create(["bench.axum.>"]).await?;
    let stop = CancellationToken::new();

    let leadership = bench
        .natty
        .elect(ElectionConfig::new("bench_axum", "publisher", "bench").ttl(Duration::from_secs(10)))
        .await?;
    tokio::time::timeout(Duration::from_secs(15), leadership.wait_leader()).await??;
    let state = NattyState::builder(bench.natty.clone())
        .allow_subjects("bench.axum.>")
        .leadership(leadership.clone())
        .build()?;
    let natty_app = Router::new()
        .route(PATH, post(natty_publish))
        .route_layer(LeaderOnlyLayer::new(state.clone()))
        .with_state(state);
    let natty_addr = serve(natty_app, &stop).await?;

    let baseline_app = Router::new()
        .route(PATH, post(plain_publish))
        .with_state(jetstream::new(bench.plain_client().await?));
    let baseline_addr = serve(baseline_app, &stop).await?;

    let mut comparison = Comparison::new(
        "axum-publish",
        "req/s",
        Better::Higher,
        Goal::RatioAtLeast(0.9),
        "axum + cloned async-nats, ack awaited",
    );
    let body = payload();
    for round in 0..ROUNDS {
        for side in sides(round) {
            bench.purge(STREAM).await?;
            let addr = match side {
                Side::Natty => natty_addr,
                Side::Baseline => baseline_addr,
            };
            let rate = load::post(addr, PATH, body.clone(), CONNECTIONS, requests).await?;
            check_count("axum publish", bench.stored(STREAM).await?, requests)?;
            match side {
                Side::Natty => comparison.natty.push(rate),
                Side::Baseline => comparison.baseline.push(rate),
            }
        }
    }
    stop.cancel();
    leadership.stop().await;
    Ok(vec![comparison])
}

pub(crate) async fn natty_publish(
    publisher: AckedPublisher,
    body: Bytes,
) -> Result<StatusCode, PublishRejection> {
    publisher.publish_acked(NATTY_SUBJECT, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn plain_publish(
    State(jetstream): State<jetstream::Context>,
    body: Bytes,
) -> Result<StatusCode, (StatusCode, String)> {
    let failed = |err: jetstream::context::PublishError| {
        (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    };
    jetstream
        .publish(BASELINE_SUBJECT, body)
        .await
        .map_err(failed)?
        .await
        .map_err(failed)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The baseline with a fresh `Nats-Msg-Id` on every message, as natty sends (explain only).
pub(crate) async fn plain_publish_with_id(
    State(jetstream): State<jetstream::Context>,
    body: Bytes,
) -> Result<StatusCode, (StatusCode, String)> {
    let failed = |err: jetstream::context::PublishError| {
        (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{:032x}", fastrand::u128(..)).as_str(),
    );
    jetstream
        .publish_with_headers(BASELINE_SUBJECT, headers, body)
        .await
        .map_err(failed)?
        .await
        .map_err(failed)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Serve `app` on a loopback port until `stop`; returns the address.
pub(crate) async fn serve(app: Router, stop: &CancellationToken) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = stop.clone();
    tokio::spawn(async move {
        let serving = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(err) = serving.await {
            eprintln!("natty-bench: axum server failed: {err}");
        }
    });
    Ok(addr)
}
