//! What the consume tests share: orders, counting what handlers handled, and reading a
//! consumer's state.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use natty::Natty;
use tokio::sync::watch;
use tokio::time::timeout;

use super::DEADLINE;

/// How long a test waits for its handlers to get through their messages.
const HANDLED_DEADLINE: Duration = Duration::from_secs(90);

/// An order as the fault tests publish it.
#[derive(serde::Deserialize)]
pub(crate) struct Order {
    pub(crate) id: u64,
}

impl Order {
    /// The order a consumed message carries.
    pub(crate) fn of(message: &natty::Message) -> Self {
        serde_json::from_slice(message.payload()).expect("an order")
    }
}

/// The JSON payload of order `id`.
pub(crate) fn order(id: u64) -> String {
    format!(r#"{{"id":{id}}}"#)
}

/// Counts handled ids (and how often each was handled), reporting the number of distinct ids
/// through a watch channel so tests wait on progress instead of sleeping.
#[derive(Clone)]
pub(crate) struct Handled {
    ids: Arc<Mutex<HashMap<u64, u32>>>,
    count: watch::Sender<usize>,
}

impl Handled {
    pub(crate) fn new() -> (Self, watch::Receiver<usize>) {
        let (count, rx) = watch::channel(0);
        let handled = Self {
            ids: Arc::default(),
            count,
        };
        (handled, rx)
    }

    pub(crate) fn record(&self, id: u64) {
        let mut ids = self.ids.lock().unwrap();
        *ids.entry(id).or_default() += 1;
        self.count.send_replace(ids.len());
    }

    pub(crate) fn ids(&self) -> HashSet<u64> {
        self.ids.lock().unwrap().keys().copied().collect()
    }

    pub(crate) fn times(&self, id: u64) -> u32 {
        self.ids.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    pub(crate) fn duplicates(&self) -> usize {
        self.ids
            .lock()
            .unwrap()
            .values()
            .filter(|n| **n > 1)
            .count()
    }
}

/// Wait until `n` distinct ids were handled.
pub(crate) async fn wait_count(count: &mut watch::Receiver<usize>, n: usize) {
    timeout(HANDLED_DEADLINE, count.wait_for(|seen| *seen >= n))
        .await
        .unwrap_or_else(|_| panic!("{n} distinct messages handled within {HANDLED_DEADLINE:?}"))
        .expect("handler alive");
}

/// The server's view of the durable consumer `durable` on `stream`.
pub(crate) async fn consumer_info(natty: &Natty, stream: &str, durable: &str) -> consumer::Info {
    let mut consumer: consumer::PullConsumer = natty
        .jetstream()
        .get_stream(stream)
        .await
        .expect("stream")
        .get_consumer(durable)
        .await
        .expect("consumer");
    consumer.info().await.expect("consumer info").clone()
}

/// Waits until the consumer has nothing left to deliver and nothing delivered unacked. The
/// server applies acks asynchronously, so a single read right after the last ack can lag.
pub(crate) async fn wait_drained(natty: &Natty, stream: &str, durable: &str) -> consumer::Info {
    let drained = timeout(DEADLINE, async {
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        loop {
            ticks.tick().await;
            let Ok(handle) = natty.jetstream().get_stream(stream).await else {
                continue;
            };
            let Ok(mut consumer) = handle.get_consumer::<pull::Config>(durable).await else {
                continue;
            };
            if let Ok(info) = consumer.info().await {
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    return info.clone();
                }
            }
        }
    })
    .await;
    match drained {
        Ok(info) => info,
        Err(_) => panic!(
            "consumer {durable} not drained: {:?}",
            consumer_info(natty, stream, durable).await
        ),
    }
}
