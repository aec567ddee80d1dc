//! natty-axum: axum integration for natty (work in progress).
//!
//! Planned: a `NattyState` usable through `FromRef`, extractors for a scoped publish handle, a
//! scoped KV handle and the current leadership, a `route_layer` for leader-only routes and a
//! health router. Nothing is exported yet; until then use [`natty`] directly from handlers.
