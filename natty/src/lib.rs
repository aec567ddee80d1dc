//! natty: NATS JetStream made easy and safe to use in services.
//!
//! An opinionated wrapper over [async-nats](async_nats) in the spirit of Go's
//! `streamdal/natty`: kafka-like durable pull consumers, batched publishing, stream and
//! consumer management, key/value helpers and leader election, with bounded queues,
//! `Nats-Msg-Id` de-duplication, typed errors and checks on every name before it is sent.
//!
//! [`Natty`] connects and hands out one handle per feature; each module documents its own:
//!
//! | feature | handle, from [`Natty`] | module |
//! |---|---|---|
//! | publishing (batched, bounded, de-duplicated) | [`Natty::publish`], [`Natty::publisher`]: a [`Publisher`], also a tower `Service` | [`publish`] |
//! | consuming (durable pull consumers, any tower `Service`) | [`Natty::consumer`]: a [`Consumer`]; [`Natty::serve`], [`Natty::consume`] | [`consume`] |
//! | streams and their consumers | [`Natty::stream`]: a [`Stream`] | [`stream`] |
//! | key/value | [`Natty::bucket`]: a [`Bucket`] | [`kv`] |
//! | leader election | [`Natty::elect`]: a [`Leadership`] | [`election`] |
//! | calling request-reply services (deadlines, typed service errors, idempotent retries) | [`Natty::requester`]: a [`Requester`], a tower `Service` | [`requester`] |
//! | partitioned consumer groups | [`Natty::static_group`], [`Natty::elastic_group`] | [`group`] |
//! | request-reply services (the NATS service API, each endpoint a tower `Service`) | [`Natty::service`]: a [`ServiceInstance`](service::ServiceInstance) | [`service`] |
//! | failure reports (Go's `PublishErrorCh`, `ErrorCh`) | [`PublishConfig::failures`], [`ConsumeConfig::failures`]: a [`ReportSender`] | [`report`] |
//!
//! Coming from Go natty? Its flat names (`create_stream`, `get`, `put`, `as_leader`, ...) are
//! on the [`GoNatty`](compat::GoNatty) extension trait; [`compat`] maps every one.
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
//! natty.stream("ORDERS")?.create(["orders.>"]).await?;
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

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
mod client;
pub mod compat;
pub mod config;
mod connect;
mod connection;
pub mod consume;
pub mod election;
pub mod error;
pub mod group;
pub mod header;
pub mod kv;
#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
pub mod otel;
pub mod process;
pub mod publish;
pub mod report;
pub mod requester;
mod server;
pub mod service;
pub mod stream;
pub mod validate;

pub use client::Natty;
pub use config::{Config, Credentials, Secret};
pub use connect::{ConnectError, ConnectionState};
pub use consume::message::{self, Message};
pub use consume::{
    ConsumeConfig, ConsumeError, ConsumeSummary, Consumer, ConsumerOptions, ConsumerSettings,
    DeliverPolicy, HandlerFailure,
};
pub use election::{ElectionConfig, ElectionError, LeaderState, Leadership, Term};
pub use error::{BoxError, Error};
pub use group::{ElasticGroup, StaticGroup};
pub use header::HeaderMap;
pub use kv::{Bucket, BucketStatus, KvEntry, KvError, KvOperation, KvWrite, Watch};
pub use publish::{
    Batch, BatchAck, BatchError, OutgoingMessage, PublishAck, PublishConfig, PublishError,
    PublishFailure, PublishPath, Publisher, StoredMessage,
};
pub use report::ReportSender;
pub use requester::{RequestError, Requester};
pub use server::ServerInfo;
pub use stream::{Stream, StreamError};

/// The async-nats release natty is built on: the escape hatch for what natty does not wrap
/// ([`Natty::client`], [`Natty::jetstream`], [`Message::from_jetstream`], [`Natty::from_client`],
/// [`Stream::create_with_config`], the `From` conversions of [`HeaderMap`]). natty's own API
/// uses none of its types, so an async-nats release cannot break it; code that uses this
/// re-export may have to change with async-nats releases.
pub use async_nats;
pub use tokio_util::sync::CancellationToken;
