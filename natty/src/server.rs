//! What the connected server is and can do: [`ServerInfo`].
//!
//! Features natty uses only on newer servers (per-message TTLs, fast-ingest batches) are told
//! from the version the server reports when the client connects.

/// The connected server's version and limits, as they were when asked for: a reconnect to
/// another server of the cluster may change them.
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
#[derive(Clone, Debug)]
pub struct ServerInfo {
    version: String,
    max_payload: usize,
}

impl ServerInfo {
    /// What `client` knows of its server now.
    pub(crate) fn from_client(client: &async_nats::Client) -> Self {
        Self {
            version: client.server_info().version,
            max_payload: client.max_payload(),
        }
    }

    /// The version the server reports, such as `2.15.1` (empty before the first connection).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The largest payload the server accepts, in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Whether the server supports per-message TTLs (2.11 and later).
    pub fn supports_message_ttl(&self) -> bool {
        version_at_least(&self.version, 2, 11)
    }

    /// Whether the server has fast-ingest batched publishing (2.14+).
    pub fn supports_fast_ingest(&self) -> bool {
        version_at_least(&self.version, 2, 14)
    }
}

/// Whether `version` (`2.11.0`, `v2.11.0-beta`) is `major.minor` or later; an unreadable
/// version is older than any.
pub(crate) fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_comparison() {
        assert!(super::version_at_least("2.15.1", 2, 11));
        assert!(super::version_at_least("v2.11.0-beta", 2, 11));
        assert!(!super::version_at_least("2.10.26", 2, 11));
        assert!(!super::version_at_least("", 2, 11));
    }
}
