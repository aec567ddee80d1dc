//! natty
