//! What a request sends and what comes back: [`Request`] and [`Response`].

use std::time::Duration;

use bytes::Bytes;

use crate::header::HeaderMap;

/// A request to a service: subject, payload, headers, and optionally its own deadline and
/// the mark that it is safe to send twice. Shaped like `http::Request`'s parts.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use natty::requester::Request;
///
/// let request = Request::new("orders.lookup", "o-17")
///     .header("tenant", "acme")
///     .with_timeout(Duration::from_millis(500))
///     .idempotent();
/// assert_eq!(request.subject(), "orders.lookup");
/// assert_eq!(request.headers().get("tenant"), Some("acme"));
/// assert_eq!(request.timeout(), Some(Duration::from_millis(500)));
/// assert!(request.is_idempotent());
/// ```
#[derive(Clone, Debug)]
pub struct Request {
    subject: String,
    payload: Bytes,
    headers: HeaderMap,
    timeout: Option<Duration>,
    idempotent: bool,
}

impl Request {
    /// A request of `payload` to `subject`, without headers, with the requester's deadline,
    /// not idempotent.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.into(),
            payload: payload.into(),
            headers: HeaderMap::new(),
            timeout: None,
            idempotent: false,
        }
    }

    /// This request with `headers` instead of its own.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// This request with the header `name` set to `value` (see [`HeaderMap::insert`]: an
    /// invalid header makes the request fail with `InvalidHeader`, before anything is sent).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// This request with its own deadline: how long to wait for the answer, instead of the
    /// requester's ([`Requester::with_timeout`](super::Requester::with_timeout)).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Mark this request safe to send more than once (a lookup, or a call the service
    /// de-duplicates): [`RetryPolicy`](super::RetryPolicy) retries only such requests.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, to change in place.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The request's own deadline, when it has one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the request is marked [idempotent](Request::idempotent).
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    pub(super) fn into_parts(self) -> (String, Bytes, HeaderMap, Option<Duration>) {
        (self.subject, self.payload, self.headers, self.timeout)
    }
}

/// A service's answer: its payload and headers.
#[derive(Clone, Debug)]
pub struct Response {
    payload: Bytes,
    headers: HeaderMap,
}

impl Response {
    pub(super) fn new(payload: Bytes, headers: HeaderMap) -> Self {
        Self { payload, headers }
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers (empty when the service sent none).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The payload, taken out.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The payload and the headers, taken out.
    pub fn into_parts(self) -> (Bytes, HeaderMap) {
        (self.payload, self.headers)
    }
}
