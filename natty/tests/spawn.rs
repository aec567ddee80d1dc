//! Every serve future is `Send + 'static`: it compiles inside `tokio::spawn`, with the handle it
//! came from dropped, and runs to its end against a real server.

use std::time::Duration;

use natty::group::{GroupErrorKind, MemberConfig};
use natty::{CancellationToken, ConsumeConfig, ConsumeSummary, Message, Natty};
use natty_testkit::Server;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

mod common;
use common::{connect, DEADLINE};

type Run = JoinHandle<Result<ConsumeSummary, natty::ConsumeError>>;

/// A handler that reports each message's durable on `seen` and succeeds.
fn reporting(
    durable: &'static str,
    seen: &mpsc::UnboundedSender<&'static str>,
) -> impl FnMut(Message) -> std::future::Ready<Result<(), std::io::Error>> + Send + 'static {
    let seen = seen.clone();
    move |_| {
        let _ = seen.send(durable);
        std::future::ready(Ok(()))
    }
}

/// A server and a client, with the stream `SPAWN` on `spawn.>`.
async fn start() -> (Server, Natty) {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    natty
        .stream("SPAWN")
        .unwrap()
        .create(["spawn.>"])
        .await
        .unwrap();
    (server, natty)
}

#[tokio::test]
async fn consume_and_serve_futures_spawn_and_outlive_their_handles() {
    let (_server, natty) = start().await;
    let shutdown = CancellationToken::new();
    let (seen, mut seen_rx) = mpsc::unbounded_channel();
    let config = |durable: &str| ConsumeConfig::new("SPAWN", durable);

    let mut runs: Vec<(&str, Run)> = Vec::new();
    {
        let natty = natty.clone();
        runs.push((
            "natty-serve",
            tokio::spawn(natty.serve(
                config("natty-serve"),
                shutdown.clone(),
                tower::service_fn(reporting("natty-serve", &seen)),
            )),
        ));
        runs.push((
            "natty-consume",
            tokio::spawn(natty.consume(
                config("natty-consume"),
                shutdown.clone(),
                reporting("natty-consume", &seen),
            )),
        ));
    }
    for durable in ["consumer-serve", "consumer-consume"] {
        let consumer = natty.consumer(config(durable)).await.unwrap();
        let run = if durable == "consumer-serve" {
            tokio::spawn(consumer.serve(
                shutdown.clone(),
                tower::service_fn(reporting(durable, &seen)),
            ))
        } else {
            tokio::spawn(consumer.consume(shutdown.clone(), reporting(durable, &seen)))
        };
        drop(consumer);
        runs.push((durable, run));
    }

    natty.publish("spawn.one", "1").await.unwrap();
    natty.flush().await;
    let mut handled = Vec::new();
    while handled.len() < runs.len() {
        let durable = timeout(DEADLINE, seen_rx.recv())
            .await
            .expect("every run handles the message in time")
            .expect("a run is alive");
        handled.push(durable);
    }
    shutdown.cancel();
    for (durable, run) in runs {
        let summary = timeout(DEADLINE, run)
            .await
            .expect("stops in time")
            .expect("no panic")
            .unwrap_or_else(|err| panic!("{durable}: {err:#}"));
        assert_eq!(summary.handled, 1, "{durable}: {summary:?}");
        assert!(handled.contains(&durable), "{durable} handled {handled:?}");
    }
}

#[tokio::test]
async fn group_serve_futures_spawn_and_outlive_their_handles() {
    let (_server, natty) = start().await;
    let service = || tower::service_fn(|_: Message| async { Ok::<_, std::io::Error>(()) });

    let group = natty.static_group("SPAWN", "missing").unwrap();
    let static_run =
        tokio::spawn(group.serve(MemberConfig::new("a"), CancellationToken::new(), service()));
    drop(group);
    let group = natty.elastic_group("SPAWN", "missing").unwrap();
    let elastic_run =
        tokio::spawn(group.serve(MemberConfig::new("a"), CancellationToken::new(), service()));
    drop(group);

    // No such group: each run gets as far as asking the server, and answers.
    for run in [static_run, elastic_run] {
        let err = timeout(Duration::from_secs(30), run)
            .await
            .expect("answers in time")
            .expect("no panic")
            .expect_err("the group does not exist");
        assert!(
            matches!(
                err.kind(),
                GroupErrorKind::NotFound | GroupErrorKind::Unsupported
            ),
            "{err:#}"
        );
    }
}
