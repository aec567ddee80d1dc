//! [`Consumer`]: a durable consumer resolved once, then served or consumed as often as needed.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tower::Service;

use std::sync::Arc;

use super::{ConsumeConfig, ConsumeError, ConsumeSummary};
use crate::connection::Connection;
use crate::error::BoxError;
use crate::message::Message;

/// A durable pull consumer, from [`Natty::consumer`](crate::Natty::consumer): its names were checked and the consumer
/// created (or updated) on the server when the handle was made, so a typo or a missing stream
/// fails there, not when serving starts. Cheap to clone.
///
/// Every message it delivers carries the consumer's
/// [`ConsumerSettings`](crate::ConsumerSettings) in its extensions, so natty-tower's layers
/// take the ack wait and max deliveries from the server.
///
/// # Example
/// ```no_run
/// use natty::{CancellationToken, ConsumeConfig, Message};
///
/// async fn run(natty: natty::Natty) -> Result<(), Box<dyn std::error::Error>> {
///     let billing = natty.consumer(ConsumeConfig::new("ORDERS", "billing")).await?;
///     let shutdown = CancellationToken::new();
///     let summary = billing
///         .consume(shutdown, |msg: Message| async move {
///             println!("{:?}", msg.payload());
///             Ok::<_, std::io::Error>(())
///         })
///         .await?;
///     println!("handled {}", summary.handled);
///     Ok(())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Consumer {
    connection: Arc<Connection>,
    config: ConsumeConfig,
    /// The consumer as created: serving starts from it instead of creating it again.
    resolved: async_nats::jetstream::consumer::PullConsumer,
}

impl Consumer {
    /// Check `config`'s names, create (or update) its durable consumer and return its handle.
    pub(crate) async fn create(
        connection: &Arc<Connection>,
        config: ConsumeConfig,
    ) -> Result<Self, ConsumeError> {
        let resolved = connection.consumer_for(&config).await?;
        Ok(Self {
            connection: Arc::clone(connection),
            config,
            resolved,
        })
    }

    /// The configuration the handle serves with.
    pub fn config(&self) -> &ConsumeConfig {
        &self.config
    }

    /// Feed the consumer into `service` until `shutdown` is cancelled, as
    /// [`Natty::serve`](crate::Natty::serve) does. The future holds its own share of the
    /// handle, so it can be spawned.
    ///
    /// # Errors
    /// See [`Natty::serve`](crate::Natty::serve).
    pub fn serve<S>(
        &self,
        shutdown: CancellationToken,
        service: S,
    ) -> impl Future<Output = Result<ConsumeSummary, ConsumeError>> + Send + 'static
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        // `Send` proved here, with `S` generic, as in `Natty::serve`.
        Arc::clone(&self.connection).drive(
            self.config.clone(),
            Some(self.resolved.clone()),
            shutdown,
            service,
        )
    }

    /// Run `handler` for each message until `shutdown` is cancelled, as [`Natty::consume`](crate::Natty::consume)
    /// does (Go natty's `Consume`); the future can be spawned.
    ///
    /// # Errors
    /// See [`Natty::consume`](crate::Natty::consume).
    pub fn consume<F, Fut, E>(
        &self,
        shutdown: CancellationToken,
        handler: F,
    ) -> impl Future<Output = Result<ConsumeSummary, ConsumeError>> + Send + 'static
    where
        F: FnMut(Message) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.serve(shutdown, tower::service_fn(handler))
    }
}
