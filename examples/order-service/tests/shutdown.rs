//! The order service stops the way an orchestrator expects: SIGTERM (what docker, Kubernetes
//! and systemd send) ends it with status 0 within a bound, even with a stalled client
//! connected, and leaves no nats-server or temp files behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Http, Service};
use http::StatusCode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Processes whose command line mentions `dir` (the service's nats-server keeps its config
/// and store there).
fn processes_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&dir) {
            found.push(cmdline);
        }
    }
    found
}

/// A client that sends half its headers and stalls.
async fn stalled_client(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_service_with_status_0_and_leaves_no_nats_server() {
    let tmp = tempfile::tempdir().unwrap();
    let mut service = Service::start("node-1", None, tmp.path()).await;
    assert!(
        !processes_under(tmp.path()).is_empty(),
        "the service started its own nats-server under {}",
        tmp.path().display()
    );
    let http = Http::new();
    let ready = http.get(&service.url("/health/ready")).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    let _stalled = stalled_client(&service.url).await;

    let sent = Instant::now();
    kill(Pid::from_raw(service.pid()), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), service.child.wait())
        .await
        .expect("the service exits within 15 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    println!("exited {status} {:?} after SIGTERM", sent.elapsed());

    assert_eq!(
        processes_under(tmp.path()),
        Vec::<String>::new(),
        "left behind"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_in_its_headers_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let service = Service::start("node-1", None, tmp.path()).await;
    let mut stalled = stalled_client(&service.url).await;
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stalled.read_to_end(&mut answer))
        .await
        .expect("the server closes the stalled connection within 15 s")
        .ok();
    let held = started.elapsed();
    println!("stalled connection closed after {held:?}");
    assert!(held < Duration::from_secs(10), "held for {held:?}");
}
