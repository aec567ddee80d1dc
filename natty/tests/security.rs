//! Reliability scenario 9: TLS, mutual TLS, every credential type, and secrets kept out of
//! `Debug` output and logs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use natty::compat::GoNatty as _;
use natty::error::ConnectErrorKind;
use natty::{Config, Credentials, Natty};
use natty_testkit::{Auth, Server, Tls};

mod common;
use common::{asset, chain};

#[tokio::test]
async fn a_tls_only_server_refuses_a_plain_client_with_a_tls_error() {
    let server = Server::builder()
        .tls(Tls::new(asset("server-cert.pem"), asset("server-key.pem")))
        .start()
        .unwrap();
    let plain = format!("nats://127.0.0.1:{}", server.port());
    let err = Natty::connect(Config::new([plain]).connect_timeout(Duration::from_secs(3)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
    assert!(
        chain(&err).contains("certificate"),
        "a readable reason: {}",
        chain(&err)
    );
}

/// A signed NATS JWT (header.claims.signature), as `nsc` would write it.
fn jwt(claims: serde_json::Value, issuer: &nkeys::KeyPair) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = URL_SAFE_NO_PAD.encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{signature}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_creds_file_authenticates_and_a_foreign_one_is_refused() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        serde_json::json!({"jti": "natty-op", "iat": now(), "iss": operator.public_key(),
            "name": "natty-op", "sub": operator.public_key(),
            "nats": {"type": "operator", "version": 2}}),
        &operator,
    );
    let account_jwt = jwt(
        serde_json::json!({"jti": "natty-acc", "iat": now(), "iss": operator.public_key(),
            "name": "natty-acc", "sub": account.public_key(),
            "nats": {"limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                "exports": -1, "wildcards": true, "conn": -1, "leaf": -1},
                "type": "account", "version": 2}}),
        &operator,
    );
    // JetStream needs a system account in operator mode.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        serde_json::json!({"jti": "natty-sys", "iat": now(), "iss": operator.public_key(),
            "name": "SYS", "sub": system.public_key(),
            "nats": {"type": "account", "version": 2}}),
        &operator,
    );
    let creds_for = |user: &nkeys::KeyPair, issuer: &nkeys::KeyPair| {
        let user_jwt = jwt(
            serde_json::json!({"jti": "natty-user", "iat": now(), "iss": issuer.public_key(),
                "name": "natty-user", "sub": user.public_key(),
                "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                    "type": "user", "version": 2}}),
            issuer,
        );
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(
            file,
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        )
        .unwrap();
        file
    };
    let server = Server::builder()
        .config_snippet(format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{ {acc}: {account_jwt}, {sys}: {system_jwt} }}",
            acc = account.public_key(),
            sys = system.public_key(),
        ))
        .start()
        .unwrap();

    let good = creds_for(&user, &account);
    let natty = Natty::connect(
        Config::new([server.url()]).credentials(Credentials::creds_file(good.path())),
    )
    .await
    .expect("the account's user connects");
    natty.client().flush().await.unwrap();

    let stranger = nkeys::KeyPair::new_account();
    let foreign = creds_for(&nkeys::KeyPair::new_user(), &stranger);
    let err = Natty::connect(
        Config::new([server.url()])
            .credentials(Credentials::creds_file(foreign.path()))
            .connect_timeout(Duration::from_secs(3)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Authentication, "{err}");
}

/// Collects everything logged at any level while it is the default subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    const PASSWORD: &str = "pw-Zq81-secret";
    const TOKEN: &str = "tok-Yx72-secret";
    let seed_user = nkeys::KeyPair::new_user();
    let seed = seed_user.seed().unwrap();

    let server = Server::builder()
        .auth(Auth::UserPassword {
            user: "svc".into(),
            password: PASSWORD.into(),
        })
        .start()
        .unwrap();
    let configs = [
        Config::new([server.url()]).credentials(Credentials::user_password("svc", PASSWORD)),
        Config::new([server.url()]).credentials(Credentials::user_password("svc", TOKEN)),
        Config::new([server.url()]).credentials(Credentials::token(TOKEN)),
        Config::new([server.url()]).credentials(Credentials::nkey_seed(seed.clone())),
    ];
    let mut shown = String::new();
    for config in configs {
        shown.push_str(&format!("{config:?}\n"));
        match Natty::connect(config.connect_timeout(Duration::from_secs(3))).await {
            Ok(natty) => {
                shown.push_str(&format!("{natty:?}\n"));
                natty.put("secrets", "k", "v".into()).await.unwrap();
                natty.shutdown().await;
            }
            Err(err) => shown.push_str(&format!("{err:?}\n{err}\n")),
        }
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("natty"),
        "the capture saw natty's logs: {logs:.400}"
    );
    for secret in [PASSWORD, TOKEN, seed.as_str()] {
        assert!(
            !shown.contains(secret),
            "a secret in Debug/Display output:\n{shown}"
        );
        assert!(!logs.contains(secret), "a secret in the logs");
    }
}
