//! Serving one member of a static or elastic group: the driver behind [`StaticGroup::serve`](crate::group::StaticGroup::serve) and [`ElasticGroup::serve`](crate::group::ElasticGroup::serve).
//!
//! natty's own [`serve`](crate::Natty::serve) runs calls in any order; a group member needs
//! per-partition order, pinning and pin changes handled, so it has its own driver around the
//! same per-message [`Engine`](crate::consume::engine::Engine) (readiness, panics, settling, reports). Every partition is a
//! lane holding its messages by stream sequence: one call at a time per lane, lanes
//! concurrently; a lane's next call starts as soon as the previous one ended and its
//! settlement was sent. Timers all follow from the ack wait `A`, as orbit's do.
//!
//! The files follow the run: [`config`] says what to serve and how (and what a run did),
//! [`spec`] reads the group's configuration and what a change of it means, [`join`] creates
//! the member's consumer and pull, [`lanes`] holds messages per partition and picks the calls
//! to start, [`stall`] notices a paused process, [`takeover`] decides about pins and the gate
//! that holds calls after a pin change, and [`run`] is the loop's I/O around them.

mod config;
mod join;
mod lanes;
mod run;
mod spec;
mod stall;
mod takeover;

pub use config::{MemberConfig, MemberSummary, Partition, Timers};

pub(crate) use config::Kind;
