//! [`Confirm`]: one message's ack, and its retries under the same `Nats-Msg-Id` until it is
//! acked, refused for good, or out of attempts.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{ready, Poll};

use async_nats::jetstream::context::{
    PublishAckFuture, PublishError as NatsPublishError, PublishErrorKind as NatsPublishErrorKind,
};
use async_nats::jetstream::publish::PublishAck;
use async_nats::Subject;

use super::config::PublishConfig;
use super::message::PublishError;
use super::queued::Outgoing;
use crate::backoff::Backoff;
use crate::error::{Error, PublishErrorKind};

/// A message's outcome, with the message (to answer its caller or report it).
pub(super) type Outcome = (Result<PublishAck, PublishError>, Outgoing);

/// The ack of a message already written, as async-nats waits for it.
type AckWait = Pin<Box<dyn Future<Output = Result<PublishAck, NatsPublishError>> + Send>>;

/// Wait for the ack of a message already written, then retry it under the same `Nats-Msg-Id`
/// with jittered exponential backoff until it is acked, refused for good, or out of attempts.
/// A retry is written when its delay is over, so it may be stored after messages of the same
/// subject published later.
///
/// The first wait is what nearly every message needs, so only it is inline; the retry loop
/// is boxed when a retry is due. (A window holds hundreds of these; an `async fn` would carry
/// the whole retry loop in each of them, and copy it into the window.)
pub(super) struct Confirm<'a> {
    jetstream: &'a async_nats::jetstream::Context,
    config: &'a PublishConfig,
    subject: &'a Subject,
    state: ConfirmState<'a>,
}

enum ConfirmState<'a> {
    /// The first attempt's ack (or why it could not be written).
    First {
        ack: AckWait,
        message: Outgoing,
    },
    Retrying(Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>),
    Done,
}

impl<'a> Confirm<'a> {
    pub(super) fn new(
        jetstream: &'a async_nats::jetstream::Context,
        config: &'a PublishConfig,
        subject: &'a Subject,
        message: Outgoing,
        sent: Result<PublishAckFuture, NatsPublishError>,
    ) -> Self {
        let ack = match sent {
            Ok(ack) => ack.into_future(),
            Err(unsent) => Box::pin(std::future::ready(Err(unsent))),
        };
        Self {
            jetstream,
            config,
            subject,
            state: ConfirmState::First { ack, message },
        }
    }
}

impl Future for Confirm<'_> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Outcome> {
        let this = self.get_mut();
        let result = match &mut this.state {
            ConfirmState::First { ack, .. } => ready!(ack.as_mut().poll(cx)),
            ConfirmState::Retrying(retrying) => return retrying.as_mut().poll(cx),
            ConfirmState::Done => panic!("a Confirm polled after it completed"),
        };
        let ConfirmState::First { message, .. } =
            std::mem::replace(&mut this.state, ConfirmState::Done)
        else {
            unreachable!("the state was First above");
        };
        let err = match result {
            Ok(ack) => return Poll::Ready((Ok(ack), message)),
            Err(err) => err,
        };
        match another_attempt(this.config, err, 1) {
            Err(failed) => Poll::Ready((Err(failed), message)),
            Ok(err) => {
                let mut retrying = Box::pin(retry(
                    this.jetstream,
                    this.config,
                    this.subject,
                    message,
                    err,
                ));
                let outcome = retrying.as_mut().poll(cx);
                this.state = ConfirmState::Retrying(retrying);
                outcome
            }
        }
    }
}

/// `Ok(err)` when the attempt that failed with `err` (number `attempt`) is worth another;
/// otherwise the publish's error.
pub(super) fn another_attempt(
    config: &PublishConfig,
    err: NatsPublishError,
    attempt: u32,
) -> Result<NatsPublishError, PublishError> {
    let kind = match err.kind() {
        NatsPublishErrorKind::TimedOut => PublishErrorKind::TimedOut,
        NatsPublishErrorKind::StreamNotFound => PublishErrorKind::NoStream,
        NatsPublishErrorKind::MaxPayloadExceeded => PublishErrorKind::PayloadTooLarge,
        _ => PublishErrorKind::Rejected,
    };
    let retryable = !matches!(
        err.kind(),
        NatsPublishErrorKind::MaxPayloadExceeded
            | NatsPublishErrorKind::WrongLastMessageId
            | NatsPublishErrorKind::WrongLastSequence
    );
    if !retryable || attempt >= config.max_attempts {
        return Err(Error::with_source(kind, err));
    }
    Ok(err)
}

/// The attempts after the first failed one (`err`), each after its backoff.
async fn retry(
    jetstream: &async_nats::jetstream::Context,
    config: &PublishConfig,
    subject: &Subject,
    message: Outgoing,
    err: NatsPublishError,
) -> Outcome {
    let mut err = err;
    let mut backoff = Backoff::new(config.backoff, config.max_backoff);
    let mut attempt = 1;
    loop {
        tracing::debug!(target: "natty", %subject, attempt, error = %err, "publish failed; retrying");
        tokio::time::sleep(backoff.next_pause()).await;
        attempt += 1;
        let result = match jetstream
            .send_publish(subject.clone(), message.to_publish())
            .await
        {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        err = match result {
            Ok(ack) => return (Ok(ack), message),
            Err(err) => match another_attempt(config, err, attempt) {
                Ok(err) => err,
                Err(failed) => return (Err(failed), message),
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn failed(kind: NatsPublishErrorKind) -> NatsPublishError {
        NatsPublishError::new(kind)
    }

    #[test]
    fn a_timed_out_attempt_is_retried_until_the_last_one() {
        let config = PublishConfig::default().retries(3, Duration::ZERO, Duration::ZERO);
        for attempt in 1..3 {
            assert!(
                another_attempt(&config, failed(NatsPublishErrorKind::TimedOut), attempt).is_ok()
            );
        }
        let last = another_attempt(&config, failed(NatsPublishErrorKind::TimedOut), 3).unwrap_err();
        assert_eq!(last.kind(), PublishErrorKind::TimedOut);
    }

    #[test]
    fn a_refusal_no_retry_can_change_fails_at_once() {
        let config = PublishConfig::default();
        for (refusal, kind) in [
            (
                NatsPublishErrorKind::MaxPayloadExceeded,
                PublishErrorKind::PayloadTooLarge,
            ),
            (
                NatsPublishErrorKind::WrongLastMessageId,
                PublishErrorKind::Rejected,
            ),
            (
                NatsPublishErrorKind::WrongLastSequence,
                PublishErrorKind::Rejected,
            ),
        ] {
            let err = another_attempt(&config, failed(refusal), 1).unwrap_err();
            assert_eq!(err.kind(), kind);
        }
        let no_stream = another_attempt(&config, failed(NatsPublishErrorKind::StreamNotFound), 1);
        assert!(no_stream.is_ok(), "a stream may be created meanwhile");
        let config = PublishConfig::default().retries(1, Duration::ZERO, Duration::ZERO);
        let err =
            another_attempt(&config, failed(NatsPublishErrorKind::StreamNotFound), 1).unwrap_err();
        assert_eq!(err.kind(), PublishErrorKind::NoStream);
    }
}
