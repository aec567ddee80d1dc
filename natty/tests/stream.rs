//! Stream and consumer management against a real server.

use std::time::{Duration, SystemTime};

use natty::compat::GoNatty as _;
use natty::error::StreamErrorKind;
use natty::{ConsumerOptions, DeliverPolicy};
use natty_testkit::Server;

mod common;
use common::connect;
use common::consume::consumer_info;

#[tokio::test]
async fn create_stream_is_idempotent_and_refuses_other_subjects() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("S1", ["s1.a", "s1.b"]).await.unwrap();
    natty
        .create_stream("S1", ["s1.b", "s1.a"])
        .await
        .expect("same subjects: ok");
    let err = natty.create_stream("S1", ["s1.c"]).await.unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::Mismatch, "{err}");

    let mut stream = natty.jetstream().get_stream("S1").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(config.max_age, natty::stream::DEFAULT_MAX_AGE);
    assert_eq!(
        config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(
        config.retention,
        async_nats::jetstream::stream::RetentionPolicy::Limits
    );
}

#[tokio::test]
async fn full_config_variant_and_delete() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty
        .stream("S2")
        .unwrap()
        .create_with_config(async_nats::jetstream::stream::Config {
            name: "S2".into(),
            subjects: vec!["s2".into()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            duplicate_window: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    natty.delete_stream("S2").await.unwrap();
    let err = natty.delete_stream("S2").await.unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn consumers_are_durable_explicit_ack_with_options() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("S3", ["s3.>"]).await.unwrap();
    natty
        .stream("S3")
        .unwrap()
        .create_consumer(
            "billing",
            ["s3.a", "s3.b"],
            ConsumerOptions::default()
                .ack_wait(Duration::from_secs(7))
                .max_deliver(4)
                .max_ack_pending(10),
        )
        .await
        .unwrap();
    let config = consumer_info(&natty, "S3", "billing").await.config;
    assert_eq!(config.durable_name.as_deref(), Some("billing"));
    assert_eq!(
        config.ack_policy,
        async_nats::jetstream::consumer::AckPolicy::Explicit
    );
    assert_eq!(config.ack_wait, Duration::from_secs(7));
    assert_eq!(config.max_deliver, 4);
    assert_eq!(config.filter_subjects, ["s3.a", "s3.b"]);

    natty
        .create_consumer("S3", "billing", ["s3.a", "s3.b"])
        .await
        .expect("idempotent");
    natty.delete_consumer("S3", "billing").await.unwrap();
    let err = natty.delete_consumer("S3", "billing").await.unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::NotFound, "{err}");
    let err = natty
        .create_consumer("NOPE", "d", Vec::<String>::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn a_new_consumer_starts_where_its_deliver_policy_says() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.create_stream("S5", ["s5.>"]).await.unwrap();
    for subject in ["s5.a", "s5.b", "s5.a"] {
        natty.publisher().publish_acked(subject, "x").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_them = SystemTime::now();
    let cases = [
        ("all", DeliverPolicy::All, 3),
        ("last", DeliverPolicy::Last, 1),
        ("new", DeliverPolicy::New, 0),
        ("from2", DeliverPolicy::ByStartSequence(2), 2),
        (
            "since1970",
            DeliverPolicy::ByStartTime(SystemTime::UNIX_EPOCH),
            3,
        ),
        ("since", DeliverPolicy::ByStartTime(after_them), 0),
        (
            "hour",
            DeliverPolicy::ByStartTime(after_them + Duration::from_secs(3600)),
            0,
        ),
        (
            "far",
            DeliverPolicy::ByStartTime(after_them + Duration::from_secs(1 << 40)),
            0,
        ),
        ("persubject", DeliverPolicy::LastPerSubject, 2),
    ];
    for (durable, policy, pending) in cases {
        let options = ConsumerOptions::default().deliver_policy(policy);
        natty
            .stream("S5")
            .unwrap()
            .create_consumer(durable, ["s5.>"], options)
            .await
            .unwrap();
        let info = consumer_info(&natty, "S5", durable).await;
        assert_eq!(info.num_pending, pending, "{durable}: {policy:?}");
    }
}

#[tokio::test]
async fn bad_names_and_subjects_are_refused_before_sending() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    for name in ["", "a.b", "a b", "a*", "a>", "a/b"] {
        let err = natty.create_stream(name, ["x"]).await.unwrap_err();
        assert_eq!(err.kind(), StreamErrorKind::InvalidName, "{name:?}");
        let err = natty.delete_stream(name).await.unwrap_err();
        assert_eq!(err.kind(), StreamErrorKind::InvalidName, "{name:?}");
        let err = natty.create_consumer("S", name, ["x"]).await.unwrap_err();
        assert_eq!(err.kind(), StreamErrorKind::InvalidName, "{name:?}");
        let err = natty.delete_consumer("S", name).await.unwrap_err();
        assert_eq!(err.kind(), StreamErrorKind::InvalidName, "{name:?}");
    }
    for subject in ["", "a..b", "a b", "a.>.b", "a\nb"] {
        let err = natty.create_stream("S4", [subject]).await.unwrap_err();
        assert_eq!(err.kind(), StreamErrorKind::InvalidSubject, "{subject:?}");
    }
    let err = natty
        .create_stream("S4", Vec::<String>::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::InvalidConfig);
}

#[tokio::test]
async fn a_stream_handle_checks_its_name_once_and_a_plain_client_sees_what_it_did() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let plain = async_nats::connect(server.url()).await.unwrap();
    let plain = async_nats::jetstream::new(plain);

    // A bad name is refused by the factory, before any call can send anything.
    let err = natty.stream("no spaces").unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::InvalidName, "{err}");

    let orders = natty.stream("HANDLE").unwrap();
    assert_eq!(orders.name(), "HANDLE");
    orders.create(["handle.>"]).await.unwrap();
    let info = plain
        .get_stream("HANDLE")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.subjects, vec!["handle.>".to_owned()]);

    // The configuration form takes the handle's name: an empty one is filled in, another
    // one is refused before sending.
    let other = async_nats::jetstream::stream::Config {
        name: "ELSEWHERE".into(),
        subjects: vec!["elsewhere".into()],
        ..Default::default()
    };
    let err = orders.create_with_config(other).await.unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::InvalidConfig, "{err}");
    assert!(
        plain.get_stream("ELSEWHERE").await.is_err(),
        "nothing was created"
    );
    let unnamed = natty.stream("UNNAMED").unwrap();
    unnamed
        .create_with_config(async_nats::jetstream::stream::Config {
            subjects: vec!["unnamed".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    plain
        .get_stream("UNNAMED")
        .await
        .expect("created under the handle's name");

    orders
        .create_consumer(
            "reader",
            ["handle.a"],
            ConsumerOptions::default().max_deliver(2),
        )
        .await
        .unwrap();
    let config = consumer_info(&natty, "HANDLE", "reader").await.config;
    assert_eq!(config.max_deliver, 2);
    assert_eq!(config.filter_subject, "handle.a");
    orders.delete_consumer("reader").await.unwrap();
    let stream = plain.get_stream("HANDLE").await.unwrap();
    assert!(
        stream.consumer_info("reader").await.is_err(),
        "consumer deleted"
    );

    // Clones act on the same stream; deleting it is seen by the plain client.
    orders.clone().delete().await.unwrap();
    assert!(plain.get_stream("HANDLE").await.is_err(), "stream deleted");
    let err = orders.delete().await.unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn last_message_reads_back_what_a_plain_client_stored_on_the_subject() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let orders = natty.stream("LAST").unwrap();
    orders.create(["last.>"]).await.unwrap();
    assert!(
        orders.last_message("last.a").await.unwrap().is_none(),
        "nothing stored yet"
    );

    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    for (subject, payload) in [
        ("last.a", "first"),
        ("last.b", "other"),
        ("last.a", "second"),
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Order-Id", payload);
        js.publish_with_headers(subject, headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let last = orders
        .last_message("last.a")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!((last.subject.as_str(), last.sequence), ("last.a", 3));
    assert_eq!(last.payload, "second");
    assert_eq!(last.headers.get("Order-Id"), Some("second"));
    let any = orders
        .last_message("last.>")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(any.sequence, 3, "a filter reads the last of all it matches");
    assert!(orders.last_message("last.c").await.unwrap().is_none());

    let err = orders.last_message("last..a").await.unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::InvalidSubject, "{err}");
    let err = natty
        .stream("MISSING")
        .unwrap()
        .last_message("last.a")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StreamErrorKind::NotFound, "{err}");
}
