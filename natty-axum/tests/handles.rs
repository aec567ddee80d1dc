//! The publish and KV handles, their rejections and the health routes, through real HTTP
//! requests to an app on 127.0.0.1 backed by a real nats-server.

mod common;

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Path};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::{eventually, listener, serve, Http, Served};
use http::{Method, StatusCode};
use natty::compat::GoNatty as _;
use natty::{Config, ConnectionState, ElectionConfig, Natty, PublishConfig};
use natty_axum::rejection::{KvRejection, PublishRejection};
use natty_axum::{
    extract, fallback, health, subject, AckedPublisher, IdempotencyKey, Kv, NattyState,
};
use natty_testkit::Server;
use serde_json::json;
use tower::ServiceBuilder;

async fn publish(
    publisher: AckedPublisher,
    key: Option<IdempotencyKey>,
    Path(subject): Path<String>,
    extract::Bytes(body): extract::Bytes,
) -> Result<axum::Json<serde_json::Value>, PublishRejection> {
    let headers = key.map(|key| key.to_headers()).unwrap_or_default();
    let ack = publisher
        .publish_acked_with_headers(&subject, headers, body)
        .await?;
    Ok(axum::Json(json!({
        "stream": ack.stream,
        "sequence": ack.sequence,
        "duplicate": ack.duplicate,
    })))
}

async fn create_order(
    publisher: AckedPublisher,
    Path(id): Path<String>,
    extract::Bytes(body): extract::Bytes,
) -> Result<String, PublishRejection> {
    let subject = format!("orders.{}.created", subject::token(&id)?);
    Ok(publisher
        .publish_acked(&subject, body)
        .await?
        .sequence
        .to_string())
}

/// An item published as JSON with the request's `Idempotency-Key`; an item named
/// "unserializable" publishes a value that does not serialize instead.
async fn publish_item(
    publisher: AckedPublisher,
    key: Option<IdempotencyKey>,
    extract::Json(item): extract::Json<Item>,
) -> Result<String, PublishRejection> {
    let headers = key.map(|key| key.to_headers()).unwrap_or_default();
    let ack = if item.name == "unserializable" {
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        publisher
            .publish_json_acked_with_headers("orders.item", headers, &map)
            .await?
    } else {
        publisher
            .publish_json_acked_with_headers("orders.item", headers, &item)
            .await?
    };
    Ok(ack.sequence.to_string())
}

async fn kv_get(kv: Kv, Path((bucket, key)): Path<(String, String)>) -> Result<Bytes, KvRejection> {
    kv.bucket(&bucket)?.get(&key).await
}

async fn kv_put(
    kv: Kv,
    Path((bucket, key)): Path<(String, String)>,
    extract::Bytes(body): extract::Bytes,
) -> Result<String, KvRejection> {
    Ok(kv.bucket(&bucket)?.put(&key, body).await?.to_string())
}

async fn kv_keys(
    kv: Kv,
    Path(bucket): Path<String>,
) -> Result<axum::Json<Vec<String>>, KvRejection> {
    let mut keys = kv.bucket(&bucket)?.keys().await?;
    keys.sort();
    Ok(axum::Json(keys))
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Item {
    name: String,
    quantity: u32,
}

/// JSON in, an id from the path, and a write whose value does not serialize on demand.
async fn put_item(
    kv: Kv,
    extract::Path(id): extract::Path<u32>,
    extract::Json(item): extract::Json<Item>,
) -> Result<extract::Json<Item>, KvRejection> {
    let bucket = kv.bucket("order_status")?;
    if item.name == "unserializable" {
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        bucket.put_json("x", &map).await?;
    }
    bucket.put_json(&id.to_string(), &item).await?;
    Ok(extract::Json(item))
}

async fn raw(extract::Bytes(body): extract::Bytes) -> String {
    body.len().to_string()
}

/// Publish with a header named by the request, as a header name taken from input would be.
async fn tagged(
    publisher: AckedPublisher,
    Path(name): Path<String>,
) -> Result<String, PublishRejection> {
    let mut headers = natty::HeaderMap::new();
    headers.insert(&name, "v");
    let ack = publisher
        .publish_acked_with_headers("orders.tagged", headers, "x")
        .await?;
    Ok(ack.sequence.to_string())
}

/// Publish to a subject in scope that no stream captures: a NATS failure, not the client's.
async fn unstored(publisher: AckedPublisher) -> Result<String, PublishRejection> {
    Ok(publisher
        .publish_acked("nostream.x", "x")
        .await?
        .sequence
        .to_string())
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "late"
}

async fn status_by_id(
    kv: Kv,
    extract::Path(id): extract::Path<String>,
) -> Result<Bytes, KvRejection> {
    kv.bucket("order_status")?
        .get(subject::key_token(&id)?)
        .await
}

fn app(state: NattyState) -> Router {
    Router::new()
        .route("/publish/{subject}", post(publish))
        .route("/orders/{id}", post(create_order))
        .route("/items", post(publish_item))
        .route("/status/{id}", get(status_by_id))
        .route("/kv/{bucket}", get(kv_keys))
        .route("/kv/{bucket}/{key}", get(kv_get).put(kv_put))
        .route(
            "/items/{id}",
            post(put_item).layer(DefaultBodyLimit::max(1024)),
        )
        .route("/raw", post(raw).layer(DefaultBodyLimit::max(16)))
        .route("/unstored", post(unstored))
        .route("/tag/{name}", post(tagged))
        .route(
            "/slow",
            get(slow).layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(fallback::timed_out))
                    .timeout(Duration::from_millis(200)),
            ),
        )
        .nest("/health", health::router())
        .fallback(fallback::not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        .with_state(state)
}

struct Fixture {
    server: Server,
    natty: Natty,
    served: Served,
    http: Http,
}

async fn start() -> Fixture {
    start_with(|config| config).await
}

/// The fixture, its client connected with the config `tune` makes of the default.
async fn start_with(tune: impl FnOnce(Config) -> Config) -> Fixture {
    let server = Server::start().unwrap();
    let natty = Natty::connect(tune(Config::new([server.url()])))
        .await
        .unwrap();
    natty.create_stream("ORDERS", ["orders.>"]).await.unwrap();
    let leadership = natty
        .elect(ElectionConfig::new("web_leaders", "handles", "node-1"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), leadership.wait_leader())
        .await
        .unwrap()
        .unwrap();
    let state = NattyState::builder(natty.clone())
        .allow_subjects("orders.>")
        .allow_subjects("nostream.>")
        .allow_bucket("order_status")
        .leadership(leadership)
        .build()
        .unwrap();
    let served = serve(listener().await, app(state));
    Fixture {
        server,
        natty,
        served,
        http: Http::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_through_the_handle_lands_in_the_stream_once_per_idempotency_key() {
    let f = start().await;
    let answer = f
        .http
        .post(&f.served.url("/publish/orders.created"), "order one")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let ack = answer.json();
    assert_eq!(ack["stream"], "ORDERS");
    let sequence = ack["sequence"].as_u64().unwrap();

    let stream = f.natty.jetstream().get_stream("ORDERS").await.unwrap();
    let stored = stream.get_raw_message(sequence).await.unwrap();
    assert_eq!(stored.subject.as_str(), "orders.created");
    assert_eq!(&stored.payload[..], b"order one");

    // A retried request with the same Idempotency-Key is stored once.
    let url = f.served.url("/publish/orders.created");
    let headers = [("Idempotency-Key", "req-42")];
    let first = f.http.send(Method::POST, &url, &headers, "order two").await;
    let again = f.http.send(Method::POST, &url, &headers, "order two").await;
    assert_eq!(first.json()["duplicate"], false);
    assert_eq!(again.json()["duplicate"], true);
    assert_eq!(again.json()["sequence"], first.json()["sequence"]);
    let mut stream = f.natty.jetstream().get_stream("ORDERS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);

    // Path input goes through `subject::token`.
    let answer = f.http.post(&f.served.url("/orders/o-7"), "x").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let sequence = answer.body.parse().unwrap();
    let stored = stream.get_raw_message(sequence).await.unwrap();
    assert_eq!(stored.subject.as_str(), "orders.o-7.created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_publishes_keep_their_headers_and_a_value_that_does_not_serialize_sends_nothing() {
    let f = start().await;
    let url = f.served.url("/items");
    let headers = [
        ("Idempotency-Key", "item-1"),
        ("Content-Type", "application/json"),
    ];
    let body = r#"{"name":"bolt","quantity":3}"#;
    let answer = f.http.send(Method::POST, &url, &headers, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let sequence = answer.body.parse().unwrap();
    let mut stream = f.natty.jetstream().get_stream("ORDERS").await.unwrap();
    let stored = stream.get_raw_message(sequence).await.unwrap();
    assert_eq!(stored.subject.as_str(), "orders.item");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&stored.payload).unwrap(),
        json!({"name": "bolt", "quantity": 3})
    );
    assert_eq!(
        stored
            .headers
            .get("Nats-Msg-Id")
            .map(|id| id.as_str().to_owned()),
        Some("item-1".to_owned())
    );

    // A value that fails to serialize is refused, and nothing (no empty body) is published.
    let body = r#"{"name":"unserializable","quantity":1}"#;
    let answer = f.http.send(Method::POST, &url, &headers, body).await;
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{answer:?}"
    );
    assert_eq!(stream.info().await.unwrap().state.last_sequence, sequence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rejections_have_their_status_and_a_json_body() {
    let f = start().await;
    let cases = [
        (
            "/publish/orders.*",
            StatusCode::BAD_REQUEST,
            "invalid subject",
        ),
        (
            "/publish/orders.%3E",
            StatusCode::BAD_REQUEST,
            "invalid subject",
        ),
        (
            "/publish/orders..x",
            StatusCode::BAD_REQUEST,
            "invalid subject",
        ),
        ("/orders/1.paid", StatusCode::BAD_REQUEST, "invalid subject"),
        ("/orders/%3E", StatusCode::BAD_REQUEST, "invalid subject"),
        ("/tag/a%20b", StatusCode::BAD_REQUEST, "invalid header"),
        ("/tag/a:b", StatusCode::BAD_REQUEST, "invalid header"),
        (
            "/publish/$JS.API.INFO",
            StatusCode::FORBIDDEN,
            "subject out of scope",
        ),
        (
            "/publish/$KV.order_status.x",
            StatusCode::FORBIDDEN,
            "subject out of scope",
        ),
        (
            "/publish/$SYS.REQ.SERVER.PING",
            StatusCode::FORBIDDEN,
            "subject out of scope",
        ),
        (
            "/publish/_INBOX.abc",
            StatusCode::FORBIDDEN,
            "subject out of scope",
        ),
        (
            "/publish/billing.created",
            StatusCode::FORBIDDEN,
            "subject out of scope",
        ),
    ];
    for (path, status, error) in cases {
        let answer = f.http.post(&f.served.url(path), "x").await;
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let body = answer.json();
        assert_eq!(body["error"], error, "{path}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{path}: {body}"
        );
    }

    let too_large = vec![b'x'; f.natty.client().server_info().max_payload + 1];
    let answer = f
        .http
        .post(&f.served.url("/publish/orders.created"), too_large)
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
    assert_eq!(answer.json()["error"], "payload too large");

    let answer = f
        .http
        .send(
            Method::POST,
            &f.served.url("/publish/orders.created"),
            &[("Idempotency-Key", "has space")],
            "x",
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert_eq!(answer.json()["error"], "invalid idempotency-key header");

    let mut stream = f.natty.jetstream().get_stream("ORDERS").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        0,
        "nothing refused was sent"
    );

    // A state without an election cannot answer leadership questions: a 500 that says why.
    let bare = NattyState::builder(f.natty.clone()).build().unwrap();
    let bare = serve(listener().await, app(bare));
    let answer = f.http.get(&bare.url("/health/leader")).await;
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{answer:?}"
    );
    assert_eq!(answer.json()["error"], "no leader election configured");
    // ... and its handles reach nothing.
    let answer = f.http.post(&bare.url("/publish/orders.created"), "x").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_read_and_write_through_the_handle_with_404_400_403_413() {
    let f = start().await;
    let url = f.served.url("/kv/order_status/o-1");
    let answer = f.http.send(Method::PUT, &url, &[], "paid").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(
        f.natty.get("order_status", "o-1").await.unwrap().as_deref(),
        Some(&b"paid"[..])
    );
    let answer = f.http.get(&url).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "paid")
    );

    f.natty
        .put("order_status", "o-2", "written by a worker".into())
        .await
        .unwrap();
    let answer = f.http.get(&f.served.url("/kv/order_status/o-2")).await;
    assert_eq!(answer.body, "written by a worker");

    let keys = f.http.get(&f.served.url("/kv/order_status")).await;
    assert_eq!(keys.json(), json!(["o-1", "o-2"]));

    let answer = f.http.get(&f.served.url("/kv/order_status/missing")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{answer:?}");
    assert_eq!(answer.json()["error"], "key not found");

    for bad in ["a%20b", "a..b", ".a", "a*", "%24JS"] {
        let answer = f
            .http
            .get(&f.served.url(&format!("/kv/order_status/{bad}")))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}: {answer:?}");
        let body = answer.json();
        assert_eq!(body["error"], "invalid key", "{bad}");
        assert!(body["detail"].as_str().unwrap().contains("key"), "{body}");
    }

    for other in ["web_leaders", "secrets", "KV_order_status"] {
        let answer = f.http.get(&f.served.url(&format!("/kv/{other}/k"))).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{other}: {answer:?}");
        assert_eq!(answer.json()["error"], "bucket out of scope");
    }

    let too_large = vec![b'x'; f.natty.client().server_info().max_payload + 1];
    let answer = f.http.send(Method::PUT, &url, &[], too_large).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
    assert_eq!(answer.json()["error"], "payload too large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_that_does_not_answer_in_time_is_504_and_a_keyed_retry_stores_once() {
    // One attempt per publish, so the HTTP answer comes after one request timeout.
    let once = PublishConfig::default().retries(1, Duration::ZERO, Duration::ZERO);
    let f = start_with(|config| config.request_timeout(Duration::from_secs(1)).publish(once)).await;
    let kv_put = f
        .http
        .send(
            Method::PUT,
            &f.served.url("/kv/order_status/o-1"),
            &[],
            "paid",
        )
        .await;
    assert_eq!(kv_put.status, StatusCode::OK, "{kv_put:?}");

    // A frozen server: connected, but nothing answers.
    f.server.pause().unwrap();
    let key = [("idempotency-key", "order-1")];
    let publish_url = f.served.url("/publish/orders.created");
    let answer = f.http.send(Method::POST, &publish_url, &key, "one").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT, "{answer:?}");
    assert_eq!(answer.json()["error"], "nats did not answer in time");
    assert_eq!(answer.header("retry-after"), None);
    let answer = f.http.get(&f.served.url("/kv/order_status/o-1")).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT, "{answer:?}");
    assert_eq!(answer.json()["error"], "nats did not answer in time");
    assert_eq!(f.natty.connection_state(), ConnectionState::Connected);
    f.server.resume().unwrap();

    // The timed-out publish may have been stored: the same key stores it at most once.
    let retry = eventually(Duration::from_secs(15), "the publish to succeed", || {
        let (http, url) = (f.http.clone(), publish_url.clone());
        async move {
            let answer = http.send(Method::POST, &url, &key, "one").await;
            (answer.status == StatusCode::OK).then(|| answer.json())
        }
    })
    .await;
    let mut stream = f.natty.jetstream().get_stream("ORDERS").await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    assert_eq!(stored, 1, "one message for the key ({retry})");
    f.natty.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_routes_answer_json_and_an_outage_is_503_everywhere() {
    let f = start().await;
    let live = f.http.get(&f.served.url("/health/live")).await;
    assert_eq!(
        (live.status, live.json()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let ready = f.http.get(&f.served.url("/health/ready")).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    assert_eq!(
        ready.json(),
        json!({"status": "ready", "nats": "connected", "jetstream": "ok"})
    );
    let leader = f.http.get(&f.served.url("/health/leader")).await.json();
    assert_eq!(leader["node"], "node-1");
    assert_eq!(leader["state"], "leader");
    assert_eq!(leader["leader"], "node-1");
    assert_eq!(leader["is_leader"], true);
    assert!(
        leader["fencing_token"].as_u64().is_some_and(|t| t > 0),
        "{leader}"
    );

    f.server.kill();
    let natty = f.natty.clone();
    eventually(
        Duration::from_secs(10),
        "the client to notice the outage",
        || {
            let natty = natty.clone();
            async move { (natty.connection_state() != ConnectionState::Connected).then_some(()) }
        },
    )
    .await;

    let answer = f
        .http
        .post(&f.served.url("/publish/orders.created"), "x")
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.json()["error"], "nats unavailable");
    let answer = f.http.get(&f.served.url("/kv/order_status/o-1")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.json()["error"], "nats unavailable");
    let answer = f
        .http
        .send(Method::PUT, &f.served.url("/kv/order_status/o-1"), &[], "x")
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    let ready = f.http.get(&f.served.url("/health/ready")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert_eq!(ready.json()["status"], "unavailable");
    let live = f.http.get(&f.served.url("/health/live")).await;
    assert_eq!(live.status, StatusCode::OK, "alive while NATS is down");

    f.server.restart().unwrap();
    let (http, url) = (f.http.clone(), f.served.url("/health/ready"));
    eventually(
        Duration::from_secs(15),
        "ready again after the restart",
        || {
            let (http, url) = (http.clone(), url.clone());
            async move { (http.get(&url).await.status == StatusCode::OK).then_some(()) }
        },
    )
    .await;
}

/// method, path, headers, body, then the status, `error` text and whether a `detail` is sent.
type RefusalCase<'a> = (
    Method,
    &'a str,
    &'a [(&'a str, &'a str)],
    String,
    StatusCode,
    &'a str,
    bool,
);

/// Every class of refusal an app built with natty-axum gives, axum's own included: status,
/// `application/json`, and a body with `error` (and `detail` where the client can act on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_class_answers_its_status_with_the_json_shape() {
    let logs = common::capture_logs();
    let f = start().await;
    let json = [("content-type", "application/json")];
    let item = r#"{"name":"tea","quantity":2}"#;
    let over_limit = format!(r#"{{"name":"{}","quantity":1}}"#, "x".repeat(2048));
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    #[rustfmt::skip]
    let cases: Vec<RefusalCase> = vec![
        (post.clone(), "/items/1", &json, "{\"name\":".into(), StatusCode::BAD_REQUEST, "malformed json body", true),
        (post.clone(), "/items/1", &json, "not json".into(), StatusCode::BAD_REQUEST, "malformed json body", true),
        (post.clone(), "/items/1", &json, r#"{"name":"tea"}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "json body does not match the expected shape", true),
        (post.clone(), "/items/1", &json, r#"{"name":1,"quantity":2}"#.into(), StatusCode::UNPROCESSABLE_ENTITY, "json body does not match the expected shape", true),
        (post.clone(), "/items/1", &[], item.into(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected content-type application/json", false),
        (post.clone(), "/items/1", &[("content-type", "text/plain")], item.into(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected content-type application/json", false),
        (post.clone(), "/items/1", &json, over_limit, StatusCode::PAYLOAD_TOO_LARGE, "payload too large", true),
        (post.clone(), "/raw", &[], "x".repeat(17), StatusCode::PAYLOAD_TOO_LARGE, "payload too large", true),
        (post.clone(), "/items/seven", &json, item.into(), StatusCode::BAD_REQUEST, "invalid path parameter", true),
        (post.clone(), "/items/-1", &json, item.into(), StatusCode::BAD_REQUEST, "invalid path parameter", true),
        (get.clone(), "/status/%C3%A9", &[], String::new(), StatusCode::BAD_REQUEST, "invalid id", true),
        (get.clone(), "/status/a%3Ab", &[], String::new(), StatusCode::BAD_REQUEST, "invalid id", true),
        (get.clone(), "/no/such/route", &[], String::new(), StatusCode::NOT_FOUND, "no such route", false),
        (delete.clone(), "/items/1", &[], String::new(), StatusCode::METHOD_NOT_ALLOWED, "method not allowed", false),
        (get.clone(), "/slow", &[], String::new(), StatusCode::REQUEST_TIMEOUT, "request timed out", false),
        // 5xx: a generic message, nothing internal.
        (post.clone(), "/unstored", &[], String::new(), StatusCode::INTERNAL_SERVER_ERROR, "nats request failed", false),
        (post.clone(), "/items/2", &json, r#"{"name":"unserializable","quantity":1}"#.into(), StatusCode::INTERNAL_SERVER_ERROR, "value cannot be serialized", false),
    ];
    for (method, path, headers, body, status, error, has_detail) in cases {
        let answer = f
            .http
            .send(method.clone(), &f.served.url(path), headers, body)
            .await;
        let what = format!("{method} {path}");
        assert_eq!(answer.status, status, "{what}: {answer:?}");
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{what}: {answer:?}"
        );
        let body = answer.json();
        assert_eq!(body["error"], error, "{what}: {body}");
        assert_eq!(body["detail"].is_string(), has_detail, "{what}: {body}");
    }
    let answer = f
        .http
        .send(Method::POST, &f.served.url("/items/3"), &json, item)
        .await;
    assert_eq!(
        (answer.status, answer.json()),
        (StatusCode::OK, json!({"name": "tea", "quantity": 2}))
    );

    // Each refusal is logged at TRACE; a 5xx logs its cause at ERROR, and only there.
    let logs = logs.text();
    for status in [400, 404, 405, 408, 413, 415, 422] {
        assert!(
            logs.lines().any(|l| l.contains("TRACE")
                && l.contains("natty_axum::rejection")
                && l.contains(&format!("status={status}"))),
            "no TRACE line for {status} in:\n{logs}"
        );
    }
    let failure = logs
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("nats request failed"))
        .unwrap_or_else(|| panic!("no ERROR line for the NATS failure in:\n{logs}"));
    assert!(failure.contains("error="), "the cause is logged: {failure}");
    assert!(logs
        .lines()
        .any(|l| l.contains("ERROR") && l.contains("value cannot be serialized")));
}

/// The IETF httpapi Idempotency-Key draft: a key is bound to its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_with_another_request_is_refused_with_422() {
    let f = start().await;
    let url = f.served.url("/publish/orders.created");
    let key = [("Idempotency-Key", "k-1")];
    let first = f.http.send(Method::POST, &url, &key, "order one").await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let again = f.http.send(Method::POST, &url, &key, "order one").await;
    assert_eq!(
        (again.status, again.json()["sequence"].clone()),
        (StatusCode::OK, first.json()["sequence"].clone())
    );

    let other_body = f.http.send(Method::POST, &url, &key, "order two").await;
    assert_eq!(
        other_body.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{other_body:?}"
    );
    assert_eq!(other_body.header("content-type"), Some("application/json"));
    assert_eq!(
        other_body.json()["error"],
        "idempotency-key reused with a different request"
    );
    let other_subject = f
        .http
        .send(
            Method::POST,
            &f.served.url("/publish/orders.paid"),
            &key,
            "order one",
        )
        .await;
    assert_eq!(
        other_subject.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{other_subject:?}"
    );

    let mut stream = f.natty.jetstream().get_stream("ORDERS").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        1,
        "one message for one key"
    );
}
