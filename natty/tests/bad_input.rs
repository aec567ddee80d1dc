//! Reliability scenario 7: a table of bad input. Every case returns its typed error within a
//! bound, never panics or hangs, and a `>` subscriber on the server sees nothing sent.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use natty::compat::GoNatty as _;
use natty::error::{ConnectErrorKind, KvErrorKind, PublishErrorKind, StreamErrorKind};
use natty::{Config, Credentials, HeaderMap, Natty, OutgoingMessage, PublishConfig, PublishError};
use natty_testkit::{Auth, Server, Tls};
use tokio::time::timeout;
use tower::ServiceExt;

mod common;
use common::{asset, connect};

const BOUND: Duration = Duration::from_secs(5);

async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| panic!("{what:.40?}: no answer within {BOUND:?}"))
}

#[tokio::test]
async fn names_subjects_keys_and_payloads_are_refused_and_nothing_reaches_the_server() {
    let server = Server::builder()
        .config_snippet("max_payload: 8192")
        .start()
        .unwrap();
    let natty = connect(&server).await;
    natty.create_stream("GOOD", ["good.>"]).await.unwrap();
    natty.put("good_bucket", "k", "v".into()).await.unwrap();

    // A second connection sees everything published from now on, JetStream API calls included.
    let spy = async_nats::connect(server.url()).await.unwrap();
    let mut everything = spy.subscribe(">").await.unwrap();
    spy.flush().await.unwrap();

    let long_key = "k".repeat(10 * 1024);
    let long_subject = "s.".repeat(5 * 1024) + "s";
    let subjects = [
        "",
        "a..b",
        ".a",
        "a.",
        "a b",
        "a\tb",
        "a\r\nb",
        "*",
        ">",
        "a.*",
        "$JS.API.>",
        &long_subject,
    ];
    for subject in subjects {
        let err = bounded(subject, natty.publish(subject, "x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), PublishErrorKind::InvalidSubject, "{subject:?}");
        let err = bounded(subject, natty.publisher().publish_acked(subject, "x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), PublishErrorKind::InvalidSubject, "{subject:?}");
        // Wildcards are fine in a stream's subjects; broken tokens are not.
        if !subject.contains(['*', '>']) {
            let err = bounded(subject, natty.create_stream("S", [subject]))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), StreamErrorKind::InvalidSubject, "{subject:?}");
        }
    }
    let err = bounded("a.>.b", natty.create_stream("S", ["a.>.b"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::InvalidSubject);
    let err = bounded("oversized", natty.publish("good.big", vec![0u8; 9000]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PublishErrorKind::PayloadTooLarge);
    let err = bounded(
        "oversized kv",
        natty.put("good_bucket", "k", vec![0u8; 9000].into()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::PayloadTooLarge);

    for name in ["", "a.b", "a b", "a*", "a>", "a/b", "a\\b", "a\nb"] {
        let err = bounded(name, natty.create_stream(name, ["x"]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StreamErrorKind::InvalidName, "stream {name:?}");
        let err = bounded(name, natty.create_consumer("GOOD", name, ["good.x"]))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            StreamErrorKind::InvalidName,
            "consumer {name:?}"
        );
    }
    for bucket in ["", "a.b", "a b", "a/b", "a*", "a>", "ünï"] {
        let err = bounded(bucket, natty.put(bucket, "k", "v".into()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), KvErrorKind::InvalidBucket, "bucket {bucket:?}");
        let err = bounded(bucket, natty.create_bucket(bucket, Duration::ZERO, 1, ""))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), KvErrorKind::InvalidBucket, "bucket {bucket:?}");
    }
    for key in [
        "",
        "..",
        "a..b",
        ".a",
        "a.",
        "a b",
        "a*",
        "a>",
        "ключ",
        long_key.as_str(),
    ] {
        for err in [
            bounded(key, natty.put("good_bucket", key, "v".into()))
                .await
                .unwrap_err(),
            bounded(key, natty.create("good_bucket", key, "v".into()))
                .await
                .unwrap_err(),
            bounded(key, natty.update("good_bucket", key, "v".into(), 1))
                .await
                .unwrap_err(),
            bounded(key, natty.get("good_bucket", key))
                .await
                .unwrap_err(),
            bounded(key, natty.delete("good_bucket", key))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(err.kind(), KvErrorKind::InvalidKey, "key {:.24?}", key);
        }
    }

    natty.client().flush().await.unwrap();
    let seen = timeout(Duration::from_millis(300), everything.next()).await;
    assert!(seen.is_err(), "bad input reached the server: {seen:?}");
}

#[tokio::test]
async fn bad_headers_fail_every_publish_path_and_nothing_reaches_the_stream() {
    let server = Server::start().unwrap();
    let (failures_tx, mut failures) = tokio::sync::mpsc::channel(1);
    let publish = PublishConfig::default()
        .retries(1, Duration::ZERO, Duration::ZERO)
        .failures(failures_tx);
    let natty = Natty::connect(Config::new([server.url()]).publish(publish))
        .await
        .unwrap();
    // A failure report to republish: published before its stream exists.
    natty.publish("hdr.orphan", "x").await.unwrap();
    let mut failure = bounded("failure report", failures.recv())
        .await
        .expect("a failure report");
    natty.create_stream("HDR", ["hdr.>"]).await.unwrap();

    let spy = async_nats::connect(server.url()).await.unwrap();
    let mut everything = spy.subscribe(">").await.unwrap();
    spy.flush().await.unwrap();

    let is_invalid_header = |case: &str, err: PublishError| {
        assert_eq!(err.kind(), PublishErrorKind::InvalidHeader, "{case}");
        assert!(format!("{err:#}").contains("header"), "{case}: {err:#}");
    };
    let bad = [
        ("", "v"),
        ("a:b", "v"),
        ("a b", "v"),
        ("a\tb", "v"),
        ("a\r\nInjected", "v"),
        ("\u{7f}", "v"),
        ("é", "v"),
        ("ok", "a\r\nInjected: 1"),
        ("ok", "a\nb"),
        ("ok", "a\rb"),
    ];
    let publisher = natty.publisher();
    for (name, value) in bad {
        let case = format!("{name:?}: {value:?}");
        let mut headers = HeaderMap::new();
        headers.insert("tenant", "acme");
        headers.insert(name, value);
        let with_headers = publisher.publish_with_headers("hdr.x", headers.clone(), "x");
        is_invalid_header(&case, bounded(&case, with_headers).await.unwrap_err());
        let acked = publisher.publish_acked_with_headers("hdr.x", headers.clone(), "x");
        is_invalid_header(&case, bounded(&case, acked).await.unwrap_err());
        let message = OutgoingMessage::new("hdr.x", "x").with_headers(headers);
        let call = natty.publisher().oneshot(message);
        is_invalid_header(&case, bounded(&case, call).await.unwrap_err());
        let message = OutgoingMessage::new("hdr.x", "x").header(name, value);
        let call = natty.publisher().oneshot(message);
        is_invalid_header(&case, bounded(&case, call).await.unwrap_err());
    }
    failure.headers.insert("a:b", "v");
    let republished = bounded("republish", natty.publisher().republish(failure)).await;
    is_invalid_header("republish", republished.unwrap_err());

    bounded("flush", natty.flush()).await;
    natty.client().flush().await.unwrap();
    let seen = timeout(Duration::from_millis(300), everything.next()).await;
    assert!(seen.is_err(), "a bad header reached the server: {seen:?}");
    let mut stream = async_nats::jetstream::new(spy)
        .get_stream("HDR")
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
}

#[tokio::test]
async fn bad_connection_settings_fail_within_the_connect_timeout() {
    let tls_server = Server::builder()
        .tls(Tls::new(asset("server-cert.pem"), asset("server-key.pem")))
        .start()
        .unwrap();
    let auth_server = Server::builder()
        .auth(Auth::UserPassword {
            user: "svc".into(),
            password: "right".into(),
        })
        .start()
        .unwrap();
    let dead = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("nats://127.0.0.1:{port}")
    };
    let unreadable = std::env::temp_dir().join("natty-bad-input-unreadable.pem");
    let _ = std::fs::remove_file(&unreadable);
    let quick = |config: Config| config.connect_timeout(Duration::from_secs(2));

    let cases: Vec<(&str, Config, &[ConnectErrorKind])> = vec![
        (
            "empty url list",
            Config::new(Vec::<String>::new()),
            &[ConnectErrorKind::InvalidConfig],
        ),
        (
            "malformed url",
            Config::new(["nats://exa mple:4222"]),
            &[ConnectErrorKind::InvalidConfig],
        ),
        (
            "unreachable server",
            quick(Config::new([dead.clone()])),
            &[ConnectErrorKind::Unreachable],
        ),
        (
            "unreadable ca file",
            quick(Config::new([tls_server.url()]).ca_file(&unreadable)),
            &[ConnectErrorKind::Tls],
        ),
        (
            "ca that did not sign the server",
            quick(Config::new([tls_server.url()]).ca_file(asset("client-cert.pem"))),
            &[ConnectErrorKind::Tls],
        ),
        (
            "client cert with the wrong key",
            quick(
                Config::new([tls_server.url()])
                    .ca_file(asset("ca.pem"))
                    .client_cert(asset("client-cert.pem"), asset("server-key.pem")),
            ),
            &[ConnectErrorKind::Tls],
        ),
        (
            "wrong password",
            quick(
                Config::new([auth_server.url()])
                    .credentials(Credentials::user_password("svc", "wrong")),
            ),
            &[ConnectErrorKind::Authentication],
        ),
        (
            "missing creds file",
            quick(
                Config::new([auth_server.url()]).credentials(Credentials::creds_file(&unreadable)),
            ),
            &[ConnectErrorKind::Authentication],
        ),
    ];
    for (what, config, kinds) in cases {
        let err = bounded(what, Natty::connect(config)).await.expect_err(what);
        assert!(
            kinds.contains(&err.kind()),
            "{what}: got {:?}: {err}",
            err.kind()
        );
        let text = err.to_string();
        assert!(!text.is_empty() && !text.ends_with('.'), "{what}: {text}");
    }
}
