//! Connecting: several URLs, TLS, credentials, and clear errors for bad input.

use std::time::{Duration, Instant};

use natty::compat::GoNatty as _;
use natty::error::ConnectErrorKind;
use natty::{Config, ConnectionState, Credentials, Natty};
use natty_testkit::{Auth, Server, Tls};

mod common;
use common::{asset, connect};

fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("nats://127.0.0.1:{port}")
}

#[tokio::test]
async fn any_reachable_server_in_the_list_is_used() {
    let server = Server::start().unwrap();
    let natty = Natty::connect(
        Config::new([dead_url(), server.url()]).connect_timeout(Duration::from_secs(3)),
    )
    .await
    .expect("second url works");
    assert_eq!(natty.connection_state(), ConnectionState::Connected);
    assert!(!natty.server_info().version().is_empty());
}

#[tokio::test]
async fn bad_input_fails_fast_with_a_typed_error() {
    let started = Instant::now();
    let bound = Duration::from_secs(2);
    let cases: Vec<(Config, ConnectErrorKind)> = vec![
        (
            Config::new(Vec::<String>::new()),
            ConnectErrorKind::InvalidConfig,
        ),
        (
            Config::new(["nats://bad url:4222"]),
            ConnectErrorKind::InvalidConfig,
        ),
        (
            Config::new([dead_url()]).connect_timeout(bound),
            ConnectErrorKind::Unreachable,
        ),
        (
            Config::new([dead_url()]).ca_file("/nonexistent/ca.pem"),
            ConnectErrorKind::Tls,
        ),
        (
            Config::new([dead_url()]).client_cert(asset("client-cert.pem"), "/nonexistent/key.pem"),
            ConnectErrorKind::Tls,
        ),
        (
            Config::new([dead_url()])
                .credentials(Credentials::creds_file("/nonexistent/user.creds")),
            ConnectErrorKind::Authentication,
        ),
        (
            Config::new([dead_url()]).credentials(Credentials::nkey_seed("not-a-seed")),
            ConnectErrorKind::Authentication,
        ),
        (
            Config::new([dead_url()])
                .insecure_skip_verify()
                .client_cert(asset("client-cert.pem"), asset("client-key.pem")),
            ConnectErrorKind::InvalidConfig,
        ),
    ];
    for (config, want) in cases {
        let shown = format!("{config:?}");
        let err = Natty::connect(config).await.expect_err(&shown);
        assert_eq!(err.kind(), want, "{shown}: {err}");
        assert!(!err.to_string().ends_with('.'), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn tls_with_the_ca_mutual_tls_and_skip_verify() {
    let server = Server::builder()
        .tls(
            Tls::new(asset("server-cert.pem"), asset("server-key.pem"))
                .require_client_certs(asset("ca.pem")),
        )
        .start()
        .unwrap();
    let natty = Natty::connect(
        Config::new([server.url()])
            .ca_file(asset("ca.pem"))
            .client_cert(asset("client-cert.pem"), asset("client-key.pem")),
    )
    .await
    .expect("mtls with the assets' client certificate");
    natty.put("tls", "k", "v".into()).await.unwrap();

    let err = Natty::connect(
        Config::new([server.url()])
            .ca_file(asset("ca.pem"))
            .connect_timeout(Duration::from_secs(3)),
    )
    .await
    .expect_err("no client certificate");
    assert!(
        matches!(
            err.kind(),
            ConnectErrorKind::Tls
                | ConnectErrorKind::Unreachable
                | ConnectErrorKind::Authentication
        ),
        "{err}"
    );

    let plain = Server::builder()
        .tls(Tls::new(asset("server-cert.pem"), asset("server-key.pem")))
        .start()
        .unwrap();
    let err = Natty::connect(Config::new([plain.url()]).connect_timeout(Duration::from_secs(3)))
        .await
        .expect_err("the test CA is not trusted by default");
    assert_ne!(err.kind(), ConnectErrorKind::InvalidConfig, "{err}");
    Natty::connect(Config::new([plain.url()]).insecure_skip_verify())
        .await
        .expect("skip verify accepts the self-signed chain");
}

#[tokio::test]
async fn user_password_token_and_nkey_auth() {
    let server = Server::builder()
        .auth(Auth::UserPassword {
            user: "svc".into(),
            password: "pw-123".into(),
        })
        .start()
        .unwrap();
    Natty::connect(
        Config::new([server.url()]).credentials(Credentials::user_password("svc", "pw-123")),
    )
    .await
    .expect("right password");
    let err = Natty::connect(
        Config::new([server.url()])
            .credentials(Credentials::user_password("svc", "wrong"))
            .connect_timeout(Duration::from_secs(3)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Authentication, "{err}");
    assert!(
        !format!("{err:?}").contains("wrong"),
        "the secret leaked into Debug"
    );

    let server = Server::builder()
        .auth(Auth::Token("tok-456".into()))
        .start()
        .unwrap();
    Natty::connect(Config::new([server.url()]).credentials(Credentials::token("tok-456")))
        .await
        .expect("right token");
    let err = Natty::connect(Config::new([server.url()]).credentials(Credentials::token("nope")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Authentication, "{err}");

    let user = nkeys::KeyPair::new_user();
    let server = Server::builder()
        .auth(Auth::Nkey(user.public_key()))
        .start()
        .unwrap();
    Natty::connect(
        Config::new([server.url()]).credentials(Credentials::nkey_seed(user.seed().unwrap())),
    )
    .await
    .expect("right nkey");
    let stranger = nkeys::KeyPair::new_user();
    let err = Natty::connect(
        Config::new([server.url()]).credentials(Credentials::nkey_seed(stranger.seed().unwrap())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Authentication, "{err}");
}

#[tokio::test]
async fn connection_state_follows_the_server() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    assert_eq!(natty.connection_state(), ConnectionState::Connected);
    server.kill();
    tokio::time::timeout(Duration::from_secs(10), async {
        while natty.connection_state() == ConnectionState::Connected {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("sees the disconnect");
    server.restart().unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while natty.connection_state() != ConnectionState::Connected {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("reconnects");
}
