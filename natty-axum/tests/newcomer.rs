//! The first test a newcomer writes, with natty's, natty-axum's and the test kit's public API
//! only: a route that publishes jobs, a natty-tower stack that handles them, one real server.

use axum::body::{to_bytes, Body};
use axum::{routing::post, Router};
use http::{Request, StatusCode};
use natty::{message::Settlement, BoxError, ConsumeConfig};
use natty_axum::{extract::Bytes, rejection::PublishRejection, AckedPublisher};
use natty_axum::{IdempotencyKey, NattyState};
use natty_testkit::{Harness, Server};
use natty_tower::dead_letter::{ORIGINAL_SEQUENCE, ORIGINAL_SUBJECT};
use natty_tower::{json::JsonMessage, ServiceBuilderExt};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[derive(serde::Deserialize)]
struct Job {
    id: u64,
}

async fn create_job(
    publisher: AckedPublisher,
    key: Option<IdempotencyKey>,
    Bytes(body): Bytes,
) -> Result<String, PublishRejection> {
    let headers = key.map(|key| key.to_headers()).unwrap_or_default();
    let ack = publisher
        .publish_acked_with_headers("jobs.created", headers, body)
        .await?;
    Ok(ack.sequence.to_string())
}

/// POSTs `body` with an `Idempotency-Key` and returns the stream sequence the route answers.
async fn post_job(app: &Router, key: &str, body: &'static str) -> Result<u64, BoxError> {
    let request = Request::post("/jobs").header("idempotency-key", key);
    let response = app.clone().oneshot(request.body(Body::from(body))?).await?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(String::from_utf8(to_bytes(response.into_body(), 64).await?.to_vec())?.parse()?)
}

#[tokio::test]
async fn a_good_job_is_acked_once_a_poison_job_dead_lettered_and_one_key_stores_one_message(
) -> Result<(), BoxError> {
    let server = Server::start()?;
    let harness = Harness::connect(&server).await?;
    let natty = harness.natty();
    natty.stream("JOBS")?.create(["jobs.>"]).await?;
    natty.stream("DEAD")?.create(["dead.jobs"]).await?;
    harness.watch_dead_letters("dead.jobs").await?;

    let state = NattyState::builder(natty.clone()).allow_subjects("jobs.>");
    let app = Router::new().route("/jobs", post(create_job));
    let app = app.with_state(state.build()?);
    let stack = ServiceBuilder::new()
        .ack_messages()
        .dead_letter(natty.publisher(), "dead.jobs")
        .decode_json::<Job>() // a body that is not a Job is given up: dead-lettered at once
        .service(service_fn(|job: JsonMessage<Job>| async move {
            assert_eq!(job.payload.id, 7);
            Ok::<_, BoxError>(())
        }));
    let config = ConsumeConfig::new("JOBS", "worker");
    let worker = harness.serve(config, stack).await?;

    let good = post_job(&app, "job-7", r#"{"id":7}"#).await?;
    let again = post_job(&app, "job-7", r#"{"id":7}"#).await?;
    assert_eq!(again, good, "the same key answers the stored message");
    let poison = post_job(&app, "job-8", "not a job").await?;

    let done = worker.outcome(good).await?;
    assert_eq!((done.settlement, done.delivered), (Settlement::Ack, 1));
    let dead = worker.outcome(poison).await?;
    assert_eq!(dead.settlement, Settlement::Term);
    let letter = dead.dead_letter.expect("dead-lettered");
    assert_eq!(letter.payload, "not a job");
    assert_eq!(letter.headers.get(ORIGINAL_SUBJECT), Some("jobs.created"));
    let sequence = poison.to_string();
    assert_eq!(letter.headers.get(ORIGINAL_SEQUENCE), Some(&*sequence));

    let stored = harness.stream_counts("JOBS").await?;
    assert_eq!(
        stored.messages, 2,
        "job-7 once for its two POSTs, and the poison"
    );
    let counts = harness
        .wait_for_consumer("JOBS", "worker", |c| c.ack_pending == 0)
        .await?;
    assert_eq!(counts.redelivered, 0);
    assert_eq!(worker.stop().await?.handled, 1);
    Ok(())
}
