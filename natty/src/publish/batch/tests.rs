use super::*;

fn batch(subjects: &[&str]) -> Batch {
    subjects
        .iter()
        .map(|subject| OutgoingMessage::new(*subject, "x"))
        .collect()
}

fn refused(stream: &str, code: u64) -> Option<Reply> {
    Some(Reply::Refused {
        stream: Some(stream.into()),
        code,
        description: "refused".into(),
    })
}

fn kind(result: Result<BatchAck, BatchError>) -> BatchErrorKind {
    result.expect_err("refused").kind()
}

#[test]
fn every_message_gets_its_own_message_id_and_keeps_one_it_has() {
    let mut batch = batch(&["a", "b"]);
    batch.push(OutgoingMessage::new("c", "x").header(MSG_ID, "mine"));
    let ids: HashSet<_> = batch
        .messages()
        .iter()
        .map(|m| m.headers().get(MSG_ID).unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains("mine"));
}

#[test]
fn what_the_server_would_refuse_only_at_the_commit_is_refused_before_sending() {
    assert_eq!(
        check(&Batch::new(), 0).unwrap_err().kind(),
        BatchErrorKind::Empty
    );
    assert_eq!(
        check(&batch(&["ok", "bad.*"]), 0).unwrap_err().kind(),
        BatchErrorKind::InvalidSubject
    );
    let cases = [
        OutgoingMessage::new("b", "x").header("nats-batch-id", "mine"),
        OutgoingMessage::new("b", "x").header(EXPECTED_LAST_MSG_ID, "m"),
        OutgoingMessage::new("b", "x").header(EXPECTED_LAST_SEQUENCE, "4"),
        OutgoingMessage::new("a", "x").header(EXPECTED_LAST_SUBJECT_SEQUENCE, "4"),
    ];
    for second in cases {
        let batch = Batch::new()
            .with(OutgoingMessage::new("a", "x").header(EXPECTED_LAST_SEQUENCE, "3"))
            .with(second.clone());
        let err = check(&batch, 0).unwrap_err();
        assert_eq!(err.kind(), BatchErrorKind::InvalidHeader, "{second:?}");
    }
    let twice = Batch::new()
        .with(OutgoingMessage::new("a", "x").header(MSG_ID, "same"))
        .with(OutgoingMessage::new("b", "x").header(MSG_ID, "same"));
    assert_eq!(
        check(&twice, 0).unwrap_err().kind(),
        BatchErrorKind::InvalidHeader
    );
    let large = Batch::new().with(OutgoingMessage::new("a", vec![0; 11]));
    assert_eq!(
        check(&large, 10).unwrap_err().kind(),
        BatchErrorKind::PayloadTooLarge
    );
    // Expected sequences where the server takes them are fine.
    let fine = Batch::new()
        .with(OutgoingMessage::new("a", "x").header(EXPECTED_LAST_SEQUENCE, "3"))
        .with(OutgoingMessage::new("b", "x").header(EXPECTED_LAST_SUBJECT_SEQUENCE, "0"));
    assert!(check(&fine, 0).is_ok());
}

#[test]
fn a_stored_commit_is_the_ack_with_every_sequence() {
    let commit = Reply::Stored {
        stream: "S".into(),
        last: 12,
        batch: Some("b1".into()),
        count: Some(3),
    };
    let ack = decide(
        Some(&Reply::Staged),
        &commit,
        &batch(&["a", "b", "c"]),
        "b1",
    )
    .unwrap();
    assert_eq!(ack.sequences(), 10..=12);
    assert_eq!((ack.stream.as_str(), ack.count()), ("S", 3));
}

#[test]
fn a_commit_stored_without_batch_fields_is_refused_as_not_atomic() {
    let commit = Reply::Stored {
        stream: "S".into(),
        last: 1,
        batch: None,
        count: None,
    };
    assert_eq!(
        kind(decide(None, &commit, &batch(&["a"]), "b1")),
        BatchErrorKind::Rejected
    );
}

#[test]
fn the_first_message_s_refusal_says_why_before_the_commit_s() {
    let subjects = batch(&["a", "b", "c"]);
    let disabled = refused("S", 10174).unwrap();
    let incomplete = refused("S", 10176).unwrap();
    assert_eq!(
        kind(decide(Some(&disabled), &incomplete, &subjects, "b1")),
        BatchErrorKind::AtomicDisabled
    );
    // The first message refused by another stream than the commit's.
    let elsewhere = refused("OTHER", 10174).unwrap();
    assert_eq!(
        kind(decide(Some(&elsewhere), &incomplete, &subjects, "b1")),
        BatchErrorKind::MixedStreams
    );
    assert_eq!(
        kind(decide(Some(&Reply::NoStream), &incomplete, &subjects, "b1")),
        BatchErrorKind::NoStream
    );
    assert_eq!(
        kind(decide(
            Some(&Reply::Staged),
            &Reply::NoStream,
            &subjects,
            "b1"
        )),
        BatchErrorKind::NoStream
    );
    for (code, expected) in [
        (10176, BatchErrorKind::Incomplete),
        (10199, BatchErrorKind::TooManyMessages),
        (10201, BatchErrorKind::Duplicate),
        (10071, BatchErrorKind::WrongLastSequence),
        (10210, BatchErrorKind::TooManyInFlight),
        (10054, BatchErrorKind::Rejected),
    ] {
        let commit = refused("S", code).unwrap();
        assert_eq!(
            kind(decide(Some(&Reply::Staged), &commit, &subjects, "b1")),
            expected,
            "{code}"
        );
        // The first's answer lost: the commit's alone decides.
        assert_eq!(
            kind(decide(None, &commit, &subjects, "b1")),
            expected,
            "{code}"
        );
    }
}

#[test]
fn answers_are_read_as_the_server_writes_them() {
    assert_eq!(Reply::parse(&Bytes::new()), Reply::Staged);
    assert_eq!(
        Reply::parse(&Bytes::from_static(
            br#"{"stream":"S","seq":9,"batch":"b1","count":2}"#
        )),
        Reply::Stored {
            stream: "S".into(),
            last: 9,
            batch: Some("b1".into()),
            count: Some(2)
        }
    );
    assert_eq!(
        Reply::parse(&Bytes::from_static(
            br#"{"error":{"code":400,"err_code":10174,"description":"atomic publish is disabled"},"stream":"S","seq":0}"#
        )),
        Reply::Refused {
            stream: Some("S".into()),
            code: 10174,
            description: "atomic publish is disabled".into()
        }
    );
    assert!(matches!(
        Reply::parse(&Bytes::from_static(b"nonsense")),
        Reply::Unreadable(_)
    ));
}
