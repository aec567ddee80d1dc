//! High availability of a group member: instances are real processes (this binary run again
//! as children), all serving member `m` of one static group under steady load. The pinned
//! instance is stepped down, then frozen with SIGSTOP, then (once it resumed as a standby) its
//! successor is killed. Each time another instance takes over within the documented bound;
//! the frozen one does nothing once it resumes; per-key order holds, no two instances handle
//! one key at once, and nothing is lost. Every handler step is logged with its
//! `CLOCK_REALTIME` timestamp and the pin of its message.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use natty::group::{MemberConfig, Partitioning, StaticGroupConfig, Timers};
use natty::{CancellationToken, Config, Message};
use natty_testkit::{Process, Server};

mod common;
use common::{connect, connect_with};

const ACK_WAIT: Duration = Duration::from_secs(2);
const KEYS: u64 = 8;
const DEADLINE: Duration = Duration::from_secs(60);

fn main() {
    if let Ok(url) = std::env::var("NATTY_GROUP_INSTANCE_URL") {
        return instance_main(url);
    }
    pinned_instance_failover_keeps_order_and_loses_nothing();
}

fn realtime_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

// ---------------------------------------------------------------------------------------------
// An instance: serves member `m`, logging `start|end <realtime ns> <key> <n> <pin>` lines.

fn instance_main(url: String) {
    if std::env::var_os("NATTY_GROUP_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::stderr)
            .try_init();
    }
    // The parent closes stdin when it is done (or dies): leave then, never linger.
    std::thread::spawn(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
        std::process::exit(0);
    });
    let runtime = common::child::runtime();
    runtime.block_on(async move {
        let natty = connect_with(Config::new([url])).await;
        let handler = tower::service_fn(|msg: Message| async move {
            let key = msg.subject().trim_start_matches("fo.").to_owned();
            let n = String::from_utf8_lossy(msg.payload()).into_owned();
            let pin = msg
                .headers()
                .get_all("Nats-Pin-Id")
                .last()
                .map(str::to_owned)
                .unwrap_or_default();
            log(format!("start {} {key} {n} {pin}", realtime_ns()));
            tokio::time::sleep(Duration::from_millis(1)).await;
            log(format!("end {} {key} {n} {pin}", realtime_ns()));
            Ok::<_, std::io::Error>(())
        });
        let served = natty
            .static_group("FO", "g")
            .unwrap()
            .serve(
                MemberConfig::new("m").ack_wait(ACK_WAIT),
                CancellationToken::new(),
                handler,
            )
            .await;
        log(format!("stopped {served:?}"));
    });
}

fn log(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------
// The test.

#[derive(Clone, Debug)]
struct Act {
    at: u128,
    instance: usize,
    start: bool,
    key: String,
    n: u64,
    pin: String,
}

#[derive(Default)]
struct Seen {
    acts: Vec<Act>,
}

struct Instance {
    process: Process,
    _stdin: std::process::ChildStdin,
}

fn spawn_instance(server: &Server, index: usize, seen: &Arc<Mutex<Seen>>) -> Instance {
    let mut process = Process::spawn(
        Command::new(std::env::current_exe().expect("test binary"))
            .env("NATTY_GROUP_INSTANCE_URL", server.url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .expect("instance starts");
    let stdout = process.take_stdout().expect("piped stdout");
    let stdin = process.take_stdin().expect("piped stdin");
    let seen = Arc::clone(seen);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                [kind @ ("start" | "end"), at, key, n, pin] => {
                    seen.lock().unwrap().acts.push(Act {
                        at: at.parse().unwrap(),
                        instance: index,
                        start: *kind == "start",
                        key: (*key).to_owned(),
                        n: n.parse().unwrap(),
                        pin: (*pin).to_owned(),
                    })
                }
                _ => eprintln!("instance {index}: {line}"),
            }
        }
    });
    Instance {
        process,
        _stdin: stdin,
    }
}

/// Wait until `done` holds, or fail naming `what`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The first act after `since` under another pin than `old_pin`: (instance, pin, at).
fn takeover_after(seen: &Mutex<Seen>, since: u128, old_pin: &str) -> Option<(usize, String, u128)> {
    let seen = seen.lock().unwrap();
    seen.acts
        .iter()
        .filter(|a| a.at > since && a.pin != old_pin)
        .min_by_key(|a| a.at)
        .map(|a| (a.instance, a.pin.clone(), a.at))
}

/// Whether every key's numbers below `rounds` have been handled to their end.
fn all_handled(seen: &Mutex<Seen>, rounds: u64) -> bool {
    let seen = seen.lock().unwrap();
    let mut ended: HashMap<&str, std::collections::HashSet<u64>> = HashMap::new();
    for act in seen.acts.iter().filter(|a| !a.start) {
        ended.entry(act.key.as_str()).or_default().insert(act.n);
    }
    (0..KEYS).all(|k| {
        let handled = ended.get(format!("k{k}").as_str());
        handled.is_some_and(|e| (0..rounds).all(|n| e.contains(&n)))
    })
}

fn latest(seen: &Mutex<Seen>) -> Option<Act> {
    seen.lock()
        .unwrap()
        .acts
        .iter()
        .max_by_key(|a| a.at)
        .cloned()
}

fn pinned_instance_failover_keeps_order_and_loses_nothing() {
    let server = Server::start().expect("server");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let natty = runtime.block_on(async {
        let natty = connect(&server).await;
        natty
            .stream("FO")
            .unwrap()
            .create_partitioned(&Partitioning::new("fo.*", 4))
            .await
            .expect("stream");
        natty
    });
    let created = runtime.block_on(
        natty
            .static_group("FO", "g")
            .unwrap()
            .create(&StaticGroupConfig::with_members(4, ["m"])),
    );
    if let Err(err) = &created {
        // Before 2.11 there are no pinned clients: the answer must be `Unsupported`.
        assert_eq!(err.kind(), natty::group::GroupErrorKind::Unsupported);
        assert!(
            !natty.server_info().supports_message_ttl(),
            "only servers before 2.11 refuse"
        );
        println!(
            "group_failover: server {} answers Unsupported; 1 passed, 0 failed",
            natty.server_info().version()
        );
        return;
    }
    let timers = Timers::from_ack_wait(ACK_WAIT);
    let bound = timers.pinned_ttl + timers.pull_expiry + timers.ack_wait + Duration::from_secs(1);
    let bound_ns = bound.as_nanos();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut instances: Vec<Instance> = (0..2).map(|i| spawn_instance(&server, i, &seen)).collect();

    // Steady load: every key gets its next number every 10 ms (unless held).
    let rounds = Arc::new(AtomicU64::new(0));
    let hold = Arc::new(AtomicBool::new(false));
    let producing = CancellationToken::new();
    let producer = {
        let (natty, rounds, producing) = (natty.clone(), Arc::clone(&rounds), producing.clone());
        let hold = Arc::clone(&hold);
        runtime.spawn(async move {
            while !producing.is_cancelled() {
                if hold.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let n = rounds.load(Ordering::Acquire);
                // Acked round by round: each key's numbers are stored in order.
                let round = (0..KEYS).map(|k| {
                    let (natty, subject) = (&natty, format!("fo.k{k}"));
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
                rounds.store(n + 1, Ordering::Release);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            natty.flush().await;
        })
    };

    wait_until("a first handled message", || latest(&seen).is_some());
    let mut takeovers = Vec::new();

    // 1. Step down: the pin moves.
    let before = latest(&seen).unwrap();
    let t0 = realtime_ns();
    runtime
        .block_on(natty.static_group("FO", "g").unwrap().step_down("m"))
        .expect("step down");
    wait_until("a new pin after step-down", || {
        takeover_after(&seen, t0, &before.pin).is_some()
    });
    let (_, pin, at) = takeover_after(&seen, t0, &before.pin).unwrap();
    takeovers.push(("step_down", at - t0));

    // 2. SIGSTOP the pinned instance: a standby takes over; the frozen one, resumed, idles.
    let t1 = realtime_ns();
    wait_until("the new pin handling", || {
        latest(&seen).is_some_and(|a| a.at > t1 && a.pin == pin)
    });
    let frozen = latest(&seen).unwrap().instance;
    // Freeze it idle, then publish at once: its open pull request takes the next messages into
    // its socket while it is frozen, so it finds them there, fresh to it, when it resumes.
    hold.store(true, Ordering::Release);
    wait_until("the pinned instance to go idle", || {
        all_handled(&seen, rounds.load(Ordering::Acquire))
    });
    let t_stop = realtime_ns();
    instances[frozen].process.pause().expect("pause");
    hold.store(false, Ordering::Release);
    wait_until("a takeover after SIGSTOP", || {
        takeover_after(&seen, t_stop, &pin).is_some()
    });
    let (successor, successor_pin, at) = takeover_after(&seen, t_stop, &pin).unwrap();
    assert_ne!(successor, frozen);
    takeovers.push(("sigstop", at - t_stop));
    // Frozen well past the pinned TTL and every ack wait, as a VM pause would be.
    let resume_after = at + 2 * ACK_WAIT.as_nanos();
    wait_until("the successor to serve a while", || {
        latest(&seen).is_some_and(|a| a.at > resume_after)
    });
    let t_resume = realtime_ns();
    instances[frozen].process.resume().expect("resume");
    let watch_until = t_resume + 3 * ACK_WAIT.as_nanos();
    wait_until("the successor to serve on after the resume", || {
        latest(&seen).is_some_and(|a| a.at > watch_until && a.instance == successor)
    });

    // 3. Kill the successor: the resumed instance, now a standby, takes over.
    let t_kill = realtime_ns();
    instances[successor].process.kill();
    wait_until("a takeover after kill", || {
        takeover_after(&seen, t_kill, &successor_pin).is_some()
    });
    let (heir, _, at) = takeover_after(&seen, t_kill, &successor_pin).unwrap();
    assert_eq!(heir, frozen, "the only instance left takes over");
    takeovers.push(("kill", at - t_kill));

    producing.cancel();
    runtime.block_on(producer).unwrap();
    let published = rounds.load(Ordering::Acquire);
    wait_until("every message handled", || all_handled(&seen, published));

    let seen = seen.lock().unwrap();
    // The frozen instance did nothing between its resume and its successor's death.
    let stale: Vec<&Act> = seen
        .acts
        .iter()
        .filter(|a| a.instance == frozen && a.at > t_resume && a.at < t_kill)
        .collect();
    assert!(
        stale.is_empty(),
        "resumed instance acted while not pinned: {stale:?}"
    );

    let mut by_key: BTreeMap<&str, Vec<&Act>> = BTreeMap::new();
    for act in &seen.acts {
        by_key.entry(act.key.as_str()).or_default().push(act);
    }
    for (key, acts) in &mut by_key {
        acts.sort_by_key(|a| a.at);
        // Order: a key's numbers start in order (a redelivery repeats the last one).
        let mut last = 0;
        for act in acts.iter().filter(|a| a.start) {
            assert!(act.n >= last, "{key}: {} started after {last}", act.n);
            last = act.n;
        }
        // No overlap: calls of different instances on one key never share a moment. A start
        // without an end (killed, or dropped after the freeze) makes no interval.
        let calls: Vec<(usize, u128, u128)> = acts
            .iter()
            .filter(|a| a.start)
            .filter_map(|s| {
                acts.iter()
                    .filter(|e| !e.start && e.instance == s.instance && e.n == s.n && e.at >= s.at)
                    .map(|e| e.at)
                    .min()
                    .map(|end| (s.instance, s.at, end))
            })
            .collect();
        for (i, a) in calls.iter().enumerate() {
            for b in &calls[i + 1..] {
                let overlap = a.0 != b.0 && a.1 <= b.2 && b.1 <= a.2;
                assert!(
                    !overlap,
                    "{key}: instances {} and {} handled it at once",
                    a.0, b.0
                );
            }
        }
    }

    for (what, took) in &takeovers {
        println!(
            "group_failover: takeover after {what}: {} ms (bound {} ms)",
            took / 1_000_000,
            bound.as_millis()
        );
    }
    for (what, took) in &takeovers {
        assert!(
            *took <= bound_ns,
            "takeover after {what} took {} ms, over the bound",
            took / 1_000_000
        );
    }
    println!("group_failover: {KEYS} keys x {published} messages handled in order");
    drop(instances);
    println!("group_failover: 1 passed, 0 failed");
}
