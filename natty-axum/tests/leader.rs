//! Two instances of one app share an election over a real nats-server; only the leader
//! serves the leader-only routes, the follower answers 503 (or 307) naming the leader, and
//! when the leader stops the other takes over.

mod common;

use std::time::Duration;

use axum::middleware::from_extractor_with_state;
use axum::routing::{get, post};
use axum::Router;
use common::{eventually, listener, serve, Http, Served};
use http::StatusCode;
use natty::{Config, ElectionConfig, LeaderState, Leadership, Natty};
use natty_axum::leader::{LeaderOnlyLayer, LeaderStatus, RequireLeader};
use natty_axum::{health, NattyState};
use natty_testkit::{Proxy, Server};
use tokio::net::TcpListener;

/// Behind the layer only: the gate, not this handler, keeps followers out.
async fn reindex(status: LeaderStatus) -> String {
    status
        .fencing_token()
        .map_or("none".into(), |token| token.to_string())
}

/// The extractor used as a handler argument hands over the fencing token.
async fn fence(leader: RequireLeader) -> String {
    leader.fencing_token().to_string()
}

async fn who(status: LeaderStatus) -> String {
    status.leader().unwrap_or("nobody").to_owned()
}

fn app(state: NattyState) -> Router {
    let admin = Router::new()
        .route("/admin/reindex", post(reindex))
        .route_layer(LeaderOnlyLayer::new(state.clone()));
    let jobs = Router::new()
        .route("/jobs/run", post(|| async { "ran" }))
        .route_layer(from_extractor_with_state::<RequireLeader, _>(state.clone()));
    Router::new()
        .route("/who", get(who))
        .route("/fence", post(fence))
        .nest("/api", admin)
        .merge(jobs)
        .nest("/health", health::router())
        .with_state(state)
}

struct Node {
    leadership: Leadership,
    served: Served,
}

async fn elect(server: &Server, node: &str) -> (Natty, Leadership) {
    let natty = Natty::connect(Config::new([server.url()])).await.unwrap();
    let config = ElectionConfig::new("web_leaders", "orders", node).ttl(Duration::from_secs(3));
    let leadership = natty.elect(config).await.unwrap();
    (natty, leadership)
}

async fn start(
    natty: Natty,
    leadership: &Leadership,
    listener: TcpListener,
    urls: &[(&str, String)],
) -> Node {
    let mut state = NattyState::builder(natty).leadership(leadership.clone());
    for (node, url) in urls {
        state = state.node_url(*node, url.clone());
    }
    let served = serve(listener, app(state.build().unwrap()));
    Node {
        leadership: leadership.clone(),
        served,
    }
}

/// Node a leads and node b knows it.
async fn two_nodes(server: &Server, redirect: bool) -> (Node, Node) {
    let (natty_a, leadership_a) = elect(server, "node-a").await;
    tokio::time::timeout(Duration::from_secs(10), leadership_a.wait_leader())
        .await
        .expect("node-a leads within 10 s")
        .unwrap();
    let (natty_b, leadership_b) = elect(server, "node-b").await;
    let mut states = leadership_b.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        states.wait_for(|s| {
            *s == LeaderState::Follower {
                leader: Some("node-a".into()),
            }
        }),
    )
    .await
    .expect("node-b sees node-a lead within 10 s")
    .unwrap();

    let (listener_a, listener_b) = (listener().await, listener().await);
    let urls = if redirect {
        vec![
            (
                "node-a",
                format!("http://{}", listener_a.local_addr().unwrap()),
            ),
            (
                "node-b",
                format!("http://{}", listener_b.local_addr().unwrap()),
            ),
        ]
    } else {
        Vec::new()
    };
    let a = start(natty_a, &leadership_a, listener_a, &urls).await;
    let b = start(natty_b, &leadership_b, listener_b, &urls).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_serves_leader_only_routes_and_the_follower_takes_over() {
    let server = Server::start().unwrap();
    let (a, b) = two_nodes(&server, false).await;
    let http = Http::new();

    let answer = http.post(&a.served.url("/api/admin/reindex"), "").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let token_a: u64 = answer.body.parse().unwrap();
    assert_eq!(Some(token_a), a.leadership.fencing_token());
    assert_eq!(
        http.post(&a.served.url("/jobs/run"), "").await.status,
        StatusCode::OK
    );

    assert_eq!(
        http.post(&a.served.url("/fence"), "").await.body,
        token_a.to_string()
    );

    for path in ["/api/admin/reindex", "/jobs/run", "/fence"] {
        let answer = http.post(&b.served.url(path), "").await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {answer:?}"
        );
        assert_eq!(answer.header("retry-after"), Some("1"), "{path}");
        assert_eq!(answer.header("natty-leader"), Some("node-a"), "{path}");
        let body = answer.json();
        assert_eq!(body["error"], "not the leader");
        assert_eq!(body["leader"], "node-a");
    }
    // A route layer gates matched routes only: unknown paths stay 404 on a follower.
    let answer = http.post(&b.served.url("/api/admin/unknown"), "").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{answer:?}");
    // Routes without the layer answer on both nodes, and both name the same leader.
    assert_eq!(http.get(&b.served.url("/who")).await.body, "node-a");
    assert_eq!(http.get(&a.served.url("/who")).await.body, "node-a");
    let health = http.get(&b.served.url("/health/leader")).await.json();
    assert_eq!(health["state"], "follower");
    assert_eq!(health["leader"], "node-a");
    assert_eq!(health["fencing_token"], serde_json::Value::Null);

    // The leader instance stops: it releases its key and node-b takes over.
    a.leadership.stop().await;
    drop(a);
    let url = b.served.url("/api/admin/reindex");
    let token_b: u64 = eventually(Duration::from_secs(10), "node-b to take over", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer = http.post(&url, "").await;
            (answer.status == StatusCode::OK).then(|| answer.body.parse().unwrap())
        }
    })
    .await;
    assert!(
        token_b > token_a,
        "fencing tokens grow: {token_b} > {token_a}"
    );
    assert_eq!(http.get(&b.served.url("/who")).await.body, "node-b");
    let health = http.get(&b.served.url("/health/leader")).await.json();
    assert_eq!(health["state"], "leader");
    assert_eq!(health["fencing_token"], token_b);
    b.leadership.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_redirects_to_the_leader_when_node_urls_are_registered() {
    let server = Server::start().unwrap();
    let (a, b) = two_nodes(&server, true).await;
    let http = Http::new();

    let answer = http
        .post(&b.served.url("/api/admin/reindex?full=true"), "")
        .await;
    assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT, "{answer:?}");
    assert_eq!(answer.header("natty-leader"), Some("node-a"));
    let location = answer.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        a.served.url("/api/admin/reindex?full=true"),
        "nested prefix kept"
    );

    let followed = http.post(&location, "").await;
    assert_eq!(followed.status, StatusCode::OK, "{followed:?}");
    assert_eq!(
        followed.body.parse::<u64>().ok(),
        a.leadership.fencing_token()
    );

    // The leader never redirects.
    let answer = http.post(&a.served.url("/api/admin/reindex"), "").await;
    assert_eq!(answer.status, StatusCode::OK);

    // Leadership moves: now node-a's answers point at node-b.
    assert!(a.leadership.step_down().await.unwrap());
    b.leadership.wait_leader().await.unwrap();
    let url = a.served.url("/api/admin/reindex");
    let answer = eventually(Duration::from_secs(10), "node-a to name node-b", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer = http.post(&url, "").await;
            (answer.header("natty-leader") == Some("node-b")).then_some(answer)
        }
    })
    .await;
    assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT, "{answer:?}");
    assert_eq!(
        answer.header("location"),
        Some(b.served.url("/api/admin/reindex").as_str())
    );
    a.leadership.stop().await;
    b.leadership.stop().await;
}

/// `natty-leader` names the leader while this node knows who leads, and only then: a follower
/// cut off from NATS no longer knows, and its 503 keeps `Retry-After` but drops the header
/// (the body says `"leader": null`); reconnected, it names the leader again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_names_the_leader_only_while_it_knows_who_leads() {
    let server = Server::start().unwrap();
    let (_natty_a, leadership_a) = elect(&server, "node-a").await;
    tokio::time::timeout(Duration::from_secs(10), leadership_a.wait_leader())
        .await
        .expect("node-a leads within 10 s")
        .unwrap();
    let proxy = Proxy::start(server.addr()).unwrap();
    let natty_b =
        Natty::connect(Config::new([proxy.url()]).request_timeout(Duration::from_secs(1)))
            .await
            .unwrap();
    let config = ElectionConfig::new("web_leaders", "orders", "node-b").ttl(Duration::from_secs(3));
    let leadership_b = natty_b.elect(config).await.unwrap();
    let mut states = leadership_b.subscribe();
    let knows_a = |s: &LeaderState| {
        *s == LeaderState::Follower {
            leader: Some("node-a".into()),
        }
    };
    let wait = Duration::from_secs(30);
    tokio::time::timeout(wait, states.wait_for(knows_a))
        .await
        .expect("node-b sees node-a lead in time")
        .unwrap();
    let b = start(natty_b, &leadership_b, listener().await, &[]).await;
    let (http, url) = (Http::new(), b.served.url("/api/admin/reindex"));
    let answer = http.post(&url, "").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.header("natty-leader"), Some("node-a"));

    proxy.cut();
    tokio::time::timeout(wait, states.wait_for(|s| *s == LeaderState::Unknown))
        .await
        .expect("cut off, node-b no longer knows who leads")
        .unwrap();
    let answer = http.post(&url, "").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.header("natty-leader"), None, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.json()["leader"], serde_json::Value::Null);

    proxy.restore();
    tokio::time::timeout(wait, states.wait_for(knows_a))
        .await
        .expect("reconnected, node-b sees node-a lead again")
        .unwrap();
    let answer = http.post(&url, "").await;
    assert_eq!(answer.header("natty-leader"), Some("node-a"), "{answer:?}");
    leadership_a.stop().await;
    b.leadership.stop().await;
}
