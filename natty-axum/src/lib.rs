//! natty-axum
