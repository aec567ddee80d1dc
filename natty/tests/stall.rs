//! A leader whose whole process stalls longer than its lease (SIGSTOP, as a VM pause or a
//! blocked host would) never acts as leader once it resumes: nodes are real processes (this
//! binary run again as children), on current-thread and multi-thread runtimes, and every
//! action any of them takes is logged with a `CLOCK_REALTIME` timestamp and its fencing token.
//! Sorted by time, tokens never go backwards and two nodes' actions never interleave.
//!
//! Each node acts through every way natty offers to ask "do I lead?": `is_leader()`, a loop
//! on `Term::is_current()`, a `run_while_leader` task, and `state()`. An action's timestamp is
//! taken *before* the check that allows it, so a check that passes proves the action happened
//! while the node believed it led.
//!
//! `NATTY_STALL_ROUNDS` sets the stalls per runtime flavour (default 3).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use natty::{election, ElectionConfig, LeaderState};
use natty_testkit::{Process, Server};

mod common;
use common::connect_with;

const TTL: Duration = Duration::from_secs(1);
const KEY: &str = "leader";
const BUCKET: &str = "stall";
const PERIOD: Duration = Duration::from_millis(2);
const DEADLINE: Duration = Duration::from_secs(15);

fn main() {
    match std::env::var("NATTY_STALL_NODE") {
        Ok(node) => node_main(&node),
        Err(_) => {
            let rounds = std::env::var("NATTY_STALL_ROUNDS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(3);
            for flavor in ["multi_thread", "current_thread"] {
                stalled_leader_never_acts_after_resuming(flavor, rounds);
            }
            println!("stall: 2 passed, 0 failed");
        }
    }
}

fn realtime_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

// ---------------------------------------------------------------------------------------------
// A node: campaigns, and acts through every way of asking, logging each action to stdout.

fn node_main(node: &str) {
    let flavor = std::env::var("NATTY_STALL_FLAVOR").expect("flavor");
    let url = std::env::var("NATTY_STALL_URL").expect("url");
    let mut runtime = match flavor.as_str() {
        "current_thread" => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        }
    };
    let runtime = runtime.enable_all().build().expect("runtime");
    runtime.block_on(node_run(node.to_owned(), url));
}

/// One line per action: `act <realtime ns> <token> <way>`; `tick <realtime ns>` shows liveness.
fn log(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn act(at: u128, token: u64, way: &str) {
    log(format!("act {at} {token} {way}"));
}

async fn node_run(node: String, url: String) {
    let natty = connect_with(natty::Config::new([url])).await;
    let leadership = natty
        .elect(ElectionConfig::new(BUCKET, KEY, node).ttl(TTL))
        .await
        .expect("node campaigns");

    let asking = leadership.clone();
    tokio::spawn(async move {
        loop {
            let at = realtime_ns();
            if asking.is_leader() {
                if let Some(token) = asking.fencing_token() {
                    act(at, token, "is_leader");
                }
            }
            let at = realtime_ns();
            if let LeaderState::Leader { term } = asking.state() {
                act(at, term, "state");
            }
            tokio::time::sleep(PERIOD).await;
        }
    });

    let looping = leadership.clone();
    tokio::spawn(async move {
        while let Ok(term) = looping.wait_leader().await {
            loop {
                let at = realtime_ns();
                if !term.is_current() {
                    break;
                }
                act(at, term.fencing_token(), "is_current");
                tokio::time::sleep(PERIOD).await;
            }
        }
    });

    tokio::spawn(election::run_while_leader(
        leadership.clone(),
        |term| async move {
            loop {
                act(realtime_ns(), term.fencing_token(), "run_while_leader");
                tokio::time::sleep(PERIOD).await;
            }
        },
    ));

    tokio::spawn(async {
        loop {
            log(format!("tick {}", realtime_ns()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    // The parent closes stdin to stop the node.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).unwrap_or(0) > 0 {}
    })
    .await;
    leadership.stop().await;
    log("done".to_owned());
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------------
// The test: three nodes; the leader is stopped longer than its lease, again and again.

#[derive(Debug, Clone)]
struct Action {
    at: u128,
    token: u64,
    node: usize,
    way: String,
}

#[derive(Default)]
struct Seen {
    actions: Vec<Action>,
    last_tick: HashMap<usize, u128>,
}

struct Node {
    process: Process,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn stalled_leader_never_acts_after_resuming(flavor: &str, rounds: usize) {
    let server = Server::start().expect("server");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let names = ["node-0", "node-1", "node-2"];
    let mut nodes: Vec<Node> = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let mut process = Process::spawn(
                Command::new(std::env::current_exe().expect("test binary"))
                    .env("NATTY_STALL_NODE", name)
                    .env("NATTY_STALL_FLAVOR", flavor)
                    .env("NATTY_STALL_URL", server.url())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped()),
            )
            .expect("node starts");
            let stdout = process.take_stdout().expect("piped stdout");
            let seen = Arc::clone(&seen);
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let mut parts = line.split(' ');
                    let mut seen = seen.lock().unwrap();
                    match (parts.next(), parts.next(), parts.next(), parts.next()) {
                        (Some("act"), Some(at), Some(token), Some(way)) => {
                            seen.actions.push(Action {
                                at: at.parse().unwrap(),
                                token: token.parse().unwrap(),
                                node: index,
                                way: way.to_owned(),
                            })
                        }
                        (Some("tick"), Some(at), _, _) => {
                            seen.last_tick.insert(index, at.parse().unwrap());
                        }
                        _ => {}
                    }
                }
            });
            Node {
                process,
                reader: Some(reader),
            }
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(async_nats::connect(server.url()))
        .expect("plain client");
    let jetstream = {
        let _entered = runtime.enter();
        async_nats::jetstream::new(client)
    };
    let leader_now = || -> Option<usize> {
        runtime.block_on(async {
            let store = jetstream.get_key_value(BUCKET).await.ok()?;
            let value = store.get(KEY).await.ok()??;
            names.iter().position(|n| n.as_bytes() == value.as_ref())
        })
    };
    let wait_until = |what: &str, mut done: Box<dyn FnMut() -> bool + '_>| {
        let deadline = std::time::Instant::now() + DEADLINE;
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{flavor}: no {what} within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let acted_since = |node: usize, since: u128| {
        seen.lock()
            .unwrap()
            .actions
            .iter()
            .any(|a| a.node == node && a.at > since)
    };
    let ticked_since = |node: usize, since: u128| {
        seen.lock()
            .unwrap()
            .last_tick
            .get(&node)
            .is_some_and(|&at| at > since)
    };

    let mut stalls = 0;
    for _ in 0..rounds {
        let mut stalled = None;
        wait_until(
            "leader acting",
            Box::new(|| {
                stalled = leader_now().filter(|&l| acted_since(l, realtime_ns() - 50_000_000));
                stalled.is_some()
            }),
        );
        let stalled = stalled.unwrap();
        nodes[stalled].process.pause().expect("pause the leader");
        let paused_at = realtime_ns();
        let mut successor = None;
        wait_until(
            "successor acting",
            Box::new(|| {
                successor = leader_now().filter(|&l| l != stalled && acted_since(l, paused_at));
                successor.is_some()
            }),
        );
        // Let the successor act for a while, then wake the stale leader and watch it run.
        let successor = successor.unwrap();
        let acting_since = realtime_ns();
        wait_until(
            "successor still acting",
            Box::new(|| acted_since(successor, acting_since + 100_000_000)),
        );
        nodes[stalled]
            .process
            .resume()
            .expect("resume the stale leader");
        let resumed_at = realtime_ns();
        wait_until(
            "stale leader running again",
            Box::new(|| ticked_since(stalled, resumed_at + 200_000_000)),
        );
        stalls += 1;
    }

    for node in &mut nodes {
        drop(node.process.take_stdin());
    }
    for node in &mut nodes {
        let status = node.process.wait_timeout(DEADLINE).expect("wait for node");
        assert!(
            status.is_some_and(|s| s.success()),
            "{flavor}: node did not stop cleanly"
        );
        node.reader.take().unwrap().join().unwrap();
    }

    let mut actions = seen.lock().unwrap().actions.clone();
    actions.sort_by_key(|a| a.at);
    let mut owner: HashMap<u64, usize> = HashMap::new();
    for action in &actions {
        let first = *owner.entry(action.token).or_insert(action.node);
        assert_eq!(
            first, action.node,
            "{flavor}: token {} used by two nodes",
            action.token
        );
    }
    // An action with a lower token than one taken before it: a stale leader acted.
    let mut stale: HashMap<&str, usize> = HashMap::new();
    let mut highest = actions.first().map_or(0, |a| a.token);
    for action in &actions {
        if action.token < highest {
            if stale.is_empty() {
                eprintln!(
                    "{flavor}: node-{} acted with token {} ({}) after token {highest} had acted",
                    action.node, action.token, action.way
                );
            }
            *stale.entry(action.way.as_str()).or_default() += 1;
        }
        highest = highest.max(action.token);
    }
    assert!(
        stale.is_empty(),
        "{flavor}: stale actions after a newer token, by way of asking: {stale:?}"
    );
    let terms = owner.len();
    assert!(
        terms > stalls,
        "{flavor}: {terms} terms for {stalls} stalls"
    );
    for way in ["is_leader", "state", "is_current", "run_while_leader"] {
        assert!(
            actions.iter().any(|a| a.way == way),
            "{flavor}: nobody acted through {way}"
        );
    }
    println!(
        "stall ({flavor}): {stalls} stalls, {terms} terms, {} actions, tokens never went back",
        actions.len()
    );
    drop(server);
}
