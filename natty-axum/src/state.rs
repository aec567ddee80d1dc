//! [`NattyState`]: the client, what web handlers may reach with it, and who leads.
//!
//! Handlers never get the bare [`Natty`] client through natty-axum's extractors: the state
//! holds the subjects they may publish to and the buckets they may read and write, chosen
//! by the application when it builds the state. The extractors ask for
//! `NattyState: FromRef<S>`, so the state can be the whole router state or one field of the
//! application's own state.
//!
//! # Example
//! ```no_run
//! use axum::extract::FromRef;
//! use natty_axum::NattyState;
//!
//! #[derive(Clone)]
//! struct AppState {
//!     natty: NattyState,
//!     greeting: &'static str,
//! }
//!
//! // What `#[derive(FromRef)]` (axum's `macros` feature) would write.
//! impl FromRef<AppState> for NattyState {
//!     fn from_ref(app: &AppState) -> NattyState {
//!         app.natty.clone()
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! let leadership = natty
//!     .elect(natty::ElectionConfig::new("leaders", "orders", "node-1"))
//!     .await?;
//! let state = NattyState::builder(natty)
//!     .allow_subjects("orders.>")
//!     .allow_bucket("order_status")
//!     .leadership(leadership)
//!     .node_url("node-1", "http://10.0.0.1:3000")
//!     .node_url("node-2", "http://10.0.0.2:3000")
//!     .build()?;
//! let app: axum::Router = axum::Router::new().with_state(AppState { natty: state, greeting: "hi" });
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use natty::{Leadership, Natty};

use crate::rejection::PublishRejection;
use crate::subject::{self, CheckedSubjects};
use crate::{AckedPublisher, Kv, Requester};

/// The error of [`NattyStateBuilder::build`].
pub type StateError = natty::error::Error<StateErrorKind>;

/// Why [`NattyStateBuilder::build`] refused the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateErrorKind {
    /// A subject filter is not valid or names a reserved subject.
    InvalidSubjectFilter,
    /// A bucket name is not `[A-Za-z0-9_-]+`.
    InvalidBucket,
    /// A node's base URL is not an absolute `http` or `https` URL without a path.
    InvalidNodeUrl,
}

impl fmt::Display for StateErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidSubjectFilter => "invalid subject filter",
            Self::InvalidBucket => "invalid bucket name",
            Self::InvalidNodeUrl => "invalid node url",
        })
    }
}

/// What was refused and why; the `source` of a [`StateError`].
#[derive(Debug)]
struct Refused {
    value: String,
    reason: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.value, self.reason)
    }
}

impl std::error::Error for Refused {}

fn refused(kind: StateErrorKind, value: &str, reason: &'static str) -> StateError {
    StateError::with_source(
        kind,
        Refused {
            value: value.to_owned(),
            reason,
        },
    )
}

/// The natty client with the scope web handlers get, and the election they can read. Cheap
/// to clone (one `Arc`); build it with [`NattyState::builder`]. See the [module docs](self).
#[derive(Clone)]
pub struct NattyState {
    inner: Arc<Inner>,
}

struct Inner {
    natty: Natty,
    subjects: Vec<String>,
    /// Subjects found inside `subjects` before, so a route's subject is checked once.
    checked_subjects: CheckedSubjects,
    /// The subject filters handlers may send requests to, and those found inside them.
    request_subjects: Vec<String>,
    checked_requests: CheckedSubjects,
    buckets: Vec<String>,
    /// A handle per allowed bucket, so each is found once for every request.
    bucket_handles: Vec<natty::Bucket>,
    leadership: Option<Leadership>,
    nodes: HashMap<String, String>,
    retry_after: Duration,
    ready_timeout: Duration,
}

impl fmt::Debug for NattyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NattyState")
            .field("natty", &self.inner.natty)
            .field("subjects", &self.inner.subjects)
            .field("request_subjects", &self.inner.request_subjects)
            .field("buckets", &self.inner.buckets)
            .field("leadership", &self.inner.leadership)
            .field("nodes", &self.inner.nodes)
            .finish_non_exhaustive()
    }
}

impl NattyState {
    /// Start building a state around a connected client. Without `allow_*` calls, handlers
    /// may publish nowhere and reach no bucket.
    pub fn builder(natty: Natty) -> NattyStateBuilder {
        NattyStateBuilder {
            natty,
            subjects: Vec::new(),
            request_subjects: Vec::new(),
            buckets: Vec::new(),
            leadership: None,
            nodes: Vec::new(),
            retry_after: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(2),
        }
    }

    /// The client, for the application's own code (not scoped).
    pub fn natty(&self) -> &Natty {
        &self.inner.natty
    }

    /// The election, when one was given.
    pub fn leadership(&self) -> Option<&Leadership> {
        self.inner.leadership.as_ref()
    }

    /// A publish handle, as the [`AckedPublisher`] extractor gives it.
    pub fn publisher(&self) -> AckedPublisher {
        AckedPublisher::new(self.clone())
    }

    /// A request handle, as the [`Requester`] extractor gives it.
    pub fn requester(&self) -> Requester {
        Requester::new(self.clone())
    }

    /// A key/value handle, as the [`Kv`] extractor gives it.
    pub fn kv(&self) -> Kv {
        Kv::new(self.clone())
    }

    /// The largest payload the connected server accepts (its `max_payload`); use it for
    /// axum's `DefaultBodyLimit` on publishing routes.
    pub fn max_payload(&self) -> usize {
        self.inner.natty.server_info().max_payload()
    }

    /// The subject filters handlers may publish to.
    pub fn allowed_subjects(&self) -> &[String] {
        &self.inner.subjects
    }

    /// Whether handlers may publish to `subject` ([`subject::check_publish`] against
    /// [`NattyState::allowed_subjects`], each subject that passes checked once).
    pub(crate) fn check_publish(&self, subject: &str) -> Result<(), PublishRejection> {
        self.inner
            .checked_subjects
            .check(subject, &self.inner.subjects)
    }

    /// The subject filters handlers may send requests to.
    pub fn allowed_request_subjects(&self) -> &[String] {
        &self.inner.request_subjects
    }

    /// Whether handlers may send requests to `subject`, checked as
    /// [`NattyState::check_publish`] checks against
    /// [`NattyState::allowed_request_subjects`].
    pub(crate) fn check_request(&self, subject: &str) -> Result<(), PublishRejection> {
        self.inner
            .checked_requests
            .check(subject, &self.inner.request_subjects)
    }

    /// The buckets handlers may reach.
    pub fn allowed_buckets(&self) -> &[String] {
        &self.inner.buckets
    }

    /// The handle of `bucket` if it is allowed.
    pub(crate) fn bucket(&self, bucket: &str) -> Option<&natty::Bucket> {
        self.inner
            .bucket_handles
            .iter()
            .find(|handle| handle.name() == bucket)
    }

    /// The base URL registered for `node`.
    pub fn node_url(&self, node: &str) -> Option<&str> {
        self.inner.nodes.get(node).map(String::as_str)
    }

    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.inner.retry_after.as_secs().max(1)
    }

    pub(crate) fn ready_timeout(&self) -> Duration {
        self.inner.ready_timeout
    }
}

/// Builds a [`NattyState`]; from [`NattyState::builder`].
#[derive(Debug)]
pub struct NattyStateBuilder {
    natty: Natty,
    subjects: Vec<String>,
    request_subjects: Vec<String>,
    buckets: Vec<String>,
    leadership: Option<Leadership>,
    nodes: Vec<(String, String)>,
    retry_after: Duration,
    ready_timeout: Duration,
}

impl NattyStateBuilder {
    /// Let handlers publish to subjects matching `filter`, in NATS syntax: `orders.>` allows
    /// `orders.created` and `orders.1.paid`, `orders.*` one token after `orders`. Reserved
    /// subjects (`$...`, `_INBOX...`) stay refused whatever the filter.
    pub fn allow_subjects(mut self, filter: impl Into<String>) -> Self {
        self.subjects.push(filter.into());
        self
    }

    /// Let handlers send requests to services on subjects matching `filter` (the
    /// [`Requester`] extractor), in NATS syntax as for
    /// [`allow_subjects`](NattyStateBuilder::allow_subjects). The two lists are apart: a
    /// subject a handler may publish to a stream on is not a service it may call.
    pub fn allow_requests(mut self, filter: impl Into<String>) -> Self {
        self.request_subjects.push(filter.into());
        self
    }

    /// Let handlers read and write `bucket`.
    pub fn allow_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.buckets.push(bucket.into());
        self
    }

    /// The election the leadership extractors and the leader-only layer read.
    pub fn leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// The base URL (`http://host:port`) where `node` serves; a follower redirects
    /// leader-only requests there (307) when `node` leads, instead of answering 503.
    pub fn node_url(mut self, node: impl Into<String>, base_url: impl Into<String>) -> Self {
        self.nodes.push((node.into(), base_url.into()));
        self
    }

    /// The `Retry-After` sent with 503 answers, in whole seconds (default 1 s, at least 1 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// How long the readiness route waits for JetStream to answer (default 2 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Check the scope and build the state.
    ///
    /// # Errors
    /// `InvalidSubjectFilter`, `InvalidBucket` or `InvalidNodeUrl`, naming the value.
    pub fn build(self) -> Result<NattyState, StateError> {
        for filter in self.subjects.iter().chain(&self.request_subjects) {
            subject::check_filter(filter)
                .map_err(|reason| refused(StateErrorKind::InvalidSubjectFilter, filter, reason))?;
        }
        let mut bucket_handles = Vec::with_capacity(self.buckets.len());
        for bucket in &self.buckets {
            natty::validate::bucket(bucket)
                .map_err(|err| refused(StateErrorKind::InvalidBucket, bucket, err.reason()))?;
            let handle = self.natty.bucket(bucket).map_err(|_| {
                refused(
                    StateErrorKind::InvalidBucket,
                    bucket,
                    "is not a valid bucket name",
                )
            })?;
            bucket_handles.push(handle);
        }
        let mut nodes = HashMap::new();
        for (node, url) in self.nodes {
            let base = base_url(&url).ok_or_else(|| {
                refused(
                    StateErrorKind::InvalidNodeUrl,
                    &url,
                    "is not an absolute http(s) url without a path",
                )
            })?;
            nodes.insert(node, base);
        }
        Ok(NattyState {
            inner: Arc::new(Inner {
                natty: self.natty,
                subjects: self.subjects,
                checked_subjects: CheckedSubjects::default(),
                request_subjects: self.request_subjects,
                checked_requests: CheckedSubjects::default(),
                buckets: self.buckets,
                bucket_handles,
                leadership: self.leadership,
                nodes,
                retry_after: self.retry_after,
                ready_timeout: self.ready_timeout,
            }),
        })
    }
}

/// `scheme://authority` of an http(s) URL whose path is empty or `/`.
fn base_url(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    let authority = uri.authority()?;
    let bare = matches!(uri.path(), "" | "/") && uri.query().is_none();
    bare.then(|| format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base_urls() {
        assert_eq!(
            super::base_url("http://127.0.0.1:3000/").as_deref(),
            Some("http://127.0.0.1:3000")
        );
        assert_eq!(
            super::base_url("https://a.example").as_deref(),
            Some("https://a.example")
        );
        for bad in [
            "127.0.0.1:3000",
            "ftp://a",
            "http://a/b",
            "http://a/?x=1",
            "",
        ] {
            assert_eq!(super::base_url(bad), None, "{bad}");
        }
    }
}
