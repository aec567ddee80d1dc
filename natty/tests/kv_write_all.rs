//! Several keys written at once, all or none, with revision checks (`Bucket::write_all`),
//! read back by a plain async-nats client. On a server without atomic batches the write is
//! refused as `Unsupported` before anything is sent.

use natty::error::KvErrorKind;
use natty::{KvWrite, Natty};
use natty_testkit::Server;

mod common;
use common::connect;

/// A plain client's view of `key` in bucket `stock`: its value, `None` when missing or deleted.
async fn read(server: &Server, key: &str) -> Option<String> {
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = async_nats::jetstream::new(client)
        .get_key_value("stock")
        .await
        .unwrap();
    store
        .get(key)
        .await
        .unwrap()
        .map(|value| String::from_utf8(value.to_vec()).unwrap())
}

/// Bucket `stock` with `tea` = 10; its revision.
async fn stocked(natty: &Natty) -> u64 {
    natty
        .bucket("stock")
        .unwrap()
        .put("tea", "10")
        .await
        .unwrap()
}

#[tokio::test]
async fn every_key_is_written_or_none_each_checked_against_its_revision() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let tea = stocked(&natty).await;
    let stock = natty.bucket("stock").unwrap();
    if !natty.server_info().supports_atomic_batch() {
        let err = stock
            .write_all([KvWrite::put("tea", "9"), KvWrite::put("o-1", "tea")])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), KvErrorKind::Unsupported, "{err}");
        assert_eq!(read(&server, "tea").await.as_deref(), Some("10"));
        assert_eq!(read(&server, "o-1").await, None);
        println!("nats-server {}: Unsupported", natty.server_info().version());
        return;
    }

    let revisions = stock
        .write_all([
            KvWrite::put("tea", "9").if_revision(tea),
            KvWrite::put("o-1", "tea").if_missing(),
        ])
        .await
        .unwrap();
    assert_eq!(revisions, [tea + 1, tea + 2]);
    assert_eq!(read(&server, "tea").await.as_deref(), Some("9"));
    assert_eq!(read(&server, "o-1").await.as_deref(), Some("tea"));

    // `tea` moved on since `tea`'s first revision: neither key is written.
    let stale = stock
        .write_all([
            KvWrite::put("o-2", "tea").if_missing(),
            KvWrite::put("tea", "8").if_revision(tea),
        ])
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), KvErrorKind::Conflict, "{stale:?}");
    assert_eq!(read(&server, "tea").await.as_deref(), Some("9"));
    assert_eq!(read(&server, "o-2").await, None);
    // A key that exists is not missing.
    let taken = stock
        .write_all([KvWrite::put("o-1", "jam").if_missing()])
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), KvErrorKind::Conflict);

    // Deletes go in the same batch as puts.
    stock
        .write_all([
            KvWrite::delete("o-1"),
            KvWrite::put("tea", "10").if_revision(tea + 1),
        ])
        .await
        .unwrap();
    assert_eq!(read(&server, "o-1").await, None);
    assert_eq!(read(&server, "tea").await.as_deref(), Some("10"));
}

#[tokio::test]
async fn a_key_given_twice_or_invalid_is_refused_before_sending() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    stocked(&natty).await;
    let stock = natty.bucket("stock").unwrap();
    let twice = stock
        .write_all([KvWrite::put("tea", "1"), KvWrite::put("tea", "2")])
        .await
        .unwrap_err();
    assert_eq!(twice.kind(), KvErrorKind::InvalidKey);
    let invalid = stock
        .write_all([KvWrite::put("tea", "1"), KvWrite::put("no spaces", "2")])
        .await
        .unwrap_err();
    assert_eq!(invalid.kind(), KvErrorKind::InvalidKey);
    assert_eq!(stock.write_all([]).await.unwrap(), Vec::<u64>::new());
    assert_eq!(read(&server, "tea").await.as_deref(), Some("10"));
}
