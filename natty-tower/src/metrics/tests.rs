use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use natty::message::Message;
use tokio::sync::oneshot;
use tower::{service_fn, Layer, ServiceExt};

use super::{MetricsLayer, HANDLER_DURATION, IN_FLIGHT, MESSAGES_TOTAL};
use crate::ack::AckLayer;
use crate::classify::HandlerError;
use crate::error::BoxError;

async fn is_pending<F: Future>(mut future: Pin<&mut F>) -> bool {
    poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Keeps every metric by its key, printed as `name{label=value,...}`.
#[derive(Default)]
struct TestRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
}

fn name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl TestRecorder {
    fn counter(&self, key: &str) -> u64 {
        let counters = self.counters.lock().unwrap();
        counters
            .get(key)
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn gauge(&self, key: &str) -> f64 {
        let gauges = self.gauges.lock().unwrap();
        gauges.get(key).map_or(0.0, |g| {
            f64::from_bits(g.load(std::sync::atomic::Ordering::SeqCst))
        })
    }

    fn samples(&self, key: &str) -> usize {
        let histograms = self.histograms.lock().unwrap();
        histograms.get(key).map_or(0, |h| h.0.lock().unwrap().len())
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(counters.entry(name(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(gauges.entry(name(key)).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap();
        Histogram::from_arc(histograms.entry(name(key)).or_default().clone())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn in_flight_rises_during_a_call_and_latency_is_recorded_by_result() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let in_flight = format!("{IN_FLIGHT}{{}}");

    let (finish, finished) = oneshot::channel::<()>();
    let finished = Arc::new(Mutex::new(Some(finished)));
    let service = MetricsLayer::new().layer(service_fn(move |msg: Message| {
        let finished = finished.lock().unwrap().take();
        async move {
            if let Some(finished) = finished {
                let _ = finished.await;
            }
            if msg.payload().is_empty() {
                return Err(BoxError::from("empty"));
            }
            Ok(())
        }
    }));
    let (msg, _) = Message::builder("orders", "{}").build();
    let mut call = std::pin::pin!(service.clone().oneshot(msg));
    assert!(is_pending(call.as_mut()).await);
    assert_eq!(recorder.gauge(&in_flight), 1.0);
    finish.send(()).unwrap();
    call.await.unwrap();
    assert_eq!(recorder.gauge(&in_flight), 0.0);

    let (msg, _) = Message::builder("orders", "").build();
    let _ = service.oneshot(msg).await;
    assert_eq!(
        recorder.samples(&format!("{HANDLER_DURATION}{{result=ok}}")),
        1
    );
    assert_eq!(
        recorder.samples(&format!("{HANDLER_DURATION}{{result=error}}")),
        1
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_call_leaves_the_in_flight_count() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let service = MetricsLayer::new().layer(service_fn(|_: Message| {
        std::future::pending::<Result<(), BoxError>>()
    }));
    let (msg, _) = Message::builder("orders", "{}").build();
    let call = service.oneshot(msg);
    let mut call = Box::pin(call);
    assert!(is_pending(call.as_mut()).await);
    drop(call);
    assert_eq!(recorder.gauge(&format!("{IN_FLIGHT}{{}}")), 0.0);
}

#[tokio::test(flavor = "current_thread")]
async fn the_ack_layer_counts_messages_by_outcome() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let service = AckLayer::new().layer(service_fn(|msg: Message| async move {
        match msg.payload().as_ref() {
            b"poison" => Err(BoxError::from(HandlerError::give_up("bad"))),
            b"flaky" => Err(BoxError::from(HandlerError::retry("down"))),
            _ => Ok(()),
        }
    }));
    for payload in ["ok", "ok", "flaky", "poison"] {
        let (msg, _) = Message::builder("orders", payload).build();
        let _ = service.clone().oneshot(msg).await;
    }
    let outcome =
        |outcome: &str| recorder.counter(&format!("{MESSAGES_TOTAL}{{outcome={outcome}}}"));
    assert_eq!(
        (outcome("acked"), outcome("nakd"), outcome("termed")),
        (2, 1, 1)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_leader_layer_records_leadership_as_a_gauge() {
    use crate::leader::{LeaderLayer, LeaderMode};

    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (leadership, gate) = tokio::sync::watch::channel(Some(7));
    let service = LeaderLayer::new(gate, LeaderMode::Reject)
        .layer(service_fn(|_: Message| async { Ok::<_, BoxError>(()) }));
    let leader_gauge = format!("{}{{}}", super::LEADER);

    let (msg, _) = Message::builder("orders", "{}").build();
    service.clone().oneshot(msg).await.unwrap();
    assert_eq!(recorder.gauge(&leader_gauge), 1.0);

    leadership.send_replace(None);
    let (msg, _) = Message::builder("orders", "{}").build();
    assert!(service.oneshot(msg).await.is_err(), "a follower refuses");
    assert_eq!(recorder.gauge(&leader_gauge), 0.0);
}
