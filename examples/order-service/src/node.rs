//! One instance of the service: its own NATS connection, election campaign, consumer and
//! HTTP server. The demo runs two in one process to show the leader-only route.

use std::net::SocketAddr;
use std::time::Duration;

use natty::{CancellationToken, Config, ElectionConfig, Leadership, Natty};
use natty_axum::NattyState;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::app::{self, INDEX_BUCKET, ORDER_SUBJECTS, STATUS_BUCKET};
use crate::worker;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// A running instance.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) leadership: Leadership,
    natty: Natty,
    shutdown: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    consumer: JoinHandle<Result<natty::ConsumeSummary, natty::ConsumeError>>,
}

impl Node {
    /// Connect, campaign, consume, and serve on `listener`. `peers` are the base URLs of every
    /// node by name, for redirecting leader-only requests.
    pub(crate) async fn start(
        name: &str,
        config: Config,
        listener: TcpListener,
        peers: &[(String, String)],
    ) -> Result<Self, Error> {
        let natty = Natty::connect(config.name(name)).await?;
        natty.create_stream("ORDERS", [ORDER_SUBJECTS]).await?;
        natty
            .create_stream(worker::DEAD_LETTER_STREAM, [worker::DEAD_LETTER_SUBJECT])
            .await?;
        let election =
            ElectionConfig::new("order_service_leader", "admin", name).ttl(Duration::from_secs(5));
        let leadership = natty.elect(election).await?;
        let mut state = NattyState::builder(natty.clone())
            .allow_subjects(ORDER_SUBJECTS)
            .allow_bucket(STATUS_BUCKET)
            .allow_bucket(INDEX_BUCKET)
            .leadership(leadership.clone());
        for (peer, url) in peers {
            state = state.node_url(peer, url);
        }
        let state = state.build()?;

        let shutdown = CancellationToken::new();
        let consumer = tokio::spawn(worker::run(natty.clone(), name.into(), shutdown.clone()));
        let addr = listener.local_addr()?;
        let stop = shutdown.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, app::router(state))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        Ok(Self {
            name: name.into(),
            addr,
            leadership,
            natty,
            shutdown,
            http,
            consumer,
        })
    }

    /// This node's base URL.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stop serving and consuming, release leadership, and flush.
    pub(crate) async fn stop(self) -> Result<(), Error> {
        self.shutdown.cancel();
        self.http.await??;
        self.consumer.await??;
        self.leadership.stop().await;
        self.natty.shutdown().await;
        Ok(())
    }

    /// Until Ctrl-C.
    pub(crate) async fn serve_until_ctrl_c(self) -> Result<(), Error> {
        tokio::signal::ctrl_c().await?;
        self.stop().await
    }
}
