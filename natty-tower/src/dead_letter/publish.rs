use bytes::Bytes;
use natty::{HeaderMap, OutgoingMessage, PublishAck};
use tower::{Service, ServiceExt};

use super::{
    DeadLetterError, DeadLetterErrorKind, ORIGINAL_CONSUMER, ORIGINAL_SEQUENCE, ORIGINAL_STREAM,
};
use crate::error::BoxError;

/// Publish a dead letter through `publisher` and confirm it is stored: a new message, or a
/// duplicate whose stored message is the dead letter of the same delivery (same subject and
/// origin headers), read back through the ack.
pub(super) async fn publish<P>(
    publisher: P,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<(), DeadLetterError>
where
    P: Service<OutgoingMessage, Response = PublishAck>,
    P::Error: Into<BoxError>,
{
    let message = OutgoingMessage::new(subject.clone(), payload).with_headers(headers.clone());
    let ack = publisher
        .oneshot(message)
        .await
        .map_err(|err| DeadLetterError::with_source(DeadLetterErrorKind::Publish, err.into()))?;
    if !ack.duplicate {
        return Ok(());
    }
    let stored = ack
        .stored_message()
        .await
        .map_err(|err| DeadLetterError::with_source(DeadLetterErrorKind::Duplicate, err))?;
    let same_origin = [ORIGINAL_STREAM, ORIGINAL_CONSUMER, ORIGINAL_SEQUENCE]
        .iter()
        .all(|name| {
            let kept = stored.headers.get(name);
            kept.is_some() && kept == headers.get(name)
        });
    if stored.subject == subject && same_origin {
        Ok(())
    } else {
        Err(DeadLetterError::new(DeadLetterErrorKind::Duplicate))
    }
}
