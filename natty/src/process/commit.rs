//! The committer of a [`Processor`](super::Processor): the outputs of inputs processed at the
//! same time go out together as one atomic batch, so the server commits once for all of them
//! (on a one-replica file stream it stages every batch on disk, about 2 ms each, one after
//! another). A combined batch is an optimisation and nothing more: when the server refuses it
//! for any reason, each input's own batch is sent instead, so every input ends as its own
//! batch would have ended it. That holds because each input's outputs are stored all or none:
//! a combined batch refused as `Duplicate` stored nothing, and sending each input alone then
//! finds which were stored before (`Duplicate` again) and which not (stored now).
//!
//! A server configured to take fewer messages per batch than the default 1,000 (`max_msgs`)
//! refuses a combined batch over its limit as `TooManyMessages`; the committer then halves
//! the size of the batches it combines, for as long as the processor lives, so the refusals
//! stop after a few.

use futures_util::stream::{self, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::Processed;
use crate::error::{BatchErrorKind, BoxError};
use crate::publish::{Batch, BatchAck, BatchError, Publisher};

/// Messages a combined batch holds at most at first: the server's default batch limit.
const MAX_MESSAGES: usize = 1_000;

/// Inputs' own batches sent at once after a combined batch was refused.
const ALONE_AT_ONCE: usize = 16;

/// One input's batch, waiting to be committed, and where its outcome goes.
struct Pending {
    batch: Batch,
    answer: oneshot::Sender<Result<Processed, BatchError>>,
}

/// The queue of a processor's committer task, which runs while a clone of the processor
/// lives.
pub(super) struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Committer {
    /// Start the committer task, publishing through `publisher`.
    pub(super) fn start(publisher: Publisher) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(publisher, pending));
        Self { queue }
    }

    /// Store `batch` (one input's outputs, not empty), alone or with others.
    pub(super) async fn commit(&self, batch: Batch) -> Result<Processed, BoxError> {
        let stopped = "the processor's committer stopped";
        let (answer, outcome) = oneshot::channel();
        self.queue
            .send(Pending { batch, answer })
            .map_err(|_| stopped)?;
        Ok(outcome.await.map_err(|_| stopped)??)
    }
}

/// Commit what is queued, group by group: each group is whatever was queued when the last
/// commit ended, up to `limit` messages ([`MAX_MESSAGES`], halved after each combined batch
/// refused as too large).
async fn run(publisher: Publisher, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let mut limit = MAX_MESSAGES;
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut messages = first.batch.len();
        let mut group = vec![first];
        while let Ok(next) = queue.try_recv() {
            if messages + next.batch.len() > limit {
                carried = Some(next);
                break;
            }
            messages += next.batch.len();
            group.push(next);
        }
        if let Some(refused) = commit(&publisher, group).await {
            limit = (refused / 2).max(1);
            tracing::debug!(
                target: "natty",
                refused,
                limit,
                "the server takes fewer messages per batch: combined batches are now smaller"
            );
        }
    }
}

/// Commit `group` as one batch, or each of its batches alone when it has one or the combined
/// batch is refused, and answer each input. The combined batch takes the inputs' messages
/// rather than copies, and gives them back to their own batches if it is refused. Returns
/// the size of a combined batch refused as too large.
async fn commit(publisher: &Publisher, group: Vec<Pending>) -> Option<usize> {
    let mut too_large = None;
    let group = if group.len() > 1 {
        match commit_combined(publisher, group).await {
            Ok(()) => return None,
            Err((group, kind, messages)) => {
                tracing::debug!(
                    target: "natty",
                    messages,
                    inputs = group.len(),
                    refusal = ?kind,
                    "combined batch refused: each input's batch goes alone"
                );
                too_large = (kind == BatchErrorKind::TooManyMessages).then_some(messages);
                group
            }
        }
    } else {
        group
    };
    // A few at a time, well below the 50 batches a stream keeps open.
    stream::iter(group)
        .for_each_concurrent(ALONE_AT_ONCE, |pending| async move {
            let outcome = outcome(publisher.publish_batch(&pending.batch).await);
            let _ = pending.answer.send(outcome);
        })
        .await;
    too_large
}

/// Commit `group`'s batches as one and answer each input; when the server refused the
/// combined batch, the group back, with why and how many messages it held.
async fn commit_combined(
    publisher: &Publisher,
    group: Vec<Pending>,
) -> Result<(), (Vec<Pending>, BatchErrorKind, usize)> {
    let lengths: Vec<usize> = group.iter().map(|pending| pending.batch.len()).collect();
    let (batches, answers): (Vec<Batch>, Vec<_>) = group
        .into_iter()
        .map(|pending| (pending.batch, pending.answer))
        .unzip();
    let combined: Batch = batches.into_iter().flat_map(Batch::into_messages).collect();
    match publisher.publish_batch(&combined).await {
        Ok(ack) => {
            let mut first = ack.first_sequence;
            for (answer, length) in answers.into_iter().zip(lengths) {
                let last = first + length as u64 - 1;
                let own = BatchAck {
                    stream: ack.stream.clone(),
                    first_sequence: first,
                    last_sequence: last,
                };
                first = last + 1;
                let _ = answer.send(Ok(Processed::Stored(own)));
            }
            Ok(())
        }
        Err(err) => {
            let count = combined.len();
            let mut messages = combined.into_messages().into_iter();
            let group = answers
                .into_iter()
                .zip(lengths)
                .map(|(answer, length)| Pending {
                    batch: messages.by_ref().take(length).collect(),
                    answer,
                })
                .collect();
            Err((group, err.kind(), count))
        }
    }
}

/// What one input's own batch ended as.
fn outcome(stored: Result<BatchAck, BatchError>) -> Result<Processed, BatchError> {
    match stored {
        Ok(ack) => Ok(Processed::Stored(ack)),
        Err(err) if err.kind() == BatchErrorKind::Duplicate => Ok(Processed::AlreadyStored),
        Err(err) => Err(err),
    }
}
