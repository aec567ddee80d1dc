//! The request-reply side: `order-lookup`, a natty service answering `order-lookup.get` with an
//! order's status. Every node runs an instance in the same queue group, so requests are spread
//! over them; the HTTP route `GET /orders/{id}/lookup` calls it through natty-axum's
//! `Requester`, from whichever node took the HTTP request.

use std::time::Duration;

use natty::error::KvErrorKind;
use natty::service::{
    EndpointConfig, Request, Response, ServeSummary, ServiceConfig, ServiceError,
};
use natty::{Bucket, CancellationToken, Natty};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tower::ServiceBuilder;

use crate::app::OrderStatus;
use crate::node::Error;

/// The one endpoint's subject: outside `orders.>`, so the ORDERS stream does not store the
/// requests (a stream would also answer them with its publish ack).
pub(crate) const LOOKUP_SUBJECT: &str = "order-lookup.get";

/// Lookups an instance runs at once; more are refused with a 503, for another instance.
const LOOKUPS_AT_ONCE: usize = 32;

/// A lookup answers within this or gets a 504, before the caller's own deadline.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What a lookup asks: `{"id": "o-1"}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Lookup {
    pub(crate) id: String,
}

/// What it answers: the status, and which node's instance answered.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LookedUp {
    pub(crate) order: OrderStatus,
    pub(crate) answered_by: String,
}

/// Start this node's instance of `order-lookup`; it serves until the token is cancelled.
pub(crate) async fn start(
    natty: &Natty,
    statuses: Bucket,
    node: &str,
) -> Result<(CancellationToken, JoinHandle<ServeSummary>), Error> {
    let config = ServiceConfig::new("order-lookup", "1.0.0")
        .description("order statuses by id")
        .metadata([("node", node)]);
    let mut service = natty.service(config).await?;
    let node = node.to_owned();
    let handler = ServiceBuilder::new()
        // Past LOOKUPS_AT_ONCE lookups an instance answers 503 at once; a slow lookup 504.
        .load_shed()
        .concurrency_limit(LOOKUPS_AT_ONCE)
        .timeout(LOOKUP_TIMEOUT)
        .service_fn(move |request: Request| {
            let (statuses, node) = (statuses.clone(), node.clone());
            async move { look_up(&statuses, &node, &request).await }
        });
    service
        .endpoint(EndpointConfig::new("get").subject(LOOKUP_SUBJECT), handler)
        .await?;
    let shutdown = CancellationToken::new();
    Ok((shutdown.clone(), tokio::spawn(service.run(shutdown))))
}

async fn look_up(
    statuses: &Bucket,
    node: &str,
    request: &Request,
) -> Result<Response, ServiceError> {
    let Lookup { id } = request.json()?;
    let stored = match statuses.get(&id).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return Err(ServiceError::new(404, format!("no order {id:?}"))),
        Err(err) if err.kind() == KvErrorKind::InvalidKey => {
            return Err(ServiceError::new(
                400,
                format!("{id:?} cannot be an order id"),
            ))
        }
        Err(err) => {
            return Err(ServiceError::new(
                503,
                format!("statuses unavailable: {err}"),
            ))
        }
    };
    let order: OrderStatus = serde_json::from_slice(&stored)
        .map_err(|err| ServiceError::new(500, format!("a stored status is not readable: {err}")))?;
    Response::json(&LookedUp {
        order,
        answered_by: node.to_owned(),
    })
}
