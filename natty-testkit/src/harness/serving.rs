//! [`Serving`]: a stack served on a consumer, and the outcomes of its messages.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use natty::{CancellationToken, ConsumeError, ConsumeSummary};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::observer::{Delivery, Key, Observer, Observing, Record};
use crate::Error;

/// A tower stack serving one durable consumer in a task of its own, from
/// [`Harness::serve`](crate::Harness::serve); the outcomes of its messages are awaited by
/// stream sequence (the `sequence` of a publish's `PublishAck`). Dropping it stops serving.
///
/// Outcomes are what the server was told on the wire, by any layer or by natty's driver: a
/// delivery that was never settled (a hung handler past the ack wait) shows only as a gap in
/// the delivery counts.
pub struct Serving {
    stream: String,
    consumer: String,
    observer: Arc<Observer>,
    _observing: Arc<Observing>,
    deadline: Duration,
    shutdown: CancellationToken,
    ended: Arc<AtomicBool>,
    run: Option<JoinHandle<Result<ConsumeSummary, ConsumeError>>>,
}

impl fmt::Debug for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serving")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("ended", &self.ended.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl Serving {
    pub(super) fn spawn(
        stream: String,
        consumer: String,
        observer: Arc<Observer>,
        observing: Arc<Observing>,
        deadline: Duration,
        run: impl Future<Output = Result<ConsumeSummary, ConsumeError>> + Send + 'static,
        shutdown: CancellationToken,
    ) -> Self {
        let ended = Arc::new(AtomicBool::new(false));
        let (done, watcher) = (Arc::clone(&ended), Arc::clone(&observer));
        let run = tokio::spawn(async move {
            let result = run.await;
            done.store(true, Ordering::Release);
            watcher.touch();
            result
        });
        Self {
            stream,
            consumer,
            observer,
            _observing: observing,
            deadline,
            shutdown,
            ended,
            run: Some(run),
        }
    }

    /// The stream served.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The durable consumer served.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Wait until message `sequence` is acked or terminated, and return that delivery: its
    /// settlement, its delivery count (`delivered == 1`: handled on its first delivery), the
    /// in-progress signals it sent and, when terminated, its dead letter.
    ///
    /// # Errors
    /// [`Error::NotSeen`] (with the deliveries seen) past the harness' deadline;
    /// [`Error::Stopped`] when serving ended first.
    pub async fn outcome(&self, sequence: u64) -> Result<Delivery, Error> {
        let key = self.key(sequence);
        self.wait(format!("the outcome of message {sequence}"), |record| {
            let deliveries = record.deliveries(&key);
            match deliveries.iter().find(|delivery| delivery.is_last()) {
                Some(last) => Ok(last.clone()),
                None => Err(format!("{deliveries:?}")),
            }
        })
        .await
    }

    /// Wait until the `delivered`-th delivery of message `sequence` is settled (a nak
    /// included), and return it.
    ///
    /// # Errors
    /// As [`Serving::outcome`].
    pub async fn delivery(&self, sequence: u64, delivered: u64) -> Result<Delivery, Error> {
        let key = self.key(sequence);
        let waiting_for = format!("delivery {delivered} of message {sequence}");
        self.wait(waiting_for, |record| {
            let deliveries = record.deliveries(&key);
            match deliveries.iter().find(|d| d.delivered == delivered) {
                Some(delivery) => Ok(delivery.clone()),
                None => Err(format!("{deliveries:?}")),
            }
        })
        .await
    }

    /// The settled deliveries of message `sequence` seen so far, first delivery first; no
    /// waiting.
    pub fn deliveries(&self, sequence: u64) -> Vec<Delivery> {
        self.observer.lock().deliveries(&self.key(sequence))
    }

    /// Stop serving (natty's shutdown: in-flight calls finish within the consumer's grace)
    /// and return what the run did.
    ///
    /// # Errors
    /// [`Error::Consume`] when the run ended with an error (a stack whose `poll_ready`
    /// failed, a dead-letter subject the consumer would deliver back).
    pub async fn stop(mut self) -> Result<ConsumeSummary, Error> {
        self.shutdown.cancel();
        let run = self.run.take().ok_or(Error::Stopped)?;
        match run.await {
            Ok(result) => result.map_err(Error::Consume),
            // natty catches handler panics; one here is the kit's own bug, shown as it is.
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Err(Error::Stopped),
        }
    }

    fn key(&self, sequence: u64) -> Key {
        (self.stream.clone(), self.consumer.clone(), sequence)
    }

    /// Check `found` whenever the record changes, until it finds something, serving ends or
    /// the deadline passes. `found` says what it saw when it finds nothing.
    async fn wait<T>(
        &self,
        waiting_for: String,
        mut found: impl FnMut(&Record) -> Result<T, String>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + self.deadline;
        let mut changes = self.observer.changes();
        loop {
            changes.borrow_and_update();
            let seen = match found(&self.observer.lock()) {
                Ok(found) => return Ok(found),
                Err(seen) => seen,
            };
            if self.ended.load(Ordering::Acquire) {
                return Err(Error::Stopped);
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(Error::Stopped);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Error::NotSeen { waiting_for, seen });
                }
            }
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
