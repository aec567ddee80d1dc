//! The natty demo: an axum order service.
//!
//! `POST /orders` publishes an order to JetStream (its `Idempotency-Key` becomes the
//! `Nats-Msg-Id`, so a retried request is stored once), a natty-tower consumer in the same
//! process handles it and writes its status to KV, `GET /orders/{id}` reads that status,
//! `GET /orders/{id}/lookup` asks the `order-lookup` NATS service for it (every node runs an
//! instance; natty-axum's `Requester` calls whichever answers), `POST /admin/reindex` runs on
//! the elected leader only, and `/health/{live,ready,leader}`
//! report health. Without `NATS_URL` it starts its own nats-server through natty-testkit.
//!
//! - `order-service` (the `scripts/demo` default): run two nodes in this process, send real
//!   HTTP requests to them, print the answers and exit; non-zero if an answer is wrong.
//! - `order-service --serve [--addr 127.0.0.1:3000] [--node node-1] [--peer NAME=URL]...`:
//!   serve until Ctrl-C or SIGTERM, then stop cleanly (exit status 0); peers are other
//!   nodes' base URLs, for leader redirects.
//!
//! Logs go to stderr; `RUST_LOG` picks what (`info` by default, `natty_axum=trace` shows
//! every refusal).

mod app;
mod client;
mod demo;
mod lookup;
mod node;
mod server;
mod worker;

use std::io::ErrorKind;
use std::process::ExitCode;
use std::time::Duration;

use natty::Config;
use node::{Error, Node};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

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

/// Log to stderr, filtered by `RUST_LOG` (`target=level` pairs; `info` when unset).
fn install_tracing() {
    let default = Targets::new().with_default(tracing::Level::INFO);
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(value) => match value.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(err) => (default, Some(format!("RUST_LOG={value:?} ignored: {err}"))),
        },
        Err(_) => (default, None),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    if let Some(bad) = bad {
        tracing::warn!("{bad}");
    }
}

/// An error and its causes as one sentence: `a: b: c`.
fn sentence(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Some errors repeat their source in their own text; say it once.
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

async fn bind(addr: &str) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| match err.kind() {
            ErrorKind::AddrInUse => format!("address {addr} is in use").into(),
            ErrorKind::PermissionDenied => format!("no permission to listen on {addr}").into(),
            _ => format!("cannot listen on {addr}: {err}").into(),
        })
}

fn main() -> ExitCode {
    install_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("order-service: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("order-service: {}", sentence(&*err));
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
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
        let listener = bind(&args.addr).await?;
        let node = Node::start(&args.node, config, listener, &args.peers).await?;
        println!(
            "{} serving on {} until Ctrl-C or SIGTERM; try:\n  curl -i -X POST {} -H 'Idempotency-Key: o-1' \
             -H 'content-type: application/json' -d '{{\"id\":\"o-1\",\"item\":\"tea\",\"quantity\":2}}'\n  \
             curl -i {}\n  curl -i {}\n  curl -i -X POST {}\n  curl -i {}",
            node.name,
            node.url(""),
            node.url("/orders"),
            node.url("/orders/o-1"),
            node.url("/orders/o-1/lookup"),
            node.url("/admin/reindex"),
            node.url("/health/leader"),
        );
        return node.serve_until_signalled().await;
    }
    tokio::time::timeout(DEMO_DEADLINE, demo::run(config))
        .await
        .map_err(|_| format!("demo did not finish within {DEMO_DEADLINE:?}"))?
}
