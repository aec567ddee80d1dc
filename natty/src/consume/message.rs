//! A consumed JetStream message and the means to settle it.
//!
//! [`Message`] is shaped like `http::Request`: a payload, the parts that describe it (subject,
//! headers, delivery info) and [`Extensions`] for middleware to attach typed data. Settling goes
//! through an [`Acker`], a cheap handle shared with whoever needs to settle or observe the
//! message (a driver, an in-progress heartbeat), so "settled exactly once" is checked in one
//! place. Hand-built messages ([`Message::builder`]) settle into a [`Recorder`] instead of the
//! network, so whole handler stacks can be unit-tested offline.
//!
//! # Example
//! ```
//! use natty::message::{Message, Settlement};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (msg, recorder) = Message::builder("orders.created", "{}").build();
//! msg.ack().await.unwrap();
//! assert_eq!(recorder.settlements(), vec![Settlement::Ack]);
//! assert!(msg.ack().await.is_err(), "a message settles once");
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::Subject;
use bytes::Bytes;
pub use http::Extensions;

use super::ack_subject::{AckNumbers, AckSubject};
use super::settings::ConsumerSettings;
use crate::error::{Error, SettleErrorKind};
use crate::header::HeaderMap;

/// The error of a settle call.
pub type SettleError = Error<SettleErrorKind>;

/// A stream or consumer name, shared by every message a consumer delivers: cloning it counts a
/// reference instead of copying the text. Reads as a `&str` (`as_str`, `Deref`, `Display`) and
/// compares with string slices.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

impl Name {
    /// The name's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Self {
        Self(Arc::from(name))
    }
}

impl From<String> for Name {
    fn from(name: String) -> Self {
        Self(Arc::from(name))
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

/// Where a message sits in its stream and consumer, from the JetStream reply subject.
///
/// Built by hand (for a hand-built [`Message`]) with [`DeliveryInfo::new`], then its fields set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryInfo {
    /// The stream the message is stored in.
    pub stream: Name,
    /// The durable consumer that delivered it.
    pub consumer: Name,
    /// The message's sequence in the stream.
    pub stream_sequence: u64,
    /// The delivery's sequence in the consumer.
    pub consumer_sequence: u64,
    /// How many times this message has been delivered, this time included (starts at 1).
    pub delivered: u64,
    /// How many messages were pending in the consumer after this one.
    pub pending: u64,
    /// When the message was stored, in nanoseconds since the Unix epoch.
    pub published_unix_nanos: i128,
}

impl Default for DeliveryInfo {
    fn default() -> Self {
        Self::new("", "")
    }
}

impl DeliveryInfo {
    /// The first delivery by `consumer` of `stream`, its sequences and time still 0.
    ///
    /// ```
    /// let mut info = natty::message::DeliveryInfo::new("ORDERS", "billing");
    /// info.stream_sequence = 12;
    /// info.delivered = 2;
    /// ```
    pub fn new(stream: impl Into<String>, consumer: impl Into<String>) -> Self {
        Self {
            stream: Name::from(stream.into()),
            consumer: Name::from(consumer.into()),
            stream_sequence: 0,
            consumer_sequence: 0,
            delivered: 1,
            pending: 0,
            published_unix_nanos: 0,
        }
    }

    /// Read a JetStream ack subject (the reply subject of a delivered message, where its acks
    /// go): stream, consumer, sequences and delivery count. `None` when `reply` is not one.
    /// For code that watches acks on the wire, such as natty-testkit's `Harness`.
    ///
    /// ```
    /// let reply = "$JS.ACK.ORDERS.billing.2.17.9.1700000000000000000.4";
    /// let info = natty::message::DeliveryInfo::from_ack_subject(reply).unwrap();
    /// assert_eq!((info.stream.as_str(), info.stream_sequence, info.delivered), ("ORDERS", 17, 2));
    /// ```
    pub fn from_ack_subject(reply: &str) -> Option<Self> {
        let ack = AckSubject::parse(reply)?;
        let mut info = Self::new(ack.stream, ack.consumer);
        ack.numbers.fill(&mut info);
        Some(info)
    }
}

/// How a message was settled (or told to wait, for [`Settlement::InProgress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settlement {
    /// Handled.
    Ack,
    /// Handled, and the server confirmed the ack.
    DoubleAck,
    /// Not handled: redeliver, after the delay if one is given.
    Nak(Option<Duration>),
    /// Never redeliver.
    Term,
    /// Still working: restart the ack-wait timer. Does not settle.
    InProgress,
}

impl Settlement {
    /// Whether this ends the message's delivery (everything but [`Settlement::InProgress`]).
    pub fn is_final(self) -> bool {
        !matches!(self, Settlement::InProgress)
    }
}

/// Settles one message; cheap to clone, shared by everything that holds the message.
#[derive(Clone)]
pub struct Acker {
    inner: Arc<AckerInner>,
}

struct AckerInner {
    target: Target,
    settled: AtomicBool,
    /// The final settlement claimed, for drivers that must know whether a message comes back.
    outcome: Mutex<Option<Settlement>>,
    failure_logged: AtomicBool,
}

enum Target {
    Server {
        // Shared by every message of a run: cloning a client counts a dozen references.
        client: Arc<async_nats::Client>,
        reply: Subject,
    },
    Recorder(Recorder),
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.inner.target {
            Target::Server { reply, .. } => reply.as_str(),
            Target::Recorder(_) => "recorder",
        };
        f.debug_struct("Acker")
            .field("target", &target)
            .field("settled", &self.is_settled())
            .finish()
    }
}

impl Acker {
    fn new(target: Target) -> Self {
        Self {
            inner: Arc::new(AckerInner {
                target,
                settled: AtomicBool::new(false),
                outcome: Mutex::new(None),
                failure_logged: AtomicBool::new(false),
            }),
        }
    }

    /// Whether a final settlement was sent (or claimed by a settle call under way).
    pub fn is_settled(&self) -> bool {
        self.inner.settled.load(Ordering::Acquire)
    }

    /// The final settlement claimed so far (`None` while unsettled), whether or not it reached
    /// the server.
    pub(crate) fn final_settlement(&self) -> Option<Settlement> {
        *self.inner.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this is the first log of this delivery's handler failure (asking marks it
    /// logged): only [`log_failure`](crate::consume::log_failure), the one rule, asks.
    pub(crate) fn first_failure_log(&self) -> bool {
        !self.inner.failure_logged.swap(true, Ordering::AcqRel)
    }

    /// Acknowledge: the message was handled.
    ///
    /// # Errors
    /// `AlreadySettled` if it was settled before; `Failed` if the ack could not be sent.
    pub async fn ack(&self) -> Result<(), SettleError> {
        self.settle(Settlement::Ack).await
    }

    /// Acknowledge and wait for the server to confirm it.
    ///
    /// # Errors
    /// `AlreadySettled` if it was settled before; `Failed` if the server did not confirm.
    pub async fn double_ack(&self) -> Result<(), SettleError> {
        self.settle(Settlement::DoubleAck).await
    }

    /// Negative-acknowledge: redeliver, after `delay` if given.
    ///
    /// # Errors
    /// `AlreadySettled` if it was settled before; `Failed` if the nak could not be sent.
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), SettleError> {
        self.settle(Settlement::Nak(delay)).await
    }

    /// Terminate: never redeliver this message.
    ///
    /// # Errors
    /// `AlreadySettled` if it was settled before; `Failed` if it could not be sent.
    pub async fn term(&self) -> Result<(), SettleError> {
        self.settle(Settlement::Term).await
    }

    /// Tell the server work is still under way, restarting the ack-wait timer. May be sent
    /// any number of times before the message is settled.
    ///
    /// # Errors
    /// `AlreadySettled` once the message is settled; `Failed` if it could not be sent.
    pub async fn in_progress(&self) -> Result<(), SettleError> {
        self.settle(Settlement::InProgress).await
    }

    /// Send `settlement`, enforcing that only one final settlement is ever sent.
    ///
    /// # Errors
    /// See the named methods.
    pub async fn settle(&self, settlement: Settlement) -> Result<(), SettleError> {
        if settlement.is_final() {
            if self.inner.settled.swap(true, Ordering::AcqRel) {
                return Err(Error::new(SettleErrorKind::AlreadySettled));
            }
            // Only the caller that won the swap above gets here, so this is written once.
            *self.inner.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(settlement);
        } else if self.is_settled() {
            return Err(Error::new(SettleErrorKind::AlreadySettled));
        }
        match &self.inner.target {
            Target::Recorder(recorder) => recorder.record(settlement),
            Target::Server { client, reply } => send(client, reply, settlement)
                .await
                .map_err(|err| Error::with_source(SettleErrorKind::Failed, err))?,
        }
        Ok(())
    }
}

async fn send(
    client: &async_nats::Client,
    reply: &Subject,
    settlement: Settlement,
) -> Result<(), async_nats::Error> {
    let kind = match settlement {
        Settlement::Ack | Settlement::DoubleAck => AckKind::Ack,
        Settlement::Nak(delay) => AckKind::Nak(delay),
        Settlement::Term => AckKind::Term,
        Settlement::InProgress => AckKind::Progress,
    };
    if settlement == Settlement::DoubleAck {
        // The server confirms an ack only when it is sent as a request.
        client.request(reply.clone(), kind.into()).await?;
    } else {
        client.publish(reply.clone(), kind.into()).await?;
    }
    Ok(())
}

/// Collects the settlements of hand-built messages, for tests.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    settlements: Arc<Mutex<Vec<Settlement>>>,
}

impl Recorder {
    fn record(&self, settlement: Settlement) {
        self.lock().push(settlement);
    }

    /// Every settlement recorded so far, in order.
    pub fn settlements(&self) -> Vec<Settlement> {
        self.lock().clone()
    }

    /// The final settlement, if there was one.
    pub fn outcome(&self) -> Option<Settlement> {
        self.lock().iter().copied().find(|s| s.is_final())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Settlement>> {
        // A Vec push cannot be left half-done by a panic elsewhere.
        self.settlements.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A JetStream message delivered by a durable consumer, to be settled once.
///
/// Cloning is cheap: every part is shared by reference count (headers and extensions are
/// copied only when a clone changes them), and every clone shares the [`Acker`], so it settles
/// the same delivery and "settled exactly once" still holds (this is what lets tower's retry
/// re-send a request).
#[derive(Clone)]
pub struct Message {
    subject: Subject,
    payload: Bytes,
    headers: Shared<HeaderMap>,
    reply: Option<Subject>,
    info: DeliveryInfo,
    /// The delivering consumer's settings: a field, not an extension, so attaching them costs
    /// one reference count per message instead of a map allocation.
    settings: Option<ConsumerSettings>,
    extensions: Shared<Extensions>,
    acker: Acker,
}

/// A part of a message that clones by reference count and is copied only when a clone
/// changes it; nothing is allocated while it is empty.
#[derive(Clone)]
struct Shared<T>(Option<Arc<T>>);

impl<T: Clone + Default> Shared<T> {
    fn empty() -> Self {
        Self(None)
    }

    fn new(value: T) -> Self {
        Self(Some(Arc::new(value)))
    }

    /// `value` shared, or nothing allocated when `is_empty` says there is nothing in it.
    fn unless_empty(value: T, is_empty: impl FnOnce(&T) -> bool) -> Self {
        if is_empty(&value) {
            Self::empty()
        } else {
            Self::new(value)
        }
    }

    fn get<'a>(&'a self, empty: &'a T) -> &'a T {
        self.0.as_deref().unwrap_or(empty)
    }

    fn get_mut(&mut self) -> &mut T {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default))
    }
}

/// What an empty part reads as.
static NO_HEADERS: LazyLock<HeaderMap> = LazyLock::new(HeaderMap::new);
static NO_EXTENSIONS: LazyLock<Extensions> = LazyLock::new(Extensions::new);

fn received_headers(headers: Option<async_nats::HeaderMap>) -> Shared<HeaderMap> {
    match headers {
        Some(headers) if !headers.is_empty() => Shared::new(HeaderMap::received(headers)),
        _ => Shared::empty(),
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("subject", &self.subject())
            .field("payload_len", &self.payload.len())
            .field("info", &self.info)
            .field("settled", &self.acker.is_settled())
            .finish_non_exhaustive()
    }
}

impl Message {
    /// Escape hatch: wrap a message received from a JetStream consumer you drive yourself.
    /// Takes async-nats' own type, so it may change with async-nats releases.
    pub fn from_jetstream(message: async_nats::jetstream::Message) -> Self {
        let info = message
            .info()
            .map(|info| DeliveryInfo {
                stream: Name::from(info.stream),
                consumer: Name::from(info.consumer),
                stream_sequence: info.stream_sequence,
                consumer_sequence: info.consumer_sequence,
                delivered: u64::try_from(info.delivered).unwrap_or(1),
                pending: info.pending,
                published_unix_nanos: info.published.unix_timestamp_nanos(),
            })
            .unwrap_or_default();
        let async_nats::jetstream::Message { message, context } = message;
        Self::received(message, || Arc::new(context.client()), info, None)
    }

    /// A message natty's driver pulled from `consumer`: the names are shared, not copied, and
    /// the sequences are read from the ack subject without building an async-nats message.
    pub(crate) fn from_delivery(
        message: async_nats::Message,
        client: &Arc<async_nats::Client>,
        consumer: &DeliveringConsumer,
    ) -> Self {
        let mut info = DeliveryInfo {
            stream: consumer.stream.clone(),
            consumer: consumer.consumer.clone(),
            ..DeliveryInfo::default()
        };
        if let Some(ack) = message.reply.as_deref().and_then(AckSubject::parse) {
            ack.numbers.fill(&mut info);
        }
        let settings = Some(consumer.settings.clone());
        Self::received(message, || Arc::clone(client), info, settings)
    }

    /// A message that came over the wire, settled through `client` on its reply subject.
    fn received(
        message: async_nats::Message,
        client: impl FnOnce() -> Arc<async_nats::Client>,
        info: DeliveryInfo,
        settings: Option<ConsumerSettings>,
    ) -> Self {
        let acker = match &message.reply {
            Some(reply) => Acker::new(Target::Server {
                client: client(),
                reply: reply.clone(),
            }),
            // Without a reply subject there is nothing to ack; settle into the void.
            None => Acker::new(Target::Recorder(Recorder::default())),
        };
        Self {
            subject: message.subject,
            payload: message.payload,
            headers: received_headers(message.headers),
            reply: message.reply,
            info,
            settings,
            extensions: Shared::empty(),
            acker,
        }
    }

    /// Start a hand-built message, settled into a [`Recorder`] (for tests).
    pub fn builder(subject: impl Into<String>, payload: impl Into<Bytes>) -> MessageBuilder {
        MessageBuilder {
            subject: Subject::from(subject.into()),
            payload: payload.into(),
            headers: HeaderMap::new(),
            info: DeliveryInfo::default(),
            settings: None,
            extensions: Extensions::new(),
        }
    }

    /// The subject it was published to.
    pub fn subject(&self) -> &str {
        self.subject.as_str()
    }

    /// The subject as a cheap handle (a reference count), for the driver's failure reports.
    pub(crate) fn subject_handle(&self) -> &Subject {
        &self.subject
    }

    /// The headers as a cheap handle (a reference count; nothing when it has none), for the
    /// driver's failure reports.
    pub(crate) fn headers_handle(&self) -> Option<Arc<HeaderMap>> {
        self.headers.0.clone()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers (empty when it had none).
    pub fn headers(&self) -> &HeaderMap {
        self.headers.get(&NO_HEADERS)
    }

    /// The headers, mutably (copied first if a clone of this message shares them).
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers.get_mut()
    }

    /// The JetStream reply (ack) subject.
    pub fn reply(&self) -> Option<&str> {
        self.reply.as_ref().map(Subject::as_str)
    }

    /// Stream, sequences and delivery count.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }

    /// The `Nats-Msg-Id` header, if it was published with one (spelled exactly so, as the
    /// server reads it).
    pub fn message_id(&self) -> Option<&str> {
        message_id_in(self.headers())
    }

    /// The settings of the consumer that delivered it (ack wait, max deliveries, ...), which
    /// natty's driver attaches to every message; `None` for a message that did not come
    /// through the driver.
    pub fn consumer_settings(&self) -> Option<&ConsumerSettings> {
        self.settings.as_ref()
    }

    /// Typed data attached by middleware.
    pub fn extensions(&self) -> &Extensions {
        self.extensions.get(&NO_EXTENSIONS)
    }

    /// Typed data attached by middleware, mutably (copied first if a clone of this message
    /// shares them).
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        self.extensions.get_mut()
    }

    /// A handle that settles this message, for work that outlives a borrow of it.
    pub fn acker(&self) -> &Acker {
        &self.acker
    }

    /// Take the payload out, leaving the rest (to decode without copying).
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// See [`Acker::ack`].
    ///
    /// # Errors
    /// See [`Acker::ack`].
    pub async fn ack(&self) -> Result<(), SettleError> {
        self.acker.ack().await
    }

    /// See [`Acker::double_ack`].
    ///
    /// # Errors
    /// See [`Acker::double_ack`].
    pub async fn double_ack(&self) -> Result<(), SettleError> {
        self.acker.double_ack().await
    }

    /// See [`Acker::nak`].
    ///
    /// # Errors
    /// See [`Acker::nak`].
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), SettleError> {
        self.acker.nak(delay).await
    }

    /// See [`Acker::term`].
    ///
    /// # Errors
    /// See [`Acker::term`].
    pub async fn term(&self) -> Result<(), SettleError> {
        self.acker.term().await
    }

    /// See [`Acker::in_progress`].
    ///
    /// # Errors
    /// See [`Acker::in_progress`].
    pub async fn in_progress(&self) -> Result<(), SettleError> {
        self.acker.in_progress().await
    }
}

/// The `Nats-Msg-Id` header of `headers`, spelled exactly so (as the server reads it).
pub(crate) fn message_id_in(headers: &HeaderMap) -> Option<&str> {
    headers
        .as_async_nats()
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|value| value.as_str())
}

/// Builds a [`Message`] by hand; see [`Message::builder`].
#[derive(Debug)]
pub struct MessageBuilder {
    subject: Subject,
    payload: Bytes,
    headers: HeaderMap,
    info: DeliveryInfo,
    settings: Option<ConsumerSettings>,
    extensions: Extensions,
}

impl MessageBuilder {
    /// Set a header (see [`HeaderMap::insert`]).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Set the delivery info.
    pub fn info(mut self, info: DeliveryInfo) -> Self {
        self.info = info;
        self
    }

    /// Set how many times it has been delivered (starts at 1).
    pub fn delivered(mut self, delivered: u64) -> Self {
        self.info.delivered = delivered;
        self
    }

    /// Attach consumer settings, as natty's driver does.
    pub fn consumer_settings(mut self, settings: ConsumerSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// The message and the recorder its settlements go to.
    pub fn build(self) -> (Message, Recorder) {
        let recorder = Recorder::default();
        let message = Message {
            subject: self.subject,
            payload: self.payload,
            headers: Shared::unless_empty(self.headers, |h| h.is_empty() && h.invalid().is_none()),
            reply: None,
            info: self.info,
            settings: self.settings,
            extensions: Shared::unless_empty(self.extensions, Extensions::is_empty),
            acker: Acker::new(Target::Recorder(recorder.clone())),
        };
        (message, recorder)
    }
}

/// The consumer a driver pulls from, as every message it delivers carries it: its names and
/// settings, shared by reference count.
#[derive(Clone, Debug)]
pub(crate) struct DeliveringConsumer {
    pub(crate) stream: Name,
    pub(crate) consumer: Name,
    pub(crate) settings: ConsumerSettings,
}

impl DeliveringConsumer {
    pub(crate) fn new(settings: ConsumerSettings) -> Self {
        Self {
            stream: Name::from(settings.stream()),
            consumer: Name::from(settings.consumer()),
            settings,
        }
    }
}

impl AckNumbers {
    fn fill(self, info: &mut DeliveryInfo) {
        info.delivered = self.delivered;
        info.stream_sequence = self.stream_sequence;
        info.consumer_sequence = self.consumer_sequence;
        info.published_unix_nanos = self.published_unix_nanos;
        info.pending = self.pending;
    }
}
