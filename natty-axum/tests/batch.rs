//! `AckedPublisher::publish_batch` through real HTTP requests to an app on 127.0.0.1 backed
//! by a real nats-server, read back by a plain async-nats client: a batch from one request is
//! stored whole or not at all, once per `Idempotency-Key`. On a server without atomic batches
//! (before 2.12.1) every test checks instead that the request is answered 501 and nothing is
//! stored.

mod common;

use axum::routing::post;
use axum::Router;
use common::{listener, serve, Answer, Http, Served};
use http::{Method, StatusCode};
use natty::publish::Batch;
use natty::{Config, Natty, OutgoingMessage};
use natty_axum::publish::BatchPublished;
use natty_axum::rejection::PublishRejection;
use natty_axum::{extract, AckedPublisher, IdempotencyKey, NattyState};
use natty_testkit::Server;
use serde_json::json;

/// The body's `[[subject, payload], ...]`, published as one atomic batch.
async fn publish_batch(
    publisher: AckedPublisher,
    key: Option<IdempotencyKey>,
    extract::Json(messages): extract::Json<Vec<(String, String)>>,
) -> Result<axum::Json<BatchPublished>, PublishRejection> {
    let batch: Batch = messages
        .into_iter()
        .map(|(subject, payload)| OutgoingMessage::new(subject, payload))
        .collect();
    Ok(axum::Json(
        publisher.publish_batch(key.as_ref(), batch).await?,
    ))
}

struct Fixture {
    server: Server,
    natty: Natty,
    served: Served,
    http: Http,
}

impl Fixture {
    /// Whether the server has atomic batches; a test on one without checks 501 instead.
    fn atomic(&self) -> bool {
        let atomic = self.natty.server_info().supports_atomic_batch();
        if !atomic {
            println!(
                "nats-server {}: no atomic batches, 501",
                self.natty.server_info().version()
            );
        }
        atomic
    }

    async fn post(&self, key: Option<&str>, messages: serde_json::Value) -> Answer {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(key) = key {
            headers.push(("Idempotency-Key", key));
        }
        self.http
            .send(
                Method::POST,
                &self.served.url("/batches"),
                &headers,
                messages.to_string(),
            )
            .await
    }

    /// Messages `stream` holds, as a plain client reads them: subject, payload, id.
    async fn stored(&self, stream: &str) -> Vec<(String, String, String)> {
        let client = async_nats::connect(self.server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut messages = Vec::new();
        for sequence in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            let message = stream.get_raw_message(sequence).await.unwrap();
            let id = message
                .headers
                .get("Nats-Msg-Id")
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default();
            messages.push((
                message.subject.to_string(),
                String::from_utf8_lossy(&message.payload).into_owned(),
                id,
            ));
        }
        messages
    }
}

/// Streams `ORDERS` (`orders.>`) and `AUDIT` (`audit.>`), both allowed, and `secret.>`,
/// which no filter allows, captured by `SECRET`.
async fn start() -> Fixture {
    let server = Server::start().unwrap();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    for (name, subjects) in [
        ("ORDERS", "orders.>"),
        ("AUDIT", "audit.>"),
        ("SECRET", "secret.>"),
    ] {
        natty
            .stream(name)
            .unwrap()
            .create([subjects])
            .await
            .unwrap();
    }
    let state = NattyState::builder(natty.clone())
        .allow_subjects("orders.>")
        .allow_subjects("audit.>")
        .allow_subjects("nostream.>")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/batches", post(publish_batch))
        .with_state(state);
    let served = serve(listener().await, app);
    Fixture {
        server,
        natty,
        served,
        http: Http::new(),
    }
}

/// `orders.<n>` with payload `<tag> <n>`, for `n` in `0..count`.
fn orders(count: usize, tag: &str) -> serde_json::Value {
    (0..count)
        .map(|n| json!([format!("orders.{n}"), format!("{tag} {n}")]))
        .collect()
}

/// On a server without atomic batches: 501 in the one JSON shape.
fn assert_unsupported(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::NOT_IMPLEMENTED, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.json(),
        json!({"error": "atomic batches unsupported"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_posts_with_one_idempotency_key_store_the_batch_of_3_once() {
    let f = start().await;
    let first = f.post(Some("req-1"), orders(3, "order")).await;
    let again = f.post(Some("req-1"), orders(3, "order")).await;
    if !f.atomic() {
        assert_unsupported(&first);
        assert_unsupported(&again);
        assert!(f.stored("ORDERS").await.is_empty(), "nothing was sent");
        return;
    }
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    let (first, again) = (first.json(), again.json());
    assert_eq!(
        first,
        json!({"stream": "ORDERS", "first_sequence": 1, "last_sequence": 3, "duplicate": false})
    );
    assert_eq!(
        again,
        json!({"stream": "ORDERS", "first_sequence": 1, "last_sequence": 3, "duplicate": true}),
        "the repeated request gets the first batch's sequences"
    );
    let stored = f.stored("ORDERS").await;
    assert_eq!(
        stored,
        (0..3)
            .map(|n| (
                format!("orders.{n}"),
                format!("order {n}"),
                format!("req-1:{n}")
            ))
            .collect::<Vec<_>>(),
        "exactly 3 messages, in order, under the key's ids"
    );

    // Another key is another request: stored again.
    let other = f.post(Some("req-2"), orders(3, "order")).await;
    assert_eq!(other.status, StatusCode::OK, "{other:?}");
    assert_eq!(other.json()["first_sequence"], 4);
    assert_eq!(other.json()["duplicate"], false);
    // Without a key every request is its own.
    let unkeyed = f.post(None, orders(2, "order")).await;
    assert_eq!(unkeyed.json()["first_sequence"], 7, "{unkeyed:?}");
    let unkeyed = f.post(None, orders(2, "order")).await;
    assert_eq!(unkeyed.json()["first_sequence"], 9, "{unkeyed:?}");
    assert_eq!(f.stored("ORDERS").await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_another_batch_is_refused_with_422_and_stores_nothing() {
    let f = start().await;
    let first = f.post(Some("k-1"), orders(3, "order")).await;
    if !f.atomic() {
        assert_unsupported(&first);
        assert!(f.stored("ORDERS").await.is_empty());
        return;
    }
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    // Messages stored after the batch do not hide it.
    let later = f.post(None, orders(2, "later")).await;
    assert_eq!(later.status, StatusCode::OK, "{later:?}");

    let other_payload = orders(3, "changed");
    let other_subject = json!([
        ["orders.0", "order 0"],
        ["orders.x", "order 1"],
        ["orders.2", "order 2"]
    ]);
    let reordered = json!([
        ["orders.1", "order 1"],
        ["orders.0", "order 0"],
        ["orders.2", "order 2"]
    ]);
    for (what, batch) in [
        ("another payload", other_payload),
        ("another subject", other_subject),
        ("another order", reordered),
        ("fewer messages", orders(2, "order")),
        ("more messages", orders(4, "order")),
        ("one message", orders(1, "order")),
    ] {
        let answer = f.post(Some("k-1"), batch).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {answer:?}"
        );
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(
            answer.json()["error"],
            "idempotency-key reused with a different request",
            "{what}"
        );
    }
    assert_eq!(f.stored("ORDERS").await.len(), 5, "nothing more stored");

    // The first request, repeated, still gets its ack.
    let again = f.post(Some("k-1"), orders(3, "order")).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.json()["first_sequence"], 1);
    assert_eq!(again.json()["duplicate"], true);

    // A key used for one message is not a batch's.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "k-2:0");
    f.natty
        .jetstream()
        .publish_with_headers("orders.single", headers, "single".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let answer = f.post(Some("k-2"), orders(3, "order")).await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{answer:?}"
    );
    assert_eq!(f.stored("ORDERS").await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_out_of_scope_subject_is_refused_with_403_and_stores_nothing() {
    let f = start().await;
    for (subject, status) in [
        ("secret.plans", StatusCode::FORBIDDEN),
        ("$JS.API.STREAM.NAMES", StatusCode::FORBIDDEN),
        ("orders.*", StatusCode::BAD_REQUEST),
        ("orders..x", StatusCode::BAD_REQUEST),
    ] {
        let batch = json!([
            ["orders.0", "order 0"],
            [subject, "order 1"],
            ["orders.2", "order 2"]
        ]);
        let answer = f.post(Some("scope-1"), batch).await;
        assert_eq!(answer.status, status, "{subject}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
    }
    let answer = f
        .post(
            Some("scope-1"),
            json!([["orders.0", "x"], ["secret.plans", "y"]]),
        )
        .await;
    assert_eq!(answer.json()["error"], "subject out of scope");
    // Checked before anything is sent, on every server.
    assert!(f.stored("ORDERS").await.is_empty());
    assert!(f.stored("SECRET").await.is_empty());

    // The same key works for an allowed batch afterwards: nothing was stored under it.
    let answer = f.post(Some("scope-1"), orders(3, "order")).await;
    if f.atomic() {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(answer.json()["duplicate"], false);
        assert_eq!(f.stored("ORDERS").await.len(), 3);
    } else {
        assert_unsupported(&answer);
        assert!(f.stored("ORDERS").await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_refusal_answers_its_status_in_the_json_shape() {
    let f = start().await;
    let big = "x".repeat(f.natty.client().server_info().max_payload + 1);
    // Refused before sending, on every server.
    for (what, batch, status, error) in [
        (
            "empty",
            json!([]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid batch",
        ),
        (
            "too large",
            json!([["orders.0", "x"], ["orders.1", big]]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
        ),
    ] {
        let answer = f.post(Some("r-1"), batch).await;
        assert_eq!(answer.status, status, "{what}: {answer:?}");
        assert_eq!(answer.json()["error"], error, "{what}");
    }
    // The commit goes to the batch's stream, which names the other one.
    let mixed = json!([["orders.0", "x"], ["audit.0", "y"], ["orders.1", "z"]]);
    let no_stream = json!([["nostream.0", "x"]]);
    let too_many = orders(1_001, "order");
    if !f.atomic() {
        for batch in [mixed, no_stream, too_many] {
            assert_unsupported(&f.post(None, batch).await);
        }
        assert!(f.stored("ORDERS").await.is_empty());
        return;
    }
    for (what, batch, status, error) in [
        (
            "mixed streams",
            mixed,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid batch",
        ),
        (
            "too many",
            too_many,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid batch",
        ),
        (
            "no stream",
            no_stream,
            StatusCode::INTERNAL_SERVER_ERROR,
            "nats request failed",
        ),
    ] {
        let answer = f.post(Some("r-2"), batch).await;
        assert_eq!(answer.status, status, "{what}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.json()["error"], error, "{what}");
        assert!(
            !answer.body.contains("ORDERS") && !answer.body.contains("AUDIT"),
            "{what}: no stream names reach the client: {}",
            answer.body
        );
    }
    assert!(f.stored("ORDERS").await.is_empty());
    assert!(f.stored("AUDIT").await.is_empty());
    // Nothing was stored under the key: it still takes its batch.
    let answer = f.post(Some("r-2"), orders(2, "order")).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(f.stored("ORDERS").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_with_one_key_store_the_batch_once() {
    let f = start().await;
    let answers =
        futures_util::future::join_all((0..4).map(|_| f.post(Some("race-1"), orders(3, "order"))))
            .await;
    if !f.atomic() {
        answers.iter().for_each(assert_unsupported);
        assert!(f.stored("ORDERS").await.is_empty());
        return;
    }
    let stored = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK && a.json()["duplicate"] == false)
        .count();
    assert_eq!(stored, 1, "one request stores the batch: {answers:?}");
    let statuses: Vec<_> = answers.iter().map(|a| a.status.as_u16()).collect();
    println!("concurrent answers: {statuses:?}");
    for answer in &answers {
        // A request that meets the first one still being stored is told so (409).
        assert!(
            answer.status == StatusCode::OK || answer.status == StatusCode::CONFLICT,
            "{answer:?}"
        );
        if answer.status == StatusCode::OK {
            assert_eq!(answer.json()["first_sequence"], 1, "{answer:?}");
        }
    }
    assert_eq!(f.stored("ORDERS").await.len(), 3);
}
