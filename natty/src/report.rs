//! Where failure reports go: [`ReportSender`], one shape for publish failures and handler
//! errors (Go natty's `PublishErrorCh` and `ErrorCh`).
//!
//! A report stands for something the application may have to act on (a message to
//! republish, a handler bug), so natty never drops one behind the application's back. By
//! default a report send *waits* for room in the channel: a slow reader slows the sender
//! down (for publishing, the subject whose message failed; for consuming, the consume loop)
//! instead of losing reports. [`ReportSender::lossy`] is the explicit opt-out: a full
//! channel drops the report, logs it at `ERROR` and counts it in [`ReportSender::dropped`].
//! A report whose receiver was dropped cannot be delivered in either mode: it is logged at
//! `ERROR` and counted too.
//!
//! A tokio [`mpsc::Sender`] would do for the waiting mode alone; this type exists so the lossy
//! mode has a counter the application can read, and so both report kinds are configured the
//! same way.
//!
//! # Example
//! ```no_run
//! use natty::{PublishConfig, ReportSender};
//! use tokio::sync::mpsc;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (failures, mut failed) = mpsc::channel(64);
//! let config = natty::Config::from_env().publish(PublishConfig::default().failures(failures));
//! let natty = natty::Natty::connect(config).await?;
//! let republisher = natty.clone();
//! tokio::spawn(async move {
//!     // Read concurrently: a full channel holds back the failing subject and `flush`.
//!     while let Some(failure) = failed.recv().await {
//!         eprintln!("not confirmed: {} ({})", failure.message_id, failure.error);
//!         // ... store it, or `republisher.republish(failure)` once the outage is over
//! #       drop(&republisher);
//!     }
//! });
//!
//! // Or: never wait on the reader, count what a full channel dropped.
//! let (sender, _receiver) = mpsc::channel(64);
//! let lossy = ReportSender::lossy(sender);
//! let _config = PublishConfig::default().failures(lossy.clone());
//! println!("{} reports dropped", lossy.dropped());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// The sending end of a report channel; see the [module docs](self).
///
/// Clones share the channel and the [`dropped`](ReportSender::dropped) count, so keep a clone
/// to read the count after handing one to a config.
pub struct ReportSender<T> {
    sender: mpsc::Sender<T>,
    lossy: bool,
    dropped: Arc<AtomicU64>,
}

/// Why a report did not reach its receiver (it is handed back so the caller can log it).
pub(crate) enum Undelivered<T> {
    /// A lossy sender's channel was full.
    Full(T),
    /// The receiver was dropped.
    Closed(T),
}

impl<T> ReportSender<T> {
    /// Deliver every report, waiting for room when the channel is full.
    pub fn new(sender: mpsc::Sender<T>) -> Self {
        Self {
            sender,
            lossy: false,
            dropped: Arc::default(),
        }
    }

    /// Never wait: drop a report when the channel is full, log it at `ERROR` and count it.
    pub fn lossy(sender: mpsc::Sender<T>) -> Self {
        Self {
            lossy: true,
            ..Self::new(sender)
        }
    }

    /// Whether this sender drops reports when the channel is full.
    pub fn is_lossy(&self) -> bool {
        self.lossy
    }

    /// Reports that did not reach the receiver: dropped by a full lossy channel, or sent after
    /// the receiver was dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Deliver `report`, waiting for room unless lossy; hands it back (counted) when it could
    /// not be delivered.
    pub(crate) async fn send(&self, report: T) -> Result<(), Undelivered<T>> {
        let undelivered = if self.lossy {
            match self.sender.try_send(report) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(report)) => Undelivered::Full(report),
                Err(mpsc::error::TrySendError::Closed(report)) => Undelivered::Closed(report),
            }
        } else {
            match self.sender.send(report).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(report)) => Undelivered::Closed(report),
            }
        };
        self.dropped.fetch_add(1, Ordering::Relaxed);
        Err(undelivered)
    }
}

impl<T> Undelivered<T> {
    /// What to say in the log line.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Full(_) => "report channel full (lossy); report dropped",
            Self::Closed(_) => "report receiver dropped; report not delivered",
        }
    }

    pub(crate) fn into_inner(self) -> T {
        match self {
            Self::Full(report) | Self::Closed(report) => report,
        }
    }
}

impl<T> From<mpsc::Sender<T>> for ReportSender<T> {
    /// The waiting mode: [`ReportSender::new`].
    fn from(sender: mpsc::Sender<T>) -> Self {
        Self::new(sender)
    }
}

impl<T> Clone for ReportSender<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            lossy: self.lossy,
            dropped: Arc::clone(&self.dropped),
        }
    }
}

impl<T> fmt::Debug for ReportSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportSender")
            .field("lossy", &self.lossy)
            .field("capacity", &self.sender.max_capacity())
            .field("dropped", &self.dropped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::{ReportSender, Undelivered};

    #[tokio::test]
    async fn a_lossy_sender_drops_and_counts_what_a_full_channel_cannot_take() {
        let (sender, mut receiver) = mpsc::channel(2);
        let reports = ReportSender::lossy(sender);
        let reader = reports.clone();
        for n in 0..5 {
            let _ = reports.send(n).await;
        }
        assert_eq!(reader.dropped(), 3, "shared by clones");
        assert_eq!(receiver.recv().await, Some(0));
        assert_eq!(receiver.recv().await, Some(1));
        assert!(receiver.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_waiting_sender_delivers_everything_to_a_slow_reader() {
        let (sender, mut receiver) = mpsc::channel(1);
        let reports = ReportSender::from(sender);
        let sending = tokio::spawn(async move {
            for n in 0..100 {
                assert!(reports.send(n).await.is_ok());
            }
            reports.dropped()
        });
        for n in 0..100 {
            assert_eq!(receiver.recv().await, Some(n));
            tokio::task::yield_now().await;
        }
        assert_eq!(sending.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_dropped_receiver_hands_the_report_back_and_counts_it() {
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let reports = ReportSender::new(sender);
        let undelivered = reports.send(7).await.unwrap_err();
        assert!(matches!(undelivered, Undelivered::Closed(7)));
        assert_eq!(reports.dropped(), 1);
    }
}
