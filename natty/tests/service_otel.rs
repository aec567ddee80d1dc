//! A service request's span under the `opentelemetry` feature, against a real server,
//! exported through the OpenTelemetry SDK's in-memory exporter: its parent is the span whose
//! W3C trace context the request's headers carry.
#![cfg(feature = "opentelemetry")]

use std::time::Duration;

use natty::service::{EndpointConfig, Request, Response, ServiceConfig, ServiceError};
use natty_testkit::Server;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

mod common;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_request_s_span_is_a_child_of_the_trace_context_its_headers_carry() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("natty-tests"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the only global subscriber of this binary");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let server = Server::start().unwrap();
    let natty = common::connect(&server).await;
    let mut instance = natty
        .service(ServiceConfig::new("traced", "1.0.0"))
        .await
        .unwrap();
    instance
        .endpoint(
            EndpointConfig::new("echo"),
            tower::service_fn(|request: Request| async move {
                Ok::<_, ServiceError>(Response::new(request.into_payload()))
            }),
        )
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(instance.run(shutdown.clone()));

    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{trace}-{parent}-01").as_str());
    let client = async_nats::connect(server.url()).await.unwrap();
    timeout(
        DEADLINE,
        client.request_with_headers("echo", headers, "hi".into()),
    )
    .await
    .expect("answered in time")
    .expect("answered");
    shutdown.cancel();
    timeout(DEADLINE, run).await.unwrap().unwrap();

    provider.force_flush().expect("flushes");
    let spans: Vec<_> = exporter
        .get_finished_spans()
        .expect("lists")
        .into_iter()
        .filter(|span| span.name == "service request")
        .collect();
    assert_eq!(spans.len(), 1, "one span per request");
    let span = &spans[0];
    assert_eq!(
        span.span_context.trace_id(),
        TraceId::from_hex(trace).unwrap()
    );
    assert_eq!(span.parent_span_id, SpanId::from_hex(parent).unwrap());
}
