use std::future::Future;

use async_nats::jetstream;
use async_nats::jetstream::publish::PublishAck;
use async_nats::HeaderMap;
use bytes::Bytes;

use super::{
    DeadLetterError, DeadLetterErrorKind, ORIGINAL_CONSUMER, ORIGINAL_SEQUENCE, ORIGINAL_STREAM,
};

/// Publishes dead letters. The publish should complete only once the message is stored (a
/// JetStream publish acknowledgement), since the original is terminated right after.
///
/// A dead letter carries its own `Nats-Msg-Id`, so the stream may answer that it is a
/// duplicate; that means stored only if the message stored under that id is this dead letter
/// (a dead-lettering repeated after a lost acknowledgement). Both implementations here read
/// the stored message back to check; a sink of your own must do the same or fail.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Publish `payload` with `headers` to `subject`, stored when it returns `Ok`.
    fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), DeadLetterError>> + Send;
}

impl DeadLetterSink for jetstream::Context {
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), DeadLetterError> {
        let fail = |err| DeadLetterError::with_source(DeadLetterErrorKind::Publish, err);
        let stored = self
            .publish_with_headers(subject.clone(), headers.clone(), payload)
            .await
            .map_err(fail)?;
        let ack = stored.await.map_err(fail)?;
        confirm_stored(self, &ack, &subject, &headers).await
    }
}

impl DeadLetterSink for natty::Natty {
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), DeadLetterError> {
        let ack = self
            .publish_acked_with_headers(&subject, headers.clone(), payload)
            .await
            .map_err(|err| DeadLetterError::with_source(DeadLetterErrorKind::Publish, err))?;
        confirm_stored(self.jetstream(), &ack, &subject, &headers).await
    }
}

/// `Ok` when `ack` says the dead letter was stored: a new message, or a duplicate whose stored
/// message is the dead letter of the same delivery (same subject and origin headers).
async fn confirm_stored(
    jetstream: &jetstream::Context,
    ack: &PublishAck,
    subject: &str,
    headers: &HeaderMap,
) -> Result<(), DeadLetterError> {
    if !ack.duplicate {
        return Ok(());
    }
    let unconfirmed =
        |err: async_nats::Error| DeadLetterError::with_source(DeadLetterErrorKind::Duplicate, err);
    let stream = jetstream
        .get_stream_no_info(&ack.stream)
        .await
        .map_err(|err| unconfirmed(err.into()))?;
    let stored = stream
        .get_raw_message(ack.sequence)
        .await
        .map_err(|err| unconfirmed(err.into()))?;
    let same_origin = [ORIGINAL_STREAM, ORIGINAL_CONSUMER, ORIGINAL_SEQUENCE]
        .iter()
        .all(|name| {
            let value = |headers: &HeaderMap| headers.get(*name).map(|v| v.as_str().to_owned());
            value(&stored.headers).is_some() && value(&stored.headers) == value(headers)
        });
    if stored.subject.as_str() == subject && same_origin {
        Ok(())
    } else {
        Err(DeadLetterError::new(DeadLetterErrorKind::Duplicate))
    }
}
