//! Noticing that the process was paused, so a member handles nothing its successor may have.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::consume::engine::Steady;

/// Notices when the process was paused (SIGSTOP, a frozen VM, a starved runtime): a ticker
/// task counts an epoch up whenever its ticks are further apart than the stall threshold.
pub(super) struct StallWatch {
    origin: std::time::Instant,
    last_tick_ms: AtomicU64,
    epoch: AtomicU64,
    stall: Duration,
}

impl StallWatch {
    pub(super) fn start(stall: Duration) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let watch = Arc::new(Self {
            origin: std::time::Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            stall,
        });
        let ticker = Arc::clone(&watch);
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(stall / 5);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let now = ticker.now_ms();
                let last = ticker.last_tick_ms.swap(now, Ordering::AcqRel);
                if now.saturating_sub(last) > ticker.stall_ms() {
                    ticker.epoch.fetch_add(1, Ordering::AcqRel);
                }
            }
        });
        (watch, task)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn stall_ms(&self) -> u64 {
        u64::try_from(self.stall.as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

impl Steady for StallWatch {
    /// No stall since `epoch`, and none under way (the ticker not yet caught up).
    fn steady_since(&self, epoch: u64) -> bool {
        let since_tick = self
            .now_ms()
            .saturating_sub(self.last_tick_ms.load(Ordering::Acquire));
        self.epoch() == epoch && since_tick <= self.stall_ms()
    }
}

/// Stops the ticker task when the run ends.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
