//! Processors: a tower service turning each consumed message into its outputs, served so
//! that the outputs are stored exactly once: [`Processor`] and [`ProcessLayer`].
//!
//! A processor's handler is any `Service<Message>` whose response is the input's outputs
//! (zero or more [`OutgoingMessage`]s, all for one stream). [`Processor`] wraps it: it calls
//! the handler, gives output `i` of the input at stream sequence `s` of stream `S`, consumed
//! by durable `C`, the `Nats-Msg-Id` `S:C:s:i` (replacing one the handler set), publishes them
//! in an atomic [`Batch`] (nats-server 2.12.1+; together with the outputs of inputs processed
//! at the same time, see [`Processor`]), and returns `Ok` only once the stream stored them.
//! It is served like any other stack, by [`Consumer::serve`](crate::Consumer::serve)
//! or a group member, so the one consume engine acks the input after that `Ok` (and naks it
//! after an `Err`), with natty-tower's layers, concurrency, failure reports and shutdown as
//! for `serve`.
//!
//! # What holds
//! - **Each input's outputs are stored exactly once, and never in part**, within the output
//!   stream's duplicate window (`duplicate_window`, two minutes by default). If the process
//!   dies anywhere (before the batch, during it, after it but before the ack), the input comes
//!   back, its outputs get the same ids, and a batch already stored makes the new one answer
//!   `Duplicate`: nothing is stored again, and the input is acked
//!   ([`Processed::AlreadyStored`]). A batch cut short is stored not at all.
//! - **A handler whose outputs differ between deliveries**: the outputs of exactly one
//!   delivery are stored, the first whose batch was committed; a later delivery's outputs are
//!   refused whole (its first output's id is already stored), even the ones that are new.
//!   Before any batch of the input was committed, nothing of it is stored, so a delivery after
//!   a crash may store other outputs than the crashed one computed.
//! - **Outputs that do not fit one batch** (more than the server's `max_msgs`, 1,000 by
//!   default, or for more than one stream) are never stored in part: every delivery fails
//!   with the batch's error (`TooManyMessages`, `MixedStreams`), and the input goes the way of
//!   any failing message (redelivered up to `max_deliver`, then dead-lettered by natty-tower's
//!   layer if the stack has it). Split such work into several inputs.
//! - An input that comes back after the duplicate window has passed (a long outage, an ack
//!   wait times max deliveries longer than the window) has its outputs stored again: make the
//!   output stream's `duplicate_window` longer than that.
//!
//! # Example
//! ```no_run
//! use natty::process::Processor;
//! use natty::{CancellationToken, ConsumeConfig, Message, OutgoingMessage};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), natty::BoxError> {
//! let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! natty.stream("ORDERS")?.create(["orders.>"]).await?;
//! natty.stream("INVOICES")?.create(["invoices.>"]).await?;
//! let consumer = natty.consumer(ConsumeConfig::new("ORDERS", "invoicing")).await?;
//! // One invoice line per item of the order: stored once each, all or none.
//! let handler = tower::service_fn(|order: Message| async move {
//!     let items: Vec<String> = serde_json::from_slice(order.payload())?;
//!     let lines = items
//!         .into_iter()
//!         .map(|item| OutgoingMessage::new("invoices.lines", item))
//!         .collect::<Vec<_>>();
//!     Ok::<_, natty::BoxError>(lines)
//! });
//! let summary = consumer
//!     .serve(CancellationToken::new(), Processor::new(natty.publisher(), handler))
//!     .await?;
//! println!("processed {}", summary.handled);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::consume::Message;
use crate::error::BoxError;
use crate::header::NATS_MESSAGE_ID;
use crate::publish::{Batch, BatchAck, OutgoingMessage, Publisher};

mod commit;
use commit::Committer;

/// What a [`Processor`] did with an input's outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Processed {
    /// The handler had no outputs; nothing was published.
    Nothing,
    /// The outputs were stored, as the ack says.
    Stored(BatchAck),
    /// An earlier delivery's outputs were stored already; nothing was stored again.
    AlreadyStored,
}

/// A handler served so that its outputs are stored exactly once; see the
/// [module docs](self).
///
/// The outputs of inputs processed at the same time are committed together, as one atomic
/// batch of at most 1,000 messages, so the server commits once for all of them; when it
/// refuses such a batch, each input's own batch is sent instead, so each input ends as its own
/// batch would have ended it. A server that takes fewer messages per batch (`max_msgs`) gets
/// smaller combined batches after its first refusals. Clones share one committer.
#[derive(Clone)]
pub struct Processor<S> {
    handler: S,
    publisher: Publisher,
    committer: Arc<OnceLock<Committer>>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Processor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("handler", &self.handler)
            .finish_non_exhaustive()
    }
}

impl<S> Processor<S> {
    /// `handler`, its outputs published through `publisher`.
    pub fn new(publisher: Publisher, handler: S) -> Self {
        Self {
            handler,
            publisher,
            committer: Arc::default(),
        }
    }
}

/// Wraps a handler in a [`Processor`], for tower's `ServiceBuilder`.
#[derive(Clone, Debug)]
pub struct ProcessLayer {
    publisher: Publisher,
}

impl ProcessLayer {
    /// Outputs published through `publisher`.
    pub fn new(publisher: Publisher) -> Self {
        Self { publisher }
    }
}

impl<S> Layer<S> for ProcessLayer {
    type Service = Processor<S>;

    fn layer(&self, handler: S) -> Processor<S> {
        Processor::new(self.publisher.clone(), handler)
    }
}

/// The `Nats-Msg-Id` prefix of an input's outputs: its stream, consumer and stream sequence,
/// or `None` for a message that was not delivered by a consumer.
fn input_key(input: &Message) -> Option<String> {
    let info = input.info();
    (!info.stream.is_empty() && info.stream_sequence > 0).then(|| {
        format!(
            "{}:{}:{}",
            info.stream.as_str(),
            info.consumer.as_str(),
            info.stream_sequence
        )
    })
}

/// The batch of an input's outputs, each with its derived `Nats-Msg-Id`.
fn batch_of(key: &str, outputs: impl IntoIterator<Item = OutgoingMessage>) -> Batch {
    outputs
        .into_iter()
        .enumerate()
        .map(|(index, mut output)| {
            output
                .headers_mut()
                .insert(NATS_MESSAGE_ID, format!("{key}:{index}"));
            output
        })
        .collect()
}

impl<S, O> Service<Message> for Processor<S>
where
    S: Service<Message, Response = O>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    O: IntoIterator<Item = OutgoingMessage>,
{
    type Response = Processed;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Processed, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.handler.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, input: Message) -> Self::Future {
        let key = input_key(&input);
        let outputs = self.handler.call(input);
        let (publisher, committer) = (self.publisher.clone(), Arc::clone(&self.committer));
        Box::pin(async move {
            let key = key.ok_or(
                "a processor's input must come from a consumer (it has no stream sequence)",
            )?;
            let batch = batch_of(&key, outputs.await.map_err(Into::into)?);
            if batch.is_empty() {
                return Ok(Processed::Nothing);
            }
            committer
                .get_or_init(|| Committer::start(publisher))
                .commit(batch)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::message::DeliveryInfo;

    #[test]
    fn outputs_get_ids_from_the_input_s_stream_consumer_sequence_and_index() {
        let mut info = DeliveryInfo::new("ORDERS", "invoicing");
        info.stream_sequence = 42;
        let (input, _) = Message::builder("orders.7", "x").info(info).build();
        let key = input_key(&input).unwrap();
        let outputs = [
            OutgoingMessage::new("invoices.a", "1").header("Nats-Msg-Id", "the handler's"),
            OutgoingMessage::new("invoices.b", "2"),
        ];
        let batch = batch_of(&key, outputs);
        let ids: Vec<_> = batch
            .messages()
            .iter()
            .map(|m| m.headers().get("Nats-Msg-Id").unwrap())
            .collect();
        assert_eq!(ids, ["ORDERS:invoicing:42:0", "ORDERS:invoicing:42:1"]);
    }

    #[test]
    fn a_hand_built_message_has_no_input_key() {
        let (input, _) = Message::builder("orders.7", "x").build();
        assert_eq!(input_key(&input), None);
    }
}
