use std::sync::Arc;

use tokio::sync::mpsc;
use tower::Layer;

use super::{DroppedReports, ErrorReport, ReportErrors, Shared, Sink};

/// Applies [`ReportErrors`] to a service: where reports go.
#[derive(Clone, Debug, Default)]
pub struct ReportErrorsLayer {
    pub(super) shared: Arc<Shared>,
}

impl ReportErrorsLayer {
    /// Report to `tracing` only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also send each report to `sender`, dropping (and counting) those that do not fit.
    pub fn channel(self, sender: mpsc::Sender<ErrorReport>) -> Self {
        self.with_sink(Sink::Channel(sender))
    }

    /// Also call `callback` with each report, inline.
    pub fn callback<F>(self, callback: F) -> Self
    where
        F: Fn(ErrorReport) + Send + Sync + 'static,
    {
        self.with_sink(Sink::Callback(Arc::new(callback)))
    }

    /// A handle on the count of dropped reports, shared by every service this layer makes.
    pub fn dropped(&self) -> DroppedReports {
        self.shared.dropped.clone()
    }

    fn with_sink(self, sink: Sink) -> Self {
        Self {
            shared: Arc::new(Shared {
                sink,
                dropped: self.shared.dropped.clone(),
            }),
        }
    }
}

impl<S> Layer<S> for ReportErrorsLayer {
    type Service = ReportErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReportErrors::new(inner, self)
    }
}
