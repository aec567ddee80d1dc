//! Handlers for what axum answers by itself, so those answers have the JSON shape too: no
//! route (404), a route without the request's method (405), and a request that outlived
//! tower's `TimeoutLayer` (408, through axum's `HandleErrorLayer`).
//!
//! axum's own answers have an empty body; a client that parses natty-axum's error format
//! would choke on them.
//!
//! # Example
//! ```
//! use std::time::Duration;
//!
//! use axum::error_handling::HandleErrorLayer;
//! use axum::routing::get;
//! use axum::Router;
//! use natty_axum::fallback;
//! use tower::ServiceBuilder;
//!
//! let app: Router = Router::new()
//!     .route("/orders", get(|| async { "[]" }))
//!     .fallback(fallback::not_found)
//!     .method_not_allowed_fallback(fallback::method_not_allowed)
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(HandleErrorLayer::new(fallback::timed_out))
//!             .timeout(Duration::from_secs(30)),
//!     );
//! # let _ = app;
//! ```

use natty::error::BoxError;

use crate::rejection::{MethodNotAllowed, RequestTimeout, RouteNotFound};

/// For `Router::fallback`: 404 [`RouteNotFound`].
pub async fn not_found() -> RouteNotFound {
    RouteNotFound::new()
}

/// For `Router::method_not_allowed_fallback`: 405 [`MethodNotAllowed`].
pub async fn method_not_allowed() -> MethodNotAllowed {
    MethodNotAllowed::new()
}

/// For `HandleErrorLayer` in front of tower's `TimeoutLayer`: 408 [`RequestTimeout`]. The
/// timeout layer's only error is its elapsed deadline.
pub async fn timed_out(_elapsed: BoxError) -> RequestTimeout {
    RequestTimeout::new()
}
