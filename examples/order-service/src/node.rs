//! One instance of the service: its own NATS connection, election campaign, consumer,
//! `order-lookup` service instance and HTTP server. The demo runs two in one process to show the leader-only route.

use std::net::SocketAddr;
use std::time::Duration;

use natty::{CancellationToken, Config, ElectionConfig, Leadership, Natty};
use natty_axum::NattyState;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use crate::app::{self, INDEX_BUCKET, ORDER_SUBJECTS, STATUS_BUCKET};
use crate::lookup::{self, LOOKUP_SUBJECT};
use crate::{server, worker};

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// A running instance.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) leadership: Leadership,
    natty: Natty,
    stop_http: CancellationToken,
    stop_consuming: CancellationToken,
    stop_lookup: CancellationToken,
    http: JoinHandle<()>,
    lookup: JoinHandle<natty::service::ServeSummary>,
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
        natty.stream("ORDERS")?.create([ORDER_SUBJECTS]).await?;
        natty
            .stream(worker::DEAD_LETTER_STREAM)?
            .create([worker::DEAD_LETTER_SUBJECT])
            .await?;
        let election =
            ElectionConfig::new("order_service_leader", "admin", name).ttl(Duration::from_secs(5));
        let leadership = natty.elect(election).await?;
        let mut state = NattyState::builder(natty.clone())
            .allow_subjects(ORDER_SUBJECTS)
            .allow_bucket(STATUS_BUCKET)
            .allow_bucket(INDEX_BUCKET)
            .allow_requests(LOOKUP_SUBJECT)
            .leadership(leadership.clone());
        for (peer, url) in peers {
            state = state.node_url(peer, url);
        }
        let state = state.build()?;

        // Everything that can fail comes before the tasks start, so a failure leaves none.
        let orders = natty.consumer(worker::config()).await?;
        let statuses = natty.bucket(STATUS_BUCKET)?;
        let addr = listener.local_addr()?;
        let (stop_lookup, lookup) = lookup::start(&natty, statuses.clone(), name).await?;
        let stop_consuming = CancellationToken::new();
        let consumer = tokio::spawn(worker::run(
            orders,
            statuses,
            natty.publisher(),
            name.into(),
            stop_consuming.clone(),
        ));
        let stop_http = CancellationToken::new();
        let http = tokio::spawn(server::serve(
            listener,
            app::router(state),
            stop_http.clone(),
        ));
        Ok(Self {
            name: name.into(),
            addr,
            leadership,
            natty,
            stop_http,
            stop_consuming,
            stop_lookup,
            http,
            lookup,
            consumer,
        })
    }

    /// This node's base URL.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stop in the order an orchestrator relies on: release leadership first (a watching
    /// node takes over at once instead of after the TTL), then drain HTTP within
    /// [`server::DRAIN_DEADLINE`], then leave the lookup service (calls under way finish
    /// within its grace; the other nodes' instances take the next ones), then stop consuming
    /// and flush what was published.
    pub(crate) async fn stop(self) -> Result<(), Error> {
        self.leadership.stop().await;
        self.stop_http.cancel();
        self.http.await?;
        self.stop_lookup.cancel();
        self.lookup.await?;
        self.stop_consuming.cancel();
        self.consumer.await??;
        self.natty.shutdown().await;
        Ok(())
    }

    /// Until Ctrl-C or SIGTERM (what docker, Kubernetes and systemd send), then [`Node::stop`].
    pub(crate) async fn serve_until_signalled(self) -> Result<(), Error> {
        let mut terminate = signal(SignalKind::terminate())?;
        let signal = tokio::select! {
            result = tokio::signal::ctrl_c() => result.map(|()| "Ctrl-C")?,
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(node = %self.name, "{signal} received; stopping");
        self.stop().await?;
        tracing::info!("stopped");
        Ok(())
    }
}
