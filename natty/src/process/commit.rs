//! The committer of a [`Processor`](super::Processor): the outputs of inputs processed at the
//! same time go out together as one atomic batch, so the server commits once for all of them
//! (on a one-replica file stream it stages every batch on disk, about 2 ms each, one after
//! another). A combined batch is an optimisation and nothing more: when the server refuses it
//! for any reason, each input's own batch is sent instead, so every input ends as its own
//! batch would have ended it. That holds because each input's outputs are stored all or none:
//! a combined batch refused as `Duplicate` stored nothing, and sending each input alone then
//! finds which were stored before (`Duplicate` again) and which not (stored now).

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};

use super::Processed;
use crate::error::{BatchErrorKind, BoxError};
use crate::publish::{Batch, BatchAck, BatchError, Publisher};

/// Messages a combined batch holds at most: the server's default batch limit.
const MAX_MESSAGES: usize = 1_000;

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
/// commit ended, up to [`MAX_MESSAGES`].
async fn run(publisher: Publisher, mut queue: mpsc::UnboundedReceiver<Pending>) {
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
            if messages + next.batch.len() > MAX_MESSAGES {
                carried = Some(next);
                break;
            }
            messages += next.batch.len();
            group.push(next);
        }
        commit(&publisher, group).await;
    }
}

/// Commit `group` as one batch, or each of its batches alone when it has one or the combined
/// batch is refused, and answer each input.
async fn commit(publisher: &Publisher, mut group: Vec<Pending>) {
    if group.len() > 1 {
        let combined: Batch = group
            .iter()
            .flat_map(|pending| pending.batch.messages().iter().cloned())
            .collect();
        if let Ok(ack) = publisher.publish_batch(&combined).await {
            let mut first = ack.first_sequence;
            for pending in group {
                let last = first + pending.batch.len() as u64 - 1;
                let own = BatchAck {
                    stream: ack.stream.clone(),
                    first_sequence: first,
                    last_sequence: last,
                };
                first = last + 1;
                let _ = pending.answer.send(Ok(Processed::Stored(own)));
            }
            return;
        }
    }
    let alone = group.drain(..).map(|pending| async move {
        let outcome = outcome(publisher.publish_batch(&pending.batch).await);
        let _ = pending.answer.send(outcome);
    });
    join_all(alone).await;
}

/// What one input's own batch ended as.
fn outcome(stored: Result<BatchAck, BatchError>) -> Result<Processed, BatchError> {
    match stored {
        Ok(ack) => Ok(Processed::Stored(ack)),
        Err(err) if err.kind() == BatchErrorKind::Duplicate => Ok(Processed::AlreadyStored),
        Err(err) => Err(err),
    }
}
