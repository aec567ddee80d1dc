//! The natty demo: an axum order service.
//!
//! `POST /orders` publishes an order to JetStream (its `Idempotency-Key` becomes the
//! `Nats-Msg-Id`, so a retried request is stored once), a natty-tower consumer in the same
//! process handles it and writes its status to KV, `GET /orders/{id}` reads that status,
//! `POST /admin/reindex` runs on the elected leader only, and `/health/{live,ready,leader}`
//! report health. Without `NATS_URL` it starts its own nats-server through natty-testkit.
//!
//! - `order-service` (the `scripts/demo` default): run two nodes in this process, send real
//!   HTTP requests to them, print the answers and exit; non-zero if an answer is wrong.
//! - `order-service --serve [--addr 127.0.0.1:3000] [--node node-1] [--peer NAME=URL]...`:
//!   serve until Ctrl-C; peers are other nodes' base URLs, for leader redirects.

mod app;
mod client;
mod demo;
mod node;
mod worker;

use std::time::Duration;

use natty::Config;
use node::{Error, Node};

/// The whole one-shot demo must end within this, whatever happens.
const DEMO_DEADLINE: Duration = Duration::from_secs(60);

struct Args {
    serve: bool,
    addr: String,
    node: String,
    peers: Vec<(String, String)>,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        serve: false,
        addr: "127.0.0.1:3000".into(),
        node: "node-1".into(),
        peers: Vec::new(),
    };
    let mut input = std::env::args().skip(1);
    while let Some(arg) = input.next() {
        let mut value = |name: &str| input.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--serve" => args.serve = true,
            "--addr" => args.addr = value("--addr")?,
            "--node" => args.node = value("--node")?,
            "--peer" => {
                let peer = value("--peer")?;
                let (name, url) = peer
                    .split_once('=')
                    .ok_or("--peer takes NAME=URL, such as node-2=http://127.0.0.1:3001")?;
                args.peers.push((name.into(), url.into()));
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = parse_args()?;
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
    if args.serve {
        let listener = tokio::net::TcpListener::bind(&args.addr).await?;
        let node = Node::start(&args.node, config, listener, &args.peers).await?;
        println!(
            "{} serving on {} until Ctrl-C; try:\n  curl -i -X POST {} -H 'Idempotency-Key: o-1' \
             -H 'content-type: application/json' -d '{{\"id\":\"o-1\",\"item\":\"tea\",\"quantity\":2}}'\n  \
             curl -i {}\n  curl -i -X POST {}\n  curl -i {}",
            node.name,
            node.url(""),
            node.url("/orders"),
            node.url("/orders/o-1"),
            node.url("/admin/reindex"),
            node.url("/health/leader"),
        );
        return node.serve_until_ctrl_c().await;
    }
    tokio::time::timeout(DEMO_DEADLINE, demo::run(config))
        .await
        .map_err(|_| format!("demo did not finish within {DEMO_DEADLINE:?}"))?
}
