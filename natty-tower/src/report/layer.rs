use std::sync::Arc;

use natty::consume::HandlerFailure;
use natty::ReportSender;
use tower::Layer;

use super::{ReportErrors, Shared, Sink};

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

    /// Also send each report to `reports`: a tokio `mpsc::Sender` delivers every report (the
    /// failed call ends once its report is in the channel; other calls go on), a
    /// [`ReportSender::lossy`] never waits and counts what it dropped
    /// ([`ReportSender::dropped`], read on a clone you keep).
    pub fn channel(self, reports: impl Into<ReportSender<HandlerFailure>>) -> Self {
        self.with_sink(Sink::Channel(reports.into()))
    }

    /// Also call `callback` with each report, inline.
    pub fn callback<F>(self, callback: F) -> Self
    where
        F: Fn(HandlerFailure) + Send + Sync + 'static,
    {
        self.with_sink(Sink::Callback(Arc::new(callback)))
    }

    fn with_sink(self, sink: Sink) -> Self {
        Self {
            shared: Arc::new(Shared { sink }),
        }
    }
}

impl<S> Layer<S> for ReportErrorsLayer {
    type Service = ReportErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReportErrors::new(inner, self)
    }
}
