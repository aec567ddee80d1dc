//! Reliability scenario 8: property tests of name, subject and key validation against a real
//! server. Whatever natty accepts, the server accepts; whatever natty refuses breaks a rule of
//! NATS (stated here independently of natty's code).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use natty::compat::GoNatty as _;
use natty::error::{KvErrorKind, PublishErrorKind, StreamErrorKind};
use natty::{Config, Natty};
use natty_testkit::Server;
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};
use tokio::runtime::Runtime;

mod common;
use common::connect_with;

fn text(alphabet: &'static [char], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet), 0..max)
        .prop_map(|c| c.into_iter().collect())
}

/// NATS subject rules: non-empty tokens, no whitespace or control characters, and no wildcards
/// when publishing.
fn subject_breaks_rules(subject: &str) -> bool {
    subject.is_empty()
        || subject.len() > 3 * 1024
        || subject
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>']))
        || subject.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// ADR-6 names: no whitespace, no `.`, `*`, `>`, path separators.
fn name_breaks_rules(name: &str) -> bool {
    name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
}

/// KV conventions: `[A-Za-z0-9_-]+` buckets; `[-/_=.A-Za-z0-9]+` keys without leading or
/// trailing dots or empty tokens.
fn bucket_breaks_rules(bucket: &str) -> bool {
    bucket.is_empty()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
}

fn key_breaks_rules(key: &str) -> bool {
    key.is_empty()
        || key.len() > 2048
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c))
        || key.starts_with('.')
        || key.ends_with('.')
        || key.contains("..")
}

struct Fixture {
    runtime: Runtime,
    natty: Natty,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    _server: Server,
}

impl Fixture {
    fn tally(&self, accepted: bool) {
        let counter = if accepted {
            &self.accepted
        } else {
            &self.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The drawn inputs exercised both sides of the rule.
    fn assert_both_sides(&self) {
        let (accepted, refused) = (
            self.accepted.swap(0, Ordering::Relaxed),
            self.refused.swap(0, Ordering::Relaxed),
        );
        assert!(
            accepted > 0 && refused > 0,
            "accepted {accepted}, refused {refused}"
        );
    }
}

fn fixture() -> Fixture {
    let runtime = Runtime::new().unwrap();
    let server = Server::start().unwrap();
    let natty = runtime.block_on(connect_with(
        Config::new([server.url()]).request_timeout(Duration::from_secs(3)),
    ));
    Fixture {
        runtime,
        natty,
        accepted: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        _server: server,
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Cases {
        cases,
        failure_persistence: None,
        ..Cases::default()
    })
}

const SUBJECT_CHARS: &[char] = &[
    'a', 'B', '7', '-', '_', '.', '.', '$', ' ', '\t', '\r', '\n', '*', '>', 'ü',
];
// Alphabets mix allowed and forbidden characters, weighted so that every run draws inputs on
// both sides of each rule (the tests assert that they did).
const NAME_CHARS: &[char] = &[
    'a', 'B', '7', '-', '_', 'x', 'Z', 'é', '.', ' ', '*', '>', '/', '\\', '\n',
];
const BUCKET_CHARS: &[char] = &['a', 'B', '7', '-', '_', 'x', 'Y', '0', '.', ' ', '*', '/'];
const KEY_CHARS: &[char] = &[
    'a', 'B', '7', '-', '/', '_', '=', '.', '.', ' ', '*', '>', '$', 'é',
];

#[test]
fn publish_subjects_accepted_by_natty_are_stored_by_the_server() {
    let f = fixture();
    f.runtime
        .block_on(f.natty.create_stream("PROPS", ["p.>"]))
        .unwrap();
    runner(96)
        .run(&text(SUBJECT_CHARS, 12), |tail| {
            let subject = format!("p.{tail}");
            let result = f
                .runtime
                .block_on(f.natty.publisher().publish_acked(&subject, "x"));
            f.tally(result.is_ok());
            match result {
                Ok(ack) => {
                    prop_assert_eq!(ack.stream.as_str(), "PROPS");
                    prop_assert!(!subject_breaks_rules(&subject), "accepted {:?}", subject);
                }
                Err(err) => {
                    prop_assert_eq!(
                        err.kind(),
                        PublishErrorKind::InvalidSubject,
                        "{:?}: {}",
                        subject,
                        err
                    );
                    prop_assert!(
                        subject_breaks_rules(&subject),
                        "refused a valid subject {:?}",
                        subject
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    f.assert_both_sides();
}

#[test]
fn stream_names_accepted_by_natty_are_created_by_the_server() {
    let f = fixture();
    let n = AtomicUsize::new(0);
    runner(96)
        .run(&text(NAME_CHARS, 10), |name| {
            let subject = format!("names.{}", n.fetch_add(1, Ordering::Relaxed));
            let result = f.runtime.block_on(f.natty.create_stream(&name, [subject]));
            f.tally(result.is_ok());
            match result {
                Ok(()) => prop_assert!(!name_breaks_rules(&name), "accepted {:?}", name),
                Err(err) if err.kind() == StreamErrorKind::Mismatch => {} // drawn twice
                Err(err) => {
                    prop_assert_eq!(
                        err.kind(),
                        StreamErrorKind::InvalidName,
                        "{:?}: {}",
                        name,
                        err
                    );
                    prop_assert!(name_breaks_rules(&name), "refused a valid name {:?}", name);
                }
            }
            Ok(())
        })
        .unwrap();
    f.assert_both_sides();
}

#[test]
fn buckets_and_keys_accepted_by_natty_are_stored_by_the_server() {
    let f = fixture();
    runner(48)
        .run(&text(BUCKET_CHARS, 10), |bucket| {
            let result = f.runtime.block_on(f.natty.put(&bucket, "k", "v".into()));
            f.tally(result.is_ok());
            match result {
                Ok(_) => prop_assert!(!bucket_breaks_rules(&bucket), "accepted {:?}", bucket),
                Err(err) => {
                    prop_assert_eq!(
                        err.kind(),
                        KvErrorKind::InvalidBucket,
                        "{:?}: {}",
                        bucket,
                        err
                    );
                    prop_assert!(
                        bucket_breaks_rules(&bucket),
                        "refused a valid bucket {:?}",
                        bucket
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    f.assert_both_sides();
    runner(128)
        .run(&text(KEY_CHARS, 12), |key| {
            let result = f
                .runtime
                .block_on(f.natty.put("props", &key, key.clone().into()));
            f.tally(result.is_ok());
            match result {
                Ok(_) => {
                    prop_assert!(!key_breaks_rules(&key), "accepted {:?}", key);
                    let stored = f.runtime.block_on(f.natty.get("props", &key)).unwrap();
                    prop_assert_eq!(stored.as_deref(), Some(key.as_bytes()));
                }
                Err(err) => {
                    prop_assert_eq!(err.kind(), KvErrorKind::InvalidKey, "{:?}: {}", key, err);
                    prop_assert!(key_breaks_rules(&key), "refused a valid key {:?}", key);
                }
            }
            Ok(())
        })
        .unwrap();
    f.assert_both_sides();
}
