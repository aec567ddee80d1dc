//! Leader-only routes and the current leadership, read from natty's election.
//!
//! - [`LeaderOnlyLayer`] for `Router::route_layer`: on a follower a request gets a 503 with
//!   `Retry-After`, or a 307 redirect to the leader when the application registered the
//!   leader's base URL ([`NattyStateBuilder::node_url`](crate::NattyStateBuilder::node_url)).
//!   Either names the leader in [`LEADER_HEADER`](crate::rejection::LEADER_HEADER) once this
//!   node knows who leads; until then (just after `elect`, right after its own term ended,
//!   while NATS cannot be reached) the header is absent and the body says `"leader": null`.
//!   Being a route layer, unmatched paths stay 404.
//! - [`RequireLeader`], the same check as an extractor: a handler argument that also hands
//!   over the fencing token, or a middleware through axum's `from_extractor_with_state`.
//! - [`LeaderStatus`], an extractor that never refuses: this node's view of who leads.
//!
//! Every check reads the election's local state (the leader's lease on the monotonic
//! clock), so it costs no network call per request. The layer is written here rather than
//! taken from axum's `from_extractor` because the check is synchronous: it answers without
//! the boxed future per request that an extractor-based middleware needs.
//!
//! # Example
//! ```no_run
//! use axum::{middleware::from_extractor_with_state, routing::{get, post}, Router};
//! use natty_axum::leader::{LeaderOnlyLayer, LeaderStatus, RequireLeader};
//! use natty_axum::NattyState;
//!
//! async fn reindex(leader: RequireLeader) -> String {
//!     format!("reindexing under fencing token {}", leader.fencing_token())
//! }
//!
//! async fn who(status: LeaderStatus) -> String {
//!     format!("{:?}", status.leader())
//! }
//!
//! # fn app(state: NattyState) -> Router {
//! let admin = Router::new()
//!     .route("/admin/reindex", post(reindex))
//!     .route_layer(LeaderOnlyLayer::new(state.clone()));
//! // The same gate, built from the extractor by axum:
//! let jobs = Router::new()
//!     .route("/jobs/run", post(|| async { "ran" }))
//!     .route_layer(from_extractor_with_state::<RequireLeader, _>(state.clone()));
//! Router::new()
//!     .route("/leader", get(who))
//!     .merge(admin)
//!     .merge(jobs)
//!     .with_state(state)
//! # }
//! ```

mod future;
mod layer;

use std::task::{Context, Poll};

use axum::extract::{FromRef, FromRequestParts, OriginalUri};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Extensions, HeaderValue, Request, Uri};
use natty::LeaderState;
use tower_service::Service;

pub use self::future::ResponseFuture;
pub use self::layer::LeaderOnlyLayer;
use crate::rejection::{LeaderRejection, NoElection, NotLeader};
use crate::NattyState;

/// The fencing token of the current term, or why this node may not act as leader.
fn check(state: &NattyState, extensions: &Extensions, uri: &Uri) -> Result<u64, LeaderRejection> {
    let leadership = state.leadership().ok_or_else(NoElection::new)?;
    if let Some(token) = leadership.fencing_token() {
        return Ok(token);
    }
    let leader = match leadership.state() {
        // Our own name while our lease has run out means nobody is known to lead.
        LeaderState::Follower { leader } => leader.filter(|l| l != leadership.node()),
        _ => None,
    };
    let location = leader
        .as_deref()
        .and_then(|leader| state.node_url(leader))
        .and_then(|base| {
            // Behind `Router::nest` the request URI lost its prefix; the original keeps it.
            let uri = extensions.get::<OriginalUri>().map_or(uri, |o| &o.0);
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            HeaderValue::from_str(&format!("{base}{path}")).ok()
        });
    Err(NotLeader::new(leader, location, state.retry_after_secs()).into())
}

/// Requires this node to lead; an extractor that carries the fencing token of the current
/// term. Refuses with [`LeaderRejection`]: 503 or 307 on a follower. See the
/// [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequireLeader {
    fencing_token: u64,
}

impl RequireLeader {
    /// The fencing token of the term this request was let through in; pass it to storage
    /// that refuses writes from a deposed leader.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }
}

impl<S> FromRequestParts<S> for RequireLeader
where
    NattyState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = LeaderRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = NattyState::from_ref(state);
        let fencing_token = check(&state, &parts.extensions, &parts.uri)?;
        Ok(Self { fencing_token })
    }
}

/// This node's view of the election; an extractor. Refuses only with [`NoElection`] (500)
/// when the state has no election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderStatus {
    node: String,
    state: LeaderState,
}

impl LeaderStatus {
    /// The status of the election in `state`, if it has one.
    pub fn of(state: &NattyState) -> Option<Self> {
        let leadership = state.leadership()?;
        let state = match leadership.fencing_token() {
            Some(term) => LeaderState::Leader { term },
            // The campaign may still say leader after the local lease ran out.
            None => match leadership.state() {
                LeaderState::Leader { .. } => LeaderState::Unknown,
                other => other,
            },
        };
        Some(Self {
            node: leadership.node().to_owned(),
            state,
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The state: leader (within its lease) with its fencing token, follower, or unknown.
    pub fn state(&self) -> &LeaderState {
        &self.state
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.state.is_leader()
    }

    /// The fencing token of the current term, while this node leads.
    pub fn fencing_token(&self) -> Option<u64> {
        match self.state {
            LeaderState::Leader { term } => Some(term),
            _ => None,
        }
    }

    /// The leader's node name, when one is known (this node's own when it leads).
    pub fn leader(&self) -> Option<&str> {
        match &self.state {
            LeaderState::Leader { .. } => Some(&self.node),
            LeaderState::Follower { leader } => leader.as_deref(),
            _ => None,
        }
    }
}

impl<S> FromRequestParts<S> for LeaderStatus
where
    NattyState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = NoElection;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Self::of(&NattyState::from_ref(state)).ok_or_else(NoElection::new)
    }
}

/// Passes requests to the inner service only while this node leads; from
/// [`LeaderOnlyLayer`]. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct LeaderOnly<S> {
    inner: S,
    state: NattyState,
}

impl<S> LeaderOnly<S> {
    /// Gate `inner` on the election in `state`.
    pub fn new(inner: S, state: NattyState) -> Self {
        Self { inner, state }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the gate.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for LeaderOnly<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match check(&self.state, request.extensions(), request.uri()) {
            Ok(_) => ResponseFuture::inner(self.inner.call(request)),
            Err(rejection) => ResponseFuture::rejected(rejection.into_response()),
        }
    }
}
