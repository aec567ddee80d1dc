//! Turning a [`Config`] into a connected async-nats client, with every input checked first.

use std::sync::Arc;

use async_nats::{ConnectOptions, Event, ServerAddr};

use crate::config::{Config, Credentials};
use crate::error::{ConnectErrorKind, Error, ValidationError};

/// The error of [`Natty::connect`](crate::Natty::connect).
pub type ConnectError = Error<ConnectErrorKind>;

/// Whether the client is connected, for health checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected to a server.
    Connected,
    /// Connecting or reconnecting.
    Pending,
    /// Not connected; the client keeps trying.
    Disconnected,
}

impl From<async_nats::connection::State> for ConnectionState {
    /// Escape hatch: the state of an async-nats client ([`Natty::client`](crate::Natty::client)).
    /// Takes async-nats' own type, so it may change with async-nats releases.
    fn from(state: async_nats::connection::State) -> Self {
        match state {
            async_nats::connection::State::Connected => ConnectionState::Connected,
            async_nats::connection::State::Pending => ConnectionState::Pending,
            async_nats::connection::State::Disconnected => ConnectionState::Disconnected,
        }
    }
}

pub(crate) async fn connect(config: &Config) -> Result<async_nats::Client, ConnectError> {
    let invalid = |what, value: &str, reason| {
        Error::with_source(
            ConnectErrorKind::InvalidConfig,
            ValidationError::new(what, value, reason),
        )
    };
    if config.servers.is_empty() {
        return Err(invalid("server list", "", "is empty"));
    }
    let addrs = config
        .servers
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|_| invalid("server url", url, "is not a valid NATS URL"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut options = ConnectOptions::new()
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .event_callback(|event| async move { log_event(&event) });
    if let Some(name) = &config.name {
        options = options.name(name);
    }
    if config.retry_on_initial_connect {
        options = options.retry_on_initial_connect();
    }
    options = with_credentials(options, &config.credentials).await?;
    options = with_tls(options, config)?;

    let connecting = options.connect(addrs);
    let client = if config.retry_on_initial_connect {
        connecting.await
    } else {
        tokio::time::timeout(config.connect_timeout, connecting)
            .await
            .map_err(|elapsed| Error::with_source(ConnectErrorKind::TimedOut, elapsed))?
    };
    client.map_err(|err| {
        use async_nats::ConnectErrorKind as Nats;
        let kind = match err.kind() {
            Nats::ServerParse => ConnectErrorKind::InvalidConfig,
            Nats::Authentication | Nats::AuthorizationViolation => ConnectErrorKind::Authentication,
            Nats::TimedOut => ConnectErrorKind::TimedOut,
            Nats::Tls => ConnectErrorKind::Tls,
            Nats::Io if is_tls_failure(&err) => ConnectErrorKind::Tls,
            Nats::Dns | Nats::Io | Nats::MaxReconnects => ConnectErrorKind::Unreachable,
        };
        Error::with_source(kind, err)
    })
}

/// Whether a connect I/O error is really a failed TLS handshake (async-nats reports those as
/// I/O errors wrapping the rustls error).
fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<async_nats::rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
            {
                return true;
            }
        }
        next = err.source();
    }
    false
}

fn log_event(event: &Event) {
    match event {
        Event::Connected => tracing::info!(target: "natty", "connected to nats"),
        Event::Disconnected => tracing::warn!(target: "natty", "disconnected from nats"),
        Event::LameDuckMode => {
            tracing::warn!(target: "natty", "server entered lame duck mode; reconnecting elsewhere soon")
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(target: "natty", sid, "slow consumer: messages dropped")
        }
        Event::Closed => tracing::info!(target: "natty", "connection closed"),
        Event::Draining => tracing::info!(target: "natty", "connection draining"),
        other => tracing::warn!(target: "natty", event = %other, "nats client event"),
    }
}

async fn with_credentials(
    options: ConnectOptions,
    credentials: &Credentials,
) -> Result<ConnectOptions, ConnectError> {
    Ok(match credentials {
        Credentials::None => options,
        Credentials::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        Credentials::Token(token) => options.token(token.expose().to_owned()),
        Credentials::NkeySeed(seed) => {
            if nkeys::KeyPair::from_seed(seed.expose()).is_err() {
                return Err(Error::with_source(
                    ConnectErrorKind::Authentication,
                    ValidationError::new("nkey seed", "<redacted>", "is not a valid seed"),
                ));
            }
            options.nkey(seed.expose().to_owned())
        }
        Credentials::CredsFile(path) => options.credentials_file(path).await.map_err(|err| {
            Error::with_source(
                ConnectErrorKind::Authentication,
                ValidationError::new(
                    "credentials file",
                    &path.display().to_string(),
                    if err.kind() == std::io::ErrorKind::NotFound {
                        "does not exist"
                    } else {
                        "is not a readable .creds file"
                    },
                ),
            )
        })?,
    })
}

fn with_tls(mut options: ConnectOptions, config: &Config) -> Result<ConnectOptions, ConnectError> {
    let tls = &config.tls;
    let readable = |path: &std::path::Path| {
        std::fs::File::open(path).map(drop).map_err(|_| {
            Error::with_source(
                ConnectErrorKind::Tls,
                ValidationError::new(
                    "tls file",
                    &path.display().to_string(),
                    "does not exist or is not readable",
                ),
            )
        })
    };
    if tls.insecure_skip_verify {
        if tls.client_cert.is_some() {
            return Err(Error::with_source(
                ConnectErrorKind::InvalidConfig,
                ValidationError::new(
                    "tls",
                    "insecure_skip_verify",
                    "cannot be combined with a client certificate",
                ),
            ));
        }
        tracing::warn!(target: "natty", "TLS certificate verification is OFF (insecure_skip_verify)");
        return Ok(options
            .require_tls(true)
            .tls_client_config(insecure::client_config()));
    }
    if let Some(ca) = &tls.ca_file {
        readable(ca)?;
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &tls.client_cert {
        readable(cert)?;
        readable(key)?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let tls_url = config.servers.iter().any(|url| url.starts_with("tls://"));
    if tls.is_set() || tls_url {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// The verifier behind [`Config::insecure_skip_verify`]: it accepts every certificate but
/// still checks handshake signatures, so the session is encrypted, just not authenticated.
mod insecure {
    use super::Arc;
    use async_nats::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use async_nats::rustls::crypto::{
        ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider,
    };
    use async_nats::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use async_nats::rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    struct AcceptAnyCertificate(CryptoProvider);

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub(super) fn client_config() -> ClientConfig {
        let provider = ring::default_provider();
        let verifier = Arc::new(AcceptAnyCertificate(provider.clone()));
        ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| ClientConfig::builder())
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    }
}
