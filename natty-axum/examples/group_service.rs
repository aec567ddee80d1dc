//! A partitioned consumer group behind axum: every instance serves member `m1` of the
//! `billing` group (orders of one customer in order, customers in parallel), publishes orders
//! over HTTP, and offers group admin routes that only the elected leader answers (followers
//! get 503 with `Retry-After`; unknown paths stay 404).
//!
//! Runs against `NATS_URL`, or a nats-server of its own through natty-testkit, sends a few
//! requests to its own router and exits:
//!
//! ```text
//! cargo run -p natty-axum --example group_service
//! ```

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use natty::group::{MemberConfig, Partitioning, StaticGroupConfig};
use natty::{CancellationToken, Config, ElectionConfig, Message, Natty};
use natty_axum::leader::{LeaderOnlyLayer, RequireLeader};
use natty_axum::NattyState;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn router(state: NattyState) -> Router {
    let admin = Router::new()
        .route("/admin/groups", get(list_groups))
        .route(
            "/admin/groups/{group}/members/{member}/step-down",
            post(step_down),
        )
        .route_layer(LeaderOnlyLayer::new(state.clone()));
    Router::new()
        .route("/orders/{customer}", post(create_order))
        .route("/groups/{group}/members/{member}", get(partitions))
        .merge(admin)
        .with_state(state)
}

/// `POST /orders/{customer}`: publish the body to `orders.<customer>`.
async fn create_order(
    State(state): State<NattyState>,
    Path(customer): Path<String>,
    body: String,
) -> Result<StatusCode, (StatusCode, String)> {
    let subject = format!(
        "orders.{}",
        natty_axum::subject::token(&customer).map_err(bad)?
    );
    state
        .publisher()
        .publish_acked(&subject, body)
        .await
        .map_err(bad)?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /groups/{group}/members/{member}`: the member's partitions now.
async fn partitions(
    State(state): State<NattyState>,
    Path((group, member)): Path<(String, String)>,
) -> Result<Json<Vec<u32>>, (StatusCode, String)> {
    let group = state.natty().static_group("ORDERS", &group).map_err(bad)?;
    let partitions = group.member_partitions(&member).await;
    partitions
        .map(Json)
        .map_err(|err| (StatusCode::NOT_FOUND, err.to_string()))
}

/// `GET /admin/groups`, leader only.
async fn list_groups(
    _leader: RequireLeader,
    State(state): State<NattyState>,
) -> Result<Json<Vec<String>>, (StatusCode, String)> {
    state
        .natty()
        .stream("ORDERS")
        .map_err(bad)?
        .static_groups()
        .await
        .map(Json)
        .map_err(bad)
}

/// `POST /admin/groups/{group}/members/{member}/step-down`, leader only: the member's pinned
/// instance steps down and a standby takes over.
async fn step_down(
    _leader: RequireLeader,
    State(state): State<NattyState>,
    Path((group, member)): Path<(String, String)>,
) -> Result<StatusCode, (StatusCode, String)> {
    let group = state.natty().static_group("ORDERS", &group).map_err(bad)?;
    let stepped = group.step_down(&member).await;
    stepped.map(|()| StatusCode::NO_CONTENT).map_err(bad)
}

/// Send one request to the router and print the answer.
async fn call(app: &Router, method: &str, uri: &str, body: &str) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_owned()))
        .expect("a valid request");
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("axum routers are infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    println!(
        "{method} {uri} -> {status} {}",
        String::from_utf8_lossy(&body)
    );
    status
}

fn bad(err: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, err.to_string())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (_server, config) = match std::env::var("NATS_URL") {
        Ok(_) => (None, Config::from_env()),
        Err(_) => {
            let server = natty_testkit::Server::start()?;
            let config = Config::new([server.url()]);
            (Some(server), config)
        }
    };
    let natty = Natty::connect(config).await?;
    natty
        .stream("ORDERS")?
        .create_partitioned(&Partitioning::new("orders.*", 4))
        .await?;
    let group = StaticGroupConfig::with_members(4, ["m1", "m2"]);
    natty
        .static_group("ORDERS", "billing")?
        .create(&group)
        .await?;
    let leadership = natty
        .elect(ElectionConfig::new("group_service", "leader", "node-1"))
        .await?;
    let state = NattyState::builder(natty.clone())
        .allow_subjects("orders.*")
        .leadership(leadership.clone())
        .build()?;

    // This instance serves member m1 (m2's partitions wait for an m2 instance).
    let shutdown = CancellationToken::new();
    let (handled_tx, mut handled_rx) = tokio::sync::mpsc::unbounded_channel();
    let member = {
        let (natty, shutdown) = (natty.clone(), shutdown.clone());
        tokio::spawn(async move {
            let handler = tower::service_fn(move |msg: Message| {
                let handled = handled_tx.clone();
                async move {
                    let _ = handled.send(msg.subject().to_string());
                    Ok::<_, std::convert::Infallible>(())
                }
            });
            let billing = natty.static_group("ORDERS", "billing")?;
            billing
                .serve(MemberConfig::new("m1"), shutdown, handler)
                .await
        })
    };

    let app = router(state);
    tokio::time::timeout(Duration::from_secs(10), leadership.wait_leader()).await??;
    call(&app, "GET", "/groups/billing/members/m1", "").await;
    call(&app, "GET", "/admin/groups", "").await;
    for customer in ["alice", "bob", "carol", "dave"] {
        call(
            &app,
            "POST",
            &format!("/orders/{customer}"),
            "{\"item\":\"tea\"}",
        )
        .await;
    }
    natty.flush().await;
    // m1 owns partitions 0 and 1: whichever customers hash there arrive here.
    while let Ok(Some(subject)) =
        tokio::time::timeout(Duration::from_secs(2), handled_rx.recv()).await
    {
        println!("member m1 handled {subject}");
    }
    call(
        &app,
        "POST",
        "/admin/groups/billing/members/m1/step-down",
        "",
    )
    .await;

    shutdown.cancel();
    member.await??;
    leadership.stop().await;
    Ok(())
}
