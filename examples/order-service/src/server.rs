//! Serving the router over HTTP/1.1 with the bounds `axum::serve` leaves out: a deadline for
//! reading request headers (hyper's `header_read_timeout`, which needs a timer axum does not
//! set) and a deadline for the graceful drain. Without them a client that sends half its
//! headers and stalls holds its connection, and delays shutdown, for as long as it likes.
//! The connection handling is hyper's; this loop only accepts, spawns and bounds.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use natty::CancellationToken;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A client gets this long to send a request's start line and headers.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests in flight at shutdown get this long to finish; connections left are then closed.
pub(crate) const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` until `shutdown`, then drain within [`DRAIN_DEADLINE`].
pub(crate) async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let service = TowerToHyperService::new(app.clone());
                    let stop = shutdown.clone();
                    connections.spawn(async move {
                        let connection = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(connection);
                        let result = tokio::select! {
                            result = connection.as_mut() => result,
                            () = stop.cancelled() => {
                                // Finish the request in flight, then close.
                                connection.as_mut().graceful_shutdown();
                                connection.await
                            }
                        };
                        if let Err(err) = result {
                            tracing::debug!(%peer, error = %err, "connection closed with an error");
                        }
                    });
                }
                Err(err) => {
                    // Out of file descriptors, most likely: wait for connections to close.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the {DRAIN_DEADLINE:?} drain deadline; closing them"
        );
        connections.shutdown().await;
    }
}
