//! The consumer side: a natty-tower stack that handles orders and writes their status.

use std::time::Duration;

use natty::{
    Bucket, CancellationToken, ConsumeConfig, ConsumeError, ConsumeSummary, Consumer,
    ConsumerOptions, Publisher,
};
use natty_tower::error::BoxError;
use natty_tower::json::JsonMessage;
use natty_tower::ServiceBuilderExt;
use tower::{service_fn, ServiceBuilder};

use crate::app::{Order, OrderStatus};

/// How long the server waits for an ack before redelivering; the in-progress layer keeps slow
/// orders from being redelivered mid-work.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// Deliveries before an order that keeps failing goes to [`DEAD_LETTER_SUBJECT`].
const MAX_DELIVER: i64 = 5;

/// The stream dead letters are kept in: a separate one, since dead letters inside `ORDERS`
/// would be stored next to the orders (and, without a filter, delivered back to the handler).
pub(crate) const DEAD_LETTER_STREAM: &str = "ORDERS_DEAD";

/// Where orders that keep failing (or cannot be handled) go.
pub(crate) const DEAD_LETTER_SUBJECT: &str = "dead.orders";

/// The durable `order-handler` (shared by every node) on `orders.*.created`.
pub(crate) fn config() -> ConsumeConfig {
    ConsumeConfig::new("ORDERS", "order-handler")
        .filter_subjects(["orders.*.created"])
        .consumer_options(
            ConsumerOptions::default()
                .ack_wait(ACK_WAIT)
                .max_deliver(MAX_DELIVER),
        )
        .concurrency(4)
}

/// Handle the orders `consumer` delivers until `shutdown`, writing each one's status into
/// `statuses` and dead letters through `dead_letters`. Every natty-tower layer is here: tracing,
/// error reports, ack/nak, dead letters, in-progress heartbeats, in-process retries, panic
/// catching and JSON decoding.
pub(crate) async fn run(
    consumer: Consumer,
    statuses: Bucket,
    dead_letters: Publisher,
    node: String,
    shutdown: CancellationToken,
) -> Result<ConsumeSummary, ConsumeError> {
    let stack = ServiceBuilder::new()
        .trace_messages()
        .report_errors()
        .ack_messages()
        .dead_letter(dead_letters, DEAD_LETTER_SUBJECT) // after the consumer's MAX_DELIVER
        .in_progress() // every half the consumer's ACK_WAIT
        .retry_messages(3)
        .catch_panic()
        .decode_json::<Order>()
        .service(service_fn(move |order: JsonMessage<Order>| {
            let (statuses, node) = (statuses.clone(), node.clone());
            async move {
                let order = order.payload;
                let status = OrderStatus {
                    status: "accepted".into(),
                    id: order.id,
                    item: order.item,
                    quantity: order.quantity,
                    handled_by: node,
                };
                statuses
                    .put(&status.id, serde_json::to_vec(&status)?)
                    .await?;
                Ok::<_, BoxError>(())
            }
        }));
    consumer.serve(shutdown, stack).await
}
