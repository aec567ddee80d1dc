//! Health routes as JSON: liveness, readiness and the current leader.
//!
//! [`router`] answers
//! - `GET /live`: `200 {"status":"ok"}` while the process serves;
//! - `GET /ready`: `200` when the client is connected and JetStream answers an account
//!   request within the state's ready timeout, `503` otherwise, with
//!   `{"status":"ready"|"unavailable","nats":"connected"|"pending"|"disconnected","jetstream":"ok"|"unavailable"}`;
//! - `GET /leader`: this node's view of the election,
//!   `{"node":"node-1","state":"leader"|"follower"|"unknown","leader":"node-1","is_leader":true,"fencing_token":7}`
//!   (500 when the state has no election).
//!
//! Nest it where the platform probes, e.g. `.nest("/health", health::router())`.
//!
//! # Example
//! ```no_run
//! use axum::Router;
//! use natty_axum::{health, NattyState};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let natty = natty::Natty::connect(natty::Config::from_env()).await?;
//! let state = NattyState::builder(natty).build()?;
//! let app: Router = Router::new().nest("/health", health::router()).with_state(state);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use axum::extract::{FromRef, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use natty::{ConnectionState, LeaderState};
use serde_json::json;

use crate::leader::LeaderStatus;
use crate::rejection::NoElection;
use crate::NattyState;

/// The health routes `/live`, `/ready` and `/leader`; see the [module docs](self).
pub fn router<S>() -> Router<S>
where
    NattyState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/leader", get(leader))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.to_string(),
    )
        .into_response()
}

async fn live() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

async fn ready(State(state): State<NattyState>) -> Response {
    let natty = state.natty();
    let connection = natty.connection_state();
    let jetstream = connection == ConnectionState::Connected
        && matches!(
            tokio::time::timeout(state.ready_timeout(), natty.jetstream().query_account()).await,
            Ok(Ok(_))
        );
    let nats = match connection {
        ConnectionState::Connected => "connected",
        ConnectionState::Pending => "pending",
        _ => "disconnected",
    };
    let (status, text) = if jetstream {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    json_response(
        status,
        &json!({
            "status": text,
            "nats": nats,
            "jetstream": if jetstream { "ok" } else { "unavailable" },
        }),
    )
}

async fn leader(status: Result<LeaderStatus, NoElection>) -> Response {
    let status = match status {
        Ok(status) => status,
        Err(rejection) => return rejection.into_response(),
    };
    let state = match status.state() {
        LeaderState::Leader { .. } => "leader",
        LeaderState::Follower { .. } => "follower",
        // `Unknown`, and a state natty adds in a later release.
        _ => "unknown",
    };
    json_response(
        StatusCode::OK,
        &json!({
            "node": status.node(),
            "state": state,
            "leader": status.leader(),
            "is_leader": status.is_leader(),
            "fencing_token": status.fencing_token(),
        }),
    )
}
