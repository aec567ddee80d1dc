//! axum integration for natty: NATS publishing, key/value access and leader state in web
//! handlers, as naturally as `Json` or `State`.
//!
//! | item | what it gives a handler |
//! |---|---|
//! | [`NattyState`] | the client and the scope handlers get; found through `FromRef` |
//! | [`AckedPublisher`] | publish to allowed subjects, acked by the stream ([`publish`]) |
//! | [`IdempotencyKey`] | the `Idempotency-Key` header as a `Nats-Msg-Id` ([`idempotency`]) |
//! | [`Kv`] | read and write allowed buckets ([`kv`]) |
//! | [`Requester`] | call NATS services on allowed subjects, their errors as HTTP statuses ([`request`]) |
//! | [`leader::LeaderStatus`], [`leader::RequireLeader`], [`leader::LeaderOnlyLayer`] | leadership and leader-only routes ([`leader`]) |
//! | [`health::router`] | liveness, readiness and leader as JSON ([`health`]) |
//! | [`extract::Json`], [`extract::Path`], [`extract::Bytes`] | axum's extractors, refusing in natty-axum's JSON shape ([`extract`]) |
//! | [`fallback`] | JSON answers for no route (404), a wrong method (405) and a timeout (408) |
//! | `trace_context::TraceContextLayer` (`opentelemetry` feature) | the caller's W3C trace context as the request span's parent (`trace_context`) |
//!
//! Request input never widens what a handler reaches: subjects must match the filters the
//! application allowed and can never be wildcards or reserved (`$JS`, `$KV`, `$SYS`,
//! `_INBOX`); buckets must be on its list; ids that become both a subject token and a KV key
//! are checked for both ([`subject::key_token`]).
//!
//! Every refusal is a [`rejection`] type with a status and one JSON shape,
//! `{"error": "...", "detail": "..."}`: 400 for bad input, 403 out of scope, 404 missing key
//! or route, 405, 408, 409 conflict (or a keyed batch still being stored), 413 too large,
//! 415, 422 for a JSON body of the wrong shape, a reused `Idempotency-Key` or a batch that
//! cannot be one, 501 for atomic batches on a server without them, 503 for a NATS outage, a
//! follower or a service nobody runs, 504 when NATS (a publish's ack, a batch's commit, a KV
//! call) or a service did not answer in time, and a called service's own error code. An
//! application gets that shape for axum's own refusals too when it takes bodies and paths
//! through [`extract`] and installs the [`fallback`] handlers. Every
//! rejection is logged at TRACE under `natty_axum::rejection`; a 5xx answers a generic
//! message and logs its cause at ERROR.
//!
//! # Features
//! - `opentelemetry` (off by default): turns on natty's feature of that name, so what a handler
//!   publishes carries the trace context of the span it runs in (such as a request span
//!   made by tower-http's `TraceLayer`), and a natty-tower consumer continues that trace. Its
//!   `trace_context` module's layer makes the request's `traceparent` that span's parent, so
//!   one trace runs from the caller through the consumer.
//!
//! The extractors ask for `NattyState: FromRef<S>`, like axum's own library extractors, so
//! [`NattyState`] can be the router state or a field of the application's state.
//!
//! # Example
//! ```no_run
//! use axum::{routing::{get, post}, Router};
//! use natty_axum::extract::{Bytes, Path};
//! use natty_axum::leader::{LeaderOnlyLayer, RequireLeader};
//! use natty_axum::rejection::{KvRejection, PublishRejection};
//! use natty_axum::{fallback, health, subject, IdempotencyKey, Kv, NattyState, AckedPublisher};
//!
//! async fn create(
//!     publisher: AckedPublisher,
//!     key: Option<IdempotencyKey>,
//!     Bytes(body): Bytes,
//! ) -> Result<String, PublishRejection> {
//!     let headers = key.map(|key| key.to_headers()).unwrap_or_default();
//!     let ack = publisher.publish_acked_with_headers("orders.created", headers, body).await?;
//!     Ok(ack.sequence.to_string())
//! }
//!
//! async fn status(kv: Kv, Path(id): Path<String>) -> Result<bytes::Bytes, KvRejection> {
//!     kv.bucket("order_status")?.get(subject::key_token(&id)?).await
//! }
//!
//! async fn reindex(leader: RequireLeader) -> String {
//!     format!("reindexed under fencing token {}", leader.fencing_token())
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! let leadership = natty
//!     .elect(natty::ElectionConfig::new("leaders", "orders", "node-1"))
//!     .await?;
//! let state = NattyState::builder(natty)
//!     .allow_subjects("orders.>")
//!     .allow_bucket("order_status")
//!     .leadership(leadership)
//!     .build()?;
//!
//! let app = Router::new()
//!     .route("/orders", post(create))
//!     .route("/orders/{id}", get(status))
//!     .merge(
//!         Router::new()
//!             .route("/admin/reindex", post(reindex))
//!             .route_layer(LeaderOnlyLayer::new(state.clone())),
//!     )
//!     .nest("/health", health::router())
//!     .fallback(fallback::not_found)
//!     .method_not_allowed_fallback(fallback::method_not_allowed)
//!     .with_state(state);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod extract;
pub mod fallback;
pub mod health;
pub mod idempotency;
pub mod kv;
pub mod leader;
pub mod publish;
pub mod rejection;
pub mod request;
pub mod state;
pub mod subject;
#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
pub mod trace_context;

pub use idempotency::IdempotencyKey;
pub use kv::Kv;
pub use publish::AckedPublisher;
pub use request::Requester;
pub use state::{NattyState, NattyStateBuilder};
