//! What the connected server is and can do: [`ServerInfo`].
//!
//! Features natty uses only on newer servers (per-message TTLs, fast-ingest batches) are told
//! from the version the server reports when the client connects.

/// What the server natty is connected to told about itself (it changes when natty
/// reconnects to another server), from [`Natty::server_info`](crate::Natty::server_info).
/// Borrows the client, so reading it costs nothing up front; each method reads the current
/// answer.
///
/// # Example
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let natty = natty::Natty::connect(natty::Config::from_env()).await?;
/// let server = natty.server_info();
/// println!("nats-server {} takes payloads up to {} bytes", server.version(), server.max_payload());
/// if !server.supports_fast_ingest() {
///     println!("publishing goes message by message");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct ServerInfo<'a> {
    client: &'a async_nats::Client,
}

impl std::fmt::Debug for ServerInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerInfo")
            .field("version", &self.version())
            .field("max_payload", &self.max_payload())
            .finish()
    }
}

impl<'a> ServerInfo<'a> {
    pub(crate) fn of(client: &'a async_nats::Client) -> Self {
        Self { client }
    }

    /// The version the server reports, such as `2.15.1`.
    pub fn version(&self) -> String {
        self.client.server_info().version
    }

    /// The largest payload the server accepts, in bytes (0 before the first connection).
    pub fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    /// Whether the server supports per-message TTLs (2.11 and later).
    pub fn supports_message_ttl(&self) -> bool {
        version_at_least(&self.version(), 2, 11)
    }

    /// Whether the server has fast-ingest batched publishing (2.14+).
    pub fn supports_fast_ingest(&self) -> bool {
        version_at_least(&self.version(), 2, 14)
    }

    /// Whether the server stores atomic batches ([`Batch`](crate::publish::Batch)): 2.12.1+,
    /// the first release that takes `Nats-Msg-Id`s inside a batch.
    pub fn supports_atomic_batch(&self) -> bool {
        release_at_least(&self.version(), (2, 12, 1))
    }
}

/// Whether `version` is at least `release` (major, minor, patch).
fn release_at_least(version: &str, release: (u64, u64, u64)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next()) >= release
}

/// Whether `version` is at least `major.minor`.
pub(crate) fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    release_at_least(version, (major, minor, 0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_comparison() {
        assert!(super::version_at_least("2.15.1", 2, 11));
        assert!(super::version_at_least("v2.11.0-beta", 2, 11));
        assert!(!super::version_at_least("2.10.26", 2, 11));
        assert!(!super::version_at_least("", 2, 11));
        assert!(super::release_at_least("2.12.1", (2, 12, 1)));
        assert!(!super::release_at_least("2.12.0", (2, 12, 1)));
        assert!(super::release_at_least("2.15.1", (2, 12, 1)));
    }
}
