//! Batched, bounded, de-duplicated JetStream publishing, through one handle: [`Publisher`].
//!
//! [`Natty::publisher`](crate::Natty::publisher) hands out the client's [`Publisher`], cheap to
//! clone. Each subject gets a worker on first use (as in Go natty). The worker keeps a window
//! of publishes whose acks are outstanding, retries a failed publish with backoff under the
//! same `Nats-Msg-Id` (so the stream's duplicate window drops a copy whose first ack was
//! lost), and exits after an idle timeout. Unlike Go natty, each subject's queue is bounded:
//! [`Publisher::publish`] waits for room and [`Publisher::try_publish`] fails with
//! [`PublishErrorKind::Full`](crate::error::PublishErrorKind::Full).
//!
//! # Paths
//!
//! A worker gets its messages to the stream one of two ways, and [`Publisher::path`] says
//! which a subject uses right now:
//!
//! - **Fast ingest** ([`PublishPath::FastIngest`]), on servers 2.14+ when the subject's stream
//!   allows batched publishing (`allow_batched`, which [`Stream::create`](crate::Stream::create)
//!   sets on those servers): messages go out as one fast-ingest batch (ADR-50), and one flow ack from the
//!   server confirms hundreds of them (default 500, [`PublishConfig::fast_ingest_flow`]). When
//!   the queue stays empty for a moment the batch is committed, so its tail is confirmed too.
//!   A batch that ends early (a gap, a server restart, silence past the request timeout)
//!   confirms what the server says it stored; the rest goes into the next batch, under the
//!   same `Nats-Msg-Id`s and before anything newer, so nothing is stored twice and order
//!   holds (the server stores a batch's messages in order and stops at a gap). Only when a
//!   batch cannot be opened, or confirmed nothing at all (an outage), do messages go one by
//!   one with their own retries until one of them is confirmed again.
//! - **Per message** ([`PublishPath::PerMessage`]): one publish and one ack each, with up to
//!   `window` acks outstanding. Streams without `allow_batched`, servers before 2.14, and
//!   [`PublishConfig::fast_ingest`]`(false)` use it.
//!
//! Both keep every guarantee below; the worker learns which applies from the server's answer
//! to its first batch, and keeps to it until it exits idle.
//!
//! Several messages that must be stored together, or not at all, go as one atomic
//! [`Batch`] through [`Publisher::publish_batch`] (nats-server 2.12.1+; see [`batch`]).
//!
//! # Failures
//!
//! A message that still fails after its last attempt is reported, never dropped silently: to
//! the [`ReportSender`](crate::ReportSender) given to [`PublishConfig::failures`] (Go natty's
//! `PublishErrorCh`), with its payload and headers so it can be resent with
//! [`Publisher::republish`]. Without one, it is logged at `ERROR` with its subject and
//! `Nats-Msg-Id`. The worker waits for room in a full report channel (unless the sender is
//! [lossy](crate::ReportSender::lossy)), and meanwhile sends nothing more for that subject,
//! and `flush`/`shutdown` wait for the report to be taken: read reports concurrently, and do
//! not wait on a `republish` to the same subject while reading them (its queue may only drain
//! once the report channel does; resend after the outage, or from another task).
//!
//! # Order
//!
//! A subject's worker writes its messages to the connection one at a time, in the order they
//! entered the subject's queue (for one task, the order of its `publish` calls), and only
//! waits for their acks concurrently; so the stream stores them in that order. The exception
//! is a retry: a message whose attempt failed (no ack in time, a disconnect) is written again
//! after its backoff, when later messages of the same subject may already be stored, so it is
//! stored *after* them (and if its first attempt did reach the stream after all, the retry is
//! dropped as a duplicate and the message keeps its first place). Messages of different
//! subjects are not ordered with each other. On the fast-ingest path (see [Paths](self#paths))
//! a batch's leftovers are resent in the next batch, so order holds across a crash or a cut
//! too, unless the outage outlasts a batch (then messages go one by one, with the retry
//! caveat above). Where order must hold across any failure, use [`Publisher::publish_acked`]
//! one message at a time.
//!
//! # Cancellation
//!
//! `publish` only ever waits for room in the queue; dropped while waiting (a timeout, a
//! `select!`, a cancelled HTTP request), it has queued and counted nothing, so
//! [`Publisher::flush`] and [`Natty::shutdown`](crate::Natty::shutdown) do not wait for it.
//! Once `publish` returned `Ok`, the message is sent or reported.
//!
//! # As a tower `Service`
//!
//! [`Publisher`] is a tower [`Service`](tower_service::Service) of [`OutgoingMessage`]s that
//! answers with the stream's [`PublishAck`], on the same pipeline, so tower's middleware
//! applies to publishing. `poll_ready` reserves a slot of queue room: a client's publishers
//! share `queue_capacity` slots ([`PublishConfig::queue_capacity`]), and a slot is given back
//! once its message is acked or has failed. So `poll_ready` is pending while the pipeline
//! holds that many unsettled calls, and tower's `ConcurrencyLimit`, `RateLimit`, `Timeout` and
//! `LoadShed` (which refuses a call at once when `poll_ready` is pending) work on publishing
//! as they do on any service.
//!
//! `call` validates and enqueues at once, so the calls of one task reach a subject's queue in
//! call order. Its future ([`ResponseFuture`]) resolves with the ack; dropped before that (a
//! `Timeout`), it does not take the message back: the message is still sent, and a failure it
//! meets is reported like a [`Publisher::publish`] failure ([`PublishConfig::failures`]). A
//! failure the caller waited for is the caller's and is not reported again.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use natty::{Natty, OutgoingMessage};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let natty = Natty::connect(natty::Config::from_env()).await?;
//! natty.stream("ORDERS")?.create(["orders.>"]).await?;
//! let publisher = natty.publisher();
//! for n in 0..1000 {
//!     publisher.publish("orders.created", format!("order {n}")).await?;
//! }
//! publisher.flush().await; // every message above is now acked or reported failed
//!
//! // The same pipeline as a tower service, one ack per call.
//! let mut service = ServiceBuilder::new()
//!     .load_shed() // refuse at once when the queue is full
//!     .timeout(Duration::from_secs(5))
//!     .service(publisher.clone());
//! let ack = service
//!     .ready()
//!     .await?
//!     .call(OutgoingMessage::new("orders.created", "order 1000"))
//!     .await?;
//! println!("stored as {} #{}", ack.stream, ack.sequence);
//! # Ok(())
//! # }
//! ```

// Imports go one way, top to bottom: the handle (`publisher`, its `future`) sits on the
// `pipeline` (queues, admission, flush, shutdown), which starts each subject's `worker`; the
// worker does one subject's I/O and asks `decide` what to do next; `confirm` waits for single
// acks, `fast_ingest` runs batches; `queued`, `config` and `message` are below them all.
pub mod batch;
mod config;
mod confirm;
mod decide;
mod fast_ingest;
mod future;
mod message;
mod pipeline;
mod publisher;
mod queued;
mod worker;

pub use batch::{Batch, BatchAck, BatchError};
pub use config::PublishConfig;
pub use future::ResponseFuture;
pub use message::{OutgoingMessage, PublishAck, PublishError, PublishFailure, StoredMessage};
pub use pipeline::PublishPath;
pub use publisher::Publisher;
