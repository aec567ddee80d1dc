//! The order service's HTTP promises, checked against the built binary and a real
//! nats-server: every accepted id can be read back, and an Idempotency-Key is bound to its
//! request across nodes.

mod common;

use std::time::Duration;

use common::{Http, Service};
use futures_util::TryStreamExt;
use http::StatusCode;
use natty::{Config, Natty};
use natty_testkit::Server;
use serde_json::json;

/// Messages the ORDERS stream holds on `subject` (all of them for `>`).
async fn stored(natty: &Natty, subject: &str) -> u64 {
    let stream = natty.jetstream().get_stream("ORDERS").await.unwrap();
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(subject)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    subjects.iter().map(|(_, count)| *count as u64).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_accepted_only_if_it_is_both_a_subject_token_and_a_kv_key() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start().unwrap();
    let service = Service::start("node-1", Some(&server.url()), tmp.path()).await;
    let http = Http::new();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();

    // Each was accepted once (202 and a Location), then unreadable forever.
    let refused = [
        "é", "🦀", "#", "+", ":", "%", "$JS", "a\\b", "a\"b", "o.1", ">", "", "o 1",
    ];
    for id in refused {
        let order = json!({"id": id, "item": "tea", "quantity": 1});
        let answer = http.post_order(&service.url("/orders"), None, &order).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{id:?}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.json()["error"], "invalid id", "{id:?}");
        assert_eq!(answer.header("location"), None);
    }
    for path in [
        "%C3%A9", "%23", "%2B", "%3A", "%25", "$JS", "a%5Cb", "a%22b",
    ] {
        let answer = http.get(&service.url(&format!("/orders/{path}"))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {answer:?}");
        assert_eq!(answer.json()["error"], "invalid id", "{path}");
    }
    assert_eq!(
        stored(&natty, ">").await,
        0,
        "nothing refused was published"
    );

    // What is accepted resolves where its Location says.
    for id in ["o-1", "A_b=c/d", "7"] {
        let order = json!({"id": id, "item": "tea", "quantity": 1});
        let answer = http.post_order(&service.url("/orders"), None, &order).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{id}: {answer:?}");
        let location = answer.header("location").unwrap().to_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let status = http.get(&service.url(&location)).await;
            if status.status == StatusCode::OK {
                assert_eq!(status.json()["id"], id);
                break;
            }
            assert_eq!(
                status.status,
                StatusCode::NOT_FOUND,
                "{location}: {status:?}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "{location} never resolved"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_makes_one_order_across_two_nodes_and_is_bound_to_its_request() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start().unwrap();
    let a = Service::start("node-a", Some(&server.url()), tmp.path()).await;
    let b = Service::start("node-b", Some(&server.url()), tmp.path()).await;
    let http = Http::new();
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();

    // 200 concurrent POSTs with one key, split over both nodes: one order, one answer.
    let order = json!({"id": "o-1", "item": "tea", "quantity": 2});
    let requests = (0..200).map(|i| {
        let (http, order) = (http.clone(), order.clone());
        let url = if i % 2 == 0 {
            a.url("/orders")
        } else {
            b.url("/orders")
        };
        tokio::spawn(async move { http.post_order(&url, Some("key-1"), &order).await })
    });
    let mut sequences = std::collections::HashSet::new();
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        assert_eq!(answer.header("location"), Some("/orders/o-1"));
        assert_eq!(answer.json()["id"], "o-1");
        sequences.insert(answer.json()["sequence"].as_u64().unwrap());
    }
    assert_eq!(
        sequences.len(),
        1,
        "every answer names the same stored order"
    );
    assert_eq!(stored(&natty, "orders.o-1.created").await, 1);

    // The same key with another order: 422, nothing stored, on either node.
    for (node, other) in [
        (&a, json!({"id": "o-2", "item": "tea", "quantity": 2})),
        (&b, json!({"id": "o-1", "item": "tea", "quantity": 3})),
    ] {
        let answer = http
            .post_order(&node.url("/orders"), Some("key-1"), &other)
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{answer:?}"
        );
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(
            answer.json()["error"],
            "idempotency-key reused with a different request"
        );
        assert_eq!(answer.header("location"), None);
    }
    // A repeat of the first request still gets the first answer.
    let again = http
        .post_order(&b.url("/orders"), Some("key-1"), &order)
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(
        again.json()["sequence"].as_u64(),
        sequences.iter().next().copied()
    );
    assert_eq!(stored(&natty, ">").await, 1, "one order in all");
}

/// `GET /orders/{id}/lookup` until it answers 200, or fail after `within`.
async fn looked_up(http: &Http, url: &str, within: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = http.get(url).await;
        if answer.status == StatusCode::OK {
            return answer.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no lookup answer in time: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_shared_by_both_nodes_instances_and_survive_one_node_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start().unwrap();
    let a = Service::start("node-a", Some(&server.url()), tmp.path()).await;
    let mut b = Service::start("node-b", Some(&server.url()), tmp.path()).await;
    let http = Http::new();
    let order = json!({"id": "o-1", "item": "tea", "quantity": 2});
    let posted = http.post_order(&a.url("/orders"), None, &order).await;
    assert_eq!(posted.status, StatusCode::ACCEPTED, "{posted:?}");

    // Through node-a's HTTP route, both nodes' service instances answer in turn.
    let mut answered_by = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while answered_by.len() < 2 {
        let answer = looked_up(&http, &a.url("/orders/o-1/lookup"), Duration::from_secs(20)).await;
        assert_eq!(answer["order"]["item"], "tea");
        answered_by.insert(answer["answered_by"].as_str().unwrap().to_owned());
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {answered_by:?} answered"
        );
    }

    // SIGKILL node-b: its instance leaves with its connection, node-a's answers every lookup.
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    for _ in 0..20 {
        let answer = http.get(&a.url("/orders/o-1/lookup")).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(answer.json()["answered_by"], "node-a");
    }

    // The service's own refusals keep their status in natty-axum's JSON shape.
    let missing = http.get(&a.url("/orders/o-9/lookup")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{missing:?}");
    assert_eq!(missing.json()["detail"], r#"no order "o-9""#);
    let bad = http.get(&a.url("/orders/o%204/lookup")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{bad:?}");
}
