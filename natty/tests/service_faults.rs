//! Two instances of one service in one queue group, real processes (this binary run again as
//! children), under steady load from natty's requester, 64 requests in flight, each with a 2 s
//! deadline and a payload of its own.
//!
//! - SIGKILL one: every request ends at the caller exactly once, with an answer echoing its
//!   own payload or a typed `TimedOut`/`NoResponders`; the requests the killed instance held
//!   time out and nobody ever answers them; once the server has dropped the killed instance's
//!   subscription, every request is answered by the survivor.
//! - SIGSTOP one (a replacement has joined meanwhile): the requests it held end at the caller
//!   as `TimedOut`, and so do those the server still routes to it; every request sent while
//!   it is frozen that is answered is answered by the other one. Resumed, the frozen instance
//!   answers what it held, late: each such late answer is the only one its request ever got
//!   on the wire, and the caller, which had its one outcome already, sees none of them.
//! - Stats add up: each live instance's `$SRV.STATS` `num_requests` is exactly the answers it
//!   put on the wire, which are the answers the caller received from it plus its late ones;
//!   its `ServeSummary` at a clean stop says the same. The killed instance's stats are gone.
//!
//! The server keeps routing to a frozen instance's subscription (it notices a frozen client
//! only after its ping interval, minutes by default), so about half the requests sent while
//! one of two instances is frozen time out: that is expected, and what a caller's retry
//! policy is for.
//!
//! A wiretap on `_INBOX.>` (a plain client) sees every answer to every request, including
//! those the caller no longer waits for: no reply subject, and no request, is answered twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use natty::error::RequestErrorKind;
use natty::requester::Request as Call;
use natty::service::{EndpointConfig, Request, Response, ServiceConfig, ServiceError};
use natty::{CancellationToken, Config, Requester};
use natty_testkit::Server;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

mod common;
use common::child::{self, parent_gone, say, Child};
use common::{connect, connect_with};

const URL_VAR: &str = "NATTY_SERVICE_FAULTS_URL";
const INDEX_VAR: &str = "NATTY_SERVICE_FAULTS_INDEX";
const SERVICE: &str = "faults";
const ENDPOINT: &str = "who";
/// How long a handler takes: long enough that a signal lands on requests in flight.
const HANDLING: Duration = Duration::from_millis(5);
/// Every request's own deadline.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
const IN_FLIGHT: usize = 64;
/// The longest any single wait of the test may take.
const DEADLINE: Duration = Duration::from_secs(15);

// Epochs: what was going on when a request was sent.
const BEFORE_KILL: u64 = 0;
/// Sent from just before the SIGKILL until the server had dropped the killed instance's
/// subscription.
const KILLED: u64 = 1;
/// Sent once the server had no subscription of the killed instance any more.
const KILLED_GONE: u64 = 2;
const BEFORE_PAUSE: u64 = 3;
/// Sent while an instance was stopped (after `pause` returned, before `resume`).
const PAUSED: u64 = 4;

fn main() {
    if let Ok(url) = std::env::var(URL_VAR) {
        let index = std::env::var(INDEX_VAR)
            .ok()
            .and_then(|i| i.parse().ok())
            .expect("instance index");
        return instance_main(url, index);
    }
    child::run_test(
        "service_faults",
        killed_and_stopped_instances_leave_one_outcome_per_request(),
    );
}

// ---------------------------------------------------------------------------------------------
// An instance: serves `faults` on `who`, answering `<index>:<payload>`; prints `ready <id>
// <client id>` once serving, and `stopped <handled> <errors> <cut off>` after a clean stop,
// which it makes when its stdin closes.

fn instance_main(url: String, index: usize) {
    child::runtime().block_on(async move {
        let natty = connect_with(Config::new([url])).await;
        let config = ServiceConfig::new(SERVICE, "1.0.0").shutdown_grace(Duration::from_secs(1));
        let mut faults = natty.service(config).await.expect("service starts");
        let handler = tower::service_fn(move |request: Request| answer(index, request));
        // Subscribed on the server when this returns.
        faults
            .endpoint(EndpointConfig::new(ENDPOINT), handler)
            .await
            .expect("endpoint subscribes");
        let id = faults.id().to_owned();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(faults.run(shutdown.clone()));
        say(&format!(
            "ready {id} {}",
            natty.client().server_info().client_id
        ));
        parent_gone().await;
        shutdown.cancel();
        let summary = serving.await.expect("the run does not panic");
        say(&format!(
            "stopped {} {} {}",
            summary.handled, summary.errors, summary.cut_off
        ));
    });
}

async fn answer(index: usize, request: Request) -> Result<Response, ServiceError> {
    tokio::time::sleep(HANDLING).await;
    let payload = String::from_utf8_lossy(request.payload());
    Ok(Response::new(format!("{index}:{payload}")))
}

// ---------------------------------------------------------------------------------------------
// The parent's handle on an instance.

struct Instance {
    index: usize,
    /// Its service instance id.
    id: String,
    /// Its connection's client id on the server.
    cid: u64,
    child: Child,
}

/// How an instance's run ended, as it printed it.
#[derive(Debug, PartialEq, Eq)]
struct Stopped {
    handled: u64,
    errors: u64,
    cut_off: u64,
}

impl Instance {
    /// Start instance `index` and wait until it serves.
    async fn spawn(server: &Server, index: usize) -> Self {
        let envs = [(URL_VAR, server.url()), (INDEX_VAR, index.to_string())];
        let mut child = Child::spawn(format!("instance {index}"), &envs);
        let ready = child
            .next_line("ready", |line| println!("instance {index}: {line}"))
            .await;
        let (id, cid) = ready.split_once(' ').expect("ready <id> <client id>");
        Self {
            index,
            id: id.to_owned(),
            cid: cid.parse().expect("client id"),
            child,
        }
    }

    /// Close its stdin, and return what its run did once it has exited.
    async fn stop(mut self) -> Stopped {
        drop(self.child.stdin.take());
        let index = self.index;
        let stopped = self
            .child
            .next_line("stopped", |line| println!("instance {index}: {line}"))
            .await;
        let counts: Vec<u64> = stopped
            .split(' ')
            .map(|n| n.parse().expect("a count"))
            .collect();
        let &[handled, errors, cut_off] = counts.as_slice() else {
            panic!("instance {}: stopped {stopped}", self.index);
        };
        // Its stdout closes when it exits.
        self.child.read_to_end(|_| ()).await;
        let status = tokio::task::block_in_place(|| self.child.process.wait_timeout(DEADLINE))
            .expect("wait");
        assert!(
            status.is_some_and(|s| s.success()),
            "instance {} exits cleanly: {status:?}",
            self.index
        );
        Stopped {
            handled,
            errors,
            cut_off,
        }
    }
}

/// Whether the server has a subscription of client `cid` on the endpoint's subject, so
/// routes requests to it.
fn subscribed(server: &Server, cid: u64) -> bool {
    let subsz = tokio::task::block_in_place(|| server.monitoring("/subsz?subs=1&limit=10000"))
        .expect("subsz");
    let subsz: Value = serde_json::from_str(&subsz).expect("subsz json");
    subsz["subscriptions_list"]
        .as_array()
        .expect("subscriptions_list")
        .iter()
        .any(|sub| sub["subject"] == ENDPOINT && sub["cid"] == cid)
}

/// Wait until the server has no subscription of client `cid` on the endpoint's subject: from
/// then on it routes every request to the instances left.
async fn wait_unsubscribed(server: &Server, cid: u64) {
    let deadline = Instant::now() + DEADLINE;
    while subscribed(server, cid) {
        assert!(
            Instant::now() < deadline,
            "the server still routes to the killed instance after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The load: requests with unique payloads, `IN_FLIGHT` at once, each tagged with the epoch it
// was sent in.

/// How a request ended at the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    /// Answered by instance `.0`, echoing the request's payload.
    Answered(usize),
    Failed(RequestErrorKind),
    /// Answered, but not with its own payload.
    Wrong(String),
    /// Its future did not end, well past its deadline.
    Hung,
}

#[derive(Clone, Debug)]
struct Outcome {
    id: u64,
    epoch: u64,
    ended: Ended,
}

/// What the load did so far, per epoch: answers per instance, and failures per kind.
#[derive(Clone, Debug, Default)]
struct Progress {
    answered: BTreeMap<(u64, usize), u64>,
    failed: HashMap<(u64, RequestErrorKind), u64>,
}

impl Progress {
    fn answered(&self, epoch: u64, index: usize) -> u64 {
        self.answered.get(&(epoch, index)).copied().unwrap_or(0)
    }

    fn failed(&self, epoch: u64, kind: RequestErrorKind) -> u64 {
        self.failed.get(&(epoch, kind)).copied().unwrap_or(0)
    }
}

#[derive(Clone)]
struct Load {
    requester: Requester,
    next_id: Arc<AtomicU64>,
    epoch: Arc<AtomicU64>,
}

struct Running {
    stop: CancellationToken,
    outcomes: JoinHandle<Vec<Outcome>>,
    progress: watch::Receiver<Progress>,
}

impl Load {
    fn new(requester: Requester) -> Self {
        Self {
            requester,
            next_id: Arc::default(),
            epoch: Arc::default(),
        }
    }

    /// Requests sent from now on belong to `epoch`.
    fn enter(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    fn start(&self) -> Running {
        let stop = CancellationToken::new();
        let (progress, watching) = watch::channel(Progress::default());
        let outcomes = tokio::spawn(self.clone().drive(stop.clone(), progress));
        Running {
            stop,
            outcomes,
            progress: watching,
        }
    }

    /// Keep `IN_FLIGHT` requests going until `stop`, then let those in flight end.
    async fn drive(
        self,
        stop: CancellationToken,
        progress: watch::Sender<Progress>,
    ) -> Vec<Outcome> {
        let mut calls = FuturesUnordered::new();
        let mut outcomes = Vec::new();
        loop {
            while !stop.is_cancelled() && calls.len() < IN_FLIGHT {
                calls.push(self.one());
            }
            let outcome = tokio::select! {
                outcome = calls.next() => outcome,
                () = stop.cancelled(), if !stop.is_cancelled() => continue,
            };
            let Some(outcome) = outcome else { break };
            progress.send_modify(|p| match outcome.ended {
                Ended::Answered(index) => {
                    *p.answered.entry((outcome.epoch, index)).or_default() += 1
                }
                Ended::Failed(kind) => *p.failed.entry((outcome.epoch, kind)).or_default() += 1,
                _ => {}
            });
            outcomes.push(outcome);
        }
        outcomes
    }

    fn one(&self) -> impl std::future::Future<Output = Outcome> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let epoch = self.epoch.load(Ordering::SeqCst);
        let call = Call::new(ENDPOINT, id.to_string()).with_timeout(REQUEST_DEADLINE);
        let answered = self.requester.request(call);
        async move {
            let ended = match timeout(REQUEST_DEADLINE + DEADLINE, answered).await {
                Err(_) => Ended::Hung,
                Ok(Err(err)) => Ended::Failed(err.kind()),
                Ok(Ok(response)) => match parse_answer(response.payload()) {
                    Some((index, echoed)) if echoed == id => Ended::Answered(index),
                    _ => Ended::Wrong(String::from_utf8_lossy(response.payload()).into_owned()),
                },
            };
            Outcome { id, epoch, ended }
        }
    }
}

impl Running {
    /// Wait until the load's progress satisfies `done`.
    async fn wait(&mut self, what: &str, done: impl FnMut(&Progress) -> bool) {
        let waited = timeout(DEADLINE, self.progress.wait_for(done))
            .await
            .map(|seen| seen.is_ok());
        match waited {
            Ok(true) => {}
            Ok(false) => panic!("the load ended while waiting for {what}"),
            Err(_) => panic!(
                "no {what} within {DEADLINE:?}: {:?}",
                *self.progress.borrow()
            ),
        }
    }

    /// Stop sending, and return every outcome once the requests in flight have ended.
    async fn finish(self) -> Vec<Outcome> {
        self.stop.cancel();
        timeout(REQUEST_DEADLINE + DEADLINE, self.outcomes)
            .await
            .expect("the load ends")
            .expect("the load does not panic")
    }
}

/// `<index>:<id>`, as the instances answer.
fn parse_answer(payload: &[u8]) -> Option<(usize, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (index, id) = text.split_once(':')?;
    Some((index.parse().ok()?, id.parse().ok()?))
}

// ---------------------------------------------------------------------------------------------
// The wiretap: every answer to every request, as the server delivers it to any `_INBOX.`.

#[derive(Debug, Default)]
struct Tapped {
    /// Per request id, the instances whose answer to it went by.
    by_id: HashMap<u64, Vec<usize>>,
    /// Per reply subject, how many messages went by.
    by_subject: HashMap<String, u64>,
    /// Answers per instance.
    by_instance: BTreeMap<usize, u64>,
    /// What went by that is no answer of an instance.
    foreign: Vec<String>,
}

struct Tap {
    tapped: watch::Receiver<Tapped>,
    _task: JoinHandle<()>,
}

impl Tap {
    /// Tap `_INBOX.>`, returning once the server delivers to the tap.
    async fn start(client: &async_nats::Client) -> Self {
        let mut messages = client.subscribe("_INBOX.>").await.expect("tap subscribes");
        // The tap's own probe coming back proves the server has its subscription.
        let probe = client.new_inbox();
        client
            .publish(probe.clone(), Bytes::new())
            .await
            .expect("probe");
        let (tx, tapped) = watch::channel(Tapped::default());
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready);
            while let Some(message) = messages.next().await {
                if message.subject.as_str() == probe {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    continue;
                }
                // Clients' round trips to their own inboxes (natty's service waits on them)
                // are empty; an error answer would carry headers.
                if message.payload.is_empty() && message.headers.is_none() {
                    continue;
                }
                tx.send_modify(|t| t.record(message.subject.as_str(), &message.payload));
            }
        });
        timeout(DEADLINE, is_ready)
            .await
            .expect("the tap's probe comes back")
            .expect("tap running");
        Self {
            tapped,
            _task: task,
        }
    }

    /// Wait until what was tapped satisfies `done`.
    async fn wait(&mut self, what: &str, done: impl FnMut(&Tapped) -> bool) {
        let waited = timeout(DEADLINE, self.tapped.wait_for(done)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "the tap saw no {what} within {DEADLINE:?}"
        );
    }
}

impl Tapped {
    fn record(&mut self, subject: &str, payload: &[u8]) {
        *self.by_subject.entry(subject.to_owned()).or_default() += 1;
        match parse_answer(payload) {
            Some((index, id)) => {
                self.by_id.entry(id).or_default().push(index);
                *self.by_instance.entry(index).or_default() += 1;
            }
            None => self
                .foreign
                .push(format!("{subject}: {}", String::from_utf8_lossy(payload))),
        }
    }

    fn answers_to(&self, id: u64) -> &[usize] {
        self.by_id.get(&id).map_or(&[], Vec::as_slice)
    }

    fn by_instance(&self, index: usize) -> u64 {
        self.by_instance.get(&index).copied().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Stats.

/// `num_requests` of the endpoint, per service instance id, as `$SRV.STATS.faults` answers:
/// every reply that comes until all of `expected` have answered.
async fn stats(client: &async_nats::Client, expected: &HashSet<&str>) -> HashMap<String, u64> {
    let inbox = format!("faults.stats.{}", nuid::next());
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(format!("$SRV.STATS.{SERVICE}"), inbox, Bytes::new())
        .await
        .expect("ask for stats");
    let mut seen = HashMap::new();
    let collected = timeout(DEADLINE, async {
        while expected.iter().any(|id| !seen.contains_key(*id)) {
            let reply = replies.next().await.expect("stats replies");
            let stats: Value = serde_json::from_slice(&reply.payload).expect("stats json");
            let id = stats["id"].as_str().expect("an id").to_owned();
            let endpoint = &stats["endpoints"][0];
            assert_eq!(endpoint["name"], ENDPOINT);
            let requests = endpoint["num_requests"].as_u64().expect("num_requests");
            seen.insert(id, requests);
        }
    })
    .await;
    assert!(
        collected.is_ok(),
        "not every live instance sent its stats: {seen:?}, expected {expected:?}"
    );
    seen
}

// ---------------------------------------------------------------------------------------------
// The test.

async fn killed_and_stopped_instances_leave_one_outcome_per_request() {
    let server = Server::start().expect("server");
    let natty = connect(&server).await;
    println!(
        "service_faults: nats-server {}",
        natty.server_info().version()
    );
    let plain = async_nats::connect(server.url())
        .await
        .expect("plain client");
    let mut tap = Tap::start(&plain).await;
    let load = Load::new(natty.requester());

    let first = Instance::spawn(&server, 0).await;
    let mut second = Instance::spawn(&server, 1).await;
    let killed = kill_phase(&server, &load, first).await;
    let third = Instance::spawn(&server, 2).await;
    let paused = stop_phase(&load, &mut second).await;

    // Resumed, the frozen instance answers what it held: wait for those late answers.
    let timed_out: Vec<u64> = paused
        .iter()
        .filter(|o| o.ended == Ended::Failed(RequestErrorKind::TimedOut))
        .map(|o| o.id)
        .collect();
    tap.wait(
        "late answer to every request timed out at the frozen instance",
        |t| timed_out.iter().all(|id| !t.answers_to(*id).is_empty()),
    )
    .await;
    // And for the answers the caller got.
    let all: Vec<&Outcome> = killed.iter().chain(&paused).collect();
    tap.wait("answer the caller received", |t| {
        all.iter().all(|o| match o.ended {
            Ended::Answered(_) => !t.answers_to(o.id).is_empty(),
            _ => true,
        })
    })
    .await;

    let late = check_one_outcome_each(&all, &tap.tapped.borrow());
    check_kill_phase(&killed, &tap.tapped.borrow());
    check_stop_phase(&paused, &tap.tapped.borrow(), second.index, third.index);

    check_stats_add_up(&plain, &tap, &[&second, &third], &all, &late).await;
    for instance in [second, third] {
        let answered = tap.tapped.borrow().by_instance(instance.index);
        let index = instance.index;
        let expected = Stopped {
            handled: answered,
            errors: 0,
            cut_off: 0,
        };
        assert_eq!(
            instance.stop().await,
            expected,
            "instance {index}: its summary counts what it answered"
        );
    }
}

/// Each live instance's `num_requests` is the answers the caller received from it plus its
/// late ones, and so is their sum.
async fn check_stats_add_up(
    client: &async_nats::Client,
    tap: &Tap,
    live: &[&Instance],
    all: &[&Outcome],
    late: &BTreeMap<usize, u64>,
) {
    let counted = stats_settled(client, tap, live).await;
    let answered = answered_per_instance(all);
    let (mut total, mut received) = (0, 0);
    for instance in live {
        let at_caller = answered.get(&instance.index).copied().unwrap_or(0);
        let late = late.get(&instance.index).copied().unwrap_or(0);
        let requests = counted[&instance.id];
        println!(
            "service_faults: instance {}: num_requests {requests}, answers received {at_caller}, late {late}",
            instance.index
        );
        assert_eq!(
            requests,
            at_caller + late,
            "instance {}: its stats count the answers the caller received and its late ones",
            instance.index
        );
        total += requests;
        received += at_caller + late;
    }
    assert_eq!(total, received, "stats add up across the live instances");
}

/// Load on instances 0 and 1; SIGKILL 0 mid-load; then load on the survivor alone.
async fn kill_phase(server: &Server, load: &Load, mut first: Instance) -> Vec<Outcome> {
    load.enter(BEFORE_KILL);
    let mut running = load.start();
    running
        .wait("answers from both instances", |p| {
            p.answered(BEFORE_KILL, 0) >= 50 && p.answered(BEFORE_KILL, 1) >= 50
        })
        .await;
    assert!(
        subscribed(server, first.cid),
        "the server lists the instance's subscription"
    );
    load.enter(KILLED);
    let killed_at = Instant::now();
    first.child.process.kill();
    wait_unsubscribed(server, first.cid).await;
    println!(
        "service_faults: the server dropped the killed instance's subscription {} ms after SIGKILL",
        killed_at.elapsed().as_millis()
    );
    load.enter(KILLED_GONE);
    running
        .wait("run of answers from the survivor", |p| {
            p.answered(KILLED_GONE, 1) >= 200
        })
        .await;
    running.finish().await
}

/// Load on instances 1 and 2; SIGSTOP 1 mid-load and keep the load going until requests time
/// out at it; stop the load, and only then resume it.
async fn stop_phase(load: &Load, frozen: &mut Instance) -> Vec<Outcome> {
    load.enter(BEFORE_PAUSE);
    let mut running = load.start();
    running
        .wait("answers from both instances", |p| {
            p.answered(BEFORE_PAUSE, 1) >= 50 && p.answered(BEFORE_PAUSE, 2) >= 50
        })
        .await;
    tokio::task::block_in_place(|| frozen.child.process.pause()).expect("pause");
    let paused_at = Instant::now();
    load.enter(PAUSED);
    running
        .wait(
            "answers from the live instance and timeouts at the frozen one",
            |p| p.answered(PAUSED, 2) >= 50 && p.failed(PAUSED, RequestErrorKind::TimedOut) >= 10,
        )
        .await;
    // Every request sent while frozen has its outcome before the resume.
    let outcomes = running.finish().await;
    println!(
        "service_faults: instance {} frozen for {} ms",
        frozen.index,
        paused_at.elapsed().as_millis()
    );
    frozen.child.process.resume().expect("resume");
    outcomes
}

/// Every request ended once at the caller, answered with its own payload or with a typed
/// timeout or no-responders error; the wire shows at most one answer per request and per
/// reply subject, and exactly the caller's answer when it got one. Returns the late answers
/// (those to requests the caller had given up) per instance.
fn check_one_outcome_each(all: &[&Outcome], tapped: &Tapped) -> BTreeMap<usize, u64> {
    let mut ids = HashSet::new();
    let mut late = BTreeMap::new();
    for outcome in all {
        assert!(ids.insert(outcome.id), "request {} sent twice", outcome.id);
        let wire = tapped.answers_to(outcome.id);
        match &outcome.ended {
            Ended::Answered(index) => assert_eq!(
                wire,
                [*index],
                "request {}: the caller's answer is the only one on the wire",
                outcome.id
            ),
            Ended::Failed(RequestErrorKind::TimedOut | RequestErrorKind::NoResponders) => {
                assert!(wire.len() <= 1, "request {} answered {wire:?}", outcome.id);
                for index in wire {
                    *late.entry(*index).or_default() += 1;
                }
            }
            other => panic!("request {} ended {other:?}", outcome.id),
        }
    }
    let unasked: Vec<&u64> = tapped.by_id.keys().filter(|id| !ids.contains(id)).collect();
    assert!(
        unasked.is_empty(),
        "answers to requests never sent: {unasked:?}"
    );
    let twice: Vec<_> = tapped.by_subject.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "reply subjects answered twice: {twice:?}");
    assert!(
        tapped.foreign.is_empty(),
        "not answers: {:?}",
        tapped.foreign
    );
    late
}

fn check_kill_phase(outcomes: &[Outcome], tapped: &Tapped) {
    report("kill", outcomes);
    let timed_out: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.ended == Ended::Failed(RequestErrorKind::TimedOut))
        .collect();
    assert!(
        !timed_out.is_empty(),
        "the kill landed on requests in flight: some time out"
    );
    for outcome in &timed_out {
        assert!(
            tapped.answers_to(outcome.id).is_empty(),
            "request {} timed out: the killed instance took it along, nobody answered, yet {:?}",
            outcome.id,
            tapped.answers_to(outcome.id)
        );
    }
    for outcome in outcomes.iter().filter(|o| o.epoch == KILLED_GONE) {
        assert_eq!(
            outcome.ended,
            Ended::Answered(1),
            "request {} sent once the server dropped the killed instance",
            outcome.id
        );
    }
}

fn check_stop_phase(outcomes: &[Outcome], tapped: &Tapped, frozen: usize, live: usize) {
    report("stop", outcomes);
    let timed_out = |epoch| {
        outcomes.iter().filter(move |o| {
            o.epoch == epoch && o.ended == Ended::Failed(RequestErrorKind::TimedOut)
        })
    };
    assert!(
        timed_out(BEFORE_PAUSE).next().is_some(),
        "requests the frozen instance held when stopped time out"
    );
    for outcome in timed_out(BEFORE_PAUSE).chain(timed_out(PAUSED)) {
        assert_eq!(
            tapped.answers_to(outcome.id),
            [frozen],
            "request {} timed out: the frozen instance held it and answered it, late, once",
            outcome.id
        );
    }
    for outcome in outcomes.iter().filter(|o| o.epoch == PAUSED) {
        assert!(
            matches!(outcome.ended, Ended::Answered(i) if i == live)
                || outcome.ended == Ended::Failed(RequestErrorKind::TimedOut),
            "request {} sent while instance {frozen} was frozen ended {:?}",
            outcome.id,
            outcome.ended
        );
    }
}

/// Print what the requests of a phase ended with, per epoch.
fn report(phase: &str, outcomes: &[Outcome]) {
    let mut ended: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for outcome in outcomes {
        *ended
            .entry((outcome.epoch, format!("{:?}", outcome.ended)))
            .or_default() += 1;
    }
    for ((epoch, how), n) in ended {
        println!("service_faults: {phase} phase, epoch {epoch}: {n} {how}");
    }
}

fn answered_per_instance(all: &[&Outcome]) -> BTreeMap<usize, u64> {
    let mut answered = BTreeMap::new();
    for outcome in all {
        if let Ended::Answered(index) = outcome.ended {
            *answered.entry(index).or_default() += 1;
        }
    }
    answered
}

/// The live instances' `num_requests`, once each equals the answers the tap saw from it (an
/// instance counts an answer when it has sent it, so the two may differ for a moment).
async fn stats_settled(
    client: &async_nats::Client,
    tap: &Tap,
    live: &[&Instance],
) -> HashMap<String, u64> {
    let expected: HashSet<&str> = live.iter().map(|i| i.id.as_str()).collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let counted = stats(client, &expected).await;
        let ids: HashSet<&str> = counted.keys().map(String::as_str).collect();
        assert_eq!(ids, expected, "only the live instances answer STATS");
        let tapped = tap.tapped.borrow();
        if live
            .iter()
            .all(|i| counted[&i.id] == tapped.by_instance(i.index))
        {
            return counted;
        }
        assert!(
            Instant::now() < deadline,
            "stats {counted:?} never matched the answers on the wire {:?}",
            tapped.by_instance
        );
        drop(tapped);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
