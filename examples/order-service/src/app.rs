//! The HTTP side: routes, handlers and the order types they exchange.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use natty::requester::Request;
use natty_axum::extract::{Json, Path};
use natty_axum::leader::{LeaderOnlyLayer, RequireLeader};
use natty_axum::rejection::{KvRejection, PublishRejection, RequestRejection};
use natty_axum::{
    fallback, health, subject, AckedPublisher, IdempotencyKey, Kv, NattyState, Requester,
};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;

use crate::lookup::{Lookup, LOOKUP_SUBJECT};

/// A request (headers read, body, handler, answer) gets this long; then 408. Publishing and
/// KV calls have their own, shorter bounds, so this catches slow bodies.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where orders are published: `orders.{id}.created`.
pub(crate) const ORDER_SUBJECTS: &str = "orders.>";
/// The bucket the consumer writes order statuses to.
pub(crate) const STATUS_BUCKET: &str = "order_status";
/// The bucket the leader writes its index to.
pub(crate) const INDEX_BUCKET: &str = "order_index";

/// A new order, as posted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) id: String,
    pub(crate) item: String,
    pub(crate) quantity: u32,
}

/// An order's status, as the consumer stores it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct OrderStatus {
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) item: String,
    pub(crate) quantity: u32,
    pub(crate) handled_by: String,
}

pub(crate) fn router(state: NattyState) -> Router {
    let admin = Router::new()
        .route("/admin/reindex", post(reindex))
        .route_layer(LeaderOnlyLayer::new(state.clone()));
    Router::new()
        .route("/orders", post(create_order))
        .route("/orders/{id}", get(order_status))
        .route("/orders/{id}/lookup", get(look_up))
        .merge(admin)
        .nest("/health", health::router())
        .fallback(fallback::not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        // Larger bodies are refused with 413 before the handler runs.
        .layer(DefaultBodyLimit::max(state.max_payload()))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(fallback::timed_out))
                .timeout(REQUEST_TIMEOUT),
        )
        .with_state(state)
}

/// `POST /orders`: publish the order; a repeated `Idempotency-Key` is stored once, and one
/// reused for another order is refused with 422. The id must be usable in the subject and as
/// the status key, or the order could never be read back.
async fn create_order(
    publisher: AckedPublisher,
    key: Option<IdempotencyKey>,
    Json(order): Json<Order>,
) -> Result<Response, PublishRejection> {
    let subject = format!("orders.{}.created", subject::key_token(&order.id)?);
    let headers = key.map(|key| key.to_headers()).unwrap_or_default();
    let ack = publisher
        .publish_json_acked_with_headers(&subject, headers, &order)
        .await?;
    let body = serde_json::json!({
        "id": order.id,
        "stream": ack.stream,
        "sequence": ack.sequence,
        "duplicate": ack.duplicate,
    });
    // A key token may hold `/`, which would split the path segment: send it encoded (axum's
    // `Path` decodes it back).
    let location = format!("/orders/{}", order.id.replace('/', "%2F"));
    Ok((StatusCode::ACCEPTED, [(LOCATION, location)], Json(body)).into_response())
}

/// `GET /orders/{id}`: the status the consumer wrote, 404 until it has.
async fn order_status(kv: Kv, Path(id): Path<String>) -> Result<Json<OrderStatus>, KvRejection> {
    let id = subject::key_token(&id)?;
    Ok(Json(kv.bucket(STATUS_BUCKET)?.get_json(id).await?))
}

/// `GET /orders/{id}/lookup`: ask the `order-lookup` service (any node's instance) for the
/// status. Its 404 and 400 answers keep their status; no instance is 503, a slow one 504.
async fn look_up(
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, RequestRejection> {
    let payload = serde_json::to_vec(&Lookup { id }).expect("a string always serialises");
    // A lookup changes nothing, so it may be tried again after no responders or a timeout.
    let lookup = Request::new(LOOKUP_SUBJECT, payload).idempotent();
    let answer = requester.request(lookup).await?;
    // The service answers JSON (`LookedUp`): pass it on as it came.
    Ok(([(CONTENT_TYPE, "application/json")], answer.into_payload()).into_response())
}

/// `POST /admin/reindex`, leader only: count the orders by status and store the index under
/// the leader's fencing token.
async fn reindex(leader: RequireLeader, kv: Kv) -> Result<Json<serde_json::Value>, KvRejection> {
    let statuses = kv.bucket(STATUS_BUCKET)?;
    let mut orders = 0;
    for id in statuses.keys().await? {
        let status: OrderStatus = statuses.get_json(&id).await?;
        orders += usize::from(status.status == "accepted");
    }
    let index = serde_json::json!({
        "accepted_orders": orders,
        "fencing_token": leader.fencing_token(),
    });
    kv.bucket(INDEX_BUCKET)?.put_json("summary", &index).await?;
    Ok(Json(index))
}
