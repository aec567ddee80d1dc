//! Serving one member of a static group: the driver behind [`Natty::serve_static_member`].
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

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tower::Service;

pub use config::{MemberConfig, MemberSummary, Partition, Timers};

use super::error::GroupError;
use crate::connection::Connection;
use crate::error::BoxError;
use crate::message::Message;
use config::Kind;

impl Connection {
    /// Serve `member` of a static group with `service` until `shutdown` is cancelled: one
    /// call at a time per partition, partitions concurrently, the partition token stripped
    /// from the subject (and kept as a [`Partition`] extension). See the [module
    /// docs](super) for the guarantees and timers.
    ///
    /// # Errors
    /// `Unsupported` before 2.11; `InvalidConfig`, `StreamNotFound`, `NotFound` (unknown
    /// group), `NotMember` at start; `ConfigDrift` when the member's consumer exists with
    /// other settings or the group's configuration changes while serving; `Deleted` when the
    /// group is deleted; `Service` when the service's `poll_ready` fails.
    pub(crate) fn serve_static_member<S>(
        &self,
        config: MemberConfig,
        shutdown: CancellationToken,
        service: S,
    ) -> impl Future<Output = Result<MemberSummary, GroupError>> + Send + '_
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        self.drive_member(Kind::Static, config, shutdown, service)
    }

    /// Serve `member` of an elastic group with `service` until `shutdown` is cancelled, as
    /// [`Natty::serve_static_member`] does, following membership changes: when the member's
    /// partitions change, the pinned instance finishes its calls (within the shutdown grace),
    /// returns what it holds in order and deletes its consumer, and every instance joins again
    /// with the new partitions once their previous owners let go. A member not (yet) in the
    /// group waits to be added.
    ///
    /// # Errors
    /// As [`Natty::serve_static_member`]; `ConfigDrift` when the partitions, filters or
    /// buffered limits change.
    pub(crate) fn serve_elastic_member<S>(
        &self,
        config: MemberConfig,
        shutdown: CancellationToken,
        service: S,
    ) -> impl Future<Output = Result<MemberSummary, GroupError>> + Send + '_
    where
        S: Service<Message> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        self.drive_member(Kind::Elastic, config, shutdown, service)
    }
}
