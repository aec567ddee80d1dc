//! Tower middleware for consumed NATS JetStream messages.
//!
//! natty's consumer driver feeds a durable consumer's [`natty::Message`]s into any
//! `tower::Service<Message>`. The layers here make such a service safe to run: every message
//! is settled once, on purpose; failures are retried, reported, or dead-lettered; panics,
//! long handlers and leadership changes are handled. Timeouts, concurrency limits and load
//! shedding come from tower itself.
//!
//! | module | layer | what it does |
//! | --- | --- | --- |
//! | [`trace`] | [`TraceLayer`](trace::TraceLayer) | a span per message with OpenTelemetry messaging fields, parented on the publisher's span (feature `opentelemetry`) |
//! | [`metrics`](crate#features) | `MetricsLayer` | latency, in-flight and outcome metrics (feature `metrics`) |
//! | [`report`] | [`ReportErrorsLayer`](report::ReportErrorsLayer) | every error to `tracing` and a channel or callback |
//! | [`ack`] | [`AckLayer`](ack::AckLayer) | ack, nak with backoff, or term, as the [`classify`] decision says |
//! | [`dead_letter`] | [`DeadLetterLayer`](dead_letter::DeadLetterLayer) | publish given-up messages to a dead-letter subject, then term |
//! | [`in_progress`] | [`InProgressLayer`](in_progress::InProgressLayer) | "in progress" while a handler runs past half the ack wait |
//! | [`retry`] | [`RetryMessagesLayer`](retry::RetryMessagesLayer) | in-process retries with backoff, on tower's `Retry` |
//! | [`catch_panic`] | [`CatchPanicLayer`](catch_panic::CatchPanicLayer) | a panicking handler becomes an error |
//! | [`leader`] | [`LeaderLayer`](leader::LeaderLayer) | run only while this node leads |
//! | [`json`] | [`DecodeJsonLayer`](json::DecodeJsonLayer) | decode JSON payloads; bad input is given up |
//!
//! # Layer order
//! This is the one statement of it; the layers' own docs link here. Layers listed first go
//! outside. The order of natty's layers does not decide whether they work: each layer marks
//! the messages it passes in their extensions, and the settling layers below it leave it what
//! it takes.
//! - [`ack`] and [`dead_letter`], either way round: a failure the dead-letter layer takes
//!   (given up, or retryable on the last delivery) is left unsettled by an ack layer below it.
//! - [`retry`] (through [`retry_messages`](ServiceBuilderExt::retry_messages), or
//!   [`RetryMessagesLayer`](retry::RetryMessagesLayer)) above or below either: a failure it
//!   will try again is left unsettled by the layers below it, and only the last attempt is
//!   settled or dead-lettered. tower's own `RetryLayer` with a
//!   [`RetryPolicy`](retry::RetryPolicy) marks nothing: put it below both, since an attempt
//!   settled by a layer below it is not retried.
//! - [`dead_letter`] and panics: a panic below the dead-letter layer (caught by
//!   [`catch_panic`] above it, by natty's driver, or not at all) is dead-lettered on the last
//!   delivery, then unwinds on.
//! - [`in_progress`] sends heartbeats until the message is settled, wherever it sits.
//!
//! What the order still changes: a panic caught above an ack or report layer passes them as an
//! unwind, not an error, so the ack layer does not settle it (natty's driver naks it without a
//! delay) and the report layer does not see it (the driver reports it); put
//! [`catch_panic`] below them, as in the example, to have panics settled and reported like
//! errors.
//!
//! Each message carries its consumer's [`ConsumerSettings`](natty::ConsumerSettings), so the
//! in-progress and dead-letter layers take the ack wait and the max deliveries from the
//! consumer instead of asking for them again.
//!
//! # Features
//! - `metrics` (off by default): the `metrics` module, recording through the `metrics` facade.
//! - `opentelemetry` (off by default): the [`trace`] layer makes the publisher's span (the W3C
//!   trace context in the message's headers) the OpenTelemetry parent of each message's span;
//!   turns on natty's feature of the same name, which writes that context on every publish.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use natty::message::{Message, Settlement};
//! use natty_tower::classify::HandlerError;
//! use natty_tower::error::BoxError;
//! use natty_tower::ServiceBuilderExt;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = ServiceBuilder::new()
//!     .trace_messages()
//!     .report_errors()
//!     .ack_messages()
//!     .catch_panic()
//!     .timeout(Duration::from_secs(30))
//!     .service(service_fn(|msg: Message| async move {
//!         match msg.headers().get("kind") {
//!             Some("order") => Ok(()),
//!             _ => Err(BoxError::from(HandlerError::give_up("unknown kind"))),
//!         }
//!     }));
//!
//! let (msg, recorder) = Message::builder("events", "{}").header("kind", "order").build();
//! service.clone().oneshot(msg).await.unwrap();
//! assert_eq!(recorder.outcome(), Some(Settlement::Ack));
//!
//! let (msg, recorder) = Message::builder("events", "{}").build();
//! assert!(service.oneshot(msg).await.is_err());
//! assert_eq!(recorder.outcome(), Some(Settlement::Term));
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;

pub mod ack;
pub mod backoff;
pub mod builder;
pub mod catch_panic;
pub mod classify;
pub mod dead_letter;
pub mod in_progress;
pub mod json;
pub mod leader;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod report;
pub mod retry;
pub mod trace;

pub mod reject;
mod settle;

pub use builder::ServiceBuilderExt;
