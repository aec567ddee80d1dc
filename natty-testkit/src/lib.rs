//! Real `nats-server` processes for tests: single servers (plain, TLS, with auth), clusters, and
//! a TCP proxy that cuts connections; [`Harness`], to test a message handler or a whole tower
//! stack on one through natty's API alone (each message's outcome, dead letters, the
//! server's counts); and [`Logs`], what a test logs, to assert on.
//!
//! Every server runs on loopback ports of its own with a temporary JetStream store; readiness is
//! awaited by polling the monitoring `/healthz` endpoint, never by sleeping. Dropping a
//! [`Server`], [`Cluster`] or [`Proxy`] kills what it started and removes its files.
//!
//! # Getting a `nats-server`
//! The kit runs the `nats-server` it finds first ([`find_binary`]):
//! 1. `NATS_SERVER_BIN`, a path to the binary (and then only there);
//! 2. the cache, `<cache>/nats-server-<version>/nats-server` ([`cached_binary`]), for
//!    `NATS_SERVER_VERSION` (default [`PINNED_VERSION`]), where `<cache>` is
//!    `$NATTY_CACHE_DIR`, else `$XDG_CACHE_HOME/natty`, else `~/.cache/natty` ([`cache_dir`]);
//!    natty's own `scripts/nats-server` installs the pinned release there;
//! 3. the first `nats-server` on `PATH`.
//!
//! Without one, starting a server fails with [`Error::BinaryNotFound`], which says where it
//! looked. Install nats-server on `PATH` (a release from
//! <https://github.com/nats-io/nats-server/releases>, or your package manager), point
//! `NATS_SERVER_BIN` at one, or put one at the cache path.
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
pub mod harness;
mod logs;
mod process;
mod proxy;
mod server;

pub use binary::{cache_dir, cached_binary, find_binary, server_version, PINNED_VERSION};
pub use cluster::Cluster;
pub use error::Error;
pub use harness::{Harness, Serving};
pub use logs::{CaptureGuard, Logs};
pub use process::Process;
pub use proxy::Proxy;
pub use server::{Auth, Server, ServerBuilder, Tls};
