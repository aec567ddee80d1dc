//! natty's own error type: kinds to match on, causes kept, each printed once.

use std::error::Error as _;

use natty::compat::GoNatty as _;
use natty::error::{KvErrorKind, StreamErrorKind};
use natty_testkit::Server;

mod common;
use common::connect;

/// Every message in `err`'s chain, as a reporter walking `source()` prints them.
fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut lines = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        lines.push(err.to_string());
        next = err.source();
    }
    lines
}

#[test]
fn display_is_the_kind_alone_so_walking_source_prints_each_cause_once() {
    let io = std::io::Error::other("disk on fire");
    let err = natty::Error::with_source(KvErrorKind::JetStream, io);
    assert_eq!(err.to_string(), "jetstream error");
    let lines = chain(&err);
    assert_eq!(lines, ["jetstream error", "disk on fire"]);
    for (n, line) in lines.iter().enumerate() {
        for later in &lines[n + 1..] {
            assert!(!line.contains(later.as_str()), "{line:?} repeats {later:?}");
        }
    }
    assert!(err == KvErrorKind::JetStream);
    assert_eq!(
        format!("{err:#}"),
        "jetstream error: disk on fire",
        "alternate: the chain"
    );
}

#[tokio::test]
async fn server_errors_get_their_kind_from_the_error_code_and_no_cause_repeats() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    let missing = natty.delete_stream("NOPE").await.unwrap_err();
    assert_eq!(missing.kind(), StreamErrorKind::NotFound);
    let validation = natty.bucket("bad bucket").unwrap_err();
    for err in [&missing as &(dyn std::error::Error + 'static), &validation] {
        let lines = chain(err);
        assert!(lines.len() >= 2, "the cause is kept: {lines:?}");
        assert!(!lines[0].contains(&lines[1]), "{lines:?}");
    }
    assert!(missing.source().is_some());
}
