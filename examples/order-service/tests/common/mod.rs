//! What the order-service tests share: the built binary run as a separate process (as an
//! orchestrator runs it) and a plain HTTP client.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `order-service --serve`, stopped with SIGTERM when dropped (a SIGKILL would
/// orphan the nats-server it started).
pub struct Service {
    pub child: Child,
    pub url: String,
}

impl Service {
    /// Start a node. With `nats_url` it uses that server; without, it starts its own
    /// nats-server with its files under `tmp`.
    pub async fn start(node: &str, nats_url: Option<&str>, tmp: &Path) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_order-service"));
        command
            .args(["--serve", "--addr", "127.0.0.1:0", "--node", node])
            .env("TMPDIR", tmp)
            .env_remove("NATS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(url) = nats_url {
            command.env("NATS_URL", url);
        }
        let mut child = command.spawn().expect("the order-service binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("stdout reads") {
                if let Some(rest) = line.split(" serving on ").nth(1) {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .expect("the service says where it serves within 30 s")
        .expect("the service says where it serves");
        // Keep draining stdout so the service never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, url }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn pid(&self) -> i32 {
        let pid = self.child.id().expect("the service is running");
        i32::try_from(pid).expect("a pid fits an i32")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else {
            return; // already exited and reaped
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits an i32"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // kill_on_drop is the last resort.
    }
}

/// An HTTP/1.1 client over real TCP connections.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// One answer: status, headers and the body as text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Http {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(15), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("no answer from {url} in 15 s"))
            .unwrap_or_else(|err| panic!("{url}: {err}"));
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&self, url: &str) -> Answer {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    /// POST an order as JSON, with an `Idempotency-Key` when given.
    pub async fn post_order(
        &self,
        url: &str,
        key: Option<&str>,
        order: &serde_json::Value,
    ) -> Answer {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(key.map(|key| ("Idempotency-Key", key)));
        self.send(Method::POST, url, &headers, order.to_string())
            .await
    }
}
