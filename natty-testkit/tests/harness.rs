//! The harness against a real server: each outcome it reports is what the server was told,
//! checked against the server's own counts where it keeps them.

use std::time::Duration;

use natty::error::ConsumeErrorKind;
use natty::message::Settlement;
use natty::{ConsumeConfig, ConsumerOptions, Message};
use natty_testkit::{Error, Harness, Server};
use natty_tower::dead_letter::{ORIGINAL_CONSUMER, ORIGINAL_SEQUENCE, ORIGINAL_SUBJECT};
use natty_tower::json::JsonMessage;
use natty_tower::ServiceBuilderExt;
use tower::{service_fn, ServiceBuilder};

type BoxError = natty::BoxError;

/// A server, a harness on it and the stream JOBS, capturing `jobs.>`.
async fn start_with_jobs() -> Result<(Server, Harness), BoxError> {
    let server = Server::start()?;
    let harness = Harness::connect(&server).await?;
    harness.natty().stream("JOBS")?.create(["jobs.>"]).await?;
    Ok((server, harness))
}

/// A handler that settles each message as its payload says.
async fn settle_as_told(msg: Message) -> Result<(), BoxError> {
    match (&msg.payload()[..], msg.info().delivered) {
        (b"nak", 1) => msg.nak(Some(Duration::from_millis(200))).await?,
        (b"term", _) => msg.term().await?,
        (b"double", _) => msg.double_ack().await?,
        (b"slow", _) => {
            msg.in_progress().await?;
            msg.in_progress().await?;
        }
        _ => {} // natty's driver acks what is left unsettled after Ok
    }
    Ok(())
}

#[tokio::test]
async fn outcomes_show_each_settlement_its_delay_and_the_in_progress_sent() -> Result<(), BoxError>
{
    let (_server, harness) = start_with_jobs().await?;
    let natty = harness.natty();
    let config = ConsumeConfig::new("JOBS", "worker").concurrency(4);
    let worker = harness.serve(config, service_fn(settle_as_told)).await?;

    let publisher = natty.publisher();
    let mut sequences = Vec::new();
    for payload in ["ok", "nak", "term", "double", "slow"] {
        sequences.push(publisher.publish_acked("jobs.x", payload).await?.sequence);
    }
    let [ok, nak, term, double, slow] = sequences[..] else {
        unreachable!()
    };

    let first = worker.delivery(nak, 1).await?;
    assert_eq!(
        first.settlement,
        Settlement::Nak(Some(Duration::from_millis(200)))
    );
    let last = worker.outcome(nak).await?;
    assert_eq!((last.settlement, last.delivered), (Settlement::Ack, 2));
    assert_eq!(worker.deliveries(nak).len(), 2, "a nak, then the ack");

    let expected = [
        (ok, Settlement::Ack, 0),
        (term, Settlement::Term, 0),
        (double, Settlement::DoubleAck, 0),
        (slow, Settlement::Ack, 2),
    ];
    for (sequence, settlement, in_progress) in expected {
        let outcome = worker.outcome(sequence).await?;
        assert_eq!(
            (outcome.settlement, outcome.delivered, outcome.in_progress),
            (settlement, 1, in_progress),
            "message {sequence}"
        );
        assert!(outcome.dead_letter.is_none());
    }

    // The server agrees: nothing left to ack, one message delivered twice.
    let counts = harness
        .wait_for_consumer("JOBS", "worker", |c| c.ack_pending == 0)
        .await?;
    assert_eq!((counts.pending, counts.delivered_sequence), (0, slow));
    assert_eq!(harness.stream_counts("JOBS").await?.messages, 5);
    let summary = worker.stop().await?;
    assert_eq!(summary.handled, 6, "five messages, one of them twice");
    Ok(())
}

#[derive(serde::Deserialize)]
struct Job {
    #[allow(dead_code)]
    id: u64,
}

#[tokio::test]
async fn a_dead_lettered_message_carries_its_dead_letter_and_origin_headers() -> Result<(), BoxError>
{
    let (_server, harness) = start_with_jobs().await?;
    let natty = harness.natty();
    natty.stream("DEAD")?.create(["dead.jobs"]).await?;
    harness.watch_dead_letters("dead.jobs").await?;
    let stack = ServiceBuilder::new()
        .ack_messages()
        .dead_letter(natty.publisher(), "dead.jobs")
        .decode_json::<Job>()
        .service(service_fn(|_: JsonMessage<Job>| async {
            Ok::<_, BoxError>(())
        }));
    let options = ConsumerOptions::default().max_deliver(3);
    let config = ConsumeConfig::new("JOBS", "worker").consumer_options(options);
    let worker = harness.serve(config, stack).await?;

    let good = natty
        .publisher()
        .publish_acked("jobs.new", r#"{"id":1}"#)
        .await?;
    let poison = natty
        .publisher()
        .publish_acked("jobs.new", "not json")
        .await?;

    let outcome = worker.outcome(poison.sequence).await?;
    assert_eq!(
        (outcome.settlement, outcome.delivered),
        (Settlement::Term, 1)
    );
    let letter = outcome
        .dead_letter
        .expect("the dead letter comes with the term");
    assert_eq!(letter.subject, "dead.jobs");
    assert_eq!(letter.payload, "not json");
    let sequence = poison.sequence.to_string();
    assert_eq!(
        letter.headers.get(ORIGINAL_SEQUENCE),
        Some(sequence.as_str())
    );
    assert_eq!(letter.headers.get(ORIGINAL_SUBJECT), Some("jobs.new"));
    assert_eq!(letter.headers.get(ORIGINAL_CONSUMER), Some("worker"));

    let good = worker.outcome(good.sequence).await?;
    assert_eq!((good.settlement, good.delivered), (Settlement::Ack, 1));
    assert!(good.dead_letter.is_none());

    // What the stream stored is the dead letter the outcome carried.
    let stored = harness.last_message("dead.jobs").await?.expect("stored");
    assert_eq!(
        stored.headers.get(ORIGINAL_SEQUENCE),
        Some(sequence.as_str())
    );
    assert_eq!(harness.stream_counts("DEAD").await?.messages, 1);
    assert_eq!(
        harness.last_message("jobs.none").await?.map(|m| m.sequence),
        None
    );
    worker.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_wait_past_the_deadline_says_what_it_saw() -> Result<(), BoxError> {
    let (_server, harness) = start_with_jobs().await?;
    let harness = harness.with_deadline(Duration::from_millis(500));
    let natty = harness.natty();
    let naks = service_fn(|msg: Message| async move {
        msg.nak(Some(Duration::from_secs(60))).await?;
        Ok::<_, BoxError>(())
    });
    let worker = harness
        .serve(ConsumeConfig::new("JOBS", "worker"), naks)
        .await?;
    let job = natty.publisher().publish_acked("jobs.x", "again").await?;

    let err = worker.outcome(job.sequence).await.unwrap_err();
    let Error::NotSeen { waiting_for, seen } = &err else {
        panic!("{err:?}")
    };
    assert!(
        waiting_for.contains(&format!("message {}", job.sequence)),
        "{waiting_for}"
    );
    assert!(
        seen.contains("Nak(Some(60s))"),
        "the nak seen is named: {seen}"
    );
    let counts = harness
        .wait_for_consumer("JOBS", "worker", |c| c.ack_pending == 1)
        .await?;
    assert_eq!(
        counts.pending, 0,
        "nak'd, so still pending an ack, not undelivered"
    );
    worker.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_stack_that_stops_serving_ends_the_wait_and_stop_says_why() -> Result<(), BoxError> {
    let (_server, harness) = start_with_jobs().await?;
    let natty = harness.natty();
    // Dead letters sent into the consumed stream would come back: the layer refuses to run.
    let stack = ServiceBuilder::new()
        .dead_letter(natty.publisher(), "jobs.dead")
        .service(service_fn(|_: Message| async { Ok::<_, BoxError>(()) }));
    let worker = harness
        .serve(ConsumeConfig::new("JOBS", "worker"), stack)
        .await?;
    let job = natty.publisher().publish_acked("jobs.x", "work").await?;

    let err = worker.outcome(job.sequence).await.unwrap_err();
    assert!(matches!(err, Error::Stopped), "{err:?}");
    match worker.stop().await {
        Err(Error::Consume(err)) => assert_eq!(err.kind(), ConsumeErrorKind::NotReady),
        other => panic!("{other:?}"),
    }
    Ok(())
}
