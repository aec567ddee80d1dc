//! One group, two languages: a member run with `natsio-pcgroups` (orbit's Python port, from
//! PyPI) and a natty member serve one static and one elastic group side by side. Each handles
//! exactly the partitions the shared configuration gives it, every key's numbers are handled
//! in order by one of them, and nothing is lost.
//!
//! The Python comes from `scripts/pcgroups-venv` (Python 3.13+, `natsio-pcgroups` installed
//! into `.natty/`); without one the test says loudly that it did not run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use natty::compat::GoNatty as _;
use natty::group::{
    ElasticGroupConfig, MemberConfig, Partition, Partitioning, PartitioningFilter,
    StaticGroupConfig,
};
use natty::{CancellationToken, Message, Natty};
use natty_testkit::{Process, Server};

mod common;
use common::connect;

const DEADLINE: Duration = Duration::from_secs(60);
const KEYS: u64 = 16;
const PER_KEY: u64 = 40;

/// Who handled what: (side, key, n, partition), in the order handled per side.
type Handled = Arc<Mutex<Vec<(&'static str, String, u64, u32)>>>;

fn main() {
    let python = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/pcgroups-venv"
    ))
    .stderr(Stdio::inherit())
    .output()
    .ok()
    .filter(|out| out.status.success())
    .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let Some(python) = python else {
        println!("group_interop: NOT RUN: no Python 3.13+ with natsio-pcgroups (scripts/pcgroups-venv failed)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = Server::start().expect("server");
    let natty = runtime.block_on(connect(&server));
    if !natty.server_info().supports_message_ttl() {
        println!(
            "group_interop: NOT RUN: server {} has no pinned clients",
            natty.server_info().version()
        );
        return;
    }
    for kind in ["static", "elastic"] {
        natty_and_pcgroups_members_share_a_group(&runtime, &server, &natty, &python, kind);
        println!("group_interop: {kind} group shared by natsio-pcgroups and natty: ok");
    }
    println!("group_interop: 2 passed, 0 failed");
}

fn natty_and_pcgroups_members_share_a_group(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    natty: &Natty,
    python: &str,
    kind: &str,
) {
    let (stream, prefix) = if kind == "static" {
        ("IS", "is")
    } else {
        ("IE", "ie")
    };
    let members = ["py", "rs"];
    // What each member should own, by the shared configuration.
    let owned: BTreeMap<&str, Vec<u32>> = runtime.block_on(async {
        if kind == "static" {
            natty
                .stream(stream)
                .unwrap()
                .create_partitioned(&Partitioning::new(format!("{prefix}.*"), 4))
                .await
                .expect("stream");
            let config = StaticGroupConfig::with_members(4, members);
            natty
                .static_group(stream, "g")
                .unwrap()
                .create(&config)
                .await
                .expect("group");
            members
                .iter()
                .map(|m| (*m, config.partitions_of(m)))
                .collect()
        } else {
            natty
                .create_stream(stream, [format!("{prefix}.*")])
                .await
                .expect("stream");
            let config =
                ElasticGroupConfig::new(4, [PartitioningFilter::new(format!("{prefix}.*"), [1])])
                    .members(members);
            natty
                .elastic_group(stream, "g")
                .unwrap()
                .create(&config)
                .await
                .expect("group");
            members
                .iter()
                .map(|m| (*m, config.partitions_of(m)))
                .collect()
        }
    });

    let handled: Handled = Arc::default();
    let mut member = Process::spawn(
        Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/interop/pcgroups_member.py"
            ))
            .args([&server.url(), kind, stream, "g", "py"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .expect("python member starts");
    let stdin = member.take_stdin();
    let stdout = member.take_stdout().expect("piped stdout");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = {
        let handled = Arc::clone(&handled);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let parts: Vec<&str> = line.split(' ').collect();
                match parts.as_slice() {
                    ["ready"] => {
                        let _ = ready_tx.send(());
                    }
                    ["end", _, key, n, partition] => handled.lock().unwrap().push((
                        "py",
                        (*key).to_owned(),
                        n.parse().unwrap(),
                        partition.parse().unwrap(),
                    )),
                    ["start", ..] => {}
                    _ => eprintln!("python member: {line}"),
                }
            }
        })
    };
    ready_rx
        .recv_timeout(DEADLINE)
        .expect("python member ready");

    let shutdown = CancellationToken::new();
    let serving = {
        let (natty, handled, shutdown) = (natty.clone(), Arc::clone(&handled), shutdown.clone());
        let kind = kind.to_owned();
        runtime.spawn(async move {
            let service = tower::service_fn(move |msg: Message| {
                let handled = Arc::clone(&handled);
                async move {
                    let key = msg.subject().split_once('.').expect("prefix").1.to_owned();
                    let n = String::from_utf8_lossy(msg.payload())
                        .parse()
                        .expect("number");
                    let partition = msg.extensions().get::<Partition>().expect("partition").0;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    handled.lock().unwrap().push(("rs", key, n, partition));
                    Ok::<_, std::io::Error>(())
                }
            });
            let config = MemberConfig::new("rs");
            if kind == "static" {
                natty
                    .static_group(stream, "g")
                    .unwrap()
                    .serve(config, shutdown, service)
                    .await
            } else {
                natty
                    .elastic_group(stream, "g")
                    .unwrap()
                    .serve(config, shutdown, service)
                    .await
            }
        })
    };

    runtime.block_on(async {
        for n in 0..PER_KEY {
            let round = (0..KEYS).map(|k| {
                let subject = format!("{prefix}.k{k}");
                async move {
                    natty
                        .publisher()
                        .publish_acked(&subject, n.to_string())
                        .await
                }
            });
            futures_util::future::try_join_all(round)
                .await
                .expect("publish");
        }
    });
    let deadline = Instant::now() + DEADLINE;
    while handled.lock().unwrap().len() < (KEYS * PER_KEY) as usize {
        assert!(
            Instant::now() < deadline,
            "not every message handled in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    shutdown.cancel();
    runtime
        .block_on(serving)
        .unwrap()
        .expect("natty member serves without error");
    drop(stdin);
    let _ = member.wait_timeout(Duration::from_secs(10));
    member.kill();
    let _ = reader.join();

    let handled = handled.lock().unwrap();
    assert_eq!(
        handled.len() as u64,
        KEYS * PER_KEY,
        "each message handled once"
    );
    let mut by_key: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    let mut partitions: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for (side, key, n, partition) in handled.iter() {
        by_key.entry(key.as_str()).or_default().push((side, *n));
        partitions.entry(side).or_default().insert(*partition);
    }
    for (side, seen) in &partitions {
        let expected: BTreeSet<u32> = owned[side].iter().copied().collect();
        assert!(
            seen.is_subset(&expected),
            "{side} handled partitions {seen:?}, owns {expected:?}"
        );
    }
    assert_eq!(
        partitions.len(),
        2,
        "both members handled messages: {partitions:?}"
    );
    for (key, handled) in &by_key {
        let sides: BTreeSet<&str> = handled.iter().map(|(side, _)| *side).collect();
        assert_eq!(sides.len(), 1, "{key} handled by both members");
        let numbers: Vec<u64> = handled.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            numbers,
            (0..PER_KEY).collect::<Vec<_>>(),
            "{key} in order, once each"
        );
    }
}
