//! [`ResponseFuture`]: the future of a [`Publisher`](crate::Publisher) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tokio_util::sync::PollSender;

use super::message::{PublishAck, PublishError};
use super::pipeline::{Enqueue, Pipeline, Prepared};
use super::queued::Outgoing;
use crate::error::{Error, PublishErrorKind};

/// Where a call's ack comes from: the subject's worker answers it.
pub(super) type Answer = oneshot::Receiver<Result<PublishAck, PublishError>>;

pin_project! {
    /// The future of a [`Publisher`](crate::Publisher) call: the stream's ack, or why there
    /// is none.
    pub struct ResponseFuture {
        state: State,
    }
}

impl ResponseFuture {
    /// A call the pipeline refused before queueing anything.
    pub(super) fn failed(error: PublishError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }

    /// A call after [`Pipeline::try_enqueue`] said `enqueued` for it.
    pub(super) fn enqueued(
        enqueued: Result<(), Enqueue>,
        pipeline: &Arc<Pipeline>,
        subject: String,
        answer: Answer,
    ) -> Self {
        Self {
            state: State::after(enqueued, pipeline, subject, answer),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Failed { .. } => "failed",
            State::WaitForRoom { .. } => "waiting for room",
            State::Answer { .. } => "waiting for the ack",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

enum State {
    Failed {
        error: Option<PublishError>,
    },
    /// The subject's queue was full (`publish` callers filled it): wait for room. Nothing
    /// is queued or counted yet, so dropping the future here takes the message back.
    WaitForRoom {
        pipeline: Arc<Pipeline>,
        subject: String,
        queue: PollSender<Outgoing>,
        outgoing: Option<Outgoing>,
        answer: Option<Answer>,
    },
    Answer {
        answer: Answer,
    },
}

impl State {
    /// What a call waits for once [`Pipeline::try_enqueue`] said `enqueued`.
    fn after(
        enqueued: Result<(), Enqueue>,
        pipeline: &Arc<Pipeline>,
        subject: String,
        answer: Answer,
    ) -> Self {
        match enqueued {
            Ok(()) => State::Answer { answer },
            Err(Enqueue::Failed(error)) => State::Failed { error: Some(error) },
            Err(Enqueue::Full(sender, outgoing)) => State::WaitForRoom {
                pipeline: Arc::clone(pipeline),
                subject,
                queue: PollSender::new(sender),
                outgoing: Some(outgoing),
                answer: Some(answer),
            },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<PublishAck, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = self.project().state;
        loop {
            match state {
                State::Failed { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| Error::new(PublishErrorKind::Closed))));
                }
                State::WaitForRoom {
                    pipeline,
                    subject,
                    queue,
                    outgoing,
                    answer,
                } => {
                    if ready!(queue.poll_reserve(cx)).is_err() {
                        // The worker went idle meanwhile: enqueue on its successor's queue.
                        let (Some(message), Some(receiver)) = (outgoing.take(), answer.take())
                        else {
                            *state = State::Failed { error: None };
                            continue;
                        };
                        let enqueued = pipeline.try_enqueue(subject, Prepared::requeued(message));
                        *state = State::after(enqueued, pipeline, subject.clone(), receiver);
                        continue;
                    }
                    let (Some(message), Some(receiver)) = (outgoing.take(), answer.take()) else {
                        *state = State::Failed { error: None };
                        continue;
                    };
                    pipeline.count_one();
                    if queue.send_item(message).is_err() {
                        // Unreachable after a reserved slot; if it were not, uncount it.
                        pipeline.settled_one();
                        *state = State::Failed { error: None };
                        continue;
                    }
                    *state = State::Answer { answer: receiver };
                }
                State::Answer { answer } => {
                    return Poll::Ready(match ready!(Pin::new(answer).poll(cx)) {
                        Ok(result) => result,
                        // The worker ended without settling it (its task was aborted).
                        Err(_) => Err(Error::new(PublishErrorKind::Closed)),
                    });
                }
            }
        }
    }
}
