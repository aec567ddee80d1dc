//! Partitioned consumer groups against a real server: per-key order over members and
//! instances, admin calls, typed errors, and `Unsupported` before 2.11.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natty::compat::GoNatty as _;

use futures_util::StreamExt;
use natty::consume::PanicMessage;
use natty::error::ConsumeErrorKind;
use natty::group::{
    ElasticGroupConfig, GroupErrorKind, MemberConfig, MemberMapping, MemberSummary, Partition,
    Partitioning, PartitioningFilter, StaticGroupConfig, ELASTIC_BUCKET, STATIC_BUCKET,
};
use natty::{CancellationToken, Config, HandlerFailure, Message, Natty};
use natty_testkit::{Cluster, Server};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

mod common;
use common::connect_with;

const DEADLINE: Duration = Duration::from_secs(90);

fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
}

/// A client of `server` that gives a request up after 3 s.
async fn connect(server: &Server) -> Natty {
    connect_with(Config::new([server.url()]).request_timeout(Duration::from_secs(3))).await
}

fn groups_supported(natty: &Natty) -> bool {
    let version = natty.server_info().version();
    let mut parts = version.trim_start_matches('v').split('.');
    let major: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 11)
}

/// What every handler call saw, shared by all instances of all members.
#[derive(Default)]
struct Checker {
    state: Mutex<CheckerState>,
    changed: Notify,
}

#[derive(Default)]
struct CheckerState {
    in_flight: HashSet<String>,
    handled: HashMap<String, Vec<u64>>,
    violations: Vec<String>,
}

impl Checker {
    fn lock(&self) -> std::sync::MutexGuard<'_, CheckerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enter a call for `key`; a second call for the key at the same time is a violation.
    fn enter(&self, key: &str) {
        let mut state = self.lock();
        if !state.in_flight.insert(key.to_owned()) {
            state
                .violations
                .push(format!("{key} handled twice at the same time"));
        }
    }

    /// Leave a call that handled `n` of `key`. Handled for the first time below a number
    /// handled before, it overtook it. A number handled again (a redelivery whose ack was lost
    /// with a dying server: at-least-once) is a replay, not a reorder.
    fn leave(&self, key: &str, n: Option<u64>) {
        let mut state = self.lock();
        state.in_flight.remove(key);
        if let Some(n) = n {
            let handled = state.handled.entry(key.to_owned()).or_default();
            let highest = handled.iter().copied().max();
            let again = handled.contains(&n);
            if let Some(highest) = highest.filter(|&h| n < h && !again) {
                let violation = format!("{key}: {n} handled first after {highest}");
                state.violations.push(violation);
            }
            state.handled.entry(key.to_owned()).or_default().push(n);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Wait until every key has handled 0..per_key.
    async fn wait_complete(&self, keys: usize, per_key: u64) {
        let complete = || {
            let state = self.lock();
            (0..keys).all(|k| {
                state.handled.get(&key(k)).is_some_and(|handled| {
                    let distinct: HashSet<u64> = handled.iter().copied().collect();
                    distinct.len() as u64 == per_key
                })
            })
        };
        tokio::time::timeout(DEADLINE, async {
            loop {
                let changed = self.changed.notified();
                if complete() {
                    return;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let state = self.lock();
            let done = state.handled.values().map(Vec::len).sum::<usize>();
            panic!("not every message handled in time ({done} calls)")
        });
    }

    fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }
}

fn key(k: usize) -> String {
    format!("k{k}")
}

/// A handler that checks order and overlap, takes a little time, and fails some first
/// deliveries (the driver naks them; order must survive the redelivery).
fn handler(
    checker: Arc<Checker>,
    prefix: &'static str,
) -> impl tower::Service<
    Message,
    Response = (),
    Error = std::io::Error,
    Future = impl std::future::Future<Output = Result<(), std::io::Error>> + Send,
> + Send
       + 'static {
    tower::service_fn(move |msg: Message| {
        let checker = Arc::clone(&checker);
        async move {
            let subject = msg.subject().to_string();
            let key = subject
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("partition token not stripped: {subject}"))
                .to_owned();
            assert!(msg.extensions().get::<Partition>().is_some());
            let n: u64 = std::str::from_utf8(msg.payload())
                .ok()
                .and_then(|p| p.parse().ok())
                .expect("payload is a number");
            checker.enter(&key);
            tokio::time::sleep(Duration::from_micros(200 + (n % 7) * 100)).await;
            let fail = msg.info().delivered == 1 && (n * 31 + key.len() as u64).is_multiple_of(23);
            checker.leave(&key, (!fail).then_some(n));
            if fail {
                Err(std::io::Error::other("injected failure"))
            } else {
                Ok(())
            }
        }
    })
}

struct Instance {
    shutdown: CancellationToken,
    task: JoinHandle<Result<MemberSummary, natty::group::GroupError>>,
}

async fn start_instance(server: &Server, config: MemberConfig, checker: &Arc<Checker>) -> Instance {
    let natty = connect(server).await;
    let shutdown = CancellationToken::new();
    let service = handler(Arc::clone(checker), "ord.");
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let group = natty.static_group("ORD", "g").unwrap();
        group.serve(config, token, service).await
    });
    Instance { shutdown, task }
}

/// Stop every instance; each must stop in time, without panicking or an error.
async fn stop_all(instances: Vec<Instance>) -> Vec<MemberSummary> {
    let mut summaries = Vec::new();
    for instance in instances {
        instance.shutdown.cancel();
        let summary = tokio::time::timeout(DEADLINE, instance.task)
            .await
            .expect("stops in time")
            .expect("no panic")
            .expect("serves without error");
        summaries.push(summary);
    }
    summaries
}

/// Publish `per_key` numbers to every key, a round at a time with every ack awaited, so each
/// key's numbers are stored in order (batched publishing may reorder a retried message).
async fn publish_keys(natty: &Natty, keys: usize, per_key: u64) {
    for n in 0..per_key {
        let round = (0..keys).map(|k| {
            let subject = format!("ord.{}", key(k));
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
}

/// The member consumers' pending counts, read back through a plain client.
async fn consumer_pending(server: &Server, stream: &str, consumer: &str) -> (u64, usize) {
    let client = async_nats::connect(server.url())
        .await
        .expect("plain client");
    let js = async_nats::jetstream::new(client);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .expect("stream")
        .get_consumer(consumer)
        .await
        .expect("consumer");
    let info = consumer.info().await.expect("info");
    (info.num_pending, info.num_ack_pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_two_instances_keep_per_key_order() {
    trace();
    let server = Server::start().unwrap();
    let admin = connect(&server).await;
    if !groups_supported(&admin) {
        let err = admin
            .stream("ORD")
            .unwrap()
            .create_partitioned(&Partitioning::new("ord.*", 6))
            .await;
        assert!(err.is_ok(), "stream transforms exist on 2.10");
        return assert_unsupported(&admin).await;
    }
    admin
        .stream("ORD")
        .unwrap()
        .create_partitioned(&Partitioning::new("ord.*", 6))
        .await
        .unwrap();
    let config = StaticGroupConfig::with_members(6, ["m1", "m2", "m3"]);
    admin
        .static_group("ORD", "g")
        .unwrap()
        .create(&config)
        .await
        .unwrap();

    let checker = Arc::new(Checker::default());
    let mut instances = Vec::new();
    for member in ["m1", "m2", "m3"] {
        for _ in 0..2 {
            let config = MemberConfig::new(member);
            instances.push(start_instance(&server, config, &checker).await);
        }
    }
    let (keys, per_key) = (60, 30);
    publish_keys(&admin, keys, per_key).await;
    checker.wait_complete(keys, per_key).await;

    let summaries = stop_all(instances).await;
    let total = |count: fn(&MemberSummary) -> u64| summaries.iter().map(count).sum::<u64>();
    let (pins, failed, handled) = (total(|s| s.pins), total(|s| s.failed), total(|s| s.handled));
    assert_eq!(checker.violations(), Vec::<String>::new(), "{summaries:#?}");
    assert!(
        pins >= 3,
        "every member had a pinned instance, got {pins} pins"
    );
    assert!(
        failed > 0,
        "some first deliveries failed and came back in order"
    );
    assert_eq!(
        handled,
        keys as u64 * per_key,
        "each message handled once after its failure"
    );
    for member in ["m1", "m2", "m3"] {
        let (pending, ack_pending) = consumer_pending(&server, "ORD", &format!("g-{member}")).await;
        assert_eq!((pending, ack_pending), (0, 0), "{member} left work behind");
    }
}

async fn assert_unsupported(natty: &Natty) {
    let config = StaticGroupConfig::with_members(2, ["a", "b"]);
    let err = natty
        .static_group("ORD", "g")
        .unwrap()
        .create(&config)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GroupErrorKind::Unsupported);
    let err = natty
        .static_group("ORD", "g")
        .unwrap()
        .serve(
            MemberConfig::new("a"),
            CancellationToken::new(),
            tower::service_fn(|_: Message| async { Ok::<_, std::io::Error>(()) }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GroupErrorKind::Unsupported);
    assert_eq!(
        natty
            .stream("ORD")
            .unwrap()
            .static_groups()
            .await
            .unwrap_err()
            .kind(),
        GroupErrorKind::Unsupported
    );
}

#[tokio::test]
async fn servers_before_2_11_answer_unsupported() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    if groups_supported(&natty) {
        // The same calls work here; the 2.10 answer is checked when run against 2.10.
        natty
            .stream("ORD")
            .unwrap()
            .create_partitioned(&Partitioning::new("ord.*", 2))
            .await
            .unwrap();
        let config = StaticGroupConfig::with_members(2, ["a", "b"]);
        natty
            .static_group("ORD", "g")
            .unwrap()
            .create(&config)
            .await
            .unwrap();
        assert_eq!(
            natty.stream("ORD").unwrap().static_groups().await.unwrap(),
            vec!["g"]
        );
    } else {
        assert_unsupported(&natty).await;
    }
}

#[tokio::test]
async fn admin_creates_lists_reads_and_deletes_groups_in_orbits_shape() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    if !groups_supported(&natty) {
        return assert_unsupported(&natty).await;
    }
    natty
        .stream("ORD")
        .unwrap()
        .create_partitioned(&Partitioning::new("ord.*", 4))
        .await
        .unwrap();
    let by_members = StaticGroupConfig::with_members(4, ["b", "a"]).filters(["ord.*"]);
    let by_mappings = StaticGroupConfig::with_mappings(
        4,
        [
            MemberMapping::new("x", [0, 3]),
            MemberMapping::new("y", [1, 2]),
        ],
    );
    natty
        .static_group("ORD", "g1")
        .unwrap()
        .create(&by_members)
        .await
        .unwrap();
    natty
        .static_group("ORD", "g2")
        .unwrap()
        .create(&by_mappings)
        .await
        .unwrap();
    // Idempotent with the same configuration; drift with another.
    natty
        .static_group("ORD", "g1")
        .unwrap()
        .create(&by_members)
        .await
        .unwrap();
    let other = StaticGroupConfig::with_members(4, ["a"]);
    assert_eq!(
        natty
            .static_group("ORD", "g1")
            .unwrap()
            .create(&other)
            .await
            .unwrap_err()
            .kind(),
        GroupErrorKind::ConfigDrift
    );

    // Stored as orbit stores it, read back through a plain client.
    let client = async_nats::connect(server.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(STATIC_BUCKET)
        .await
        .unwrap();
    let stored = kv.get("ORD.g1").await.unwrap().expect("key ORD.g1");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&stored).unwrap(),
        serde_json::json!({"max_members": 4, "filters": ["ord.*"], "members": ["b", "a"]})
    );
    let stored = kv.get("ORD.g2").await.unwrap().expect("key ORD.g2");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&stored).unwrap(),
        serde_json::json!({"max_members": 4, "member_mappings": [
            {"member": "x", "partitions": [0, 3]}, {"member": "y", "partitions": [1, 2]}]})
    );

    assert_eq!(
        natty.stream("ORD").unwrap().static_groups().await.unwrap(),
        vec!["g1", "g2"]
    );
    assert_eq!(
        natty
            .static_group("ORD", "g2")
            .unwrap()
            .config()
            .await
            .unwrap(),
        by_mappings
    );
    assert_eq!(
        natty
            .static_group("ORD", "g1")
            .unwrap()
            .member_partitions("a")
            .await
            .unwrap(),
        vec![0, 1]
    );
    assert_eq!(
        natty
            .static_group("ORD", "g2")
            .unwrap()
            .member_partitions("x")
            .await
            .unwrap(),
        vec![0, 3]
    );
    assert_eq!(
        natty
            .static_group("ORD", "g1")
            .unwrap()
            .member_partitions("z")
            .await
            .unwrap_err()
            .kind(),
        GroupErrorKind::NotMember
    );
    assert_eq!(
        natty
            .static_group("ORD", "nope")
            .unwrap()
            .config()
            .await
            .unwrap_err()
            .kind(),
        GroupErrorKind::NotFound
    );
    let invalid = StaticGroupConfig::with_mappings(2, [MemberMapping::new("x", [0])]);
    assert_eq!(
        natty
            .static_group("ORD", "g3")
            .unwrap()
            .create(&invalid)
            .await
            .unwrap_err()
            .kind(),
        GroupErrorKind::InvalidConfig
    );
    assert_eq!(
        natty
            .static_group("NOPE", "g")
            .unwrap()
            .create(&by_members)
            .await
            .unwrap_err()
            .kind(),
        GroupErrorKind::StreamNotFound
    );

    // A member's consumer carries orbit's name, filters and pinning.
    let shutdown = CancellationToken::new();
    let serving = {
        let natty = natty.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            natty
                .static_group("ORD", "g1")
                .unwrap()
                .serve(
                    MemberConfig::new("a"),
                    shutdown,
                    tower::service_fn(|_: Message| async { Ok::<_, std::io::Error>(()) }),
                )
                .await
        })
    };
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js.get_stream("ORD").await.unwrap();
    let info = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(info) = stream.consumer_info("g1-a").await {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("member consumer created");
    let mut filters = info.config.filter_subjects.clone();
    if filters.is_empty() {
        filters.push(info.config.filter_subject.clone());
    }
    assert_eq!(filters, vec!["0.ord.*", "1.ord.*"]);
    assert_eq!(info.config.priority_groups, vec!["PCG"]);
    assert_eq!(
        info.config.priority_policy,
        async_nats::jetstream::consumer::PriorityPolicy::PinnedClient
    );
    assert_eq!(info.config.priority_timeout, Duration::from_secs(5));
    assert_eq!(info.config.ack_wait, Duration::from_secs(5));

    // Deleting the group stops its members with `Deleted` and removes their consumers.
    natty
        .static_group("ORD", "g1")
        .unwrap()
        .delete()
        .await
        .unwrap();
    let stopped = tokio::time::timeout(DEADLINE, serving)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.unwrap_err().kind(), GroupErrorKind::Deleted);
    assert!(stream.consumer_info("g1-a").await.is_err());
    assert_eq!(
        natty.stream("ORD").unwrap().static_groups().await.unwrap(),
        vec!["g2"]
    );
    assert!(kv.get("ORD.g1").await.unwrap().is_none());
    shutdown.cancel();
}

#[tokio::test]
async fn serving_an_unknown_group_or_as_a_stranger_is_refused() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    if !groups_supported(&natty) {
        return assert_unsupported(&natty).await;
    }
    natty
        .stream("ORD")
        .unwrap()
        .create_partitioned(&Partitioning::new("ord.*", 2))
        .await
        .unwrap();
    let serve = |group: &'static str, member: &'static str| {
        let handle = natty.static_group("ORD", group).unwrap();
        async move {
            let service = tower::service_fn(|_: Message| async { Ok::<_, std::io::Error>(()) });
            handle
                .serve(MemberConfig::new(member), CancellationToken::new(), service)
                .await
        }
    };
    assert_eq!(
        serve("g", "a").await.unwrap_err().kind(),
        GroupErrorKind::NotFound
    );
    let config = StaticGroupConfig::with_members(2, ["a", "b"]);
    natty
        .static_group("ORD", "g")
        .unwrap()
        .create(&config)
        .await
        .unwrap();
    assert_eq!(
        serve("g", "z").await.unwrap_err().kind(),
        GroupErrorKind::NotMember
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elastic_members_added_and_dropped_under_load_keep_order_and_lose_nothing() {
    trace();
    let server = Server::start().unwrap();
    let admin = connect(&server).await;
    admin.create_stream("ES", ["es.*"]).await.unwrap();
    let config = ElasticGroupConfig::new(4, [PartitioningFilter::new("es.*", [1])])
        .max_buffered_messages(100_000)
        .members(["a"]);
    if !groups_supported(&admin) {
        let err = admin
            .elastic_group("ES", "eg")
            .unwrap()
            .create(&config)
            .await
            .unwrap_err();
        return assert_eq!(err.kind(), GroupErrorKind::Unsupported);
    }
    admin
        .elastic_group("ES", "eg")
        .unwrap()
        .create(&config)
        .await
        .unwrap();

    // Orbit's shape and stream, read back through a plain client.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stored = js
        .get_key_value(ELASTIC_BUCKET)
        .await
        .unwrap()
        .get("ES.eg")
        .await
        .unwrap()
        .expect("key ES.eg");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&stored).unwrap(),
        serde_json::json!({"max_members": 4, "max_buffered_msg": 100000, "members": ["a"],
            "partitioning_filters": [{"filter": "es.*", "partitioning_wildcards": [1]}]})
    );
    let mut buffer = js.get_stream("ES-eg").await.unwrap();
    let info = buffer.info().await.unwrap();
    assert_eq!(
        info.config.retention,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    let source = &info.config.sources.as_ref().expect("sources")[0];
    assert_eq!(source.name, "ES");
    assert_eq!(
        source.subject_transforms[0].destination,
        "{{Partition(4,1)}}.es.{{Wildcard(1)}}"
    );

    let checker = Arc::new(Checker::default());
    let mut instances = Vec::new();
    for member in ["a", "b", "c"] {
        let natty = connect(&server).await;
        let shutdown = CancellationToken::new();
        let service = handler(Arc::clone(&checker), "es.");
        let token = shutdown.clone();
        let config = MemberConfig::new(member).ack_wait(Duration::from_secs(2));
        let task = tokio::spawn(async move {
            natty
                .elastic_group("ES", "eg")
                .unwrap()
                .serve(config, token, service)
                .await
        });
        instances.push(Instance { shutdown, task });
    }

    // Load throughout; b joins, then c, then a leaves.
    let (keys, per_key) = (24, 60);
    for n in 0..per_key {
        let round = (0..keys).map(|k| {
            let subject = format!("es.{}", key(k));
            let admin = &admin;
            async move {
                admin
                    .publisher()
                    .publish_acked(&subject, n.to_string())
                    .await
            }
        });
        futures_util::future::try_join_all(round)
            .await
            .expect("publish");
        match n {
            10 => assert_eq!(
                admin
                    .elastic_group("ES", "eg")
                    .unwrap()
                    .add_members(["b"])
                    .await
                    .unwrap()
                    .len(),
                2
            ),
            25 => assert_eq!(
                admin
                    .elastic_group("ES", "eg")
                    .unwrap()
                    .add_members(["c"])
                    .await
                    .unwrap()
                    .len(),
                3
            ),
            40 => assert_eq!(
                admin
                    .elastic_group("ES", "eg")
                    .unwrap()
                    .drop_members(["a"])
                    .await
                    .unwrap(),
                ["b", "c"]
            ),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        admin
            .elastic_group("ES", "eg")
            .unwrap()
            .member_partitions("b")
            .await
            .unwrap(),
        vec![0, 1]
    );
    assert_eq!(
        admin
            .elastic_group("ES", "eg")
            .unwrap()
            .member_partitions("a")
            .await
            .unwrap_err()
            .kind(),
        GroupErrorKind::NotMember
    );
    checker.wait_complete(keys, per_key as u64).await;

    let summaries = stop_all(instances).await;
    assert_eq!(checker.violations(), Vec::<String>::new(), "{summaries:#?}");
    assert!(
        summaries.iter().all(|s| s.handled > 0),
        "every member served: {summaries:#?}"
    );
    // Every message acked: the work queue is empty.
    let info = buffer.info().await.unwrap();
    assert_eq!(info.state.messages, 0);
    assert_eq!(
        admin.stream("ES").unwrap().elastic_groups().await.unwrap(),
        vec!["eg"]
    );
    admin
        .elastic_group("ES", "eg")
        .unwrap()
        .delete()
        .await
        .unwrap();
    assert!(js.get_stream("ES-eg").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_on_r3_streams_keeps_going_when_a_server_dies() {
    trace();
    let cluster = Cluster::start(3).unwrap();
    let connect_all = |rotate: usize| {
        let mut urls = cluster.urls();
        urls.rotate_left(rotate % 3);
        async move {
            Natty::connect(Config::new(urls).request_timeout(Duration::from_secs(3)))
                .await
                .expect("connect")
        }
    };
    let admin = connect_all(1).await;
    if !groups_supported(&admin) {
        return assert_unsupported(&admin).await;
    }
    // Right after start a cluster may not know enough peers to place an R3 stream yet.
    let partitioning = Partitioning::new("ord.*", 4).replicas(3);
    let placed = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Err(err) = admin
        .stream("ORD")
        .unwrap()
        .create_partitioned(&partitioning)
        .await
    {
        assert!(
            tokio::time::Instant::now() < placed,
            "stream not placed: {err:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let config = StaticGroupConfig::with_members(4, ["m1", "m2"]);
    admin
        .static_group("ORD", "g")
        .unwrap()
        .create(&config)
        .await
        .unwrap();
    let js = admin.jetstream();
    let bucket = js.get_key_value(STATIC_BUCKET).await.unwrap();
    let mut bucket_stream = js.get_stream(format!("KV_{STATIC_BUCKET}")).await.unwrap();
    assert_eq!(bucket_stream.info().await.unwrap().config.num_replicas, 3);
    drop(bucket);

    let checker = Arc::new(Checker::default());
    let mut instances = Vec::new();
    for (i, member) in ["m1", "m1", "m2", "m2"].into_iter().enumerate() {
        let natty = connect_all(i).await;
        let shutdown = CancellationToken::new();
        let service = handler(Arc::clone(&checker), "ord.");
        let token = shutdown.clone();
        let config = MemberConfig::new(member).ack_wait(Duration::from_secs(2));
        let task = tokio::spawn(async move {
            natty
                .static_group("ORD", "g")
                .unwrap()
                .serve(config, token, service)
                .await
        });
        instances.push(Instance { shutdown, task });
    }

    let (keys, per_key) = (16, 60);
    for n in 0..per_key {
        for k in 0..keys {
            // A publish lost with the dying server is sent again: at worst stored twice, and
            // still before the key's next number.
            let subject = format!("ord.{}", key(k));
            let retry_until = tokio::time::Instant::now() + Duration::from_secs(30);
            while let Err(err) = admin
                .publisher()
                .publish_acked(&subject, n.to_string())
                .await
            {
                assert!(
                    tokio::time::Instant::now() < retry_until,
                    "publish: {err:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if n == 20 {
            cluster.node(0).kill();
        }
    }
    checker.wait_complete(keys, per_key as u64).await;

    let summaries = stop_all(instances).await;
    assert_eq!(checker.violations(), Vec::<String>::new(), "{summaries:#?}");
}

#[tokio::test]
async fn other_consumer_settings_or_a_changed_group_answer_config_drift() {
    let server = Server::start().unwrap();
    let natty = connect(&server).await;
    if !groups_supported(&natty) {
        return assert_unsupported(&natty).await;
    }
    natty
        .stream("ORD")
        .unwrap()
        .create_partitioned(&Partitioning::new("ord.*", 2))
        .await
        .unwrap();
    let config = StaticGroupConfig::with_members(2, ["a", "b"]);
    natty
        .static_group("ORD", "g")
        .unwrap()
        .create(&config)
        .await
        .unwrap();
    let noop = || tower::service_fn(|_: Message| async { Ok::<_, std::io::Error>(()) });

    let shutdown = CancellationToken::new();
    let serving = {
        let (natty, shutdown) = (natty.clone(), shutdown.clone());
        let service = noop();
        tokio::spawn(async move {
            natty
                .static_group("ORD", "g")
                .unwrap()
                .serve(MemberConfig::new("a"), shutdown, service)
                .await
        })
    };
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js.get_stream("ORD").await.unwrap();
    tokio::time::timeout(DEADLINE, async {
        while stream.consumer_info("g-a").await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("member consumer created");

    // Another instance of `a` with another ack wait would change the shared consumer.
    let other = MemberConfig::new("a").ack_wait(Duration::from_secs(3));
    let err = natty
        .static_group("ORD", "g")
        .unwrap()
        .serve(other, CancellationToken::new(), noop())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GroupErrorKind::ConfigDrift);

    // A static group's configuration changed under a running member (here by a plain client,
    // as another tool would) stops it.
    let kv = js.get_key_value(STATIC_BUCKET).await.unwrap();
    let changed = StaticGroupConfig::with_members(2, ["a", "c"]);
    kv.put(
        "ORD.g",
        serde_json::to_vec(&serde_json::json!({"max_members": 2, "members": ["a", "c"]}))
            .unwrap()
            .into(),
    )
    .await
    .unwrap();
    assert_eq!(
        natty
            .static_group("ORD", "g")
            .unwrap()
            .config()
            .await
            .unwrap(),
        changed
    );
    let stopped = tokio::time::timeout(DEADLINE, serving)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.unwrap_err().kind(), GroupErrorKind::ConfigDrift);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_that_never_arrives_is_not_overtaken_by_later_messages_of_its_key() {
    trace();
    let server = Server::start().unwrap();
    let admin = connect(&server).await;
    if !groups_supported(&admin) {
        return assert_unsupported(&admin).await;
    }
    admin
        .stream("ORD")
        .unwrap()
        .create_partitioned(&Partitioning::new("ord.*", 1))
        .await
        .unwrap();
    let group = StaticGroupConfig::with_members(1, ["m1"]);
    admin
        .static_group("ORD", "g")
        .unwrap()
        .create(&group)
        .await
        .unwrap();

    // A handler that never fails, and remembers the pin the server put on its messages.
    let checker = Arc::new(Checker::default());
    let pin: Arc<Mutex<Option<String>>> = Arc::default();
    let service = {
        let (checker, pin) = (Arc::clone(&checker), Arc::clone(&pin));
        tower::service_fn(move |msg: Message| {
            let (checker, pin) = (Arc::clone(&checker), Arc::clone(&pin));
            async move {
                let n: u64 = std::str::from_utf8(msg.payload()).unwrap().parse().unwrap();
                *pin.lock().unwrap() = msg
                    .headers()
                    .get_all("Nats-Pin-Id")
                    .last()
                    .map(str::to_owned);
                checker.enter("k0");
                checker.leave("k0", Some(n));
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let member = connect(&server).await;
    let shutdown = CancellationToken::new();
    let config = MemberConfig::new("m1").ack_wait(Duration::from_secs(2));
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        member
            .static_group("ORD", "g")
            .unwrap()
            .serve(config, token, service)
            .await
    });

    admin
        .publisher()
        .publish_acked("ord.k0", "0")
        .await
        .unwrap();
    checker.wait_complete(1, 1).await;
    let pin = pin
        .lock()
        .unwrap()
        .clone()
        .expect("the server pinned the member");

    // Another client pulls with the member's pin and never acks what it gets: for the member
    // that delivery never arrives, and the server redelivers it after the ack wait.
    let thief = async_nats::connect(server.url()).await.unwrap();
    let inbox = thief.new_inbox();
    let mut stolen = thief.subscribe(inbox.clone()).await.unwrap();
    let pull =
        serde_json::json!({ "batch": 1, "expires": 20_000_000_000u64, "group": "PCG", "id": pin });
    thief
        .publish_with_reply(
            "$JS.API.CONSUMER.MSG.NEXT.ORD.g-m1",
            inbox,
            serde_json::to_vec(&pull).unwrap().into(),
        )
        .await
        .unwrap();
    thief.flush().await.unwrap();

    let per_key = 12;
    for n in 1..per_key {
        admin
            .publisher()
            .publish_acked("ord.k0", n.to_string())
            .await
            .unwrap();
    }
    let taken = tokio::time::timeout(DEADLINE, stolen.next())
        .await
        .expect("the pull with the member's pin got a message")
        .unwrap();
    let taken: u64 = std::str::from_utf8(&taken.payload)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        taken < per_key - 1,
        "a message with later ones behind it was taken, got {taken}"
    );

    checker.wait_complete(1, per_key).await;
    shutdown.cancel();
    let summary = tokio::time::timeout(DEADLINE, task)
        .await
        .expect("stops in time")
        .expect("no panic")
        .expect("serves without error");
    assert_eq!(
        checker.violations(),
        Vec::<String>::new(),
        "message {taken} was taken: {summary:?}"
    );
}

/// How the handler of [`serve_failing_once`] fails its target's first delivery.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FirstTry {
    /// The handler's future returns an error.
    Fails,
    /// The service's `call` panics, before it builds a future.
    PanicsInCall,
}

/// One delivery of the target message, as the handler saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Delivery {
    subject: String,
    stream_sequence: u64,
    delivered: u64,
}

/// What [`serve_failing_once`] saw.
struct FailedOnce {
    first_try: FirstTry,
    summary: MemberSummary,
    reports: Vec<HandlerFailure>,
    /// The target's deliveries, each with when it reached the service.
    target: Vec<(Delivery, tokio::time::Instant)>,
    violations: Vec<String>,
}

const TARGET_KEY: &str = "k1";
const TARGET_N: u64 = 3;
const KEYS: usize = 4;
const PER_KEY: u64 = 8;

/// Serve the only member of a group over `ORD` (2 partitions), its failure reports going to a
/// channel, with a service that checks order per key and fails the first delivery of number
/// 3 of `ord.k1` as `first_try` says; returns once every message was handled and the member
/// stopped.
async fn serve_failing_once(server: &Server, admin: &Natty, first_try: FirstTry) -> FailedOnce {
    admin
        .stream("ORD")
        .unwrap()
        .create_partitioned(&Partitioning::new("ord.*", 2))
        .await
        .unwrap();
    let group = StaticGroupConfig::with_members(2, ["m1"]);
    admin
        .static_group("ORD", "g")
        .unwrap()
        .create(&group)
        .await
        .unwrap();

    let checker = Arc::new(Checker::default());
    let target: Arc<Mutex<Vec<(Delivery, tokio::time::Instant)>>> = Arc::default();
    let service = {
        let (checker, target) = (Arc::clone(&checker), Arc::clone(&target));
        tower::service_fn(move |msg: Message| {
            let key = msg
                .subject()
                .strip_prefix("ord.")
                .unwrap_or_else(|| panic!("partition token not stripped: {}", msg.subject()))
                .to_owned();
            let n: u64 = std::str::from_utf8(msg.payload()).unwrap().parse().unwrap();
            let is_target = key == TARGET_KEY && n == TARGET_N;
            if is_target {
                let delivery = Delivery {
                    subject: msg.subject().to_owned(),
                    stream_sequence: msg.info().stream_sequence,
                    delivered: msg.info().delivered,
                };
                target
                    .lock()
                    .unwrap()
                    .push((delivery, tokio::time::Instant::now()));
            }
            let first_target = is_target && msg.info().delivered == 1;
            // The synchronous part of the call: a parse that panics.
            if first_target && first_try == FirstTry::PanicsInCall {
                panic!("cannot parse {}", msg.subject());
            }
            let checker = Arc::clone(&checker);
            async move {
                checker.enter(&key);
                let fail = first_target && first_try == FirstTry::Fails;
                checker.leave(&key, (!fail).then_some(n));
                if fail {
                    Err(std::io::Error::other("injected failure"))
                } else {
                    Ok(())
                }
            }
        })
    };
    let (errors, mut reports) = mpsc::channel(8);
    let config = MemberConfig::new("m1").failures(errors);
    let member = connect(server).await;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        member
            .static_group("ORD", "g")
            .unwrap()
            .serve(config, token, service)
            .await
    });

    publish_keys(admin, KEYS, PER_KEY).await;
    checker.wait_complete(KEYS, PER_KEY).await;
    let summary = stop_all(vec![Instance { shutdown, task }]).await.remove(0);
    let mut received = Vec::new();
    while let Ok(report) = reports.try_recv() {
        received.push(report);
    }
    let target = target.lock().unwrap().clone();
    FailedOnce {
        first_try,
        summary,
        reports: received,
        target,
        violations: checker.violations(),
    }
}

/// The target's deliveries are its first (the one that failed) and its redelivery, which
/// was handled and came at once (the first was nak'd, not left to the ack wait); the one
/// report names the first as the handler saw it, and the stream holds the target at that
/// sequence (read back through a plain client); the summary counts it as what it was.
async fn assert_reported_and_redelivered<'a>(
    server: &Server,
    seen: &'a FailedOnce,
) -> &'a HandlerFailure {
    let [(first, first_at), (again, again_at)] = seen.target.as_slice() else {
        panic!("the target is delivered twice, got {:?}", seen.target)
    };
    let ack_wait = MemberConfig::new("m1").timers().ack_wait;
    // Left unsettled it would come back after the ack wait, a little less as the server's
    // timer started before the service saw it; nak'd it comes back at once.
    assert!(
        *again_at - *first_at < ack_wait / 2,
        "nak'd, so redelivered well before the ack wait, got {:?}",
        *again_at - *first_at
    );
    assert_eq!(first.subject, format!("ord.{TARGET_KEY}"));
    assert_eq!(first.delivered, 1);
    assert_eq!(
        again,
        &Delivery {
            delivered: 2,
            ..first.clone()
        },
        "the failed delivery came back"
    );
    let [report] = seen.reports.as_slice() else {
        panic!("one report, got {:?}", seen.reports)
    };
    assert_eq!(
        (
            report.subject.as_str(),
            report.stream_sequence,
            report.delivered
        ),
        (
            first.subject.as_str(),
            first.stream_sequence,
            first.delivered
        ),
        "the report names the delivery as the handler saw it"
    );
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stored = js
        .get_stream("ORD")
        .await
        .unwrap()
        .get_raw_message(report.stream_sequence)
        .await
        .unwrap();
    assert!(
        stored.subject.ends_with(&format!(".ord.{TARGET_KEY}")),
        "{}",
        stored.subject
    );
    assert_eq!(stored.payload, TARGET_N.to_string());
    assert_eq!(seen.violations, Vec::<String>::new(), "{:?}", seen.summary);
    assert_eq!(
        seen.summary.handled,
        KEYS as u64 * PER_KEY,
        "every message handled once, the target after its redelivery: {:?}",
        seen.summary
    );
    let (failed, panicked) = match seen.first_try {
        FirstTry::Fails => (1, 0),
        FirstTry::PanicsInCall => (0, 1),
    };
    assert_eq!(
        (seen.summary.failed, seen.summary.panicked),
        (failed, panicked),
        "counted as what it was: {:?}",
        seen.summary
    );
    assert_eq!(seen.summary.dropped_reports, 0);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_members_failure_reports_arrive_on_its_channel() {
    trace();
    let server = Server::start().unwrap();
    let admin = connect(&server).await;
    if !groups_supported(&admin) {
        return assert_unsupported(&admin).await;
    }
    let seen = serve_failing_once(&server, &admin, FirstTry::Fails).await;
    let report = assert_reported_and_redelivered(&server, &seen).await;
    assert_eq!(report.error.kind(), ConsumeErrorKind::Handler);
    assert_eq!(
        std::error::Error::source(&report.error).map(ToString::to_string),
        Some("injected failure".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_members_call_is_caught_nakd_and_reported() {
    trace();
    let server = Server::start().unwrap();
    let admin = connect(&server).await;
    if !groups_supported(&admin) {
        return assert_unsupported(&admin).await;
    }
    let seen = serve_failing_once(&server, &admin, FirstTry::PanicsInCall).await;
    let report = assert_reported_and_redelivered(&server, &seen).await;
    assert_eq!(report.error.kind(), ConsumeErrorKind::Panicked);
    let text = std::error::Error::source(&report.error)
        .and_then(|source| source.downcast_ref::<PanicMessage>())
        .map(PanicMessage::as_str);
    assert_eq!(text, Some("cannot parse ord.k1"));
}
