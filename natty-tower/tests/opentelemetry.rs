//! Trace context from publisher to consumer (the `opentelemetry` feature), against a real
//! server, exported through the OpenTelemetry SDK's in-memory exporter: a message published
//! inside a span is handled in a `process` span of the same trace, parented on that span.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use natty::{CancellationToken, Config, ConsumeConfig, Natty, OutgoingMessage};
use natty_testkit::Server;
use natty_tower::error::BoxError;
use natty_tower::ServiceBuilderExt;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
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
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("natty-tests"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only global subscriber of this binary");
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        (exporter, provider)
    })
}

/// The exported `process` spans of `trace`'s trace, once there are `n` (waits for them).
async fn process_spans(trace: &SpanContext, n: usize) -> Vec<SpanData> {
    let (exporter, provider) = exporter();
    let started = Instant::now();
    loop {
        provider
            .force_flush()
            .expect("the in-memory exporter flushes");
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .expect("the in-memory exporter lists")
            .into_iter()
            .filter(|span| {
                span.name == "process" && span.span_context.trace_id() == trace.trace_id()
            })
            .collect();
        if spans.len() >= n || started.elapsed() > DEADLINE {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Serve `ORDERS` through a traced, acking stack until `n` messages were handled.
async fn serve_until(natty: &Natty, n: usize) {
    let consumer = natty
        .consumer(ConsumeConfig::new("ORDERS", "billing"))
        .await
        .unwrap();
    let (handled, mut seen) = mpsc::unbounded_channel();
    let stack = ServiceBuilder::new()
        .trace_messages()
        .ack_messages()
        .service(service_fn(move |msg: natty::Message| {
            let handled = handled.clone();
            async move {
                tracing::info!("billing {}", msg.subject());
                let _ = handled.send(());
                Ok::<_, BoxError>(())
            }
        }));
    let shutdown = CancellationToken::new();
    let serving = consumer.serve(shutdown.clone(), stack);
    let waiting = async {
        for _ in 0..n {
            timeout(DEADLINE, seen.recv())
                .await
                .expect("every message handled in time");
        }
        shutdown.cancel();
    };
    let (served, ()) = tokio::join!(serving, waiting);
    served.expect("serve ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_in_a_span_is_processed_in_a_child_span_of_it() {
    exporter();
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();

    // One message through `publish`, one through the `Publisher` service, each in its own span.
    let created = tracing::info_span!("create_order");
    let created_context = created.context().span().span_context().clone();
    natty
        .publish("orders.created", "1")
        .instrument(created.clone())
        .await
        .unwrap();
    let paid = tracing::info_span!("pay_order");
    let paid_context = paid.context().span().span_context().clone();
    let mut publisher = natty.publisher();
    let ready = publisher.ready().await.unwrap();
    let call = paid.in_scope(|| ready.call(OutgoingMessage::new("orders.paid", "2")));
    call.await.unwrap();
    natty.flush().await;
    drop((created, paid));
    assert!(created_context.is_valid() && paid_context.is_valid());

    // A plain client reads the W3C header natty wrote.
    let client = async_nats::connect(server.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("ORDERS")
        .await
        .unwrap();
    let stored = stream.get_raw_message(1).await.unwrap();
    let traceparent = stored
        .headers
        .get("traceparent")
        .map(|value| value.as_str().to_owned());
    assert_eq!(
        traceparent,
        Some(format!(
            "00-{}-{}-01",
            created_context.trace_id(),
            created_context.span_id()
        )),
        "the stored message carries create_order's trace context"
    );

    serve_until(&natty, 2).await;
    for (publisher_span, subject) in [
        (&created_context, "orders.created"),
        (&paid_context, "orders.paid"),
    ] {
        let spans = process_spans(publisher_span, 1).await;
        assert_eq!(spans.len(), 1, "one process span in {subject}'s trace");
        let process = &spans[0];
        assert_eq!(
            process.parent_span_id,
            publisher_span.span_id(),
            "{subject}"
        );
        assert!(
            process.parent_span_is_remote,
            "{subject}: parented through the headers"
        );
        assert_eq!(process.span_kind, SpanKind::Consumer, "{subject}");
        assert_eq!(
            attribute(process, "messaging.destination.name").as_deref(),
            Some(subject)
        );
        assert_eq!(
            attribute(process, "messaging.system").as_deref(),
            Some("nats")
        );
        assert_eq!(
            attribute(process, "messaging.consumer.group.name").as_deref(),
            Some("billing")
        );
    }
    natty.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_style_traceparent_header_from_a_plain_client_parents_the_process_span() {
    exporter();
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();

    // Go's propagation writes canonical MIME names: `Traceparent`, `Tracestate`.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let span_id = "b7ad6b7169203331";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Traceparent", format!("00-{trace_id}-{span_id}-01"));
    headers.insert("Tracestate", "vendor=go");
    let client = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(client)
        .publish_with_headers("orders.created", headers, "from go".into())
        .await
        .unwrap()
        .await
        .unwrap();

    serve_until(&natty, 1).await;
    let remote = SpanContext::new(
        opentelemetry::trace::TraceId::from_hex(trace_id).unwrap(),
        SpanId::from_hex(span_id).unwrap(),
        opentelemetry::trace::TraceFlags::SAMPLED,
        true,
        Default::default(),
    );
    let spans = process_spans(&remote, 1).await;
    assert_eq!(
        spans.len(),
        1,
        "the process span joined the Go service's trace"
    );
    assert_eq!(spans[0].parent_span_id, remote.span_id());
    assert_eq!(
        spans[0].span_context.trace_state().header(),
        "vendor=go",
        "tracestate travels with the context"
    );
    natty.shutdown().await;
}
