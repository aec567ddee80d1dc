//! Atomic batches (ADR-50, nats-server 2.12.1+): [`Batch`], messages for one stream that the
//! stream stores all or none, and [`BatchAck`], where it stored them.
//!
//! [`Publisher::publish_batch`](crate::Publisher::publish_batch) sends a batch as plain
//! publishes carrying `Nats-Batch-Id`, `Nats-Batch-Sequence` (1, 2, ...) and, on the last,
//! `Nats-Batch-Commit: 1`. The server stages the messages and stores them in one step at the
//! commit, with consecutive sequences, or stores none of them: after any refusal, a lost
//! message, or its batch timeout. The first message and the commit ask for an answer (the
//! first's says early that the stream refuses batches); when a batch was not stored and the
//! server's answer leaves open why (a message lost on the way to its stream), natty looks up
//! the stream of each of its subjects, so a message for no stream or for another stream is
//! named as such.
//!
//! Why natty's own code: async-nats 0.51 has the stream setting, the headers and the error
//! codes, but no batch publisher.
//!
//! # Limits (the server's defaults; `jetstream { limits { batch { .. } } }` in its config)
//! - 1,000 messages per batch (`max_msgs`; more is [`TooManyMessages`](BatchErrorKind::TooManyMessages)),
//! - 50 open batches per stream and 1,000 per server (`max_inflight_per_stream`,
//!   `max_inflight_total`; more is [`TooManyInFlight`](BatchErrorKind::TooManyInFlight),
//!   [`Incomplete`](BatchErrorKind::Incomplete) on 2.12),
//! - 10 s from the first message to the commit on 2.12, 10 s between messages on 2.14+
//!   (`timeout`; a slower batch is [`Incomplete`](BatchErrorKind::Incomplete)),
//! - one stream per batch, each message no larger than the server's max payload.
//!
//! # Idempotency
//! [`Batch::push`] gives every message without a `Nats-Msg-Id` one, so publishing the same
//! `Batch` again after [`TimedOut`](BatchErrorKind::TimedOut) or
//! [`Failed`](BatchErrorKind::Failed) cannot store it twice: if the first one was stored, the
//! stream refuses the second whole, as [`Duplicate`](BatchErrorKind::Duplicate), within its
//! duplicate window (two minutes by default).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::{Client, StatusCode, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, OnceCell};
use tokio::time::Instant;

use super::message::OutgoingMessage;
use crate::error::{BatchErrorKind, Error};
use crate::header::NATS_MESSAGE_ID as MSG_ID;
use crate::validate;

/// The error of an atomic batch.
pub type BatchError = Error<BatchErrorKind>;

const BATCH_PREFIX: &str = "Nats-Batch-";
const BATCH_ID: &str = "Nats-Batch-Id";
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const BATCH_COMMIT: &str = "Nats-Batch-Commit";
const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
const EXPECTED_LAST_MSG_ID: &str = "Nats-Expected-Last-Msg-Id";

/// How long to wait for the answers to a failed batch's other messages, once its commit has
/// been refused, to say which message it was.
const STRAGGLERS: Duration = Duration::from_millis(250);

/// Messages for one stream, stored all or none by
/// [`Publisher::publish_batch`](crate::Publisher::publish_batch). See the
/// [module docs](self) for the limits and what a retry does.
///
/// # Example
/// ```
/// use natty::publish::Batch;
/// use natty::OutgoingMessage;
///
/// let batch: Batch = (1..=3)
///     .map(|n| OutgoingMessage::new(format!("orders.{n}.created"), format!("order {n}")))
///     .collect();
/// assert_eq!(batch.len(), 3);
/// assert!(batch.messages().iter().all(|m| m.headers().get("Nats-Msg-Id").is_some()));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Batch {
    messages: Vec<OutgoingMessage>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `message`, giving it a `Nats-Msg-Id` unless it has one.
    pub fn push(&mut self, mut message: OutgoingMessage) -> &mut Self {
        if !message.headers().contains_key(MSG_ID) {
            message.headers_mut().insert(MSG_ID, nuid::next().as_str());
        }
        self.messages.push(message);
        self
    }

    /// This batch with `message` added, as [`Batch::push`] does.
    #[must_use]
    pub fn with(mut self, message: OutgoingMessage) -> Self {
        self.push(message);
        self
    }

    /// The messages, in the order they are stored.
    pub fn messages(&self) -> &[OutgoingMessage] {
        &self.messages
    }

    /// How many messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether it has no messages.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The messages, moved out (their `Nats-Msg-Id`s stay on them).
    pub(crate) fn into_messages(self) -> Vec<OutgoingMessage> {
        self.messages
    }
}

impl FromIterator<OutgoingMessage> for Batch {
    fn from_iter<I: IntoIterator<Item = OutgoingMessage>>(messages: I) -> Self {
        let mut batch = Self::new();
        batch.extend(messages);
        batch
    }
}

impl Extend<OutgoingMessage> for Batch {
    fn extend<I: IntoIterator<Item = OutgoingMessage>>(&mut self, messages: I) {
        for message in messages {
            self.push(message);
        }
    }
}

/// Where a batch was stored: one stream, consecutive sequences.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchAck {
    /// The stream that stored it.
    pub stream: String,
    /// The sequence of its first message.
    pub first_sequence: u64,
    /// The sequence of its last message.
    pub last_sequence: u64,
}

impl BatchAck {
    /// Every message's sequence, in batch order.
    pub fn sequences(&self) -> RangeInclusive<u64> {
        self.first_sequence..=self.last_sequence
    }

    /// How many messages it stored.
    pub fn count(&self) -> u64 {
        self.last_sequence + 1 - self.first_sequence
    }
}

/// What natty refuses before sending: the rules each message must keep, and those the server
/// would only apply at the commit without saying which message broke them.
pub(crate) fn check(batch: &Batch, max_payload: usize) -> Result<(), BatchError> {
    if batch.is_empty() {
        return Err(Error::new(BatchErrorKind::Empty));
    }
    let mut ids = HashSet::new();
    let mut written = HashSet::new();
    for (index, message) in batch.messages().iter().enumerate() {
        let subject = message.subject();
        validate::publish_subject(subject)
            .map_err(|err| Error::with_source(BatchErrorKind::InvalidSubject, err))?;
        let headers = message.headers();
        if let Some(invalid) = headers.invalid() {
            return Err(Error::with_source(
                BatchErrorKind::InvalidHeader,
                invalid.clone(),
            ));
        }
        let refuse = |why: String| Err(Error::with_source(BatchErrorKind::InvalidHeader, why));
        for (name, _) in headers.iter() {
            let prefix = name.get(..BATCH_PREFIX.len());
            if prefix.is_some_and(|prefix| prefix.eq_ignore_ascii_case(BATCH_PREFIX)) {
                return refuse(format!("message {index}: natty sets {name} itself"));
            }
        }
        if headers.contains_key(EXPECTED_LAST_MSG_ID) {
            return refuse(format!(
                "message {index}: {EXPECTED_LAST_MSG_ID} cannot be in an atomic batch"
            ));
        }
        if index > 0 && headers.contains_key(EXPECTED_LAST_SEQUENCE) {
            return refuse(format!(
                "message {index}: {EXPECTED_LAST_SEQUENCE} only goes on the first message"
            ));
        }
        if headers.contains_key(EXPECTED_LAST_SUBJECT_SEQUENCE) && written.contains(subject) {
            return refuse(format!(
                "message {index}: {EXPECTED_LAST_SUBJECT_SEQUENCE} on {subject}, which an \
                 earlier message of the batch writes"
            ));
        }
        written.insert(subject);
        if let Some(id) = headers.get(MSG_ID) {
            if !ids.insert(id) {
                return refuse(format!("message {index}: {MSG_ID} {id:?} is used twice"));
            }
        }
        validate::payload(message.payload().len(), max_payload)
            .map_err(|err| Error::with_source(BatchErrorKind::PayloadTooLarge, err))?;
    }
    Ok(())
}

/// How long a batch's commit may take to be answered when the client has no request timeout.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Check `batch`, and the server, then send it on `client` and wait up to the client's
/// request timeout for its commit's answer, which arrives through `answers` (started on first
/// use).
pub(crate) async fn publish(
    client: &Client,
    answers: &OnceCell<Answers>,
    batch: &Batch,
) -> Result<BatchAck, BatchError> {
    check(batch, client.max_payload())?;
    let server = crate::server::ServerInfo::of(client);
    if !server.supports_atomic_batch() {
        return Err(Error::with_source(
            BatchErrorKind::Unsupported,
            format!(
                "nats-server {} has no atomic batches (2.12.1+ has)",
                server.version()
            ),
        ));
    }
    let answers = answers.get_or_try_init(|| Answers::start(client)).await?;
    let timeout = client.timeout().unwrap_or(COMMIT_TIMEOUT);
    send(client, answers.open(), batch, timeout).await
}

/// The batches waiting for answers, by number: where to hand each answer (its sequence and
/// the message).
type Routes = HashMap<u64, mpsc::UnboundedSender<(usize, async_nats::Message)>>;

/// Where the answers to a client's batches arrive: one subscription on `<inbox>.*.*`, each
/// answer (to `<inbox>.<batch>.<sequence>`) handed to the batch waiting for it, so a batch
/// costs no subscription of its own. async-nats' own request inbox is not used: a request is
/// sent when its future is first polled, so the first message and the commit could not be
/// sent as requests in their places among the batch's other messages.
pub(crate) struct Answers {
    inbox: String,
    waiting: Arc<Mutex<Routes>>,
    next: AtomicU64,
    router: tokio::task::JoinHandle<()>,
}

impl Drop for Answers {
    fn drop(&mut self) {
        self.router.abort();
    }
}

impl Answers {
    async fn start(client: &Client) -> Result<Self, BatchError> {
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(format!("{inbox}.*.*"))
            .await
            .map_err(|err| Error::with_source(BatchErrorKind::Failed, err.to_string()))?;
        let waiting: Arc<Mutex<Routes>> = Arc::default();
        let routes = Arc::clone(&waiting);
        let router = tokio::spawn(async move {
            while let Some(message) = replies.next().await {
                let mut tokens = message.subject.rsplit('.');
                let (Some(sequence), Some(batch)) = (tokens.next(), tokens.next()) else {
                    continue;
                };
                let (Ok(sequence), Ok(batch)) = (sequence.parse(), batch.parse::<u64>()) else {
                    continue;
                };
                let routes = routes.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(waiter) = routes.get(&batch) {
                    let _ = waiter.send((sequence, message));
                }
            }
        });
        Ok(Self {
            inbox,
            waiting,
            next: AtomicU64::new(0),
            router,
        })
    }

    /// A new batch's reply prefix and the answers to it, until the waiter is dropped.
    fn open(&self) -> Waiter<'_> {
        let batch = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, answers) = mpsc::unbounded_channel();
        self.lock().insert(batch, sender);
        Waiter {
            reply_prefix: format!("{}.{batch}", self.inbox),
            batch,
            answers,
            of: self,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One batch's answers, as [`Answers`] routes them.
struct Waiter<'a> {
    reply_prefix: String,
    batch: u64,
    answers: mpsc::UnboundedReceiver<(usize, async_nats::Message)>,
    of: &'a Answers,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.of.lock().remove(&self.batch);
    }
}

/// Send `batch` (checked) on `client` and wait up to `timeout` for its commit's answer.
async fn send(
    client: &Client,
    mut waiter: Waiter<'_>,
    batch: &Batch,
    timeout: Duration,
) -> Result<BatchAck, BatchError> {
    let id = nuid::next();
    let failed =
        |err: &dyn fmt::Display| Error::with_source(BatchErrorKind::Failed, err.to_string());
    let count = batch.len();
    for (index, message) in batch.messages().iter().enumerate() {
        let sequence = index + 1;
        let mut headers: async_nats::HeaderMap = message.headers().clone().into();
        headers.insert(BATCH_ID, id.as_str());
        headers.insert(BATCH_SEQUENCE, sequence.to_string().as_str());
        if sequence == count {
            headers.insert(BATCH_COMMIT, "1");
        }
        let subject = Subject::from(message.subject());
        let payload = message.payload().clone();
        let sent = if sequence == 1 || sequence == count {
            let reply = Subject::from(format!("{}.{sequence}", waiter.reply_prefix));
            client
                .publish_with_reply_and_headers(subject, reply, headers, payload)
                .await
        } else {
            client.publish_with_headers(subject, headers, payload).await
        };
        sent.map_err(|err| failed(&err))?;
    }

    let (mut first, mut commit) = (None, None);
    let deadline = Instant::now() + timeout;
    let mut until = deadline;
    loop {
        let Ok(Some((sequence, message))) =
            tokio::time::timeout_at(until, waiter.answers.recv()).await
        else {
            break;
        };
        let reply = Reply::of(&message);
        if sequence == count {
            let stored = matches!(reply, Reply::Stored { .. });
            commit = Some(reply);
            if stored || count == 1 || first.is_some() {
                break;
            }
            // Refused: the first message's answer may say more, if it comes soon.
            until = deadline.min(Instant::now() + STRAGGLERS);
        } else if sequence == 1 {
            // A refused first message means nothing of the batch is stored: no need to wait.
            let refused = !matches!(reply, Reply::Staged);
            first = Some(reply);
            if commit.is_some() || refused {
                break;
            }
        }
    }
    let Some(commit) = commit else {
        // The server refused the first message: it stored nothing, whatever the commit says.
        if let Some(first) = first.filter(|first| !matches!(first, Reply::Staged)) {
            return decide(
                Some(&first),
                &Reply::Unreadable(String::new()),
                batch,
                id.as_str(),
            );
        }
        return Err(Error::with_source(
            BatchErrorKind::TimedOut,
            format!("no answer to the commit of batch {id} within {timeout:?}"),
        ));
    };
    match decide(first.as_ref(), &commit, batch, id.as_str()) {
        Err(err) if err.kind() == BatchErrorKind::Incomplete => {
            Err(diagnose(client, batch).await.unwrap_or(err))
        }
        decided => decided,
    }
}

/// Why a batch the server dropped before its commit was not whole, when its subjects say:
/// one that no stream captures, or two that different streams capture. `None` when they all
/// go to one stream (a message was lost on the way, the batch timed out) or the lookups fail.
async fn diagnose(client: &Client, batch: &Batch) -> Option<BatchError> {
    let js = async_nats::jetstream::new(client.clone());
    // Looked up one after another: a batch of many subjects is explained by its first ones.
    const LOOKUPS: usize = 16;
    let mut streams: HashMap<&str, String> = HashMap::new();
    let mut first_stream: Option<String> = None;
    for (index, message) in batch.messages().iter().enumerate() {
        let subject = message.subject();
        let stream = match streams.get(subject) {
            Some(stream) => stream.clone(),
            None if streams.len() == LOOKUPS => return None,
            None => match js.stream_by_subject(subject).await {
                Ok(stream) => {
                    streams.insert(subject, stream.clone());
                    stream
                }
                Err(err)
                    if err.kind()
                        == async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound =>
                {
                    return Some(Error::with_source(
                        BatchErrorKind::NoStream,
                        format!("message {index}: no stream captures {subject}"),
                    ));
                }
                Err(_) => return None,
            },
        };
        match &first_stream {
            None => first_stream = Some(stream),
            Some(first) if *first != stream => {
                return Some(Error::with_source(
                    BatchErrorKind::MixedStreams,
                    format!(
                        "message {index} ({subject}) goes to stream {stream}, the batch's first \
                         to {first}"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// The server's answer to one message of a batch.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Reply {
    /// Staged (an empty answer), to be stored at the commit.
    Staged,
    /// The commit's answer: the batch is stored.
    Stored {
        stream: String,
        last: u64,
        batch: Option<String>,
        count: Option<u64>,
    },
    /// Refused by `stream` with the JetStream error code `code`.
    Refused {
        stream: Option<String>,
        code: u64,
        description: String,
    },
    /// No stream listens on the message's subject.
    NoStream,
    /// An answer natty does not understand.
    Unreadable(String),
}

#[derive(Deserialize)]
struct Answer {
    stream: Option<String>,
    #[serde(default)]
    seq: u64,
    batch: Option<String>,
    count: Option<u64>,
    error: Option<ApiError>,
}

/// A JetStream API error in an answer: its code (`10071`, ...) and description. Shared by the
/// atomic and fast-ingest batches.
#[derive(Deserialize)]
pub(super) struct ApiError {
    #[serde(default)]
    pub(super) err_code: u64,
    #[serde(default)]
    pub(super) description: String,
}

impl Reply {
    fn of(message: &async_nats::Message) -> Self {
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            return Self::NoStream;
        }
        Self::parse(&message.payload)
    }

    fn parse(payload: &Bytes) -> Self {
        if payload.is_empty() {
            return Self::Staged;
        }
        match serde_json::from_slice::<Answer>(payload) {
            Ok(Answer {
                error: Some(error),
                stream,
                ..
            }) => Self::Refused {
                stream,
                code: error.err_code,
                description: error.description,
            },
            Ok(Answer {
                stream: Some(stream),
                seq,
                batch,
                count,
                error: None,
            }) => Self::Stored {
                stream,
                last: seq,
                batch,
                count,
            },
            _ => Self::Unreadable(String::from_utf8_lossy(payload).into_owned()),
        }
    }
}

/// What the answers to a batch mean: its [`BatchAck`] when the commit stored all of it, else
/// the refusal that explains why not, the first message's before the commit's.
pub(super) fn decide(
    first: Option<&Reply>,
    commit: &Reply,
    batch: &Batch,
    id: &str,
) -> Result<BatchAck, BatchError> {
    let count = batch.len() as u64;
    if let Reply::Stored {
        stream,
        last,
        batch: stored_batch,
        count: stored,
    } = commit
    {
        return match (stored_batch.as_deref(), *stored) {
            (Some(stored_batch), Some(stored))
                if stored_batch == id && stored == count && *last >= count =>
            {
                Ok(BatchAck {
                    stream: stream.clone(),
                    first_sequence: last + 1 - count,
                    last_sequence: *last,
                })
            }
            // A server without atomic batches (a stream leader older than the server natty
            // is connected to) stored each message as it came: not atomically.
            (None, _) => Err(Error::with_source(
                BatchErrorKind::Rejected,
                format!(
                    "the stream's server stored the messages of batch {id} one by one: it \
                     has no atomic batches"
                ),
            )),
            _ => Err(Error::with_source(
                BatchErrorKind::Rejected,
                format!("the commit of batch {id} answered {stored:?} stored of {count}"),
            )),
        };
    }
    let commit_stream = match commit {
        Reply::Refused { stream, .. } => stream.as_deref(),
        _ => None,
    };
    let last = batch.len() - 1;
    let refusal = |index: usize, reply: &Reply| -> Option<BatchError> {
        let subject = batch.messages()[index].subject();
        Some(match reply {
            Reply::Staged | Reply::Stored { .. } => return None,
            Reply::NoStream => Error::with_source(
                BatchErrorKind::NoStream,
                format!("message {index}: no stream captures {subject}"),
            ),
            Reply::Unreadable(answer) => Error::with_source(
                BatchErrorKind::Rejected,
                format!("message {index}: unreadable answer {answer:?}"),
            ),
            Reply::Refused {
                stream,
                code,
                description,
            } => {
                let elsewhere = index < last
                    && matches!((stream.as_deref(), commit_stream), (Some(a), Some(b)) if a != b);
                let kind = if elsewhere {
                    BatchErrorKind::MixedStreams
                } else {
                    kind_of(*code)
                };
                let stream = stream.as_deref().unwrap_or("?");
                Error::with_source(
                    kind,
                    format!("message {index} ({subject}): stream {stream} answered {code} {description}"),
                )
            }
        })
    };
    let refused = first
        .filter(|_| last > 0)
        .and_then(|first| refusal(0, first))
        .or_else(|| refusal(last, commit));
    Err(refused.unwrap_or_else(|| {
        Error::with_source(
            BatchErrorKind::Rejected,
            format!("batch {id} was not stored and no answer said why"),
        )
    }))
}

/// The kind of a JetStream error code met in a batch.
fn kind_of(code: u64) -> BatchErrorKind {
    match code {
        10174 => BatchErrorKind::AtomicDisabled,
        10176 => BatchErrorKind::Incomplete,
        10199 => BatchErrorKind::TooManyMessages,
        10201 => BatchErrorKind::Duplicate,
        10071 | 10164 => BatchErrorKind::WrongLastSequence,
        // 10158: an id of the batch is being stored by an earlier write that may yet fail.
        10210 | 10167 | 10158 => BatchErrorKind::TooManyInFlight,
        _ => BatchErrorKind::Rejected,
    }
}

#[cfg(test)]
mod tests;
