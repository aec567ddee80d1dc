//! Leader election against real servers: one leader at a time, fast handovers, safe
//! step-down on crashes, partitions, pauses and restarts, increasing fencing tokens, and Go
//! natty's `AsLeader` scenarios.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natty::compat::GoNatty as _;
use natty::election::{self, ElectionErrorKind};
use natty::{
    CancellationToken, ElectionConfig, LeaderState, Leadership, Natty, PublishConfig, Term,
};
use natty_testkit::{Cluster, Proxy, Server};
use tokio::time::{timeout, Instant};

mod common;
use common::connect_urls;
use common::election::Terms;

const TTL: Duration = Duration::from_secs(2);

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn config(bucket: &str, node: &str) -> ElectionConfig {
    ElectionConfig::new(bucket, "leader", node).ttl(TTL)
}

/// A small xorshift generator, so the soak needs no extra dependency; the seed is printed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        println!("soak seed {seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Node {
    natty: Natty,
    leadership: Leadership,
    shutdown: CancellationToken,
}

async fn node(urls: Vec<String>, bucket: &str, name: &str, terms: &Terms) -> Node {
    let natty = connect_urls(urls, PublishConfig::default()).await;
    let shutdown = CancellationToken::new();
    let leadership = natty
        .elect(config(bucket, name).shutdown(shutdown.clone()))
        .await
        .expect("elect");
    terms.record(&leadership);
    Node {
        natty,
        leadership,
        shutdown,
    }
}

/// Wait until one of `nodes` leads and every other running one follows it by name.
async fn settled_leader(nodes: &[&Node], within: Duration) -> usize {
    let leaderships: Vec<&Leadership> = nodes.iter().map(|n| &n.leadership).collect();
    common::election::settled_leader(&leaderships, within).await
}

/// Wait until a term starts on a node other than `except`.
async fn next_leader(nodes: &[&Node], except: usize, within: Duration) -> (usize, Term) {
    let waits = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != except)
        .map(|(i, n)| {
            let leadership = n.leadership.clone();
            Box::pin(async move { (i, leadership.wait_leader().await.expect("campaign ran")) })
        });
    timeout(within, futures_util::future::select_all(waits))
        .await
        .unwrap_or_else(|_| panic!("no new leader within {within:?}"))
        .0
}

fn server() -> Server {
    Server::start().expect("nats-server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_have_exactly_one_leader_and_followers_name_it() {
    let server = server();
    let (bucket, terms) = (unique("one"), Terms::default());
    let a = node(vec![server.url()], &bucket, "a", &terms).await;
    let b = node(vec![server.url()], &bucket, "b", &terms).await;
    let c = node(vec![server.url()], &bucket, "c", &terms).await;
    let nodes = [&a, &b, &c];
    let leader = settled_leader(&nodes, Duration::from_secs(5)).await;
    let name = nodes[leader].leadership.node().to_owned();
    assert_eq!(
        a.natty.get_leader(&bucket, "leader").await.unwrap(),
        Some(name.clone())
    );
    assert!(a.natty.have_leader(&name, &bucket, "leader").await);

    // Across several renewals nobody else takes over.
    let hold = Instant::now() + TTL * 2;
    while Instant::now() < hold {
        assert_eq!(settled_leader(&nodes, Duration::from_secs(1)).await, leader);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(terms.all().len(), 1, "leadership changed while healthy");
    terms.assert_safe();
    assert!(nodes[leader].leadership.fencing_token().is_some());
    for n in nodes {
        n.leadership.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_over_well_under_a_second() {
    let server = server();
    let (bucket, terms) = (unique("graceful"), Terms::default());
    let a = node(vec![server.url()], &bucket, "a", &terms).await;
    let b = node(vec![server.url()], &bucket, "b", &terms).await;
    let c = node(vec![server.url()], &bucket, "c", &terms).await;
    let nodes = [&a, &b, &c];
    let leader = settled_leader(&nodes, Duration::from_secs(5)).await;
    let old = nodes[leader].leadership.term().expect("leads");

    let cancelled = Instant::now();
    nodes[leader].shutdown.cancel();
    let (_, new) = next_leader(&nodes, leader, Duration::from_secs(1)).await;
    let handover = new.started_at() - cancelled;
    println!("graceful handover took {handover:?}");
    assert!(handover < Duration::from_millis(500), "took {handover:?}");
    assert!(old.ended_at().expect("ended") <= new.started_at());
    assert!(new.fencing_token() > old.fencing_token());
    terms.assert_safe();
    for n in nodes {
        n.leadership.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_leader_steps_down_before_the_next_term_starts() {
    let server = server();
    let proxy = Proxy::start(server.addr()).unwrap();
    let (bucket, terms) = (unique("cut"), Terms::default());
    let a = node(vec![proxy.url()], &bucket, "a", &terms).await;
    let old = timeout(Duration::from_secs(5), a.leadership.wait_leader())
        .await
        .expect("a leads")
        .unwrap();
    let b = node(vec![server.url()], &bucket, "b", &terms).await;
    let c = node(vec![server.url()], &bucket, "c", &terms).await;
    let nodes = [&a, &b, &c];
    assert_eq!(settled_leader(&nodes, Duration::from_secs(5)).await, 0);

    let cut = Instant::now();
    proxy.cut();
    let renew = config(&bucket, "a").renew_interval();
    let (_, new) = next_leader(&nodes, 0, TTL + renew + Duration::from_secs(3)).await;
    let ended = old.ended_at().expect("old term ended");
    println!(
        "old leader stepped down {:?} after the cut, new leader started {:?} after it",
        ended - cut,
        new.started_at() - cut
    );
    assert!(
        ended < new.started_at(),
        "old leader still led when the new term began"
    );
    assert!(!a.leadership.is_leader());
    assert!(matches!(
        a.leadership.state(),
        LeaderState::Follower { .. } | LeaderState::Unknown
    ));
    // The key outlives the last renew by the TTL; expiry markers or the poll add little.
    // Before 2.11 the server's max-age timer itself fires up to about a second late.
    let slack = if a.natty.server_info().supports_message_ttl() {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(1200)
    };
    assert!(
        new.started_at() - cut <= TTL + renew + slack,
        "new leader took {:?}",
        new.started_at() - cut
    );
    proxy.restore();
    terms.assert_safe();
    for n in nodes {
        n.leadership.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_never_yields_two_leaders() {
    let server = server();
    let (bucket, terms) = (unique("pause"), Terms::default());
    let a = node(vec![server.url()], &bucket, "a", &terms).await;
    let b = node(vec![server.url()], &bucket, "b", &terms).await;
    let c = node(vec![server.url()], &bucket, "c", &terms).await;
    let nodes = [&a, &b, &c];
    let leader = settled_leader(&nodes, Duration::from_secs(5)).await;
    let old = nodes[leader].leadership.term().unwrap();

    server.pause().unwrap();
    timeout(TTL, old.ended())
        .await
        .expect("leader steps down within its lease while the server is paused");
    assert!(nodes.iter().all(|n| !n.leadership.is_leader()));
    tokio::time::sleep(TTL / 2).await; // keep it paused past the server-side expiry too
    server.resume().unwrap();

    settled_leader(&nodes, TTL * 4).await;
    terms.assert_safe();
    for n in nodes {
        n.leadership.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_server_never_yields_two_leaders() {
    let server = server();
    let (bucket, terms) = (unique("restart"), Terms::default());
    let a = node(vec![server.url()], &bucket, "a", &terms).await;
    let b = node(vec![server.url()], &bucket, "b", &terms).await;
    let nodes = [&a, &b];
    settled_leader(&nodes, Duration::from_secs(5)).await;

    server.restart().unwrap();
    settled_leader(&nodes, TTL * 5).await;
    server.restart().unwrap();
    settled_leader(&nodes, TTL * 5).await;
    terms.assert_safe();
    for n in nodes {
        n.leadership.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_one_leader_when_the_leaders_server_dies() {
    let cluster = Cluster::start(3).unwrap();
    let (bucket, terms) = (unique("cluster"), Terms::default());
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut urls = cluster.urls();
        urls.rotate_left(i);
        let shutdown = CancellationToken::new();
        let natty = connect_urls(urls, PublishConfig::default()).await;
        // Right after start a cluster may not know enough peers to place an R3 bucket yet.
        let config = config(&bucket, &format!("n{i}"))
            .replicas(3)
            .shutdown(shutdown.clone());
        let placed = Instant::now() + Duration::from_secs(10);
        let leadership = loop {
            match natty.elect(config.clone()).await {
                Ok(leadership) => break leadership,
                Err(err) if Instant::now() < placed => {
                    assert_eq!(err.kind(), ElectionErrorKind::Bucket, "{err:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("elect: {err:?}"),
            }
        };
        terms.record(&leadership);
        nodes.push(Node {
            natty,
            leadership,
            shutdown,
        });
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let leader = settled_leader(&refs, Duration::from_secs(10)).await;
    let port = nodes[leader].natty.client().server_info().port;
    let server = cluster.index_of_port(port).expect("leader's server");
    cluster.node(server).kill();

    // Whoever leads next (the same node after reconnecting, or another), only one does.
    settled_leader(&refs, TTL * 6).await;
    terms.assert_safe();
    for n in &nodes {
        n.leadership.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_increase_over_twenty_handovers() {
    let server = server();
    let (bucket, terms) = (unique("fence"), Terms::default());
    let a = node(vec![server.url()], &bucket, "a", &terms).await;
    let b = node(vec![server.url()], &bucket, "b", &terms).await;
    let nodes = [&a, &b];
    let mut leader = settled_leader(&nodes, Duration::from_secs(5)).await;
    let mut tokens = vec![nodes[leader].leadership.fencing_token().unwrap()];
    for _ in 0..20 {
        assert!(nodes[leader].leadership.step_down().await.unwrap());
        let (next, term) = next_leader(&nodes, leader, Duration::from_secs(2)).await;
        tokens.push(term.fencing_token());
        leader = next;
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens not increasing: {tokens:?}"
    );
    terms.assert_safe();
    for n in nodes {
        n.leadership.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_while_leader_cancels_the_task_when_leadership_goes() {
    let server = server();
    let (bucket, terms) = (unique("task"), Terms::default());
    let a = node(vec![server.url()], &bucket, "a", &terms).await;
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let (dropped_tx, mut dropped_rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = tokio::spawn(election::run_while_leader(
        a.leadership.clone(),
        move |term| {
            let _ = started_tx.send(term.fencing_token());
            let guard = DropSignal(dropped_tx.clone(), term.fencing_token());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }
        },
    ));
    let within = |d| Duration::from_secs(d);
    let first = timeout(within(5), started_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.leadership.fencing_token(), Some(first));
    assert!(a.leadership.step_down().await.unwrap());
    let dropped = timeout(within(1), dropped_rx.recv()).await.unwrap();
    assert_eq!(dropped, Some(first), "the task outlived its term");
    assert!(!a.leadership.is_leader());

    // Alone, it takes the key back after sitting out a renew interval: a new task runs.
    let second = timeout(TTL * 2, started_rx.recv()).await.unwrap().unwrap();
    assert!(second > first);
    a.leadership.stop().await;
    let dropped = timeout(within(1), dropped_rx.recv()).await.unwrap();
    assert_eq!(dropped, Some(second), "the task outlived the campaign");
    timeout(within(1), runner).await.unwrap().unwrap();
}

struct DropSignal(tokio::sync::mpsc::UnboundedSender<u64>, u64);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_put_on_the_key_ends_the_term_at_once() {
    let server = server();
    let bucket = unique("foreign");
    let natty = connect_urls(vec![server.url()], PublishConfig::default()).await;
    // A long TTL puts the next compare-and-set renew 10 s away: only the watch can end the
    // term in time.
    let ttl = Duration::from_secs(30);
    let leadership = natty
        .elect(ElectionConfig::new(&bucket, "leader", "node-a").ttl(ttl))
        .await
        .unwrap();
    let term = timeout(Duration::from_secs(10), leadership.wait_leader())
        .await
        .unwrap()
        .unwrap();

    // A blind put, as Go natty's `AsLeader` or an operator with the nats CLI writes it.
    let plain = async_nats::connect(server.url()).await.unwrap();
    let kv = async_nats::jetstream::new(plain)
        .get_key_value(&bucket)
        .await
        .unwrap();
    let put_at = Instant::now();
    kv.put("leader", "intruder".into()).await.unwrap();
    timeout(Duration::from_secs(2), term.ended())
        .await
        .expect("the term outlived a foreign write by 2 s (the next renew was 10 s away)");
    let ended = term.ended_at().unwrap() - put_at;
    assert!(!leadership.is_leader());
    assert!(!term.is_current());
    let mut states = leadership.subscribe();
    let intruder = LeaderState::Follower {
        leader: Some("intruder".into()),
    };
    timeout(Duration::from_secs(2), states.wait_for(|s| *s == intruder))
        .await
        .expect("the follower names the writer")
        .unwrap();
    println!("term ended {ended:?} after the foreign put");
    leadership.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_key_lets_get_leader_see_nobody() {
    let server = server();
    let (bucket, terms) = (unique("release"), Terms::default());
    let a = node(vec![server.url()], &bucket, "a", &terms).await;
    timeout(Duration::from_secs(5), a.leadership.wait_leader())
        .await
        .unwrap()
        .unwrap();
    assert!(a.natty.have_leader("a", &bucket, "leader").await);
    a.leadership.stop().await;
    assert!(a.leadership.is_stopped());
    assert_eq!(a.natty.get_leader(&bucket, "leader").await.unwrap(), None);
    assert_eq!(
        a.leadership.wait_leader().await.unwrap_err().kind(),
        ElectionErrorKind::Stopped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_bucket_with_another_ttl_is_a_mismatch() {
    let server = server();
    let natty = connect_urls(vec![server.url()], PublishConfig::default()).await;
    let bucket = unique("mismatch");
    natty
        .create_bucket(&bucket, Duration::from_secs(5), 1, "")
        .await
        .unwrap();
    let err = natty.elect(config(&bucket, "a")).await.unwrap_err();
    assert_eq!(err.kind(), ElectionErrorKind::TtlMismatch);
    let shutdown = CancellationToken::new();
    let err = natty
        .as_leader(config(&bucket, "a"), shutdown, || async {
            Ok::<_, String>(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ElectionErrorKind::TtlMismatch);
    // Same TTL: accepted.
    let same = natty
        .elect(config(&bucket, "a").ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    same.stop().await;
    let bad = natty.elect(config("bad bucket", "a")).await.unwrap_err();
    assert_eq!(bad.kind(), ElectionErrorKind::InvalidConfig);
}

// Go natty's AsLeader scenarios (leader_test.go).

type Runs = Arc<Mutex<Vec<String>>>;

fn spawn_as_leader(
    natty: &Natty,
    bucket: &str,
    name: &str,
    runs: &Runs,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let (natty, runs, name) = (natty.clone(), Arc::clone(runs), name.to_owned());
    let config = config(bucket, &name).interval(Duration::from_millis(100));
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        natty
            .as_leader(config, token, || {
                runs.lock().unwrap().push(name.clone());
                async { Ok::<_, String>(()) }
            })
            .await
            .expect("as_leader");
    });
    (shutdown, task)
}

/// Wait until `name` has run `f` at least `count` more times than `runs` held at `since`.
async fn runs_of(runs: &Runs, name: &str, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    let base = runs.lock().unwrap().iter().filter(|n| *n == name).count();
    loop {
        let now = runs.lock().unwrap().iter().filter(|n| *n == name).count();
        if now >= base + count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not run f {count} times"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_leader_runs_f_on_exactly_one_of_three_nodes() {
    let server = server();
    let natty = connect_urls(vec![server.url()], PublishConfig::default()).await;
    let (bucket, runs) = (unique("go-one"), Runs::default());
    let nodes: Vec<_> = (0..3)
        .map(|i| spawn_as_leader(&natty, &bucket, &format!("node-{i}"), &runs))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "f did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (shutdown, task) in nodes {
        shutdown.cancel();
        timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }
    let runs = runs.lock().unwrap().clone();
    assert!(
        runs.iter().all(|n| *n == runs[0]),
        "more than one executor: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_leader_fails_over_to_node_two_and_back_to_node_one() {
    let server = server();
    let natty = connect_urls(vec![server.url()], PublishConfig::default()).await;
    let (bucket, runs) = (unique("go-failover"), Runs::default());
    let (stop1, task1) = spawn_as_leader(&natty, &bucket, "node-1", &runs);
    runs_of(&runs, "node-1", 2, Duration::from_secs(5)).await;
    let (stop2, task2) = spawn_as_leader(&natty, &bucket, "node-2", &runs);
    runs_of(&runs, "node-1", 5, Duration::from_secs(5)).await;
    assert!(!runs.lock().unwrap().contains(&"node-2".to_owned()));

    stop1.cancel();
    timeout(Duration::from_secs(2), task1)
        .await
        .unwrap()
        .unwrap();
    let after_stop = runs.lock().unwrap().len();
    runs_of(&runs, "node-2", 3, Duration::from_secs(2)).await;
    assert!(runs.lock().unwrap()[after_stop..]
        .iter()
        .all(|n| n == "node-2"));

    stop2.cancel();
    timeout(Duration::from_secs(2), task2)
        .await
        .unwrap()
        .unwrap();
    let (stop1, task1) = spawn_as_leader(&natty, &bucket, "node-1", &runs);
    let after_restart = runs.lock().unwrap().len();
    runs_of(&runs, "node-1", 3, Duration::from_secs(2)).await;
    assert!(runs.lock().unwrap()[after_restart..]
        .iter()
        .all(|n| n == "node-1"));
    stop1.cancel();
    timeout(Duration::from_secs(2), task1)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_leader_never_runs_f_on_a_non_leader() {
    let server = server();
    let natty = connect_urls(vec![server.url()], PublishConfig::default()).await;
    let (bucket, runs) = (unique("go-never"), Runs::default());
    let (stop1, task1) = spawn_as_leader(&natty, &bucket, "node-1", &runs);
    runs_of(&runs, "node-1", 1, Duration::from_secs(5)).await;
    let (stop2, task2) = spawn_as_leader(&natty, &bucket, "node-2", &runs);
    // Node 2 campaigns through several renewals of node 1's lease.
    runs_of(&runs, "node-1", 10, Duration::from_secs(5)).await;
    assert!(!runs.lock().unwrap().contains(&"node-2".to_owned()));
    for (stop, task) in [(stop1, task1), (stop2, task2)] {
        stop.cancel();
        timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }
}

// The soak: random crashes, pauses and partitions; leadership intervals never overlap.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_random_faults_never_overlap_leadership() {
    let secs = common::soak_secs(12);
    let server = server();
    let (bucket, terms) = (unique("soak"), Terms::default());
    let mut proxies = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let proxy = Proxy::start(server.addr()).unwrap();
        nodes.push(node(vec![proxy.url()], &bucket, &format!("n{i}"), &terms).await);
        proxies.push(proxy);
    }
    let mut rng = Rng::seeded();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut faults = Vec::new();
    while Instant::now() < end {
        // Mostly hit the leader, where faults matter.
        let leader = nodes.iter().position(|n| n.leadership.is_leader());
        let victim = match leader {
            Some(leader) if rng.below(3) > 0 => leader,
            _ => rng.below(nodes.len() as u64) as usize,
        };
        let outage = Duration::from_millis(200 + rng.below(2800));
        match rng.below(4) {
            0 => {
                // A crash: the node disappears without releasing, then a new one joins.
                faults.push("crash");
                proxies[victim].cut();
                nodes[victim].shutdown.cancel();
                tokio::time::sleep(outage).await;
                proxies[victim].restore();
                let name = format!("n{victim}-{}", faults.len());
                nodes[victim] = node(vec![proxies[victim].url()], &bucket, &name, &terms).await;
            }
            1 => {
                faults.push("cut");
                proxies[victim].cut();
                tokio::time::sleep(outage).await;
                proxies[victim].restore();
            }
            2 => {
                faults.push("slow link");
                proxies[victim].set_latency(Duration::from_millis(700));
                tokio::time::sleep(outage).await;
                proxies[victim].set_latency(Duration::ZERO);
            }
            _ => {
                faults.push("server pause");
                server.pause().unwrap();
                tokio::time::sleep(outage).await;
                server.resume().unwrap();
            }
        }
        terms.assert_safe();
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    settled_leader(&refs, TTL * 6).await;
    terms.assert_safe();
    println!(
        "soak: {} faults ({faults:?}), {} terms",
        faults.len(),
        terms.all().len()
    );
    for n in &nodes {
        n.leadership.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_carry_a_per_key_ttl_where_the_server_has_it() {
    let server = server();
    let (bucket, terms) = (unique("ttl"), Terms::default());
    let a = node(vec![server.url()], &bucket, "a", &terms).await;
    let term = timeout(Duration::from_secs(5), a.leadership.wait_leader())
        .await
        .unwrap()
        .unwrap();
    let stream = a
        .natty
        .jetstream()
        .get_stream(format!("KV_{bucket}"))
        .await
        .unwrap();
    let last = stream
        .get_last_raw_message_by_subject(&format!("$KV.{bucket}.leader"))
        .await
        .unwrap();
    assert_eq!(&last.payload[..], b"a");
    assert!(last.sequence >= term.fencing_token());
    let ttl = last.headers.get("Nats-TTL").map(|v| v.as_str().to_owned());
    if a.natty.server_info().supports_message_ttl() {
        assert_eq!(ttl.as_deref(), Some("2"), "per-key ttl of whole seconds");
    } else {
        assert_eq!(ttl, None, "older servers rely on the bucket ttl");
    }
    a.leadership.stop().await;
}
