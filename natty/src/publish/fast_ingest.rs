//! The wire side of fast-ingest batch publishing (ADR-50, nats-server 2.14+), used by a
//! subject's publish worker when its stream allows batched publishing.
//!
//! A batch is a run of ordinary publishes whose reply subject tells the server their batch,
//! their place in it and what to do: `<inbox>.<flow>.fail.<seq>.<op>.$FI`. The server stores
//! each message as it comes, answers the first one (the batch is open), sends a flow ack every
//! `flow` messages (everything up to that sequence is stored), and ends the batch with a
//! publish ack carrying how many messages it stored: after an end-of-batch commit, or after a
//! gap (`fail` mode: it stops at the first missing sequence, so what it stored is always a
//! prefix of the batch). One round trip confirms hundreds of messages, instead of one each.
//!
//! What the worker keeps on top: every message sent and not yet confirmed, oldest first.
//! When a batch ends early (a gap, an unknown batch after a server restart, silence past the
//! ack timeout), the stored prefix is confirmed and the rest goes back to the worker, which
//! sends it again first, in the next batch, under the same `Nats-Msg-Id`s: whatever did reach
//! the stream is dropped as a duplicate and nothing is stored twice or out of order.
//!
//! Why natty's own code: async-nats has no fast-ingest publisher, and Synadia's
//! `jetstream-extra` one is built on another async-nats release and publishes one batch per
//! caller, where natty needs a long-lived per-subject pipeline that resends what a batch lost.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::{Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::time::Instant;

use super::batch::ApiError;

/// Batches of flow acks that may be outstanding: the sender runs this many flows ahead of
/// the last ack (ADR-50 finds two best in most cases).
const FLOWS_AHEAD: u64 = 2;

/// The JetStream API error code for a stream without `allow_batched`.
const BATCHING_DISABLED: u64 = 10205;

/// The operation a message performs in its batch (the reply subject's second-to-last token).
#[derive(Clone, Copy)]
enum Op {
    Start = 0,
    Append = 1,
    /// End the batch with a message that is not stored.
    CommitEndOfBatch = 3,
    /// Ask for the latest flow ack again.
    Ping = 4,
}

/// Why a batch could not be opened; the first message comes back to be sent another way.
pub(crate) enum OpenError<M> {
    /// The stream does not allow batched publishing (or the server is too old).
    Disabled(M),
    /// No stream takes the subject, the server refused, or nothing answered in time.
    Failed(M),
}

/// What a reply from the server meant for the batch.
pub(crate) enum Progress {
    /// This many more of the oldest unconfirmed messages are stored.
    Stored(usize),
    /// The batch is over; this many more of the oldest unconfirmed messages are stored, the
    /// rest were not (or may not have been) and must be resent.
    Ended(usize),
    /// Nothing new.
    Nothing,
}

/// One open fast-ingest batch of a subject and the messages it has not confirmed yet.
pub(crate) struct Batch<M> {
    client: async_nats::Client,
    subject: Subject,
    /// `<inbox>.<flow>.fail.`: every reply subject of the batch starts with it.
    reply_prefix: String,
    replies: Subscriber,
    /// Batch sequence of the last message sent.
    sent: u64,
    /// Highest batch sequence known to be stored.
    stored: u64,
    /// Messages per flow ack, as the server last said.
    flow: u64,
    committed: bool,
    unconfirmed: VecDeque<M>,
    /// When the batch last heard from the server, for the ack timeout.
    heard_at: Instant,
    pinged_at: Instant,
}

/// The payloads that arrive on a batch's inbox.
#[derive(Deserialize)]
#[serde(untagged)]
enum Reply {
    Flow(Flow),
    End(End),
    Refused(Refused),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Flow {
    /// Everything up to `seq` is stored; acks now come every `msgs` messages.
    Ack { seq: u64, msgs: u64 },
    /// A message went missing: the server stops the batch after `last_seq`.
    Gap {
        #[serde(rename = "last_seq")]
        _last_seq: u64,
    },
    /// A message failed a server check; the batch ends.
    Err {},
}

/// The publish ack that ends a batch: `count` messages of it were stored.
#[derive(Deserialize)]
struct End {
    #[serde(rename = "batch")]
    _batch: String,
    count: u64,
}

#[derive(Deserialize)]
struct Refused {
    error: ApiError,
}

/// A message a batch can carry.
pub(crate) trait BatchMessage {
    /// Its headers (with its `Nats-Msg-Id`) and payload, for one send.
    fn parts(&self) -> (async_nats::HeaderMap, Bytes);
}

impl<M: BatchMessage> Batch<M> {
    /// Open a batch on `subject` with `first` as its first message and wait for the server to
    /// accept it (one round trip per batch).
    pub(crate) async fn open(
        client: &async_nats::Client,
        subject: &Subject,
        first: M,
        flow: u16,
        timeout: Duration,
    ) -> Result<Self, OpenError<M>> {
        let inbox = client.new_inbox();
        let Ok(replies) = client.subscribe(format!("{inbox}.>")).await else {
            return Err(OpenError::Failed(first));
        };
        let now = Instant::now();
        let mut batch = Self {
            client: client.clone(),
            subject: subject.clone(),
            reply_prefix: format!("{inbox}.{flow}.fail."),
            replies,
            sent: 0,
            stored: 0,
            flow: u64::from(flow.max(1)),
            committed: false,
            unconfirmed: VecDeque::new(),
            heard_at: now,
            pinged_at: now,
        };
        if let Err(first) = batch.send_with(Op::Start, first).await {
            return Err(OpenError::Failed(first));
        }
        let answer = tokio::time::timeout(timeout, batch.replies.next()).await;
        let message = match answer {
            Ok(Some(message)) => message,
            _ => return Err(OpenError::Failed(batch.into_first())),
        };
        // No responders: no stream takes the subject.
        if message.status.is_some() {
            return Err(OpenError::Failed(batch.into_first()));
        }
        match serde_json::from_slice::<Reply>(&message.payload) {
            Ok(Reply::Flow(Flow::Ack { seq, msgs })) => {
                batch.flow = msgs.max(1);
                batch.stored = seq;
                batch.heard_at = Instant::now();
                Ok(batch)
            }
            Ok(Reply::Refused(refused)) if refused.error.err_code == BATCHING_DISABLED => {
                Err(OpenError::Disabled(batch.into_first()))
            }
            _ => Err(OpenError::Failed(batch.into_first())),
        }
    }

    fn into_first(mut self) -> M {
        self.unconfirmed
            .pop_front()
            .expect("a batch that is being opened holds its first message")
    }

    /// Whether another message may be sent now: the batch is open and fewer than
    /// `FLOWS_AHEAD` flows are unacknowledged.
    pub(crate) fn has_room(&self) -> bool {
        self.room() > 0
    }

    /// How many more messages may be sent now (see [`Batch::has_room`]).
    pub(crate) fn room(&self) -> usize {
        if self.committed {
            return 0;
        }
        let ahead = (self.stored + self.flow * FLOWS_AHEAD).saturating_sub(self.sent);
        usize::try_from(ahead).unwrap_or(usize::MAX)
    }

    /// Whether sent messages wait for confirmation.
    pub(crate) fn has_unconfirmed(&self) -> bool {
        !self.unconfirmed.is_empty()
    }

    /// Whether the server confirmed any message of this batch.
    pub(crate) fn confirmed_any(&self) -> bool {
        self.stored > 0
    }

    /// Whether the end-of-batch commit was sent.
    pub(crate) fn is_committed(&self) -> bool {
        self.committed
    }

    /// Write `message` to the connection as the batch's next one.
    pub(crate) async fn send(&mut self, message: M) -> Result<(), M> {
        self.send_with(Op::Append, message).await
    }

    async fn send_with(&mut self, op: Op, message: M) -> Result<(), M> {
        let (headers, payload) = message.parts();
        let reply = self.reply(self.sent + 1, op);
        self.unconfirmed.push_back(message);
        let written = self
            .client
            .publish_with_reply_and_headers(self.subject.clone(), reply, headers, payload)
            .await;
        match written {
            Ok(()) => {
                self.sent += 1;
                Ok(())
            }
            Err(_) => Err(self
                .unconfirmed
                .pop_back()
                .expect("the message was pushed just above")),
        }
    }

    /// End the batch: the server answers with how many of its messages it stored.
    pub(crate) async fn commit(&mut self) {
        if self.committed {
            return;
        }
        self.committed = true;
        let reply = self.reply(self.sent + 1, Op::CommitEndOfBatch);
        // A commit that does not get out is settled by the ack timeout like any lost reply.
        let _ = self
            .client
            .publish_with_reply(self.subject.clone(), reply, Bytes::new())
            .await;
    }

    /// Wait for the server's next word on the batch.
    pub(crate) async fn progress(&mut self) -> Progress {
        let Some(message) = self.replies.next().await else {
            return self.end(0);
        };
        self.heard_at = Instant::now();
        match serde_json::from_slice::<Reply>(&message.payload) {
            Ok(Reply::Flow(Flow::Ack { seq, msgs })) => {
                self.flow = msgs.max(1);
                Progress::Stored(self.confirm_through(seq))
            }
            // The server ends the batch after a gap and says how much it stored.
            Ok(Reply::Flow(Flow::Gap { .. })) => {
                self.committed = true;
                Progress::Nothing
            }
            Ok(Reply::End(end)) => {
                let newly = self.confirm_through(end.count);
                self.end(newly)
            }
            // An unknown batch (the server restarted or forgot it), or anything unexpected:
            // only what flow acks confirmed is known to be stored.
            _ => self.end(0),
        }
    }

    /// Confirm the messages up to batch sequence `seq`; returns how many that newly covers.
    fn confirm_through(&mut self, seq: u64) -> usize {
        let seq = seq.min(self.sent);
        let newly = seq.saturating_sub(self.stored);
        self.stored = self.stored.max(seq);
        usize::try_from(newly).unwrap_or(usize::MAX)
    }

    fn end(&mut self, newly: usize) -> Progress {
        self.committed = true;
        Progress::Ended(newly)
    }

    /// The oldest `count` unconfirmed messages, now confirmed.
    pub(crate) fn take_stored(&mut self, count: usize) -> impl Iterator<Item = M> + '_ {
        let count = count.min(self.unconfirmed.len());
        self.unconfirmed.drain(..count)
    }

    /// Every message the batch did not confirm, oldest first, to be resent.
    pub(crate) fn into_unconfirmed(self) -> VecDeque<M> {
        self.unconfirmed
    }

    /// Called when the worker's timer fires: ask for the last flow ack again after a third of
    /// `timeout` without news; `false` once `timeout` passed without any (give the batch up).
    pub(crate) async fn keep_alive(&mut self, timeout: Duration) -> bool {
        let now = Instant::now();
        if now >= self.heard_at + timeout {
            return false;
        }
        if now >= self.pinged_at.max(self.heard_at) + timeout / 3 {
            self.pinged_at = now;
            let reply = self.reply(self.sent, Op::Ping);
            let _ = self
                .client
                .publish_with_reply(self.subject.clone(), reply, Bytes::new())
                .await;
        }
        true
    }

    /// When [`Batch::keep_alive`] should run next.
    pub(crate) fn next_check(&self, timeout: Duration) -> Instant {
        (self.pinged_at.max(self.heard_at) + timeout / 3).min(self.heard_at + timeout)
    }

    fn reply(&self, seq: u64, op: Op) -> Subject {
        reply_subject(&self.reply_prefix, seq, op)
    }
}

/// `<prefix><seq>.<op>.$FI`, written once into a buffer of its exact length, which the
/// `Subject` then takes over without a copy (one allocation per message, no formatter).
fn reply_subject(prefix: &str, seq: u64, op: Op) -> Subject {
    const SUFFIX: &str = ".$FI";
    let mut digits = itoa::Buffer::new();
    let seq = digits.format(seq);
    let mut reply = String::with_capacity(prefix.len() + seq.len() + 2 + SUFFIX.len());
    reply.push_str(prefix);
    reply.push_str(seq);
    reply.push('.');
    reply.push(char::from(b'0' + op as u8));
    reply.push_str(SUFFIX);
    Subject::from(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_name_the_batch_sequence_and_operation() {
        let cases = [
            (1, Op::Start, "1.0"),
            (u64::MAX, Op::Append, "18446744073709551615.1"),
            (42, Op::CommitEndOfBatch, "42.3"),
            (7, Op::Ping, "7.4"),
        ];
        for (seq, op, tail) in cases {
            let reply = reply_subject("_INBOX.abc.500.fail.", seq, op);
            assert_eq!(reply.as_str(), format!("_INBOX.abc.500.fail.{tail}.$FI"));
        }
    }

    #[test]
    fn replies_parse_into_their_kinds() {
        let ack: Reply = serde_json::from_slice(br#"{"type":"ack","seq":10,"msgs":500}"#).unwrap();
        assert!(matches!(ack, Reply::Flow(Flow::Ack { seq: 10, msgs: 500 })));
        let gap: Reply =
            serde_json::from_slice(br#"{"type":"gap","last_seq":13,"seq":14}"#).unwrap();
        assert!(matches!(gap, Reply::Flow(Flow::Gap { .. })));
        let end: Reply =
            serde_json::from_slice(br#"{"stream":"S","seq":11,"batch":"abc","count":12}"#).unwrap();
        assert!(matches!(end, Reply::End(End { count: 12, .. })));
        let refused: Reply = serde_json::from_slice(
            br#"{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"},"stream":"N","seq":0}"#,
        )
        .unwrap();
        assert!(matches!(
            refused,
            Reply::Refused(Refused {
                error: ApiError {
                    err_code: 10205,
                    ..
                }
            })
        ));
        // A plain publish ack (no batch) is not the end of a batch.
        let plain = serde_json::from_slice::<Reply>(br#"{"stream":"S","seq":3}"#);
        assert!(plain.is_err());
    }
}
