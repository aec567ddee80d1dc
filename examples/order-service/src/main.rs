//! The natty demo: an order service in one process.
//!
//! Orders are published with their idempotency key as `Nats-Msg-Id` (so a retried request is
//! stored once), handled by a durable consumer, and their status is written to a KV bucket and
//! read back. Without `NATS_URL` it starts its own nats-server through natty-testkit.
//!
//! `cargo run -p order-service` runs once and prints a summary; `-- --serve` keeps consuming
//! until Ctrl-C.

use std::time::Duration;

use natty::{CancellationToken, Config, ConsumeConfig, Message, Natty};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: String,
    item: String,
    quantity: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().any(|arg| arg == "--serve");
    // Keep the server alive for the whole run; dropping it stops it and removes its files.
    let (_server, config) = match std::env::var("NATS_URL") {
        Ok(_) => (None, Config::from_env()),
        Err(_) => {
            let server = natty_testkit::Server::start()?;
            println!(
                "started nats-server {} at {}",
                natty_testkit::server_version()?,
                server.url()
            );
            let config = Config::new([server.url()]);
            (Some(server), config)
        }
    };
    let natty = Natty::connect(config.name("order-service")).await?;
    natty.create_stream("ORDERS", ["orders.>"]).await?;

    let orders = [("o-1", "tea", 2), ("o-2", "scones", 6), ("o-3", "jam", 1)];
    for (id, item, quantity) in orders {
        let order = Order {
            id: id.into(),
            item: item.into(),
            quantity,
        };
        let mut headers = natty::async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        natty
            .publish_with_headers("orders.created", headers, serde_json::to_vec(&order)?)
            .await?;
    }
    // A client retrying o-1 with the same idempotency key: the stream keeps one copy.
    let mut retry = natty::async_nats::HeaderMap::new();
    retry.insert("Nats-Msg-Id", "o-1");
    natty
        .publish_with_headers(
            "orders.created",
            retry,
            serde_json::to_vec(&Order {
                id: "o-1".into(),
                item: "tea".into(),
                quantity: 2,
            })?,
        )
        .await?;
    natty.flush().await;
    println!("published {} orders (+1 retried duplicate)", orders.len());

    let shutdown = CancellationToken::new();
    let handler = {
        let natty = natty.clone();
        let shutdown = shutdown.clone();
        move |msg: Message| {
            let natty = natty.clone();
            let shutdown = shutdown.clone();
            async move {
                let order: Order = match serde_json::from_slice(msg.payload()) {
                    Ok(order) => order,
                    Err(err) => {
                        msg.term().await?; // bad input never gets better: no redelivery
                        return Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
                    }
                };
                let status = format!("accepted: {} x {}", order.quantity, order.item);
                natty.put("order_status", &order.id, status.into()).await?;
                msg.ack().await?;
                if !serve && msg.info().pending == 0 {
                    shutdown.cancel();
                }
                Ok(())
            }
        }
    };
    let stop_on_ctrl_c = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop_on_ctrl_c.cancel();
    });
    if !serve {
        // A one-shot demo must end even if something goes wrong.
        let deadline = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            deadline.cancel();
        });
    }
    let summary = natty
        .consume(
            ConsumeConfig::new("ORDERS", "order-handler").concurrency(4),
            shutdown,
            handler,
        )
        .await?;
    println!(
        "consumer handled {} messages ({} failed)",
        summary.handled, summary.failed
    );

    let mut keys = natty.keys("order_status").await?;
    keys.sort();
    for id in &keys {
        let status = natty.get("order_status", id).await?.unwrap_or_default();
        println!("  {id}: {}", String::from_utf8_lossy(&status));
    }
    natty.shutdown().await;
    if keys.len() != orders.len() || summary.handled != orders.len() as u64 {
        return Err(format!("expected {} orders, saw {}", orders.len(), keys.len()).into());
    }
    println!(
        "demo ok: {} orders published, consumed once each, status kept in KV",
        keys.len()
    );
    Ok(())
}
