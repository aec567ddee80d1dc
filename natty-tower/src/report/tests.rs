use std::sync::{Arc, Mutex};

use natty::message::DeliveryInfo;
use natty::Message;
use tokio::sync::mpsc;
use tower::{service_fn, Layer, Service, ServiceExt};

use super::{ErrorReport, ReportErrorsLayer};
use crate::error::BoxError;

fn failing(
    layer: &ReportErrorsLayer,
) -> impl Service<Message, Response = (), Error = BoxError> + Clone {
    layer.layer(service_fn(|msg: Message| async move {
        if msg.payload().is_empty() {
            return Ok(());
        }
        Err(BoxError::from(format!("cannot handle {}", msg.subject())))
    }))
}

fn message(subject: &str, payload: &'static str) -> Message {
    let mut info = DeliveryInfo::new("ORDERS", "billing");
    info.stream_sequence = 17;
    info.delivered = 3;
    Message::builder(subject.to_owned(), payload)
        .header("Nats-Msg-Id", "order-17")
        .info(info)
        .build()
        .0
}

#[tokio::test]
async fn an_error_reaches_the_channel_with_its_message_metadata() {
    let (sender, mut reports) = mpsc::channel(4);
    let layer = ReportErrorsLayer::new().channel(sender);
    let _ = failing(&layer).oneshot(message("orders.paid", "{}")).await;
    let report = reports.try_recv().unwrap();
    assert_eq!(report.subject.as_str(), "orders.paid");
    assert_eq!(&*report.info.stream, "ORDERS");
    assert_eq!(&*report.info.consumer, "billing");
    assert_eq!(report.info.stream_sequence, 17);
    assert_eq!(report.info.delivered, 3);
    assert_eq!(report.message_id.as_deref(), Some("order-17"));
    assert_eq!(report.error, "cannot handle orders.paid");
}

/// The layer keeps a clone of the message, so what the handler changes in its own copy stays out
/// of the report.
#[tokio::test]
async fn the_report_has_the_message_id_delivered_not_the_handlers_change() {
    let (sender, mut reports) = mpsc::channel(4);
    let layer = ReportErrorsLayer::new().channel(sender);
    let service = layer.layer(service_fn(|mut msg: Message| async move {
        msg.headers_mut().insert("Nats-Msg-Id", "changed");
        Err::<(), BoxError>("failed".into())
    }));
    let _ = service.oneshot(message("orders.paid", "{}")).await;
    let report = reports.try_recv().unwrap();
    assert_eq!(report.message_id.as_deref(), Some("order-17"));
}

#[tokio::test]
async fn a_full_channel_never_blocks_and_counts_what_it_dropped() {
    let (sender, mut reports) = mpsc::channel(1);
    let layer = ReportErrorsLayer::new().channel(sender);
    let dropped = layer.dropped();
    let service = failing(&layer);
    for n in 0..3 {
        let _ = service
            .clone()
            .oneshot(message(&format!("orders.{n}"), "{}"))
            .await;
    }
    assert_eq!(reports.try_recv().unwrap().subject.as_str(), "orders.0");
    assert!(reports.try_recv().is_err());
    assert_eq!(dropped.count(), 2);
}

#[tokio::test]
async fn a_closed_channel_counts_drops() {
    let (sender, reports) = mpsc::channel(8);
    drop(reports);
    let layer = ReportErrorsLayer::new().channel(sender);
    let _ = failing(&layer).oneshot(message("orders.paid", "{}")).await;
    assert_eq!(layer.dropped().count(), 1);
}

#[tokio::test]
async fn a_callback_gets_each_error_and_successes_are_not_reported() {
    let seen: Arc<Mutex<Vec<ErrorReport>>> = Arc::default();
    let sink = seen.clone();
    let layer = ReportErrorsLayer::new().callback(move |report| sink.lock().unwrap().push(report));
    let service = failing(&layer);
    service
        .clone()
        .oneshot(message("orders.ok", ""))
        .await
        .unwrap();
    let _ = service.oneshot(message("orders.bad", "{}")).await;
    let seen = seen.lock().unwrap();
    let subjects: Vec<_> = seen.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(subjects, ["orders.bad"]);
}

/// A failure is logged once: the report layer claims the delivery's log line (so the driver
/// and the layers above stay quiet), and leaves it to a layer below that claimed it first.
#[tokio::test]
async fn the_report_layer_claims_the_failure_log_unless_a_layer_below_did() {
    let seen = Arc::new(Mutex::new(0));
    let counter = seen.clone();
    let layer = ReportErrorsLayer::new().callback(move |_| *counter.lock().unwrap() += 1);

    let msg = message("orders.created", "x");
    let acker = msg.acker().clone();
    let _ = failing(&layer).oneshot(msg).await;
    assert!(!acker.claim_failure_log(), "the report layer logged it");

    // A layer below logged it first: the report still reaches the sink.
    let below = ReportErrorsLayer::new().layer(service_fn(|msg: Message| async move {
        assert!(msg.acker().claim_failure_log());
        Err::<(), _>(BoxError::from("failed below"))
    }));
    let _ = layer
        .layer(below)
        .oneshot(message("orders.created", "x"))
        .await;
    assert_eq!(
        *seen.lock().unwrap(),
        2,
        "every failure reported to the sink"
    );
}
