//! [`Confirm`]: one message's ack, and its retries under the same `Nats-Msg-Id` until it is
//! acked, refused for good, or out of attempts.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{ready, Poll};

use async_nats::jetstream::context::{PublishAckFuture, PublishError as NatsPublishError};
use async_nats::jetstream::publish::PublishAck;
use async_nats::Subject;

use super::config::PublishConfig;
use super::decide::another_attempt;
use super::message::PublishError;
use super::queued::Outgoing;
use crate::backoff::Backoff;

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

/// The attempts after the first failed one (`err`), each after its backoff.
async fn retry(
    jetstream: &async_nats::jetstream::Context,
    config: &PublishConfig,
    subject: &Subject,
    message: Outgoing,
    err: NatsPublishError,
) -> Outcome {
    let mut err = err;
    let mut backoff = Backoff::new(config.backoff, config.max_backoff).with_jitter(true);
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
