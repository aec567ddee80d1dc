//! Add natty's layers to a [`tower::ServiceBuilder`] by name.
//!
//! [`ServiceBuilderExt`] is sealed (only `ServiceBuilder` implements it) so methods can be added
//! without breaking anyone. Timeouts, concurrency limits and load shedding come from tower's own
//! builder methods (`timeout`, `concurrency_limit`, `load_shed`); a timeout's `Elapsed` and
//! load shedding's `Overloaded` are retried by the [default classifier](crate::classify).
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use natty::message::{Message, Settlement};
//! use natty_tower::error::BoxError;
//! use natty_tower::json::JsonMessage;
//! use natty_tower::ServiceBuilderExt;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! #[derive(serde::Deserialize)]
//! struct OrderCreated {
//!     id: u64,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = ServiceBuilder::new()
//!     .trace_messages()
//!     .report_errors()
//!     .ack_messages()
//!     .in_progress()
//!     .catch_panic()
//!     .timeout(Duration::from_secs(60))
//!     .decode_json::<OrderCreated>()
//!     .service(service_fn(|order: JsonMessage<OrderCreated>| async move {
//!         println!("order {}", order.payload.id);
//!         Ok::<_, BoxError>(())
//!     }));
//!
//! let (msg, recorder) = Message::builder("orders.created", r#"{"id":1}"#).build();
//! service.oneshot(msg).await.unwrap();
//! assert_eq!(recorder.outcome(), Some(Settlement::Ack));
//! # }
//! ```

use natty::consume::HandlerFailure;
use natty::ReportSender;
use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::ack::AckLayer;
use crate::catch_panic::CatchPanicLayer;
use crate::dead_letter::DeadLetterLayer;
use crate::in_progress::InProgressLayer;
use crate::json::DecodeJsonLayer;
use crate::leader::{LeaderLayer, LeaderMode};
use crate::report::ReportErrorsLayer;
use crate::retry::{RetryMessagesLayer, RetryPolicy};
use crate::trace::TraceLayer;

mod sealed {
    pub trait Sealed<L> {}
}

impl<L> sealed::Sealed<L> for ServiceBuilder<L> {}

/// natty's layers as [`ServiceBuilder`] methods; see the [module docs](self).
///
/// Each method adds one layer with its defaults; for other settings add the layer itself with
/// `.layer(...)`.
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// A span per message; see [`trace`](crate::trace).
    fn trace_messages(self) -> ServiceBuilder<Stack<TraceLayer, L>>;

    /// Latency and in-flight metrics; see [`metrics`](crate::metrics).
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    fn record_metrics(self) -> ServiceBuilder<Stack<crate::metrics::MetricsLayer, L>>;

    /// Log every handler error; see [`report`](crate::report).
    fn report_errors(self) -> ServiceBuilder<Stack<ReportErrorsLayer, L>>;

    /// Log every handler error and send it to `reports` (an `mpsc::Sender` waits for room, a
    /// [`ReportSender::lossy`] drops and counts); see [`report`](crate::report).
    fn report_errors_to(
        self,
        reports: impl Into<ReportSender<HandlerFailure>>,
    ) -> ServiceBuilder<Stack<ReportErrorsLayer, L>>;

    /// Settle each message from its handler's result; see [`ack`](crate::ack).
    fn ack_messages(self) -> ServiceBuilder<Stack<AckLayer, L>>;

    /// Dead-letter given-up messages to `subject` through `publisher` (such as
    /// [`natty::Natty::publisher`]); see [`dead_letter`](crate::dead_letter).
    fn dead_letter<K>(
        self,
        publisher: K,
        subject: impl Into<String>,
    ) -> ServiceBuilder<Stack<DeadLetterLayer<K>, L>>;

    /// Send "in progress" every half the consumer's ack wait while a handler runs; see
    /// [`in_progress`](crate::in_progress).
    fn in_progress(self) -> ServiceBuilder<Stack<InProgressLayer, L>>;

    /// Retry retryable failures in process, at most `max_attempts` calls; see
    /// [`retry`](crate::retry).
    fn retry_messages(self, max_attempts: u32) -> ServiceBuilder<Stack<RetryMessagesLayer, L>>;

    /// Turn handler panics into errors; see [`catch_panic`](crate::catch_panic).
    fn catch_panic(self) -> ServiceBuilder<Stack<CatchPanicLayer, L>>;

    /// Stay not ready while this node does not lead; see [`leader`](crate::leader).
    fn wait_for_leader<G>(self, gate: G) -> ServiceBuilder<Stack<LeaderLayer<G>, L>>;

    /// Fail calls with `NotLeader` while this node does not lead; see [`leader`](crate::leader).
    fn require_leader<G>(self, gate: G) -> ServiceBuilder<Stack<LeaderLayer<G>, L>>;

    /// Decode payloads as JSON `T`; see [`json`](crate::json).
    fn decode_json<T>(self) -> ServiceBuilder<Stack<DecodeJsonLayer<T>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn trace_messages(self) -> ServiceBuilder<Stack<TraceLayer, L>> {
        self.layer(TraceLayer::new())
    }

    #[cfg(feature = "metrics")]
    fn record_metrics(self) -> ServiceBuilder<Stack<crate::metrics::MetricsLayer, L>> {
        self.layer(crate::metrics::MetricsLayer::new())
    }

    fn report_errors(self) -> ServiceBuilder<Stack<ReportErrorsLayer, L>> {
        self.layer(ReportErrorsLayer::new())
    }

    fn report_errors_to(
        self,
        reports: impl Into<ReportSender<HandlerFailure>>,
    ) -> ServiceBuilder<Stack<ReportErrorsLayer, L>> {
        self.layer(ReportErrorsLayer::new().channel(reports))
    }

    fn ack_messages(self) -> ServiceBuilder<Stack<AckLayer, L>> {
        self.layer(AckLayer::new())
    }

    fn dead_letter<K>(
        self,
        publisher: K,
        subject: impl Into<String>,
    ) -> ServiceBuilder<Stack<DeadLetterLayer<K>, L>> {
        self.layer(DeadLetterLayer::new(publisher, subject))
    }

    fn in_progress(self) -> ServiceBuilder<Stack<InProgressLayer, L>> {
        self.layer(InProgressLayer::from_consumer())
    }

    fn retry_messages(self, max_attempts: u32) -> ServiceBuilder<Stack<RetryMessagesLayer, L>> {
        self.layer(RetryMessagesLayer::new(RetryPolicy::new(max_attempts)))
    }

    fn catch_panic(self) -> ServiceBuilder<Stack<CatchPanicLayer, L>> {
        self.layer(CatchPanicLayer::new())
    }

    fn wait_for_leader<G>(self, gate: G) -> ServiceBuilder<Stack<LeaderLayer<G>, L>> {
        self.layer(LeaderLayer::new(gate, LeaderMode::Wait))
    }

    fn require_leader<G>(self, gate: G) -> ServiceBuilder<Stack<LeaderLayer<G>, L>> {
        self.layer(LeaderLayer::new(gate, LeaderMode::Reject))
    }

    fn decode_json<T>(self) -> ServiceBuilder<Stack<DecodeJsonLayer<T>, L>> {
        self.layer(DecodeJsonLayer::new())
    }
}
