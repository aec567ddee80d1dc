//! Key/value helpers against a real server.

use std::time::Duration;

use futures_util::StreamExt;
use natty::compat::GoNatty as _;
use natty::error::KvErrorKind;
use natty::KvOperation;
use natty_testkit::Server;
use tokio::time::timeout;

mod common;
use common::{chain, connect};

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn get_put_create_update_refresh_delete_and_keys() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;

    assert_eq!(natty.get("missing_bucket", "k").await.unwrap(), None);
    assert!(natty.keys("missing_bucket").await.unwrap().is_empty());
    natty
        .delete("missing_bucket", "k")
        .await
        .expect("no-op on a missing bucket");

    let r1 = natty
        .put("kv1", "a.b", "one".into())
        .await
        .expect("put creates the bucket");
    assert_eq!(
        natty.get("kv1", "a.b").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(natty.get("kv1", "nope").await.unwrap(), None);

    let err = natty.create("kv1", "a.b", "two".into()).await.unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::AlreadyExists);
    natty
        .create("kv2", "fresh", "x".into())
        .await
        .expect("create makes the bucket too");

    let r2 = natty.update("kv1", "a.b", "two".into(), r1).await.unwrap();
    assert!(r2 > r1);
    let err = natty
        .update("kv1", "a.b", "stale".into(), r1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::Conflict);

    let r3 = natty.refresh("kv1", "a.b").await.unwrap();
    assert!(r3 > r2);
    assert_eq!(
        natty.get("kv1", "a.b").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    let err = natty.refresh("kv1", "nope").await.unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::KeyNotFound);

    natty.put("kv1", "c", "3".into()).await.unwrap();
    let mut keys = natty.keys("kv1").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["a.b", "c"]);

    natty.delete("kv1", "a.b").await.unwrap();
    natty
        .delete("kv1", "a.b")
        .await
        .expect("deleting twice is a no-op");
    assert_eq!(natty.get("kv1", "a.b").await.unwrap(), None);
    assert_eq!(natty.keys("kv1").await.unwrap(), ["c"]);
    natty
        .create("kv1", "a.b", "again".into())
        .await
        .expect("a deleted key can be created");
}

#[tokio::test]
async fn refresh_loses_to_a_concurrent_writer() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let other = connect(&server).await;
    let rev = natty.put("kv3", "lease", "me".into()).await.unwrap();
    other
        .update("kv3", "lease", "them".into(), rev)
        .await
        .unwrap();
    let err = natty
        .update("kv3", "lease", "me".into(), rev)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::Conflict);
}

#[tokio::test]
async fn buckets_are_created_described_and_deleted() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty
        .create_bucket("kv4", Duration::from_secs(60), 1, "leases")
        .await
        .unwrap();
    let err = natty
        .create_bucket("kv4", Duration::from_secs(60), 1, "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::AlreadyExists);
    natty.put("kv4", "x", "1".into()).await.unwrap();
    let status = natty.status("kv4").await.unwrap();
    assert_eq!(status.ttl, Duration::from_secs(60));
    assert_eq!(status.replicas, 1);
    assert_eq!(status.description, "leases");
    assert_eq!(status.values, 1);

    natty.delete_bucket("kv4").await.unwrap();
    natty
        .delete_bucket("kv4")
        .await
        .expect("deleting a missing bucket is a no-op");
    let err = natty.status("kv4").await.unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::BucketNotFound);
}

#[tokio::test]
async fn watches_see_puts_and_deletes() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty.put("kv5", "k", "v0".into()).await.unwrap();
    let mut key = natty.watch_key("kv5", "k").await.unwrap();
    let mut all = natty.watch_bucket("kv5").await.unwrap();

    let first = timeout(DEADLINE, key.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.key.as_str(), first.value.as_ref()),
        ("k", &b"v0"[..])
    );

    natty.put("kv5", "k", "v1".into()).await.unwrap();
    natty.put("kv5", "other", "o".into()).await.unwrap();
    natty.delete("kv5", "k").await.unwrap();

    let put = timeout(DEADLINE, key.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (put.operation, put.value.as_ref()),
        (KvOperation::Put, &b"v1"[..])
    );
    let deleted = timeout(DEADLINE, key.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(deleted.operation, KvOperation::Delete);

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let entry = timeout(DEADLINE, all.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push((entry.key, entry.operation));
    }
    assert_eq!(
        seen,
        [
            ("k".to_string(), KvOperation::Put),
            ("other".to_string(), KvOperation::Put),
            ("k".to_string(), KvOperation::Delete)
        ]
    );
    let err = natty
        .watch_key("kv_missing", "k")
        .await
        .err()
        .expect("missing bucket");
    assert_eq!(err.kind(), KvErrorKind::BucketNotFound);
}

#[tokio::test]
async fn per_key_ttl_expires_on_new_servers_and_is_unsupported_on_old_ones() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    if !natty.server_info().supports_message_ttl() {
        let err = natty
            .bucket("kv6")
            .unwrap()
            .create_with_ttl("k", "v", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), KvErrorKind::Unsupported);
        assert!(chain(&err).contains("2.11"), "{err}");
        return;
    }
    natty
        .create_bucket("kv6", Duration::ZERO, 1, "")
        .await
        .unwrap();
    let mut watch = natty.watch_key("kv6", "k").await.unwrap();
    natty
        .bucket("kv6")
        .unwrap()
        .create_with_ttl("k", "v", Duration::from_secs(1))
        .await
        .unwrap();
    natty.put("kv6", "stays", "v".into()).await.unwrap();
    let created = timeout(DEADLINE, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(created.operation, KvOperation::Put);
    let expired = timeout(DEADLINE, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(
        expired.operation,
        KvOperation::Put,
        "the key expired on its own"
    );
    assert_eq!(natty.get("kv6", "k").await.unwrap(), None);
    assert!(natty.get("kv6", "stays").await.unwrap().is_some());
}

#[tokio::test]
async fn bad_buckets_keys_and_values_are_refused_before_sending() {
    let server = Server::builder()
        .config_snippet("max_payload: 4096")
        .start()
        .unwrap();
    let natty = connect(&server).await;
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut everything = watcher.subscribe(">").await.unwrap();
    watcher.flush().await.unwrap();

    for bucket in ["", "a.b", "a b", "a/b", "a*"] {
        let err = natty.put(bucket, "k", "v".into()).await.unwrap_err();
        assert_eq!(err.kind(), KvErrorKind::InvalidBucket, "{bucket:?}");
        let err = natty.get(bucket, "k").await.unwrap_err();
        assert_eq!(err.kind(), KvErrorKind::InvalidBucket, "{bucket:?}");
    }
    let long = "k".repeat(10_000) + " ";
    for key in [
        "",
        "..",
        ".a",
        "a.",
        "a..b",
        "a b",
        "a*",
        "a>",
        long.as_str(),
    ] {
        for err in [
            natty.put("ok", key, "v".into()).await.unwrap_err(),
            natty.create("ok", key, "v".into()).await.unwrap_err(),
            natty.get("ok", key).await.unwrap_err(),
            natty.delete("ok", key).await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), KvErrorKind::InvalidKey, "{key:.20?}: {err}");
        }
    }
    let err = natty
        .put("ok", "k", vec![0u8; 5000].into())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::PayloadTooLarge);

    natty.client().flush().await.unwrap();
    let seen = timeout(Duration::from_millis(300), everything.next()).await;
    assert!(seen.is_err(), "something reached the server: {seen:?}");
}

#[tokio::test]
async fn a_bucket_handle_checks_its_name_once_and_a_plain_client_reads_what_it_wrote() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let refused = natty.bucket("no spaces").unwrap_err();
    assert_eq!(refused.kind(), KvErrorKind::InvalidBucket);

    let orders = natty.bucket("orders").unwrap();
    assert_eq!(
        orders.get("o-1").await.unwrap(),
        None,
        "missing bucket reads as None"
    );
    let status = orders.status().await.unwrap_err();
    assert_eq!(status.kind(), KvErrorKind::BucketNotFound);

    let first = orders.put("o-1", "new").await.unwrap(); // creates the bucket
    let clone = orders.clone();
    let mut watch = clone.watch_key("o-1").await.unwrap();
    let current = timeout(DEADLINE, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        current.value, "new",
        "a key watch starts with the current value"
    );
    let second = clone.update("o-1", "paid", first).await.unwrap();
    let conflict = orders.update("o-1", "stale", first).await.unwrap_err();
    assert_eq!(conflict.kind(), KvErrorKind::Conflict);
    let created = orders.create("o-2", "new").await.unwrap();
    assert!(created > second);
    let refreshed = orders.refresh("o-2").await.unwrap();
    orders.delete("o-2").await.unwrap();
    assert!(refreshed > created);
    assert_eq!(orders.keys().await.unwrap(), ["o-1"]);
    assert_eq!(orders.status().await.unwrap().bucket, "orders");

    let update = timeout(DEADLINE, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((update.value, update.revision), ("paid".into(), second));

    // A plain async-nats client reads back what the handle wrote.
    let plain = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let store = plain.get_key_value("orders").await.unwrap();
    assert_eq!(
        store.get("o-1").await.unwrap().as_deref(),
        Some(&b"paid"[..])
    );
    assert_eq!(store.get("o-2").await.unwrap(), None);
    // The Go-shaped shim reads the same bucket.
    assert_eq!(
        natty.get("orders", "o-1").await.unwrap().as_deref(),
        Some(&b"paid"[..])
    );
}

#[tokio::test]
async fn a_bucket_handle_creates_and_deletes_its_bucket_as_a_plain_client_sees_it() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let plain = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());

    let settings = natty.bucket("settings").unwrap();
    settings
        .create_bucket(Duration::from_secs(60), 1, "app settings")
        .await
        .unwrap();
    let store = plain.get_key_value("settings").await.unwrap();
    let status = store.status().await.unwrap();
    assert_eq!(status.info.config.max_age, Duration::from_secs(60));
    assert_eq!(
        status.info.config.description.as_deref(),
        Some("app settings")
    );
    let err = settings
        .create_bucket(Duration::ZERO, 1, "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::AlreadyExists, "{err}");

    settings.put("mode", "blue").await.unwrap();
    assert_eq!(
        store.get("mode").await.unwrap().as_deref(),
        Some(&b"blue"[..])
    );

    settings.delete_bucket().await.unwrap();
    assert!(
        plain.get_key_value("settings").await.is_err(),
        "bucket deleted"
    );
    settings
        .delete_bucket()
        .await
        .expect("a missing bucket is not an error");
}
