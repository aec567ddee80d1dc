//! [`Outgoing`]: a message as it waits in a subject's queue and goes out, attempt by attempt.

use bytes::Bytes;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use async_nats::jetstream::message::PublishMessage;

use super::fast_ingest::BatchMessage;
use super::message::{PublishAck, PublishError};
use crate::header::HeaderMap;

/// A message accepted for its subject's queue.
pub(super) struct Outgoing {
    pub(super) headers: MessageHeaders,
    pub(super) payload: Bytes,
    /// Set for a [`Publisher`](crate::Publisher) call: who waits for the outcome.
    pub(super) reply: Option<Reply>,
}

/// The caller of a [`Publisher`](crate::Publisher) call, and its slot of queue room, which is
/// given back when the message settles (dropped with it).
pub(super) struct Reply {
    pub(super) sender: oneshot::Sender<Result<PublishAck, PublishError>>,
    pub(super) _slot: OwnedSemaphorePermit,
}

impl Outgoing {
    /// Stamp `headers` (see [`MessageHeaders::stamp`]) for a message of `payload`.
    pub(super) fn new(headers: Option<HeaderMap>, payload: Bytes, reply: Option<Reply>) -> Self {
        Self {
            headers: MessageHeaders::stamp(headers),
            payload,
            reply,
        }
    }

    /// Whether a [`Publisher`](crate::Publisher) call waits for this message's own ack.
    pub(super) fn is_call(&self) -> bool {
        self.reply.is_some()
    }

    /// One attempt's copy (cheap: the payload is shared, the header map is small).
    pub(super) fn to_publish(&self) -> PublishMessage {
        PublishMessage::build()
            .headers(self.headers.to_map())
            .payload(self.payload.clone())
    }
}

impl BatchMessage for Outgoing {
    fn parts(&self) -> (async_nats::HeaderMap, Bytes) {
        (self.headers.to_map(), self.payload.clone())
    }
}

/// A queued message's headers. Most messages carry nothing but the `Nats-Msg-Id` natty
/// stamped: that id is kept inline and each attempt builds its map, instead of building one
/// map at `publish` and copying it for every attempt.
pub(super) enum MessageHeaders {
    /// Only the stamped `Nats-Msg-Id`.
    Id(nuid::NUIDStr),
    /// The caller's headers, `Nats-Msg-Id` included.
    Map(async_nats::HeaderMap),
}

impl MessageHeaders {
    /// The headers as sent: async-nats' map (moved, not copied), with a `Nats-Msg-Id` unless
    /// the caller set one and (with the `opentelemetry` feature) the current span's trace
    /// context.
    pub(super) fn stamp(headers: Option<HeaderMap>) -> Self {
        #[cfg(feature = "opentelemetry")]
        let headers = {
            let mut headers = headers.unwrap_or_default();
            crate::otel::inject_current(&mut headers);
            Some(headers)
        };
        let Some(headers) = headers.filter(|headers| !headers.is_empty()) else {
            return Self::Id(nuid::next());
        };
        let mut headers = async_nats::HeaderMap::from(headers);
        if headers.get(async_nats::header::NATS_MESSAGE_ID).is_none() {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, nuid::next().as_str());
        }
        Self::Map(headers)
    }

    /// One attempt's map.
    pub(super) fn to_map(&self) -> async_nats::HeaderMap {
        match self {
            Self::Id(id) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                headers
            }
            Self::Map(headers) => headers.clone(),
        }
    }

    pub(super) fn into_map(self) -> async_nats::HeaderMap {
        match self {
            Self::Id(_) => self.to_map(),
            Self::Map(headers) => headers,
        }
    }

    pub(super) fn message_id(&self) -> &str {
        match self {
            Self::Id(id) => id.as_str(),
            Self::Map(headers) => headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map_or("", |id| id.as_str()),
        }
    }
}
