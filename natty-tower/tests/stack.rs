//! Every layer stacked through `ServiceBuilderExt`, offline: the stack settles each message
//! once, and its future is `Send + 'static` as natty's consumer driver requires.

use std::time::Duration;

use natty::message::{Message, Settlement};
use natty_tower::classify::HandlerError;
use natty_tower::error::BoxError;
use natty_tower::json::JsonMessage;
use natty_tower::ServiceBuilderExt;
use tokio::sync::{mpsc, watch};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
}

fn assert_send_static<T: Send + 'static>(value: T) -> T {
    value
}

#[tokio::test]
async fn the_whole_stack_settles_each_message_once() {
    let (reports, mut errors) = mpsc::channel(8);
    let (_leadership, gate) = watch::channel(Some(3));
    let mut service = ServiceBuilder::new()
        .trace_messages()
        .report_errors_to(reports)
        .ack_messages()
        .in_progress()
        .require_leader(gate)
        .catch_panic()
        .timeout(Duration::from_secs(5))
        .decode_json::<Order>()
        .service(service_fn(|order: JsonMessage<Order>| async move {
            match order.payload.id {
                0 => Err(BoxError::from(HandlerError::give_up("order 0 is invalid"))),
                13 => panic!("unlucky order"),
                _ => Ok(()),
            }
        }));

    let mut outcomes = Vec::new();
    for payload in [r#"{"id":1}"#, r#"{"id":0}"#, "not json", r#"{"id":13}"#] {
        let (msg, recorder) = Message::builder("orders.created", payload).build();
        let call = service.ready().await.unwrap().call(msg);
        let _ = assert_send_static(call).await;
        assert!(recorder.settlements().len() <= 1, "settled once");
        outcomes.push(recorder.outcome());
    }
    let nak = |secs| Some(Settlement::Nak(Some(Duration::from_secs(secs))));
    assert_eq!(
        outcomes,
        [
            Some(Settlement::Ack),
            Some(Settlement::Term),
            Some(Settlement::Term),
            nak(1)
        ]
    );

    let mut reported = Vec::new();
    while let Ok(report) = errors.try_recv() {
        reported.push(format!("{:#}", report.error));
    }
    assert_eq!(reported.len(), 3, "{reported:?}");
    assert!(reported[2].contains("unlucky order"), "{reported:?}");
}

/// A handler failing its first `failures` calls with a retryable error; counts its calls.
fn flaky(
    failures: u32,
    calls: std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> impl Service<Message, Response = (), Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |_: Message| {
        let call = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        async move {
            if call <= failures {
                return Err(BoxError::from(HandlerError::retry("database busy")));
            }
            Ok(())
        }
    })
}

/// In-process retries run whether the retry layer sits below or above the ack layer: the
/// ack layer leaves a failure the retry layer will try again unsettled.
#[tokio::test(start_paused = true)]
async fn a_retry_layer_above_the_ack_layer_still_retries() {
    let calls = std::sync::Arc::default();
    let service = ServiceBuilder::new()
        .retry_messages(3)
        .ack_messages()
        .service(flaky(2, std::sync::Arc::clone(&calls)));
    let (msg, recorder) = Message::builder("orders.created", "{}").build();
    service.oneshot(msg).await.unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(recorder.settlements(), [Settlement::Ack]);
}

/// On the last delivery, a retry layer above the dead-letter layer still gets its attempts:
/// only a failure no attempt fixed is dead-lettered.
#[tokio::test(start_paused = true)]
async fn a_retry_layer_above_the_dead_letter_layer_retries_the_last_delivery_first() {
    #[derive(Clone, Default)]
    struct CountingSink(std::sync::Arc<std::sync::atomic::AtomicU32>);
    impl tower::Service<natty::OutgoingMessage> for CountingSink {
        type Response = natty::PublishAck;
        type Error = BoxError;
        type Future = std::future::Ready<Result<natty::PublishAck, BoxError>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: natty::OutgoingMessage) -> Self::Future {
            let sequence = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok(natty::PublishAck::new(
                "DEAD",
                u64::from(sequence) + 1,
                false,
            )))
        }
    }

    let settings = natty::ConsumerSettings::new("ORDERS", "billing").with_max_deliver(Some(3));
    for (failures, calls_expected, dead_letters, outcome) in
        [(1, 2, 0, Settlement::Ack), (5, 3, 1, Settlement::Term)]
    {
        let (calls, sink) = (std::sync::Arc::default(), CountingSink::default());
        let service = ServiceBuilder::new()
            .ack_messages()
            .retry_messages(3)
            .dead_letter(sink.clone(), "dead.orders")
            .service(flaky(failures, std::sync::Arc::clone(&calls)));
        let (msg, recorder) = Message::builder("orders.created", "{}")
            .delivered(3)
            .consumer_settings(settings.clone())
            .build();
        let _ = service.oneshot(msg).await;
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            calls_expected
        );
        assert_eq!(
            sink.0.load(std::sync::atomic::Ordering::SeqCst),
            dead_letters
        );
        assert_eq!(recorder.settlements(), [outcome]);
    }
}
