//! [`ServiceInstance`], the handle [`Natty::service`](crate::Natty::service) hands out: one
//! running instance of a service, its endpoints added one by one, then run until shutdown.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::config::{EndpointConfig, ServiceConfig};
use super::serve::{
    serve_endpoint, serve_while_leader, Limits, NewEndpoint, ServeSummary, SharedService,
};
use super::{Request, Response, ServeError};
use crate::connection::Connection;
use crate::error::{BoxError, Error, ServeErrorKind, ValidationError};

/// One endpoint's driver, boxed when the endpoint is added (once per endpoint, not per
/// request) so that endpoints of different service types run side by side.
type Serving = Pin<Box<dyn Future<Output = ServeSummary> + Send>>;

/// A running instance of a service: it answers PING, INFO and STATS from the moment
/// [`Natty::service`](crate::Natty::service) returns it, and each endpoint receives requests
/// from the moment it is added (they wait in its subscription until [`ServiceInstance::run`]).
/// Dropped without running, it leaves the service at once.
///
/// # Example
/// ```no_run
/// use natty::service::{EndpointConfig, Request, Response, ServiceConfig, ServiceError};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let natty = natty::Natty::connect(natty::Config::from_env()).await?;
/// let mut orders = natty.service(ServiceConfig::new("orders", "1.0.0")).await?;
/// orders
///     .group("orders")
///     .endpoint(
///         EndpointConfig::new("get"),
///         tower::service_fn(|request: Request| async move {
///             match request.payload().as_ref() {
///                 b"7" => Ok(Response::new("order 7").header("Content-Type", "text/plain")),
///                 _ => Err(ServiceError::new(404, "no such order")),
///             }
///         }),
///     )
///     .await?;
/// let shutdown = CancellationToken::new();
/// let serving = tokio::spawn(orders.run(shutdown.clone()));
/// # shutdown.cancel();
/// let summary = serving.await?;
/// println!("answered {} requests", summary.handled);
/// # Ok(())
/// # }
/// ```
pub struct ServiceInstance {
    service: StopOnDrop,
    config: ServiceConfig,
    id: String,
    client: async_nats::Client,
    names: HashSet<String>,
    endpoints: Vec<Serving>,
    /// Fired by [`ServiceInstance::run`] on shutdown: every endpoint's driver watches it.
    stop: CancellationToken,
}

impl fmt::Debug for ServiceInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceInstance")
            .field("name", &self.config.name)
            .field("id", &self.id)
            .field("endpoints", &self.names)
            .finish_non_exhaustive()
    }
}

/// async-nats' service, stopped (its PING/INFO/STATS task aborted) when dropped; shared with
/// the leader-only endpoints' drivers, which add their endpoint anew at each term.
struct StopOnDrop(SharedService);

impl StopOnDrop {
    fn stop(&mut self) {
        let taken = self
            .0
             .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(service) = taken {
            // `stop` does not wait on anything: it signals the endpoints and aborts the task.
            let _ = service.stop().now_or_never();
        }
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ServiceInstance {
    /// Check `config` and start the service: its PING, INFO and STATS subscriptions are in
    /// place when this returns.
    pub(crate) async fn start(
        connection: &Connection,
        config: ServiceConfig,
    ) -> Result<Self, ServeError> {
        config.check()?;
        let client = connection.client().clone();
        let service = client
            .service_builder()
            .description(&config.description)
            .metadata(config.metadata.clone())
            .queue_group(&config.queue_group)
            .start(&config.name, &config.version)
            .await
            .map_err(|err| Error::with_source(ServeErrorKind::Subscribe, err))?;
        let id = service.info().await.id;
        // Wrapped at once, so that an error below leaves the service again.
        let service = StopOnDrop(SharedService(Arc::new(Mutex::new(Some(service)))));
        round_trip(&client)
            .await
            .map_err(|err| Error::with_source(ServeErrorKind::Subscribe, err))?;
        Ok(Self {
            service,
            config,
            id,
            client,
            names: HashSet::new(),
            endpoints: Vec::new(),
            stop: CancellationToken::new(),
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// This instance's id, unique among the service's instances (`$SRV.PING.<name>.<id>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Add the endpoint `config` describes, served by `service`, in the service's queue group
    /// unless it names its own. Its subscription is in place when this returns.
    ///
    /// # Errors
    /// `InvalidConfig` for a bad or taken endpoint name, a bad subject or queue group;
    /// `Subscribe` when the subscription cannot be made.
    pub async fn endpoint<S>(
        &mut self,
        config: EndpointConfig,
        service: S,
    ) -> Result<(), ServeError>
    where
        S: Service<Request> + Send + 'static,
        S::Future: Send + 'static,
        S::Response: Into<Response>,
        S::Error: Into<BoxError>,
    {
        let queue_group = self.config.queue_group.clone();
        self.add(None, &queue_group, config, service).await
    }

    /// The endpoints under `prefix` (`orders` puts the endpoint `get` on `orders.get`).
    pub fn group(&mut self, prefix: impl Into<String>) -> EndpointGroup<'_> {
        let queue_group = self.config.queue_group.clone();
        EndpointGroup {
            instance: self,
            prefix: prefix.into(),
            queue_group,
        }
    }

    async fn add<S>(
        &mut self,
        prefix: Option<&str>,
        queue_group: &str,
        config: EndpointConfig,
        service: S,
    ) -> Result<(), ServeError>
    where
        S: Service<Request> + Send + 'static,
        S::Future: Send + 'static,
        S::Response: Into<Response>,
        S::Error: Into<BoxError>,
    {
        let (subject, queue_group) = config.resolve(prefix, queue_group)?;
        if self.names.contains(&config.name) {
            return Err(Error::with_source(
                ServeErrorKind::InvalidConfig,
                ValidationError::new("endpoint name", &config.name, "is taken"),
            ));
        }
        let limits = Limits {
            concurrency: self.config.concurrency,
            grace: self.config.shutdown_grace,
        };
        let new_endpoint = NewEndpoint {
            name: config.name.clone(),
            subject,
            queue_group,
            metadata: config.metadata.clone(),
        };
        // Boxed here, where `S` is still generic: proving `Send` for the run future, which
        // only sees boxes, then needs nothing of `S` (the consume driver's trick).
        let serving: Serving = match config.leadership {
            Some(leadership) => Box::pin(serve_while_leader(
                self.service.0.clone(),
                new_endpoint,
                leadership,
                service,
                limits,
                self.stop.clone(),
            )),
            None => {
                let endpoint = new_endpoint
                    .add(&self.service.0)
                    .await
                    .map_err(|err| Error::with_source(ServeErrorKind::Subscribe, err))?;
                round_trip(&self.client)
                    .await
                    .map_err(|err| Error::with_source(ServeErrorKind::Subscribe, err))?;
                let name = new_endpoint.name;
                let stop = self.stop.clone();
                Box::pin(
                    async move { serve_endpoint(&name, endpoint, service, limits, stop).await },
                )
            }
        };
        self.endpoints.push(serving);
        self.names.insert(config.name);
        Ok(())
    }

    /// Serve every endpoint until `shutdown` fires; then leave the service (PING, INFO and
    /// STATS stop answering), unsubscribe every endpoint, answer a 503 to what was received
    /// but not started, let the calls under way finish within the shutdown grace, and return
    /// what the run did. The future borrows nothing: spawn it.
    pub fn run(
        self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ServeSummary> + Send + 'static {
        let Self {
            mut service,
            endpoints,
            stop,
            client,
            ..
        } = self;
        async move {
            let serving = futures_util::future::join_all(endpoints);
            tokio::pin!(serving);
            let tallies = tokio::select! {
                // Every subscription ended: the connection was closed.
                tallies = &mut serving => tallies,
                () = shutdown.cancelled() => {
                    service.stop();
                    stop.cancel();
                    serving.await
                }
            };
            service.stop();
            // The endpoints' unsubscriptions have reached the server when the run returns.
            let _ = round_trip(&client).await;
            let mut summary = ServeSummary::default();
            for tally in tallies {
                summary.include(tally);
            }
            summary
        }
    }
}

/// How long the server may take to echo a message back.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// Wait until the server has processed everything `client` sent so far (its subscriptions
/// are in place then): async-nats' `flush` only empties the socket, so a message to an inbox
/// of the client's own makes the round trip, behind what was sent before it.
async fn round_trip(client: &async_nats::Client) -> Result<(), BoxError> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, Bytes::new()).await?;
    client.flush().await?;
    match tokio::time::timeout(ROUND_TRIP_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the connection closed".into()),
        Err(elapsed) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, elapsed).into()),
    }
}

/// Endpoints under a common subject prefix, in a queue group of their own if set (the
/// service's otherwise), from [`ServiceInstance::group`]. Groups nest.
///
/// # Example
/// ```no_run
/// use natty::service::{EndpointConfig, Request, ServiceConfig, ServiceError};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let natty = natty::Natty::connect(natty::Config::from_env()).await?;
/// let mut orders = natty.service(ServiceConfig::new("orders", "1.0.0")).await?;
/// let mut v1 = orders.group("orders").queue_group("orders-v1");
/// let echo = tower::service_fn(|request: Request| async move {
///     Ok::<_, ServiceError>(request.into_payload())
/// });
/// v1.group("v1").endpoint(EndpointConfig::new("echo"), echo).await?; // orders.v1.echo
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct EndpointGroup<'a> {
    instance: &'a mut ServiceInstance,
    prefix: String,
    queue_group: String,
}

impl EndpointGroup<'_> {
    /// The queue group of this group's endpoints that name none.
    pub fn queue_group(mut self, queue_group: impl Into<String>) -> Self {
        self.queue_group = queue_group.into();
        self
    }

    /// The endpoints under `prefix` within this group, in its queue group.
    pub fn group(&mut self, prefix: impl AsRef<str>) -> EndpointGroup<'_> {
        EndpointGroup {
            prefix: format!("{}.{}", self.prefix, prefix.as_ref()),
            queue_group: self.queue_group.clone(),
            instance: &mut *self.instance,
        }
    }

    /// Add the endpoint `config` describes under this group's prefix, served by `service`;
    /// as [`ServiceInstance::endpoint`].
    ///
    /// # Errors
    /// As [`ServiceInstance::endpoint`].
    pub async fn endpoint<S>(
        &mut self,
        config: EndpointConfig,
        service: S,
    ) -> Result<(), ServeError>
    where
        S: Service<Request> + Send + 'static,
        S::Future: Send + 'static,
        S::Response: Into<Response>,
        S::Error: Into<BoxError>,
    {
        self.instance
            .add(Some(&self.prefix), &self.queue_group, config, service)
            .await
    }
}
