//! Trace context from publisher to consumer (the `opentelemetry` feature), against a real
//! server, exported through the OpenTelemetry SDK's in-memory exporter: a message published
//! inside a span is handled in a `process` span of the same trace, parented on that span.

use std::sync::OnceLock;
use std::time::Duration;

use natty::compat::GoNatty as _;
use natty::header::{HeaderMap, TRACEPARENT};
use natty::{CancellationToken, Config, ConsumeConfig, Natty, OutgoingMessage};
use natty_testkit::Server;
use natty_tower::classify::HandlerError;
use natty_tower::error::BoxError;
use natty_tower::trace::{DefaultMakeSpan, MakeSpan, TraceLayer};
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

/// The exported `process` spans of `trace`'s trace. A span is exported when it ends, and the
/// message spans end before `serve` returns, so no waiting is needed after [`serve_until`].
fn process_spans(trace: &SpanContext) -> Vec<SpanData> {
    exported(|span| span.span_context.trace_id() == trace.trace_id())
}

/// The exported `process` spans `wanted` picks.
fn exported(wanted: impl Fn(&SpanData) -> bool) -> Vec<SpanData> {
    let (exporter, provider) = exporter();
    provider
        .force_flush()
        .expect("the in-memory exporter flushes");
    exporter
        .get_finished_spans()
        .expect("the in-memory exporter lists")
        .into_iter()
        .filter(|span| span.name == "process" && wanted(span))
        .collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Serve `ORDERS` through a stack traced by `make_span` until `n` messages were handled; a
/// message on `orders.poison` is given up and dead-lettered to `dead.orders`.
async fn serve_until<M>(natty: &Natty, make_span: M, n: usize)
where
    M: MakeSpan + Clone + Send + 'static,
{
    let consumer = natty
        .consumer(ConsumeConfig::new("ORDERS", "billing"))
        .await
        .unwrap();
    let (handled, mut seen) = mpsc::unbounded_channel();
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::new().make_span_with(make_span))
        .ack_messages()
        .dead_letter(natty.publisher(), "dead.orders")
        .service(service_fn(move |msg: natty::Message| {
            let handled = handled.clone();
            async move {
                let _ = handled.send(());
                if msg.subject() == "orders.poison" {
                    return Err(BoxError::from(HandlerError::give_up("poison")));
                }
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

async fn setup() -> (Server, Natty, async_nats::jetstream::Context) {
    exporter();
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    natty
        .create_stream("ORDERS_DEAD", ["dead.orders"])
        .await
        .unwrap();
    let plain = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    (server, natty, plain)
}

/// The `traceparent` of the last message on `subject`, read by a plain client.
async fn stored_traceparent(
    plain: &async_nats::jetstream::Context,
    stream: &str,
    subject: &str,
) -> Option<String> {
    let stream = plain.get_stream(stream).await.unwrap();
    let stored = stream
        .get_last_raw_message_by_subject(subject)
        .await
        .unwrap();
    stored
        .headers
        .get(TRACEPARENT)
        .map(|value| value.as_str().to_owned())
}

fn traceparent_of(context: &SpanContext) -> String {
    format!("00-{}-{}-01", context.trace_id(), context.span_id())
}

/// A new span's OpenTelemetry context (read now, so the span is started).
fn span_context(span: &tracing::Span) -> SpanContext {
    span.context().span().span_context().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_in_a_span_is_processed_in_a_child_span_of_it() {
    let (server, natty, plain) = setup().await;
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    // Every publish path, each in a span of its own.
    let mut expected = Vec::new();
    let span = tracing::info_span!("publish");
    expected.push(("orders.publish", span_context(&span)));
    natty
        .publish("orders.publish", "1")
        .instrument(span)
        .await
        .unwrap();
    let span = tracing::info_span!("service");
    expected.push(("orders.service", span_context(&span)));
    let mut publisher = natty.publisher();
    let ready = publisher.ready().await.unwrap();
    let call = span.in_scope(|| ready.call(OutgoingMessage::new("orders.service", "2")));
    call.await.unwrap();
    let span = tracing::info_span!("try");
    expected.push(("orders.try", span_context(&span)));
    span.in_scope(|| natty.publisher().try_publish("orders.try", "3"))
        .unwrap();
    let span = tracing::info_span!("acked");
    expected.push(("orders.acked", span_context(&span)));
    natty
        .publisher()
        .publish_acked("orders.acked", "4")
        .instrument(span)
        .await
        .unwrap();
    // A malformed `traceparent` of the caller's is replaced; a valid one is kept.
    let span = tracing::info_span!("malformed");
    expected.push(("orders.malformed", span_context(&span)));
    let mut malformed = HeaderMap::new();
    malformed.insert("Traceparent", "00-nonsense-01");
    natty
        .publisher()
        .publish_with_headers("orders.malformed", malformed, "5")
        .instrument(span)
        .await
        .unwrap();
    let mut kept = HeaderMap::new();
    kept.insert(TRACEPARENT, own);
    natty
        .publisher()
        .publish_with_headers("orders.own", kept, "6")
        .instrument(tracing::info_span!("own"))
        .await
        .unwrap();
    natty.publish("orders.plain", "7").await.unwrap(); // outside any span
    natty.flush().await;

    for (subject, context) in &expected {
        assert_eq!(
            stored_traceparent(&plain, "ORDERS", subject).await,
            Some(traceparent_of(context)),
            "{subject} is stored with its span's trace context"
        );
    }
    assert_eq!(
        stored_traceparent(&plain, "ORDERS", "orders.own")
            .await
            .as_deref(),
        Some(own)
    );
    assert_eq!(
        stored_traceparent(&plain, "ORDERS", "orders.plain").await,
        None,
        "nothing outside a span"
    );

    serve_until(&natty, DefaultMakeSpan::new(), 7).await;
    for (subject, publisher_span) in &expected {
        let spans = process_spans(publisher_span);
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
            Some(*subject)
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
    let on = |subject: &'static str| {
        move |span: &SpanData| {
            attribute(span, "messaging.destination.name").as_deref() == Some(subject)
        }
    };
    let own_spans = exported(on("orders.own"));
    assert_eq!(
        own_spans[0].parent_span_id,
        SpanId::from_hex("b7ad6b7169203331").unwrap()
    );
    let plain_spans = exported(on("orders.plain"));
    assert_eq!(plain_spans.len(), 1);
    assert_eq!(
        plain_spans[0].parent_span_id,
        SpanId::INVALID,
        "no context, no remote parent"
    );
    natty.shutdown().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_style_traceparent_from_a_plain_client_parents_a_custom_makers_span() {
    let (_server, natty, plain) = setup().await;

    // Go's propagation writes canonical MIME names: `Traceparent`, `Tracestate`.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span_id = "00f067aa0ba902b7";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Traceparent", format!("00-{trace_id}-{span_id}-01"));
    headers.insert("Tracestate", "vendor=go");
    plain
        .publish_with_headers("orders.created", headers, "from go".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let maker = |msg: &natty::Message| tracing::info_span!("process", order = msg.subject());
    serve_until(&natty, maker, 1).await;
    let remote = SpanContext::new(
        opentelemetry::trace::TraceId::from_hex(trace_id).unwrap(),
        SpanId::from_hex(span_id).unwrap(),
        opentelemetry::trace::TraceFlags::SAMPLED,
        true,
        Default::default(),
    );
    let spans = process_spans(&remote);
    assert_eq!(
        spans.len(),
        1,
        "the custom span joined the Go service's trace"
    );
    assert_eq!(spans[0].parent_span_id, remote.span_id());
    assert_eq!(
        attribute(&spans[0], "order").as_deref(),
        Some("orders.created")
    );
    assert_eq!(
        spans[0].span_context.trace_state().header(),
        "vendor=go",
        "tracestate travels with the context"
    );
    natty.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_carries_the_trace_context_of_the_span_that_gave_up() {
    let (_server, natty, plain) = setup().await;
    let span = tracing::info_span!("create_poison");
    let producer = span_context(&span);
    natty
        .publish("orders.poison", "x")
        .instrument(span)
        .await
        .unwrap();
    natty.flush().await;

    serve_until(&natty, DefaultMakeSpan::new(), 1).await;
    let process = process_spans(&producer);
    assert_eq!(process.len(), 1);
    // The dead-letter layer waits for the dead letter's ack before it terms the original, and
    // `serve` returned after every call: the dead letter is stored.
    assert_eq!(
        stored_traceparent(&plain, "ORDERS_DEAD", "dead.orders").await,
        Some(traceparent_of(&process[0].span_context)),
        "the dead letter is a child of the process span, in the producer's trace"
    );
    natty.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_in_a_message_starts_a_fresh_trace_every_time() {
    let (_server, natty, plain) = setup().await;

    // Each breaks one W3C rule; the first five OpenTelemetry's propagator alone would take.
    let ids = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331";
    let malformed = [
        "00-abc-def-01".to_owned(),
        format!("00-+{}-01", &ids[1..]),
        format!("00-0{ids}-01"),
        format!("00-{ids}-01-"),
        format!("0-{ids}-01"),
        format!("00-{}-01", ids.to_ascii_uppercase()),
        "00-00000000000000000000000000000000-b7ad6b7169203331-01".to_owned(),
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01".to_owned(),
        format!("ff-{ids}-01"),
        format!("00-{ids}-01-extra"),
        format!("00_{}_01", ids.replace('-', "_")),
    ];
    for (i, traceparent) in malformed.iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Traceparent", traceparent.as_str());
        headers.insert("Tracestate", "vendor=malformed");
        plain
            .publish_with_headers(format!("orders.bad.{i}"), headers, "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    serve_until(&natty, DefaultMakeSpan::new(), malformed.len()).await;
    // The trace ids the values name, as far as a lenient parser reads them.
    let named: Vec<opentelemetry::trace::TraceId> = malformed
        .iter()
        .filter_map(|traceparent| traceparent.split('-').nth(1))
        .filter_map(|trace_id| opentelemetry::trace::TraceId::from_hex(trace_id).ok())
        .collect();
    let mut fresh = std::collections::HashSet::new();
    for (i, traceparent) in malformed.iter().enumerate() {
        let subject = format!("orders.bad.{i}");
        let spans = exported(|span| {
            attribute(span, "messaging.destination.name").as_deref() == Some(&subject)
        });
        assert_eq!(spans.len(), 1, "{traceparent}: one process span");
        let process = &spans[0];
        assert_eq!(
            process.parent_span_id,
            SpanId::INVALID,
            "{traceparent}: a root span"
        );
        let trace_id = process.span_context.trace_id();
        assert!(
            !named.contains(&trace_id),
            "{traceparent}: not the trace it names"
        );
        assert!(fresh.insert(trace_id), "{traceparent}: a new trace");
        assert_eq!(
            process.span_context.trace_state().header(),
            "",
            "{traceparent}: its tracestate is ignored with it"
        );
        assert_eq!(attribute(process, "traceparent"), None, "{traceparent}");
    }
    natty.shutdown().await;
}
