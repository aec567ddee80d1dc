//! The Rust snippets of natty's READMEs, compiled as doc tests so they cannot drift from the API.
//!
//! A crate of its own, never published: a packaged crate cannot reach the workspace README, and
//! the snippets use every published crate.

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct WorkspaceReadme;
