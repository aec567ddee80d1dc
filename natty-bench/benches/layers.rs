//! What each natty-tower layer adds per message, offline: hand-built messages through one
//! layer over a handler that does nothing, against the handler alone. Every case builds its
//! message inside the timed loop, so `<layer> - bare` is the layer's cost. The message is
//! shaped like one natty's driver delivers: a stream and consumer in its delivery info, a
//! `Nats-Msg-Id` and the consumer's settings, so a layer that copies them pays for it here.
//!
//! ```text
//! cargo bench -p natty-bench --bench layers
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use natty::message::DeliveryInfo;
use natty::{ConsumerSettings, Message, OutgoingMessage, PublishAck};
use natty_tower::error::BoxError;
use natty_tower::ServiceBuilderExt;
use tokio::runtime::Runtime;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

const SUBJECT: &str = "orders.created";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds")
}

/// Time `iters` messages through `service`, one at a time, as the consumer driver calls it.
fn case<S>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &Runtime,
    name: &str,
    service: S,
) where
    S: Service<Message> + Clone,
    S::Error: std::fmt::Debug,
{
    let payload = bytes::Bytes::from(vec![b'x'; 128]);
    let settings = ConsumerSettings::new("ORDERS", "billing").with_stream_subjects(["orders.>"]);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut service = service.clone();
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut info = DeliveryInfo::new("ORDERS", "billing");
                    info.stream_sequence = 17;
                    let (message, recorder) = Message::builder(SUBJECT, payload.clone())
                        .header("Nats-Msg-Id", "order-17")
                        .info(info)
                        .consumer_settings(settings.clone())
                        .build();
                    let ready = service.ready().await.expect("the stack is ready");
                    let _ = black_box(ready.call(message).await.expect("the handler succeeds"));
                    black_box(recorder);
                }
                start.elapsed()
            })
        })
    });
}

fn handler() -> impl Service<Message, Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|message: Message| async move {
        black_box(&message);
        Ok::<_, BoxError>(())
    })
}

/// A dead-letter publisher for stacks whose handler never fails.
fn unused_publisher(
) -> impl Service<OutgoingMessage, Response = PublishAck, Error = BoxError, Future: Send>
       + Clone
       + Send
       + Sync
       + 'static {
    service_fn(|_: OutgoingMessage| async {
        Err::<PublishAck, BoxError>("the handler never fails".into())
    })
}

fn layers(c: &mut Criterion) {
    let runtime = runtime();
    let (_leader, gate) = tokio::sync::watch::channel(Some(1u64));
    let mut group = c.benchmark_group("layer");
    group.measurement_time(Duration::from_secs(3));

    case(&mut group, &runtime, "bare", handler());
    case(
        &mut group,
        &runtime,
        "trace",
        ServiceBuilder::new().trace_messages().service(handler()),
    );
    case(
        &mut group,
        &runtime,
        "report_errors",
        ServiceBuilder::new().report_errors().service(handler()),
    );
    case(
        &mut group,
        &runtime,
        "ack",
        ServiceBuilder::new().ack_messages().service(handler()),
    );
    case(
        &mut group,
        &runtime,
        "dead_letter",
        ServiceBuilder::new()
            .layer(natty_tower::dead_letter::DeadLetterLayer::with_prefix(
                unused_publisher(),
                "dlq",
            ))
            .service(handler()),
    );
    case(
        &mut group,
        &runtime,
        "retry",
        ServiceBuilder::new().retry_messages(3).service(handler()),
    );
    case(
        &mut group,
        &runtime,
        "catch_panic",
        ServiceBuilder::new().catch_panic().service(handler()),
    );
    case(
        &mut group,
        &runtime,
        "in_progress",
        ServiceBuilder::new().in_progress().service(handler()),
    );
    case(
        &mut group,
        &runtime,
        "require_leader",
        ServiceBuilder::new()
            .require_leader(gate.clone())
            .service(handler()),
    );
    // The consume-stack scenario's stack.
    case(
        &mut group,
        &runtime,
        "stack",
        ServiceBuilder::new()
            .trace_messages()
            .report_errors()
            .ack_messages()
            .retry_messages(3)
            .catch_panic()
            .service(handler()),
    );
    group.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
