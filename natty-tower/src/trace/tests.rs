use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use natty::message::{DeliveryInfo, Message};
use tower::{service_fn, Layer, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use super::{DefaultMakeSpan, MakeSpan, TraceLayer};
use crate::error::BoxError;

type Fields = Arc<Mutex<HashMap<String, String>>>;

/// Collects the fields of every span into one map (the tests make one span each).
#[derive(Default)]
struct Capture {
    fields: Fields,
    levels: Arc<Mutex<Vec<tracing::Level>>>,
}

struct Visitor<'a>(&'a Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let mut fields = self.0.lock().unwrap();
        fields.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut fields = self.0.lock().unwrap();
        fields.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.levels.lock().unwrap().push(*span.metadata().level());
        span.record(&mut Visitor(&self.fields));
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, values: &Record<'_>) {
        values.record(&mut Visitor(&self.fields));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The span fields of one call with `msg` through `layer`, whose handler fails if `fail`, and
/// the level of each span made.
async fn call_with<M>(
    layer: TraceLayer<M>,
    msg: Message,
    fail: bool,
) -> (HashMap<String, String>, Vec<tracing::Level>)
where
    M: MakeSpan + Clone,
{
    let capture = Capture::default();
    let (fields, levels) = (capture.fields.clone(), capture.levels.clone());
    let _default = tracing::subscriber::set_default(capture);
    let service = layer.layer(service_fn(move |_: Message| async move {
        if fail {
            return Err(BoxError::from("inventory unavailable"));
        }
        Ok(())
    }));
    let _ = service.oneshot(msg).await;
    let fields = fields.lock().unwrap().clone();
    let levels = levels.lock().unwrap().clone();
    (fields, levels)
}

/// The span fields of one call with `msg` through the default layer.
async fn span_fields(msg: Message, fail: bool) -> HashMap<String, String> {
    call_with(TraceLayer::new(), msg, fail).await.0
}

fn message(traceparent: &str) -> Message {
    let mut info = DeliveryInfo::new("ORDERS", "billing");
    info.stream_sequence = 12;
    info.delivered = 2;
    Message::builder("orders.paid", "{}")
        .header("Nats-Msg-Id", "order-12")
        .header("traceparent", traceparent)
        .info(info)
        .build()
        .0
}

#[tokio::test]
async fn the_span_has_the_opentelemetry_messaging_fields_and_the_traceparent() {
    let fields = span_fields(message(PARENT), false).await;
    let field = |name: &str| fields.get(name).map(String::as_str);
    assert_eq!(field("otel.kind"), Some("consumer"));
    assert_eq!(field("messaging.system"), Some("nats"));
    assert_eq!(field("messaging.operation.type"), Some("process"));
    assert_eq!(field("messaging.destination.name"), Some("orders.paid"));
    assert_eq!(field("messaging.consumer.group.name"), Some("billing"));
    assert_eq!(field("messaging.message.id"), Some("order-12"));
    assert_eq!(field("messaging.nats.stream"), Some("ORDERS"));
    assert_eq!(field("messaging.nats.stream_sequence"), Some("12"));
    assert_eq!(field("messaging.nats.delivery_count"), Some("2"));
    assert_eq!(field("messaging.message.body.size"), Some("2"));
    assert_eq!(field("traceparent"), Some(PARENT));
    assert_eq!(field("otel.status_code"), None);
}

#[tokio::test]
async fn a_traceparent_spelled_the_go_way_is_recorded() {
    // Go services write headers through `http.Header`, which spells it `Traceparent`.
    let msg = Message::builder("orders.paid", "{}")
        .header("Traceparent", PARENT)
        .build()
        .0;
    let fields = span_fields(msg, false).await;
    assert_eq!(fields.get("traceparent").map(String::as_str), Some(PARENT));
}

#[tokio::test]
async fn a_malformed_traceparent_is_not_recorded() {
    let fields = span_fields(message("00-nonsense-01"), false).await;
    assert_eq!(fields.get("traceparent"), None);
}

#[tokio::test]
async fn a_failed_handler_marks_the_span_as_an_error() {
    let fields = span_fields(message(PARENT), true).await;
    assert_eq!(
        fields.get("otel.status_code").map(String::as_str),
        Some("ERROR")
    );
    assert_eq!(
        fields.get("error.message").map(String::as_str),
        Some("inventory unavailable")
    );
}

#[tokio::test]
async fn the_default_span_takes_the_level_it_is_given() {
    let (_, levels) = call_with(TraceLayer::new(), message(PARENT), false).await;
    assert_eq!(levels, [tracing::Level::INFO]);
    let debug =
        TraceLayer::new().make_span_with(DefaultMakeSpan::new().level(tracing::Level::DEBUG));
    let (fields, levels) = call_with(debug, message(PARENT), false).await;
    assert_eq!(levels, [tracing::Level::DEBUG]);
    assert_eq!(
        fields.get("messaging.destination.name").map(String::as_str),
        Some("orders.paid")
    );
}

#[tokio::test]
async fn a_custom_span_maker_makes_the_span_and_gets_the_failure_recorded() {
    let maker = |msg: &Message| {
        tracing::warn_span!(
            "billing",
            order = msg.message_id().unwrap_or_default(),
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
        )
    };
    let (fields, levels) = call_with(
        TraceLayer::new().make_span_with(maker),
        message(PARENT),
        true,
    )
    .await;
    assert_eq!(levels, [tracing::Level::WARN]);
    assert_eq!(fields.get("order").map(String::as_str), Some("order-12"));
    assert_eq!(
        fields.get("messaging.system"),
        None,
        "only the maker's fields"
    );
    assert_eq!(
        fields.get("otel.status_code").map(String::as_str),
        Some("ERROR")
    );
}
