//! Connection settings: servers, TLS, credentials, timeouts and publish tuning.
//!
//! Secrets (passwords, tokens, nkey seeds) are held in [`Secret`], whose `Debug` prints
//! `<redacted>`, so a `Config` can be logged safely.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use natty::{Config, Credentials};
//!
//! let config = Config::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
//!     .name("billing")
//!     .credentials(Credentials::user_password("svc", "hunter2"))
//!     .ca_file("assets/ca.pem")
//!     .connect_timeout(Duration::from_secs(3));
//! assert!(!format!("{config:?}").contains("hunter2"));
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::publish::PublishConfig;

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for handing to the client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to authenticate to the server.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials.
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token.
    Token(Secret),
    /// An nkey seed (`SU...`); the server knows the public key.
    NkeySeed(Secret),
    /// A `.creds` file with a user JWT and nkey seed (decentralised auth).
    CredsFile(PathBuf),
}

impl Credentials {
    /// A user name and password.
    pub fn user_password(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials::UserPassword {
            user: user.into(),
            password: Secret::new(password),
        }
    }

    /// A token.
    pub fn token(token: impl Into<String>) -> Self {
        Credentials::Token(Secret::new(token))
    }

    /// An nkey seed.
    pub fn nkey_seed(seed: impl Into<String>) -> Self {
        Credentials::NkeySeed(Secret::new(seed))
    }

    /// A `.creds` file.
    pub fn creds_file(path: impl Into<PathBuf>) -> Self {
        Credentials::CredsFile(path.into())
    }
}

/// TLS settings. TLS is used when the URL says `tls://`, the server requires it, or any of
/// these is set.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    pub(crate) insecure_skip_verify: bool,
}

impl TlsConfig {
    pub(crate) fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some() || self.insecure_skip_verify
    }
}

/// Everything [`Natty::connect`](crate::Natty::connect) needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) servers: Vec<String>,
    pub(crate) name: Option<String>,
    pub(crate) credentials: Credentials,
    pub(crate) tls: TlsConfig,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_on_initial_connect: bool,
    pub(crate) publish: PublishConfig,
}

impl Config {
    /// Connect to any of `servers` (`nats://host:port`, `tls://host:port`); the client fails
    /// over between them when a connection drops.
    pub fn new<I, S>(servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            servers: servers.into_iter().map(Into::into).collect(),
            name: None,
            credentials: Credentials::None,
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            retry_on_initial_connect: false,
            publish: PublishConfig::default(),
        }
    }

    /// Read the configuration from the environment, with the names the `nats` CLI uses:
    /// `NATS_URL` (comma-separated, default `nats://127.0.0.1:4222`), `NATS_USER` and
    /// `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_NKEY` (a seed), `NATS_CREDS` (a file), `NATS_CA`,
    /// `NATS_CERT` and `NATS_KEY` (files), and `NATS_NAME`.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    pub(crate) fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let urls = var("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into());
        let mut config = Config::new(urls.split(',').map(str::trim).filter(|u| !u.is_empty()));
        config.name = var("NATS_NAME");
        config.credentials = if let Some(creds) = var("NATS_CREDS") {
            Credentials::creds_file(creds)
        } else if let Some(seed) = var("NATS_NKEY") {
            Credentials::nkey_seed(seed)
        } else if let Some(token) = var("NATS_TOKEN") {
            Credentials::token(token)
        } else if let (Some(user), Some(password)) = (var("NATS_USER"), var("NATS_PASSWORD")) {
            Credentials::user_password(user, password)
        } else {
            Credentials::None
        };
        config.tls.ca_file = var("NATS_CA").map(PathBuf::from);
        if let (Some(cert), Some(key)) = (var("NATS_CERT"), var("NATS_KEY")) {
            config.tls.client_cert = Some((cert.into(), key.into()));
        }
        config
    }

    /// The client name the server shows in its connection list.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How to authenticate.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Trust servers whose certificate is signed by this CA (PEM file).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Present this client certificate and key (PEM files), for servers that require mTLS.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// **Dangerous:** accept any server certificate, so anyone on the network path can read
    /// and change the traffic. Only for local experiments with self-signed certificates;
    /// prefer [`Config::ca_file`]. Cannot be combined with [`Config::client_cert`].
    pub fn insecure_skip_verify(mut self) -> Self {
        self.tls.insecure_skip_verify = true;
        self
    }

    /// How long connecting may take before it fails (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long JetStream and KV requests wait for an answer (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Return from `connect` at once and keep trying in the background when no server is up
    /// yet (default off: `connect` fails within the connect timeout).
    pub fn retry_on_initial_connect(mut self, retry: bool) -> Self {
        self.retry_on_initial_connect = retry;
        self
    }

    /// Tuning of the batched publisher.
    pub fn publish(mut self, publish: PublishConfig) -> Self {
        self.publish = publish;
        self
    }

    /// The configured server URLs.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        for creds in [
            Credentials::user_password("u", "s3cret-pw"),
            Credentials::token("s3cret-token"),
            Credentials::nkey_seed("SUs3cret-seed"),
        ] {
            let text = format!("{:?}", Config::new(["nats://a:4222"]).credentials(creds));
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn from_env_reads_urls_and_credentials() {
        let vars = [
            ("NATS_URL", "nats://a:1, nats://b:2"),
            ("NATS_USER", "u"),
            ("NATS_PASSWORD", "p"),
            ("NATS_CA", "/ca.pem"),
        ];
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
        assert_eq!(config.servers, ["nats://a:1", "nats://b:2"]);
        assert!(
            matches!(config.credentials, Credentials::UserPassword { ref user, .. } if user == "u")
        );
        assert_eq!(config.tls.ca_file, Some(PathBuf::from("/ca.pem")));
        let default = Config::from_lookup(|_| None);
        assert_eq!(default.servers, ["nats://127.0.0.1:4222"]);
    }
}
