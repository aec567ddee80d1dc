//! Real `nats-server` processes for tests: single servers (plain, TLS, with auth), clusters, and
//! a TCP proxy that cuts connections; and [`Logs`], what a test logs, to assert on.
//!
//! Every server runs on loopback ports of its own with a temporary JetStream store; readiness is
//! awaited by polling the monitoring `/healthz` endpoint, never by sleeping. Dropping a
//! [`Server`], [`Cluster`] or [`Proxy`] kills what it started and removes its files.
//!
//! The `nats-server` binary is found through `NATS_SERVER_BIN`, the project-local install made
//! by `scripts/nats-server`, or `PATH` (see [`find_binary`]).
//!
//! # Example
//! Any NATS client connects to [`Server::url`]; this one is async-nats, which a test using it
//! needs as a dev-dependency of its own (`async-nats = "0.51"`, with `tokio`).
//! ```no_run
//! use natty_testkit::Server;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::start()?;
//! let client = async_nats::connect(server.url()).await?;
//! client.publish("hello", "world".into()).await?;
//! server.kill();
//! server.restart()?;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod binary;
mod cluster;
mod error;
mod logs;
mod process;
mod proxy;
mod server;

pub use binary::{find_binary, server_version, PINNED_VERSION};
pub use cluster::Cluster;
pub use error::Error;
pub use logs::Logs;
pub use process::Process;
pub use proxy::Proxy;
pub use server::{Auth, Server, ServerBuilder, Tls};
