//! The `opentelemetry` feature from an axum handler, exported through the OpenTelemetry SDK's
//! in-memory exporter: what a handler publishes through natty-axum's `AckedPublisher` carries
//! the trace context of the request's span, `TraceContextLayer` makes the request's
//! `traceparent` that span's parent, and a natty-tower consumer and its dead letter continue
//! the same trace; a malformed `traceparent` starts a fresh trace.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::routing::post;
use axum::Router;
use common::{listener, serve, Http, Served};
use http::Method;
use natty::compat::GoNatty as _;
use natty::{CancellationToken, Config, ConsumeConfig, Natty};
use natty_axum::trace_context::TraceContextLayer;
use natty_axum::{extract, AckedPublisher, NattyState};
use natty_testkit::Server;
use natty_tower::classify::HandlerError;
use natty_tower::error::BoxError;
use natty_tower::ServiceBuilderExt;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceId, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tower::{service_fn, Service, ServiceBuilder};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

const DEADLINE: Duration = Duration::from_secs(30);

/// The exporter every span of this test binary ends in; installed once, as a global subscriber,
/// so spans made on any runtime thread are exported.
fn exporter() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static EXPORT: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    EXPORT.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("natty-axum-tests"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only global subscriber of this binary");
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        (exporter, provider)
    })
}

/// Every span exported so far (a span is exported when it ends).
fn finished_spans() -> Vec<SpanData> {
    let (exporter, provider) = exporter();
    provider
        .force_flush()
        .expect("the in-memory exporter flushes");
    exporter
        .get_finished_spans()
        .expect("the in-memory exporter lists")
}

/// The exported span named `name` whose own id is `span_id`.
fn exported(name: &str, span_id: SpanId) -> SpanData {
    let mut spans: Vec<SpanData> = finished_spans()
        .into_iter()
        .filter(|span| span.name == name && span.span_context.span_id() == span_id)
        .collect();
    assert_eq!(spans.len(), 1, "one exported {name} span {span_id}");
    spans.remove(0)
}

/// The exported `process` spans of `trace_id`'s trace.
fn process_spans(trace_id: TraceId) -> Vec<SpanData> {
    finished_spans()
        .into_iter()
        .filter(|span| span.name == "process" && span.span_context.trace_id() == trace_id)
        .collect()
}

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

/// The context of every request span the app made, in the order of the requests.
type RequestSpans = Arc<Mutex<Vec<SpanContext>>>;

/// Where the app makes its `request` span.
#[derive(Clone, Copy)]
enum RequestSpanIn {
    /// In the middleware's future, as an `axum::middleware` does.
    Future,
    /// In the service's `call`, as tower-http's `TraceLayer` does.
    Call,
}

/// `POST /orders` publishing to `orders.created`, inside a `request` span per request made
/// where `made_in` says, and `trace_context` outside it when `read_trace_context` is set.
fn app(
    state: NattyState,
    made_in: RequestSpanIn,
    read_trace_context: bool,
) -> (Router, RequestSpans) {
    let seen = RequestSpans::default();
    let spans = Arc::clone(&seen);
    let request_span = move |request: Request, next: Next| {
        let spans = Arc::clone(&spans);
        async move {
            let span = tracing::info_span!("request", uri = %request.uri());
            spans.lock().unwrap().push(started(&span));
            next.run(request).instrument(span).await
        }
    };
    let orders = Router::new().route("/orders", post(create_order));
    let app = match made_in {
        RequestSpanIn::Future => orders.layer(middleware::from_fn(request_span)),
        RequestSpanIn::Call => {
            // Around the whole router, as `ServiceBuilder` stacks go: the span is made in
            // `TraceContext`'s own `call`, not in a future it polls.
            let spans = Arc::clone(&seen);
            let traced = ServiceBuilder::new()
                .option_layer(read_trace_context.then(TraceContextLayer::new))
                .layer_fn(move |inner| SpanInCall {
                    inner,
                    spans: Arc::clone(&spans),
                })
                .service(orders.with_state(state));
            return (Router::new().route_service("/orders", traced), seen);
        }
    };
    let app = if read_trace_context {
        app.layer(TraceContextLayer::new())
    } else {
        app
    };
    (app.with_state(state), seen)
}

/// A span's OpenTelemetry context (read now, so the span is started).
fn started(span: &tracing::Span) -> SpanContext {
    span.context().span().span_context().clone()
}

/// Makes the `request` span in `call`, as tower-http's `TraceLayer` does.
#[derive(Clone)]
struct SpanInCall<S> {
    inner: S,
    spans: RequestSpans,
}

impl<S: Service<Request>> Service<Request> for SpanInCall<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let span = tracing::info_span!("request", uri = %request.uri());
        self.spans.lock().unwrap().push(started(&span));
        let future = span.in_scope(|| self.inner.call(request));
        future.instrument(span)
    }
}

async fn setup() -> (Server, Natty, NattyState, async_nats::jetstream::Context) {
    exporter();
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    natty
        .create_stream("ORDERS_DEAD", ["dead.orders"])
        .await
        .unwrap();
    let state = NattyState::builder(natty.clone())
        .allow_subjects("orders.>")
        .build()
        .unwrap();
    let plain = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    (server, natty, state, plain)
}

/// `POST /orders` with `traceparent`, if any; the stream sequence the handler stored it as.
async fn post_order(served: &Served, traceparent: Option<&str>) -> u64 {
    let headers: Vec<(&str, &str)> = traceparent
        .map(|v| ("traceparent", v))
        .into_iter()
        .collect();
    let answer = Http::new()
        .send(Method::POST, &served.url("/orders"), &headers, "order 1")
        .await;
    assert_eq!(answer.status, http::StatusCode::OK, "{}", answer.body);
    answer.body.parse().unwrap()
}

/// The `traceparent` the message at `sequence` of `stream` is stored with, read by a plain
/// client.
async fn stored_traceparent(
    plain: &async_nats::jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Option<String> {
    let stored = plain
        .get_stream(stream)
        .await
        .unwrap()
        .get_raw_message(sequence)
        .await
        .unwrap();
    stored
        .headers
        .get("traceparent")
        .map(|value| value.as_str().to_owned())
}

fn traceparent_of(context: &SpanContext) -> String {
    format!("00-{}-{}-01", context.trace_id(), context.span_id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_publish_carries_the_request_spans_trace_context() {
    let (_server, natty, state, plain) = setup().await;
    let (app, seen) = app(state, RequestSpanIn::Future, false);
    let served = serve(listener().await, app);

    let sequence = post_order(&served, None).await;
    let request = seen.lock().unwrap()[0].clone();
    assert!(request.is_valid());
    assert_eq!(
        stored_traceparent(&plain, "ORDERS", sequence).await,
        Some(traceparent_of(&request)),
        "the stored message names the request's span"
    );
    natty.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_http_request_to_the_consumer_and_its_dead_letter() {
    let (_server, natty, state, plain) = setup().await;
    let (app, seen) = app(state, RequestSpanIn::Future, true);
    let served = serve(listener().await, app);
    let caller_trace = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";
    let caller_span = "00f067aa0ba902b7";
    let trace_id = TraceId::from_hex(caller_trace).unwrap();

    post_order(
        &served,
        Some(&format!("00-{caller_trace}-{caller_span}-01")),
    )
    .await;
    let request = seen.lock().unwrap()[0].clone();
    assert_eq!(
        request.trace_id(),
        trace_id,
        "the request joined the caller's trace"
    );
    let request_span = exported("request", request.span_id());
    assert_eq!(
        request_span.parent_span_id,
        SpanId::from_hex(caller_span).unwrap()
    );
    assert!(request_span.parent_span_is_remote);

    // A traced consumer gives the message up; the dead-letter layer publishes it to `dead.orders`.
    let consumer = natty
        .consumer(ConsumeConfig::new("ORDERS", "billing"))
        .await
        .unwrap();
    let (handled, mut seen_by_handler) = mpsc::unbounded_channel();
    let stack = ServiceBuilder::new()
        .trace_messages()
        .ack_messages()
        .dead_letter(natty.publisher(), "dead.orders")
        .service(service_fn(move |_: natty::Message| {
            let handled = handled.clone();
            async move {
                let _ = handled.send(());
                Err::<(), _>(BoxError::from(HandlerError::give_up("poison")))
            }
        }));
    let shutdown = CancellationToken::new();
    let serving = consumer.serve(shutdown.clone(), stack);
    let waiting = async {
        timeout(DEADLINE, seen_by_handler.recv())
            .await
            .expect("the message handled in time");
        shutdown.cancel();
    };
    let (served_to_end, ()) = tokio::join!(serving, waiting);
    served_to_end.expect("serve ends cleanly");

    // `serve` returned after the call, which waited for the dead letter's ack.
    let process = process_spans(trace_id);
    assert_eq!(process.len(), 1, "one process span in the caller's trace");
    assert_eq!(
        process[0].parent_span_id,
        request.span_id(),
        "the consumer span is a child of the request span"
    );
    let dead_letter = stored_traceparent(&plain, "ORDERS_DEAD", 1).await;
    assert_eq!(
        dead_letter,
        Some(traceparent_of(&process[0].span_context)),
        "the dead letter is a child of the consumer span, in the caller's trace"
    );
    assert!(dead_letter.unwrap().contains(caller_trace));
    natty.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_over_http_starts_a_fresh_trace_every_time() {
    let (_server, natty, state, plain) = setup().await;
    let (app, seen) = app(state, RequestSpanIn::Future, true);
    let served = serve(listener().await, app);

    // Each breaks one W3C rule; the first five OpenTelemetry's propagator alone would take.
    let ids = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
    let malformed = [
        "00-abc-def-01".to_owned(),
        format!("00-+{}-01", &ids[1..]),
        format!("00-0{ids}-01"),
        format!("00-{ids}-01-"),
        format!("0-{ids}-01"),
        format!("00-{}-01", ids.to_ascii_uppercase()),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_owned(),
        format!("ff-{ids}-01"),
        format!("00-{ids}-01-extra"),
        format!("00_{}_01", ids.replace('-', "_")),
    ];
    let mut sequences = Vec::new();
    for traceparent in &malformed {
        sequences.push(post_order(&served, Some(traceparent)).await);
    }

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), malformed.len());
    // The trace ids the values name, as far as a lenient parser reads them.
    let named: Vec<TraceId> = malformed
        .iter()
        .filter_map(|traceparent| traceparent.split('-').nth(1))
        .filter_map(|trace_id| TraceId::from_hex(trace_id).ok())
        .collect();
    let mut fresh = HashSet::new();
    for ((traceparent, request), sequence) in malformed.iter().zip(&requests).zip(sequences) {
        let span = exported("request", request.span_id());
        assert_eq!(
            span.parent_span_id,
            SpanId::INVALID,
            "{traceparent}: a root span"
        );
        assert!(
            !named.contains(&request.trace_id()),
            "{traceparent}: not the trace it names"
        );
        assert!(
            fresh.insert(request.trace_id()),
            "{traceparent}: a new trace"
        );
        assert_eq!(
            stored_traceparent(&plain, "ORDERS", sequence).await,
            Some(traceparent_of(request)),
            "{traceparent}: the publish carries the fresh trace"
        );
    }
    natty.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_span_made_in_call_as_tower_https_trace_layer_does_joins_the_callers_trace() {
    let (_server, natty, state, plain) = setup().await;
    let (app, seen) = app(state, RequestSpanIn::Call, true);
    let served = serve(listener().await, app);
    let caller_trace = "7ace7ace7ace7ace7ace7ace7ace7ace";
    let caller_span = "b7ad6b7169203331";

    let sequence = post_order(
        &served,
        Some(&format!("00-{caller_trace}-{caller_span}-01")),
    )
    .await;
    let request = seen.lock().unwrap()[0].clone();
    assert_eq!(request.trace_id(), TraceId::from_hex(caller_trace).unwrap());
    assert_eq!(
        exported("request", request.span_id()).parent_span_id,
        SpanId::from_hex(caller_span).unwrap()
    );
    assert_eq!(
        stored_traceparent(&plain, "ORDERS", sequence).await,
        Some(traceparent_of(&request)),
        "the publish names the request span"
    );
    natty.shutdown().await;
}
