use std::error::Error as _;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::poll;
use natty::consume::{log_failure, HandlerFailure};
use natty::message::DeliveryInfo;
use natty::{Message, ReportSender};
use natty_testkit::Logs;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tower::{service_fn, Layer, Service, ServiceExt};

use super::ReportErrorsLayer;
use crate::error::BoxError;

/// Far longer than anything here takes; a test that hits it has hung.
const DEADLINE: Duration = Duration::from_secs(5);

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

/// The handler's error a report carries, as text.
fn handler_error(failure: &HandlerFailure) -> String {
    failure
        .error
        .source()
        .map(ToString::to_string)
        .unwrap_or_default()
}

#[tokio::test]
async fn an_error_reaches_the_channel_with_its_message_metadata() {
    let (sender, mut reports) = mpsc::channel(4);
    let layer = ReportErrorsLayer::new().channel(sender);
    let _ = failing(&layer).oneshot(message("orders.paid", "{}")).await;
    let report = reports.try_recv().unwrap();
    assert_eq!(report.subject.as_str(), "orders.paid");
    assert_eq!(&*report.stream, "ORDERS");
    assert_eq!(&*report.consumer, "billing");
    assert_eq!(report.stream_sequence, 17);
    assert_eq!(report.delivered, 3);
    assert_eq!(report.message_id.as_deref(), Some("order-17"));
    assert_eq!(handler_error(&report), "cannot handle orders.paid");
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
async fn a_full_lossy_channel_never_blocks_and_counts_what_it_dropped() {
    let (sender, mut reports) = mpsc::channel(1);
    let lossy = ReportSender::lossy(sender);
    let layer = ReportErrorsLayer::new().channel(lossy.clone());
    let service = failing(&layer);
    for n in 0..3 {
        let _ = service
            .clone()
            .oneshot(message(&format!("orders.{n}"), "{}"))
            .await;
    }
    assert_eq!(reports.try_recv().unwrap().subject.as_str(), "orders.0");
    assert!(reports.try_recv().is_err());
    assert_eq!(lossy.dropped(), 2);
}

/// The default never drops: a failed call ends once its report is in the channel, and the calls
/// of other messages go on meanwhile.
#[tokio::test]
async fn a_full_channel_holds_only_the_failed_call_until_there_is_room() {
    let (sender, mut reports) = mpsc::channel(1);
    let layer = ReportErrorsLayer::new().channel(sender);
    let service = failing(&layer);
    let _ = service.clone().oneshot(message("orders.0", "{}")).await;

    let mut second = pin!(service.clone().oneshot(message("orders.1", "{}")));
    assert!(poll!(&mut second).is_pending(), "waits for room");
    timeout(DEADLINE, service.clone().oneshot(message("orders.ok", "")))
        .await
        .expect("a call that succeeds is not held up")
        .unwrap();

    assert_eq!(reports.recv().await.unwrap().subject, "orders.0");
    let ended = timeout(DEADLINE, second).await.expect("room lets it end");
    assert!(ended.is_err(), "the handler's error is passed on");
    assert_eq!(reports.recv().await.unwrap().subject, "orders.1");
}

#[tokio::test]
async fn a_closed_channel_counts_drops() {
    let (sender, reports) = mpsc::channel(8);
    drop(reports);
    let reports = ReportSender::from(sender);
    let layer = ReportErrorsLayer::new().channel(reports.clone());
    let _ = failing(&layer).oneshot(message("orders.paid", "{}")).await;
    assert_eq!(reports.dropped(), 1);
}

#[tokio::test]
async fn a_callback_gets_each_error_and_successes_are_not_reported() {
    let seen: Arc<Mutex<Vec<HandlerFailure>>> = Arc::default();
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

/// A failure is logged once per delivery, by the first to report it: a report layer below this
/// one, this one, and after them natty's engine (which reports through the same rule) stay at
/// `DEBUG`; every sink still gets the report.
#[tokio::test]
async fn a_failure_is_logged_once_however_many_report_it() {
    let (logged, _capture) = Logs::capture();
    let seen = Arc::new(Mutex::new(0));
    let counter = seen.clone();
    let layer = ReportErrorsLayer::new().callback(move |_| *counter.lock().unwrap() += 1);

    let msg = message("orders.created", "x");
    let acker = msg.acker().clone();
    let below = ReportErrorsLayer::new().layer(service_fn(|_: Message| async {
        Err::<(), _>(BoxError::from("failed below"))
    }));
    let _ = layer.layer(below).oneshot(msg.clone()).await;
    // What natty's engine does with the failure the stack returned.
    log_failure(&acker, &HandlerFailure::new(&msg, "failed below"));

    assert_eq!(*seen.lock().unwrap(), 1, "the sink got the report");
    assert_eq!(logged.lines("WARN", "message handler failed").len(), 1);
    assert_eq!(logged.lines("DEBUG", "reported again").len(), 2);

    // Another delivery's failure is logged again.
    let _ = failing(&layer)
        .oneshot(message("orders.created", "x"))
        .await;
    assert_eq!(logged.lines("WARN", "message handler failed").len(), 2);
}
