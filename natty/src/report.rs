//! A bounded, never-blocking report channel with a count of what it dropped.
//!
//! Used for publish failures and handler errors (Go natty's error channels): the sender must
//! never wait on a slow reader, so a full channel drops the report and counts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

pub(crate) struct Reports<T> {
    sender: mpsc::Sender<T>,
    receiver: Mutex<Option<mpsc::Receiver<T>>>,
    dropped: AtomicU64,
}

impl<T> Reports<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
            dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn send(&self, report: T) {
        if self.sender.try_send(report).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The receiving end; `None` after the first call.
    pub(crate) fn take(&self) -> Option<mpsc::Receiver<T>> {
        self.receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
