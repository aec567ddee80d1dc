//! The Rust snippets of natty's READMEs (the workspace's and each published crate's), compiled
//! as doc tests so they cannot drift from the API.
//!
//! A crate of its own, never published: a packaged crate cannot reach the workspace README, and
//! the snippets use every published crate.

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct WorkspaceReadme;

#[doc = include_str!("../../natty/README.md")]
#[cfg(doctest)]
pub struct NattyReadme;

#[doc = include_str!("../../natty-tower/README.md")]
#[cfg(doctest)]
pub struct NattyTowerReadme;

#[doc = include_str!("../../natty-axum/README.md")]
#[cfg(doctest)]
pub struct NattyAxumReadme;

#[doc = include_str!("../../natty-testkit/README.md")]
#[cfg(doctest)]
pub struct NattyTestkitReadme;
