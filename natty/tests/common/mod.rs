//! Helpers shared by natty's integration tests: connecting, reading test assets and error
//! chains, waiting for a cluster to place what it is asked for, and (in the submodules) what
//! the publish, consume and election tests share.

// Each test binary uses some of these.
#![allow(dead_code)]

pub(crate) mod child;
pub(crate) mod consume;
pub(crate) mod election;
pub(crate) mod publish;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use natty::{Config, Natty, PublishConfig};
use natty_testkit::Server;
use tokio::time::Instant;

/// The longest a fault test's single wait may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// A client of `server` with natty's defaults.
pub(crate) async fn connect(server: &Server) -> Natty {
    connect_with(Config::new([server.url()])).await
}

/// A client of `server` that publishes with `publish`.
pub(crate) async fn connect_publishing(server: &Server, publish: PublishConfig) -> Natty {
    connect_with(Config::new([server.url()]).publish(publish)).await
}

/// A client of any of `urls` that gives a request up after 2 s, so a lost server shows well
/// within a test, and publishes with `publish`.
pub(crate) async fn connect_urls(urls: Vec<String>, publish: PublishConfig) -> Natty {
    connect_with(
        Config::new(urls)
            .request_timeout(Duration::from_secs(2))
            .publish(publish),
    )
    .await
}

/// A client with `config`.
pub(crate) async fn connect_with(config: Config) -> Natty {
    Natty::connect(config).await.expect("connect")
}

/// A file of the workspace's `assets/` (certificates, keys).
pub(crate) fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../assets")
        .join(name)
}

/// An error and its sources, joined by `: `.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text = format!("{text}: {cause}");
        next = cause.source();
    }
    text
}

/// `NATTY_SOAK_SECS`, or `default`: how long the soaks run.
pub(crate) fn soak_secs(default: u64) -> u64 {
    std::env::var("NATTY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Retries `attempt` until it succeeds: right after start a cluster may not yet know enough
/// peers to place replicated assets.
pub(crate) async fn placed<T, E: std::fmt::Debug, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(err) if Instant::now() < deadline => {
                println!("{what} not placed yet: {err:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("{what}: {err:?}"),
        }
    }
}
