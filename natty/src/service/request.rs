//! [`Request`], what an endpoint's tower service is called with, and [`Response`], what it
//! answers with: shaped like [`Message`](crate::Message) (subject, payload, headers,
//! extensions), so middleware reads them the same way.

use std::fmt;

use async_nats::Subject;
use bytes::Bytes;
use http::Extensions;

use crate::header::HeaderMap;
use crate::service::ServiceError;

/// A request to a service endpoint: the subject it was sent to, its payload and headers, the
/// reply subject the answer goes to, and [`Extensions`] for middleware to attach typed data.
///
/// # Example
/// ```
/// use natty::service::Request;
///
/// let mut request = Request::new("orders.get", "7");
/// request.headers_mut().insert("Accept", "json");
/// assert_eq!(request.subject(), "orders.get");
/// assert_eq!(request.headers().get("accept"), Some("json"));
/// ```
#[derive(Clone)]
pub struct Request {
    subject: Subject,
    payload: Bytes,
    headers: HeaderMap,
    reply: Option<Subject>,
    extensions: Extensions,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("subject", &self.subject())
            .field("payload_len", &self.payload.len())
            .field("reply", &self.reply())
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A hand-built request to `subject` without a reply subject (for tests of a stack).
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: Subject::from(subject.into()),
            payload: payload.into(),
            headers: HeaderMap::new(),
            reply: None,
            extensions: Extensions::new(),
        }
    }

    /// A request that came over the wire: its parts move out of async-nats' message, which
    /// keeps only what answering needs (the reply subject).
    pub(crate) fn received(message: &mut async_nats::Message) -> Self {
        Self {
            subject: message.subject.clone(),
            payload: std::mem::take(&mut message.payload),
            headers: message
                .headers
                .take()
                .map(HeaderMap::received)
                .unwrap_or_default(),
            reply: message.reply.clone(),
            extensions: Extensions::new(),
        }
    }

    /// The subject it was sent to.
    pub fn subject(&self) -> &str {
        self.subject.as_str()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers (empty when it had none).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The subject the answer goes to (`None` for a hand-built request).
    pub fn reply(&self) -> Option<&str> {
        self.reply.as_ref().map(Subject::as_str)
    }

    /// Typed data attached by middleware.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Typed data attached by middleware, mutably.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// Take the payload out, leaving the rest (to decode without copying).
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The payload decoded from JSON, or the `400` answer a payload that is not a `T` gets
    /// (its description says what is wrong where), for a handler to return with `?`.
    ///
    /// # Example
    /// ```
    /// use natty::service::Request;
    ///
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Lookup {
    ///     id: u64,
    /// }
    ///
    /// let lookup: Lookup = Request::new("orders.get", r#"{"id":7}"#).json().unwrap();
    /// assert_eq!(lookup.id, 7);
    /// let refused = Request::new("orders.get", "seven").json::<Lookup>().unwrap_err();
    /// assert_eq!(refused.code(), 400);
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ServiceError> {
        serde_json::from_slice(&self.payload)
            .map_err(|err| ServiceError::new(400, format!("invalid JSON payload: {err}")))
    }
}

/// A successful answer: a payload and headers. Built from anything that makes a payload
/// (`Bytes`, `String`, `Vec<u8>`, `&'static str`), so a handler may return just that.
///
/// # Example
/// ```
/// use natty::service::Response;
///
/// let response = Response::new("order 7").header("Content-Type", "text/plain");
/// assert_eq!(response.headers().get("content-type"), Some("text/plain"));
/// let plain: Response = "order 7".into();
/// assert_eq!(plain.payload(), response.payload());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Response {
    payload: Bytes,
    headers: HeaderMap,
}

impl Response {
    /// An answer with `payload` and no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            headers: HeaderMap::new(),
        }
    }

    /// An answer with `value` as its JSON payload, or the `500` answer a value that does not
    /// encode gets (a map with non-string keys, a failing `Serialize`).
    ///
    /// # Example
    /// ```
    /// use natty::service::Response;
    ///
    /// let response = Response::json(&serde_json::json!({"id": 7})).unwrap();
    /// assert_eq!(response.payload().as_ref(), br#"{"id":7}"#);
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, ServiceError> {
        serde_json::to_vec(value)
            .map(Self::new)
            .map_err(|err| ServiceError::new(500, format!("the answer is not JSON: {err}")))
    }

    /// With the header `name: value` too (a header that cannot be sent makes the answer a
    /// 500 error; see [`HeaderMap::invalid`]).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The payload and the headers.
    pub fn into_parts(self) -> (Bytes, HeaderMap) {
        (self.payload, self.headers)
    }
}

impl From<Bytes> for Response {
    fn from(payload: Bytes) -> Self {
        Self::new(payload)
    }
}

impl From<String> for Response {
    fn from(payload: String) -> Self {
        Self::new(payload)
    }
}

impl From<Vec<u8>> for Response {
    fn from(payload: Vec<u8>) -> Self {
        Self::new(payload)
    }
}

impl From<&'static str> for Response {
    fn from(payload: &'static str) -> Self {
        Self::new(payload)
    }
}
