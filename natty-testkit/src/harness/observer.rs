//! Settlements seen on the wire. Every ack, nak, term and in-progress is a core NATS message
//! to its message's `$JS.ACK...` reply subject, which any client may subscribe to next to
//! the server: so the harness sees exactly what reached the server, from any stack, without
//! a hook in natty's per-message path.
//!
//! Dead letters are matched to their originals by natty-tower's `Natty-Original-*` headers.
//! A dead letter is published (and stored) before its original is terminated, so it reaches
//! this client before the `+TERM`; the client's reader hands both to their subscriptions in
//! that order, and the observer reads every dead-letter subscription dry before it records a
//! settlement, so a terminated message's dead letter is always recorded first.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use natty::async_nats::{self, Subscriber};
use natty::message::{DeliveryInfo, Settlement};
use natty::HeaderMap;
use natty_tower::dead_letter::{ORIGINAL_CONSUMER, ORIGINAL_SEQUENCE, ORIGINAL_STREAM};
use tokio::sync::{mpsc, watch};

/// One message of one consumer: stream, consumer, stream sequence.
pub(crate) type Key = (String, String, u64);

/// A settled delivery of a message, as the server was told.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Delivery {
    /// The message's sequence in its stream.
    pub sequence: u64,
    /// Which delivery of the message this was (1 for the first).
    pub delivered: u64,
    /// How it was settled: `Ack` (`DoubleAck` when sent as a request), `Nak` with its delay,
    /// or `Term`.
    pub settlement: Settlement,
    /// How many in-progress signals it sent before that.
    pub in_progress: u32,
    /// For a terminated message: the dead letter natty-tower published for it, when its
    /// subject is watched ([`Harness::watch_dead_letters`](crate::Harness::watch_dead_letters)).
    pub dead_letter: Option<DeadLetter>,
}

impl Delivery {
    /// Whether this delivery ended the message's deliveries: an ack or a term.
    pub fn is_last(&self) -> bool {
        !matches!(self.settlement, Settlement::Nak(_))
    }
}

/// A dead letter as natty-tower's dead-letter layer publishes it: the original's payload and
/// headers, plus the `Natty-Original-*` headers naming where it came from and why
/// (`natty_tower::dead_letter::{ORIGINAL_SUBJECT, ORIGINAL_SEQUENCE, ERROR, ...}`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The dead-letter subject it was published to.
    pub subject: String,
    /// Its headers, the `Natty-Original-*` ones included.
    pub headers: HeaderMap,
    /// The original's payload.
    pub payload: Bytes,
}

/// One delivery as it is being seen.
#[derive(Debug, Default)]
struct Seen {
    in_progress: u32,
    settlement: Option<Settlement>,
}

/// Everything seen so far.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// Per message, per delivery count.
    deliveries: HashMap<Key, HashMap<u64, Seen>>,
    dead_letters: HashMap<Key, DeadLetter>,
}

impl Record {
    /// The settled deliveries of `key`, first delivery first.
    pub(crate) fn deliveries(&self, key: &Key) -> Vec<Delivery> {
        let Some(seen) = self.deliveries.get(key) else {
            return Vec::new();
        };
        let mut settled: Vec<Delivery> = seen
            .iter()
            .filter_map(|(&delivered, seen)| {
                let settlement = seen.settlement?;
                let dead_letter = match settlement {
                    Settlement::Term => self.dead_letters.get(key).cloned(),
                    _ => None,
                };
                Some(Delivery {
                    sequence: key.2,
                    delivered,
                    settlement,
                    in_progress: seen.in_progress,
                    dead_letter,
                })
            })
            .collect();
        settled.sort_by_key(|delivery| delivery.delivered);
        settled
    }

    fn settle(&mut self, info: DeliveryInfo, settlement: Settlement) {
        let key = (
            info.stream.to_string(),
            info.consumer.to_string(),
            info.stream_sequence,
        );
        let seen = self
            .deliveries
            .entry(key)
            .or_default()
            .entry(info.delivered)
            .or_default();
        match settlement {
            Settlement::InProgress => seen.in_progress += 1,
            // The first final settlement is the one the server applied.
            _ => {
                seen.settlement.get_or_insert(settlement);
            }
        }
    }

    fn dead_letter(&mut self, message: async_nats::Message) {
        let headers = HeaderMap::from(message.headers.unwrap_or_default());
        let origin = (
            headers.get(ORIGINAL_STREAM),
            headers.get(ORIGINAL_CONSUMER),
            headers.get(ORIGINAL_SEQUENCE).and_then(|s| s.parse().ok()),
        );
        // A message without the origin headers is no natty dead letter; nothing to match.
        if let (Some(stream), Some(consumer), Some(sequence)) = origin {
            let key = (stream.to_owned(), consumer.to_owned(), sequence);
            let letter = DeadLetter {
                subject: message.subject.to_string(),
                headers,
                payload: message.payload,
            };
            self.dead_letters.insert(key, letter);
        }
    }
}

/// The observer task, stopped when the harness and every [`Serving`](crate::Serving) it
/// handed out are gone.
#[derive(Debug)]
pub(crate) struct Observing(tokio::task::JoinHandle<()>);

impl Drop for Observing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The record, shared with the observer task, and a signal for every change.
#[derive(Debug)]
pub(crate) struct Observer {
    record: Mutex<Record>,
    changes: watch::Sender<u64>,
}

impl Observer {
    /// Start observing `acks` (a subscription to `$JS.ACK.>`); dead-letter subscriptions sent
    /// on the returned channel are read from then on. The task ends with the subscription.
    pub(crate) fn spawn(
        acks: Subscriber,
    ) -> (Arc<Self>, mpsc::UnboundedSender<Subscriber>, Arc<Observing>) {
        let observer = Arc::new(Self {
            record: Mutex::new(Record::default()),
            changes: watch::Sender::new(0),
        });
        let (watches, watch_requests) = mpsc::unbounded_channel();
        let task = tokio::spawn(Arc::clone(&observer).run(acks, watch_requests));
        (observer, watches, Arc::new(Observing(task)))
    }

    /// The record, to read.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Record> {
        // Every change is one insert or counter bump: a panic cannot leave it torn.
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that sees every change from now on.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wake every waiter (something outside the record changed, such as a run ending).
    pub(crate) fn touch(&self) {
        self.changes.send_modify(|version| *version += 1);
    }

    async fn run(
        self: Arc<Self>,
        mut acks: Subscriber,
        mut watch_requests: mpsc::UnboundedReceiver<Subscriber>,
    ) {
        let mut dead_letters: Vec<Subscriber> = Vec::new();
        loop {
            let ack = poll_fn(|cx| {
                while let Poll::Ready(Some(watch)) = watch_requests.poll_recv(cx) {
                    dead_letters.push(watch);
                }
                for subscription in &mut dead_letters {
                    while let Poll::Ready(Some(letter)) = subscription.poll_next_unpin(cx) {
                        self.lock().dead_letter(letter);
                    }
                }
                acks.poll_next_unpin(cx)
            })
            .await;
            let Some(ack) = ack else { return };
            // What arrived before this ack is read first: a term's dead letter among it.
            while let Some(Some(watch)) = watch_requests.recv().now_or_never() {
                dead_letters.push(watch);
            }
            for subscription in &mut dead_letters {
                while let Some(Some(letter)) = subscription.next().now_or_never() {
                    self.lock().dead_letter(letter);
                }
            }
            let info = DeliveryInfo::from_ack_subject(&ack.subject);
            if let (Some(info), Some(settlement)) =
                (info, settlement_of(&ack.payload, ack.reply.is_some()))
            {
                self.lock().settle(info, settlement);
            }
            self.touch();
        }
    }
}

/// What an ack body says (async-nats' encoding of each `AckKind`); `confirmed` when it was
/// sent as a request, which is how a double ack goes.
fn settlement_of(body: &[u8], confirmed: bool) -> Option<Settlement> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    Some(match word {
        // An empty body acks too, as the server reads it.
        "+ACK" | "" if confirmed => Settlement::DoubleAck,
        "+ACK" | "" | "+NXT" => Settlement::Ack,
        "-NAK" => Settlement::Nak(nak_delay(rest)),
        "+TERM" => Settlement::Term,
        "+WPI" => Settlement::InProgress,
        _ => return None,
    })
}

/// The delay of `-NAK {"delay": <nanoseconds>}`.
fn nak_delay(rest: &str) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_str(rest).ok()?;
    value.get("delay")?.as_u64().map(Duration::from_nanos)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use natty::message::Settlement;

    use super::settlement_of;

    #[test]
    fn every_ack_body_reads_as_its_settlement() {
        let cases: [(&[u8], bool, Option<Settlement>); 9] = [
            (b"+ACK", false, Some(Settlement::Ack)),
            (b"", false, Some(Settlement::Ack)),
            (b"+ACK", true, Some(Settlement::DoubleAck)),
            (b"-NAK", false, Some(Settlement::Nak(None))),
            (
                b"-NAK {\"delay\":1500000000}",
                false,
                Some(Settlement::Nak(Some(Duration::from_millis(1500)))),
            ),
            (b"+TERM", false, Some(Settlement::Term)),
            (b"+TERM too many failures", false, Some(Settlement::Term)),
            (b"+WPI", false, Some(Settlement::InProgress)),
            (b"hello", false, None),
        ];
        for (body, confirmed, expected) in cases {
            assert_eq!(
                settlement_of(body, confirmed),
                expected,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
