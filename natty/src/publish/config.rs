//! [`PublishConfig`]: the tuning of the batched publisher.

use std::time::Duration;

use super::message::PublishFailure;
use crate::report::ReportSender;

/// Tuning of the batched publisher; the defaults suit most services.
#[derive(Clone, Debug)]
pub struct PublishConfig {
    pub(super) queue_capacity: usize,
    pub(super) window: usize,
    pub(super) idle_timeout: Duration,
    pub(super) max_attempts: u32,
    pub(super) backoff: Duration,
    pub(super) max_backoff: Duration,
    pub(super) failures: Option<ReportSender<PublishFailure>>,
    pub(super) fast_ingest: bool,
    pub(super) fast_ingest_flow: u16,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            window: 256,
            idle_timeout: Duration::from_secs(30),
            max_attempts: 8,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            failures: None,
            fast_ingest: true,
            fast_ingest_flow: 500,
        }
    }
}

impl PublishConfig {
    /// Messages a subject's queue holds before `publish` waits (default 8192). Besides the
    /// queue, a subject's worker holds the messages it is sending: its window of unconfirmed
    /// ones and, on the fast-ingest path, a run of at most 64 taken from the queue at once.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// Publishes per subject whose ack may be outstanding at once (default 256).
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// How long a subject's worker waits for work before it exits (default 30 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Attempts per message before it is reported failed (default 8), with exponential
    /// backoff from `backoff` up to `max_backoff` between them (defaults 50 ms and 2 s). Each
    /// delay is drawn between half and all of its nominal value, so clients that failed
    /// together (a server restart) do not retry in lockstep.
    pub fn retries(mut self, max_attempts: u32, backoff: Duration, max_backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.backoff = backoff;
        self.max_backoff = max_backoff.max(backoff);
        self
    }

    /// Whether subjects whose stream allows batched publishing use fast-ingest batches on
    /// servers 2.14+ (default `true`); see [Paths](crate::publish#paths).
    pub fn fast_ingest(mut self, enabled: bool) -> Self {
        self.fast_ingest = enabled;
        self
    }

    /// Messages per flow ack a fast-ingest batch asks for (default 500, at least 1; the
    /// server may choose fewer). Up to twice this many messages per subject are sent ahead of
    /// the last flow ack.
    pub fn fast_ingest_flow(mut self, flow: u16) -> Self {
        self.fast_ingest_flow = flow.max(1);
        self
    }

    /// Where messages that failed after every attempt are reported (Go natty's
    /// `PublishErrorCh`): a tokio `mpsc::Sender` (every report delivered, waiting for room) or
    /// a [`ReportSender::lossy`]. Without one (the default), each failure is logged at `ERROR`
    /// with its subject and `Nats-Msg-Id`. See [Failures](crate::publish#failures) for the backpressure
    /// a full channel exerts.
    pub fn failures(mut self, failures: impl Into<ReportSender<PublishFailure>>) -> Self {
        self.failures = Some(failures.into());
        self
    }
}
