//! The test kit's own tests, each against a real nats-server.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectOptions, Event};
use natty_testkit::{Cluster, Proxy, Server, Tls};
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(15);

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../assets")
        .join(name)
}

fn process_exists(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

async fn connect_with_events(url: &str) -> (async_nats::Client, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = ConnectOptions::new()
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .connect(url)
        .await
        .expect("connect");
    (client, rx)
}

async fn wait_for(events: &mut mpsc::UnboundedReceiver<Event>, want: fn(&Event) -> bool) {
    timeout(DEADLINE, async {
        while let Some(event) = events.recv().await {
            if want(&event) {
                return;
            }
        }
        panic!("event channel closed");
    })
    .await
    .expect("event within deadline");
}

#[tokio::test]
async fn start_serves_clients_and_drop_removes_process_and_files() {
    let server = Server::start().expect("start");
    let pid = server.pid().expect("pid");
    let store = server.store_dir();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut sub = client.subscribe("ping").await.expect("subscribe");
    client.publish("ping", "x".into()).await.expect("publish");
    let msg = timeout(DEADLINE, futures_next(&mut sub))
        .await
        .expect("message");
    assert_eq!(msg.payload.as_ref(), b"x");
    drop(server);
    assert!(!process_exists(pid), "process {pid} survived drop");
    assert!(!store.exists(), "store dir survived drop");
}

async fn futures_next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    use futures_util::StreamExt;
    sub.next().await.expect("subscription open")
}

#[tokio::test]
async fn restart_keeps_jetstream_data_on_same_port() {
    let server = Server::start().expect("start");
    let port = server.port();
    let (client, mut events) = connect_with_events(&server.url()).await;
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: "KEEP".into(),
        subjects: vec!["keep.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    js.publish("keep.a", "1".into())
        .await
        .unwrap()
        .await
        .expect("ack");

    server.kill();
    assert!(!server.is_running());
    wait_for(&mut events, |e| matches!(e, Event::Disconnected)).await;
    server.restart().expect("restart");
    assert_eq!(server.port(), port);
    wait_for(&mut events, |e| matches!(e, Event::Connected)).await;

    let mut stream = js
        .get_stream("KEEP")
        .await
        .expect("stream survives restart");
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn a_jetstream_config_snippet_keeps_the_data_in_the_servers_own_directory() {
    // The snippet's `jetstream` block replaces the kit's, store_dir included.
    let server = Server::builder()
        .config_snippet("jetstream { max_memory_store: 64MB }")
        .start()
        .expect("start");
    let varz: serde_json::Value =
        serde_json::from_str(&server.monitoring("/varz").expect("varz")).unwrap();
    let config = &varz["jetstream"]["config"];
    assert_eq!(
        config["max_memory"],
        64 * 1024 * 1024,
        "the snippet applies"
    );
    let store_dir = config["store_dir"].as_str().expect("a store dir");
    assert!(
        std::path::Path::new(store_dir).starts_with(server.store_dir()),
        "{store_dir} is not under {:?}",
        server.store_dir()
    );

    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: "OWN".into(),
        subjects: vec!["own.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let stream_dir = walk(&server.store_dir())
        .into_iter()
        .find(|p| p.ends_with("OWN"));
    assert!(
        stream_dir.is_some(),
        "the stream's files are in the server's directory"
    );

    // A store_dir of the snippet's own is refused before any process starts.
    let refused = Server::builder()
        .config_snippet("jetstream { store_dir: \"/tmp/elsewhere\" }")
        .start();
    assert!(
        matches!(refused, Err(natty_testkit::Error::InvalidConfig(_))),
        "{refused:?}"
    );
}

/// Every path under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

#[tokio::test]
async fn kill_ends_the_process() {
    let server = Server::start().expect("start");
    let pid = server.pid().expect("pid");
    server.kill();
    assert!(!server.is_running());
    assert!(!process_exists(pid));
    assert!(server.pid().is_none());
}

#[tokio::test]
async fn pause_stops_answers_and_resume_brings_them_back() {
    let server = Server::start().expect("start");
    let client = ConnectOptions::new()
        .request_timeout(Some(Duration::from_millis(300)))
        .connect(server.url())
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    js.query_account()
        .await
        .expect("account info while running");

    server.pause().expect("pause");
    let paused = js.query_account().await;
    assert!(paused.is_err(), "a paused server answered: {paused:?}");

    server.resume().expect("resume");
    timeout(DEADLINE, async {
        while js.query_account().await.is_err() {}
    })
    .await
    .expect("answers again after resume");
}

#[tokio::test]
async fn three_node_cluster_elects_a_meta_leader() {
    let cluster = Cluster::start(3).expect("cluster");
    let leader = cluster.wait_meta_leader(DEADLINE).expect("meta leader");
    assert!(
        ["n0", "n1", "n2"].contains(&leader.as_str()),
        "leader {leader}"
    );
    assert_eq!(cluster.urls().len(), 3);

    // A replicated stream needs the whole cluster: it proves the routes work.
    let addrs: Vec<async_nats::ServerAddr> = cluster
        .urls()
        .iter()
        .map(|u| u.parse().expect("url"))
        .collect();
    let client = async_nats::connect(addrs).await.expect("connect");
    let js = jetstream::new(client);
    // Right after start the meta leader may still be placing its first stream: a busy
    // machine can take longer than one request's timeout, so ask again until a deadline.
    let placed = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        let created = js
            .create_stream(jetstream::stream::Config {
                name: "R3".into(),
                subjects: vec!["r3".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await;
        match created {
            Ok(stream) => break stream,
            Err(err) => {
                assert!(tokio::time::Instant::now() < placed, "R3 stream: {err:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let info = stream.info().await.unwrap();
    let cluster_info = info.cluster.as_ref().expect("cluster info");
    assert_eq!(cluster_info.replicas.len(), 2);
}

#[tokio::test]
async fn proxy_cut_disconnects_and_restore_reconnects() {
    let server = Server::start().expect("start");
    let proxy = Proxy::start(server.addr()).expect("proxy");
    let (client, mut events) = connect_with_events(&proxy.url()).await;
    client.flush().await.expect("flush through proxy");

    proxy.cut();
    wait_for(&mut events, |e| matches!(e, Event::Disconnected)).await;
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Disconnected
    );

    proxy.restore();
    wait_for(&mut events, |e| matches!(e, Event::Connected)).await;
    client.flush().await.expect("flush after restore");
}

#[tokio::test]
async fn tls_server_rejects_a_plain_client() {
    let server = Server::builder()
        .tls(Tls::new(asset("server-cert.pem"), asset("server-key.pem")))
        .start()
        .expect("tls server");
    assert!(server.url().starts_with("tls://"));

    let plain = format!("nats://127.0.0.1:{}", server.port());
    let refused = timeout(DEADLINE, async_nats::connect(plain))
        .await
        .expect("bounded");
    assert!(
        refused.is_err(),
        "plain client connected to a TLS-only server"
    );

    let tls_client = ConnectOptions::new()
        .add_root_certificates(asset("ca.pem"))
        .connect(server.url())
        .await
        .expect("client trusting the test CA connects");
    tls_client.flush().await.expect("flush over tls");
}
