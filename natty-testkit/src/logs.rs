//! What a test logs through `tracing`, captured: [`Logs`].

use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// The lines logged on one thread, `DEBUG` and up, so a test can assert on them (that a
/// failure is logged once, at the right level).
///
/// The capture is the thread's default subscriber while its guard lives: a current-thread
/// tokio test (`#[tokio::test]`'s default) logs everything on its thread, and tests running
/// alongside on other threads stay out of it.
///
/// # Example
/// ```
/// use natty_testkit::Logs;
///
/// let (logs, _guard) = Logs::capture();
/// tracing::warn!(subject = "orders.created", "message handler failed");
/// tracing::debug!("message handler failure reported again");
/// assert_eq!(logs.lines("WARN", "handler failed").len(), 1);
/// assert_eq!(logs.lines("DEBUG", "reported again").len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Capture what this thread logs until the guard is dropped.
    pub fn capture() -> (Self, DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // A callsite first hit on another test's thread while no subscriber listened may have
        // cached "never"; recompute every callsite's interest with this subscriber in place.
        tracing::callsite::rebuild_interest_cache();
        (logs, guard)
    }

    /// The lines logged at `level` (`"WARN"`, `"DEBUG"`, ...) that contain `text`.
    pub fn lines(&self, level: &str, text: &str) -> Vec<String> {
        // A test that panicked while writing leaves whole lines behind.
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.trim_start().starts_with(level) && line.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
