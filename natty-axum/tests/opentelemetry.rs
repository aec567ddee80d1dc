//! The `opentelemetry` feature from an axum handler: what a handler publishes through
//! natty-axum's `AckedPublisher` carries the trace context of the request's span, as a plain client
//! reads it back.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::routing::post;
use axum::Router;
use common::{listener, serve, Http};
use natty::compat::GoNatty as _;
use natty::{Config, Natty};
use natty_axum::{extract, AckedPublisher, NattyState};
use natty_testkit::Server;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

async fn create_order(
    publisher: AckedPublisher,
    extract::Bytes(body): extract::Bytes,
) -> Result<String, natty_axum::rejection::PublishRejection> {
    Ok(publisher
        .publish_acked("orders.created", body)
        .await?
        .sequence
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_publish_carries_the_request_spans_trace_context() {
    let provider = SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("natty-axum-tests"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the only global subscriber of this binary");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    let state = NattyState::builder(natty.clone())
        .allow_subjects("orders.>")
        .build()
        .unwrap();

    // A request span per request, as tower-http's `TraceLayer` makes; its context is kept.
    let seen: Arc<Mutex<Vec<SpanContext>>> = Arc::default();
    let spans = Arc::clone(&seen);
    let request_span = move |request: Request, next: Next| {
        let spans = Arc::clone(&spans);
        async move {
            let span = tracing::info_span!("request", uri = %request.uri());
            spans
                .lock()
                .unwrap()
                .push(span.context().span().span_context().clone());
            next.run(request).instrument(span).await
        }
    };
    let app = Router::new()
        .route("/orders", post(create_order))
        .layer(middleware::from_fn(request_span))
        .with_state(state);
    let served = serve(listener().await, app);

    let answer = Http::new().post(&served.url("/orders"), "order 1").await;
    assert_eq!(answer.status, http::StatusCode::OK, "{}", answer.body);
    let sequence: u64 = answer.body.parse().unwrap();

    let plain = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stored = plain
        .get_stream("ORDERS")
        .await
        .unwrap()
        .get_raw_message(sequence)
        .await
        .unwrap();
    let request = seen.lock().unwrap()[0].clone();
    assert!(request.is_valid());
    assert_eq!(
        stored
            .headers
            .get("traceparent")
            .map(|v| v.as_str().to_owned()),
        Some(format!(
            "00-{}-{}-01",
            request.trace_id(),
            request.span_id()
        )),
        "the stored message names the request's span"
    );
    natty.shutdown().await;
}
