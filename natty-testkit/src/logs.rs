//! What a test logs through `tracing`, captured: [`Logs`].

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::subscriber::{DefaultGuard, Interest};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::writer::{MakeWriter, OptionalWriter};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::Layer;

/// The lines logged on one thread, `DEBUG` and up, so a test can assert on them (that a
/// failure is logged once, at the right level).
///
/// A current-thread tokio test (`#[tokio::test]`'s default) logs everything on its thread, and
/// tests running alongside on other threads stay out of it.
///
/// The first capture in a test binary installs one global subscriber that writes each thread's
/// lines to that thread's capture, if it has one. A subscriber per test (`set_default`) would be
/// simpler, but `tracing` caches each log statement's interest process-wide: a statement first
/// reached on a thread with no subscriber can be cached as "never" while another thread is
/// capturing, and its lines go missing. The global subscriber keeps every statement live. If the
/// binary already has a global subscriber of its own, the capture falls back to being the
/// thread's default subscriber, with that caveat.
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

/// Keeps a [`Logs`] capturing; dropping it ends the capture on this thread.
#[must_use = "the capture ends when the guard is dropped"]
#[derive(Debug)]
pub struct CaptureGuard {
    previous: Option<Logs>,
    /// Only when the binary had a global subscriber of its own.
    _fallback: Option<DefaultGuard>,
}

thread_local! {
    /// Where this thread's lines go while a capture lives.
    static CAPTURING: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

impl Logs {
    /// Capture what this thread logs until the guard is dropped.
    pub fn capture() -> (Self, CaptureGuard) {
        let logs = Self::default();
        let fallback = (!global_capture_installed()).then(|| {
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(Level::DEBUG)
                .with_ansi(false)
                .without_time()
                .with_writer(move || writer.clone())
                .finish();
            let guard = tracing::subscriber::set_default(subscriber);
            tracing::callsite::rebuild_interest_cache();
            guard
        });
        let previous = CAPTURING.with(|slot| slot.replace(Some(logs.clone())));
        let guard = CaptureGuard {
            previous,
            _fallback: fallback,
        };
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

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // A guard dropped during thread teardown finds the slot gone; nothing is left to end.
        let _ = CAPTURING.try_with(|slot| *slot.borrow_mut() = previous);
    }
}

/// Installs the binary's capturing subscriber once; false if another global one was there first.
fn global_capture_installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(ThreadCapture)
            .with_filter(CapturingThreads);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).is_ok()
    })
}

/// Writes to the emitting thread's capture.
struct ThreadCapture;

impl<'a> MakeWriter<'a> for ThreadCapture {
    type Writer = OptionalWriter<Logs>;

    fn make_writer(&'a self) -> Self::Writer {
        CAPTURING
            .try_with(|slot| slot.borrow().clone())
            .ok()
            .flatten()
            .map_or_else(OptionalWriter::none, OptionalWriter::some)
    }
}

/// `DEBUG` and up, on threads that are capturing. Decided per event, never cached per callsite.
struct CapturingThreads;

impl<S> Filter<S> for CapturingThreads {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        *meta.level() <= Level::DEBUG
            && CAPTURING
                .try_with(|slot| slot.borrow().is_some())
                .unwrap_or(false)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if *meta.level() <= Level::DEBUG {
            Interest::sometimes()
        } else {
            Interest::never()
        }
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
