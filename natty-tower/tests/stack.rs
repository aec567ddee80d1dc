//! Every layer stacked through `ServiceBuilderExt`, offline: the stack settles each message
//! once, and its future is `Send + 'static` as natty's consumer driver requires.

use std::time::Duration;

use natty::message::{Message, Settlement};
use natty_tower::classify::HandlerError;
use natty_tower::error::BoxError;
use natty_tower::json::Json;
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
        .service(service_fn(|order: Json<Order>| async move {
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
        reported.push(report.error);
    }
    assert_eq!(reported.len(), 3, "{reported:?}");
    assert!(reported[2].contains("unlucky order"), "{reported:?}");
}
