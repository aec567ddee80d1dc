//! The consumer side: a natty-tower stack that handles orders and writes their status.

use natty::{CancellationToken, ConsumeConfig, ConsumeError, ConsumeSummary, Natty};
use natty_tower::error::BoxError;
use natty_tower::json::Json;
use natty_tower::ServiceBuilderExt;
use tower::{service_fn, ServiceBuilder};

use crate::app::{Order, OrderStatus, STATUS_BUCKET};

/// Handle `orders.*.created` with the durable `order-handler` (shared by every node) until
/// `shutdown`.
pub(crate) async fn run(
    natty: Natty,
    node: String,
    shutdown: CancellationToken,
) -> Result<ConsumeSummary, ConsumeError> {
    let writer = natty.clone();
    let stack = ServiceBuilder::new()
        .trace_messages()
        .ack_messages()
        .catch_panic()
        .decode_json::<Order>()
        .service(service_fn(move |order: Json<Order>| {
            let (natty, node) = (writer.clone(), node.clone());
            async move {
                let order = order.payload;
                let status = OrderStatus {
                    status: "accepted".into(),
                    id: order.id,
                    item: order.item,
                    quantity: order.quantity,
                    handled_by: node,
                };
                natty
                    .put(
                        STATUS_BUCKET,
                        &status.id,
                        serde_json::to_vec(&status)?.into(),
                    )
                    .await?;
                Ok::<_, BoxError>(())
            }
        }));
    let config = ConsumeConfig::new("ORDERS", "order-handler")
        .filter_subjects(["orders.*.created"])
        .concurrency(4);
    natty.serve(config, shutdown, stack).await
}
