//! A small in-process HTTP load generator: keep-alive HTTP/1.1 connections, each sending
//! one request at a time, on hyper's client connection API.

use std::net::SocketAddr;
use std::time::Instant;

use axum::http::{header, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::scenario::{per_second, BoxError};

/// POST `body` to `path` on `addr` `requests` times over `connections` connections and return
/// the requests per second. Any answer but a 2xx fails the run.
pub(crate) async fn post(
    addr: SocketAddr,
    path: &'static str,
    body: Bytes,
    connections: usize,
    requests: usize,
) -> Result<f64, BoxError> {
    let start = Instant::now();
    let mut clients = JoinSet::new();
    for n in 0..connections {
        let share = requests / connections + usize::from(n < requests % connections);
        clients.spawn(one_connection(addr, path, body.clone(), share));
    }
    while let Some(client) = clients.join_next().await {
        client??;
    }
    Ok(per_second(requests, start.elapsed()))
}

async fn one_connection(
    addr: SocketAddr,
    path: &'static str,
    body: Bytes,
    requests: usize,
) -> Result<(), BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    for _ in 0..requests {
        sender.ready().await?;
        let request = Request::post(path)
            .header(header::HOST, "bench")
            .body(Full::new(body.clone()))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let answer = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            )
            .into());
        }
    }
    drop(sender);
    driver.await??;
    Ok(())
}
