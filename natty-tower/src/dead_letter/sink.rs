use std::future::Future;

use async_nats::HeaderMap;
use bytes::Bytes;

use super::{DeadLetterError, DeadLetterErrorKind};

/// Publishes dead letters. The publish should complete only once the message is stored (a
/// JetStream publish acknowledgement), since the original is terminated right after.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Publish `payload` with `headers` to `subject`, stored when it returns `Ok`.
    fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), DeadLetterError>> + Send;
}

impl DeadLetterSink for async_nats::jetstream::Context {
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), DeadLetterError> {
        let fail = |err| DeadLetterError::with_source(DeadLetterErrorKind::Publish, err);
        let stored = self
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(fail)?;
        stored.await.map_err(fail)?;
        Ok(())
    }
}

impl DeadLetterSink for natty::Natty {
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), DeadLetterError> {
        self.publish_acked_with_headers(&subject, headers, payload)
            .await
            .map_err(|err| DeadLetterError::with_source(DeadLetterErrorKind::Publish, err))?;
        Ok(())
    }
}
