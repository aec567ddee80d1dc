//! natty: NATS JetStream made easy and safe to use in services.
//!
//! An opinionated wrapper over [async-nats](async_nats) in the spirit of Go's
//! `streamdal/natty`: kafka-like durable pull consumers, batched publishing, stream and
//! consumer management, key/value helpers and leader election, with bounded queues,
//! `Nats-Msg-Id` de-duplication, typed errors and checks on every name before it is sent.
//!
//! | Go natty | natty |
//! |---|---|
//! | `Publish` | [`Natty::publish`] (batched, bounded), [`Natty::publish_acked`], [`Natty::publisher`] (a tower `Service`) |
//! | `PublishErrorCh`, `ErrorCh` | [`PublishConfig::failures`], [`ConsumeConfig::failures`] (a [`ReportSender`]) |
//! | `Consume` | [`Natty::consume`], [`Natty::serve`] (any tower `Service`) |
//! | `CreateStream`, `CreateConsumer`, ... | [`Natty::create_stream`], [`Natty::create_consumer`], ... |
//! | `Get`, `Create`, `Put`, `Delete`, `Keys`, `Refresh`, ... | [`Natty::get`], [`Natty::create`], [`Natty::put`], ...: shims over [`Natty::bucket`], a [`Bucket`] handle |
//! | `AsLeader`, `HaveLeader`, `GetLeader` | [`Natty::as_leader`], [`Natty::have_leader`], [`Natty::get_leader`], and [`Natty::elect`] for a [`Leadership`] handle |
//!
//! Tower middleware for consumed messages lives in `natty-tower`, axum integration in
//! `natty-axum`, and real `nats-server` processes for tests in `natty-testkit`.
//!
//! # Features
//! - `opentelemetry` (off by default): every publish carries the trace context of the
//!   `tracing` span it is called in; the `otel` module (built with the feature) says how, and
//!   reads the context back for consumers of your own.
//!
//! # Example
//! ```no_run
//! use natty::{Config, ConsumeConfig, Message, Natty};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = Natty::connect(Config::from_env()).await?;
//! natty.create_stream("ORDERS", ["orders.>"]).await?;
//! natty.publish("orders.created", "order 1").await?;
//! natty.flush().await;
//!
//! let shutdown = CancellationToken::new();
//! let consuming = natty.consume(
//!     ConsumeConfig::new("ORDERS", "worker"),
//!     shutdown.clone(),
//!     |msg: Message| async move {
//!         msg.ack().await?;
//!         Ok::<_, natty::message::SettleError>(())
//!     },
//! );
//! # shutdown.cancel();
//! consuming.await?;
//! # Ok(())
//! # }
//! ```

pub mod backoff;
mod client;
pub mod config;
mod connect;
pub mod consume;
pub mod consumer;
mod consumer_handle;
pub mod election;
pub mod error;
mod fast_ingest;
pub mod group;
pub mod header;
pub mod kv;
pub mod message;
#[cfg(feature = "opentelemetry")]
pub mod otel;
pub mod publish;
pub mod publisher;
pub mod report;
pub mod stream;
pub mod validate;

pub use client::Natty;
pub use config::{Config, Credentials, Secret};
pub use connect::{ConnectError, ConnectionState};
pub use consume::{ConsumeConfig, ConsumeError, ConsumeSummary, HandlerFailure};
pub use consumer::ConsumerSettings;
pub use consumer_handle::Consumer;
pub use election::{ElectionConfig, ElectionError, LeaderState, Leadership, Term};
pub use error::{BoxError, Error};
pub use header::HeaderMap;
pub use kv::{Bucket, BucketStatus, KvEntry, KvError, KvOperation, Watch};
pub use message::Message;
pub use publish::{PublishConfig, PublishError, PublishFailure, PublishPath};
pub use publisher::{OutgoingMessage, PublishAck, Publisher, StoredMessage};
pub use report::ReportSender;
pub use stream::{ConsumerOptions, DeliverPolicy, StreamError};

/// The async-nats release natty is built on: the escape hatch for what natty does not wrap
/// ([`Natty::client`], [`Natty::jetstream`], [`Message::from_jetstream`], [`Natty::from_client`],
/// [`Natty::create_stream_with`], the `From` conversions of [`HeaderMap`]). natty's own API
/// uses none of its types, so an async-nats release cannot break it; code that uses this
/// re-export may have to change with async-nats releases.
pub use async_nats;
pub use tokio_util::sync::CancellationToken;
