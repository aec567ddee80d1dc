//! What the publish tests share: patient publishers, failure reports and reading back what a
//! stream stored.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use natty::{Natty, PublishConfig, PublishFailure, ReportSender};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{placed, DEADLINE};

/// A publisher whose retries outlast a server restart.
pub(crate) fn patient() -> PublishConfig {
    PublishConfig::default().retries(60, Duration::from_millis(50), Duration::from_millis(500))
}

/// A report channel that never drops (a kept clone reads the count of undelivered reports).
pub(crate) fn reports(
    capacity: usize,
) -> (ReportSender<PublishFailure>, mpsc::Receiver<PublishFailure>) {
    let (sender, receiver) = mpsc::channel(capacity);
    (ReportSender::new(sender), receiver)
}

/// A stream of `subjects` with `replicas` and a two-minute duplicate window.
pub(crate) fn stream_config(name: &str, subjects: &[&str], replicas: usize) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// How many messages the stream `name` holds.
pub(crate) async fn stream_messages(natty: &Natty, name: &str) -> u64 {
    let mut stream = natty.jetstream().get_stream(name).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
}

/// Publishes every payload to `subject` and waits until each is stored or reported.
pub(crate) async fn publish_all(
    natty: &Natty,
    subject: &str,
    payloads: impl IntoIterator<Item = String>,
) {
    timeout(DEADLINE, async {
        for payload in payloads {
            natty.publish(subject, payload).await.expect("queued");
        }
        natty.flush().await;
    })
    .await
    .expect("published in time");
}

/// Every payload stored in the stream, with how often it is stored, read back through an
/// ordered consumer.
pub(crate) async fn stored_payloads(natty: &Natty, name: &str) -> HashMap<String, u32> {
    let stream = natty.jetstream().get_stream(name).await.expect("stream");
    let total = stream.cached_info().state.messages;
    let mut counts = HashMap::new();
    if total == 0 {
        return counts;
    }
    // After a node loss the cluster may need a moment before it places a new consumer.
    let reader = placed("ordered consumer", || {
        stream.create_consumer(pull::OrderedConfig::default())
    })
    .await;
    let mut messages = reader.messages().await.expect("ordered messages");
    for _ in 0..total {
        let message = timeout(DEADLINE, messages.next())
            .await
            .expect("read back in time")
            .expect("stream open")
            .expect("message");
        *counts
            .entry(String::from_utf8_lossy(&message.payload).into_owned())
            .or_default() += 1;
    }
    counts
}

/// The payloads stored more than once.
pub(crate) fn duplicated(stored: &HashMap<String, u32>) -> Vec<&String> {
    stored
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| p)
        .collect()
}

/// Every failure report waiting in the channel; after `flush` that is all of them.
pub(crate) fn drain(failures: &mut mpsc::Receiver<PublishFailure>) -> Vec<PublishFailure> {
    let mut all = Vec::new();
    while let Ok(failure) = failures.try_recv() {
        all.push(failure);
    }
    all
}

/// Queues each reported message again with `Natty::republish`, which keeps its headers and
/// `Nats-Msg-Id`, as a caller should.
pub(crate) async fn resend(natty: &Natty, failed: Vec<PublishFailure>) {
    for failure in failed {
        natty.publisher().republish(failure).await.expect("resend");
    }
    timeout(DEADLINE, natty.flush())
        .await
        .expect("resend flushed");
}
